"""Faults around a session's files and ends: each gives one line and a documented exit code, and
leaves a session that can be continued (issue 16)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_cmd, cli_env, git, make_repo, run_cli
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn


def _call(name: str, **arguments: Any) -> ToolCallSpec:
    return ToolCallSpec(name, arguments)


def _run(repo: Path, fake: FakeKimi, env: dict[str, str], *extra: str, task: str = "task",
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output", "json",
                    *extra, task], env, timeout=timeout)


# Lines a run prints on stderr besides its error: the --sandbox none warning, the tokenizer
# notice, progress notices.
_INFO = ("warning: --sandbox none", "tiktoken encoding", "kimi-code: ")


def _one_line_error(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(_INFO)]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    return lines[0]


def _read_then_finish() -> list[Turn]:
    return [Turn(reasoning="r", tool_calls=[_call("read_file", path="a.txt")]),
            Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])]


def _events(state: Path) -> list[dict[str, Any]]:
    (log,) = state.glob("*/events.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_log_from_a_newer_version_is_refused_not_half_replayed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="r", tool_calls=[_call("read_file", path="a.txt")])], api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--max-steps", "1")
        assert proc.returncode == 3, proc.stderr
        sid = json.loads(proc.stdout)["session_id"]
        log = tmp_path / "state" / sid / "events.jsonl"
        lines = log.read_text().splitlines()
        newer = json.loads(lines[-1])
        newer["v"] = 99
        log.write_text("\n".join([*lines, json.dumps(newer)]) + "\n")
        for args in (["resume", sid, "--base-url", fake.base_url], ["show", sid], ["export", sid]):
            proc = run_cli(args, env)
            assert proc.returncode == 2, (args, proc.stderr)
            assert "written by a newer kimi-code" in _one_line_error(proc.stderr)
        assert fake.request_count == 1  # nothing was sent on a partial replay


def test_a_missing_meta_json_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    script = _read_then_finish()
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--max-steps", "1")
        sid = json.loads(proc.stdout)["session_id"]
        (tmp_path / "state" / sid / "meta.json").unlink()
        listed = run_cli(["sessions", "--json"], env)
        assert listed.returncode == 0 and json.loads(listed.stdout.splitlines()[0])["id"] == sid
        assert json.loads(listed.stdout.splitlines()[0])["steps"] == 1
        proc = run_cli(["resume", "--last", "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["session_id"] == sid


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 256 KB filesystem (tmpfs) for the state directory; needs root."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_exit_74_and_resumes_once_space_is_freed(tmp_path: Path, small_disk: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path, KIMI_CODE_STATE_DIR=str(small_disk / "state"))
    # Each step writes ~12 KB into the log (a big tool result): a 256 KB disk fills within ~20 steps.
    big = [Turn(reasoning=f"r{i}", tool_calls=[_call("shell", command=f"head -c 10000 /dev/zero | tr '\\0' {i % 10}")])
           for i in range(40)]
    script = [*big, Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env)
        assert proc.returncode == 74, proc.stderr
        line = _one_line_error(proc.stderr)
        assert "No space left on device" in line and "kimi-code resume" in line and "intact" in line
        state_dir = small_disk / "state"
        (session,) = [p for p in state_dir.iterdir() if not p.name.startswith(".")]
        assert not [p for p in session.iterdir() if p.name.endswith(".tmp")]  # no temp-file litter
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        proc = run_cli(["resume", session.name, "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["status"] == "success"


def test_result_targets_are_checked_before_the_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    git(repo, "branch", "taken")
    env = cli_env(tmp_path)
    (tmp_path / "a-file").write_text("")
    bad = [
        (["--patch-out", str(tmp_path / "missing-dir" / "out.patch")], "does not exist"),
        (["--patch-out", str(tmp_path)], "is a directory"),
        (["--patch-out", str(tmp_path / "a-file" / "out.patch")], "does not exist"),
        (["--branch", "bad..name"], "not a valid branch name"),
        (["--branch", "taken"], "already exists"),
    ]
    with FakeKimi([], api_key=KEY) as fake:
        for flags, message in bad:
            proc = _run(repo, fake, env, *flags)
            assert proc.returncode == 2, (flags, proc.stderr)
            assert message in _one_line_error(proc.stderr), flags
        assert fake.request_count == 0
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").iterdir())  # no session made


def test_a_patch_that_cannot_be_written_at_the_end_is_reported_and_written_again_by_resume(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def model(body: dict[str, Any]) -> Turn:
        if len([m for m in body["messages"] if m["role"] == "assistant"]) == 0:
            shutil.rmtree(out_dir)  # the target goes away while the agent works
            return Turn(reasoning="w", tool_calls=[_call("write_file", path="a.txt", content="y\n")])
        return Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])

    with FakeKimi(model, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--patch-out", str(out_dir / "result.patch"))
    assert proc.returncode == 74, proc.stderr
    assert "could not write --patch-out" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "success" and "patch_error" in summary
    again = tmp_path / "again.patch"
    proc = run_cli(["resume", summary["session_id"], "--patch-out", str(again)], env)
    assert proc.returncode == 0, proc.stderr
    assert "+y" in again.read_text()


def test_sigterm_records_the_interruption_prints_the_hint_and_exits_143(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    slow = [Turn(reasoning=f"r{i}", tool_calls=[_call("shell", command=f"sleep 0.2; echo {i}")]) for i in range(100)]
    with FakeKimi([*slow, Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])], api_key=KEY) as fake:
        proc = subprocess.Popen(cli_cmd("run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                        "--output", "json", "loop"), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while fake.request_count < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 143, err
        sid = json.loads(out)["session_id"]
        assert f"kimi-code resume {sid}" in err
        assert _events(tmp_path / "state")[-1]["type"] == "interrupted"
        proc = run_cli(["resume", sid, "--base-url", fake.base_url, "--output", "json"], env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["status"] == "success"


def test_an_empty_reply_is_asked_again_once_then_fails(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(content=""), Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])],
                  api_key=KEY) as fake:
        proc = _run(repo, fake, env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["summary"] == "ok"
        assert "Your last reply was empty" in json.dumps(fake.requests[-1]["messages"])
    with FakeKimi([Turn(content=""), Turn(content=" \n")], api_key=KEY) as fake:
        proc = _run(repo, fake, cli_env(tmp_path / "second"))
        assert proc.returncode == 1, proc.stderr
        out = json.loads(proc.stdout)
        assert out["status"] == "failure" and "empty replies" in out["summary"]


def test_a_torn_meta_json_is_rebuilt_and_resume_if_exists_still_finds_the_session(tmp_path: Path) -> None:
    """meta.json is written without fsync after each step: a crash may leave it torn."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    script = _read_then_finish()
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--max-steps", "1", "--resume-if-exists", task="same task")
        assert proc.returncode == 3, proc.stderr
        sid = json.loads(proc.stdout)["session_id"]
        (tmp_path / "state" / sid / "meta.json").write_text('{"id": "')
        proc = _run(repo, fake, env, "--resume-if-exists", task="same task")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["session_id"] == sid  # found by its key, rebuilt from the log


def test_root_finds_the_work_tree_of_a_repository_another_user_owns(tmp_path: Path) -> None:
    """git refuses a repository another user owns ("dubious ownership") unless told otherwise; a
    root-run kimi-code on a user's checkout must still find its work tree."""
    from kimi_code.agent.session import find_workspace

    if os.geteuid() != 0:
        pytest.skip("needs root to own a repository as another user")
    repo = make_repo(tmp_path / "theirs", {"a.txt": "x\n"})
    (repo / "sub").mkdir()
    subprocess.run(["chown", "-R", "4321:4321", str(tmp_path / "theirs")], check=True)
    assert find_workspace(repo / "sub", no_git=False) == repo.resolve()


def test_root_runs_on_a_repository_another_user_owns_with_checkpoints(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to own a repository as another user")
    repo = make_repo(tmp_path / "theirs", {"a.txt": "x\n"})
    subprocess.run(["chown", "-R", "4321:4321", str(repo)], check=True)
    script = [Turn(reasoning="w", tool_calls=[_call("write_file", path="a.txt", content="y\n")]),
              Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint failed" not in proc.stderr
    assert json.loads(proc.stdout)["changed_files"] == ["a.txt"]
