"""What every tool shares: the context it runs in, the result it returns, the error it raises.

A tool is a plain function ``fn(ctx: ToolContext, <model-facing params>) -> ToolResult | str``
(see tools/registry.py for how it is registered and called, tools/schema.py for how its
parameters become a model and a JSON schema). Tool modules import these names from here.
"""

from __future__ import annotations

import logging

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Union

from kimi_code.sandbox.base import Sandbox
from kimi_code.sandbox.errors import SandboxError

log = logging.getLogger(__name__)


@dataclass
class ToolResult:
    text: str  # what the model sees
    is_error: bool = False
    # JSON-serialisable details for the session log and the view: {"diff": ...}, {"exit_code": ...},
    # {"todo": [...]}, {"finish": {...}}.
    metadata: dict[str, Any] = field(default_factory=dict)
    # Content parts for the next request: what ``ToolContext.media`` returned (a reference to a
    # stored copy), or without one an inline part {"type": "image_url", "image_url": {"url": "data:..."}}.
    attachments: list[dict] = field(default_factory=list)


class MediaSink(Protocol):
    """Where a tool hands an image or video it attaches (the session keeps a copy of it).

    ``add`` copies the open file, returns the content part that refers to the copy, and raises
    ``MediaError`` (tools/media.py) with a message for the model when the endpoint cannot take it."""

    def add(self, fh: BinaryIO, info: Any, name: str) -> dict[str, Any]: ...  # info: media.MediaInfo


@dataclass
class ToolContext:
    workspace: Path  # host path of the workspace; file tools are confined to it (tools/paths.py)
    sandbox: Sandbox  # shell and run_tests go through sandbox.exec
    command_timeout: float = 120.0
    test_command: str | None = None  # from settings; else AGENTS.md; else detected
    todo: list[dict] = field(default_factory=list)  # the current plan (the loop keeps it updated)
    media: MediaSink | None = None  # the session's media store; None: media go inline as data URLs
    sandbox_root: str = "/workspace"  # where commands see the workspace (the workspace_path setting)

    def refresh(self) -> None:
        """Before file tools look: a sandbox with its own copy of the workspace brings back what
        changed there since its last command returned (a background process's writes)."""
        sync = getattr(self.sandbox, "sync_workspace", None)
        if sync is None:
            return
        try:
            sync()
        except SandboxError as exc:
            log.warning("could not bring the sandbox's latest changes back: %s", exc)

    def wrote(self, rel: str) -> None:
        """A tool wrote this workspace path on the host: a sandbox with its own copy of the
        workspace (``workspace = "copy"``) gets it before any command can look."""
        written = getattr(self.sandbox, "workspace_written", None)
        if written is None:
            return
        try:
            written([rel])
        except SandboxError as exc:
            raise ToolError(f"{rel} was written, but the sandbox's copy could not be updated: {exc}") from None


class ToolError(Exception):
    """An expected failure a tool reports to the model as is (no traceback, no "failed" prefix)."""


# Validated arguments (by the model-facing names) and the context -> what the tool returned.
Handler = Callable[[dict[str, Any], ToolContext], Union[ToolResult, str]]
# A tool is read-only always, never, or depending on its (parsed, not yet validated) arguments.
ReadOnly = Union[bool, Callable[[dict[str, Any]], bool]]
