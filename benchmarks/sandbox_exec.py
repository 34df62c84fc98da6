"""Round-trip time of a trivial command: kimi-code's persistent shell vs one `docker exec` each.

    .venv/bin/python benchmarks/sandbox_exec.py [--image IMAGE] [-n 300]

Both run `true` in the same container: once through DockerSandbox.exec (the persistent bash, with
its output file, exit code and working-directory frame), once as a fresh `bash -c true` through the
SDK's exec_run, which is what a harness without a persistent shell pays per command.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("KIMI_CODE_TEST_IMAGE", "kimi-code-sandbox:offline"))
    parser.add_argument("-n", type=int, default=300, help="commands per method")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kimi-bench-") as ws:
        sandbox = DockerSandbox(f"bench-{uuid.uuid4().hex[:8]}", Path(ws), image=args.image)
        sandbox.start()
        try:
            def persistent() -> None:
                assert sandbox.exec("true").exit_code == 0

            def per_exec() -> None:
                assert sandbox.container.exec_run(["bash", "-c", "true"]).exit_code == 0

            shell = measure(persistent, args.n)
            fresh = measure(per_exec, args.n)
        finally:
            sandbox.stop()
        local = LocalSandbox("bench-local", Path(ws))
        try:
            local_times = measure(lambda: local.exec("true"), args.n)
        finally:
            local.stop()

    rows = [
        ("docker: persistent shell (kimi-code)", shell),
        ("docker: one exec_run per command", fresh),
        ("local: persistent shell (--sandbox none)", local_times),
    ]
    print(f"`true`, {args.n} commands each, image {args.image}")
    print(f"{'method':44} {'median ms':>10} {'p95 ms':>10}")
    for name, values in rows:
        print(f"{name:44} {statistics.median(values) * 1e3:10.2f} {p95(values) * 1e3:10.2f}")
    print(
        f"exec_run / persistent shell: median {statistics.median(fresh) / statistics.median(shell):.1f}x, "
        f"p95 {p95(fresh) / p95(shell):.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
