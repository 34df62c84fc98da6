"""Files a chat message brings along: ``@path`` mentions and ``/attach FILE``.

An attachment is made by the agent's own tools, ``read_file`` for text (numbered lines, bounded,
with the hint to read on, exactly what the model gets when it reads the file itself) and
``view_image`` for an image, so a file the agent may not read (outside the workspace, a symlink
leading out, ``.git``) cannot be attached either. It is recorded as a ``user_message`` of kind
``attachment`` right after the message, so a resume rebuilds the same context.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kimi_code.tools.types import ToolResult

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
# `@` at the start or after a space or an opening bracket, then a path without spaces.
_MENTION = re.compile(r"(?:(?<=^)|(?<=[\s(\[{\"']))@([^\s@]+)")
_TRAILING = ".,;:!?)]}\"'"

RunTool = Callable[[str, str], ToolResult]  # (tool name, JSON arguments) -> result


class AttachmentError(Exception):
    """A file that cannot be attached; the message says why (the tool's own words)."""


@dataclass(frozen=True)
class Attachment:
    path: str  # as the user wrote it
    content: Any  # the user message's content: text, or parts with the image
    summary: str  # one line for the user ("src/app.py (120 lines)")


def mentions(text: str, workspace: Path) -> list[str]:
    """The ``@path`` mentions of ``text`` that name a file in the workspace, in order, once each
    (trailing punctuation that is not part of an existing name is left out)."""
    found: list[str] = []
    for match in _MENTION.finditer(text):
        path = match.group(1)
        while path and not (workspace / path).is_file() and path[-1] in _TRAILING:
            path = path[:-1]
        if path and (workspace / path).is_file() and path not in found:
            found.append(path)
    return found


def unresolved_mentions(text: str, workspace: Path) -> list[str]:
    """``@words`` that look like paths (a ``/`` or a ``.``) but name no file: worth a warning."""
    known = set(mentions(text, workspace))
    out = []
    for match in _MENTION.finditer(text):
        word = match.group(1).rstrip(_TRAILING)
        if word and word not in known and ("/" in word or "." in word) and word not in out:
            out.append(word)
    return out


def attach(path: str, run_tool: RunTool) -> Attachment:
    """The attachment of ``path`` (relative to the workspace), or AttachmentError."""
    is_image = Path(path).suffix.lower() in IMAGE_SUFFIXES
    result = run_tool("view_image" if is_image else "read_file", json.dumps({"path": path}))
    if result.is_error:
        raise AttachmentError(result.text.splitlines()[0] if result.text else f"cannot attach {path}")
    if is_image:
        meta = result.metadata or {}
        size = f"{meta.get('width')}x{meta.get('height')}" if meta.get("width") else "image"
        parts = [{"type": "text", "text": f"[kimi-code] The user attached the image {path}:"}, *result.attachments]
        return Attachment(path, parts, f"{path} ({size})")
    meta = result.metadata or {}
    total = meta.get("total_lines")
    shown = f"lines {meta.get('start')}-{meta.get('end')} of {total}" if total else "text"
    return Attachment(path, f"[kimi-code] The user attached {path} (as read_file shows it):\n{result.text}",
                      f"{path} ({shown})")
