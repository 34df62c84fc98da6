"""Sub-agents end to end: the real CLI, the fake Kimi server over HTTP+SSE (one responder routing
each request by its session's task), git worktrees and the real Docker sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, git, make_repo, run_cli, sandbox_args
from kimi_code.agent.fake_kimi import FakeKimi, Turn
from swarm_model import SwarmModel, call, steps, tool_results

DOCKER = [pytest.param("docker", marks=pytest.mark.docker), "local"]


def spawn(*agents: dict[str, Any], wait: bool = True) -> list:
    return [call("spawn_agents", agents=list(agents), wait=wait)]


def agent(name: str, task: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "task": f"[agent:{name}] {task}", **extra}


def run_root(repo: Path, tmp_path: Path, fake: FakeKimi, kind: str, *extra: str, env: dict[str, str] | None = None,
             task: str = "split the work") -> tuple[Any, dict[str, Any]]:
    env = env or cli_env(tmp_path)
    proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, *sandbox_args(kind), "--output", "json",
                    *extra, task], env, timeout=600)
    summary = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc, summary


def spawn_result(model: SwarmModel) -> dict[str, Any]:
    results = tool_results(model.bodies["root"], "spawn_agents")
    assert results, "the root never got a spawn_agents result"
    return json.loads(results[-1])


@pytest.mark.parametrize("kind", DOCKER)
def test_children_editing_different_files_are_all_merged(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n", "src/core.py": "x = 1\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("alpha", "write alpha.txt"), agent("beta", "edit src/core.py"),
                            agent("gamma", "write docs/gamma.md"))),
        "alpha": steps([call("write_file", path="alpha.txt", content="from alpha\n")],
                       [call("shell", command="pwd && cat alpha.txt")]),
        "beta": steps([call("edit_file", path="src/core.py", old_string="x = 1", new_string="x = 2")]),
        "gamma": steps([call("write_file", path="docs/gamma.md", content="# gamma\n")]),
    })
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, kind)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every child's work is in the parent's workspace; nothing else changed.
    assert (repo / "alpha.txt").read_text() == "from alpha\n"
    assert (repo / "src/core.py").read_text() == "x = 2\n"
    assert (repo / "docs/gamma.md").read_text() == "# gamma\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=all").split("\n").count("") == 1
    status = git(repo, "status", "--porcelain", "--untracked-files=all").split()
    assert ".kimi-code/worktrees/" not in " ".join(status)
    # One compact result for the batch: no transcripts, each child with its merge and numbers.
    result = spawn_result(model)
    rows = {r["name"]: r for r in result["agents"]}
    assert set(rows) == {"alpha", "beta", "gamma"}
    for name, row in rows.items():
        assert row["status"] == "success", row
        assert row["merge"].startswith("merged"), row
        assert row["steps"] >= 2 and row["cost"] > 0 and row["session_id"].startswith(summary["session_id"])
    assert rows["beta"]["changed_files"] == ["src/core.py"] and "1 file changed" in rows["beta"]["diffstat"]
    # The child's shell ran in its own worktree (inside the sandbox's view of the repository).
    shell_out = tool_results(model.bodies["alpha"], "shell")[0]
    assert ".kimi-code/worktrees/" in shell_out and "from alpha" in shell_out
    if kind == "docker":
        assert "/workspace/.kimi-code/worktrees/" in shell_out
    # --output json lists every child's result; children share one system prompt and tool list.
    assert {r["name"] for r in summary["agents"]} == {"alpha", "beta", "gamma"}
    assert len({model.prompts[n] for n in ("alpha", "beta", "gamma")}) == 1
    assert summary["agents_total"]["count"] == 3
    # Each child is a session of its own, linked to its parent and root.
    state = tmp_path / "state"
    for row in rows.values():
        first = json.loads((state / row["session_id"] / "events.jsonl").read_text().splitlines()[0])
        assert first["payload"]["parent"] == summary["session_id"] == first["payload"]["root"]
