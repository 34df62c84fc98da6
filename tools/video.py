"""view_video: attach a workspace video (one the agent recorded, rendered or found) to the next request."""

from __future__ import annotations

from .image import attach, media_result
from .media import MAX_MEDIA_BYTES, inspect
from .paths import open_read, resolve
from .types import ToolContext, ToolResult


def view_video(ctx: ToolContext, path: str) -> ToolResult:
    """Watch a video file (MP4, MPEG, MOV, AVI, FLV, WebM, WMV or 3GPP, up to 100 MB) from the workspace.

    The video is attached to your next message, e.g. a screen recording of a UI test or an animation a
    script rendered. Videos cost many tokens: keep them short, and at most 2048x1080.

    Args:
        path: video file, relative to the workspace.
    """
    wp = resolve(ctx.workspace, path, ctx.sandbox_root)
    with open_read(wp) as f:
        info = inspect(f, wp.rel, kinds=("video",), max_bytes=MAX_MEDIA_BYTES)
        part = attach(ctx, f, info, wp.rel)
    return media_result(wp.rel, info, part, "video")
