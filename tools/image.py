"""view_image: attach a workspace image to the next model request.

With the session's media store (``ToolContext.media``) the image is copied into the session and the
result carries a reference to the copy (the log stays small; the request is built from it); without
one (a bare registry) it goes inline as a base64 data URL.
"""

from __future__ import annotations

import base64
import os

from .media import IMAGE_FORMATS_TEXT, MediaInfo, MediaError, image_size, inspect, sniff
from .media import USEFUL_IMAGE_PIXELS as USEFUL_PIXELS  # noqa: F401 - kept for callers
from .paths import open_read, resolve
from .types import ToolContext, ToolError, ToolResult

__all__ = ["MAX_IMAGE_BYTES", "USEFUL_PIXELS", "image_size", "sniff_image", "view_image"]

MAX_IMAGE_BYTES = 10 * 1024 * 1024


def sniff_image(head: bytes) -> str | None:
    """The image format Kimi accepts that these bytes start with: PNG, JPEG, GIF, WebP, or None."""
    fmt = sniff(head)
    return fmt.label if fmt is not None and fmt.kind == "image" else None


def view_image(ctx: ToolContext, path: str) -> ToolResult:
    """Look at an image file (PNG, JPEG, WebP or GIF, up to 10 MB) from the workspace.

    The image is attached to your next message, e.g. a screenshot or a plot a script produced.

    Args:
        path: image file, relative to the workspace.
    """
    wp = resolve(ctx.workspace, path, ctx.sandbox_root)
    with open_read(wp) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_IMAGE_BYTES:
            raise ToolError(
                f"{wp.rel} is {size / (1024 * 1024):.1f} MB; view_image takes images up to "
                f"{MAX_IMAGE_BYTES // (1024 * 1024)} MB. Make a smaller copy first (e.g. scale it "
                "down or convert it to JPEG with a tool in the sandbox) and view that."
            )
        try:
            info = inspect(f, wp.rel, kinds=("image",))
        except MediaError as exc:
            raise ToolError(str(exc).replace(f"not an image ({IMAGE_FORMATS_TEXT})",
                                             f"not a {IMAGE_FORMATS_TEXT} image")) from None
        part = attach(ctx, f, info, wp.rel)
    return media_result(wp.rel, info, part, "image")


def attach(ctx: ToolContext, fh, info: MediaInfo, name: str) -> dict:  # type: ignore[no-untyped-def]
    """The content part for ``fh``: a reference from the session's media store, else inline."""
    if ctx.media is not None:
        return ctx.media.add(fh, info, name)
    fh.seek(0)
    url = f"data:{info.mime};base64,{base64.b64encode(fh.read()).decode('ascii')}"
    key = "image_url" if info.kind == "image" else "video_url"
    return {"type": key, key: {"url": url}}


def media_result(rel: str, info: MediaInfo, part: dict, what: str) -> ToolResult:
    note = "".join(" " + w for w in info.warnings())
    return ToolResult(
        f"Attached {rel} ({info.describe()}); it follows as {'an' if what == 'image' else 'a'} {what}.{note}",
        metadata={"path": rel, "mime": info.mime, "bytes": info.bytes, "width": info.width,
                  "height": info.height, **({"duration": info.duration} if info.kind == "video" else {})},
        attachments=[part],
    )
