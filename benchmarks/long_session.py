"""Long-session benchmark: thousands of steps of the real CLI against the fake Kimi server.

One trivial tool call per step (by default a shell ``echo``, a write-class call, so every step
also takes the step's checkpoint snapshot; ``--tool read_file`` reads a file instead and adds
~700 tokens of context per step so compaction triggers several times). Model answers come at once,
or after ``--model-latency`` seconds.

Prints:

- harness overhead on the critical path: the time from the fake server having *sent all of* its
  answer to a step request to the next step request arriving, i.e. everything the CLI does between
  two model calls (parsing the stream, the tool call, the snapshot, the durable events, building
  and sending the next request). The model latency is outside that window by construction (it is
  slept before the answer is sent), so nothing has to be subtracted; the step's wall time minus the
  latency is printed too as a cross-check. Medians around steps ~100 and ~1,000 and over the last
  1,000 steps (the last third for shorter runs);
- step time from the events log (tool result to tool result, model round trip included), and the
  same by request size, first vs last 1,000 steps;
- peak RSS of the CLI process (its own rusage, from wait4), the events file size, the cached share;
- resume time: process start of ``kimi-code resume`` to its first model request arriving.

    python benchmarks/long_session.py [--steps 5000] [--sandbox none|docker] [--image IMAGE]
                                      [--model-latency SECONDS] [--tool shell|read_file]

Targets (issue 6): overhead at step 5,000 <= 1.3x that at step 100; peak RSS < 300 MB; resume < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kimi_code.agent import fake_kimi
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

KEY = "sk-bench"
DEFAULT_IMAGE = os.environ.get("KIMI_CODE_TEST_IMAGE", "kimi-code-sandbox:offline")


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    # A file whose content makes each read_file step add ~700 tokens of context.
    (repo / "notes.txt").write_text("\n".join(f"line {i}: " + "lorem ipsum dolor sit amet " * 4 for i in range(25)))
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"],
                   check=True)
    return repo


def cli_env(root: Path) -> dict[str, str]:
    """The environment the tests give the CLI (tests/helpers.py), without the replay check."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))}
    config = root / "empty-config.toml"  # an existing empty file: the user's config is not read
    config.touch()
    env.update({"MOONSHOT_API_KEY": KEY, "KIMI_CODE_STATE_DIR": str(root / "state"), "KIMI_CODE_CONFIG": str(config)})
    return env


def sandbox_args(kind: str, image: str) -> list[str]:
    return ["--sandbox", "docker", "--image", image] if kind == "docker" else ["--sandbox", "none"]


# -- server-side timing ------------------------------------------------------------------------
@dataclass
class Request:
    arrived: float  # monotonic: the request's headers were parsed (the handler started)
    done: float = 0.0  # monotonic: the whole answer was written to the socket (0 until then)
    kind: str = "?"  # step | summary | other
    step: int = 0  # for step requests: which step it asks for (1-based)
    path: str = ""


_current = threading.local()


class TimedHandler(fake_kimi._Handler):
    """The fake server's handler, timing each POST from arrival to the last byte written.

    ``wfile`` is unbuffered (socketserver's default), so when ``do_POST`` returns every byte of
    the answer has been handed to the kernel: ``done`` is when the response was fully sent.
    """

    log: list[Request]

    def do_POST(self) -> None:  # noqa: N802
        rec = Request(arrived=time.monotonic(), path=self.path)
        if self.path.split("?", 1)[0].rstrip("/").endswith("/chat/completions"):
            self.server.timed_log.append(rec)  # type: ignore[attr-defined]  # seen on arrival
        _current.rec = rec
        try:
            super().do_POST()
            self.wfile.flush()
        finally:
            rec.done = time.monotonic()
            _current.rec = None


def start_timed(fake: FakeKimi) -> list[Request]:
    """Swap the running server's handler for the timed one; returns the (growing) request log."""
    server = fake._server
    assert server is not None, "start the FakeKimi first"
    log: list[Request] = []
    server.timed_log = log  # type: ignore[attr-defined]
    server.RequestHandlerClass = TimedHandler
    return log


def _mark(kind: str, step: int = 0) -> None:
    rec = getattr(_current, "rec", None)
    if rec is not None:
        rec.kind, rec.step = kind, step


class Responder:
    """Step k makes one cheap tool call; after ``steps`` steps (or once ``finish_now``), finish.
    Summary (compaction) requests get a short summary at once; step requests wait ``latency``."""

    def __init__(self, steps: int, tool: str = "shell", latency: float = 0.0, finish: bool = True) -> None:
        self.steps = steps
        self.tool = tool
        self.latency = latency
        self.finish = finish
        self.done = 0
        self.finish_now = False
        self.first_request_at: float | None = None
        self.compactions = 0

    def call(self, n: int) -> ToolCallSpec:
        if self.tool == "read_file":
            return ToolCallSpec("read_file", {"path": "notes.txt", "offset": 1 + n % 2})
        return ToolCallSpec("shell", {"command": f"echo step {n}"})

    def __call__(self, body: dict) -> Turn:
        if self.first_request_at is None:
            self.first_request_at = time.monotonic()
        if not body.get("tools"):
            self.compactions += 1
            _mark("summary")
            return Turn(content=f"Summary: the agent has been running `{self.tool}` steps repeatedly; continue.")
        self.done += 1
        _mark("step", self.done)
        if self.finish_now or (self.finish and self.done >= self.steps):
            return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "benchmark done"})],
                        delay=self.latency)
        return Turn(reasoning=f"step {self.done}: once more", tool_calls=[self.call(self.done)],
                    delay=self.latency)


def critical_path(log: list[Request], latency: float) -> list[tuple[int, float, float]]:
    """(step, overhead, step wall time - latency) for each step request that follows a step request:
    overhead = arrival of the request for step k - the moment the answer for step k-1 was sent."""
    rows = []
    chat = sorted(log, key=lambda r: r.arrived)
    for prev, cur in zip(chat, chat[1:]):
        if prev.kind == "step" and cur.kind == "step" and cur.step == prev.step + 1 and prev.done:
            rows.append((cur.step, cur.arrived - prev.done, cur.arrived - prev.arrived - latency))
    return rows


def step_times(events_path: Path) -> list[tuple[int, float, int]]:
    """(step, seconds since the previous tool result, prompt tokens of the step's request):
    one full harness step, model round trip on the local fake server included."""
    rows, last, prompt = [], None, 0
    with open(events_path) as fh:
        for line in fh:
            e = json.loads(line)
            if e["type"] == "assistant":
                prompt = e["payload"]["usage"]["prompt_tokens"]
            elif e["type"] == "tool_result":
                if last is not None:
                    rows.append((e["step"], e["time"] - last, prompt))
                last = e["time"]
    return rows


def run_measured(cmd: list[str], env: dict[str, str], workdir: Path) -> tuple[int, str, str, float, float]:
    """Run ``cmd``; (exit code, stdout, stderr, wall seconds, peak RSS MB of that process)."""
    out_path, err_path = workdir / "cli.stdout", workdir / "cli.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out_path.read_text(), err_path.read_text(), wall, usage.ru_maxrss / 1024


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else float("nan")


def p95_ms(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--sandbox", choices=("none", "docker"), default="none")
    ap.add_argument("--image", default=DEFAULT_IMAGE, help="sandbox image for --sandbox docker")
    ap.add_argument("--model-latency", type=float, default=0.0, metavar="SECONDS",
                    help="the fake server waits this long before answering each step request")
    ap.add_argument("--tool", choices=("shell", "read_file"), default="shell",
                    help="each step's call: shell `echo` (write-class: takes a snapshot) or read_file")
    ap.add_argument("--last", type=int, default=1000,
                    help="the 'last N steps' window (the last third of the run when the run is too short)")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (for profiling)")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.keep:
            root = args.keep
            root.mkdir(parents=True, exist_ok=False)
        repo = make_repo(root)
        state_dir = root / "state"
        responder = Responder(args.steps, args.tool, args.model_latency)
        env = cli_env(root)
        with FakeKimi(responder, api_key=KEY, max_recorded=5) as fake:
            log = start_timed(fake)
            task = ("bench: run `echo` many times" if args.tool == "shell" else "bench: read notes.txt many times")
            cmd = [sys.executable, *os.environ.get("BENCH_PY_ARGS", "").split(), "-m", "kimi_code.agent.cli", "run", "--repo", str(repo), "--base-url",
                   fake.base_url, *sandbox_args(args.sandbox, args.image), "--output", "json",
                   "--max-steps", str(args.steps + 10), task]
            code, stdout, stderr, wall, peak_rss_mb = run_measured(cmd, env, root)
            if code != 0:
                print(stdout[-2000:], stderr[-4000:])
                raise SystemExit(f"run failed with exit code {code}")
            summary = json.loads(stdout.strip().splitlines()[-1])
            session_dir = state_dir / summary["session_id"]
            events_path = session_dir / "events.jsonl"
            rows = step_times(events_path)
            gaps = [g for _, g, _ in rows]
            crit = critical_path(log, args.model_latency)

            def around(n: int) -> float:
                lo, hi = max(0, n - 50), min(len(gaps), n + 50)
                return statistics.median(gaps[lo:hi]) * 1000 if hi > lo else float("nan")

            # Step time grows with the context sent (JSON of the request on both ends), which
            # compaction keeps bounded; the question is whether it grows with the session's length.
            # So compare early and late steps whose requests had the same size.
            band = 40_000
            early: dict[int, list[float]] = {}
            late: dict[int, list[float]] = {}
            for step, gap, prompt in rows:
                if step <= 1000:
                    early.setdefault(prompt // band, []).append(gap * 1000)
                elif step > len(rows) - 1000:
                    late.setdefault(prompt // band, []).append(gap * 1000)
            bands = [(b, statistics.median(early[b]), statistics.median(late[b])) for b in sorted(early)
                     if b in late and len(early[b]) >= 20 and len(late[b]) >= 20]

            # Resume: reopen the finished session with --continue so it rebuilds and asks the model once.
            responder.first_request_at = None
            responder.finish_now = True
            mark = len(log)
            t1 = time.monotonic()
            proc2 = subprocess.Popen([sys.executable, "-m", "kimi_code.agent.cli", "resume", summary["session_id"],
                                      "--continue", "one more check", "--base-url", fake.base_url, "--output",
                                      "json", *(["--image", args.image] if args.sandbox == "docker" else [])],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = proc2.communicate()
            arrivals = [r.arrived for r in log[mark:]]
            resume_s = (min(arrivals) if arrivals else time.monotonic()) - t1
            if proc2.returncode != 0:
                print(out[-2000:], err[-4000:])
        load_after = os.getloadavg()

        steps_run = summary["steps"]
        latency_note = f", model latency {args.model_latency:g} s" if args.model_latency else ""
        print(f"{steps_run} steps ({args.tool}, --sandbox {args.sandbox}"
              f"{' ' + args.image if args.sandbox == 'docker' else ''}{latency_note}) in {wall:.1f} s wall; "
              f"compactions: {summary['compactions']} (summary requests served: {responder.compactions})")
        print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)")

        # The critical path, from the server's side.
        last = args.last if len(crit) >= args.last + 150 else max(1, len(crit) // 3)
        windows: list[tuple[str, list[tuple[int, float, float]]]] = []
        for n in (100, 1000):
            if n + 50 <= len(crit) + 1:
                windows.append((f"around step {n:>5} (steps {n - 50}-{n + 49})",
                                [r for r in crit if n - 50 <= r[0] < n + 50]))
        if crit:
            windows.append((f"last {last} steps ({crit[-last][0]}-{crit[-1][0]})", crit[-last:]))
            windows.append((f"all {len(crit)} steps", crit))
        print("harness overhead on the critical path (answer fully sent -> next request arrives):")
        for name, sel in windows:
            over = [o for _, o, _ in sel]
            print(f"  {name:36} median {median_ms(over):8.2f} ms, p95 {p95_ms(over):8.2f} ms  "
                  f"(step wall time - latency: median {median_ms([w for _, _, w in sel]):8.2f} ms)")
        early_sel = [o for s_, o, _ in crit if 50 <= s_ < 150]
        if early_sel and len(crit) > 150:
            print(f"  last {last} / around step 100: "
                  f"{median_ms([o for _, o, _ in crit[-last:]]) / median_ms(early_sel):.2f}x")

        for n in sorted({n for n in (100, 1000) if n + 50 <= len(gaps)} | {min(5000, len(gaps) - 1)}):
            print(f"step time around step {n:>5}: {around(n):7.2f} ms (median of 100 steps, events log)")
        print("step time by request size, first 1,000 steps vs last 1,000 steps (median ms):")
        ratios = []
        for b, e_ms, l_ms in bands:
            ratios.append(l_ms / e_ms)
            print(f"  {b * band // 1000:>3}k-{(b + 1) * band // 1000}k tokens: {e_ms:6.2f} -> {l_ms:6.2f}  "
                  f"({l_ms / e_ms:.2f}x)")
        if ratios:
            print(f"late/early at equal request size: {statistics.median(ratios):.2f}x (target <= 1.3)")
        print(f"peak RSS of the CLI: {peak_rss_mb:.0f} MB (target < 300)")
        print(f"events file: {events_path.stat().st_size / 1e6:.1f} MB")
        print(f"resume rebuild (process start to first model request): {resume_s:.2f} s (target < 2)")
        print(f"cached share: {summary['tokens']['cached_share']:.1%}")


if __name__ == "__main__":
    main()
