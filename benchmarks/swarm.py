"""Swarm benchmark: a root that spawns N children (default 300, 16 running at once), each running
at least 13 steps (about 4,000 steps in all), through the real CLI against the fake Kimi server,
with an instant model or ``--model-latency``, in the Docker sandbox (or ``--sandbox none``).

Each child step is a shell ``echo`` (a write-class call: every step also takes the child's
checkpoint snapshot in its worktree); the root spawns the children with ``template`` + ``items``
and waits for them.

Prints:

- wall time and child steps per second;
- harness overhead per child step on the critical path (the fake server sent a child's answer ->
  that child's next request arrives), by quarter of the run, against the same figure for one
  single agent doing the same steps alone (``--single-steps``);
- peak RSS of the CLI process (its rusage from wait4);
- time to create a worktree child: ``git worktree add`` + its base snapshot (measured directly,
  median of 20), and a child's session start to its first request (from the logs);
- resume after a SIGKILL in the middle: a second swarm killed once half of its children ended,
  then ``kimi-code resume ROOT``: process start to its first model request, and the resumed run
  to the end (every child must end in success with its work merged).

    python benchmarks/swarm.py [--children 300] [--steps 13] [--running 16] [--sandbox docker|none]
                               [--model-latency SECONDS] [--single-steps 200] [--no-kill]

Goals (issue 17): no per-step slowdown with the size of the tree; memory bounded by the running
children; peak RSS <= 600 MB at 300 children with 16 running; resume to first request <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from long_session import (  # noqa: E402 - the timed fake server and helpers of the long-session benchmark
    DEFAULT_IMAGE, KEY, Request, _mark, cli_env, make_repo as _make_repo, median_ms, p95_ms, run_measured, sandbox_args,
    start_timed)

from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn  # noqa: E402

def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    return _make_repo(path)


_ITEM = re.compile(r"\[bench-child (\d+)\]")


class Responder:
    """The root spawns ``children`` children, then finishes; child i runs ``steps`` shell steps,
    then finishes; ``single`` (the baseline) runs ``single_steps`` steps alone."""

    def __init__(self, children: int, steps: int, single_steps: int, latency: float) -> None:
        self.children, self.steps, self.single_steps, self.latency = children, steps, single_steps, latency
        self.first_request_at: float | None = None
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Turn:
        with self.lock:
            if self.first_request_at is None:
                self.first_request_at = time.monotonic()
        messages = body["messages"]
        task = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        done = sum(1 for m in messages if m.get("role") == "assistant")
        found = _ITEM.search(task)
        if found:
            who, limit = int(found.group(1)), self.steps
        elif "bench: single" in task:
            who, limit = -1, self.single_steps
        else:  # the root
            _mark("root", done + 1)
            if done == 0:
                return Turn(tool_calls=[ToolCallSpec("spawn_agents", {
                    "template": "[bench-child {item}] run `echo` many times",
                    "items": [str(i) for i in range(self.children)]})])
            return Turn(tool_calls=[ToolCallSpec("finish", {"summary": "all children ended"})])
        _mark(f"c{who}", done + 1)
        if done >= limit:
            return Turn(tool_calls=[ToolCallSpec("finish", {"summary": f"child {who}: {limit} steps"})],
                        delay=self.latency)
        command = f"echo step {done + 1} >> out-{who}.txt"  # each child changes its own file: a real merge
        return Turn(reasoning=f"step {done + 1}", tool_calls=[ToolCallSpec("shell", {"command": command})],
                    delay=self.latency)


def overheads(log: list[Request]) -> list[tuple[float, float]]:
    """(arrival, overhead) per step request that follows the same session's previous step request."""
    by: dict[str, list[Request]] = {}
    for r in log:
        if r.kind != "?":
            by.setdefault(r.kind, []).append(r)
    rows = []
    for reqs in by.values():
        reqs.sort(key=lambda r: r.arrived)
        for prev, cur in zip(reqs, reqs[1:]):
            if cur.step == prev.step + 1 and prev.done:
                rows.append((cur.arrived, cur.arrived - prev.done))
    rows.sort()
    return rows


def run_cpu(cmd: list[str], env: dict[str, str], workdir: Path) -> tuple[int, str, str, float, float, float]:
    """``run_measured`` plus the CPU seconds (user + system) the CLI process used."""
    out_path, err_path = workdir / "cpu.stdout", workdir / "cpu.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    return (os.waitstatus_to_exitcode(status), out_path.read_text(), err_path.read_text(), wall,
            usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kimi_code.agent.cli", *args]


def worktree_creation_ms(root: Path, n: int = 20) -> float:
    from kimi_code.agent import worktrees
    from kimi_code.agent.checkpoints import Checkpointer

    repo = make_repo(root / "wt-bench")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    times = []
    for i in range(n):
        t0 = time.monotonic()
        path = worktrees.create_worktree(repo, f"bench-a{i}", head)
        Checkpointer(path, f"bench-a{i}").base()
        times.append(time.monotonic() - t0)
    return statistics.median(times) * 1000


def child_start_ms(state: Path, root_id: str, arrivals: dict[str, float]) -> float:
    """Median of child session creation (its first event's time) to its first request (wall clock:
    both from time.time on the same machine)."""
    gaps = []
    for d in state.iterdir():
        if not d.name.startswith(root_id + "-a"):
            continue
        first = json.loads((d / "events.jsonl").open().readline())
        task = first["payload"]["task"]
        found = _ITEM.search(task)
        if found and f"c{found.group(1)}" in arrivals:
            gaps.append(arrivals[f"c{found.group(1)}"] - first["time"])
    return statistics.median(gaps) * 1000 if gaps else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=300)
    ap.add_argument("--steps", type=int, default=13, help="shell steps per child (then finish)")
    ap.add_argument("--running", type=int, default=16, help="max_agents: children running at once")
    ap.add_argument("--sandbox", choices=("none", "docker"), default="docker")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--model-latency", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--single-steps", type=int, default=200, help="steps of the single-agent baseline (0: skip)")
    ap.add_argument("--no-kill", action="store_true", help="skip the SIGKILL + resume run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**cli_env(root), "KIMI_CODE_MAX_AGENTS": str(args.running)}
        responder = Responder(args.children, args.steps, args.single_steps, args.model_latency)
        print(f"swarm: {args.children} children x {args.steps} steps (+finish), {args.running} running, "
              f"--sandbox {args.sandbox}, model latency {args.model_latency:g} s; load {os.getloadavg()[0]:.2f}")
        with FakeKimi(responder, api_key=KEY, max_recorded=5) as fake:
            log = start_timed(fake)
            base = ["--base-url", fake.base_url, *sandbox_args(args.sandbox, args.image), "--output", "json"]

            single_ms = float("nan")
            if args.single_steps:
                repo1 = make_repo(root / "single")
                mark = len(log)
                code, out, err, _, _, cpu1 = run_cpu(cli("run", "--repo", str(repo1), *base, "bench: single"), env, root)
                if code != 0:
                    raise SystemExit(f"single run failed: {err[-3000:]}")
                single = overheads(log[mark:])
                single_ms = median_ms([o for _, o in single])
                single_cpu = cpu1 / max(1, args.single_steps) * 1000
                print(f"single agent, {args.single_steps} steps: harness overhead per step median {single_ms:.2f} ms, "
                      f"p95 {p95_ms([o for _, o in single]):.2f} ms; CLI CPU {single_cpu:.2f} ms per step "
                      "(start-up included)")

            repo = make_repo(root / "swarm")
            mark = len(log)
            code, out, err, wall, rss, cpu = run_cpu(cli("run", "--repo", str(repo), *base, "bench: a swarm"), env, root)
            if code != 0:
                raise SystemExit(f"swarm run failed ({code}): {err[-3000:]}")
            summary = json.loads(out.strip().splitlines()[-1])
            rows = overheads([r for r in log[mark:] if r.kind.startswith("c")])
            agents = summary.get("agents", [])
            ok = sum(1 for a in agents if a["status"] == "success" and a["merge"].startswith("merged"))
            child_steps = sum(a["steps"] for a in agents)
            merged = sum(1 for f in repo.glob("out-*.txt") if len(f.read_text().splitlines()) == args.steps)
            print(f"swarm: {wall:.1f} s wall, {child_steps} child steps ({child_steps / wall:.1f} steps/s); "
                  f"{ok}/{len(agents)} children succeeded and were merged ({merged} files complete in the root)")
            swarm_cpu = cpu / max(1, child_steps) * 1000
            print(f"  CLI CPU per child step: {swarm_cpu:.2f} ms"
                  + (f" ({swarm_cpu / single_cpu:.2f}x the single agent's)" if args.single_steps else "")
                  + " -- the per-step cost; the latency per step below includes waiting for the CPU")
            quarter = max(1, len(rows) // 4)
            for q in range(4):
                sel = [o for _, o in rows[q * quarter:(q + 1) * quarter]]
                print(f"  harness overhead per child step, quarter {q + 1}: median {median_ms(sel):7.2f} ms, "
                      f"p95 {p95_ms(sel):7.2f} ms")
            all_ms = median_ms([o for _, o in rows])
            print(f"  all child steps: median {all_ms:.2f} ms"
                  + (f" ({all_ms / single_ms:.2f}x the single agent's {single_ms:.2f} ms)" if single_ms == single_ms else ""))
            print(f"peak RSS of the CLI: {rss:.0f} MB (goal <= 600)")
            total = summary.get("agents_total", {})
            print(f"prompt cache across the swarm: cached share {total.get('cached_share', 0):.1%}; children spent "
                  f"${total.get('cost', 0):.4f}, the cache saved them ${total.get('cost_saved_by_cache', 0):.4f}")
            firsts: dict[str, float] = {}
            for r in log[mark:]:
                firsts.setdefault(r.kind, time.time() - (time.monotonic() - r.arrived))
            print(f"worktree child creation (git worktree add + base snapshot, median of 20): "
                  f"{worktree_creation_ms(root):.1f} ms; child session start -> first request: "
                  f"{child_start_ms(root / 'state', summary['session_id'], firsts):.1f} ms (median)")

            if not args.no_kill:
                repo2 = make_repo(root / "killed")
                proc = subprocess.Popen(cli("run", "--repo", str(repo2), *base, "bench: a swarm, killed"), env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                state = root / "state"
                root_id = None
                while proc.poll() is None:
                    time.sleep(0.2)
                    if root_id is None:
                        ids = [d.name for d in state.iterdir() if d.name not in (summary["session_id"],)
                               and not d.name.startswith(".") and "-a" not in d.name[16:]
                               and (d / "events.jsonl").exists()
                               and "killed" in (d / "events.jsonl").open().readline()]
                        root_id = ids[0] if ids else None
                        continue
                    ended = (state / root_id / "events.jsonl").read_text().count('"type":"child_ended"')
                    if ended >= args.children // 2:
                        proc.send_signal(signal.SIGKILL)
                        break
                proc.wait()
                if root_id is None:
                    raise SystemExit("the killed swarm's root session was not found")
                responder.first_request_at = None
                t0 = time.monotonic()
                code, out, err, wall2, rss2 = run_measured(cli("resume", root_id, *base[:2], "--output", "json"), env, root)
                first = (responder.first_request_at or time.monotonic()) - t0
                if code != 0:
                    raise SystemExit(f"resume failed ({code}): {err[-3000:]}")
                resumed = json.loads(out.strip().splitlines()[-1])
                good = sum(1 for a in resumed.get("agents", []) if a["status"] == "success"
                           and a["merge"].startswith("merged"))
                print(f"SIGKILL after {args.children // 2} children ended; resume to first model request: {first:.2f} s "
                      f"(goal <= 3); resumed run to the end {wall2:.1f} s, peak RSS {rss2:.0f} MB; "
                      f"{good}/{len(resumed.get('agents', []))} children succeeded and were merged")


if __name__ == "__main__":
    main()
