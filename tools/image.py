"""view_image: attach a workspace image to the next model request (Kimi takes base64 data URLs)."""

from __future__ import annotations

import base64
import os
import struct

from .paths import open_read, resolve
from .types import ToolContext, ToolError, ToolResult

MAX_IMAGE_BYTES = 10 * 1024 * 1024
# Above this resolution Kimi spends more tokens without seeing more (see KIMI_API.md, Images).
USEFUL_PIXELS = (4096, 2160)

_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WebP": "image/webp"}


def sniff_image(head: bytes) -> str | None:
    """The image format Kimi accepts that these bytes start with: PNG, JPEG, GIF, WebP, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def image_size(kind: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header, without an imaging library; None if it cannot tell."""
    try:
        if kind == "PNG":
            return struct.unpack(">II", data[16:24])
        if kind == "GIF":
            return struct.unpack("<HH", data[6:10])
        if kind == "WebP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            return None
        if kind == "JPEG":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                length = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + length
    except (struct.error, IndexError):
        return None
    return None


def view_image(ctx: ToolContext, path: str) -> ToolResult:
    """Look at an image file (PNG, JPEG, WebP or GIF, up to 10 MB) from the workspace.

    The image is attached to your next message, e.g. a screenshot or a plot a script produced.

    Args:
        path: image file, relative to the workspace.
    """
    wp = resolve(ctx.workspace, path)
    with open_read(wp) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_BYTES:
            raise ToolError(
                f"{wp.rel} is {size / (1024 * 1024):.1f} MB; view_image takes images up to "
                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB. Make a smaller copy first (e.g. scale it "
                "down or convert it to JPEG with a tool in the sandbox) and view that."
            )
        data = f.read()
    kind = sniff_image(data[:16])
    if kind is None:
        ext = os.path.splitext(wp.rel)[1].lower()
        extra = " SVG is text: read it with read_file, or render it to PNG." if ext == ".svg" else ""
        raise ToolError(f"{wp.rel} is not a PNG, JPEG, WebP or GIF image (judged by its content)."
                        + extra)
    dims = image_size(kind, data)
    dims_text = f", {dims[0]}x{dims[1]}" if dims else ""
    note = ""
    if dims and (max(dims) > USEFUL_PIXELS[0] or min(dims) > USEFUL_PIXELS[1]):
        note = " It is larger than 4096x2160: a scaled-down copy would cost fewer tokens."
    url = f"data:{_MIME[kind]};base64,{base64.b64encode(data).decode('ascii')}"
    kb = max(1, round(size / 1024))
    return ToolResult(
        f"Attached {wp.rel} ({kind}{dims_text}, {kb} KB); it follows as an image.{note}",
        metadata={"path": wp.rel, "mime": _MIME[kind], "bytes": size,
                  "width": dims[0] if dims else None, "height": dims[1] if dims else None},
        attachments=[{"type": "image_url", "image_url": {"url": url}}],
    )
