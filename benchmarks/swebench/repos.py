"""Repository preparation: one local mirror per repository, a fresh history-less checkout per use.

A checkout holds only ``base_commit`` (fetched at depth 1 from the mirror), so the agent cannot
find the fix in later history, and the mirror is shared by every task of the repository. It gets
the name of the nearest tag reachable from that commit, on that commit: version tools that read
``git describe`` (setuptools_scm, versioneer) then give the release the code is from rather than
``0.1.dev1``, which fails ``minversion`` checks and ``pkg>=X`` requirements.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

from .errors import BenchError

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
GIT_ID = ["-c", "user.name=kimi-bench", "-c", "user.email=kimi-bench@localhost"]


def git(*args: str, cwd: Path | None = None, timeout: float = 600, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run git; a failure becomes a BenchError with git's last line."""
    proc = subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          input=input)
    if check and proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise BenchError(f"git {args[0]} failed: {last[0]}")
    return proc


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def repo_url(repo: str) -> str:
    return f"https://github.com/{repo}.git"


def mirror_for(repo: str, repos_dir: Path | None, work_dir: Path) -> Path:
    """A local repository holding ``repo``'s commits: ``repos_dir/owner+name`` when given (a clone
    or a bare mirror), else a bare mirror cloned once into ``work_dir/mirrors``."""
    name = repo.replace("/", "+")
    if repos_dir is not None:
        path = repos_dir / name
        if not path.exists():
            raise BenchError(f"{path} does not exist (--repos-dir holds owner+name folders)")
        return path
    path = work_dir / "mirrors" / name
    with _lock(str(path)):
        if not (path / "HEAD").exists():
            tmp = path.with_name(name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.parent.mkdir(parents=True, exist_ok=True)
            git("clone", "-q", "--mirror", repo_url(repo), str(tmp), timeout=3600)
            tmp.rename(path)
    return path


def checkout(mirror: Path, commit: str, dest: Path) -> Path:
    """A fresh work tree at ``dest`` on branch ``kimi-bench`` holding only ``commit``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    git("init", "-q", str(dest))
    # file:// so --depth works; allowAnySHA1InWant lets us fetch a commit no ref points at.
    proc = git("-c", "uploadpack.allowAnySHA1InWant=true", "fetch", "-q", "--depth", "1",
               mirror.resolve().as_uri(), commit, cwd=dest, check=False)
    if proc.returncode != 0:
        raise BenchError(f"commit {commit[:12]} not found in {mirror}: "
                         f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    git("checkout", "-q", "-B", "kimi-bench", "FETCH_HEAD", cwd=dest)
    nearest = git("describe", "--tags", "--abbrev=0", commit, cwd=mirror, check=False)
    if nearest.returncode == 0 and nearest.stdout.strip():
        git("tag", nearest.stdout.strip(), "HEAD", cwd=dest, check=False)
    return dest


def work_tree_diff(work_tree: Path) -> str:
    """Everything changed in ``work_tree`` since its commit, new files included (ignored ones not),
    as a binary-safe patch: the agent's diff when kimi-code could not write one (killed at a timeout)."""
    git("add", "-A", cwd=work_tree)
    return git("diff", "--cached", "--binary", "HEAD", cwd=work_tree).stdout


def apply_patch(work_tree: Path, patch: str, what: str) -> None:
    """``git apply`` a patch to the work tree (the way SWE-bench applies model and test patches)."""
    if not patch.strip():
        return
    proc = git("apply", "--whitespace=nowarn", "-", cwd=work_tree, input=patch if patch.endswith("\n") else patch + "\n",
               check=False)
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["?"])[0]
        raise BenchError(f"the {what} does not apply: {first}")
