"""The swarm's parts on their own: the tree budget's admission rule, worktrees and the merge."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from helpers import git, make_repo
from kimi_code.agent import worktrees
from kimi_code.agent.budget import TreeBudget


def test_requests_in_flight_are_counted_against_the_cap() -> None:
    budget = TreeBudget(max_cost=10.0)
    assert budget.admit() is None
    budget.charge("a", 3.0, 1, request_cost=3.0)
    budget.done()
    assert budget.admit() is None and budget.admit() is None  # 3 spent + 2 x 3 reserved <= 10
    admitted = threading.Event()

    def third() -> None:
        assert budget.admit() is None
        admitted.set()

    t = threading.Thread(target=third, daemon=True)
    t.start()
    assert not admitted.wait(0.8)  # 3 + 3 x 3 > 10: it waits for the requests in flight
    budget.charge("b", 3.0, 1, request_cost=3.0)
    budget.done()  # 6 spent, one in flight: 6 + 2 x 3 > 10 still
    assert not admitted.wait(0.8)
    budget.done()  # nothing in flight: one request always goes
    assert admitted.wait(10)
    budget.charge("c", 4.0, 1, request_cost=4.0)
    budget.done()
    reached = budget.admit()
    assert reached is not None and reached.kind == "cost" and reached.value == 10.0
    assert budget.admit() is not None  # once reached, nobody is admitted again


def test_steps_and_time_bound_the_tree() -> None:
    budget = TreeBudget(max_steps=3)
    budget.charge("root", 0.0, 1)
    budget.charge("child", 0.0, 2)
    assert budget.admit().kind == "steps"
    budget = TreeBudget(max_time=0.2)
    time.sleep(0.25)
    assert budget.admit().kind == "time"


def _tree(repo: Path, files: dict[str, str]) -> str:
    index = repo / ".git" / "scratch-index"
    env = {"GIT_INDEX_FILE": str(index)}
    import os

    for name, text in files.items():
        blob = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"], input=text.encode(),
                              capture_output=True, check=True).stdout.decode().strip()
        subprocess.run(["git", "-C", str(repo), "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}"],
                       env={**os.environ, **env}, check=True)
    tree = subprocess.run(["git", "-C", str(repo), "write-tree"], env={**os.environ, **env}, capture_output=True,
                          check=True).stdout.decode().strip()
    index.unlink()
    return tree


def test_three_way_merge_clean_conflict_and_idempotent_apply(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "1\n2\n3\n", "b.txt": "b\n"})
    base = _tree(repo, {"a.txt": "1\n2\n3\n", "b.txt": "b\n"})
    ours = _tree(repo, {"a.txt": "one\n2\n3\n", "b.txt": "b\n"})
    theirs = _tree(repo, {"a.txt": "1\n2\nthree\n", "b.txt": "b\n", "c/new.txt": "new\n"})
    clash = _tree(repo, {"a.txt": "uno\n2\n3\n", "b.txt": "b\n"})
    merged = worktrees.three_way(repo, base, ours, theirs)
    assert merged.clean and merged.tree
    assert worktrees.three_way(repo, base, ours, clash).conflicts == ["a.txt"]
    (repo / "a.txt").write_text("one\n2\n3\n")
    written = worktrees.apply_tree(repo, repo, ours, merged.tree)
    assert sorted(written) == ["a.txt", "c/new.txt"]
    assert worktrees.apply_tree(repo, repo, ours, merged.tree) == written  # again: same files, same bytes
    assert (repo / "a.txt").read_text() == "one\n2\nthree\n" and (repo / "c/new.txt").read_text() == "new\n"
    gone = worktrees.apply_tree(repo, repo, merged.tree, ours)  # and back: c/new.txt removed with its directory
    assert "c/new.txt" in gone and not (repo / "c").exists()


def test_a_worktree_is_git_excluded_and_points_to_the_repository_relatively(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    head = git(repo, "rev-parse", "HEAD").strip()
    path = worktrees.create_worktree(repo, "s-a1", head)
    assert (path / "a.txt").read_text() == "a\n"
    assert not (path / ".git").read_text().split(":", 1)[1].strip().startswith("/")
    assert git(path, "rev-parse", "HEAD").strip() == head
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    (path / "a.txt").unlink()  # half-made by a crash: made again
    (path / ".git").unlink()
    assert (worktrees.create_worktree(repo, "s-a1", head) / "a.txt").exists()


def test_the_swarm_tools_schemas_are_pinned() -> None:
    """spawn_agents, wait_agents, message_agent and cancel_agents are a public interface and part of
    the cached prefix: a change must be deliberate (regenerate tests/fixtures/swarm_tool_schemas.json)."""
    import json

    from kimi_code.agent.swarm import SWARM_TOOLS, register_tools
    from kimi_code.tools.registry import ToolRegistry

    registry = ToolRegistry()
    register_tools(registry, lambda: None)  # type: ignore[arg-type, return-value]
    assert registry.names == list(SWARM_TOOLS)
    fixture = Path(__file__).parent / "fixtures" / "swarm_tool_schemas.json"
    assert json.dumps(registry.schemas(), indent=2, ensure_ascii=False) + "\n" == fixture.read_text(encoding="utf-8")


def test_one_back_off_for_the_tree(tmp_path: Path) -> None:
    """A 429 seen by one session of a tree holds back the other sessions' requests too (one shared
    back-off), over one shared SDK client (one connection pool), against the real fake server."""
    from kimi_code.agent.client import ModelClient, SharedTransport
    from kimi_code.agent.config import Settings
    from kimi_code.agent.fake_kimi import FakeKimi, Fault, Turn

    arrivals: list[tuple[float, str]] = []
    answers = iter([Fault.rate_limited(retry_after=2), Turn(content="a"), Turn(content="b")])

    def responder(body: dict) -> object:
        arrivals.append((time.monotonic(), body["messages"][-1]["content"]))
        return next(answers)

    with FakeKimi(responder) as fake:
        settings = Settings(base_url=fake.base_url, api_key=fake.api_key, retry_window=60)
        shared = SharedTransport()
        a, b = ModelClient(settings, shared=shared), ModelClient(settings, shared=shared)
        done: dict[str, str] = {}

        def ask(client: ModelClient, text: str) -> None:
            done[text] = client.complete([{"role": "user", "content": text}], session_id="s").content

        first = threading.Thread(target=ask, args=(a, "from a"))
        first.start()
        while not arrivals:
            time.sleep(0.01)
        time.sleep(0.3)  # a got its 429 and backs off for 2 s; b asks now
        second = threading.Thread(target=ask, args=(b, "from b"))
        second.start()
        first.join(30)
        second.join(30)
        connections = fake.connections
    assert done == {"from a": "a", "from b": "b"} or done == {"from a": "b", "from b": "a"}
    t429 = arrivals[0][0]
    assert all(t - t429 >= 1.9 for t, _ in arrivals[1:])  # nobody asked before the back-off ended
    assert a._sdk is b._sdk and connections <= 2
