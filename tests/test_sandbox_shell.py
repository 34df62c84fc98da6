"""The persistent-shell protocol, exercised through LocalSandbox (fast, no Docker).

DockerSandbox runs the same PersistentShell; tests/test_sandbox_docker.py repeats the essentials
against a real container.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimi_code.agent.errors import SandboxError
from kimi_code.sandbox.base import Sandbox
from kimi_code.sandbox.local import LocalSandbox
from kimi_code.sandbox.shell import TIMEOUT_EXIT_CODE


@pytest.fixture
def local(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    sandbox = LocalSandbox(f"local-{os.getpid()}-{time.monotonic_ns()}", ws, kill_grace=0.5, output_cap=2_000)
    sandbox.start()
    yield sandbox
    sandbox.stop()


def _alive(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_is_a_sandbox(local: LocalSandbox) -> None:
    assert isinstance(local, Sandbox)
    info = local.info()
    assert info.backend == "local" and info.workspace == str(local.workspace) and info.status == "running"


def test_state_persists_across_commands(local: LocalSandbox) -> None:
    assert local.exec("pwd").output.strip() == str(local.workspace)
    assert local.exec("mkdir -p sub/dir && cd sub/dir && export GREETING='hi there'").exit_code == 0
    r = local.exec('pwd; echo "$GREETING"; f() { echo fn-$1; }')
    assert r.output.splitlines() == [str(local.workspace / "sub/dir"), "hi there"]
    assert local.exec("f 7").output == "fn-7\n"


def test_activated_venv_carries_over(local: LocalSandbox) -> None:
    r = local.exec(f"{sys.executable} -m venv --without-pip .venv && . .venv/bin/activate", timeout=60)
    assert r.exit_code == 0, r.output
    r = local.exec('echo "$VIRTUAL_ENV"; command -v python')
    venv = str(local.workspace / ".venv")
    assert r.output.splitlines() == [venv, f"{venv}/bin/python"]


def test_stdout_and_stderr_interleaved_with_exit_code_and_duration(local: LocalSandbox) -> None:
    r = local.exec("echo one; echo two >&2; echo three; exit_with() { return $1; }; exit_with 7")
    assert r.output == "one\ntwo\nthree\n"
    assert r.exit_code == 7 and not r.timed_out and not r.truncated
    assert 0 <= r.duration < 5
    assert local.exec("false").exit_code == 1
    assert local.exec("bash -c 'kill -9 $$'").exit_code == 137


def test_syntax_error_stays_inside_the_command(local: LocalSandbox) -> None:
    r = local.exec("echo 'unclosed")
    assert r.exit_code == 2 and "unexpected EOF" in r.output
    assert not r.shell_restarted
    assert local.exec("echo fine").output == "fine\n"


def test_multiline_heredoc_and_quotes(local: LocalSandbox) -> None:
    cmd = "cat > f.txt <<'EOF'\nit's $HOME \"quoted\"\n  indented\nEOF\ncat f.txt"
    assert local.exec(cmd).output == "it's $HOME \"quoted\"\n  indented\n"


def test_stdin_is_at_eof(local: LocalSandbox) -> None:
    t = time.monotonic()
    r = local.exec("cat; read -r x; echo read=$?; python3 -c 'input()' 2>&1 | tail -1", timeout=10)
    assert time.monotonic() - t < 5
    assert "read=1" in r.output and "EOFError" in r.output


def test_background_process_does_not_block_and_survives(local: LocalSandbox) -> None:
    t = time.monotonic()
    r = local.exec("sleep 307 & echo started", timeout=10)
    assert time.monotonic() - t < 2 and r.output == "started\n"
    assert _alive("sleep 307")
    # A later command that times out kills only what *it* started.
    r = local.exec("sleep 308 & wait $!", timeout=0.5)
    assert r.timed_out
    assert _alive("sleep 307") and not _alive("sleep 308")


def test_binary_and_invalid_utf8_output(local: LocalSandbox) -> None:
    r = local.exec(r"printf 'a\xffb\x00c\xe2\x82'; head -c 3000 /dev/urandom >/dev/null")
    assert r.exit_code == 0 and r.output.startswith("a\ufffdb\x00c")
    r = local.exec("head -c 5000 /dev/urandom")
    assert r.exit_code == 0 and isinstance(r.output, str)


def test_timeout_kills_the_process_tree_and_shell_stays(local: LocalSandbox) -> None:
    local.exec("cd /tmp && export KEEP=1")
    t = time.monotonic()
    r = local.exec(
        "echo before; sleep 1001 & bash -c 'sleep 1002 & bash -c \"sleep 1003\"; wait' & wait", timeout=1
    )
    elapsed = time.monotonic() - t
    assert r.timed_out and r.exit_code == TIMEOUT_EXIT_CODE
    assert r.output.startswith("before\n") and "timed out" in r.notes[0]
    assert elapsed < 5
    assert not r.shell_restarted
    for n in (1001, 1002, 1003):
        assert not _alive(f"sleep {n}")
    assert local.exec('pwd; echo "$KEEP"').output == "/tmp\n1\n"


def test_orphaned_grandchild_is_killed_by_its_tag(local: LocalSandbox) -> None:
    # setsid puts it in another session and its parent exits: only the environment tag finds it.
    r = local.exec("(setsid sleep 1004 &); sleep 1005", timeout=1)
    assert r.timed_out
    time.sleep(0.2)
    assert not _alive("sleep 1004") and not _alive("sleep 1005")


def test_timeout_ignoring_sigterm_gets_sigkill(local: LocalSandbox) -> None:
    r = local.exec("bash -c 'trap \"\" TERM; sleep 1006 & wait' ; echo done", timeout=0.5)
    assert r.timed_out and not r.shell_restarted
    assert not _alive("sleep 1006")


def test_stuck_shell_builtin_restarts_the_shell_and_says_so(local: LocalSandbox) -> None:
    local.exec("cd /tmp && export GONE=1")
    r = local.exec("while :; do :; done", timeout=0.5)
    assert r.timed_out and r.shell_restarted
    assert any("new shell" in n for n in r.notes)
    r = local.exec('pwd; echo "gone=$GONE"')
    assert r.output == "/tmp\ngone=\n"  # the working directory survives a restart, variables do not


def test_exit_and_set_e_restart_the_shell(local: LocalSandbox) -> None:
    r = local.exec("cd /tmp; echo bye; exit 5")
    assert r.exit_code == 5 and r.shell_restarted and r.output == "bye\n"
    assert any("ended the shell" in n for n in r.notes)
    r = local.exec("set -e; false; echo not-reached")
    assert r.exit_code == 1 and r.shell_restarted and "not-reached" not in r.output
    assert local.exec("pwd").output == "/tmp\n"


def test_large_output_is_cut_in_the_middle_and_saved(local: LocalSandbox) -> None:
    r = local.exec("echo FIRST; seq 1 200000; echo LAST")
    assert r.truncated and r.full_output_path
    assert r.output.startswith("FIRST\n1\n2\n") and r.output.endswith("199999\n200000\nLAST\n")
    assert "full output saved at" in r.output and len(r.output) < 2_000 + 300
    saved = Path(r.full_output_path).read_text()
    assert saved.splitlines()[0] == "FIRST" and saved.splitlines()[-1] == "LAST"
    assert len(saved.splitlines()) == 200002


def test_output_just_over_cap_in_characters(local: LocalSandbox) -> None:
    # 1,500 three-byte characters = 4,500 bytes: over the 2,000-character cap, read in full, cut.
    r = local.exec("python3 -c \"print('\u00e9\u20ac' * 1500)\"")
    assert r.truncated and r.full_output_path
    assert "\ufffd" not in r.output
    small = local.exec("python3 -c \"print('\u20ac' * 600)\"")  # 1,800 bytes: whole
    assert not small.truncated and small.output == "\u20ac" * 600 + "\n"


def test_secret_env_is_not_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-local-secret")
    monkeypatch.setenv("KIMI_CODE_TEST_VISIBLE", "yes")
    from kimi_code.agent.config import secret_env_names

    sandbox = LocalSandbox("secret-test", tmp_path, env={"KIMI_API_KEY": "x", "EXTRA": "1"},
                           secret_env=secret_env_names())
    try:
        r = sandbox.exec("env")
        assert "sk-local-secret" not in r.output and "MOONSHOT_API_KEY" not in r.output
        assert "KIMI_API_KEY" not in r.output
        assert "KIMI_CODE_TEST_VISIBLE=yes" in r.output and "EXTRA=1" in r.output
    finally:
        sandbox.stop()


def test_stop_kills_background_processes_and_refuses_more(tmp_path: Path) -> None:
    sandbox = LocalSandbox("stop-test", tmp_path)
    sandbox.exec("sleep 1007 &")
    assert _alive("sleep 1007")
    sandbox.stop()
    time.sleep(0.1)
    assert not _alive("sleep 1007")
    with pytest.raises(SandboxError):
        sandbox.exec("true")


def test_missing_workspace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="not a directory"):
        LocalSandbox("x", tmp_path / "nope").start()



def test_junk_written_into_the_protocol_pipe_is_dropped(tmp_path: Path) -> None:
    """A process in the sandbox can write into the shell's own stdout: that must neither confuse
    the next result nor pile up in the host's memory."""
    import resource

    from kimi_code.sandbox.local import LocalSandbox

    sb = LocalSandbox("junk", tmp_path)
    sb.start()
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # The shell's protocol pipe is the one write-only pipe among its descriptors.
        flood = sb.exec("n=0; for fd in /proc/$$/fd/*; do f=$(awk '/^flags/{print $2}' /proc/$$/fdinfo/${fd##*/}); "
                        "if [ -p $fd ] && [ \"${f: -1}\" = 1 ]; then head -c 40000000 /dev/zero >$fd; n=$((n+1)); fi; "
                        "done; echo flooded $n", timeout=60)
        assert "flooded 1" in flood.output, flood.output
        after = sb.exec("echo still-ok", timeout=30)
        assert after.exit_code == 0 and after.output.strip().endswith("still-ok")
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 30, grown_mb
    finally:
        sb.stop()


def test_small_output_is_read_without_starting_a_process(local: LocalSandbox, tmp_path: Path) -> None:
    """The common case (a short output) costs no fork: stat/head are never run for it. A spy on
    PATH records every call; outputs the builtins cannot carry exactly (NUL bytes, over the fast
    limit) still take the stat/head path and come back byte for byte."""
    spy = tmp_path / "spy"
    spy.mkdir()
    calls = tmp_path / "calls"
    for tool in ("stat", "head", "tail", "wc"):
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (spy / tool).write_text(f"#!/bin/sh\necho {tool} >>{calls}\nexec {real} \"$@\"\n")
        (spy / tool).chmod(0o755)
    assert local.exec(f"export PATH={spy}:$PATH").exit_code == 0
    r = local.exec("echo hello; printf '\\xc3\\xa9\\n'")
    assert r.output == "hello\n\u00e9\n" and not calls.exists()
    r = local.exec("printf 'a\\0b\\n'")
    assert r.output == "a\x00b\n" and "stat" in calls.read_text()
    calls.unlink()
    # The fast limit is 4x the 2,000-character cap here: 7,999 and 8,000 bytes around it.
    for size in (7_999, 8_000, 8_001):
        r = local.exec(f"printf 'S%.0s' $(seq {size - 2}); printf 'E\\n'")
        assert r.truncated and r.output.startswith("SSS") and r.output.endswith("SE\n")
        saved = Path(r.full_output_path).read_bytes()
        assert len(saved) == size and saved.endswith(b"SE\n")
    assert "stat" in calls.read_text()  # 8,000 and 8,001 bytes are not read by the builtins


def test_a_forged_command_tag_does_not_escape_the_timeout(local: LocalSandbox) -> None:
    """Processes of earlier commands are told apart by the tag kimi-code gave them; a tag it never
    issued shields nothing."""
    r = local.exec("env KIMI_CODE_CMD_ID=forged sleep 311 & env KIMI_CODE_CMD_ID=forged sleep 312", timeout=0.5)
    assert r.timed_out and not r.shell_restarted
    deadline = time.monotonic() + 10
    while (_alive("sleep 311") or _alive("sleep 312")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive("sleep 311") and not _alive("sleep 312")


def test_user_functions_and_xtrace_do_not_leak_into_the_protocol(local: LocalSandbox) -> None:
    """A user's `exec` function must not keep the output file open; `set -x` must not copy every
    output into the shell's own log."""
    assert local.exec("exec() { :; }").exit_code == 0
    counts = [int(local.exec("ls /proc/$$/fd | wc -l").output) for _ in range(8)]
    assert counts[-1] - counts[0] <= 1, counts  # a leak would add one per command
    err_log = Path(local._shell.state_dir) / "shell.err"
    before = err_log.stat().st_size if err_log.exists() else 0
    assert local.exec("set -x").exit_code == 0
    for _ in range(3):
        r = local.exec("head -c 1500 /dev/zero | tr '\\0' D")
        assert r.output.endswith("D" * 1500)
    local.exec("set +x")
    traced = err_log.read_bytes()[before:] if err_log.exists() else b""
    assert b"DDDD" not in traced  # the outputs were not traced into the log
