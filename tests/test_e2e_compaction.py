"""Compaction and prompt-cache behaviour, observed on the fake Kimi server's recorded requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import KEY, cli_env, make_repo, run_cli
from kimi_code.agent.context import threshold_tokens
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

WINDOW = 24_000
MAX_OUT = 2_000
TASK = "Read big.txt repeatedly and keep the plan. (task text that must survive verbatim: ÄÖÜ 42)"
TODO = [{"id": "1", "content": "read the file many times", "status": "in_progress"},
        {"id": "2", "content": "finish with a summary", "status": "pending"}]


class Model:
    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.tool_requests = 0
        self.summary_requests: list[dict[str, Any]] = []

    def __call__(self, body: dict[str, Any]) -> Turn:
        if not body.get("tools"):
            self.summary_requests.append(body)
            return Turn(content=f"SUMMARY #{len(self.summary_requests)}: read big.txt several times; nothing else.")
        self.tool_requests += 1
        n = self.tool_requests
        if n == 1:
            return Turn(reasoning="plan first", tool_calls=[ToolCallSpec("todo", {"items": TODO})])
        if n >= self.steps:
            return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "read it all"})])
        return Turn(reasoning=f"reading again {n}", tool_calls=[ToolCallSpec("read_file", {"path": "big.txt", "offset": 1 + n % 2})])


def _env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path, KIMI_CODE_CONTEXT_WINDOW=str(WINDOW), KIMI_CODE_MAX_OUTPUT_TOKENS=str(MAX_OUT),
                   KIMI_CODE_TOOL_OUTPUT_TOKENS="3000")


def test_compaction_keeps_task_and_todo_and_ends_below_threshold(tmp_path: Path) -> None:
    big = "\n".join(f"{i:04d} " + "lorem ipsum dolor sit amet " * 3 for i in range(60))  # ~1.4k tokens
    repo = make_repo(tmp_path / "repo", {"big.txt": big})
    model = Model(steps=40)
    with FakeKimi(model, api_key=KEY, context_window=WINDOW) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", TASK], _env(tmp_path), timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        requests, statuses = fake.requests, fake.responses
    out = json.loads(proc.stdout)
    assert all(s == 200 for s in statuses), "the strict fake server rejected a request"
    assert out["compactions"] >= 2 and len(model.summary_requests) == out["compactions"]
    threshold = threshold_tokens(WINDOW, MAX_OUT, 0.8)
    tool_reqs = [r for r in requests if r.get("tools")]
    compacted_at = [i for i, (a, b) in enumerate(zip(tool_reqs, tool_reqs[1:]), 1)
                    if b["messages"][: len(a["messages"])] != a["messages"]]
    assert len(compacted_at) == out["compactions"]
    for i in compacted_at:
        after = tool_reqs[i]["messages"]
        # System prompt unchanged, task verbatim, then the summary with the todo list verbatim.
        assert after[0] == tool_reqs[0]["messages"][0]
        assert after[1] == tool_reqs[0]["messages"][1] and TASK in after[1]["content"]
        assert "SUMMARY #" in after[2]["content"]
        assert json.dumps(TODO, ensure_ascii=False, indent=1) in after[2]["content"]
        # Kept recent steps still carry their reasoning (Kimi's rule after the latest user message).
        assert all("reasoning_content" in m for m in after if m["role"] == "assistant" and m.get("tool_calls"))
        assert len(json.dumps(after)) // 4 < threshold  # the next request is below the threshold
    # Between compactions the prefix never changes (prompt cache).
    for i, (a, b) in enumerate(zip(tool_reqs, tool_reqs[1:]), 1):
        if i not in compacted_at:
            assert b["messages"][: len(a["messages"])] == a["messages"]
    assert out["tokens"]["cached_share"] > 0.5
    assert out["cost_saved_by_cache"] > 0
    # The summary call's own output is capped.
    assert all(r["max_completion_tokens"] <= 8192 for r in model.summary_requests)


def test_resume_after_compaction_rebuilds_the_same_context(tmp_path: Path) -> None:
    """A run stopped at step 20 (after a compaction) and resumed sends exactly the requests an
    uninterrupted run sends."""
    big = "\n".join(f"{i:04d} " + "lorem ipsum dolor sit amet " * 3 for i in range(60))
    repo = make_repo(tmp_path / "repo", {"big.txt": big})
    env = _env(tmp_path)
    with FakeKimi(Model(steps=30), api_key=KEY, context_window=WINDOW) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", TASK], env, timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        straight = fake.requests
    with FakeKimi(Model(steps=30), api_key=KEY, context_window=WINDOW) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "--max-steps", "20", TASK], env, timeout=180)
        assert proc.returncode == 3, proc.stderr[-3000:]
        out = json.loads(proc.stdout)
        assert out["compactions"] >= 1
        proc = run_cli(["resume", out["session_id"], "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        stopped_and_resumed = fake.requests
    assert len(stopped_and_resumed) == len(straight)
    for a, b in zip(straight, stopped_and_resumed):  # same messages, order and reasoning_content
        assert a["messages"] == b["messages"]
