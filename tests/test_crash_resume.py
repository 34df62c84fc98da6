"""Crash safety: a 200-step session SIGKILLed at random moments and resumed until it finishes.

In the end the fake server's last request must show every completed tool result exactly once,
every assistant turn with the reasoning_content the model sent for it, and the workspace must be in
the expected state: each step's effect applied exactly once, no completed command run twice.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, make_repo, run_with_random_kills, sandbox_args
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.agent.state import INTERRUPTED_RESULT

STEPS = 200
# Seconds a started or resumed process may take to send its first model request.
PROGRESS_TIMEOUT = 120.0


class Responder:
    """A deterministic 'model': step k appends k to progress.txt (once) and logs every execution."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sent: dict[str, list[tuple[str, str]]] = {}  # reasoning -> the calls sent with it
        self.lock = threading.Lock()

    def done_steps(self, messages: list[dict[str, Any]]) -> set[int]:
        done = set()
        for m in messages:
            if m.get("role") == "tool" and m.get("name") == "shell":
                for line in str(m.get("content", "")).splitlines():
                    if line.startswith("step-ok-"):
                        done.add(int(line.split("-")[-1]))
        return done

    def __call__(self, body: dict[str, Any]) -> Turn:
        with self.lock:
            done = self.done_steps(body["messages"])
            todo = [k for k in range(STEPS) if k not in done]
            reasoning = f"reasoning {uuid.uuid4()}"
            if not todo:
                calls = [ToolCallSpec("finish", {"summary": f"all {STEPS} steps done"})]
            else:
                k = todo[0]
                cmd = (f"sleep 0.0{self.rng.randint(0, 5)}; echo {k} >> runs.log; "
                       f"grep -qx {k} progress.txt 2>/dev/null || echo {k} >> progress.txt; echo step-ok-{k}")
                calls = [ToolCallSpec("shell", {"command": cmd})]
                if k % 7 == 0:
                    calls.append(ToolCallSpec("read_file", {"path": "progress.txt"}))
            self.sent[reasoning] = [(c.name, c.arguments_text()) for c in calls]
            delay = 0.25 if self.rng.random() < 0.08 else 0.0  # sometimes slow: kills land mid-response
            return Turn(reasoning=reasoning, tool_calls=calls, delay=delay)


def _run_until_finished(repo: Path, env: dict[str, str], fake: FakeKimi, kind: str, seed: int) -> tuple[int, int]:
    """Run, then resume, killed at random moments once each process has made progress."""
    run = ["run", "--repo", str(repo), "--base-url", fake.base_url, *sandbox_args(kind), "--output", "json",
           "--max-steps", "1000", f"crash test {seed}"]
    resume = ["resume", "--last", "--base-url", fake.base_url, "--output", "json"]
    kills, out = run_with_random_kills(lambda k: resume if k else run, env, fake, random.Random(seed * 7919),
                                       (0.0, 1.5), progress_timeout=PROGRESS_TIMEOUT)
    return kills, json.loads(out)["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("kind,seed", [
    pytest.param("docker", 1, marks=pytest.mark.docker),
    pytest.param("docker", 2, marks=pytest.mark.docker),
    pytest.param("docker", 3, marks=pytest.mark.docker),
    ("local", 4),
])
def test_sigkill_at_random_moments_then_resume(tmp_path: Path, kind: str, seed: int,
                                               remove_containers_under: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "crash test\n"})
    env = cli_env(tmp_path, KIMI_CODE_RETRY_WINDOW="30")
    responder = Responder(seed)
    with FakeKimi(responder, api_key=KEY, max_recorded=3) as fake:
        kills, steps = _run_until_finished(repo, env, fake, kind, seed)
        last = fake.requests[-1]["messages"]
    assert kills >= 2, "the test must actually kill the agent"

    # Workspace: every step's effect applied exactly once, in order.
    progress = (repo / "progress.txt").read_text().split()
    assert progress == [str(k) for k in range(STEPS)]

    # Every assistant turn carries exactly the reasoning and calls the model sent with it.
    calls_by_id: dict[str, tuple[str, str]] = {}
    for m in last:
        if m["role"] == "assistant":
            sent = responder.sent[m["reasoning_content"]]
            got = [(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
            assert got == sent
            for c in m["tool_calls"]:
                calls_by_id[c["id"]] = (c["function"]["name"], c["function"]["arguments"])
    # Every tool call answered exactly once; completed results never duplicated.
    answered = Counter(m["tool_call_id"] for m in last if m["role"] == "tool")
    assert set(answered) == set(calls_by_id) - {cid for cid, (name, _) in calls_by_id.items() if name == "finish"}
    assert all(n == 1 for n in answered.values())
    completed = Counter()
    interrupted = Counter()
    for m in last:
        if m["role"] == "tool" and m["name"] == "shell":
            k = int(json.loads(calls_by_id[m["tool_call_id"]][1])["command"].split("echo ")[1].split()[0])
            if m["content"] == INTERRUPTED_RESULT:
                interrupted[k] += 1
            else:
                assert f"step-ok-{k}" in m["content"]
                completed[k] += 1
    assert all(completed[k] == 1 for k in range(STEPS))
    # A completed command never ran twice: extra executions only for interrupted attempts.
    runs = Counter(int(x) for x in (repo / "runs.log").read_text().split())
    for k in range(STEPS):
        assert 1 <= runs[k] <= 1 + interrupted[k], (k, runs[k], interrupted[k])
