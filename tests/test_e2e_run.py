"""End-to-end: the real CLI process, the fake Kimi server over HTTP, real tools and sandboxes."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import KEY, cli_cmd, cli_env, make_repo, run_cli, sandbox_args, stream_events
from kimi_code.agent.fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn

CALC = "def add(a, b):\n    return a - b\n"
TEST_CALC = (
    "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n\n"
    "if __name__ == '__main__':\n    unittest.main()\n"
)


def _call(name: str, **args: object) -> ToolCallSpec:
    return ToolCallSpec(name, args)


def _fix_script() -> list[Turn]:
    return [
        Turn(reasoning="Let me look at the code.", content="Looking around.",
             tool_calls=[_call("read_file", path="calc.py"), _call("list_files", path=".")]),
        Turn(reasoning="add subtracts; fix it.", tool_calls=[_call("edit_file", path="calc.py", old_string="a - b",
                                                                   new_string="a + b")]),
        Turn(reasoning="Plan bookkeeping.", tool_calls=[_call("todo", items=[
            {"id": "1", "content": "fix add", "status": "done"},
            {"id": "2", "content": "run tests", "status": "in_progress"}])]),
        Turn(reasoning="Now run the tests.", tool_calls=[_call("run_tests", command="python3 -m unittest -v")]),
        Turn(reasoning="All good.", tool_calls=[_call("finish", summary="Fixed add() to add.", status="success")]),
    ]


@pytest.mark.parametrize("kind", ["local", pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow])])
def test_scripted_task_edits_runs_tests_and_finishes(tmp_path: Path, kind: str,
                                                      remove_containers_under: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC})
    env = cli_env(tmp_path)
    with FakeKimi(_fix_script(), api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "stream-json",
                        *sandbox_args(kind), "Fix add() so the tests pass"], env, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests = fake.requests
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    events = stream_events(proc.stdout)
    types = [e["type"] for e in events]
    assert types[0] == "session_started" and types[-1] == "summary"
    assert types.count("assistant") == 5 and "finished" in types
    summary = events[-1]
    assert summary["status"] == "success" and summary["exit_code"] == 0
    assert summary["summary"] == "Fixed add() to add."
    assert summary["steps"] == 5 and "calc.py" in summary["changed_files"]
    assert summary["last_tests"]["passed"] == 1 and summary["last_tests"]["failed"] == 0
    assert summary["cost"] > 0
    # Every request carried the earlier turns' reasoning verbatim, and the system prompt never changed.
    assert len(requests) == 5
    last = requests[-1]["messages"]
    reasonings = [m.get("reasoning_content") for m in last if m["role"] == "assistant"]
    assert reasonings == ["Let me look at the code.", "add subtracts; fix it.", "Plan bookkeeping.",
                          "Now run the tests."]
    assert all(r["messages"][0] == requests[0]["messages"][0] for r in requests)
    for earlier, later in zip(requests, requests[1:]):  # append-only history: prefix cache friendly
        assert later["messages"][: len(earlier["messages"])] == earlier["messages"]
    assert all(r.get("prompt_cache_key") == summary["session_id"] for r in requests)
    tool_text = {m["name"]: m["content"] for m in last if m["role"] == "tool"}
    assert "a - b" in tool_text["read_file"]
    assert KEY not in json.dumps(requests)
    if kind == "docker":  # a normal end removes the session's container
        import docker

        client = docker.from_env()
        assert not client.containers.list(all=True, filters={"label": f"kimi-code.session={summary['session_id']}"})
        client.close()
    # The session log replays into the same state the run ended with.
    from kimi_code.agent.state import SessionState
    from kimi_code.agent.store import SessionStore

    session = SessionStore(tmp_path / "state").open(summary["session_id"])
    state = SessionState.fold(session.log.load())
    assert state.finished and state.step == 5
    assert state.request_messages()[: len(last)] == last


def test_exit_code_1_when_agent_reports_failure(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    script = [Turn(reasoning="cannot", tool_calls=[_call("finish", summary="Impossible.", status="failure")])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "do the impossible"], cli_env(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["status"] == "failure"


def test_exit_code_2_for_usage_errors(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    del env["MOONSHOT_API_KEY"]
    proc = run_cli(["run", "--repo", str(repo), "--sandbox", "none", "task"], env)
    assert proc.returncode == 2 and "no API key" in proc.stderr and "Traceback" not in proc.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = run_cli(["run", "--repo", str(plain), "--sandbox", "none", "task"], cli_env(tmp_path))
    assert proc.returncode == 2 and "not inside a git work tree" in proc.stderr
    proc = run_cli(["run", "--repo", str(repo), "--output", "xml", "task"], cli_env(tmp_path))
    assert proc.returncode == 2


def test_exit_code_3_on_step_limit_then_resume_finishes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    script = [Turn(reasoning=f"r{i}", tool_calls=[_call("read_file", path="a.txt")]) for i in range(2)]
    script.append(Turn(reasoning="done", tool_calls=[_call("finish", summary="ok")]))
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--max-steps",
                        "2", "--output", "json", "read twice"], env)
        assert proc.returncode == 3, proc.stderr
        out = json.loads(proc.stdout)
        assert out["status"] == "limit" and out["steps"] == 2
        assert f"kimi-code resume {out['session_id']}" in proc.stderr
        proc = run_cli(["resume", out["session_id"], "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["steps"] == 3
        # Resuming a finished session is a no-op that says so.
        proc = run_cli(["resume", out["session_id"], "--base-url", fake.base_url], env)
        assert proc.returncode == 0 and "already finished" in proc.stderr
        assert fake.request_count == 3


@pytest.mark.parametrize("fault,needle", [
    (None, "API key rejected"),
    (Fault.quota_exceeded(), "balance"),
])
def test_exit_code_4_on_model_api_failure(tmp_path: Path, fault: Fault | None, needle: str) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    key = "sk-some-other-key" if fault is None else KEY
    with FakeKimi([fault] if fault else [], api_key=key) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "task"],
                       cli_env(tmp_path))
    assert proc.returncode == 4, proc.stderr
    assert needle in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_exit_code_5_on_sandbox_failure(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    with FakeKimi([], api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "docker", "--image",
                        "kimi-code-no-such-image:never", "task"], cli_env(tmp_path))
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fake.request_count == 0


def _start_in_first_tool(repo: Path, fake: FakeKimi, env: dict[str, str], output: str) -> subprocess.Popen[str]:
    """Start `kimi-code run` and return once it is inside the first tool call (a slow shell)."""
    proc = subprocess.Popen(cli_cmd("run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                    "--output", output, "sleep"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and fake.request_count < 1:
        time.sleep(0.05)
    time.sleep(0.8)  # the first answer is a shell call that sleeps: we are inside it now
    return proc


def test_ctrl_c_lets_the_tool_finish_and_exits_130(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    script = [Turn(reasoning="wait", tool_calls=[_call("shell", command="sleep 2; echo slept > done.txt")]),
              Turn(reasoning="never", tool_calls=[_call("finish", summary="no")])]
    env = cli_env(tmp_path)
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _start_in_first_tool(repo, fake, env, "stream-json")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert (repo / "done.txt").read_text().strip() == "slept"  # the running tool was allowed to end
    events = stream_events(out)
    types = [e["type"] for e in events]
    assert "tool_result" in types and "interrupted" in types
    assert "kimi-code resume" in err


def test_continue_reopens_a_finished_session_with_new_instructions(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="r1", tool_calls=[_call("finish", summary="first")])], api_key=KEY) as fake:
        out = json.loads(run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--output", "json", "task one"], env).stdout)
        fake.add(Turn(reasoning="r2", tool_calls=[_call("write_file", path="b.txt", content="more\n")]),
                 Turn(reasoning="r3", tool_calls=[_call("finish", summary="second")]))
        proc = run_cli(["resume", "--last", "--continue", "also write b.txt", "--base-url", fake.base_url,
                        "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr
        again = json.loads(proc.stdout)
        second_request = fake.requests[1]["messages"]
    assert again["session_id"] == out["session_id"] and again["summary"] == "second"
    assert (repo / "b.txt").read_text() == "more\n"
    # The finished conversation is kept verbatim (finish call answered), then the new instructions.
    assert [m["role"] for m in second_request[-3:]] == ["assistant", "tool", "user"]
    assert "also write b.txt" in second_request[-1]["content"]


def test_second_ctrl_c_stops_at_once_and_the_log_resumes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    script = [Turn(reasoning="wait", tool_calls=[_call("shell", command="sleep 30; echo late > late.txt")])]
    env = cli_env(tmp_path)
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _start_in_first_tool(repo, fake, env, "json")
        started = time.time()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
        assert time.time() - started < 10  # did not wait for the 30 s command
        assert proc.returncode == 130
        # The interrupted shell call is answered as "interrupted, effect unknown" on resume.
        fake.add(Turn(reasoning="check", tool_calls=[_call("finish", summary="checked")]))
        proc2 = run_cli(["resume", "--last", "--base-url", fake.base_url, "--output", "json"], env)
        assert proc2.returncode == 0, proc2.stderr
        last = fake.requests[-1]["messages"]
    assert last[-1]["role"] == "tool" and "interrupted" in last[-1]["content"]


def test_sessions_prune_removes_old_sessions_and_their_refs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="w", tool_calls=[_call("write_file", path="b.txt", content="b\n")]),
                   Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])], api_key=KEY) as fake:
        sid = json.loads(run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--output", "json", "t"], env).stdout)["session_id"]
    refs = subprocess.run(["git", "-C", str(repo), "for-each-ref", "refs/kimi-code/"], capture_output=True, text=True)
    assert sid in refs.stdout
    kept = run_cli(["sessions", "prune", "--older-than", "1"], env)
    assert kept.returncode == 0 and (tmp_path / "state" / sid).exists()  # too recent
    pruned = run_cli(["sessions", "prune", "--older-than", "0"], env)
    assert pruned.returncode == 0, pruned.stderr
    assert not (tmp_path / "state" / sid).exists()
    refs = subprocess.run(["git", "-C", str(repo), "for-each-ref", "refs/kimi-code/"], capture_output=True, text=True)
    assert sid not in refs.stdout
