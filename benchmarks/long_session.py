"""Long-session benchmark: 5,000 steps of the real CLI against the fake Kimi server.

Instant model responses, one cheap read-only tool call per step, compaction triggered several
times. Prints harness overhead per step (median ms) around steps 100, 1,000 and 5,000, peak RSS of
the CLI process, the events file size, and how long `kimi-code resume` takes to rebuild the
session at the end (process start to its first model request).

    python benchmarks/long_session.py [--steps 5000]

Targets (issue 6): overhead at step 5,000 <= 1.3x that at step 100; peak RSS < 300 MB; resume < 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

KEY = "sk-bench"


def make_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    # A file whose content makes each step add ~700 tokens of context.
    (repo / "notes.txt").write_text("\n".join(f"line {i}: " + "lorem ipsum dolor sit amet " * 4 for i in range(25)))
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init"],
                   check=True)
    return repo


class Responder:
    """Step k reads notes.txt; after `steps` steps, finish. Summary requests get a short summary."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.done = 0
        self.finish_now = False
        self.first_request_at: float | None = None
        self.compactions = 0

    def __call__(self, body: dict) -> Turn:
        if self.first_request_at is None:
            self.first_request_at = time.monotonic()
        if not body.get("tools"):
            self.compactions += 1
            return Turn(content="Summary: the agent has been reading notes.txt repeatedly; continue.")
        self.done += 1
        if self.done >= self.steps or self.finish_now:
            return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "benchmark done"})])
        return Turn(reasoning=f"step {self.done}: read the notes again",
                    tool_calls=[ToolCallSpec("read_file", {"path": "notes.txt", "offset": 1 + self.done % 2})])


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (for profiling)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.keep:
            root = args.keep
            root.mkdir(parents=True, exist_ok=False)
        repo = make_repo(root)
        state_dir = root / "state"
        responder = Responder(args.steps)
        env = {**os.environ, "MOONSHOT_API_KEY": KEY, "KIMI_CODE_STATE_DIR": str(state_dir),
               "KIMI_CODE_CONFIG": str(root / "none.toml")}
        with FakeKimi(responder, api_key=KEY, max_recorded=5) as fake:
            cmd = [sys.executable, "-m", "kimi_code.agent.cli", "run", "--repo", str(repo), "--base-url",
                   fake.base_url, "--sandbox", "none", "--output", "json", "--max-steps", str(args.steps + 10),
                   "bench: read notes.txt many times"]
            t0 = time.monotonic()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-4000:])
                raise SystemExit(f"run failed with exit code {proc.returncode}")
            peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            session_dir = state_dir / summary["session_id"]
            events_path = session_dir / "events.jsonl"
            rows = step_times(events_path)
            gaps = [g for _, g, _ in rows]

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
            t1 = time.monotonic()
            proc2 = subprocess.Popen([sys.executable, "-m", "kimi_code.agent.cli", "resume", summary["session_id"],
                                      "--continue", "one more check", "--base-url", fake.base_url, "--output",
                                      "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            out, err = proc2.communicate()
            resume_s = (responder.first_request_at or time.monotonic()) - t1
            if proc2.returncode != 0:
                print(out[-2000:], err[-4000:])
            steps_run = summary["steps"]
            print(f"steps: {steps_run} in {wall:.1f} s wall; compactions: {summary['compactions']} "
                  f"(summary requests served: {responder.compactions})")
            for n in (100, 1000, min(5000, len(gaps) - 1)):
                print(f"step time around step {n:>5}: {around(n):7.2f} ms (median of 100 steps)")
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
