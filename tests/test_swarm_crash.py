"""Crash safety of a swarm: a root with 20+ children SIGKILLed at random moments, with children
running, queued and finished, and resumed (`kimi-code resume ROOT`) until it is done.

Then: in every child's last request each completed step's result appears exactly once (no
completed tool call run twice, none lost), every tool call is answered once, and every child's
work is in the parent's workspace exactly once (each step appends its line only if absent, so a
step cut short and run again still leaves one line)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, make_repo, run_with_random_kills, sandbox_args
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from swarm_model import tag_of

CHILDREN = 20
STEPS = 6
PROGRESS_TIMEOUT = 120.0


class Model:
    """Root: spawn CHILDREN workers, then finish. Worker NAME, step k: append k to out/NAME.txt
    once (and to a run log every time it runs), answered by what its history shows done."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.last: dict[str, list[dict[str, Any]]] = {}

    @staticmethod
    def done(messages: list[dict[str, Any]]) -> set[int]:
        found = set()
        for m in messages:
            if m.get("role") == "tool" and m.get("name") == "shell":
                for line in str(m.get("content", "")).splitlines():
                    if line.startswith("step-ok-"):
                        found.add(int(line.rsplit("-", 1)[1]))
        return found

    def __call__(self, body: dict[str, Any]) -> Turn:
        messages = body["messages"]
        tag = tag_of(messages)
        with self.lock:
            self.last[tag] = messages
            delay = 0.2 if self.rng.random() < 0.1 else 0.0
        if tag == "root":
            if any(m.get("role") == "tool" and m.get("name") == "spawn_agents" for m in messages):
                return Turn(tool_calls=[ToolCallSpec("finish", {"summary": "all children done"})])
            agents = [{"name": f"w{i:02d}", "task": f"[agent:w{i:02d}] write your lines"} for i in range(CHILDREN)]
            return Turn(tool_calls=[ToolCallSpec("spawn_agents", {"agents": agents})], delay=delay)
        todo = [k for k in range(STEPS) if k not in self.done(messages)]
        if not todo:
            return Turn(tool_calls=[ToolCallSpec("finish", {"summary": f"{tag} wrote {STEPS} lines"})], delay=delay)
        k = todo[0]
        cmd = (f"mkdir -p out; echo {k} >> runs-{tag}.log; grep -qx {k} out/{tag}.txt 2>/dev/null || "
               f"echo {k} >> out/{tag}.txt; echo step-ok-{k}")
        return Turn(tool_calls=[ToolCallSpec("shell", {"command": cmd})], delay=delay)


def _run_until_done(repo: Path, env: dict[str, str], fake: FakeKimi, kind: str, seed: int) -> tuple[int, dict[str, Any]]:
    """Run, then resume the root session, killed at random moments once each process has made progress."""
    run = ["run", "--repo", str(repo), "--base-url", fake.base_url, *sandbox_args(kind), "--output", "json",
           "swarm crash test"]

    def args_for(kills: int) -> list[str]:
        if not kills:
            return run
        return ["resume", _root_id(Path(env["KIMI_CODE_STATE_DIR"])), "--base-url", fake.base_url, "--output", "json"]

    kills, out = run_with_random_kills(args_for, env, fake, random.Random(seed * 104729), (0.1, 1.2), attempts=200,
                                       progress_timeout=PROGRESS_TIMEOUT)
    return kills, json.loads(out)


def _root_id(state: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for d in state.iterdir() if state.is_dir() else ():
            if d.name.startswith(".") or not (d / "events.jsonl").exists():
                continue
            first = json.loads((d / "events.jsonl").read_text().splitlines()[0])
            if not first["payload"].get("parent"):
                return d.name
        time.sleep(0.01)
    raise AssertionError("the root session never appeared")


@pytest.mark.slow
@pytest.mark.parametrize("kind,seed", [
    pytest.param("docker", 1, marks=pytest.mark.docker),
    pytest.param("docker", 2, marks=pytest.mark.docker),
    ("local", 3),
])
def test_sigkill_during_a_swarm_then_resume(tmp_path: Path, kind: str, seed: int,
                                            remove_containers_under: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "swarm crash test\n"})
    env = cli_env(tmp_path, KIMI_CODE_RETRY_WINDOW="30", KIMI_CODE_MAX_AGENTS="6")
    model = Model(seed)
    with FakeKimi(model, api_key=KEY, max_recorded=5) as fake:
        kills, summary = _run_until_done(repo, env, fake, kind, seed)
    assert kills >= 2, "the test must actually kill the swarm"
    rows = {r["name"]: r for r in summary["agents"]}
    assert len(rows) == CHILDREN
    for i in range(CHILDREN):
        name = f"w{i:02d}"
        row = rows[name]
        assert row["status"] == "success", json.dumps(row)
        # The child's work is in the parent's workspace, each step's effect exactly once.
        assert (repo / "out" / f"{name}.txt").read_text().split() == [str(k) for k in range(STEPS)], (name, row)
        # In its last request: every call answered once; each completed step's result once.
        last = model.last[name]
        calls = [c["id"] for m in last if m.get("role") == "assistant" for c in m.get("tool_calls") or []]
        answered = Counter(m["tool_call_id"] for m in last if m.get("role") == "tool")
        assert all(n == 1 for n in answered.values()) and set(answered) <= set(calls)
        ok = Counter(line for m in last if m.get("role") == "tool" and m.get("name") == "shell"
                     for line in str(m["content"]).splitlines() if line.startswith("step-ok-"))
        assert ok == Counter(f"step-ok-{k}" for k in range(STEPS)), (name, ok)
    # No child session is left unfinished, and each was linked to the root.
    state = tmp_path / "state"
    for row in rows.values():
        meta = json.loads((state / row["session_id"] / "meta.json").read_text())
        assert meta["root"] == summary["session_id"] and meta["status"] == "finished", meta
