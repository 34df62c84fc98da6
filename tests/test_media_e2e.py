"""End to end: `run --attach`, `view_video`, uploads, resume and compaction with real media files,
checked in the fake Kimi server's recorded requests and in the session log."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from helpers import KEY, cli_cmd, cli_env, make_repo, run_cli
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from media_files import png, video


def _finish(summary: str = "done") -> Turn:
    return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": summary})])


def _run(repo: Path, fake: FakeKimi, env: dict[str, str], *args: str, task: str = "Make it look like this",
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output", "json",
                    *args, task], env, timeout=timeout)


def _media_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [p for p in content if p.get("type") in ("image_url", "video_url")] if isinstance(content, list) else []


def _user_parts(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for m in request["messages"] if m["role"] == "user" for p in _media_parts(m)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _log(tmp_path: Path, session_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "state" / session_id / "events.jsonl").read_text().splitlines()]


def test_a_task_with_an_attached_screenshot(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"index.html": "<p>hi</p>\n"})
    shot = tmp_path / "screenshot.png"
    shot.write_bytes(png(1280, 720, b"\x10\x20\x30"))
    # The image (~1,200 tokens estimated) is far over the tool-output budget: that budget is for text.
    env = cli_env(tmp_path, KIMI_CODE_TOOL_OUTPUT_TOKENS="500")
    script = [Turn(reasoning="look", tool_calls=[ToolCallSpec("read_file", {"path": "index.html"})]), _finish()]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--attach", str(shot))
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = fake.requests
    session_id = json.loads(proc.stdout)["session_id"]
    task = requests[0]["messages"][1]
    assert task["role"] == "user" and task["content"][0]["type"] == "text"
    text = task["content"][0]["text"]
    assert text.startswith("# Task\nMake it look like this") and "screenshot.png (PNG, 1280x720, " in text
    expected = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(shot.read_bytes()).decode()}}
    assert task["content"][1:] == [expected]
    assert requests[1]["messages"][1] == task  # every request sends it again, unchanged
    # The log holds a reference with the content hash; the copy is in the session's media/.
    raw = (tmp_path / "state" / session_id / "events.jsonl").read_text()
    assert "base64" not in raw and _sha(shot) in raw and len(raw) < 20_000
    started = _log(tmp_path, session_id)[0]["payload"]
    [ref] = started["attachments"]
    assert ref["type"] == "media" and ref["media"]["sha256"] == _sha(shot) and ref["media"]["mime"] == "image/png"
    assert (tmp_path / "state" / session_id / ref["media"]["file"]).read_bytes() == shot.read_bytes()


def test_a_task_with_an_attached_video(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    clip = video(tmp_path / "bug.mp4", seconds=2)
    with FakeKimi([_finish()], api_key=KEY) as fake:
        proc = _run(repo, fake, cli_env(tmp_path), "--attach", str(clip), task="The video shows the bug; fix it")
        assert proc.returncode == 0, proc.stderr[-3000:]
        request = fake.requests[0]
    task = request["messages"][1]
    assert "bug.mp4 (MP4, 320x240, 2.0 s, " in task["content"][0]["text"]
    assert task["content"][1:] == [{"type": "video_url", "video_url": {
        "url": "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()}}]
    assert "base64" not in (tmp_path / "state" / json.loads(proc.stdout)["session_id"] / "events.jsonl").read_text()


def test_large_videos_are_uploaded_once_and_pruning_deletes_them(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    video(repo / "recording.webm")  # a video the agent finds in the workspace
    clip = video(tmp_path / "clip.mp4")
    env = cli_env(tmp_path, KIMI_CODE_MEDIA_INLINE_BYTES="1000")  # a low threshold, not a 100 MB file
    script = [Turn(reasoning="watch", tool_calls=[ToolCallSpec("view_video", {"path": "recording.webm"})]),
              Turn(reasoning="read", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]), _finish()]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--attach", str(clip))
        assert proc.returncode == 0, proc.stderr[-3000:]
        session_id = json.loads(proc.stdout)["session_id"]
        assert [(u["filename"], u["purpose"], u["bytes"]) for u in fake.uploads] == [
            ("clip.mp4", "video", clip.stat().st_size), ("recording.webm", "video", (repo / "recording.webm").stat().st_size)]
        first, second = (u["id"] for u in fake.uploads)
        assert fake.files[first]["data"] == clip.read_bytes()
        requests = fake.requests
        assert [_user_parts(r) for r in requests] == [
            [{"type": "video_url", "video_url": {"url": f"ms://{first}"}}],
            [{"type": "video_url", "video_url": {"url": f"ms://{first}"}},
             {"type": "video_url", "video_url": {"url": f"ms://{second}"}}],
            [{"type": "video_url", "video_url": {"url": f"ms://{first}"}},
             {"type": "video_url", "video_url": {"url": f"ms://{second}"}}]]
        tool = next(m for m in requests[1]["messages"] if m["role"] == "tool")
        assert tool["content"].startswith("Attached recording.webm (WebM, 320x240, 1.0 s, ")
        uploaded = [e["payload"] for e in _log(tmp_path, session_id) if e["type"] == "media_uploaded"]
        assert [(p["file_id"], p["name"]) for p in uploaded] == [(first, "clip.mp4"), (second, "recording.webm")]
        # Pruning the session deletes its uploads at the endpoint it used.
        prune = run_cli(["sessions", "prune", "--older-than", "0"], env)
        assert prune.returncode == 0, prune.stderr
        assert "1 session(s) removed" in prune.stdout and "not deleted" not in prune.stderr
        assert sorted(fake.deleted) == sorted([first, second]) and fake.files == {}


def test_a_session_killed_and_resumed_sends_byte_identical_parts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    shot = tmp_path / "shot.png"
    shot.write_bytes(png(50, 30))
    clip = video(tmp_path / "clip.webm")
    env = cli_env(tmp_path)
    answers = iter([Turn(reasoning="read", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]),
                    Turn(reasoning="slow", content="never arrives", delay=60), _finish()])
    with FakeKimi(lambda body: next(answers), api_key=KEY) as fake:
        cmd = cli_cmd("run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output", "json",
                      "--attach", str(shot), "--attach", str(clip), "match the picture and the video")
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while fake.request_count < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert fake.request_count == 2, process.communicate()[1][-3000:] if process.poll() is not None else "no request"
        process.send_signal(signal.SIGKILL)
        process.communicate()
        # The user's files change after the start: the session kept its own copies.
        shot.write_bytes(png(5, 5))
        clip.write_bytes(b"gone")
        proc = run_cli(["resume", "--last", "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = fake.requests
    assert len(requests) == 3
    before, after = requests[1]["messages"][1], requests[2]["messages"][1]
    assert [p["type"] for p in before["content"]] == ["text", "image_url", "video_url"]
    assert json.dumps(after, ensure_ascii=False) == json.dumps(before, ensure_ascii=False)
    assert requests[2]["messages"][: len(requests[1]["messages"])] == requests[1]["messages"]


def test_a_resumed_session_reuses_its_upload_or_uploads_again(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    clip = video(tmp_path / "clip.mp4")
    extra = video(tmp_path / "more.webm")
    env = cli_env(tmp_path, KIMI_CODE_MEDIA_INLINE_BYTES="1000")
    read = Turn(reasoning="read", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})])
    with FakeKimi([read, _finish(), _finish("again")], api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--max-steps", "1", "--attach", str(clip))
        assert proc.returncode == 3, proc.stderr[-3000:]
        session_id = json.loads(proc.stdout)["session_id"]
        [upload] = fake.uploads
        proc = run_cli(["resume", session_id, "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert fake.uploads == [upload]  # the id still exists: reused, so the bytes sent are the same
        assert json.dumps(fake.requests[1]["messages"][1]) == json.dumps(fake.requests[0]["messages"][1])
        # The endpoint dropped the file: the next resume uploads it again, and --continue adds a video.
        fake.forget_file(upload["id"])
        proc = run_cli(["resume", session_id, "--base-url", fake.base_url, "--output", "json",
                        "--continue", "also look at this one", "--attach", str(extra)], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert [u["filename"] for u in fake.uploads] == ["clip.mp4", "clip.mp4", "more.webm"]
        last = fake.requests[-1]["messages"]
        new_id, extra_id = fake.uploads[1]["id"], fake.uploads[2]["id"]
    assert _media_parts(last[1]) == [{"type": "video_url", "video_url": {"url": f"ms://{new_id}"}}]
    cont = [m for m in last if m["role"] == "user" and "also look at this one" in json.dumps(m)][0]
    assert cont["content"][0]["text"].startswith("# Additional instructions from the user\nalso look at this one")
    assert _media_parts(cont) == [{"type": "video_url", "video_url": {"url": f"ms://{extra_id}"}}]


def test_compaction_drops_an_old_video(tmp_path: Path) -> None:
    window, steps = 24_000, 30
    big = "\n".join(f"{i:04d} " + "lorem ipsum dolor sit amet " * 3 for i in range(60))
    repo = make_repo(tmp_path / "repo", {"big.txt": big})
    video(repo / "run.mp4")
    clip = video(tmp_path / "demo.mp4")
    summaries: list[dict[str, Any]] = []
    calls = [0]

    def model(body: dict[str, Any]) -> Turn:
        if not body.get("tools"):
            summaries.append(body)
            return Turn(content="SUMMARY: watched the videos, read big.txt several times.")
        calls[0] += 1
        if calls[0] == 1:
            return Turn(reasoning="watch", tool_calls=[ToolCallSpec("view_video", {"path": "run.mp4"})])
        if calls[0] >= steps:
            return _finish()
        return Turn(reasoning=f"read {calls[0]}", tool_calls=[ToolCallSpec("read_file", {"path": "big.txt",
                                                                                        "offset": 1 + calls[0] % 2})])

    env = cli_env(tmp_path, KIMI_CODE_CONTEXT_WINDOW=str(window), KIMI_CODE_MAX_OUTPUT_TOKENS="2000",
                  KIMI_CODE_TOOL_OUTPUT_TOKENS="3000")
    with FakeKimi(model, api_key=KEY, context_window=window) as fake:
        proc = _run(repo, fake, env, "--attach", str(clip), task="Fix what the demo video shows")
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests, statuses = fake.requests, fake.responses
    out = json.loads(proc.stdout)
    assert all(s == 200 for s in statuses) and out["compactions"] >= 1
    tool_requests = [r for r in requests if r.get("tools")]
    with_video = [i for i, r in enumerate(tool_requests) if _user_parts(r)]
    assert with_video[0] == 0 and len(_user_parts(tool_requests[1])) == 2  # the task's video, then run.mp4
    after = tool_requests[with_video[-1] + 1:]
    assert after, "no request after the compaction"
    # After the compaction no request carries a video; the task says which file was there.
    assert all("video_url" not in json.dumps(r) for r in after)
    task = after[0]["messages"][1]
    assert task["content"][0]["text"].startswith("# Task\nFix what the demo video shows")
    assert task["content"][1]["text"].startswith("[kimi-code] The video demo.mp4 (MP4, 320x240, 1.0 s, ")
    assert "compacted" in task["content"][1]["text"]
    assert all("video_url" not in json.dumps(s) for s in summaries)  # nor the summary call
    compactions = [e["payload"] for e in _log(tmp_path, out["session_id"]) if e["type"] == "compaction"]
    assert all('"type": "media"' not in json.dumps(c["head"]) for c in compactions)


def test_each_bad_input_gets_one_clear_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    (tmp_path / "notes.txt").write_text("not media\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "movie.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 60 + b"matroska")
    huge = tmp_path / "huge.mp4"
    with huge.open("wb") as fh:
        fh.write(b"\x00\x00\x00\x20ftypisom")
        fh.truncate(100_000_001)
    clip = video(tmp_path / "clip.mp4", seconds=0.5)
    env = cli_env(tmp_path)
    with FakeKimi([], api_key=KEY) as fake:
        cases = [
            (["--attach", str(tmp_path / "notes.txt")], "notes.txt is not an image (PNG, JPEG, WebP or GIF) or a video"),
            (["--attach", str(tmp_path / "missing.png")], "missing.png cannot be read: No such file or directory"),
            (["--attach", str(tmp_path / "folder")], "folder is a directory, not an image or video file"),
            (["--attach", str(tmp_path / "movie.mkv")], "Matroska (.mkv) is not among the formats Kimi takes"),
            (["--attach", str(huge)], "huge.mp4 is 100.0 MB; media files can be at most 100.0 MB"),
            (["--provider", "openai-compatible", "--attach", str(clip)],
             "provider openai-compatible is not known to take video input (set video_input = true"),
        ]
        for args, message in cases:
            proc = _run(repo, fake, env, *args)
            assert proc.returncode == 2, (args, proc.stderr)
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and message in errors[0] and errors[0].startswith("error: --attach "), proc.stderr
            assert "Traceback" not in proc.stderr
        proc = run_cli(["resume", "--last", "--attach", str(clip)], env)
        assert proc.returncode == 2 and "--attach on resume goes with --continue" in proc.stderr
        assert fake.request_count == 0
    state = tmp_path / "state"
    assert not state.exists() or [p.name for p in state.iterdir() if not p.name.startswith(".")] == []
    assert not state.exists() or list(state.iterdir()) == []  # no staging directory left behind either
    # A video that is over 2K goes, with a warning.
    wide = video(tmp_path / "wide.mp4", size="2560x240", seconds=0.2)
    with FakeKimi([_finish()], api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--attach", str(wide))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert _user_parts(fake.requests[0])[0]["type"] == "video_url"
    assert "larger than 2048x1080" in proc.stderr
