"""Helpers for end-to-end tests that drive the real CLI process against the fake Kimi server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
