"""Hardening of the tools (issue 16): file names that are not UTF-8, one true sentence after a
sandbox restart, and no writes into ``.git`` whatever its case."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_cmd, cli_env, git, make_repo
from kimi_code.agent import tokens
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.sandbox.base import ExecResult, SandboxInfo
from kimi_code.sandbox.local import LocalSandbox
from kimi_code.tools.builtin import default_registry
from kimi_code.tools.paths import PathError, is_git_dir_name, resolve_for_write
from kimi_code.tools.registry import ToolContext, ToolRegistry, ToolResult
from kimi_code.tools.text import unescape_name, valid_text

BAD = b"bad\xffname.txt"
SHOWN = "bad\\xffname.txt"  # how the tools write that name


def _bad_file(root: Path, content: bytes = b"hello \xff world\n") -> None:
    with open(os.path.join(os.fsencode(str(root)), BAD), "wb") as f:
        f.write(content)


def _ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws, sandbox=LocalSandbox("hardening", ws), command_timeout=30)


def _run(ctx: ToolContext, name: str, **args: object) -> ToolResult:
    return default_registry().run(name, json.dumps(args), ctx)


def _assert_valid(result: ToolResult) -> None:
    json.dumps({"text": result.text, "metadata": result.metadata}, ensure_ascii=False).encode("utf-8")


# -- 1. names and text that are not UTF-8 -------------------------------------------------------


def test_valid_text_rule() -> None:
    assert valid_text("plain") == "plain"
    assert valid_text("bad\udcffname") == "bad\\xffname"  # an os.fsdecode byte: visible escape
    assert valid_text("a\ud83d\ude00b") == "a\U0001F600b"  # a surrogate pair: its character
    assert valid_text("x\ud800y\udc10z") == "x\ufffdy\ufffdz"  # other lone surrogates
    assert unescape_name(SHOWN) == os.fsdecode(BAD)
    assert unescape_name("C:\\x41") == "C:\\x41"  # only bytes >= 0x80 are escapes


def test_token_counter_never_raises_on_surrogates(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "bad\udcffname.txt and \ud800 \u4e2d"
    assert tokens.estimate_text_tokens(text) > 0
    monkeypatch.setattr(tokens, "_encoder_fn", lambda: None)  # the offline estimate
    assert tokens.count_text(text) > 0
    assert tokens.count_message({"role": "tool", "content": text}) > tokens.MESSAGE_OVERHEAD

    def strict(s: str) -> int:
        s.encode("utf-8")
        return len(s)

    monkeypatch.setattr(tokens, "_encoder_fn", lambda: strict)  # an encoder that rejects them
    assert tokens.count_text(text) > 0


def test_registry_makes_every_result_valid(tmp_path: Path) -> None:
    reg = ToolRegistry()

    @reg.register
    def odd_text(ctx: ToolContext) -> ToolResult:
        """Returns surrogates everywhere."""
        return ToolResult("name bad\udcffname", metadata={"path": "bad\udcffname", "list": ["\ud800"],
                                                            "k\udcfe": 1})

    @reg.register
    def odd_error(ctx: ToolContext) -> str:
        """Raises with a surrogate in the message."""
        raise OSError("cannot open bad\udcffname")

    ctx = _ctx(tmp_path)
    r = reg.run("odd_text", "{}", ctx)
    _assert_valid(r)
    assert r.text == "name bad\\xffname"
    assert r.metadata == {"path": "bad\\xffname", "list": ["\ufffd"], "k\\xfe": 1}
    r = reg.run("odd_error", "{}", ctx)
    _assert_valid(r)
    assert r.is_error and "bad\\xffname" in r.text


def test_tools_on_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    ws = make_repo(tmp_path / "ws", {"a.txt": "hello\n"})
    _bad_file(ws)
    ctx = _ctx(ws)
    listing = _run(ctx, "list_files")
    found = _run(ctx, "search", pattern="hello")
    ls = _run(ctx, "shell", command="ls")
    for r in (listing, found, ls):
        _assert_valid(r)
        assert not r.is_error, r.text
    assert SHOWN in listing.text
    assert f"{SHOWN}:1: hello" in found.text
    assert "name.txt" in ls.text
    # The name as the tools showed it reaches the file again.
    read = _run(ctx, "read_file", path=SHOWN)
    _assert_valid(read)
    assert not read.is_error and "hello \xff world" in read.text and read.metadata["path"] == SHOWN
    edit = _run(ctx, "edit_file", path=SHOWN, old_string="hello", new_string="bye")
    _assert_valid(edit)
    assert not edit.is_error, edit.text
    assert f"+++ b/{SHOWN}" in edit.text and "+bye \xff world" in edit.metadata["diff"]
    with open(os.path.join(os.fsencode(str(ws)), BAD), "rb") as f:
        assert f.read() == b"bye \xff world\n"
    # The raw surrogate (a JSON "\udcff") names it too.
    assert not _run(ctx, "read_file", path=os.fsdecode(BAD)).is_error
    # A name that really contains a backslash wins over the escape reading.
    (ws / SHOWN).write_text("literal backslash\n")
    assert "literal backslash" in _run(ctx, "read_file", path=SHOWN).text
    # A path no file system can hold is a clear tool error, not a crash report.
    for name in ("read_file", "edit_file", "write_file"):
        args: dict[str, Any] = {"path": "x\ud800y.txt"}
        if name == "edit_file":
            args.update(old_string="a", new_string="b")
        if name == "write_file":
            args.update(content="a")
        r = _run(ctx, name, **args)
        _assert_valid(r)
        assert r.is_error and "cannot be part of a file name" in r.text and "failed:" not in r.text, r.text


def _bad_name_repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {"a.txt": "hello\n"})
    _bad_file(repo)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "bad name")
    return repo


def _env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(tmp_path)
    Path(env["KIMI_CODE_CONFIG"]).touch()  # an empty config file, whether or not it must exist
    return env


def _cli(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(cli_cmd(*args), env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    stderr = proc.stderr.decode("utf-8", "replace")
    out = json.loads(proc.stdout.decode("utf-8", "surrogateescape")) if proc.stdout.strip() else {}
    return proc.returncode, out, stderr


def _log(tmp_path: Path, session_id: str) -> Path:
    return tmp_path / "state" / session_id / "events.jsonl"


def _tool_results(log: Path) -> list[dict[str, Any]]:
    raw = log.read_bytes()
    raw.decode("utf-8")  # the whole log is valid UTF-8
    events = [json.loads(line) for line in raw.splitlines()]
    results = [e["payload"] for e in events if e["type"] == "tool_result"]
    for p in results:  # and so is every recorded result, surrogates included
        json.dumps(p, ensure_ascii=False).encode("utf-8")
    return results


def _look_calls() -> list[ToolCallSpec]:
    return [ToolCallSpec("list_files", {"path": "."}), ToolCallSpec("search", {"pattern": "hello"}),
            ToolCallSpec("shell", {"command": "ls"})]


def test_e2e_listing_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    repo = _bad_name_repo(tmp_path)
    script = [Turn(reasoning="look", tool_calls=_look_calls()),
              Turn(reasoning="read", tool_calls=[ToolCallSpec("read_file", {"path": SHOWN})]),
              Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        code, out, stderr = _cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--output", "json", "look around"], _env(tmp_path))
        requests = fake.requests
    assert code == 0, stderr[-3000:]
    assert out["status"] == "success"
    results = {p["name"]: p for p in _tool_results(_log(tmp_path, out["session_id"]))}
    assert SHOWN in results["list_files"]["content"]
    assert f"{SHOWN}:1: hello" in results["search"]["content"]
    assert "name.txt" in results["shell"]["content"]
    assert not results["read_file"]["is_error"] and "hello \xff world" in results["read_file"]["content"]
    sent = {m["name"]: m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"}
    assert SHOWN in sent["list_files"]


def test_resume_re_runs_the_listing_of_a_name_that_is_not_utf8(tmp_path: Path) -> None:
    """The wedge of issue 16: a crash while recording a read-only call's result, and a resume that
    re-runs it. Here the crash is simulated by cutting the log after the calls started."""
    repo = _bad_name_repo(tmp_path)
    env = _env(tmp_path)
    read_only = [ToolCallSpec("list_files", {"path": "."}), ToolCallSpec("search", {"pattern": "hello"})]
    script = [Turn(reasoning="look", tool_calls=read_only),
              Turn(reasoning="look again", tool_calls=_look_calls()),
              Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        code, out, stderr = _cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--max-steps", "1", "--output", "json", "look around"], env)
        assert code == 3, stderr[-3000:]
        session = out["session_id"]
        log = _log(tmp_path, session)
        lines = log.read_bytes().splitlines(keepends=True)
        last_started = max(i for i, line in enumerate(lines) if json.loads(line)["type"] == "tool_started")
        log.write_bytes(b"".join(lines[: last_started + 1]))
        code, out, stderr = _cli(["resume", session, "--base-url", fake.base_url, "--max-steps", "5",
                                  "--output", "json"], env)
        assert code == 0, stderr[-3000:]
        assert out["status"] == "success"
    results = _tool_results(log)
    names = [p["name"] for p in results]  # concurrent read-only calls report in any order
    assert sorted(names[:2]) == ["list_files", "search"] and sorted(names[2:4]) == ["list_files", "search"]
    assert names[4:] == ["shell", "finish"]
    assert all(not p["is_error"] for p in results)
    assert all(SHOWN in p["content"] for p in results if p["name"] in ("list_files", "search"))


# -- 2. one sentence about what a sandbox restart kept -----------------------------------------


class _Restarted:
    """A sandbox whose every command comes back from a restart, with the given notes."""

    def __init__(self, notes: list[str], *, sandbox: bool = True) -> None:
        self.notes, self.sandbox = notes, sandbox

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        return ExecResult("out\n", 137, 0.1, shell_restarted=True, sandbox_restarted=self.sandbox,
                          notes=list(self.notes))

    def info(self) -> SandboxInfo:
        return SandboxInfo("fake", "s", "/workspace", "/tmp")


KEPT = ("the sandbox container died during the command (exit code 137) and was restarted: its running "
        "processes were lost; files in /workspace and installed packages are kept")


@pytest.mark.parametrize("tool", ["shell", "run_tests"])
def test_a_restart_is_described_once(tmp_path: Path, tool: str) -> None:
    ctx = ToolContext(workspace=tmp_path, sandbox=_Restarted([KEPT, "a new shell was started in /workspace"]))  # type: ignore[arg-type]
    args = {"command": "true"}
    text = default_registry().run(tool, json.dumps(args), ctx).text
    assert KEPT in text
    assert text.count("installed") == 1 and "was lost" not in text and "were reset" not in text, text
    # A backend that says nothing gets a sentence that is true of every restart.
    text = default_registry().run(tool, json.dumps(args), ToolContext(workspace=tmp_path,
                                  sandbox=_Restarted([]))).text  # type: ignore[arg-type]
    assert "the sandbox was restarted" in text and "installed" not in text


def test_the_shell_says_a_silent_host_restarted() -> None:
    from kimi_code.sandbox.shell import RESTART_NOTE, _said

    assert _said(True, []) == (True, [RESTART_NOTE])
    assert _said(True, [KEPT]) == (True, [KEPT])
    assert _said(False, []) == (False, [])


@pytest.mark.docker
@pytest.mark.slow
def test_shell_tool_after_a_container_death_says_one_thing(docker_sandbox_factory, docker_client,
                                                           tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    sb = docker_sandbox_factory(ws)
    ctx = ToolContext(workspace=ws, sandbox=sb, command_timeout=60)
    killer = threading.Timer(1.0, lambda: docker_client.containers.get(sb.name).kill())
    killer.start()
    text = _run(ctx, "shell", command="sleep 30").text
    killer.join()
    assert "died during the command" in text, text
    assert text.count("installed") == 1 and "installed packages are kept" in text and "was lost" not in text, text


# -- 3. .git, whatever its case ------------------------------------------------------------------


@pytest.mark.parametrize("name", [".git", ".GIT", ".Git", ".git.", ".git ", ".g\u200cit", "GIT~1"])
def test_git_dir_names(name: str) -> None:
    assert is_git_dir_name(name)


@pytest.mark.parametrize("name", ["git", ".gitignore", ".github", "x.git", ".gi"])
def test_not_git_dir_names(name: str) -> None:
    assert not is_git_dir_name(name)


def test_file_tools_never_write_into_dot_git_in_any_case(tmp_path: Path) -> None:
    """On a case-insensitive file system `.GIT/hooks` is `.git/hooks`: a hook there runs on the host."""
    ws = tmp_path / "ws"
    (ws / ".GIT" / "hooks").mkdir(parents=True)
    (ws / ".GIT" / "config").write_text("[core]\n")
    (ws / "vendor" / "lib" / ".Git").mkdir(parents=True)
    ctx = _ctx(ws)
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("write_file", {"path": ".GIT/hooks/pre-commit", "content": "#!/bin/sh\ntouch PWNED\n"}),
        ("write_file", {"path": ".Git/config", "content": "[core]\n\tfsmonitor = touch PWNED\n"}),
        ("write_file", {"path": "/workspace/.gIt/info/attributes", "content": "* filter=x"}),
        ("write_file", {"path": "vendor/lib/.Git/config", "content": "x"}),
        ("edit_file", {"path": ".GIT/config", "old_string": "[core]", "new_string": "[core]\n\tfsmonitor = x"}),
    ]
    for name, args in attempts:
        r = _run(ctx, name, **args)
        assert r.is_error and ".git directory" in r.text, (name, args, r.text)
    assert not (ws / ".GIT" / "hooks" / "pre-commit").exists()
    assert (ws / ".GIT" / "config").read_text() == "[core]\n"
    with pytest.raises(PathError):
        resolve_for_write(ws, ".GIT/hooks/post-checkout")
    # Names that only look alike stay writable, and reading .GIT stays allowed.
    assert not _run(ctx, "write_file", path=".github/workflows/ci.yml", content="on: push\n").is_error
    assert not _run(ctx, "write_file", path="x.git/file", content="x\n").is_error
    assert not _run(ctx, "read_file", path=".GIT/config").is_error


def test_an_untracked_name_that_is_not_utf8_is_checkpointed_and_reported(tmp_path: Path) -> None:
    """The checkpoint's file list and the JSON summary hold the name too: both must be writable."""
    repo = _bad_name_repo(tmp_path)
    script = [Turn(reasoning="make", tool_calls=[ToolCallSpec("shell", {"command": "printf x > $'new\\xfe.txt'"})]),
              Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        code, out, stderr = _cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--output", "json", "make a file"], _env(tmp_path))
    assert code == 0, stderr[-3000:]
    assert "checkpoint failed" not in stderr
    assert "new\\xfe.txt" in out["changed_files"]
    events = [json.loads(line) for line in _log(tmp_path, out["session_id"]).read_bytes().splitlines()]
    step = [e for e in events if e["type"] == "checkpoint" and e["step"] == 1]
    assert step and step[0]["payload"]["changed"] == ["new\udcfe.txt"]  # the real name, escaped in JSON
