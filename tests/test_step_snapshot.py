"""The step snapshot leaves the critical path: it runs while the next model request is on its way,
and its checkpoint still lands in the log between the step's results and the next assistant turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import KEY, cli_env, git, make_repo, run_cli
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

SLOW_FILTER_SECONDS = 3


def _events(state_dir: Path) -> list[dict[str, Any]]:
    (log,) = state_dir.glob("*/events.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_next_request_is_sent_while_the_snapshot_still_runs(tmp_path: Path) -> None:
    # A clean filter that takes seconds makes the snapshot of a changed *.slow file slow.
    repo = make_repo(tmp_path / "repo", {".gitattributes": "*.slow filter=slow\n", "a.slow": "one\n"})
    git(repo, "config", "filter.slow.clean", f"sleep {SLOW_FILTER_SECONDS}; cat")
    env = cli_env(tmp_path)
    seen: list[list[str]] = []

    def model(body: dict[str, Any]) -> Turn:
        n = len(seen)
        seen.append([e["type"] for e in _events(tmp_path / "state")])
        if n == 0:
            return Turn(reasoning="edit", tool_calls=[ToolCallSpec("write_file", {"path": "a.slow", "content": "two\n"})])
        return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])

    with FakeKimi(model, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                        "--output", "json", "edit a.slow"], env)
    assert proc.returncode == 0, proc.stderr
    # When the second request arrived, step 1's result was logged but its snapshot was not done.
    assert seen[1][-1] == "tool_result" and seen[1].count("checkpoint") == 1  # only the base
    types = [(e["type"], e["step"]) for e in _events(tmp_path / "state")]
    result_at = types.index(("tool_result", 1))
    assert types[result_at + 1] == ("checkpoint", 1)  # same place in the log as a synchronous one
    assert types[result_at + 2][0] == "assistant"
    commit = _events(tmp_path / "state")[result_at + 1]["payload"]["commit"]
    assert git(repo, "show", f"{commit}:a.slow") == "two\n"  # the checkpoint holds step 1's work


def test_step_checkpoints_record_in_order_and_report_failures(tmp_path: Path) -> None:
    """The loop's collaborator on a real repository: a changed step is recorded once settled, an
    unchanged one records nothing, a failing snapshot is a notice (never an exception), and the
    bundle is written where CI retries look for it."""
    from kimi_code.agent.checkpoints import Checkpointer
    from kimi_code.agent.state import SessionState
    from kimi_code.agent.step_snapshot import StepCheckpoints

    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    cp = Checkpointer(repo, "sess")
    base = cp.base()
    state = SessionState()
    state.checkpoints, state.step, state.last_checkpoint = {0: base.commit}, 1, base.commit
    recorded: list[Any] = []
    notices: list[str] = []

    def record(payload: Any) -> None:
        recorded.append(payload)
        state.checkpoints[state.step] = state.last_checkpoint = payload.commit

    steps = StepCheckpoints(cp, state, record, notices.append)
    (repo / "a.txt").write_text("two\n")
    steps.start()
    assert recorded == []  # in the background until settled
    steps.settle()
    assert [p.TYPE for p in recorded] == ["checkpoint"] and recorded[0].changed == ["a.txt"]
    state.step = 2
    steps.take()
    assert len(recorded) == 1  # nothing changed: nothing recorded
    steps.bundle_path = tmp_path / "cp.bundle"
    steps.save_bundle()
    assert steps.bundle_path.stat().st_size > 0
    cp.snapshot = lambda step: (_ for _ in ()).throw(RuntimeError("disk on fire"))  # type: ignore[method-assign]
    steps.take()
    assert len(recorded) == 1 and notices == ["checkpoint failed: disk on fire"]
