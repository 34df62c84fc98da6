"""The CLI on a second, real Docker engine that cannot see this machine's files (tests/remote_engine.py):
``DOCKER_HOST=tcp://127.0.0.1:PORT``, so the workspace is copied into the container and synced back
(workspace = copy). Edits, tests, diff, rewind and --patch-out; kill -9 and resume, with the
container kept or removed; the path escapes; no network; no API key in the container."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_IMAGE
from helpers import KEY, cli_cmd, cli_env, git, make_repo, run_cli, stream_events
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CALC = "def add(a, b):\n    return a - b\n"
TEST_CALC = ("import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
             "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n")


def _call(name: str, **args: object) -> ToolCallSpec:
    return ToolCallSpec(name, args)


def _env(tmp_path: Path, engine) -> dict[str, str]:
    return cli_env(tmp_path, DOCKER_HOST=engine.url)


def _args(fake: FakeKimi) -> list[str]:
    return ["--base-url", fake.base_url, "--sandbox", "docker", "--image", TEST_IMAGE]


def _tool_results(fake: FakeKimi) -> dict[str, str]:
    """tool_call_id -> content, from every request the fake server got."""
    out: dict[str, str] = {}
    for body in fake.requests:
        for m in body["messages"]:
            if m.get("role") == "tool":
                out[m["tool_call_id"]] = str(m.get("content"))
    return out


def _results_of(fake: FakeKimi, name: str) -> list[str]:
    return [v for k, v in _tool_results(fake).items() if k.startswith(f"functions.{name}:")]


def _containers(engine) -> list[str]:
    out = engine.docker("ps", "-a", "--filter", "label=kimi-code.managed=1", "--format", "{{.Names}}").stdout
    return [line for line in out.split() if line]


def test_a_task_on_a_remote_engine_edits_tests_and_comes_back(tmp_path: Path, remote_engine) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC, "old.txt": "old\n"})
    turns = [
        Turn(tool_calls=[_call("shell", command="grep -c ' /workspace ' /proc/self/mountinfo; ls")]),
        Turn(tool_calls=[_call("edit_file", path="calc.py", old_string="a - b", new_string="a + b"),
                         _call("write_file", path="pkg/new.py", content="X = 1\n")]),
        Turn(tool_calls=[_call("shell", command="cat pkg/new.py && echo data > out.txt && mkdir -p d/e && "
                                                "echo deep > d/e/f.txt && rm old.txt")]),
        Turn(tool_calls=[_call("run_tests", command="python3 -m unittest -v")]),
        Turn(tool_calls=[_call("finish", summary="fixed", status="success")]),
    ]
    env = _env(tmp_path, remote_engine)
    patch = tmp_path / "result.patch"
    with FakeKimi(turns, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), *_args(fake), "--output", "stream-json", "--patch-out", str(patch),
                        "fix add"], env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shell = _results_of(fake, "shell")
        tests = _results_of(fake, "run_tests")
    assert "workspace = copy" in proc.stderr
    events = stream_events(proc.stdout)
    started = events[0]
    assert started["type"] == "session_started"
    session_id = started["session_id"]
    sandbox = next(e for e in events if e["type"] == "sandbox")["payload"]
    assert sandbox["workspace_mode"] == "copy" and sandbox["action"] == "started"
    # No bind mount: the container's files came through the archive call, and the workspace is
    # not a mount point there.
    assert shell[0].splitlines()[0] == "0" and "calc.py" in shell[0] and "old.txt" in shell[0]
    assert shell[1].startswith("X = 1")  # write_file's file reached the container before the command
    assert "Tests PASSED: 1 passed" in tests[0]  # and so did edit_file's change
    # What commands did in the container is on the host.
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert (repo / "out.txt").read_text() == "data\n" and (repo / "d/e/f.txt").read_text() == "deep\n"
    assert not (repo / "old.txt").exists()
    assert _containers(remote_engine) == []  # removed at the end, on the remote engine
    text = patch.read_text()
    assert "+    return a + b" in text and "d/e/f.txt" in text and "deleted file mode" in text
    diff = run_cli(["diff", session_id], env)
    assert diff.returncode == 0 and "return a + b" in diff.stdout
    # Rewind to the end of step 2 (the edits, before the command): the host's checkpoints hold it.
    rew = run_cli(["rewind", session_id, "--to", "2"], env)
    assert rew.returncode == 0, rew.stderr
    assert (repo / "old.txt").read_text() == "old\n" and not (repo / "out.txt").exists()
    assert (repo / "pkg/new.py").read_text() == "X = 1\n"


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _start_and_kill_during_sleep(repo: Path, env: dict[str, str], fake: FakeKimi, requests_before_kill: int,
                                 engine, marker: str) -> str:
    """Run until the command of the given request is sleeping in the container, then kill -9."""
    proc = subprocess.Popen(cli_cmd("run", "--repo", str(repo), *_args(fake), "--output", "stream-json",
                                    "--keep-sandbox", "crash on a remote engine"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # session_started, written before the sandbox starts
        session_id = json.loads(first)["session_id"]
        _wait_for(lambda: fake.request_count >= requests_before_kill, 240, "the request before the kill")
        name = f"kimi-code-{session_id}"
        _wait_for(lambda: engine.docker("exec", name, "test", "-e", f"/workspace/{marker}").returncode == 0,
                  120, f"{marker} in the container")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return session_id


def test_kill_9_mid_command_then_resume_reattaches_and_brings_the_work_back(tmp_path: Path, remote_engine) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC})
    turns = [
        Turn(tool_calls=[_call("shell", command="echo one > a.txt")]),
        Turn(tool_calls=[_call("shell", command="echo two > b.txt; sleep 60")]),
        Turn(tool_calls=[_call("shell", command="cat a.txt b.txt")]),
        Turn(tool_calls=[_call("finish", summary="done", status="success")]),
    ]
    env = _env(tmp_path, remote_engine)
    with FakeKimi(turns, api_key=KEY) as fake:
        session_id = _start_and_kill_during_sleep(repo, env, fake, 2, remote_engine, "b.txt")
        assert not (repo / "b.txt").exists()  # the command never returned: not synced yet
        proc = run_cli(["resume", session_id, "--base-url", fake.base_url, "--output", "json"], env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shell = _results_of(fake, "shell")
        assert fake.request_count == 4
        notices = [str(m.get("content")) for m in fake.requests[-1]["messages"] if m.get("role") == "user"]
    assert any("were brought back: b.txt" in n for n in notices), notices  # the agent is told
    assert (repo / "a.txt").read_text() == "one\n"
    assert (repo / "b.txt").read_text() == "two\n"  # brought back from the kept container on reattach
    assert shell[-1].startswith("one\ntwo")
    assert json.loads(proc.stdout)["status"] == "success"


def test_container_removed_between_kill_and_resume_is_restored_from_the_host(tmp_path: Path, remote_engine) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC})
    turns = [
        Turn(tool_calls=[_call("shell", command="echo one > a.txt")]),
        Turn(tool_calls=[_call("shell", command="touch sleeping; sleep 60")]),
        Turn(tool_calls=[_call("shell", command="cat a.txt; ls")]),
        Turn(tool_calls=[_call("finish", summary="done", status="success")]),
    ]
    env = _env(tmp_path, remote_engine)
    with FakeKimi(turns, api_key=KEY) as fake:
        session_id = _start_and_kill_during_sleep(repo, env, fake, 2, remote_engine, "sleeping")
        assert remote_engine.docker("rm", "-f", f"kimi-code-{session_id}").returncode == 0
        proc = run_cli(["resume", session_id, "--base-url", fake.base_url, "--output", "json"], env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shell = _results_of(fake, "shell")
        last_request = fake.requests[-1]["messages"]
    assert shell[-1].startswith("one\n") and "calc.py" in shell[-1]  # the new container got the host's copy
    notices = [str(m.get("content")) for m in last_request if m.get("role") == "user"]
    assert any("copied in again from this machine" in n for n in notices), notices


def test_escapes_are_refused_and_the_container_has_no_network_and_no_key(tmp_path: Path, remote_engine) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC})
    (tmp_path / "outside.txt").write_text("secret outside\n")
    turns = [
        Turn(tool_calls=[_call("shell", command="ln -s /etc etclink; ln -s .. up; env; ls /sys/class/net; "
                                                "python3 -c 'import socket; socket.create_connection((\"10.1.2.3\", 80), 3)'"
                                                " 2>&1 | tail -1")]),
        Turn(tool_calls=[_call("read_file", path="../outside.txt"), _call("read_file", path="/etc/passwd"),
                         _call("read_file", path="etclink/passwd"), _call("write_file", path="up/escaped.txt", content="x"),
                         _call("write_file", path=".git/hooks/pre-commit", content="#!/bin/sh\necho pwned\n")]),
        Turn(tool_calls=[_call("finish", summary="done", status="success")]),
    ]
    env = _env(tmp_path, remote_engine)
    with FakeKimi(turns, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), *_args(fake), "--output", "json", "escape"], env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shell = _results_of(fake, "shell")[0]
        refusals = _results_of(fake, "read_file") + _results_of(fake, "write_file")
    assert KEY not in shell and "MOONSHOT_API_KEY" not in shell
    assert shell.split("\n")[-2] != "" and "unreachable" in shell.lower()
    net = [line for line in shell.splitlines() if line in ("lo", "eth0")]
    assert net == ["lo"]
    assert len(refusals) == 5
    for text in refusals:
        assert "outside the workspace" in text or "escapes the workspace" in text or ".git" in text, text
    assert not (tmp_path / "escaped.txt").exists() and not (repo / ".git/hooks/pre-commit").exists()
    assert git(repo, "status", "--porcelain", "--", "calc.py") == ""


def test_ca_bundle_branch_and_sandbox_ls_prune_on_a_remote_engine(tmp_path: Path, remote_engine) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC})
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nfake-but-copied\n-----END CERTIFICATE-----\n")
    turns = [
        Turn(tool_calls=[_call("shell", command="cat \"$SSL_CERT_FILE\"; echo fixed > calc.py")]),
        Turn(tool_calls=[_call("finish", summary="done", status="success")]),
    ]
    env = _env(tmp_path, remote_engine)
    with FakeKimi(turns, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), *_args(fake), "--output", "json", "--keep-sandbox",
                        "--ca-bundle", str(bundle), "--branch", "kimi/remote", "remote"], env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shell = _results_of(fake, "shell")[0]
    session_id = json.loads(proc.stdout)["session_id"]
    assert "fake-but-copied" in shell  # the bundle was copied in through the archive call
    assert git(repo, "show", "kimi/remote:calc.py").strip() == "fixed"
    listed = run_cli(["sandbox", "ls", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert [r["session_id"] for r in rows if r["session_id"] == session_id] == [session_id]
    assert [r["workspace_mode"] for r in rows if r["session_id"] == session_id] == ["copy"]
    # Its copy may hold work this machine lacks: kept, and said so, unless --copies.
    pruned = run_cli(["sandbox", "prune", "--all"], env)
    assert pruned.returncode == 0, pruned.stderr
    assert f"its workspace is a copy (session {session_id})" in pruned.stdout and len(_containers(remote_engine)) == 1
    pruned = run_cli(["sandbox", "prune", "--all", "--copies"], env)
    assert pruned.returncode == 0, pruned.stderr
    assert _containers(remote_engine) == []


def test_mount_mode_on_an_engine_that_cannot_see_the_workspace_says_to_copy(tmp_path: Path, remote_engine) -> None:
    """--workspace mount on an engine elsewhere (as a forwarded unix socket would be) cannot mount
    this machine's path: one line saying so and what to do, no traceback, no container left."""
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC})
    env = _env(tmp_path, remote_engine)
    with FakeKimi([Turn(tool_calls=[_call("finish", summary="done", status="success")])], api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), *_args(fake), "--workspace", "mount", "task"], env, timeout=300)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert f"the Docker engine cannot see {repo}" in proc.stderr and "--workspace copy" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _containers(remote_engine) == []
