"""Helpers for end-to-end tests that drive the real CLI process against the fake Kimi server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = "sk-test-e2e-key-0123456789"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for name, text in files.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    return path


def empty_config(tmp_path: Path) -> Path:
    """An existing, empty config file: isolates a run from the user's own config (a KIMI_CODE_CONFIG
    naming a missing file is an error)."""
    path = tmp_path / "empty-config.toml"
    if not path.exists():
        tmp_path.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return path


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))}
    env.update({
        "MOONSHOT_API_KEY": KEY,
        "KIMI_CODE_STATE_DIR": str(tmp_path / "state"),
        "KIMI_CODE_CONFIG": str(empty_config(tmp_path)),
        "KIMI_CODE_RETRY_WINDOW": "5",
        # Every CLI run in the tests checks that its log replays into its live state.
        "KIMI_CODE_VERIFY_REPLAY": "1",
    })
    env.update(extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kimi_code.agent.cli", *args]


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120, cwd: Path | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, input=input if input is not None else "")


def stream_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def sandbox_args(kind: str) -> list[str]:
    from conftest import TEST_IMAGE

    return ["--sandbox", "docker", "--image", TEST_IMAGE] if kind == "docker" else ["--sandbox", "none"]


def run_with_random_kills(args_for: Callable[[int], list[str]], env: dict[str, str], fake: Any,
                          rng: random.Random, kill_within: tuple[float, float], *, attempts: int = 400,
                          progress_timeout: float = 120.0) -> tuple[int, str]:
    """Start the CLI with ``args_for(kills so far)`` (a run first, then resumes), SIGKILL each
    process at a random moment once it has made progress (sent a model request to ``fake``), and
    go on until one exits 0; returns (kills, its stdout). However slow start-up and resume are on
    a busy machine, every attempt moves the session forward, so this cannot livelock."""
    kills = 0
    for _ in range(attempts):
        before = fake.request_count
        proc = subprocess.Popen(cli_cmd(*args_for(kills)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        waited = time.monotonic() + progress_timeout
        while proc.poll() is None and fake.request_count == before and time.monotonic() < waited:
            time.sleep(0.005)
        if proc.poll() is None and fake.request_count == before:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"no model request within {progress_timeout}s of starting: {err[-3000:]}")
        try:
            out, err = proc.communicate(timeout=rng.uniform(*kill_within))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        if proc.returncode == 0:
            return kills, out
        raise AssertionError(f"exit {proc.returncode}: {err[-3000:]}")
    raise AssertionError("never finished")
