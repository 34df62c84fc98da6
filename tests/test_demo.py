"""`kimi-code demo`: the bundled recording replayed on the bundled sample, in the real sandbox."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_IMAGE
from demo_recording import scripted_turns
from helpers import cli_env, git, run_cli, stream_events
from kimi_code.agent import demo
from kimi_code.agent.replay import Recording


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = cli_env(tmp_path, **extra)
    env.pop("MOONSHOT_API_KEY")  # the demo is for people without a key
    return env


def _sample_tests(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unittest", "discover", "-s", "tests"], cwd=repo,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.docker
@pytest.mark.slow
def test_demo_fixes_the_sample_in_the_docker_sandbox(tmp_path: Path, remove_containers_under: Path) -> None:
    repo = tmp_path / "tally"
    assert "FAILED (failures=4)" in _sample_tests(demo.prepare_repo(tmp_path / "before")).stderr
    proc = run_cli(["demo", "--dir", str(repo), "--image", TEST_IMAGE], _env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "notice:" not in proc.stderr  # no fallback: it ran in Docker
    out = proc.stdout
    assert f"replaying a recorded session in {repo}" in out
    assert "Tests FAILED: 1 passed, 4 failed" in out and "Tests PASSED: 5 passed, 0 failed" in out
    assert "success: tokenize() split on spaces only" in out
    assert "MOONSHOT_API_KEY=sk-... kimi-code run --repo" in out and "kimi-code show " in out
    # The sample's own tests pass now, run here on the host, outside the sandbox.
    tests = _sample_tests(repo)
    assert tests.returncode == 0 and "Ran 5 tests" in tests.stderr
    assert git(repo, "status", "--short") == " M tally/words.py\n"
    sid = out.split("kimi-code show ")[1].split()[0]
    events = [json.loads(line) for line in (tmp_path / "state" / sid / "events.jsonl").read_text().splitlines()]
    sandbox = next(e for e in events if e["type"] == "sandbox")["payload"]
    assert sandbox["backend"] == "docker" and sandbox["image"] == TEST_IMAGE and sandbox["workspace"] == "/workspace"
    todo = [e for e in events if e["type"] == "tool_result" and e["payload"]["name"] == "todo"][-1]["payload"]
    todo = todo["metadata"]["todo"]
    assert [i["status"] for i in todo] == ["done", "done", "done"]
    assert any(e["type"] == "checkpoint" and "tally/words.py" in e["payload"]["changed"] for e in events)


def test_demo_falls_back_to_no_sandbox_without_docker(tmp_path: Path) -> None:
    env = _env(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    repo = tmp_path / "tally"
    proc = run_cli(["demo", "--dir", str(repo), "--output", "stream-json"], env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "notice: Docker is not available" in proc.stderr and "runs with --sandbox none" in proc.stderr
    events = stream_events(proc.stdout)
    assert next(e for e in events if e["type"] == "sandbox")["payload"]["backend"] == "local"
    assert events[-1]["status"] == "success" and events[-1]["last_tests"]["passed"] == 5
    assert _sample_tests(repo).returncode == 0


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("mine")
    proc = run_cli(["demo", "--dir", str(tmp_path / "busy"), "--sandbox", "none"], _env(tmp_path))
    assert proc.returncode == 2 and "is not empty" in proc.stderr and "Traceback" not in proc.stderr
    assert (tmp_path / "busy" / "file").read_text() == "mine"


def test_bundled_recording_is_the_scripted_session() -> None:
    """The recording must be regenerated (python tests/demo_recording.py) when the script changes."""
    recording = Recording.load(demo.RECORDING)
    assert recording.task == demo.TASK
    script = scripted_turns()
    assert len(recording.turns) == len(script)
    for recorded, turn in zip(recording.turns, script):
        message = recorded.message
        assert message.get("reasoning_content") == turn.reasoning
        assert (message.get("content") or "") == turn.content
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls", [])]
        assert calls == [(c.name, c.arguments) for c in turn.tool_calls]
        # Every call's result is in the recording, so a replay can check each one.
        assert len(recorded.results) == len(recorded.call_ids)


def test_demo_ignores_the_users_commit_signing_and_hooks(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 1\n")
    (hooks / "pre-commit").chmod(0o755)
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f"[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n[core]\n\thooksPath = {hooks}\n"
                         "[init]\n\tdefaultBranch = trunk\n")
    env = _env(tmp_path, GIT_CONFIG_GLOBAL=str(gitconfig))
    proc = run_cli(["demo", "--dir", str(tmp_path / "tally"), "--sandbox", "none", "--output", "json"], env,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["status"] == "success"
    assert git(tmp_path / "tally", "branch", "--show-current") == "main\n"


@pytest.mark.docker
def test_demo_with_docker_but_no_image_says_the_image_is_missing(tmp_path: Path) -> None:
    """Docker works; only the image cannot be had: the notice says that, not that Docker is missing."""
    repo = tmp_path / "tally"
    proc = run_cli(["demo", "--dir", str(repo), "--image", "kimi-code-test.invalid/none:latest", "--output", "json"],
                   _env(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "notice: The Docker sandbox cannot be used (the sandbox image kimi-code-test.invalid/none:latest" in proc.stderr
    assert "Docker is not available" not in proc.stderr and "runs with --sandbox none" in proc.stderr
