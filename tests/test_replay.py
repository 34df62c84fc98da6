"""Replay (`--model replay:FILE`) and export: recordings of real sessions replayed by the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import KEY, cli_env, git, make_repo, run_cli, sandbox_args, stream_events
from kimi_code.agent.events import Event
from kimi_code.agent.export import Scrubber
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.agent.replay import Recording, Replayer, fingerprint

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TEST_CALC = (
    "import unittest\nfrom calc import add, mul\n\n\nclass T(unittest.TestCase):\n"
    "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n"
)
TASK = "Fix add() so the tests pass"


def _call(name: str, **args: object) -> ToolCallSpec:
    return ToolCallSpec(name, args)


def _script() -> list[Turn]:
    return [
        Turn(reasoning="Read the code first.", content="Looking.",
             tool_calls=[_call("read_file", path="calc.py"), _call("search", pattern="def add")]),
        Turn(reasoning="The tests should fail now.", tool_calls=[_call("run_tests", command="python3 -m unittest -v")]),
        Turn(reasoning="add subtracts.", tool_calls=[_call("edit_file", path="calc.py", old_string="return a - b",
                                                             new_string="return a + b")]),
        Turn(reasoning="Track it.", tool_calls=[_call("todo", items=[{"id": "1", "content": "fix add",
                                                                        "status": "done"}])]),
        Turn(reasoning="Check.", tool_calls=[_call("run_tests", command="python3 -m unittest -v"),
                                             _call("shell", command="git status --short")]),
        Turn(reasoning="Done.", tool_calls=[_call("finish", summary="add() adds now.", status="success")]),
    ]


def _record(tmp_path: Path, kind: str = "local") -> tuple[Path, dict, Path]:
    """Run the scripted session for real; return its repo, summary and the exported recording."""
    repo = make_repo(tmp_path / "recorded", {"calc.py": CALC, "test_calc.py": TEST_CALC})
    env = cli_env(tmp_path)
    with FakeKimi(_script(), api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "json",
                        *sandbox_args(kind), TASK], env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    recording = tmp_path / "session.jsonl"
    out = run_cli(["export", summary["session_id"], "-o", str(recording)], env)
    assert out.returncode == 0, out.stderr
    return repo, summary, recording


def _fresh_copy(tmp_path: Path, name: str) -> Path:
    return make_repo(tmp_path / name, {"calc.py": CALC, "test_calc.py": TEST_CALC})


def _keyless_env(tmp_path: Path) -> dict[str, str]:
    env = cli_env(tmp_path)
    env.pop("MOONSHOT_API_KEY")  # a replay needs no key
    return env


def _replay(tmp_path: Path, recording: Path, repo: Path, *extra: str, kind: str = "local"):
    env = _keyless_env(tmp_path)
    return run_cli(["run", "--repo", str(repo), "--model", f"replay:{recording}", "--output", "stream-json",
                    *sandbox_args(kind), *extra, TASK], env, timeout=180)


@pytest.mark.parametrize("kind", ["local", pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow])])
def test_exported_recording_replays_to_the_same_workspace(tmp_path: Path, kind: str,
                                                          remove_containers_under: Path) -> None:
    original, summary, recording = _record(tmp_path, kind)
    target = _fresh_copy(tmp_path, "replayed")
    proc = _replay(tmp_path, recording, target, kind=kind)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    events = stream_events(proc.stdout)
    final = events[-1]
    assert final["status"] == "success" and final["summary"] == "add() adds now."
    assert final["steps"] == summary["steps"] == 6
    assert final["last_tests"]["passed"] == 2 and final["last_tests"]["failed"] == 0
    # Same files, byte for byte, and the same todo list; the replay ran the tools itself.
    for name in ("calc.py", "test_calc.py"):
        assert (target / name).read_bytes() == (original / name).read_bytes()
    status = git(target, "status", "--short")
    assert status == git(original, "status", "--short") and " M calc.py\n" in status
    assert final["cost"] == pytest.approx(summary["cost"])  # recorded usage is served
    reasonings = [e["payload"]["message"].get("reasoning_content") for e in events if e["type"] == "assistant"]
    assert reasonings[0] == "Read the code first." and len(reasonings) == 6


def test_replay_stops_with_a_divergence_message(tmp_path: Path) -> None:
    _, _, recording = _record(tmp_path)
    # The world changed: add() is written differently, so the recorded edit no longer applies.
    target = make_repo(tmp_path / "changed", {"calc.py": CALC.replace("a - b", "b - a"), "test_calc.py": TEST_CALC})
    proc = _replay(tmp_path, recording, target, "--output", "text")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "replay_diverged: replay diverged at step 1: the result of read_file" in proc.stdout
    assert "return a - b', now '" in proc.stdout and "return b - a')" in proc.stdout
    # It stopped there: the recorded edit (step 3) was never attempted.
    assert (target / "calc.py").read_text() == CALC.replace("a - b", "b - a")


def test_replay_of_a_recording_that_ends_early_says_so(tmp_path: Path) -> None:
    _, _, recording = _record(tmp_path)
    lines = recording.read_text().splitlines()
    cut = [line for line in lines if json.loads(line)["step"] <= 2]
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(cut) + "\n")
    proc = _replay(tmp_path, short, _fresh_copy(tmp_path, "short-run"), "--output", "json")
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["status"] == "replay_diverged"
    assert "the recording ends after step 2" in summary["summary"]


def test_a_bad_recording_is_a_clear_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    repo = _fresh_copy(tmp_path, "r")
    proc = _replay(tmp_path, bad, repo)
    assert proc.returncode == 2
    assert "bad.jsonl:1 is not a session event" in proc.stderr and "Traceback" not in proc.stderr
    proc = _replay(tmp_path, tmp_path / "missing.jsonl", repo)
    assert proc.returncode == 2 and "cannot read recording" in proc.stderr


def test_exports_contain_no_secrets(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"calc.py": CALC, "test_calc.py": TEST_CALC,
                                         "settings.py": "GITHUB_TOKEN = 'ghp_abcdefghijklmnopqrstuvwx0123'\n"})
    secret = "s3cr3t-value-for-the-deploy-key"
    env = cli_env(tmp_path, DEPLOY_KEY=secret, SERVICE_TOKEN="tok-0123456789abcdef")
    script = [
        Turn(reasoning=f"The user's key is {KEY}.", tool_calls=[
            _call("shell", command="echo $MOONSHOT_API_KEY $DEPLOY_KEY $SERVICE_TOKEN"),
            _call("read_file", path="settings.py")]),
        Turn(content="Done."),
    ]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "json",
                        "--sandbox", "none", TASK], env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sid = json.loads(proc.stdout)["session_id"]
    # The raw log did see them (--sandbox none runs on the host with its environment)...
    raw = next((tmp_path / "state").glob(f"*{sid}*/events.jsonl")).read_text()
    assert secret in raw and KEY in raw
    for fmt in ("recording", "trajectory"):
        out = run_cli(["export", sid, "--format", fmt], env)
        assert out.returncode == 0, out.stderr
        for value in (KEY, secret, "tok-0123456789abcdef", "ghp_abcdefghijklmnopqrstuvwx0123"):
            assert value not in out.stdout, (fmt, value)
        assert "[REDACTED:DEPLOY_KEY]" in out.stdout and "[REDACTED:MOONSHOT_API_KEY]" in out.stdout
    trajectory = json.loads(run_cli(["export", sid, "--format", "trajectory"], env).stdout)
    assert trajectory["format"] == "kimi-code-trajectory" and trajectory["session"]["id"] == sid
    assert [t["step"] for t in trajectory["turns"]] == [1, 2]
    assert trajectory["turns"][0]["tool_calls"][1] == {"id": "functions.read_file:1", "name": "read_file",
                                                      "arguments": {"path": "settings.py"}}
    assert len(trajectory["turns"][0]["results"]) == 2
    assert any(e["type"] == "finished" for e in trajectory["events"])


def test_scrubber_leaves_ordinary_text_alone() -> None:
    scrub = Scrubber({"MY_API_KEY": "abcdef123456", "HOME": "/root", "SHORT_TOKEN": "x1"})
    assert scrub.text("key abcdef123456 here") == "key [REDACTED:MY_API_KEY] here"
    ordinary = "tokens = count_tokens(text)\nmax_tokens: 1024\napi_key = os.environ['X']\nx1 /root"
    assert scrub.text(ordinary) == ordinary
    assert scrub.text("Authorization: Bearer abcdefghijklmnop0123") == "Authorization: [REDACTED]"
    assert scrub.text('"api_token": "Zx81kLm0Pq93Rt55Uv"') == '"api_token": "[REDACTED]"'
    assert scrub.value({"a": ["sk-" + "a1" * 12]}) == {"a": ["[REDACTED]"]}
    assert scrub.text("proxy https://alice:S3cretPassw0rd@proxy.corp:8080/v1, git@github.com:o/r.git") == (
        "proxy https://alice:[REDACTED]@proxy.corp:8080/v1, git@github.com:o/r.git")
    assert Scrubber({"A_KEY": "abcdef123456\n"}).text("k=abcdef123456.") == "k=[REDACTED:A_KEY]."
    keyed = Scrubber({}, extra={"API_KEY": "from-the-config-file"})
    assert keyed.value({"from-the-config-file": "x"}) == {"[REDACTED:API_KEY]": "x"}


def test_fingerprint_ignores_timings_but_not_outcomes() -> None:
    def result(exit_code: int, text: str, failed: int = 0) -> dict:
        return {"content": text, "is_error": False,
                "metadata": {"exit_code": exit_code, "duration": 0.1,
                             "tests": {"parsed": True, "passed": 2 - failed, "failed": failed, "errors": 0,
                                       "skipped": 0, "failing": [], "failures": "", "framework": "unittest"}}}

    assert fingerprint("run_tests", result(0, "Ran 2 tests in 0.001s")) == fingerprint(
        "run_tests", result(0, "Ran 2 tests in 0.245s"))
    assert fingerprint("run_tests", result(0, "x")) != fingerprint("run_tests", result(1, "x", failed=1))
    assert fingerprint("read_file", {"content": "a\n"}) != fingerprint("read_file", {"content": "b\n"})


def test_replayer_serves_turns_by_position_and_answers_compaction(tmp_path: Path) -> None:
    start = Event("session_started", {"task": "t", "model": "kimi-k2.6", "settings": {"thinking": True}})
    turn = Event("assistant", {"message": {"role": "assistant", "content": "", "reasoning_content": "r",
                                           "tool_calls": [{"id": "c1", "type": "function",
                                                           "function": {"name": "finish", "arguments": "{}"}}]},
                               "usage": {"prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 4},
                               "finish_reason": "tool_calls"}, step=1)
    summary = Event("compaction", {"summary": "older work, summarized"}, step=1)
    replayer = Replayer(Recording.from_events(tmp_path / "r", [start, turn, summary]))
    served = replayer.respond({"tools": [{}], "messages": []})
    assert served.reasoning == "r" and served.tool_calls[0].id == "c1"
    assert served.usage == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12, "cached_tokens": 4}
    assert replayer.respond({"messages": []}).content == "older work, summarized"
    replayer.position = lambda: 1
    fault = replayer.respond({"tools": [{}], "messages": []})
    assert fault.status == 400 and "ends after step 1" in fault.message


def _replay_three_steps(tmp_path: Path) -> tuple[Path, str]:
    """Record the scripted session, replay its first three steps on a fresh copy: (copy, session id)."""
    _, _, recording = _record(tmp_path)
    target = _fresh_copy(tmp_path, "replayed-3")
    first = _replay(tmp_path, recording, target, "--max-steps", "3", "--output", "json")
    assert first.returncode == 3, first.stderr
    return target, json.loads(first.stdout)["session_id"]


def test_replay_is_resumable_after_a_stop(tmp_path: Path) -> None:
    target, sid = _replay_three_steps(tmp_path)
    env = _keyless_env(tmp_path)
    second = run_cli(["resume", sid, "--output", "json"], env, timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads(second.stdout)
    assert summary["status"] == "success" and summary["steps"] == 6
    assert (target / "calc.py").read_text() == CALC.replace("a - b", "a + b")
    shutil.rmtree(target)


def test_resuming_a_diverged_replay_stops_again_without_acting(tmp_path: Path) -> None:
    _, _, recording = _record(tmp_path)
    target = make_repo(tmp_path / "changed", {"calc.py": CALC.replace("a - b", "b - a"), "test_calc.py": TEST_CALC})
    first = _replay(tmp_path, recording, target, "--output", "json")
    assert first.returncode == 1 and json.loads(first.stdout)["status"] == "replay_diverged"
    env = _keyless_env(tmp_path)
    again = run_cli(["resume", json.loads(first.stdout)["session_id"], "--output", "json"], env, timeout=120)
    assert again.returncode == 1, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["status"] == "replay_diverged" and "at step 1" in summary["summary"]
    assert summary["steps"] == 1  # no recorded turn was served after the divergence
    assert (target / "calc.py").read_text() == CALC.replace("a - b", "b - a")


def test_a_result_cut_to_the_token_budget_replays(tmp_path: Path) -> None:
    """The cut notice names the session's saved output and falls where the tokenizer says: neither
    may count as a divergence, and a recorded read of the saved output must find this session's."""
    big = "".join(f"line {i}: {'x' * 60}\n" for i in range(3000))
    files = {"calc.py": CALC, "test_calc.py": TEST_CALC, "big.txt": big}
    repo = make_repo(tmp_path / "recorded", files)
    env = cli_env(tmp_path, KIMI_CODE_TOOL_OUTPUT_TOKENS="1000")
    script = [Turn(reasoning="Read the big file.", tool_calls=[_call("read_file", path="big.txt", limit=3000)])]
    with FakeKimi(script, api_key=KEY) as fake:
        # Step 2 reads the saved full output: its path holds this session's id.
        def second(body: dict) -> Turn:
            saved = next(m for m in reversed(body["messages"]) if m["role"] == "tool")["content"]
            path = saved.split("saved at ")[1].split(":")[0]
            return Turn(reasoning="Page it.", tool_calls=[_call("read_file", path=path, offset=500, limit=5)])
        fake._responder = None
        fake.add(*script)
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "json", "--max-steps", "1",
                        "--sandbox", "none", TASK], env, timeout=120)
        assert proc.returncode == 3, proc.stderr
        sid = json.loads(proc.stdout)["session_id"]
        fake._responder = second
        proc = run_cli(["resume", sid, "--base-url", fake.base_url, "--output", "json", "--max-steps", "2"], env,
                       timeout=120)
        assert proc.returncode == 3, proc.stderr
    recording = tmp_path / "cut.jsonl"
    assert run_cli(["export", sid, "-o", str(recording)], env).returncode == 0
    target = make_repo(tmp_path / "replayed", files)
    replay = _replay(tmp_path, recording, target, "--output", "json", "--max-steps", "2")
    summary = json.loads(replay.stdout)
    assert summary["status"] == "limit" and summary["steps"] == 2, summary  # ran both steps, no divergence
    events = [json.loads(line) for line in
              (tmp_path / "state" / summary["session_id"] / "events.jsonl").read_text().splitlines()]
    paged = [e for e in events if e["type"] == "tool_result"][-1]["payload"]
    assert not paged["is_error"] and "line 499: " in paged["content"], paged["content"][:300]
    assert summary["session_id"] in json.dumps(paged)  # it read this session's saved output


def test_secrets_escaped_in_tool_arguments_are_scrubbed(tmp_path: Path) -> None:
    repo = _fresh_copy(tmp_path, "repo")
    password = 'Zq9"v\\Lm2#kP8w'
    env = cli_env(tmp_path, DB_PASSWORD=password)
    script = [Turn(reasoning="Connect.", tool_calls=[_call("shell", command=f"echo '{password}' https://bob:hunter2hunter2@db/x")]),
              Turn(content="Done.")]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "json",
                        "--sandbox", "none", TASK], env, timeout=120)
    sid = json.loads(proc.stdout)["session_id"]
    raw = next((tmp_path / "state").glob(f"*{sid}*/events.jsonl")).read_text()
    assert json.dumps(password)[1:-1] in raw  # in the log, JSON-escaped inside the call's arguments
    for fmt in ("recording", "trajectory"):
        out = run_cli(["export", sid, "--format", fmt], env).stdout
        decoded = json.dumps([json.loads(line) for line in out.splitlines()] if fmt == "recording" else json.loads(out))
        for text in (out, decoded):
            assert "Lm2#kP8w" not in text and "hunter2hunter2" not in text, fmt
        assert "[REDACTED:DB_PASSWORD]" in out


def test_a_replayed_session_can_be_handed_over_to_a_real_model(tmp_path: Path) -> None:
    _, sid = _replay_three_steps(tmp_path)
    with FakeKimi([Turn(reasoning="Take over.", tool_calls=[_call("finish", summary="taken over", status="success")])],
                  api_key=KEY) as fake:
        proc = run_cli(["resume", sid, "--model", "kimi-k2.6", "--base-url", fake.base_url, "--output", "json"],
                       cli_env(tmp_path), timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(fake.requests) == 1  # the real endpoint answered step 4, not the recording
    summary = json.loads(proc.stdout)
    assert summary["summary"] == "taken over" and summary["steps"] == 4


def test_a_recording_that_went_on_after_continue_replays_in_two_parts(tmp_path: Path) -> None:
    repo = _fresh_copy(tmp_path, "recorded")
    env = cli_env(tmp_path)
    script = [Turn(reasoning="Fix.", tool_calls=[_call("edit_file", path="calc.py", old_string="a - b",
                                                       new_string="a + b")]),
              Turn(reasoning="Done.", tool_calls=[_call("finish", summary="fixed add", status="success")]),
              Turn(reasoning="Now mul.", tool_calls=[_call("edit_file", path="calc.py", old_string="return a * b",
                                                           new_string="return b * a")]),
              Turn(reasoning="Done again.", tool_calls=[_call("finish", summary="also mul", status="success")])]
    with FakeKimi(script, api_key=KEY) as fake:
        first = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "json", "--sandbox",
                         "none", TASK], env, timeout=120)
        sid = json.loads(first.stdout)["session_id"]
        more = run_cli(["resume", sid, "--base-url", fake.base_url, "--continue", "swap mul's operands",
                        "--output", "json"], env, timeout=120)
        assert more.returncode == 0, more.stderr
    recording = tmp_path / "two-part.jsonl"
    assert run_cli(["export", sid, "-o", str(recording)], env).returncode == 0
    target = _fresh_copy(tmp_path, "replayed")
    part1 = _replay(tmp_path, recording, target, "--output", "json")
    assert part1.returncode == 0 and json.loads(part1.stdout)["steps"] == 2
    hint = "--continue 'swap mul'\"'\"'s operands'"
    assert "goes on for 2 more step(s)" in part1.stderr and hint in part1.stderr, part1.stderr
    replayed = json.loads(part1.stdout)["session_id"]
    part2 = run_cli(["resume", replayed, "--continue", "swap mul's operands", "--output", "json"],
                    _keyless_env(tmp_path), timeout=120)
    assert part2.returncode == 0, part2.stderr
    assert json.loads(part2.stdout)["summary"] == "also mul"
    assert (target / "calc.py").read_text() == (repo / "calc.py").read_text() != CALC
