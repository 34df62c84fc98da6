"""Sub-agents end to end: the real CLI, the fake Kimi server over HTTP+SSE (one responder routing
each request by its session's task), git worktrees and the real Docker sandbox."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, git, make_repo, run_cli, sandbox_args
from kimi_code.agent.fake_kimi import FakeKimi, Turn
from swarm_model import SwarmModel, call, steps, tag_of, tool_results

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


def gamma(turn: int, messages: list) -> Turn:
    """Writes by the absolute path of its working directory, as its task message names it."""
    where = re.search(r"Your working directory: (\S+) ", str(messages[1]["content"])).group(1)
    if turn == 0:
        return Turn(tool_calls=[call("write_file", path=f"{where}/docs/gamma.md", content="# gamma\n")])
    return Turn(tool_calls=[call("finish", summary="wrote docs/gamma.md")])


@pytest.mark.parametrize("kind", DOCKER)
def test_children_editing_different_files_are_all_merged(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n", "src/core.py": "x = 1\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("alpha", "write alpha.txt"), agent("beta", "edit src/core.py"),
                            agent("gamma", "write docs/gamma.md"))),
        "alpha": steps([call("write_file", path="alpha.txt", content="from alpha\n")],
                       [call("shell", command="pwd && cat alpha.txt")]),
        "beta": steps([call("edit_file", path="src/core.py", old_string="x = 1", new_string="x = 2")]),
        "gamma": gamma,
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
    assert rows["beta"]["changed_files"] == ["src/core.py"] and rows["beta"]["diffstat"] == "1 file changed, 1 insertion(+), 1 deletion(-)"
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


@pytest.mark.parametrize("kind", DOCKER)
def test_two_children_editing_the_same_lines_one_merges_one_conflicts(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"config.txt": "name = base\nsize = 1\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("first", "rename"), agent("second", "rename differently"))),
        "first": steps([call("edit_file", path="config.txt", old_string="name = base", new_string="name = first")]),
        "second": steps([call("edit_file", path="config.txt", old_string="name = base", new_string="name = second")],
                        [call("write_file", path="extra.txt", content="second's other file\n")]),
    })
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, kind)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["name"]: r for r in spawn_result(model)["agents"]}
    assert rows["first"]["merge"].startswith("merged")
    second = rows["second"]
    assert second["status"] == "success" and second["conflicts"] == ["config.txt"], second
    assert "conflict" in second["merge"]
    # Nothing of the conflicting child was applied, not even its non-conflicting file.
    assert (repo / "config.txt").read_text() == "name = first\nsize = 1\n"
    assert not (repo / "extra.txt").exists()
    assert "<<<<<<<" not in (repo / "config.txt").read_text()
    # Its work is kept on the ref the result names.
    assert second["ref"] == f"refs/kimi-code/{second['session_id']}/head"
    assert git(repo, "show", f"{second['ref']}:config.txt") == "name = second\nsize = 1\n"
    assert git(repo, "show", f"{second['ref']}:extra.txt") == "second's other file\n"


@pytest.mark.parametrize("kind", DOCKER)
def test_a_read_only_child_cannot_write(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"notes.md": "keep me\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("reviewer", "review notes.md", mode="read_only"))),
        "reviewer": steps([call("read_file", path="notes.md")],
                          [call("write_file", path="notes.md", content="overwritten\n")],
                          [call("finish", summary="notes.md says keep me")]),
    })
    with FakeKimi(model, api_key=KEY) as fake:
        proc, _ = run_root(repo, tmp_path, fake, kind)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (repo / "notes.md").read_text() == "keep me\n"
    tools = json.loads(model.prompts["reviewer"][1])
    names = {t["function"]["name"] for t in tools}
    assert "read_file" in names and "finish" in names
    assert not names & {"write_file", "edit_file", "shell", "run_tests", "spawn_agents"}
    refused = [m for m in model.bodies["reviewer"] if m.get("role") == "tool" and m.get("name") == "write_file"]
    assert refused and "Unknown tool 'write_file'" in refused[0]["content"]
    row = spawn_result(model)["agents"][0]
    assert row["status"] == "success" and row["summary"] == "notes.md says keep me"
    assert row["merge"] == "none (read_only)"


def _priced_turn(calls: list) -> Turn:
    return Turn(tool_calls=calls, usage={"prompt_tokens": 100_000, "completion_tokens": 1_000, "total_tokens": 101_000,
                                         "cached_tokens": 0})


@pytest.mark.parametrize("kind", DOCKER)
def test_a_tree_wide_max_cost_stops_every_child(tmp_path: Path, kind: str) -> None:
    from kimi_code.agent.config import model_info

    per_request = model_info("kimi-k2.6").cost(100_000, 1_000, 0)
    cap = round(per_request * 12.5, 6)
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})

    def root(turn: int, messages: list) -> Turn:
        if turn == 0:
            return _priced_turn(spawn(*(agent(f"w{i}", "count forever") for i in range(5))))
        return _priced_turn([call("finish", summary="done")])

    def worker(turn: int, messages: list) -> Turn:
        return _priced_turn([call("shell", command=f"echo step {turn}")])

    model = SwarmModel({"root": root}, default=worker)
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, kind, "--max-cost", str(cap))
        requests = fake.request_count
    assert proc.returncode == 3, proc.stderr[-3000:]  # EXIT_LIMIT
    assert summary["status"] == "limit"
    rows = summary["agents"]
    assert len(rows) == 5 and all(r["status"] == "limit" for r in rows), rows
    tree_cost = summary["agents_total"]["tree_cost"]
    assert tree_cost == pytest.approx(summary["cost"] + sum(r["cost"] for r in rows))
    # No request after the cap: the tree spent at most the cap plus the one request in flight.
    assert tree_cost <= cap + per_request + 1e-9
    assert requests <= int(cap / per_request) + 1
    assert requests == len(model.answered)


@pytest.mark.parametrize("kind", DOCKER)
def test_message_agent_to_a_finished_child(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("scribe", "write one.txt")),
                      [call("message_agent", id="scribe", text="now also write two.txt")],
                      [call("wait_agents", ids=["a1"])]),
        "scribe": steps([call("write_file", path="one.txt", content="1\n")],
                        [call("finish", summary="wrote one.txt")],
                        [call("write_file", path="two.txt", content="2\n")],
                        [call("finish", summary="wrote two.txt too")]),
    })
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, kind)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (repo / "one.txt").read_text() == "1\n" and (repo / "two.txt").read_text() == "2\n"
    sent = json.loads(tool_results(model.bodies["root"], "message_agent")[0])
    assert sent["status"] == "resumed"
    waited = json.loads(tool_results(model.bodies["root"], "wait_agents")[0])["agents"][0]
    assert waited["summary"] == "wrote two.txt too" and waited["merge"] == "merged (1 file(s))"
    # The follow-up reached the child as the user's instructions, in the same session.
    continues = [m for m in model.bodies["scribe"] if m.get("role") == "user" and "now also write two.txt" in str(m.get("content"))]
    assert len(continues) == 1
    assert summary["agents"][0]["session_id"] == waited["session_id"]


@pytest.mark.parametrize("kind", DOCKER)
def test_watching_and_inspecting_children(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("left", "write left.txt"), agent("right", "look around", mode="read_only"))),
        "left": steps([call("write_file", path="left.txt", content="left\n")]),
        "right": steps([call("list_files", path=".")]),
    })
    env = cli_env(tmp_path)
    with FakeKimi(model, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, *sandbox_args(kind),
                        "--output", "stream-json", "watch them"], env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    root = events[0]["session_id"]
    life = [(e["type"], e["payload"].get("child_id")) for e in events if e["type"].startswith("child_")]
    kids = [f"{root}-a1", f"{root}-a2"]
    for kid in kids:
        assert ("child_spawned", kid) in life and ("child_started", kid) in life and ("child_ended", kid) in life
    ended = {e["payload"]["child_id"]: e["payload"] for e in events if e["type"] == "child_ended"}
    assert ended[kids[0]]["status"] == "success" and ended[kids[0]]["result"]["changed_files"] == ["left.txt"]
    assert ("child_merge", kids[0]) in life

    listing = run_cli(["sessions"], {**env, "COLUMNS": "300"})
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if root in line and "└" not in line)
    assert any("└" in line and "-a1" in line for line in lines[at + 1:])
    agents = run_cli(["show", root, "--agents"], env)
    assert agents.returncode == 0 and "left" in agents.stdout and "right" in agents.stdout
    assert "2 sub-agent(s): 2 success" in agents.stdout
    shown = run_cli(["show", kids[0]], env)
    assert shown.returncode == 0 and "left.txt" in shown.stdout
    diff = run_cli(["diff", kids[0]], env)
    assert diff.returncode == 0 and "+left" in diff.stdout
    export = run_cli(["export", kids[1], "--format", "trajectory"], env)
    assert export.returncode == 0 and json.loads(export.stdout)
    child = run_cli(["resume", kids[0]], env)
    assert child.returncode == 2 and f"resume {root}" in child.stderr and "Traceback" not in child.stderr
    # `resume --last` means the last root, never one of its children.
    again = run_cli(["resume", "--last", "--output", "json"], env)
    assert again.returncode == 0 and json.loads(again.stdout)["session_id"] == root


@pytest.mark.parametrize("kind", DOCKER)
def test_a_merge_cut_short_by_a_crash_is_completed_on_resume(tmp_path: Path, kind: str) -> None:
    """The parent's log ends right after a merge's intent (a kill while its files were being
    written, one of two written): resume completes it, and the spawn call picks its child up."""
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("pair", "write two files"))),
        "pair": steps([call("write_file", path="a.txt", content="A\n"), call("write_file", path="b.txt", content="B\n")]),
    })
    env = cli_env(tmp_path)
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, kind, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        log = tmp_path / "state" / summary["session_id"] / "events.jsonl"
        lines = log.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines)
                  if json.loads(line)["type"] == "child_merge" and json.loads(line)["payload"]["phase"] == "intent")
        log.write_text("".join(lines[:at + 1]))
        (repo / "b.txt").unlink()  # half-applied: a.txt written, b.txt not yet
        (tmp_path / "state" / summary["session_id"] / "meta.json").unlink()
        again = run_cli(["resume", summary["session_id"], "--base-url", fake.base_url, "--output", "json"], env,
                        timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (repo / "a.txt").read_text() == "A\n" and (repo / "b.txt").read_text() == "B\n"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    merges = [e["payload"]["phase"] for e in events if e["type"] == "child_merge"]
    assert merges == ["intent", "applied"]
    assert [e for e in events if e["type"] == "child_started"][-1:] and \
        sum(1 for e in events if e["type"] == "child_spawned") == 1
    assert json.loads(again.stdout)["agents"][0]["merge"] == "merged (2 file(s))"
    assert model.answered.count(("pair", 0)) == 1  # the child was never run again


def test_the_live_view_shows_the_swarm(tmp_path: Path) -> None:
    from terminal import Terminal

    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    slow = lambda calls: Turn(tool_calls=calls, delay=2.0)  # noqa: E731 - the view has time to show them
    model = SwarmModel({
        "root": steps(spawn(agent("north", "look"), agent("south", "look"))),
        "north": steps(slow([call("shell", command="echo north")]), slow([call("finish", summary="north done")])),
        "south": steps(slow([call("shell", command="echo south")]), slow([call("finish", summary="south done")])),
    })
    with FakeKimi(model, api_key=KEY) as fake:
        term = Terminal(tmp_path, ["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                   "watch the swarm"], cli_env(tmp_path))
        screen = term.wait_for("agents: 2 running · 0 queued · 0 done · 0 failed")
        assert "north" in screen and "south" in screen
        assert term.exit_code() == 0
        assert "ended (success)" in term.screen()


def test_sigterm_stops_the_children_where_they_are_and_resume_finishes_them(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from helpers import cli_cmd

    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})

    def worker(turn: int, messages: list) -> Turn:
        if turn < 6:
            return Turn(tool_calls=[call("shell", command=f"echo {turn} >> steps-{tag_of(messages)}.txt")], delay=0.5)
        return Turn(tool_calls=[call("finish", summary="six steps")])

    model = SwarmModel({"root": steps(spawn(*(agent(f"s{i}", "step") for i in range(4))))}, default=worker)
    env = cli_env(tmp_path)
    with FakeKimi(model, api_key=KEY) as fake:
        proc = subprocess.Popen(cli_cmd("run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none",
                                        "--output", "json", "stop and go"), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while sum(1 for tag, _ in model.answered if tag != "root") < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err[-3000:]  # EXIT_TERMINATED
        root = json.loads(out)["session_id"]
        events = [json.loads(line) for line in (tmp_path / "state" / root / "events.jsonl").read_text().splitlines()]
        ended = {e["payload"]["child_id"] for e in events if e["type"] == "child_ended"}
        spawned = {e["payload"]["child_id"] for e in events if e["type"] == "child_spawned"}
        assert len(spawned - ended) >= 2  # stopped where they were, not ended: resumable
        assert not [e for e in events if e["type"] == "child_ended" and e["payload"]["status"] != "success"]
        again = run_cli(["resume", root, "--base-url", fake.base_url, "--output", "json"], env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    rows = json.loads(again.stdout)["agents"]
    assert [r["status"] for r in rows] == ["success"] * 4
    for i in range(4):
        assert (repo / f"steps-s{i}.txt").read_text().split() == [str(k) for k in range(6)]


@pytest.mark.parametrize("kind", DOCKER)
def test_template_items_without_waiting_then_message_cancel_and_a_childs_own_budget(tmp_path: Path, kind: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})

    def root(turn: int, messages: list) -> Turn:
        script = [
            [call("spawn_agents", template="[agent:{item}] keep going", items=["busy", "chatty"], wait=False)],
            spawn(agent("capped", "keep going", max_steps=2), wait=False),
            [call("message_agent", id="item-2", text="PLEASE WRITE reply.txt")],
            [call("cancel_agents", ids=["item-1"])],
            [call("wait_agents")],
        ]
        return Turn(tool_calls=script[turn]) if turn < len(script) else Turn(tool_calls=[call("finish", summary="ok")])

    def busy(turn: int, messages: list) -> Turn:
        return Turn(tool_calls=[call("shell", command=f"echo {turn}")], delay=0.3)

    def chatty(turn: int, messages: list) -> Turn:
        if any("PLEASE WRITE reply.txt" in str(m.get("content")) for m in messages if m.get("role") == "user"):
            if not tool_results(messages, "write_file"):
                return Turn(tool_calls=[call("write_file", path="reply.txt", content="got it\n")])
            return Turn(tool_calls=[call("finish", summary="replied")])
        return Turn(tool_calls=[call("shell", command="echo waiting")], delay=0.3)

    model = SwarmModel({"root": root, "busy": busy, "chatty": chatty, "capped": busy})
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, kind)
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = json.loads(tool_results(model.bodies["root"], "spawn_agents")[0])
    assert [r["name"] for r in started["agents"]] == ["item-1", "item-2"]
    assert all(r["status"] in ("queued", "running") for r in started["agents"])
    sent = json.loads(tool_results(model.bodies["root"], "message_agent")[0])
    assert sent["note"].startswith("delivered")  # to a running child: read before its next step
    cancelled = json.loads(tool_results(model.bodies["root"], "cancel_agents")[0])["agents"]
    assert [r["status"] for r in cancelled] == ["cancelled"]
    assert cancelled[0]["merge"] == "nothing to merge"  # it changed nothing (a cancelled child is never merged)
    rows = {r["name"]: r for r in summary["agents"]}
    assert rows["item-2"]["status"] == "success" and rows["item-2"]["summary"] == "replied"
    assert rows["capped"]["status"] == "limit" and rows["capped"]["steps"] == 2
    assert (repo / "reply.txt").read_text() == "got it\n"


def test_with_max_depth_2_a_child_spawns_its_own_children(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    model = SwarmModel({
        "root": steps(spawn(agent("mid", "delegate"))),
        "mid": steps(spawn(agent("leaf", "write leaf.txt")), [call("write_file", path="mid.txt", content="mid\n")]),
        "leaf": steps([call("write_file", path="leaf.txt", content="leaf\n")]),
    })
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, "local", env=cli_env(tmp_path, KIMI_CODE_MAX_DEPTH="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (repo / "leaf.txt").read_text() == "leaf\n" and (repo / "mid.txt").read_text() == "mid\n"
    mid_tools = {t["function"]["name"] for t in json.loads(model.prompts["mid"][1])}
    leaf_tools = {t["function"]["name"] for t in json.loads(model.prompts["leaf"][1])}
    assert "spawn_agents" in mid_tools and "spawn_agents" not in leaf_tools
    leaf_row = json.loads(tool_results(model.bodies["mid"], "spawn_agents")[0])["agents"][0]
    assert leaf_row["status"] == "success" and leaf_row["merge"].startswith("merged")
    meta = json.loads((tmp_path / "state" / leaf_row["session_id"] / "meta.json").read_text())
    assert meta["parent"] == summary["agents"][0]["session_id"] and meta["root"] == summary["session_id"]


def test_max_agents_queues_the_rest_in_order_and_a_queued_child_can_be_cancelled(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    order: list[str] = []

    def worker(turn: int, messages: list) -> Turn:
        from swarm_model import tag_of as tag

        if turn == 0:
            order.append(tag(messages))
            return Turn(tool_calls=[call("shell", command="echo hi")], delay=0.3)
        return Turn(tool_calls=[call("finish", summary="done")])

    model = SwarmModel({
        "root": steps(spawn(*(agent(f"q{i}", "work") for i in range(4)), wait=False),
                      [call("cancel_agents", ids=["q3"])], [call("wait_agents")]),
    }, default=worker)
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, "local", env=cli_env(tmp_path, KIMI_CODE_MAX_AGENTS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert order == ["q0", "q1", "q2"]  # one at a time, in spawn order; q3 never started
    rows = {r["name"]: r for r in summary["agents"]}
    assert rows["q3"]["status"] == "cancelled" and "before it started" in rows["q3"]["summary"]
    assert not (tmp_path / "state" / rows["q3"]["session_id"]).exists()
    assert [rows[f"q{i}"]["status"] for i in range(3)] == ["success"] * 3


def test_a_tree_wide_max_steps_and_a_childs_own_max_cost(tmp_path: Path) -> None:
    from kimi_code.agent.config import model_info

    per_request = model_info("kimi-k2.6").cost(100_000, 1_000, 0)
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})

    def root(turn: int, messages: list) -> Turn:
        if turn == 0:
            return _priced_turn(spawn(agent("thrifty", "count", max_cost=round(per_request * 2.5, 6)),
                                      *(agent(f"n{i}", "count") for i in range(3))))
        return _priced_turn([call("finish", summary="done")])

    model = SwarmModel({"root": root}, default=lambda turn, messages: _priced_turn(
        [call("shell", command=f"echo {turn}")]))
    with FakeKimi(model, api_key=KEY) as fake:
        proc, summary = run_root(repo, tmp_path, fake, "local", "--max-steps", "20")
    assert proc.returncode == 3, proc.stderr[-3000:]
    rows = {r["name"]: r for r in summary["agents"]}
    assert rows["thrifty"]["status"] == "limit" and rows["thrifty"]["steps"] == 3  # its own cap: 2.5 requests
    assert all(rows[f"n{i}"]["status"] == "limit" for i in range(3))
    # Every model turn of the tree counts; no request beyond the cap was sent.
    assert summary["steps"] + sum(r["steps"] for r in rows.values()) == 20 == len(model.answered)
