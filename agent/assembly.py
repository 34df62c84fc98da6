"""Where a session is assembled: the model client, the sandbox, the tools, the view, the
checkpointer and the loop, built from the settings.

This is the one module of ``agent/`` that knows the concrete sandbox and tool classes; everything
else sees them through the small protocols the loop declares (``ToolRunner``, ``Snapshotter``,
``View``) and ``kimi_code.sandbox.base.Sandbox``. A new sandbox backend or tool source is wired in
here. Heavy modules (the docker SDK, gitpython, rich) are imported by the functions that need them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kimi_code.sandbox.base import Sandbox, SandboxInfo
from kimi_code.sandbox.local import LocalSandbox
from kimi_code.tools.mcp_config import McpServerConfig
from kimi_code.tools.registry import ToolContext, ToolRegistry

from . import prompts
from .client import ModelClient
from .config import Settings, secret_env_names
from .errors import ConfigError
from .events import Event
from .loop import AgentLoop, Limits
from .media import MEDIA_DIR, MediaStore, MediaWire, endpoint_refusal
from .mcp_trust import run_servers
from .recorder import Recorder

if TYPE_CHECKING:
    from kimi_code.tools.mcp_client import McpManager, StartReport

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
    sync_stamp: Path | None = None,
) -> Sandbox:
    """A DockerSandbox (default) or, for ``sandbox = "none"``, a LocalSandbox after a warning.
    ``sync_stamp``: the host file marking a copied workspace's last sync (in the session's directory)."""
    if settings.sandbox == "none":
        (warn or _stderr_warning)(LOCAL_WARNING)
        return LocalSandbox(session_id, workspace, default_timeout=settings.command_timeout,
                            secret_env=secret_env_names())
    from kimi_code.sandbox.docker import DockerSandbox  # the docker SDK only for a Docker sandbox

    mode = workspace_mode(settings)
    if mode == "copy" and settings.workspace == "auto" and warn is None:
        print(f"kimi-code: the Docker engine {os.environ.get('DOCKER_HOST')} is not this machine's: the workspace "
              "is copied into the container and synced back after each command (workspace = copy)", file=sys.stderr)
    return DockerSandbox(
        session_id,
        workspace,
        workspace_mode=mode,
        workspace_path=settings.workspace_path,
        sync_stamp=sync_stamp,
        image=settings.image,
        network=settings.network,
        memory=settings.memory,
        cpus=settings.cpus,
        pids_limit=settings.pids_limit,
        ca_bundle=settings.ca_bundle,
        default_timeout=settings.command_timeout,
        secret_env=secret_env_names(),
    )


def workspace_mode(settings: Settings) -> str:
    """How the workspace reaches the container: the setting, or for "auto" a bind mount when the
    engine is this machine's own socket and a copy otherwise (a tcp:// or ssh:// DOCKER_HOST may
    be anywhere, and cannot see this machine's paths)."""
    if settings.workspace != "auto":
        return settings.workspace
    host = os.environ.get("DOCKER_HOST", "").strip()
    return "mount" if not host or host.startswith(("unix://", "npipe://")) else "copy"


SYNC_STAMP = "workspace-sync.stamp"


def planned_info(settings: Settings, session_id: str, workspace: Path) -> SandboxInfo:
    """What the sandbox :func:`make_sandbox` would make will look like, known without making it
    (no Docker round trip, no docker SDK import): the session's first event is written from this."""
    if settings.sandbox == "none":
        return SandboxInfo(backend="local", session_id=session_id, workspace=str(workspace),
                           host_workspace=str(workspace), network=True, status="created")
    return SandboxInfo(backend="docker", session_id=session_id, workspace=settings.workspace_path,
                       host_workspace=str(workspace), image=settings.image, network=settings.network,
                       status="created", workspace_mode=workspace_mode(settings))


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


# -- MCP servers as tool sources -------------------------------------------------------------------


@dataclass
class ToolSources:
    """A session's tools: the built-ins, plus the MCP client when servers are configured (nothing
    of MCP, not even the SDK import, exists without one). ``sandbox`` is the session's sandbox when
    a server in it had to start before the session's first event; the Runner takes it over."""

    registry: ToolRegistry
    workspace: Path
    mcp: McpManager | None = None
    sandbox: Sandbox | None = None
    pending: dict[str, McpServerConfig] = field(default_factory=dict)  # started by connect()
    warn: Callable[[str], None] = _stderr_warning
    sandbox_taken: bool = False

    def connect(self, sandbox: Sandbox) -> None:
        """Start the servers a resumed session needs, now that its sandbox runs."""
        if self.pending and self.mcp is not None:
            pending, self.pending = self.pending, {}
            _start_servers(self, self.mcp, pending, sandbox)

    def close(self) -> None:
        """Stop the MCP servers (and an early sandbox nobody took over); safe to call twice."""
        if self.mcp is not None:
            self.mcp.close()
        if self.sandbox is not None and not self.sandbox_taken:
            self.sandbox_taken = True
            try:
                self.sandbox.stop(remove=True)
            except Exception:  # noqa: BLE001 - best effort on a failed start
                log.debug("could not remove the early sandbox", exc_info=True)


def start_tools(settings: Settings, session_id: str, workspace: Path, *, trust_mcp: bool = False,
                warn: Callable[[str], None] | None = None) -> ToolSources:
    """A new session's tools: the built-ins and those of every configured MCP server, started now,
    because the tool list is part of the session's first event (the stable prompt prefix). A
    server to run in the sandbox makes the sandbox start now too. A server that does not start is
    reported once and left out, unless it is ``required`` (ConfigError, exit 2)."""
    sources = ToolSources(default_tools(), workspace, warn=warn or _stderr_warning)
    servers, repo = run_servers(settings, workspace, trust_repo=trust_mcp)
    notice = repo.notice()
    if notice:
        sources.warn(notice)
    if not servers:
        return sources
    from kimi_code.tools.mcp_client import McpManager

    try:
        sandbox: Sandbox | None = None
        if settings.sandbox == "docker" and any(c.sandbox for c in servers.values()):
            sandbox = sources.sandbox = make_sandbox(
                settings, session_id, workspace,
                sync_stamp=Path(settings.state_dir).expanduser() / session_id / SYNC_STAMP)
            sandbox.start()
        sources.mcp = McpManager()
        _start_servers(sources, sources.mcp, servers, sandbox)
    except BaseException:
        sources.close()
        raise
    return sources


def resume_tools(settings: Settings, session_id: str, workspace: Path, recorded: list[dict[str, Any]], *,
                 trust_mcp: bool = False, warn: Callable[[str], None] | None = None) -> ToolSources:
    """A resumed session's tools: the built-ins and the MCP tools its log recorded, as recorded
    (the tool list never changes mid-session). The servers they come from start in ``connect``,
    once the sandbox runs; a recorded tool whose server or tool is gone answers with an error."""
    from kimi_code.tools.mcp_tools import register_recorded, server_of

    sources = ToolSources(default_tools(), workspace, warn=warn or _stderr_warning)
    names = [t["function"].get("name") for t in recorded if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    used = {s for s in (server_of(n) for n in names if isinstance(n, str)) if s}
    if not used:
        return sources
    servers, repo = run_servers(settings, workspace, trust_repo=trust_mcp)
    notice = repo.notice()
    if notice:
        sources.warn(notice)
    needed = {name: config for name, config in servers.items() if name in used}
    if not needed:
        from kimi_code.tools.mcp_tools import Unconfigured

        register_recorded(sources.registry, recorded, Unconfigured())
        return sources
    from kimi_code.tools.mcp_client import McpManager

    sources.mcp = McpManager()
    register_recorded(sources.registry, recorded, sources.mcp)
    sources.pending = needed
    return sources


def _start_servers(sources: ToolSources, manager: McpManager, servers: dict[str, McpServerConfig],
                   sandbox: Sandbox | None) -> list[StartReport]:
    """Launch ``servers`` (on the host, or in the sandbox for ``sandbox = true``) and report each one
    that did not start; register the tools of those that did when the registry has none of theirs yet."""
    from kimi_code.tools.mcp_tools import register_listed, server_of

    reports = _launch(manager, servers, sources.workspace, sandbox)
    registered = {server_of(n) for n in sources.registry.names}
    for report in reports:
        config = servers[report.name]
        if not report.ok:
            if config.required:
                raise ConfigError(f"the required MCP server {report.name} {report.error}")
            sources.warn(f"MCP server {report.name} {report.error}; the run continues without it")
        elif report.name not in registered:
            register_listed(sources.registry, report.name, report.tools, manager, sources.warn)
    return reports


def _launch(manager: McpManager, servers: dict[str, McpServerConfig], workspace: Path,
            sandbox: Sandbox | None) -> list[StartReport]:
    """Start ``servers``: in the sandbox for ``sandbox = true`` when it can run them (a Docker
    sandbox; with ``--sandbox none`` commands run on the host, and so do these), else on the host."""
    from kimi_code.tools.mcp_client import LaunchError, StartReport, host_launch, sandbox_launch

    launches = []
    failed: list[StartReport] = []
    for name, config in servers.items():
        try:
            open_process = getattr(sandbox, "open_process", None) if config.sandbox else None
            if open_process is not None:
                launches.append(sandbox_launch(name, config, open_process, os.environ))
            else:
                launches.append(host_launch(name, config, workspace, os.environ, secret_env_names()))
        except LaunchError as exc:
            manager.add_failed(name, config, f"was not started: {exc}")
            failed.append(StartReport(name, False, error=f"was not started: {exc}"))
    return manager.start(launches) + failed


@dataclass
class McpProbe:
    """One server started, listed and stopped: its tools as (name the model sees, description,
    read-only), or why it did not start."""

    name: str
    ok: bool
    detail: str
    tools: list[tuple[str, str, bool]] = field(default_factory=list)


def probe_mcp_servers(servers: dict[str, McpServerConfig], workspace: Path) -> list[McpProbe]:
    """Start each server on the host, list its tools, stop it (`kimi-code mcp list`, doctor)."""
    if not servers:
        return []
    from kimi_code.tools.mcp_client import McpManager
    from kimi_code.tools.mcp_tools import description_of, exposed_name

    manager = McpManager()
    try:
        reports = _launch(manager, servers, workspace, None)
    finally:
        manager.close()
    return [McpProbe(r.name, r.ok, f"{r.server_info or 'server'}: {len(r.tools)} tool(s)" if r.ok
                     else (r.error or "did not start"),
                     [(exposed_name(r.name, t.name), description_of(t, r.name), t.read_only) for t in r.tools])
            for r in reports]


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
    # Images and videos sent with the task (run) or with the --continue instructions (resume).
    attach: tuple[Path, ...] = ()
    # Keep a git bundle of the checkpoints in the session directory after every checkpoint, so a
    # CI job retried on a fresh clone can resume (set by `run --resume-if-exists`).
    bundle: bool = False
    # Seconds between streamed chunks of a replayed turn (the demo paces its text; 0 = at once).
    pace: float = 0.0
    # Start the MCP servers of the repository's .kimi-code/mcp.toml without `kimi-code mcp trust`.
    trust_mcp: bool = False
    # The interactive host (agent/interactive.py): it makes the view and, between turns, talks to
    # the user; None for a headless run.
    conversation: Host | None = None


class Runner:
    """Wires one session's objects together."""

    def __init__(self, settings: Settings, recorder: Recorder, workspace: Path, options: RunOptions,
                 replay: ReplaySource | None = None, tools: ToolSources | None = None) -> None:
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
        self.tools = tools  # MCP servers to start with the sandbox, and to stop at the end

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
        notices: list[str] = []
        if self.tools is not None and self.tools.sandbox is not None and not self.tools.sandbox_taken:
            sandbox = self.sandbox = self.tools.sandbox  # started early for an MCP server in it
            self.tools.sandbox_taken = True
            action = "started"
        else:
            sandbox = self.sandbox = make_sandbox(settings, session_id, self.workspace,
                                                  sync_stamp=self.session.root / SYNC_STAMP)
            if resuming and sandbox.reattach():
                action = "reattached"
                notice = prompts.reconciled_notice(getattr(sandbox, "reconciled", None))
                if notice:
                    notices.append(notice)
            else:
                sandbox.start()
                action = "restarted" if resuming and settings.sandbox == "docker" else "started"
                if action == "restarted":
                    copied = sandbox.info().workspace_mode == "copy"
                    notices.append(prompts.SANDBOX_LOST_NOTICE + (prompts.SANDBOX_COPY_RESTORED_NOTE if copied else ""))
        if self.tools is not None:
            self.tools.connect(sandbox)
        checkpointer = make_checkpointer(self.workspace, session_id, no_git)
        return self.build(registry, checkpointer), checkpointer, sandbox.info(), action, notices

    def close_tools(self) -> None:
        """Stop the session's MCP servers (before its sandbox goes); safe to call twice."""
        if self.tools is not None:
            self.tools.close()

    def build(self, registry: ToolRegistry, checkpointer: Checkpointer | None) -> AgentLoop:
        client = ModelClient(self.settings)
        tool_ctx = ToolContext(workspace=self.workspace, sandbox=self.sandbox,
                               command_timeout=self.settings.command_timeout,
                               test_command=self.settings.test_command, todo=self.state.todo,
                               sandbox_root=self.settings.workspace_path)
        loop = AgentLoop(session=self.session, state=self.state, settings=self.settings, client=client,
                         registry=registry, tool_context=tool_ctx, view=self.view, limits=self.options.limits,
                         checkpointer=checkpointer, workspace=self.workspace, recorder=self.recorder)
        client.on_retry = loop.on_retry  # each retry is recorded and shown by the loop
        # Images and videos: stored in the session (tools hand theirs over), built into each request.
        root = self.session.root
        tool_ctx.media = MediaStore(root / MEDIA_DIR, check=lambda info: endpoint_refusal(self.settings, info))
        loop.wire = MediaWire(root, self.settings, client, self.state, loop.record, notice=self.view.notice)
        self.loop = loop
        if self.replay is not None:
            self.replay.bind(loop)
        return loop
