"""The fake Kimi server's files API and its rules for image and video parts, through the real SDK."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import openai
import pytest

from kimi_code.agent.fake_kimi import FakeKimi, Turn, default_count_tokens
from media_files import png, video


def _client(fake: FakeKimi) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)


def _chat(client: openai.OpenAI, parts: list[dict]) -> None:
    client.chat.completions.create(model="kimi-k2.6", messages=[{"role": "user", "content": parts}],
                                   max_completion_tokens=100)


def test_upload_retrieve_reference_and_delete(tmp_path: Path) -> None:
    clip = video(tmp_path / "clip.mp4").read_bytes()
    with FakeKimi([Turn(content="a video"), Turn(content="never")]) as fake:
        client = _client(fake)
        created = client.files.create(file=("clip.mp4", io.BytesIO(clip), "video/mp4"), purpose="video")  # type: ignore[arg-type]
        assert created.id and created.bytes == len(clip) and created.purpose == "video"
        assert fake.files[created.id]["data"] == clip and fake.uploads[0]["filename"] == "clip.mp4"
        assert client.files.retrieve(created.id).id == created.id
        _chat(client, [{"type": "text", "text": "what happens?"},
                       {"type": "video_url", "video_url": {"url": f"ms://{created.id}"}}])
        assert client.files.delete(created.id).deleted
        assert fake.deleted == [created.id]
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(created.id)
        with pytest.raises(openai.BadRequestError, match=f"file ms://{created.id} not found"):
            _chat(client, [{"type": "video_url", "video_url": {"url": f"ms://{created.id}"}}])


def test_uploads_are_checked(tmp_path: Path) -> None:
    with FakeKimi([], max_file_bytes=1000) as fake:
        client = _client(fake)
        with pytest.raises(openai.BadRequestError, match="exceeds the limit of 1000 bytes"):
            client.files.create(file=("big.png", io.BytesIO(png(200, 200, b"\x01\x02\x03") + b"\0" * 2000), "image/png"),
                                purpose="image")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="not a supported video format"):
            client.files.create(file=("x.mp4", io.BytesIO(png(2, 2)), "video/mp4"), purpose="video")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="purpose must be one of"):
            client.files.create(file=("x.png", io.BytesIO(png(2, 2)), "image/png"), purpose="vision")  # type: ignore[arg-type]
        image = client.files.create(file=("x.png", io.BytesIO(png(2, 2)), "image/png"), purpose="image")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="uploaded with purpose 'image', not 'video'"):
            _chat(client, [{"type": "video_url", "video_url": {"url": f"ms://{image.id}"}}])
        assert [u["id"] for u in fake.uploads] == [image.id]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0).files.create(
                file=("x.png", io.BytesIO(png(2, 2)), "image/png"), purpose="image")  # type: ignore[arg-type]


@pytest.mark.parametrize("part,message", [
    ({"type": "media", "media": {"sha256": "x"}}, "unknown content part type 'media'"),
    ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, "base64 data URL or ms://"),
    ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}, "unsupported image type image/bmp"),
    ({"type": "video_url", "video_url": {"url": "data:video/x-matroska;base64,AAAA"}},
     "unsupported video type video/x-matroska"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,not base64!"}}, "not valid base64"),
    ({"type": "video_url", "video_url": {"url": "ms://nope"}}, "file ms://nope not found"),
])
def test_parts_kimi_would_reject(part: dict, message: str) -> None:
    with FakeKimi([]) as fake:
        with pytest.raises(openai.BadRequestError, match=message):
            _chat(_client(fake), [{"type": "text", "text": "look"}, part])


def test_a_body_over_the_limit_is_rejected() -> None:
    data = "data:image/png;base64," + base64.b64encode(png(2, 2) + os.urandom(60_000)).decode()
    with FakeKimi([Turn(content="ok")], max_body_bytes=len(data) + 10_000) as fake:
        client = _client(fake)
        _chat(client, [{"type": "image_url", "image_url": {"url": data}}])
        with pytest.raises(openai.BadRequestError, match="request body .* exceeds the limit"):
            _chat(client, [{"type": "image_url", "image_url": {"url": data}},
                           {"type": "image_url", "image_url": {"url": data}}])


def test_media_count_at_a_flat_rate_however_they_are_sent() -> None:
    small = "data:image/png;base64," + base64.b64encode(png(2, 2)).decode()
    large = "data:image/png;base64," + base64.b64encode(png(400, 400, b"\x01\x02\x03")).decode()

    def body(url: str) -> dict:
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}

    assert default_count_tokens(body(small)) == default_count_tokens(body(large)) == default_count_tokens(
        body("ms://fake-file-0001"))
    assert 1000 <= default_count_tokens(body(small)) < 1100
    assert json.dumps(body(small))  # plain JSON
