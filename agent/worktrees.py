"""Sub-agents' git worktrees and the three-way merge that brings their work back.

A ``worktree`` child works in ``<repo>/.kimi-code/worktrees/<child id>``: inside the repository,
so the Docker sandbox (which bind-mounts the repository at /workspace) sees it, and git-excluded
(the directory holds a ``.gitignore`` of ``*``), so the parent's snapshots, listings and searches
never see it. Its ``.git`` file points to the repository relatively, so git works in it from the
host and from inside the container alike.

Its result comes back as a real three-way merge (``git merge-tree --write-tree``) of the child's
final snapshot against the tree it started from, onto the parent's workspace as it is now. Nothing
is applied unless the whole merge is clean. Applying writes, file by file, the merged tree's
version of every path that differs from the parent's tree: doing it twice writes the same bytes,
so a merge cut short by a crash is completed by applying it again (agent/swarm.py records the
intent first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KimiCodeError

AGENTS_DIR = ".kimi-code/worktrees"
_GIT = ["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]
_ENV = {"GIT_AUTHOR_NAME": "kimi-code", "GIT_AUTHOR_EMAIL": "kimi-code@localhost",
        "GIT_COMMITTER_NAME": "kimi-code", "GIT_COMMITTER_EMAIL": "kimi-code@localhost",
        "GIT_TERMINAL_PROMPT": "0"}


class WorktreeError(KimiCodeError):
    """A worktree could not be made or a merge could not be computed or applied."""


def _git(repo: Path, *args: str, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
    env = {**os.environ, **_ENV}
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(name, None)
    proc = subprocess.run([*_GIT, "-C", str(repo), *args], input=stdin, capture_output=True, env=env,
                          timeout=300, stdin=None if stdin is not None else subprocess.DEVNULL)
    if proc.returncode not in ok:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise WorktreeError(f"git {args[0]} failed: {why[-1] if why else proc.returncode}")
    return proc.returncode, proc.stdout


def _text(repo: Path, *args: str) -> str:
    return _git(repo, *args)[1].decode().strip()


def worktree_path(repo: Path, child_id: str) -> Path:
    return Path(repo) / AGENTS_DIR / child_id


def create_worktree(repo: Path, child_id: str, commit: str) -> Path:
    """The child's worktree at ``commit`` (detached); one left half-made by a crash is made again.
    Callers serialize it per repository (``git worktree`` edits shared administrative files)."""
    repo = Path(repo)
    root = repo / AGENTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = root / child_id
    if (path / ".git").is_file():
        return path
    if path.exists():  # half-made by a crash: git's record of it goes with it
        shutil.rmtree(path)
        _git(repo, "worktree", "prune")
    _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    # Relative, so the same worktree works at /workspace/... inside the sandbox.
    gitdir = (path / ".git").read_text().split(":", 1)[1].strip()
    (path / ".git").write_text(f"gitdir: {os.path.relpath(gitdir, path)}\n")
    return path


def remove_worktree(repo: Path, child_id: str) -> None:
    """Remove a child's worktree (its work stays on its checkpoint refs); best effort."""
    path = worktree_path(repo, child_id)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    try:
        _git(repo, "worktree", "prune")
    except (WorktreeError, OSError):
        pass


def head_ref(repo: Path, child_id: str) -> str | None:
    """A child's latest checkpoint commit (its work), or None."""
    code, out = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/kimi-code/{child_id}/head", ok=(0, 1))
    return out.decode().strip() or None if code == 0 else None


def tree_of(repo: Path, rev: str) -> str:
    return _text(repo, "rev-parse", f"{rev}^{{tree}}")


@dataclass
class MergeResult:
    clean: bool
    tree: str | None = None  # the merged tree (clean merges)
    conflicts: list[str] = field(default_factory=list)


def three_way(repo: Path, base: str, ours: str, theirs: str) -> MergeResult:
    """Merge tree ``theirs`` (the child's) into tree ``ours`` (the parent's), both from ``base``."""
    if theirs == base or theirs == ours:
        return MergeResult(True, ours)
    if ours == base:
        return MergeResult(True, theirs)
    b = _text(repo, "commit-tree", base, "-m", "kimi-code merge base")
    o = _text(repo, "commit-tree", ours, "-p", b, "-m", "parent")
    t = _text(repo, "commit-tree", theirs, "-p", b, "-m", "child")
    code, out = _git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", o, t, ok=(0, 1))
    lines = out.decode("utf-8", "surrogateescape").splitlines()
    if code == 0:
        return MergeResult(True, lines[0].strip())
    return MergeResult(False, None, sorted({line for line in lines[1:] if line.strip()}))


def changed_paths(repo: Path, a: str, b: str) -> list[tuple[str, str, str, str]]:
    """(status, new mode, new blob, path) of every file that differs from tree ``a`` to ``b``."""
    out = _git(repo, "diff-tree", "-r", "-z", "--no-renames", a, b)[1]
    items = out.split(b"\0")
    result = []
    i = 0
    while i + 1 < len(items):
        head, path = items[i].decode(), os.fsdecode(items[i + 1])
        i += 2
        if not head.startswith(":"):
            continue
        _, new_mode, _, new_sha, status = head[1:].split(" ")
        result.append((status[0], new_mode, new_sha, path))
    return result


def diffstat(repo: Path, a: str, b: str) -> str:
    return _text(repo, "diff-tree", "-r", "--stat=100", "--no-renames", a, b)


def apply_tree(repo: Path, workspace: Path, ours: str, merged: str) -> list[str]:
    """Make the workspace's files that differ between ``ours`` and ``merged`` what ``merged``
    holds; idempotent. Returns the paths written or removed."""
    changes = changed_paths(repo, ours, merged)
    blobs = {sha for status, mode, sha, _ in changes if status != "D" and mode != "160000"}
    contents = _cat_blobs(repo, sorted(blobs))
    root = Path(workspace)
    done = []
    for status, mode, sha, path in changes:
        target = root / path
        if status == "D":
            if target.is_symlink() or target.is_file():
                target.unlink()
            _prune_empty(root, target.parent)
        elif mode == "160000":
            continue  # a submodule's commit: not a file to write
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                pass
            elif target.is_dir():
                shutil.rmtree(target)
            if mode == "120000":
                if target.is_symlink() or target.exists():
                    target.unlink()
                os.symlink(os.fsdecode(contents[sha]), target)
            else:
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".kimi-merge-")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(contents[sha])
                os.chmod(tmp, 0o755 if mode == "100755" else 0o644)
                os.replace(tmp, target)
        done.append(path)
    return done


def _prune_empty(root: Path, directory: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


def _cat_blobs(repo: Path, shas: list[str]) -> dict[str, bytes]:
    if not shas:
        return {}
    out = _git(repo, "cat-file", "--batch", stdin="".join(f"{s}\n" for s in shas).encode())[1]
    result: dict[str, bytes] = {}
    pos = 0
    for sha in shas:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        size = int(header[2])
        result[sha] = out[end + 1:end + 1 + size]
        pos = end + 1 + size + 1
    return result
