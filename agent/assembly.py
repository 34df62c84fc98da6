"""Where a session is assembled: the model client, the sandbox, the tools, the view, the
checkpointer and the loop, built from the settings.

This is the one module of ``agent/`` that knows the concrete sandbox and tool classes; everything
else sees them through the small protocols the loop declares (``ToolRunner``, ``Snapshotter``,
``View``) and ``kimi_code.sandbox.base.Sandbox``. A new sandbox backend or tool source is wired in
here. Heavy modules (the docker SDK, gitpython, rich) are imported by the functions that need them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kimi_code.sandbox.base import WORKSPACE, Sandbox, SandboxInfo
from kimi_code.sandbox.local import LocalSandbox
from kimi_code.tools.registry import ToolContext, ToolRegistry

from . import prompts
from .client import ModelClient
from .config import Settings, secret_env_names
from .events import Event
from .loop import AgentLoop, Limits
from .recorder import Recorder

if TYPE_CHECKING:
    from .checkpoints import Checkpointer
    from .replay import ReplaySource
    from .view import View

log = logging.getLogger(__name__)

LOCAL_WARNING = (
    "--sandbox none: commands run directly on this machine, with your permissions and no isolation"
)


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def make_sandbox(
    settings: Settings,
    session_id: str,
    workspace: Path,
    *,
    warn: Callable[[str], None] | None = None,
) -> Sandbox:
    """A DockerSandbox (default) or, for ``sandbox = "none"``, a LocalSandbox after a warning."""
    if settings.sandbox == "none":
        (warn or _stderr_warning)(LOCAL_WARNING)
        return LocalSandbox(session_id, workspace, default_timeout=settings.command_timeout,
                            secret_env=secret_env_names())
    from kimi_code.sandbox.docker import DockerSandbox  # the docker SDK only for a Docker sandbox

    return DockerSandbox(
        session_id,
        workspace,
        image=settings.image,
        network=settings.network,
        memory=settings.memory,
        cpus=settings.cpus,
        pids_limit=settings.pids_limit,
        ca_bundle=settings.ca_bundle,
        default_timeout=settings.command_timeout,
        secret_env=secret_env_names(),
    )


def planned_info(settings: Settings, session_id: str, workspace: Path) -> SandboxInfo:
    """What the sandbox :func:`make_sandbox` would make will look like, known without making it
    (no Docker round trip, no docker SDK import): the session's first event is written from this."""
    if settings.sandbox == "none":
        return SandboxInfo(backend="local", session_id=session_id, workspace=str(workspace),
                           host_workspace=str(workspace), network=True, status="created")
    return SandboxInfo(backend="docker", session_id=session_id, workspace=WORKSPACE, host_workspace=str(workspace),
                       image=settings.image, network=settings.network, status="created")


def make_checkpointer(workspace: Path, session_id: str, no_git: bool) -> Checkpointer | None:
    """The session's git checkpoints (None with --no-git); gitpython is imported here."""
    if no_git:
        return None
    from .checkpoints import Checkpointer

    return Checkpointer(workspace, session_id)


def default_tools() -> ToolRegistry:
    """The built-in tools."""
    from kimi_code.tools.builtin import default_registry

    return default_registry()


def make_view(output: str, session_id: str) -> View:
    from .view import make_view as make

    return make(output, session_id)


class Host(Protocol):
    """What the runner needs of an interactive host (the rest is ``session.Conversation``)."""

    def make_view(self, session_id: str) -> View: ...


@dataclass
class RunOptions:
    output: str = "text"  # text | json | stream-json
    limits: Limits = field(default_factory=Limits)
    no_git: bool = False
    keep_sandbox: bool | None = None
    branch: str | None = None
    patch_out: Path | None = None
    continue_text: str | None = None
    # Keep a git bundle of the checkpoints in the session directory after every checkpoint, so a
    # CI job retried on a fresh clone can resume (set by `run --resume-if-exists`).
    bundle: bool = False
    # Seconds between streamed chunks of a replayed turn (the demo paces its text; 0 = at once).
    pace: float = 0.0
    # The interactive host (agent/interactive.py): it makes the view and, between turns, talks to
    # the user; None for a headless run.
    conversation: Host | None = None


class Runner:
    """Wires one session's objects together."""

    def __init__(self, settings: Settings, recorder: Recorder, workspace: Path, options: RunOptions,
                 replay: ReplaySource | None = None) -> None:
        self.settings = settings
        self.recorder = recorder
        self.session = recorder.session
        self.state = recorder.state
        self.workspace = workspace
        self.options = options
        self.view: View = (options.conversation.make_view(self.session.id) if options.conversation is not None
                           else make_view(options.output, self.session.id))
        self.sandbox: Sandbox | None = None
        self.loop: AgentLoop | None = None
        self.replay = replay  # when the model is a recording

    def show(self, event: Event) -> None:
        """Show an event recorded before the loop exists (the session's first one)."""
        try:
            self.view.on_event(event, self.state)
        except Exception:  # noqa: BLE001 - a display problem must never break the session
            log.exception("view failed on %s", event.type)

    def bring_up(self, registry: ToolRegistry, *, resuming: bool,
                 no_git: bool) -> tuple[AgentLoop, Checkpointer | None, SandboxInfo, str, list[str]]:
        """The sandbox (a resumed session reattaches its container when it is still there), the
        checkpointer and the loop: (loop, checkpointer, sandbox info, the sandbox action, notices for
        the agent)."""
        settings, session_id = self.settings, self.session.id
        sandbox = self.sandbox = make_sandbox(settings, session_id, self.workspace)
        notices: list[str] = []
        if resuming and sandbox.reattach():
            action = "reattached"
        else:
            sandbox.start()
            action = "restarted" if resuming and settings.sandbox == "docker" else "started"
            if action == "restarted":
                notices.append(prompts.SANDBOX_LOST_NOTICE)
        checkpointer = make_checkpointer(self.workspace, session_id, no_git)
        return self.build(registry, checkpointer), checkpointer, sandbox.info(), action, notices

    def build(self, registry: ToolRegistry, checkpointer: Checkpointer | None) -> AgentLoop:
        client = ModelClient(self.settings)
        tool_ctx = ToolContext(workspace=self.workspace, sandbox=self.sandbox,
                               command_timeout=self.settings.command_timeout,
                               test_command=self.settings.test_command, todo=self.state.todo)
        loop = AgentLoop(session=self.session, state=self.state, settings=self.settings, client=client,
                         registry=registry, tool_context=tool_ctx, view=self.view, limits=self.options.limits,
                         checkpointer=checkpointer, workspace=self.workspace, recorder=self.recorder)
        client.on_retry = loop.on_retry  # each retry is recorded and shown by the loop
        self.loop = loop
        if self.replay is not None:
            self.replay.bind(loop)
        return loop


def _make_sandbox(settings: Settings, session_id: str, workspace: Path) -> Sandbox:
    from .sandboxes import make_sandbox

    return make_sandbox(settings, session_id, workspace)


def _make_checkpointer(workspace: Path, session_id: str, no_git: bool) -> Checkpointer | None:
    if no_git:
        return None
    from .checkpoints import Checkpointer

    return Checkpointer(workspace, session_id)


def _registry() -> ToolRegistry:
    from kimi_code.tools.builtin import default_registry

    return default_registry()


