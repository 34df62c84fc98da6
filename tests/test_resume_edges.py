"""Resume and compaction edge cases: crashes in narrow windows, small windows, failed starts."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import KEY, cli_env, make_repo, run_cli, stream_events
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn


def _call(name: str, **args: object) -> ToolCallSpec:
    return ToolCallSpec(name, args)


def _truncate_log_after(state_dir: Path, sid: str, predicate) -> None:
    """Simulate a kill -9: keep the log up to and including the last event matching predicate."""
    path = state_dir / sid / "events.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if predicate(json.loads(line)))
    path.write_text("".join(lines[: last + 1]))


def test_crash_between_tool_result_and_checkpoint_keeps_the_change(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    patch = tmp_path / "p.diff"
    with FakeKimi([Turn(reasoning="w", tool_calls=[_call("write_file", path="new.txt", content="new\n")])],
                  api_key=KEY) as fake:
        sid = json.loads(run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--max-steps", "1", "--output", "json", "t"], env).stdout)["session_id"]
        _truncate_log_after(tmp_path / "state", sid, lambda e: e["type"] == "tool_result")
        fake.add(Turn(reasoning="f", tool_calls=[_call("finish", summary="done")]))
        proc = run_cli(["resume", sid, "--base-url", fake.base_url, "--output", "json", "--patch-out", str(patch)],
                       env)
        assert proc.returncode == 0, proc.stderr
        last = fake.requests[-1]["messages"]
    out = json.loads(proc.stdout)
    assert out["changed_files"] == ["new.txt"] and "+new" in patch.read_text()
    assert not any("changed outside the agent" in str(m.get("content")) for m in last)


def test_crash_after_the_final_answer_does_not_ask_again(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="r", content="All done, nothing to change.")], api_key=KEY) as fake:
        sid = json.loads(run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                  "--output", "json", "t"], env).stdout)["session_id"]
        _truncate_log_after(tmp_path / "state", sid, lambda e: e["type"] == "assistant")
        proc = run_cli(["resume", sid, "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr
        assert fake.request_count == 1
    assert json.loads(proc.stdout)["summary"] == "All done, nothing to change."


def test_continue_after_finish_tool_does_not_record_a_second_finish(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="f", tool_calls=[_call("finish", summary="one")])], api_key=KEY) as fake:
        run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "t"], env)
        fake.add(Turn(reasoning="g", tool_calls=[_call("finish", summary="two")]))
        proc = run_cli(["resume", "--last", "--continue", "more", "--base-url", fake.base_url, "--output",
                        "stream-json"], env)
    types = [(e["type"], e.get("payload", {}).get("summary")) for e in stream_events(proc.stdout)]
    assert [t for t in types if t[0] == "finished"] == [("finished", "two")]


def test_failed_start_does_not_block_resume_if_exists(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])], api_key=KEY) as fake:
        bad = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "docker", "--image",
                       "kimi-code-no-such-image:never", "--resume-if-exists", "job"], env)
        assert bad.returncode == 5
        good = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                        "--resume-if-exists", "--output", "json", "job"], env)
        assert good.returncode == 0, good.stderr
        # A finished job is not resumed again: the same task runs anew.
        fake.add(Turn(reasoning="f", tool_calls=[_call("finish", summary="again")]))
        again = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                         "--resume-if-exists", "--output", "json", "job"], env)
    assert json.loads(again.stdout)["summary"] == "again"
    assert json.loads(again.stdout)["session_id"] != json.loads(good.stdout)["session_id"]
    statuses = {m["status"] for m in map(json.loads, run_cli(["sessions", "--json"], env).stdout.splitlines())}
    assert statuses == {"error", "finished"}


def test_small_window_does_not_compact_every_step(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path, KIMI_CODE_CONTEXT_WINDOW="32768")  # max_output_tokens stays at its 32768 default
    script = [Turn(reasoning=f"r{i}", tool_calls=[_call("read_file", path="a.txt", offset=1 + i % 2)])
              for i in range(6)]
    script.append(Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")]))
    with FakeKimi(script, api_key=KEY, context_window=32768) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "t"], env)
        assert proc.returncode == 0, proc.stderr
        bodies = fake.requests
    assert json.loads(proc.stdout)["compactions"] == 0
    assert all(b["max_completion_tokens"] <= 32768 // 4 for b in bodies)


def test_empty_summary_is_retried_without_thinking(tmp_path: Path) -> None:
    big = "\n".join("lorem ipsum dolor sit amet " * 3 for _ in range(60))
    repo = make_repo(tmp_path / "repo", {"big.txt": big})
    env = cli_env(tmp_path, KIMI_CODE_CONTEXT_WINDOW="16000", KIMI_CODE_MAX_OUTPUT_TOKENS="2000")
    summaries: list[dict] = []
    steps = [0]

    def model(body: dict) -> Turn:
        if not body.get("tools"):
            summaries.append(body)
            if len(summaries) == 1:
                return Turn(content="", finish_reason="length")
            return Turn(content="THE REAL SUMMARY")
        steps[0] += 1
        if steps[0] > 12:
            return Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])
        return Turn(reasoning=f"r{steps[0]}", tool_calls=[_call("read_file", path="big.txt", offset=1 + steps[0] % 2)])

    with FakeKimi(model, api_key=KEY, context_window=16000) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "t"], env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        after = [r["messages"] for r in fake.requests if r.get("tools")]
    assert len(summaries) >= 2
    assert all(s["thinking"] == {"type": "disabled"} for s in summaries)
    assert any("THE REAL SUMMARY" in str(m.get("content")) for msgs in after for m in msgs)
    assert not any("returned no text" in str(m.get("content")) for msgs in after for m in msgs)
