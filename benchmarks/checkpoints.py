"""How much a checkpoint costs on a large repository: it should follow the files changed.

    .venv/bin/python benchmarks/checkpoints.py [--files 20000] [--kb 10] [--dir /tmp/x] [--keep]

Builds a repository of ``--files`` text files of about ``--kb`` KiB each (20k x 10 KiB = ~200 MB)
with one commit, then times: the first snapshot (seeded from the user's index, so nothing is
hashed), the same with no index to seed from (every file hashed: the cost a naive snapshot pays
every time), snapshots after changing 1, 100 and 1000 files, a snapshot of an unchanged tree,
drift, and restoring 100 files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kimi_code.agent.checkpoints import Checkpointer

_IDENT = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "core.compression=1"]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *_IDENT, *args], cwd=repo, check=True, capture_output=True)


def build(repo: Path, files: int, kib: int) -> int:
    """Write the files (varied text, so blobs differ) and commit them; returns total bytes."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("*.log\n")
    chunk = (" ".join(f"word{i % 997}" for i in range(200)) + "\n").encode()
    body = chunk * max(1, (kib * 1024) // len(chunk))
    total = 0
    for n in range(files):
        d = repo / f"pkg{n // 100:03d}"
        if n % 100 == 0:
            d.mkdir()
        data = f"# file {n}\n".encode() + body
        (d / f"mod{n % 100:02d}.py").write_bytes(data)
        total += len(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "large repository")
    return total


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def touch(repo: Path, count: int, files: int, round_: int) -> None:
    """Change ``count`` files spread over the tree."""
    stride = max(1, files // count)
    for k in range(count):
        n = (k * stride + round_) % files
        path = repo / f"pkg{n // 100:03d}" / f"mod{n % 100:02d}.py"
        with open(path, "ab") as fh:
            fh.write(f"# change {round_}\n".encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--kb", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temp dir)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="kimi-ckpt-bench-"))
    repo = work / "repo"
    try:
        t, total = timed(lambda: build(repo, args.files, args.kb))
        print(f"repository: {args.files} files, {total / 1e6:.0f} MB, built and committed in {t:.1f} s")
        rows: list[tuple[str, float]] = []

        status = [timed(lambda: git(repo, "--no-optional-locks", "status", "--porcelain"))[0] for _ in range(3)]
        rows.append(("`git status` for reference (the stat walk any snapshot needs)", statistics.median(status)))

        cp = Checkpointer(repo, "bench")
        t, base = timed(cp.base)
        rows.append(("first snapshot (index seeded from the user's)", t))

        user_index = repo / ".git" / "index"
        shutil.move(user_index, work / "index.saved")
        try:
            cold = Checkpointer(repo, "cold")
            t, _ = timed(cold.base)
            rows.append((f"first snapshot, nothing to seed from (all {args.files} hashed)", t))
            cold.prune()
        finally:
            shutil.move(work / "index.saved", user_index)

        t, none = timed(lambda: cp.snapshot(1))
        assert none is None
        rows.append(("snapshot, nothing changed", t))

        step = 1
        for count in (1, 100, 1000):
            samples = []
            for r in range(args.rounds):
                touch(repo, count, args.files, step)
                t, made = timed(lambda: cp.snapshot(step))
                assert made is not None and len(made.changed) == count, (count, made and len(made.changed))
                samples.append(t)
                step += 1
            rows.append((f"snapshot after changing {count} file(s) (median of {args.rounds})",
                         statistics.median(samples)))

        head = cp.head() or ""
        touch(repo, 100, args.files, 10_000)
        t, drifted = timed(lambda: cp.drift(head))
        assert len(drifted) == 100
        rows.append(("drift with 100 files changed outside", t))
        t, changed = timed(lambda: cp.restore(head, force=True))
        assert len(changed) == 100
        rows.append(("restore of 100 files (forced, drift saved first)", t))
        t, changed = timed(lambda: cp.restore(base.commit))
        rows.append((f"restore to the base ({len(changed)} files)", t))

        width = max(len(name) for name, _ in rows)
        for name, seconds in rows:
            print(f"  {name:<{width}}  {seconds * 1000:9.1f} ms")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    main()
