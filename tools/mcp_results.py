"""An MCP ``CallToolResult`` as an ordinary tool result.

Text blocks become the text; images become attachments of the next request (as ``view_image``'s
do) with a line saying so; structured content is added as JSON text unless a text block already
says the same; ``isError`` is the result's ``is_error``. What the model cannot take (audio, binary
resources) is named, not sent. The tool-output budget applies afterwards, as to every result.
Works on the SDK's models by their attributes, so importing it does not import the SDK.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .image import MAX_IMAGE_BYTES, sniff_image
from .types import ToolResult

# Images of one result attached at most (each up to tools/image.MAX_IMAGE_BYTES).
MAX_IMAGES = 8


def tool_result(result: Any, *, server: str, tool: str) -> ToolResult:
    """``result`` (an ``mcp.types.CallToolResult``) as a ToolResult."""
    parts: list[str] = []
    attachments: list[dict[str, Any]] = []
    texts: list[str] = []
    for block in getattr(result, "content", None) or ():
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(str(block.text))
            parts.append(str(block.text))
        elif kind == "image":
            parts.append(_image(block.data, block.mime_type, attachments))
        elif kind == "audio":
            parts.append(f"[audio ({block.mime_type}) not shown: audio is not supported]")
        elif kind == "resource_link":
            name = getattr(block, "name", "") or ""
            parts.append(f"[resource link: {block.uri}{' (' + name + ')' if name else ''}]")
        elif kind == "resource":
            parts.append(_resource(block.resource, attachments))
        else:
            parts.append(f"[{kind or 'unknown'} content not shown]")
    structured = getattr(result, "structured_content", None)
    if structured is not None and not _said(structured, texts):
        parts.append(json.dumps(structured, ensure_ascii=False, indent=1, default=str))
    is_error = bool(getattr(result, "is_error", False))
    text = "\n".join(p for p in parts if p) or ("(the tool reported an error without a message)" if is_error
                                                 else "(no output)")
    return ToolResult(text, is_error=is_error, metadata={"mcp": {"server": server, "tool": tool}},
                      attachments=attachments)


def _said(structured: Any, texts: list[str]) -> bool:
    """Whether the text blocks already say what the structured content holds: the same JSON
    (servers are told to send both), or the text itself wrapped as ``{"result": text}`` (how SDK
    servers give a tool's plain return value a structured form)."""
    if isinstance(structured, dict) and list(structured) == ["result"] and "\n".join(texts) == str(structured["result"]):
        return True
    for text in texts:
        try:
            if json.loads(text) == structured:
                return True
        except ValueError:
            continue
    return False


def _image(data: str, mime: str, attachments: list[dict[str, Any]]) -> str:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return f"[image ({mime}) not shown: its data is not valid base64]"
    kind = sniff_image(raw[:16])
    if kind is None:
        return f"[image ({mime}) not shown: not a PNG, JPEG, GIF or WebP]"
    if len(raw) > MAX_IMAGE_BYTES:
        return f"[{kind} image not shown: {len(raw):,} bytes, over the {MAX_IMAGE_BYTES:,}-byte limit]"
    if len(attachments) >= MAX_IMAGES:
        return f"[{kind} image not shown: at most {MAX_IMAGES} images per result]"
    real_mime = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WebP": "image/webp"}[kind]
    attachments.append({"type": "image_url", "image_url": {"url": f"data:{real_mime};base64,{data}"}})
    return f"[{kind} image attached ({len(raw):,} bytes)]"


def _resource(resource: Any, attachments: list[dict[str, Any]]) -> str:
    uri = getattr(resource, "uri", "")
    mime = getattr(resource, "mime_type", None) or "unknown type"
    if getattr(resource, "text", None) is not None:
        return f"[resource {uri}]\n{resource.text}"
    blob = getattr(resource, "blob", None)
    if isinstance(blob, str) and mime.startswith("image/"):
        return f"[resource {uri}] " + _image(blob, mime, attachments)
    size = len(blob) * 3 // 4 if isinstance(blob, str) else 0
    return f"[resource {uri} ({mime}, about {size:,} bytes) not shown: binary]"
