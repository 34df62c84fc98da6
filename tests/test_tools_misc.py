"""todo, view_image and finish."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest

from kimi_code.tools import image
from kimi_code.tools.builtin import default_registry
from kimi_code.tools.registry import ToolContext, ToolResult


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path, sandbox=None)  # type: ignore[arg-type]


def call(ctx: ToolContext, name: str, **args: object) -> ToolResult:
    return default_registry().run(name, json.dumps(args), ctx)


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


# -- todo ---------------------------------------------------------------------------------------


def test_todo_replaces_the_plan_and_renders_it(ctx: ToolContext) -> None:
    state_list: list[dict] = [{"id": "old", "content": "old", "status": "pending"}]
    ctx.todo = state_list
    items = [{"id": "1", "content": "Read the code", "status": "done"},
             {"id": 2, "content": "Fix  the\nbug", "status": "in_progress"},
             {"id": "3", "content": "Run tests", "status": "pending"}]
    res = call(ctx, "todo", items=items)
    assert not res.is_error, res.text
    assert res.text == "Plan (1/3 done):\n[x] 1. Read the code\n[>] 2. Fix the bug\n[ ] 3. Run tests"
    expected = [{"id": "1", "content": "Read the code", "status": "done"},
                {"id": "2", "content": "Fix the bug", "status": "in_progress"},
                {"id": "3", "content": "Run tests", "status": "pending"}]
    assert res.metadata == {"todo": expected}
    assert ctx.todo == expected
    assert state_list == [{"id": "old", "content": "old", "status": "pending"}]  # not mutated in place
    res = call(ctx, "todo", items=[])
    assert res.text == "Plan: (empty)" and ctx.todo == []


def test_todo_validation(ctx: ToolContext) -> None:
    res = call(ctx, "todo", items=[{"id": "1", "content": "x", "status": "started"}])
    assert res.is_error and "items.0.status" in res.text and "'pending', 'in_progress' or 'done'" in res.text
    res = call(ctx, "todo", items=[{"id": "1", "content": "x"}])
    assert res.is_error and "items.0.status: required argument is missing" in res.text
    res = call(ctx, "todo", items=[{"id": "1", "content": "a", "status": "done"},
                                   {"id": "1", "content": "b", "status": "done"}])
    assert res.is_error and "used twice" in res.text
    res = call(ctx, "todo", items=[{"id": "1", "content": "  ", "status": "done"}])
    assert res.is_error and "content is empty" in res.text
    res = call(ctx, "todo", items=[{"id": "a", "content": "a", "status": "in_progress"},
                                   {"id": "b", "content": "b", "status": "in_progress"}])
    assert not res.is_error and "2 steps are in_progress (a, b)" in res.text
    assert ctx.todo[1]["id"] == "b"


# -- view_image ---------------------------------------------------------------------------------


def test_view_image_attaches_a_base64_data_url(ctx: ToolContext) -> None:
    data = png(3, 2)
    (ctx.workspace / "shot.png").write_bytes(data)
    res = call(ctx, "view_image", path="shot.png")
    assert not res.is_error, res.text
    assert res.text.startswith("Attached shot.png (PNG, 3x2, 1 KB)")
    assert res.attachments == [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(data).decode()}}]
    assert res.metadata == {"path": "shot.png", "mime": "image/png", "bytes": len(data), "width": 3, "height": 2}
    assert "base64" not in json.dumps(res.metadata)


@pytest.mark.parametrize("name,data,kind,dims", [
    ("a.gif", b"GIF89a" + struct.pack("<HH", 640, 480) + b"\x00" * 20, "GIF", (640, 480)),
    ("a.jpg", bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
     + bytes.fromhex("ffc0001108") + struct.pack(">HH", 1080, 1920) + b"\x03" + b"\x00" * 20, "JPEG",
     (1920, 1080)),
    ("a.webp", b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x00" * 4
     + (99).to_bytes(3, "little") + (49).to_bytes(3, "little"), "WebP", (100, 50)),
])
def test_view_image_formats_by_magic_bytes(ctx: ToolContext, name: str, data: bytes, kind: str,
                                           dims: tuple[int, int]) -> None:
    (ctx.workspace / name).write_bytes(data)
    res = call(ctx, "view_image", path=name)
    assert not res.is_error, res.text
    assert f"({kind}, {dims[0]}x{dims[1]}" in res.text
    assert res.attachments[0]["image_url"]["url"].startswith(f"data:image/{kind.lower()};base64,")


def test_view_image_refusals(ctx: ToolContext) -> None:
    (ctx.workspace / "fake.png").write_text("not really a png")
    res = call(ctx, "view_image", path="fake.png")
    assert res.is_error and "not a PNG, JPEG, WebP or GIF" in res.text and not res.attachments
    (ctx.workspace / "logo.svg").write_text("<svg/>")
    assert "SVG is text" in call(ctx, "view_image", path="logo.svg").text
    big = ctx.workspace / "big.png"
    with big.open("wb") as f:
        f.write(png(1, 1))
        f.truncate(image.MAX_IMAGE_BYTES + 1)
    res = call(ctx, "view_image", path="big.png")
    assert res.is_error and "up to 10 MB" in res.text and "10.0 MB" in res.text
    assert call(ctx, "view_image", path="missing.png").is_error
    (ctx.workspace / "huge.png").write_bytes(png(5000, 1))
    assert "larger than 4096x2160" in call(ctx, "view_image", path="huge.png").text


# -- finish -------------------------------------------------------------------------------------


def test_finish(ctx: ToolContext) -> None:
    res = call(ctx, "finish", summary="Fixed the bug; tests pass.")
    assert res.metadata == {"finish": {"summary": "Fixed the bug; tests pass.", "status": "success"}}
    res = call(ctx, "finish", summary="Blocked by missing credentials.", status="failure")
    assert res.metadata["finish"]["status"] == "failure" and "failure" in res.text
    res = call(ctx, "finish", summary="x", status="partial")
    assert res.is_error and "'success' or 'failure'" in res.text
    assert call(ctx, "finish", summary="   ").is_error
