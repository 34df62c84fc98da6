"""Bad input through the real CLI process: every user error is one line on stderr and a
documented exit code (2 for usage and configuration errors), never "internal error" (70), a
traceback, a hang, or a session created for nothing (issue 16)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_cmd, cli_env, make_repo, run_cli
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

README = Path(__file__).resolve().parent.parent / "README.md"
DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port: a regression fails fast, never hangs


def documented_exit_codes() -> set[int]:
    """The codes in the README's exit-code table."""
    text = README.read_text()
    section = text[text.index("### Exit codes"):]
    section = section[:section.index("\n\n", section.index("|"))]
    return {int(m) for m in re.findall(r"^\|\s*(\d+)\s*\|", section, re.MULTILINE)}


@dataclass
class Case:
    id: str
    args: list[str]
    needle: str  # a piece of the one stderr line
    env: dict[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    code: int = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hardening")
    repo = make_repo(root / "repo", {"a.txt": "x\n"})
    (root / "plain").mkdir()
    (root / "afile").write_text("just a file\n")
    (root / "binary").write_bytes(b"\xff\xfe\x00\x81\x00binary\x00")
    (root / "big.txt").write_text("lorem ipsum dolor sit amet " * 65_000)  # ~1.7 MB
    (root / "bad.toml").write_text("this is = not = toml\n")
    (root / "unknown.toml").write_text('modle = "kimi-k2.6"\n')
    (root / "wrongtype.toml").write_text('max_output_tokens = "lots"\n')
    (root / "binary.toml").write_bytes(b"\xff\xfe = 1\n")
    (root / "inf.toml").write_text("cpus = inf\n")
    # One real session, for the commands that take a session id.
    env = cli_env(root / "session-home")
    script = [Turn(reasoning="r", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]),
              Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                        "--output", "json", "read a.txt"], env)
    assert proc.returncode == 0, proc.stderr
    return {"root": str(root), "repo": str(repo), "sid": json.loads(proc.stdout)["session_id"],
            "session_state": env["KIMI_CODE_STATE_DIR"]}


R = ["--repo", "{repo}", "--sandbox", "none"]

CASES = [
    # 1. base URLs that can never work (once retried silently for the whole retry window)
    Case("base-url-no-scheme", ["run", *R, "--base-url", "localhost:8000/v1", "hi"], "'localhost:8000/v1'"),
    Case("base-url-not-a-url", ["run", *R, "--base-url", "not a url", "hi"], "'not a url'"),
    Case("base-url-ftp", ["run", *R, "--base-url", "ftp://example.com/v1", "hi"], "'ftp://example.com/v1'"),
    Case("base-url-no-host", ["run", *R, "--base-url", "http:///v1", "hi"], "'http:///v1'"),
    Case("base-url-env", ["run", *R, "hi"], "'localhost:8000'", env={"MOONSHOT_BASE_URL": "localhost:8000"}),
    Case("base-url-config-show", ["config", "show", "--base-url", "ftp://x/v1"], "'ftp://x/v1'"),
    # 2. a task larger than the model's window
    Case("task-too-large", ["run", *R, "-f", "{root}/big.txt"], "too large for the model's context window"),
    # 3. unusable state directories
    Case("state-dir-is-file", ["run", *R, "--state-dir", "{root}/afile", "hi"], "is not a directory"),
    Case("state-dir-under-file", ["run", *R, "--state-dir", "{root}/afile/sub", "hi"], "cannot hold sessions"),
    Case("state-dir-impossible", ["run", *R, "--state-dir", "/proc/no-such-pid/x", "hi"], "cannot hold sessions"),
    Case("state-dir-dev-null", ["run", *R, "--state-dir", "/dev/null", "hi"], "is not a directory"),
    Case("state-dir-env-file", ["run", *R, "hi"], "is not a directory", env={"KIMI_CODE_STATE_DIR": "{root}/afile"}),
    Case("sessions-state-dir-file", ["sessions", "--state-dir", "{root}/afile"], "is not a directory"),
    Case("resume-state-dir-file", ["resume", "--last", "--state-dir", "{root}/afile"], "is not a directory"),
    # 4. binary task files and recordings
    Case("task-file-binary", ["run", *R, "-f", "{root}/binary"], "is not UTF-8 text"),
    Case("task-stdin-binary", ["run", *R], "standard input is not UTF-8 text", stdin=b"\xff\xfe\x00task"),
    Case("task-arg-not-utf8", ["run", *R, os.fsdecode(b"fix \xff this")], "not UTF-8 text"),
    Case("replay-binary", ["run", *R, "--model", "replay:{root}/binary", "hi"], "is not a text file"),
    Case("replay-binary-resume", ["resume", "{sid}", "--model", "replay:{root}/binary"], "is not a text file"),
    Case("replay-missing", ["run", *R, "--model", "replay:{root}/nothing.jsonl", "hi"], "cannot read recording"),
    Case("replay-not-a-recording", ["run", *R, "--model", "replay:{root}/afile", "hi"], "is not a session event"),
    Case("replay-no-file", ["run", *R, "--model", "replay:", "hi"], "needs a file"),
    # 5. limits that mean nothing
    Case("max-time-negative", ["run", *R, "--max-time", "-5m", "hi"], "--max-time must be a positive duration"),
    Case("max-time-nan", ["run", *R, "--max-time", "nan", "hi"], "--max-time must be a positive duration"),
    Case("max-time-inf", ["run", *R, "--max-time", "1e999", "hi"], "--max-time must be a positive duration"),
    Case("max-time-zero", ["run", *R, "--max-time", "0", "hi"], "--max-time must be a positive duration"),
    Case("max-time-garbage", ["run", *R, "--max-time", "soon", "hi"], "invalid duration"),
    Case("max-cost-nan", ["run", *R, "--max-cost", "nan", "hi"], "--max-cost must be a positive amount"),
    Case("max-cost-inf", ["run", *R, "--max-cost", "inf", "hi"], "--max-cost must be a positive amount"),
    Case("max-cost-negative", ["run", *R, "--max-cost", "-1", "hi"], "--max-cost must be a positive amount"),
    Case("resume-max-time-nan", ["resume", "{sid}", "--max-time", "nan"], "--max-time must be a positive duration"),
    # 7. a config file that is missing, broken or wrong
    Case("config-env-missing", ["config", "show"], "does not exist", env={"KIMI_CODE_CONFIG": "{root}/typo.toml"}),
    Case("config-invalid-toml", ["config", "show"], "cannot read config file", env={"KIMI_CODE_CONFIG": "{root}/bad.toml"}),
    Case("config-unknown-key", ["config", "show"], "unknown key(s)", env={"KIMI_CODE_CONFIG": "{root}/unknown.toml"}),
    Case("config-wrong-type", ["config", "show"], "invalid setting max_output_tokens",
         env={"KIMI_CODE_CONFIG": "{root}/wrongtype.toml"}),
    Case("config-binary", ["config", "show"], "not UTF-8", env={"KIMI_CODE_CONFIG": "{root}/binary.toml"}),
    Case("config-inf", ["config", "show"], "invalid setting cpus", env={"KIMI_CODE_CONFIG": "{root}/inf.toml"}),
    Case("env-nan", ["run", *R, "hi"], "invalid setting command_timeout", env={"KIMI_CODE_COMMAND_TIMEOUT": "nan"}),
    Case("config-is-directory", ["config", "show"], "cannot read config file", env={"KIMI_CODE_CONFIG": "{root}/plain"}),
    Case("config-run", ["run", *R, "hi"], "unknown key(s)", env={"KIMI_CODE_CONFIG": "{root}/unknown.toml"}),
    Case("env-wrong-type", ["run", *R, "hi"], "invalid setting retry_window", env={"KIMI_CODE_RETRY_WINDOW": "soon"}),
    Case("env-sandbox", ["run", "--repo", "{repo}", "hi"], "invalid setting sandbox", env={"KIMI_CODE_SANDBOX": "podman"}),
    # bad flags and values
    Case("output-unknown", ["run", *R, "--output", "xml", "hi"], "--output must be"),
    Case("max-steps-zero", ["run", *R, "--max-steps", "0", "hi"], "--max-steps"),
    Case("unknown-option", ["run", *R, "--frobnicate", "hi"], "No such option"),
    Case("unknown-command", ["frobnicate"], "No such command"),
    Case("provider-unknown", ["run", *R, "--provider", "nope", "hi"], "unknown provider 'nope'"),
    Case("provider-needs-url", ["run", *R, "--provider", "openai-compatible", "hi"], "needs a base URL",
         env={"MOONSHOT_BASE_URL": ""}),
    Case("sandbox-unknown", ["run", "--repo", "{repo}", "--sandbox", "podman", "hi"], "invalid setting sandbox"),
    Case("model-empty", ["run", *R, "--model", "", "hi"], "the model name is empty"),
    Case("api-key-non-ascii", ["run", *R, "hi"], "API key contains", env={"MOONSHOT_API_KEY": "sk-ü-key"}),
    Case("api-key-missing", ["run", *R, "--base-url", "https://api.moonshot.ai/v1", "hi"], "no API key",
         env={"MOONSHOT_API_KEY": ""}),
    Case("ca-bundle-missing", ["run", *R, "--ca-bundle", "{root}/no-bundle.pem", "hi"], "CA bundle"),
    Case("repo-missing", ["run", "--repo", "{root}/missing", "--sandbox", "none", "hi"], "is not a directory"),
    Case("repo-is-file", ["run", "--repo", "{root}/afile", "--sandbox", "none", "hi"], "is not a directory"),
    Case("repo-not-git", ["run", "--repo", "{root}/plain", "--sandbox", "none", "hi"], "not inside a git work tree"),
    Case("task-empty", ["run", *R, ""], "the task is empty"),
    Case("task-blank", ["run", *R, "  \n "], "the task is empty"),
    Case("task-empty-stdin", ["run", *R], "the task is empty"),
    Case("task-file-missing", ["run", *R, "-f", "{root}/missing.txt"], "cannot read task file"),
    Case("task-file-directory", ["run", *R, "-f", "{root}/plain"], "cannot read task file"),
    Case("task-twice", ["run", *R, "-f", "{root}/afile", "hi"], "not both"),
    Case("patch-out-directory", ["run", *R, "--patch-out", "{root}/plain", "hi"], "--patch-out"),
    # sessions: missing, ambiguous, bad arguments
    Case("resume-no-id", ["resume"], "give a session id or --last"),
    Case("resume-id-and-last", ["resume", "{sid}", "--last"], "not both"),
    Case("resume-nope", ["resume", "nope"], "no session 'nope'"),
    Case("resume-empty-continue", ["resume", "{sid}", "--continue", " "], "--continue needs"),
    Case("resume-last-none", ["resume", "--last"], "no sessions"),
    Case("show-nope", ["show", "nope"], "no session 'nope'"),
    Case("show-none", ["show"], "no sessions"),
    Case("diff-nope", ["diff", "nope"], "no session 'nope'"),
    Case("diff-bad-step", ["diff", "{sid}", "--step", "x"], "--step"),
    Case("export-nope", ["export", "nope"], "no session 'nope'"),
    Case("export-format", ["export", "{sid}", "--format", "zip"], "--format must be one of"),
    Case("export-out-unwritable", ["export", "{sid}", "--out", "{root}/missing-dir/x.jsonl"], "cannot write"),
    Case("rewind-no-args", ["rewind"], "Missing argument"),
    Case("rewind-no-to", ["rewind", "{sid}"], "--to"),
    Case("rewind-to-text", ["rewind", "{sid}", "--to", "abc"], "--to"),
    Case("rewind-to-range", ["rewind", "{sid}", "--to", "99"], "--to must be between"),
    Case("rewind-nope", ["rewind", "nope", "--to", "1"], "no session 'nope'"),
    Case("sessions-unknown-option", ["sessions", "--frobnicate"], "No such option"),
    Case("prune-bad-number", ["sessions", "prune", "--older-than", "x"], "--older-than"),
    Case("demo-output", ["demo", "--output", "xml"], "--output must be"),
    Case("demo-state-dir-file", ["demo", "--sandbox", "none", "--state-dir", "{root}/afile"], "is not a directory"),
]

# Cases about an existing session run against the state directory that holds it.
USES_SESSION = ("{sid}",)


def _fill(text: str, world: dict[str, Any]) -> str:
    for name, value in world.items():
        text = text.replace("{" + name + "}", value)
    return text


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert documented_exit_codes() >= {0, 1, 2, 3, 4, 5, 130}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_a_documented_exit_code(case: Case, world: dict[str, Any], tmp_path: Path) -> None:
    env = cli_env(tmp_path, KIMI_CODE_RETRY_WINDOW="1", MOONSHOT_BASE_URL=DEAD_URL)
    if any(token in arg for arg in case.args for token in USES_SESSION):
        env["KIMI_CODE_STATE_DIR"] = world["session_state"]
    env.update({k: _fill(v, world) for k, v in case.env.items()})
    env = {k: v for k, v in env.items() if v != ""}
    args = [_fill(a, world) for a in case.args]
    proc = subprocess.run(cli_cmd(*args), env=env, input=case.stdin, capture_output=True, timeout=120)
    stderr = proc.stderr.decode("utf-8", "replace")
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith("warning: --sandbox none")]
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert proc.returncode in documented_exit_codes(), (proc.returncode, stderr)
    assert proc.returncode == case.code, (proc.returncode, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and case.needle in lines[0], lines[0]
    # Nothing was started for a usage error: no session in this test's own state directory.
    state = tmp_path / "state"
    assert not state.exists() or not any(p for p in state.iterdir() if not p.name.startswith(".")), \
        list(state.iterdir())


def test_oversized_task_is_a_usage_error_before_any_session(world: dict[str, Any], tmp_path: Path) -> None:
    """1.7 MB of text cannot fit a 262,144-token window: exit 2 saying by how much, with no session
    made and no request sent (it used to be exit 4, a model API failure with a useless resume hint)."""
    env = cli_env(tmp_path)
    with FakeKimi([Turn(tool_calls=[ToolCallSpec("finish", {"summary": "no"})])], api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", world["repo"], "--base-url", fake.base_url, "--sandbox", "none",
                        "-f", world["root"] + "/big.txt"], env)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "too large for the model's context window" in lines[0], proc.stderr
    assert re.search(r"~[\d,]+ tokens too many", lines[0]) and "229,376 input tokens" in lines[0]
    assert "resume" not in proc.stderr and fake.request_count == 0
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").iterdir())


def test_a_large_task_that_fits_still_runs(world: dict[str, Any], tmp_path: Path) -> None:
    """The check counts: 300 KB of prose (~75k tokens) is above the no-count fast path and fits."""
    task = tmp_path / "task.txt"
    task.write_text("please read this " * 18_000)
    with FakeKimi([Turn(tool_calls=[ToolCallSpec("finish", {"summary": "read"})])], api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", world["repo"], "--base-url", fake.base_url, "--sandbox", "none",
                        "--output", "json", "-f", str(task)], cli_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert fake.request_count == 1


def test_resume_hint_is_never_wrapped(world: dict[str, Any], tmp_path: Path) -> None:
    """stderr is no terminal here: the hint must still be one line, to be copied as is."""
    state = tmp_path / ("a-rather-long-directory-name-for-the-state-of-kimi-code-sessions-" * 2) / "state"
    script = [Turn(reasoning=f"r{i}", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]) for i in range(2)]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", world["repo"], "--base-url", fake.base_url, "--sandbox", "none",
                        "--max-steps", "1", "--state-dir", str(state), "--output", "json", "read a.txt"],
                       cli_env(tmp_path))
    assert proc.returncode == 3, proc.stderr
    sid = json.loads(proc.stdout)["session_id"]
    assert f"resume with: kimi-code resume {sid} --state-dir {state}" in proc.stderr.splitlines(), proc.stderr
