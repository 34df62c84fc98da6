"""Images and videos: formats by content, the session's media store, and building requests from
references (inline, uploaded, over the media budget or the body limit), with real files."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kimi_code.agent import media
from kimi_code.agent.config import load_settings
from kimi_code.agent.errors import ConfigError
from kimi_code.agent.state import SessionState
from kimi_code.agent.tokens import count_message
from kimi_code.tools import media as formats
from kimi_code.tools.builtin import default_registry
from kimi_code.tools.registry import ToolContext
from media_files import png, video

# Every container Kimi takes, made by ffmpeg: (file name, size, frame rate, label, MIME). MPEG-1
# needs a standard frame rate, 3GP's H.263 a CIF size.
VIDEOS = [
    ("clip.mp4", "320x240", 10, "MP4", "video/mp4"),
    ("clip.webm", "320x240", 10, "WebM", "video/webm"),
    ("clip.mov", "320x240", 10, "MOV", "video/mov"),
    ("clip.avi", "320x240", 10, "AVI", "video/avi"),
    ("clip.flv", "320x240", 10, "FLV", "video/x-flv"),
    ("clip.mpg", "320x240", 25, "MPEG", "video/mpeg"),
    ("clip.wmv", "320x240", 10, "WMV", "video/wmv"),
    ("clip.3gp", "352x288", 10, "3GPP", "video/3gpp"),
]


def _settings(tmp_path: Path, **flags: Any):  # noqa: ANN202
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.toml"
    config.write_text("")
    env = {"MOONSHOT_API_KEY": "sk-test"}
    return load_settings({"state_dir": tmp_path / "state", **flags}, environ=env, config_path=config)


# -- formats ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,size,rate,label,mime", VIDEOS)
def test_every_video_container_kimi_takes_is_recognised_by_content(tmp_path: Path, name: str, size: str, rate: int,
                                                                   label: str, mime: str) -> None:
    path = video(tmp_path / name, size=size, rate=rate)
    renamed = path.rename(tmp_path / "no-extension")  # judged by content, not by the name
    with renamed.open("rb") as fh:
        info = formats.inspect(fh, "no-extension")
    assert (info.kind, info.label, info.mime) == ("video", label, mime)
    assert (info.width, info.height) == tuple(int(x) for x in size.split("x"))
    assert info.duration and abs(info.duration - 1.0) < 0.2
    assert info.tokens == formats.estimate_tokens("video", info.width, info.height, info.duration)
    assert 0.8 * formats.VIDEO_TOKENS_PER_SECOND <= info.tokens <= 1.2 * formats.VIDEO_TOKENS_PER_SECOND
    assert info.warnings() == []


def test_images_and_their_estimates(tmp_path: Path) -> None:
    (tmp_path / "shot.png").write_bytes(png(1280, 720))
    with (tmp_path / "shot.png").open("rb") as fh:
        info = formats.inspect(fh, "shot.png")
    assert (info.kind, info.label, info.mime, info.width, info.height) == ("image", "PNG", "image/png", 1280, 720)
    assert info.tokens == 46 * 26  # one per 28x28 pixels
    assert info.describe().startswith("PNG, 1280x720, ")
    (tmp_path / "huge.png").write_bytes(png(5000, 10))
    with (tmp_path / "huge.png").open("rb") as fh:
        assert "larger than 4096x2160" in formats.inspect(fh, "huge.png").warnings()[0]


def test_an_over_resolution_video_gets_a_warning(tmp_path: Path) -> None:
    path = video(tmp_path / "wide.mp4", size="2560x240", seconds=0.2)
    with path.open("rb") as fh:
        info = formats.inspect(fh, "wide.mp4")
    assert info.width == 2560 and "larger than 2048x1080" in info.warnings()[0]


def test_files_that_are_not_media(tmp_path: Path) -> None:
    def judge(data: bytes, **kw: Any) -> str:
        path = tmp_path / "f"
        path.write_bytes(data)
        with path.open("rb") as fh, pytest.raises(formats.MediaError) as caught:
            formats.inspect(fh, "f", **kw)
        return str(caught.value)

    assert "f is not an image (PNG, JPEG, WebP or GIF) or a video (MP4, MPEG, MOV, AVI, FLV, WebM, WMV or 3GPP)" in judge(
        b"just some notes\n")
    assert "it is empty" in judge(b"")
    assert "Matroska (.mkv) is not among the formats" in judge(b"\x1a\x45\xdf\xa3" + b"\x00" * 40 + b"matroska")
    assert "SVG is text" in judge(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert "it is an image (PNG): use view_image" in judge(png(2, 2), kinds=("video",))
    big = tmp_path / "big.mp4"
    with big.open("wb") as fh:  # sparse: costs nothing
        fh.write(b"\x00\x00\x00\x20ftypisom")
        fh.truncate(formats.MAX_MEDIA_BYTES + 1)
    with big.open("rb") as fh, pytest.raises(formats.MediaError, match=r"big.mp4 is 100.0 MB; media files can be at "
                                                                       r"most 100.0 MB"):
        formats.inspect(fh, "big.mp4")


def test_view_video_through_the_registry(tmp_path: Path) -> None:
    video(tmp_path / "rec.webm")
    (tmp_path / "notes.txt").write_text("no video\n")
    ctx = ToolContext(workspace=tmp_path, sandbox=None)  # type: ignore[arg-type]
    reg = default_registry()
    res = reg.run("view_video", json.dumps({"path": "rec.webm"}), ctx)
    assert not res.is_error, res.text
    assert res.text.startswith("Attached rec.webm (WebM, 320x240, 1.0 s, ")
    assert res.attachments[0]["video_url"]["url"].startswith("data:video/webm;base64,")  # no store: inline
    assert res.metadata["duration"] == pytest.approx(1.0, abs=0.2)
    res = reg.run("view_video", json.dumps({"path": "notes.txt"}), ctx)
    assert res.is_error and "not a video" in res.text
    store = media.MediaStore(tmp_path / "session" / "media")
    ctx.media = store
    res = reg.run("view_video", json.dumps({"path": "rec.webm"}), ctx)
    assert res.attachments[0]["type"] == "media"
    ref = res.attachments[0]["media"]
    assert (tmp_path / "session" / ref["file"]).read_bytes() == (tmp_path / "rec.webm").read_bytes()
    ctx.media = media.MediaStore(tmp_path / "session" / "media", check=lambda info: "video input is turned off")
    res = reg.run("view_video", json.dumps({"path": "rec.webm"}), ctx)
    assert res.is_error and res.text == "rec.webm cannot be sent: video input is turned off."


# -- the store and the checks of --attach ---------------------------------------------------------


def test_the_store_is_content_addressed_and_keeps_its_own_copy(tmp_path: Path) -> None:
    src = tmp_path / "shot.png"
    src.write_bytes(png(4, 3))
    store = media.MediaStore(tmp_path / "s" / "media")
    a = store.add_path(src)
    b = store.add_path(src, "again.png")
    assert a["media"]["sha256"] == b["media"]["sha256"] and a["media"]["file"] == b["media"]["file"]
    assert a["media"]["file"] == f"media/{a['media']['sha256']}.png" and b["media"]["name"] == "again.png"
    assert sorted(p.name for p in (tmp_path / "s" / "media").iterdir()) == [f"{a['media']['sha256']}.png"]
    src.write_bytes(png(9, 9))  # the user's file changes: the stored copy does not
    assert (tmp_path / "s" / a["media"]["file"]).read_bytes() == png(4, 3)
    assert json.dumps(a).count("base64") == 0 and len(json.dumps(a)) < 400


def test_attach_errors_are_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "dir").mkdir()
    for path, message in [(tmp_path / "missing.png", "missing.png cannot be read: No such file or directory"),
                          (tmp_path / "dir", "is a directory, not an image or video file"),
                          (tmp_path / "notes.txt", "notes.txt is not an image (PNG, JPEG, WebP or GIF) or a video")]:
        with pytest.raises(ConfigError) as caught:
            media.probe_attachments([path])
        assert str(caught.value).startswith(f"--attach {path}") and message in str(caught.value)
        assert "\n" not in str(caught.value)


def test_endpoints_that_cannot_take_video_are_refused_at_the_start(tmp_path: Path) -> None:
    clip = video(tmp_path / "clip.mp4")
    infos = media.probe_attachments([clip])
    media.check_attachments(_settings(tmp_path), [clip], infos)  # moonshot: fine
    for flags, message in [({"provider": "openrouter"}, "provider openrouter is not known to take video input"),
                           ({"provider": "openai-compatible", "base_url": "http://127.0.0.1:1/v1"},
                            "provider openai-compatible is not known to take video input"),
                           ({"video_input": False}, "video input is turned off")]:
        with pytest.raises(ConfigError, match=message):
            media.check_attachments(_settings(tmp_path, **flags), [clip], infos)
    # A self-hosted server that does take video says so.
    media.check_attachments(_settings(tmp_path, provider="openai-compatible", base_url="http://127.0.0.1:1/v1",
                                      video_input=True), [clip], infos)
    with pytest.raises(ConfigError, match=r"more than one request may carry \(media_tokens = 1,000\)"):
        media.check_attachments(_settings(tmp_path, media_tokens=1000), [clip] * 4, infos * 4)


# -- building requests ----------------------------------------------------------------------------


class Client:
    """Stands in for ModelClient's files calls; records what was asked."""

    def __init__(self) -> None:
        self.uploads: list[tuple[str, str, str]] = []
        self.exists: dict[str, bool] = {}
        self.asked: list[str] = []

    def upload_file(self, path: Path, *, purpose: str, filename: str, mime: str) -> str:
        self.uploads.append((path.name, purpose, filename))
        file_id = f"file-{len(self.uploads)}"
        self.exists[file_id] = True
        return file_id

    def file_exists(self, file_id: str) -> bool:
        self.asked.append(file_id)
        return self.exists.get(file_id, False)


class Session:
    """A session directory with a state and a wire over it."""

    def __init__(self, tmp_path: Path, **flags: Any) -> None:
        self.root = tmp_path / "session"
        self.store = media.MediaStore(self.root / media.MEDIA_DIR)
        self.settings = _settings(tmp_path, **flags)
        self.state = SessionState()
        self.client = Client()
        self.recorded: list[Any] = []
        self.wire = self.make_wire()

    def make_wire(self, **kw: Any) -> media.MediaWire:
        def record(payload: Any) -> None:
            self.recorded.append(payload)
            self.state.uploads[payload.sha256] = payload.file_id

        return media.MediaWire(self.root, self.settings, self.client, self.state, record, **kw)

    def user(self, path: Path, text: str = "look") -> dict[str, Any]:
        return {"role": "user", "content": media.content(text, [self.store.add_path(path)])}


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["content"] if p.get("type") != "text"]


def test_references_become_inline_parts_built_once(tmp_path: Path) -> None:
    s = Session(tmp_path)
    (tmp_path / "shot.png").write_bytes(png(16, 16))
    task = s.user(tmp_path / "shot.png")
    messages = [{"role": "system", "content": "sys"}, task]
    out = s.wire(messages)
    assert out[0] is messages[0] and _parts(out[1]) == [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(png(16, 16)).decode()}}]
    assert messages[1]["content"][1]["type"] == "media"  # the logged message is untouched
    assert s.wire.builds == 1
    # The next steps add messages without media: nothing is built again, the same objects are sent.
    for i in range(3):
        messages = [*messages, {"role": "assistant", "content": f"step {i}"}]
        again = s.wire(messages)
        assert again[1] is out[1] and again[-1] is messages[-1]
    assert s.wire.builds == 1
    # A fresh wire (a resumed process) builds byte-identical parts from the same copy.
    assert json.dumps(s.make_wire()(messages)) == json.dumps(again)
    assert count_message(task) > 4 + 64  # the estimate counts the image


def test_large_media_are_uploaded_once_and_reused_after_a_resume(tmp_path: Path) -> None:
    s = Session(tmp_path, media_inline_bytes=1000)
    clip = video(tmp_path / "clip.mp4")
    task = s.user(clip)
    messages = [task, {"role": "assistant", "content": "ok"}, s.user(clip, "again, the same file")]
    out = s.wire(messages)
    assert s.client.uploads == [(f"{task['content'][1]['media']['sha256']}.mp4", "video", "clip.mp4")]
    assert _parts(out[0]) == _parts(out[2]) == [{"type": "video_url", "video_url": {"url": "ms://file-1"}}]
    assert [(p.file_id, p.purpose, p.name) for p in s.recorded] == [("file-1", "video", "clip.mp4")]
    # Resumed: the id is asked about once, then reused; gone, it is uploaded again.
    resumed = s.make_wire()
    assert json.dumps(resumed(messages)) == json.dumps(out) and s.client.asked == ["file-1"]
    resumed(messages + [{"role": "assistant", "content": "more"}])
    assert s.client.asked == ["file-1"]
    s.client.exists["file-1"] = False
    again = s.make_wire()(messages)
    assert _parts(again[0]) == [{"type": "video_url", "video_url": {"url": "ms://file-2"}}]
    assert len(s.client.uploads) == 2 and s.state.uploads[task["content"][1]["media"]["sha256"]] == "file-2"


def test_the_media_budget_leaves_out_the_oldest_media(tmp_path: Path) -> None:
    s = Session(tmp_path, media_tokens=1000)
    images = []
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png(280, 280, bytes([i, 0, 0])))  # 10 x 10 = 100 tokens
        images.append(s.user(tmp_path / f"{i}.png", f"image {i}"))
    big = tmp_path / "big.png"
    big.write_bytes(png(560, 420))  # 20 x 15 = 300 tokens
    tokens = [m["content"][1]["media"]["tokens"] for m in images]
    assert tokens == [100, 100, 100]
    messages = list(images)
    for n in range(6):  # 300-token images until the budget is exceeded
        messages.append(s.user(big, f"big {n}"))
    out = s.wire(messages)
    kinds = [_parts(m)[0]["type"] if _parts(m) else "placeholder" for m in out]
    # Newest first: 300 x 3 = 900 fit, the fourth 300 would make 1,200: it and everything older go.
    assert kinds == ["placeholder"] * 6 + ["image_url"] * 3
    text = out[0]["content"][1]["text"]
    assert text.startswith("[kimi-code] The image 0.png (PNG, 280x280, ") and "per-request budget" in text
    # The newest message's media always go, even alone over the budget.
    s2 = Session(tmp_path / "two", media_tokens=1000)
    (tmp_path / "wall.png").write_bytes(png(1400, 1400))  # 2,500 tokens
    alone = s2.wire([s2.user(tmp_path / "wall.png")])
    assert _parts(alone[0])[0]["type"] == "image_url"


def test_the_body_limit_uploads_the_largest_or_leaves_out_the_oldest(tmp_path: Path) -> None:
    clip = video(tmp_path / "clip.mp4")
    (tmp_path / "shot.png").write_bytes(png(8, 8))
    s = Session(tmp_path)
    messages = [s.user(clip), s.user(tmp_path / "shot.png")]
    budget = media.data_url_length("video/mp4", clip.stat().st_size)  # both together do not fit
    out = s.make_wire(inline_body_budget=budget)(messages)
    assert _parts(out[0]) == [{"type": "video_url", "video_url": {"url": "ms://file-1"}}]
    assert _parts(out[1])[0]["image_url"]["url"].startswith("data:image/png;base64,")
    # An endpoint without the files API: the oldest media is left out instead.
    s = Session(tmp_path / "b", provider="openai-compatible", base_url="http://127.0.0.1:1/v1", video_input=True)
    messages = [s.user(clip), s.user(tmp_path / "shot.png")]
    out = s.make_wire(inline_body_budget=budget)(messages)
    assert "100 MB limit" in out[0]["content"][1]["text"] and not s.client.uploads
    assert _parts(out[1])[0]["type"] == "image_url"


def test_a_missing_copy_becomes_a_placeholder(tmp_path: Path) -> None:
    s = Session(tmp_path)
    (tmp_path / "shot.png").write_bytes(png(8, 8))
    message = s.user(tmp_path / "shot.png")
    (s.root / message["content"][1]["media"]["file"]).unlink()
    out = s.wire([message])
    assert "stored copy is missing" in out[0]["content"][1]["text"]


def test_strip_media_names_the_file(tmp_path: Path) -> None:
    s = Session(tmp_path)
    clip = video(tmp_path / "demo.mp4")
    message = s.user(clip, "# Task\nmake it so")
    stripped = media.strip_media(message)
    assert [p["type"] for p in stripped["content"]] == ["text", "text"]
    assert stripped["content"][1]["text"].startswith("[kimi-code] The video demo.mp4 (MP4, 320x240, 1.0 s, ")
    assert "compacted" in stripped["content"][1]["text"]
    plain = {"role": "user", "content": "no media"}
    assert media.strip_media(plain) is plain
    old = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}
    assert "An image or video was attached here" in media.strip_media(old)["content"][0]["text"]
    assert count_message(stripped) < count_message(message)


def test_uploads_survive_a_rewind_in_the_fold() -> None:
    from kimi_code.agent import event_payloads as ep
    from kimi_code.agent.events import Event

    events = [Event("session_started", {"session_id": "s", "task": "t"}, 0),
              Event("assistant", {"message": {"role": "assistant", "content": "a"}, "usage": {}, "cost": 0}, 1),
              Event("media_uploaded", ep.MediaUploaded(sha256="abc", file_id="f1", purpose="image", bytes=3,
                                                       name="a.png").data(), 2),
              Event("rewind", {"to_step": 1, "commit": "c"}, 2)]
    assert SessionState.fold(events).uploads == {"abc": "f1"}
    assert media.uploaded_file_ids(events) == ["f1"]


def test_sessions_without_media_send_their_messages_unchanged(tmp_path: Path) -> None:
    s = Session(tmp_path)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "t"}]
    out = s.wire(messages)
    assert out == messages and all(a is b for a, b in zip(out, messages)) and s.wire.builds == 0
