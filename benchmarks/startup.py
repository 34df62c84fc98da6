"""Startup latency of the CLI: how long before it is useful.

    python benchmarks/startup.py [-n 5] [--image IMAGE] [--resume-steps 2000] [--skip docker]

Times, from process spawn (``sys.executable -m kimi_code.agent.cli``, as tests/helpers.py runs it):

- ``kimi-code --help``: to process exit;
- ``kimi-code run`` with ``--sandbox none`` and ``--sandbox docker``: to the new session's first
  event on disk (its ``events.jsonl`` under ``KIMI_CODE_STATE_DIR`` gains its first line; the file
  system is polled every 2 ms), also to the first model request and to exit (the fake model
  finishes at once);
- ``kimi-code resume --last`` of a 2,000-step session (built first by a fast run against the fake
  server, ``--sandbox none``, one shell ``echo`` per step, stopped by ``--max-steps``): to the fake
  server receiving the first request; the process is killed right after;
- ``kimi-code sessions`` (listing that state directory): to process exit.

Each is repeated ``-n`` times; medians (and min/max) are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.long_session import (  # noqa: E402
    DEFAULT_IMAGE,
    KEY,
    Request,
    Responder,
    cli_env,
    make_repo,
    sandbox_args,
    start_timed,
)
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn  # noqa: E402

POLL = 0.002


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kimi_code.agent.cli", *args]


def env_for(root: Path, state_dir: Path) -> dict[str, str]:
    env = cli_env(root)
    env["KIMI_CODE_STATE_DIR"] = str(state_dir)
    return env


def time_to_exit(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr.decode("utf-8", "replace")[-2000:])
        raise SystemExit(f"{' '.join(cmd[2:])} failed with exit code {proc.returncode}")
    return elapsed


def first_event_path(state_dir: Path) -> Path | None:
    try:
        for session in os.scandir(state_dir):
            path = Path(session.path) / "events.jsonl"
            try:
                if path.stat().st_size > 0 and b"\n" in path.read_bytes()[:1 << 16]:
                    return path
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return None


class Finisher:
    """Every chat request is answered with a finish call at once."""

    def __call__(self, body: dict) -> Turn:
        if not body.get("tools"):
            return Turn(content="Summary.")
        return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "startup bench"})])


class Holder:
    """Answers after ``hold`` seconds: the client is killed before it hears back."""

    def __init__(self, hold: float = 30.0) -> None:
        self.hold = hold

    def __call__(self, body: dict) -> Turn:
        return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "late"})], delay=self.hold)


class Switch:
    """A responder that can be swapped between measurements."""

    def __init__(self) -> None:
        self.target: Callable[[dict], Turn] = Finisher()

    def __call__(self, body: dict) -> Turn:
        return self.target(body)


def first_request_after(log: list[Request], mark: int) -> float | None:
    times = [r.arrived for r in log[mark:]]
    return min(times) if times else None


def new_session(fake: FakeKimi, log: list[Request], root: Path, repo: Path, kind: str, image: str,
                i: int) -> tuple[float, float, float]:
    """(first event on disk, first model request, exit), seconds from spawn, for one `run`."""
    state_dir = root / f"state-new-{kind}-{i}"
    cmd = cli("run", "--repo", str(repo), "--base-url", fake.base_url, *sandbox_args(kind, image),
              "--output", "json", "--max-steps", "5", "startup bench: finish at once")
    mark = len(log)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env_for(root, state_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    first_event = None
    while first_event is None:
        if first_event_path(state_dir) is not None:
            first_event = time.monotonic() - t0
            break
        if proc.poll() is not None:
            break
        time.sleep(POLL)
    out, err = proc.communicate(timeout=300)
    exited = time.monotonic() - t0
    if proc.returncode != 0 or first_event is None:
        sys.stderr.write(err.decode("utf-8", "replace")[-2000:])
        raise SystemExit(f"run --sandbox {kind} failed with exit code {proc.returncode}")
    first_req = first_request_after(log, mark)
    return first_event, (first_req - t0) if first_req is not None else float("nan"), exited


def build_session(fake: FakeKimi, switch: Switch, root: Path, repo: Path, state_dir: Path, steps: int) -> str:
    switch.target = Responder(steps, "shell", 0.0, finish=False)
    cmd = cli("run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output", "json",
              "--max-steps", str(steps), "startup bench: a long session to resume")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env_for(root, state_dir), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode not in (0, 3):  # 3: stopped by --max-steps, which is the point
        sys.stderr.write(proc.stderr[-2000:])
        raise SystemExit(f"building the {steps}-step session failed with exit code {proc.returncode}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    events = state_dir / summary["session_id"] / "events.jsonl"
    print(f"built a {summary['steps']}-step session in {time.monotonic() - t0:.1f} s "
          f"(events file {events.stat().st_size / 1e6:.1f} MB, {summary['compactions']} compactions)",
          flush=True)
    return str(summary["session_id"])


def resume_once(fake: FakeKimi, log: list[Request], root: Path, state_dir: Path) -> float:
    """Seconds from spawning `resume --last` to its first model request; then kill it."""
    mark = len(log)
    t0 = time.monotonic()
    proc = subprocess.Popen(cli("resume", "--last", "--base-url", fake.base_url, "--output", "json"),
                            env=env_for(root, state_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = t0 + 120
        while time.monotonic() < deadline:
            first = first_request_after(log, mark)
            if first is not None:
                return first - t0
            if proc.poll() is not None:
                err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
                sys.stderr.write(err[-2000:])
                raise SystemExit(f"resume --last exited with {proc.returncode} before asking the model")
            time.sleep(POLL)
        raise SystemExit("resume --last did not ask the model within 120 s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def summarize(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"{statistics.median(values) * 1000:8.1f} ms median  "
            f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={len(values)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5, help="repetitions of each measurement")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("--resume-steps", type=int, default=2000, help="steps of the session to resume")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: help,none,docker,resume,sessions")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    load_before = os.getloadavg()
    results: list[tuple[str, list[float]]] = []

    with tempfile.TemporaryDirectory(prefix="kimi-startup-") as tmp:
        root = Path(tmp)
        repo = make_repo(root)
        switch = Switch()
        with FakeKimi(switch, api_key=KEY, max_recorded=5) as fake:
            log = start_timed(fake)
            if "help" not in skip:
                env = env_for(root, root / "state-help")
                results.append(("--help: to exit", [time_to_exit(cli("--help"), env) for _ in range(args.n)]))
                print(f"{results[-1][0]:48} {summarize(results[-1][1])}", flush=True)
            for kind in ("none", "docker"):
                if kind in skip:
                    continue
                switch.target = Finisher()
                runs = [new_session(fake, log, root, repo, kind, args.image, i) for i in range(args.n)]
                for j, what in enumerate(("first event on disk", "first model request", "exit")):
                    results.append((f"run --sandbox {kind}: to {what}", [r[j] for r in runs]))
                    print(f"{results[-1][0]:48} {summarize(results[-1][1])}", flush=True)
            state_dir = root / "state-long"
            if not {"resume", "sessions"} <= skip:
                build_session(fake, switch, root, repo, state_dir, args.resume_steps)
            if "resume" not in skip:
                switch.target = Holder()
                results.append((f"resume --last ({args.resume_steps} steps): to first request",
                                [resume_once(fake, log, root, state_dir) for _ in range(args.n)]))
                print(f"{results[-1][0]:48} {summarize(results[-1][1])}", flush=True)
            if "sessions" not in skip:
                env = env_for(root, state_dir)
                results.append((f"sessions (1 session of {args.resume_steps} steps): to exit",
                                [time_to_exit(cli("sessions"), env) for _ in range(args.n)]))
                print(f"{results[-1][0]:48} {summarize(results[-1][1])}", flush=True)
    load_after = os.getloadavg()

    print()
    print(f"startup, from process spawn, median of {args.n} (python {sys.version.split()[0]}, image {args.image})")
    width = max((len(name) for name, _ in results), default=10)
    for name, values in results:
        print(f"  {name:{width}}  {statistics.median(values) * 1000:8.1f} ms")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)")


if __name__ == "__main__":
    main()
