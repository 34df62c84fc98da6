"""Round-trip time of a trivial command: kimi-code's persistent shell vs one `docker exec` each.

    .venv/bin/python benchmarks/sandbox_exec.py [--image IMAGE] [-n 300] [--cases root,user]

Both run `true` in the same container: once through DockerSandbox.exec (the persistent bash, with
its output file, exit code and working-directory frame, plus whatever DockerSandbox does after each
command), once as a fresh `bash -c true` through the SDK's exec_run, which is what a harness
without a persistent shell pays per command.

Two cases, because DockerSandbox runs the container as the workspace owner when the CLI runs as
root (sandbox/docker.py ``default_user``):

- ``root``: a workspace owned by root, so the container runs as root (the CLI run as root in CI);
- ``user``: the same workspace chowned to ``--uid`` (default 1000:1000), so it runs as that uid.
  Needs the benchmark to run as root (otherwise the container runs as the caller anyway and the
  case is skipped).

The local-sandbox row (``--sandbox none``) is measured once, in the first case's workspace.

``--docker-host URL`` measures a copied workspace (``workspace = "copy"``) on that engine instead:
a 20,000-file repository (``--files``) is copied in, then the round trip of ``true`` (which now
includes the scan for changes), of a command that changes 1 file and one that changes 100 (the
changed files brought back to the host), and of a file tool's write sent in.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from kimi_code.sandbox.docker import DockerSandbox
from kimi_code.sandbox.local import LocalSandbox

CASES = ("root", "user")


def measure(fn: Callable[[], object], n: int, warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def docker_case(image: str, ws: Path, n: int) -> tuple[str, list[float], list[float]]:
    """(container user, persistent-shell times, exec_run times) in a fresh container on ``ws``."""
    sandbox = DockerSandbox(f"bench-{uuid.uuid4().hex[:8]}", ws, image=image)
    sandbox.start()
    try:
        user = str((sandbox.container.attrs.get("Config") or {}).get("User") or "")

        def persistent() -> None:
            assert sandbox.exec("true").exit_code == 0

        def per_exec() -> None:
            assert sandbox.container.exec_run(["bash", "-c", "true"]).exit_code == 0

        shell = measure(persistent, n)
        fresh = measure(per_exec, n)
    finally:
        sandbox.stop()
    return user, shell, fresh


def make_repo(root: Path, files: int) -> None:
    """``files`` small files in directories of 100, committed."""
    import subprocess

    for i in range(files):
        d = root / f"d{i // 100:03d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i % 100:02d}.txt").write_text(f"file {i}\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-c", "gc.auto=0", "commit", "-qm", "bench"],
                ["git", "gc", "-q"]):
        subprocess.run(cmd, cwd=root, check=True)


def remote_case(url: str, image: str, n: int, files: int) -> int:
    """A copied workspace on the engine at ``url``: seed, round trip, sync of 1 and 100 files, push."""
    import docker

    client = docker.DockerClient(base_url=url, timeout=300)
    with tempfile.TemporaryDirectory(prefix="kimi-bench-remote-") as tmp:
        ws = Path(tmp) / "repo"
        ws.mkdir()
        make_repo(ws, files)
        sandbox = DockerSandbox(f"bench-{uuid.uuid4().hex[:8]}", ws, image=image, client=client,
                                workspace_mode="copy", sync_stamp=Path(tmp) / "stamp")
        t = time.perf_counter()
        sandbox.start()
        seed = time.perf_counter() - t
        try:
            counter = iter(range(10**9))
            rows = [
                ("`true` (shell round trip + scan for changes)", measure(lambda: sandbox.exec("true"), n)),
                ("command changing 1 file (+ bringing it back)",
                 measure(lambda: sandbox.exec(f"echo {next(counter)} > d000/f00.txt"), max(20, n // 5))),
                ("command changing 100 files (+ bringing them back)",
                 measure(lambda: sandbox.exec(f"for f in d001/f*.txt; do echo {next(counter)} > $f; done"),
                         max(10, n // 10), warmup=2)),
            ]
            edited = ws / "d002" / "f00.txt"

            def tool_write() -> None:
                edited.write_text(f"tool {next(counter)}\n")
                sandbox.workspace_written(["d002/f00.txt"])

            rows.append(("file tool write sent in (1 file)", measure(tool_write, max(20, n // 5))))
            ok = (ws / "d001" / "f99.txt").read_text().strip().isdigit()
        finally:
            sandbox.stop()
    base = statistics.median(rows[0][1])
    width = max(len(name) for name, _ in rows)
    print(f"copied workspace on {url}, image {image}, {files} files; copy-in at start {seed:.2f} s")
    print(f"{'operation':{width}} {'median ms':>10} {'p95 ms':>10} {'sync ms':>8}")
    for i, (name, values) in enumerate(rows):
        extra = statistics.median(values) - base if 0 < i < 3 else None
        sync = f"{extra * 1e3:8.1f}" if extra is not None else f"{'':>8}"
        print(f"{name:{width}} {statistics.median(values) * 1e3:10.2f} {p95(values) * 1e3:10.2f} {sync}")
    print("sync ms: the median above the `true` round trip, i.e. what bringing the changes back costs")
    print(f"changes reached the host: {ok}; load average: {os.getloadavg()[0]:.2f} (1 min)")
    return 0 if ok else 1


def ms(seconds: float) -> str:
    value = seconds * 1e3
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def ratio(x: float) -> str:
    return f"{x:.1f}x" if x < 10 else f"{x:.0f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("KIMI_CODE_TEST_IMAGE", "kimi-code-sandbox:offline"))
    parser.add_argument("-n", type=int, default=300, help="commands per method")
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated: root (root-owned workspace), user (workspace owned by --uid)")
    parser.add_argument("--uid", default="1000:1000", help="owner uid:gid of the workspace in the user case")
    parser.add_argument("--no-local", action="store_true", help="skip the local-sandbox row")
    parser.add_argument("--docker-host", help="measure a copied workspace on this engine (e.g. tcp://127.0.0.1:2375)")
    parser.add_argument("--files", type=int, default=20_000, help="files in the --docker-host repository")
    args = parser.parse_args()
    if args.docker_host:
        return remote_case(args.docker_host, args.image, args.n, args.files)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        parser.error(f"--cases: pick from {', '.join(CASES)}")
    uid, _, gid = args.uid.partition(":")

    rows: list[tuple[str, list[float]]] = []
    ratios: list[str] = []
    local_times: list[float] | None = None
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="kimi-bench-") as tmp:
            ws = Path(tmp)
            if case == "user":
                if os.getuid() != 0:
                    print(f"user case skipped: needs root to chown the workspace to {args.uid}", file=sys.stderr)
                    continue
                os.chown(ws, int(uid), int(gid or uid))
            elif os.getuid() != 0:
                print("note: not running as root, so the 'root' case runs the container as your uid",
                      file=sys.stderr)
            user, shell, fresh = docker_case(args.image, ws, args.n)
            label = f"{case} (container user {user or '?'})"
            rows.append((f"{label}: persistent shell (kimi-code)", shell))
            rows.append((f"{label}: one exec_run per command", fresh))
            ratios.append(
                f"{case}: persistent {ms(statistics.median(shell))} ms median (p95 {ms(p95(shell))}), "
                f"docker exec {ms(statistics.median(fresh))} ms (p95 {ms(p95(fresh))}): "
                f"{ratio(statistics.median(fresh) / statistics.median(shell))}"
            )
            if local_times is None and not args.no_local:
                local = LocalSandbox("bench-local", ws)
                try:
                    local_times = measure(lambda: local.exec("true"), args.n)
                finally:
                    local.stop()
    if local_times is not None:
        rows.append(("local: persistent shell (--sandbox none)", local_times))

    width = max((len(name) for name, _ in rows), default=10)
    print(f"`true`, {args.n} commands each, image {args.image}")
    print(f"{'method':{width}} {'median ms':>10} {'p95 ms':>10}")
    for name, values in rows:
        print(f"{name:{width}} {statistics.median(values) * 1e3:10.2f} {p95(values) * 1e3:10.2f}")
    for line in ratios:
        print(line)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
