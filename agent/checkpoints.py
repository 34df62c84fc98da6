"""Invisible git checkpoints of the workspace, so every agent step can be seen and undone.

Each checkpoint is a commit of the whole working tree (tracked and untracked files, minus ignored
ones and files above ``max_file_bytes``) on the hidden ref ``refs/kimi-code/<session>/head``; the
first one of a session is also kept at ``refs/kimi-code/<session>/base``. The commits are built
with plumbing through a private, persistent index (``<git dir>/kimi-code/<session>/index``), so
the user's HEAD, index, branches, stash and files are never touched, and git's stat cache in that
index makes a snapshot cost what changed rather than what the repository holds: one ``ls-files``
walk (stat only), hashing of the changed files, and a ``write-tree`` that reuses unchanged subtrees.

What is left out, on purpose:
- ignored files (``.gitignore``, ``.git/info/exclude``, ``core.excludesFile``): never snapshotted,
  never deleted by :meth:`Checkpointer.restore`; when the checkpoint being restored holds a file
  at such a path (it was not ignored then), restore refuses to overwrite it unless forced;
- files above ``max_file_bytes``: an untracked one is left out; one already in the snapshot keeps
  its last snapshotted content. Either way it is reported in ``Checkpoint.skipped`` and restore
  leaves it alone;
- nested repositories and submodules: their contents are not snapshotted (a submodule's gitlink
  stays as it was in the user's index when the session started).

Content goes through git's own filters (eol conversion, LFS), as ``git add`` would.

"Base" for :meth:`Checkpointer.export_branch` and :meth:`Checkpointer.patch` is the user's HEAD
commit when the session started (the parent of the base checkpoint), not the start snapshot: the
result applies to that commit and therefore includes any uncommitted changes the user already had
in the workspace at start. In CI (a clean checkout) both are the same.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import git
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from .errors import CheckpointError

__all__ = ["Checkpoint", "CheckpointError", "Checkpointer", "REF_ROOT"]


REF_ROOT = "refs/kimi-code"
IDENTITY_NAME = "kimi-code"
IDENTITY_EMAIL = "kimi-code@localhost"
# Config for every command: a split index would put our index's data in shared files that the
# user's gc expires; hooks (reference-transaction) are the user's, not ours to trigger.
# Host-side git must never run code the sandbox could have planted: no hooks, no fsmonitor.
_CONFIG = ("-c", "core.splitIndex=false", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
# A git command that takes longer (e.g. reading a FIFO planted as .gitignore) is killed.
GIT_TIMEOUT = 120.0
# Diffs that `git apply -p1` accepts whatever the user's diff config says.
_DIFF_CONFIG = (
    "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "-c", "diff.relative=false",
    "-c", "color.ui=false",
)
_DIFF_FLAGS = ("--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")
_SESSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_AUTHOR_RE = re.compile(r"^\s*([^<>]+?)\s*<([^<>\s]+)>\s*$")
_LOCK_RE = re.compile(r"Unable to create '([^']+\.lock)': File exists")
_STALE_LOCK_SECONDS = 10.0
_MAX_LISTED = 10


@dataclass
class Checkpoint:
    """One snapshot of the workspace: ``changed`` is relative to the previous checkpoint (for the
    first one, to the user's HEAD at start, or everything when there was none)."""

    step: int
    commit: str
    tree: str
    changed: list[str]
    skipped: list[str]
    kind: str = "step"  # step | base | drift (outside changes saved before a forced restore) | restore


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_MAX_LISTED])
    more = len(paths) - _MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


def _split_z(out: bytes) -> list[str]:
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def _git_error(exc: GitCommandError) -> str:
    err = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
    lines = [ln.strip() for ln in err.replace("stderr:", "").strip(" '\n").splitlines() if ln.strip()]
    return "; ".join(lines[:3]) or str(exc)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _user_facing(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """A git failure nobody planned for still reaches the user as a one-line CheckpointError."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except GitCommandError as exc:
            raise CheckpointError(f"git failed during {fn.__name__}: {_git_error(exc)}") from None

    return wrapper


_UNKNOWN = object()  # the head ref has not been read yet


def _stat_key(path: Path) -> tuple[int, int, int, bytes]:
    """Changes whenever git rewrites the index: its inode, mtime and size, and the checksum git
    writes at its end over its whole content (zeros only with index.skipHash)."""
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        fh.seek(max(0, st.st_size - 20))
        return st.st_ino, st.st_mtime_ns, st.st_size, fh.read(20)


class Checkpointer:
    """Checkpoints of one session in one git work tree. See the module docstring for the rules."""

    def __init__(self, repo: Path, session_id: str, *, max_file_bytes: int = 5_000_000,
                 git_timeout: float = GIT_TIMEOUT) -> None:
        self.git_timeout = git_timeout
        if not _SESSION_RE.match(session_id) or session_id.endswith(".lock") or ".." in session_id:
            raise CheckpointError(f"invalid session id for a git ref: {session_id!r}")
        root = Path(repo).resolve()
        try:
            self._repo = git.Repo(root, search_parent_directories=True)
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise CheckpointError(f"{root} is not a git work tree (run `git init` there first)") from None
        if self._repo.bare or self._repo.working_tree_dir is None:
            raise CheckpointError(f"{root} is a bare git repository, not a work tree")
        top = Path(self._repo.working_tree_dir).resolve()
        if top != root:
            raise CheckpointError(f"{root} is inside the git work tree {top}; checkpoints need its top")
        self.root = root
        self.session_id = session_id
        self.max_file_bytes = max_file_bytes
        self.git_dir = Path(self._repo.git_dir).resolve()
        self.state_dir = self.git_dir / "kimi-code" / session_id
        self.index_file = self.state_dir / "index"
        self.head_ref = f"{REF_ROOT}/{session_id}/head"
        self.base_ref = f"{REF_ROOT}/{session_id}/base"
        self._empty_tree: str | None = None
        # What this process last knew of its own refs and index, so an unchanged step costs one
        # git process (ls-files) instead of three. Only this session's process moves its head
        # ref (the session lock), and every place here that moves it resets the cache; a stale
        # entry could at worst make update-ref's compare-and-swap fail, never lose a checkpoint.
        self._head: tuple[str, str] | None | object = _UNKNOWN
        self._tree: tuple[tuple[int, int, int, bytes], str] | None = None  # (index identity, its tree)

    # ------------------------------------------------------------------ git plumbing

    def _env(self, index: Path | None = None) -> dict[str, str]:
        env = {
            "GIT_DIR": str(self.git_dir),
            "GIT_WORK_TREE": str(self.root),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_LITERAL_PATHSPECS": "1",  # paths are names, never globs
            "GIT_AUTHOR_NAME": IDENTITY_NAME,
            "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
            "GIT_COMMITTER_NAME": IDENTITY_NAME,
            "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
        }
        if index is not None:
            env["GIT_INDEX_FILE"] = str(index)
        return env

    def _git(
        self,
        *args: str,
        index: Path | None = None,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        config: Sequence[str] = (),
    ) -> bytes:
        """Run git through gitpython; raw bytes out. A lock left by a killed run of this session is
        removed once stale, then the command is retried once."""
        full_env = self._env(index)
        if env:
            full_env.update(env)
        cmd = [self._repo.git.GIT_PYTHON_GIT_EXECUTABLE, *_CONFIG, *config, *args]
        for attempt in range(2):
            fh = tempfile.TemporaryFile() if stdin is not None else None
            try:
                if fh is not None:
                    fh.write(stdin or b"")
                    fh.seek(0)
                return self._repo.git.execute(
                    cmd, istream=fh, env=full_env, stdout_as_string=False, strip_newline_in_stdout=False,
                    kill_after_timeout=self.git_timeout,
                )
            except GitCommandError as exc:
                if attempt == 0 and self._clear_stale_lock(exc):
                    continue
                raise
            finally:
                if fh is not None:
                    fh.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _clear_stale_lock(self, exc: GitCommandError) -> bool:
        match = _LOCK_RE.search(str(exc.stderr or ""))
        if not match:
            return False
        lock = Path(match.group(1))
        ours = str(self.state_dir) in str(lock) or f"{REF_ROOT}/{self.session_id}/" in lock.as_posix()
        if not ours:
            return False
        deadline = time.monotonic() + _STALE_LOCK_SECONDS + 1
        while time.monotonic() < deadline:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                return True
            if age >= _STALE_LOCK_SECONDS:
                lock.unlink(missing_ok=True)
                return True
            time.sleep(0.1)
        return False

    def _text(self, *args: str, **kw: object) -> str:
        return self._git(*args, **kw).decode("utf-8", "surrogateescape").strip()  # type: ignore[arg-type]

    def _rev(self, rev: str) -> str | None:
        try:
            return self._text("rev-parse", "--verify", "--quiet", "--end-of-options", rev) or None
        except GitCommandError:
            return None

    def _commit_of(self, rev: str) -> str:
        sha = self._rev(f"{rev}^{{commit}}")
        if sha is None:
            raise CheckpointError(f"no such checkpoint commit: {rev}")
        return sha

    def _tree_of(self, rev: str) -> str:
        sha = self._rev(f"{rev}^{{tree}}")
        if sha is None:
            raise CheckpointError(f"no such checkpoint commit: {rev}")
        return sha

    def empty_tree(self) -> str:
        if self._empty_tree is None:
            self._empty_tree = self._text("hash-object", "-t", "tree", os.devnull)
        return self._empty_tree

    def _names(self, a: str, b: str) -> list[str]:
        return _split_z(self._git("diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b))

    # ------------------------------------------------------------------ the private index

    def _seed(self, index: Path) -> None:
        """Start the private index from the user's (stat data included, so only what differs gets
        hashed); copy2 keeps its mtime, which git's racy-clean check relies on."""
        index.parent.mkdir(parents=True, exist_ok=True)
        user_index = self.git_dir / "index"
        if user_index.is_file():
            tmp = index.with_name(index.name + f".seed{os.getpid()}")
            shutil.copy2(user_index, tmp)
            os.replace(tmp, index)

    def _stage(self, index: Path) -> tuple[str, list[str]]:
        """Bring ``index`` up to the working tree; return (tree sha, skipped paths)."""
        if not index.exists():
            self._seed(index)
        try:
            return self._stage_once(index)
        except GitCommandError as exc:
            if ".lock" in str(exc.stderr or ""):
                raise CheckpointError(
                    f"another process is checkpointing session {self.session_id}: {_git_error(exc)}"
                ) from None
            # A damaged or out-of-date private index (crash, gc'd blob): rebuild it once.
            index.unlink(missing_ok=True)
            self._seed(index)
            try:
                return self._stage_once(index)
            except GitCommandError as exc:
                raise CheckpointError(f"cannot snapshot the workspace: {_git_error(exc)}") from None

    def _stage_once(self, index: Path) -> tuple[str, list[str]]:
        listed = self._git("ls-files", "-z", "-m", "-o", "--exclude-standard", index=index)
        updates: list[str] = []
        skipped: list[str] = []
        for path in dict.fromkeys(_split_z(listed)):
            if path.endswith("/"):  # an untracked nested repository
                skipped.append(path)
                continue
            try:
                st = os.lstat(self.root / path)
            except (FileNotFoundError, NotADirectoryError):
                updates.append(path)  # deleted
                continue
            if stat.S_ISDIR(st.st_mode):  # a submodule / gitlink: keep its entry as it is
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size > self.max_file_bytes:
                skipped.append(path)
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                skipped.append(path)  # fifo, socket, device
                continue
            updates.append(path)
        while updates:
            payload = b"".join(os.fsencode(p) + b"\0" for p in updates)
            try:
                self._git("update-index", "--add", "--remove", "--replace", "-z", "--stdin",
                          index=index, stdin=payload)
                break
            except GitCommandError as exc:
                err = str(exc.stderr or "")
                bad = next((p for p in updates if f"Unable to process path {p}" in err), None)
                if bad is None:
                    raise
                updates.remove(bad)  # unreadable file: leave it out, and say so
                skipped.append(bad)
        mine = index == self.index_file  # scratch copies (drift, diff) are not cached
        if mine and not updates and self._tree is not None and self._tree[0] == _stat_key(index):
            return self._tree[1], skipped
        tree = self._text("write-tree", index=index)
        if mine:
            self._tree = (_stat_key(index), tree)
        return tree, skipped

    @contextmanager
    def _scratch_index(self) -> Iterator[Path]:
        """A throw-away copy of the private index, for read-only questions about the working tree
        (drift, diff) that may run while the session itself is checkpointing."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="scratch-", suffix=".index", dir=self.state_dir)
        os.close(fd)
        scratch = Path(name)
        try:
            if self.index_file.exists():
                shutil.copy2(self.index_file, scratch)
            else:
                scratch.unlink()
                self._seed(scratch)
            yield scratch
        finally:
            scratch.unlink(missing_ok=True)

    def _current_tree(self) -> tuple[str, list[str]]:
        with self._scratch_index() as scratch:
            return self._stage(scratch)

    @_user_facing
    def current_tree(self) -> str:
        """The working tree as a tree object, as a checkpoint would hold it, without recording
        one (a sub-agent's merge is computed against it, agent/swarm.py)."""
        return self._current_tree()[0]

    # ------------------------------------------------------------------ commits and refs

    @_user_facing
    def user_head(self) -> str | None:
        """The user's current HEAD commit, or None in a repository without commits."""
        return self._rev("HEAD^{commit}")

    @_user_facing
    def head(self) -> str | None:
        """The session's latest checkpoint commit, if any."""
        return self._rev(self.head_ref)

    @_user_facing
    def start_head(self) -> str | None:
        """The user's HEAD when the session started (parent of the base checkpoint)."""
        base = self._rev(self.base_ref)
        if base is None:
            raise CheckpointError(f"session {self.session_id} has no checkpoints in {self.root}")
        return self._rev(f"{base}^1")

    def _pair(self, rev: str) -> tuple[str, str] | None:
        """(commit, tree) of ``rev`` in one git call, or None when it does not exist."""
        try:
            commit, tree = self._text("rev-parse", f"{rev}^{{commit}}", f"{rev}^{{tree}}", "--").split()[:2]
        except (GitCommandError, ValueError):
            return None
        return commit, tree

    def _commit(self, tree: str, step: int, message: str, kind: str, skipped: list[str],
                head: tuple[str, str] | None = None) -> Checkpoint:
        pair = head or self._pair(self.head_ref)
        previous = pair[0] if pair else None
        if pair is None:
            pair = self._pair("HEAD")  # the first checkpoint hangs off the user's HEAD
        parent, parent_tree = pair if pair else (None, self.empty_tree())
        title = {"base": "session start", "drift": "changes made outside the agent",
                 "restore": "restore"}.get(kind, "step")
        lines = [f"kimi-code checkpoint: {title} (step {step})", ""]
        if message.strip():
            lines += [message.strip(), ""]
        lines += [f"Kimi-Code-Session: {self.session_id}", f"Kimi-Code-Step: {step}", f"Kimi-Code-Kind: {kind}"]
        lines += [f"Kimi-Code-Skipped: {json.dumps(p)}" for p in skipped]
        args = ["commit-tree", "--no-gpg-sign", tree]
        if parent is not None:
            args += ["-p", parent]
        commit = self._text(*args, stdin=("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        missing = "0" * len(commit)
        # One transaction, compare-and-swap: a crash leaves both refs or neither, and a concurrent
        # writer of the same session fails instead of being lost.
        txn = f"update {self.head_ref} {commit} {previous or missing}\n"
        if previous is None:
            txn += f"update {self.base_ref} {commit} {missing}\n"
        try:
            self._git("update-ref", "-m", "kimi-code checkpoint", "--stdin", stdin=txn.encode())
        except GitCommandError as exc:
            self._head = _UNKNOWN
            raise CheckpointError(
                f"session {self.session_id} was checkpointed concurrently: {_git_error(exc)}"
            ) from None
        self._head = (commit, tree)
        return Checkpoint(step, commit, tree, self._names(parent_tree, tree), skipped, kind)

    @_user_facing
    def snapshot(self, step: int, message: str = "") -> Checkpoint | None:
        """Checkpoint the working tree after ``step``; None when nothing changed since the last
        checkpoint. The first checkpoint of a session is always written (its parent is the user's
        HEAD, if any) and becomes the session's base."""
        return self._snapshot(step, message, "step")

    def _snapshot(self, step: int, message: str, kind: str) -> Checkpoint | None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tree, skipped = self._stage(self.index_file)
        if self._head is _UNKNOWN:
            self._head = self._pair(self.head_ref)
        previous = self._head
        assert previous is None or isinstance(previous, tuple)
        if previous is not None and previous[1] == tree:
            return None
        return self._commit(tree, step, message, kind, skipped, previous)

    @_user_facing
    def base(self) -> Checkpoint:
        """The workspace as the agent found it (step 0); taken on the first call, then returned."""
        if self._rev(self.base_ref) is None:
            made = self._snapshot(0, "", "base")
            if made is not None:
                return made
        return self.load(self.base_ref)

    @_user_facing
    def load(self, rev: str) -> Checkpoint:
        """The checkpoint at commit (or ref) ``rev``."""
        commit = self._commit_of(rev)
        raw = self._git("show", "-s", "--format=%T%x00%P%x00%B", commit).decode("utf-8", "surrogateescape")
        tree, parents, body = raw.split("\0", 2)
        parent = parents.split()[0] if parents.split() else None
        changed = self._names(parent or self.empty_tree(), tree)
        return self._parse(commit, tree, body, changed)

    @staticmethod
    def _parse(commit: str, tree: str, body: str, changed: list[str]) -> Checkpoint:
        step = re.search(r"^Kimi-Code-Step: (-?\d+)$", body, re.M)
        kind = re.search(r"^Kimi-Code-Kind: (\w+)$", body, re.M)
        skipped = [json.loads(m) for m in re.findall(r"^Kimi-Code-Skipped: (.*)$", body, re.M)]
        return Checkpoint(int(step.group(1)) if step else -1, commit, tree, changed, skipped,
                          kind.group(1) if kind else "step")

    @_user_facing
    def history(self) -> list[Checkpoint]:
        """All checkpoints of the session, oldest first (rewinds included: history is linear)."""
        head = self.head()
        if head is None:
            return []
        start = self.start_head()
        commits = self._git("rev-list", "--first-parent", head, *([f"^{start}"] if start else []))
        raw = self._git("diff-tree", "--stdin", "--always", "--root", "-r", "-z", "--no-renames",
                        "--name-only", "--format=%x1e%H%x1f%T%x1f%B", stdin=commits)
        out: list[Checkpoint] = []
        for chunk in raw.split(b"\x1e")[1:]:
            commit, tree, rest = chunk.split(b"\x1f", 2)
            body, *names = rest.split(b"\0")
            if names and names[0].startswith(b"\n"):
                names[0] = names[0][1:]
            out.append(self._parse(commit.decode(), tree.decode(), body.decode("utf-8", "surrogateescape"),
                                   [os.fsdecode(n) for n in names if n]))
        return out[::-1]

    @_user_facing
    def at_step(self, step: int) -> Checkpoint:
        """The latest checkpoint taken after ``step`` (0 = the base)."""
        for cp in reversed(self.history()):
            if cp.step == step and cp.kind in ("step", "base"):
                return cp
        raise CheckpointError(f"session {self.session_id} has no checkpoint for step {step}")

    # ------------------------------------------------------------------ questions

    @_user_facing
    def drift(self, since: str) -> list[str]:
        """Paths whose working-tree content differs from checkpoint ``since`` (changes made outside
        the agent when ``since`` is the latest checkpoint). Writes objects, never refs."""
        since_tree = self._tree_of(since)
        tree, _ = self._current_tree()
        return self._names(since_tree, tree)

    @_user_facing
    def diff(self, a: str, b: str | None = None) -> str:
        """Unified diff between two checkpoint commits, or from ``a`` to the current workspace."""
        a_tree = self._tree_of(a)
        b_tree = self._tree_of(b) if b is not None else self._current_tree()[0]
        out = self._git("diff", *_DIFF_FLAGS, "--no-renames", a_tree, b_tree, config=_DIFF_CONFIG)
        return out.decode("utf-8", "surrogateescape")

    @_user_facing
    def changed_files(self, a: str, b: str) -> list[str]:
        return self._names(self._tree_of(a), self._tree_of(b))

    # ------------------------------------------------------------------ rewind

    @_user_facing
    def restore(self, commit: str, *, force: bool = False, expected: str | None = None) -> list[str]:
        """Make the workspace equal checkpoint ``commit`` (non-ignored files, bytes and modes):
        rewrite changed files, recreate deleted ones, delete files the checkpoint lacks. Ignored
        files, files too big to checkpoint, nested repositories and ``.git`` stay untouched.

        Refuses when the workspace differs from ``expected`` (default: the session's latest
        checkpoint), i.e. someone changed files outside the agent, unless ``force``; forced, those
        changes are first saved as a ``drift`` checkpoint so they can still be recovered. The
        result is recorded as a ``restore`` checkpoint, so the session's head matches the
        workspace again. HEAD and the user's index do not move. Returns the changed paths."""
        self._tree = None  # the index is rewritten below in several steps
        target = self._commit_of(commit)
        target_tree = self._tree_of(target)
        expected = expected or self.head()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        current, skipped = self._stage(self.index_file)
        if expected is not None and current != self._tree_of(expected):
            drifted = self._names(self._tree_of(expected), current)
            if not force:
                raise CheckpointError(
                    f"the workspace changed outside the agent since the last checkpoint "
                    f"({_listing(drifted)}); use --force to discard those changes"
                )
            self._commit(current, self._step_of(expected), "saved before a forced restore", "drift", skipped)
        # Files too big to checkpoint stay as they are: make them look unchanged to the merge.
        for path in skipped:
            if path.endswith("/"):
                continue
            entry = self._git("ls-tree", "-z", "--full-tree", target_tree, "--", path).rstrip(b"\0")
            meta, _, name = entry.partition(b"\t")
            if entry and os.fsdecode(name) == path:
                mode, _, sha = meta.decode().split()
                self._git("update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}", index=self.index_file)
            else:
                self._git("update-index", "--force-remove", "--", path, index=self.index_file)
        current = self._text("write-tree", index=self.index_file)
        changed = self._names(current, target_tree)
        added = _split_z(self._git("diff-tree", "-r", "-z", "--name-only", "--no-renames", "--diff-filter=A",
                                   current, target_tree))
        # Ignored files, or anything else no checkpoint holds, that the checkpoint would write over.
        blocked = [p for p in added if os.path.lexists(self.root / p) and not self._is_tree(current, p)]
        if blocked and not force:
            raise CheckpointError(
                f"restoring would overwrite files that are not in any checkpoint (ignored or too "
                f"big): {_listing(blocked)}; move them away or use --force"
            )
        if changed:
            mode = "--reset" if force else "-m"
            try:
                self._git("read-tree", mode, "-u", current, target_tree, index=self.index_file)
            except GitCommandError as exc:
                blocked = re.findall(r"^\t(.+)$", str(exc.stderr or ""), re.M)
                raise CheckpointError(
                    f"restoring would overwrite files that are not in any checkpoint "
                    f"({_listing(blocked) or _git_error(exc)}); use --force to overwrite them"
                ) from None
        tree, skipped = self._stage(self.index_file)
        head = self.head()
        if head is None or self._tree_of(head) != tree:
            self._commit(tree, self._step_of(target), f"restored {target}", "restore", skipped)
        return changed

    def _is_tree(self, tree: str, path: str) -> bool:
        """Is ``path`` a directory in ``tree`` (a checkpointed directory the merge may replace)?"""
        entry = self._git("ls-tree", "-z", tree, "--", path).rstrip(b"\0")
        meta, _, name = entry.partition(b"\t")
        return os.fsdecode(name) == path and meta.split()[1:2] == [b"tree"]

    def _step_of(self, commit: str) -> int:
        body = self._git("show", "-s", "--format=%B", commit).decode("utf-8", "surrogateescape")
        match = re.search(r"^Kimi-Code-Step: (-?\d+)$", body, re.M)
        return int(match.group(1)) if match else -1

    # ------------------------------------------------------------------ results

    def _identity(self, author: str | None) -> tuple[str, str]:
        if author:
            match = _AUTHOR_RE.match(author)
            if not match:
                raise CheckpointError(f"author must look like 'Name <email>', got {author!r}")
            return match.group(1), match.group(2)
        reader = self._repo.config_reader()
        name = reader.get_value("user", "name", default="")
        email = reader.get_value("user", "email", default="")
        if name and email:
            return str(name), str(email)
        return IDENTITY_NAME, IDENTITY_EMAIL

    @_user_facing
    def export_branch(self, commit: str, branch: str, message: str, author: str | None = None) -> str:
        """Create ``branch`` with one new commit: parent = the user's HEAD at session start, tree =
        checkpoint ``commit`` (so it includes uncommitted changes the user had at start). Refuses
        an existing branch; never checks anything out. ``author`` is 'Name <email>' (default: the
        user's git identity, else kimi-code); the committer is the user's identity or the author."""
        try:
            self._text("check-ref-format", "--branch", branch)
        except GitCommandError:
            raise CheckpointError(f"invalid branch name: {branch!r}") from None
        if not message.strip():
            raise CheckpointError("a branch commit needs a message")
        tree = self._tree_of(commit)
        parent = self.start_head()
        ref = f"refs/heads/{branch}"
        if self._rev(ref) is not None:
            raise CheckpointError(f"branch {branch} already exists; choose another name")
        name, email = self._identity(author)
        user = self._identity(None)
        committer = user if user != (IDENTITY_NAME, IDENTITY_EMAIL) else (name, email)
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
               "GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}
        args = ["commit-tree", tree] + (["-p", parent] if parent else [])
        try:
            sha = self._text(*args, stdin=message.strip().encode() + b"\n", env=env)
            self._git("update-ref", "-m", "kimi-code: export", ref, sha, "")
        except GitCommandError as exc:
            raise CheckpointError(f"cannot create branch {branch}: {_git_error(exc)}") from None
        return sha

    @_user_facing
    def result_files(self, commit: str) -> list[str]:
        """The paths :meth:`patch` / :meth:`export_branch` change for checkpoint ``commit``."""
        return self._names(self.start_head() or self.empty_tree(), self._tree_of(commit))

    @_user_facing
    def patch(self, commit: str, base: str | None = None) -> str:
        """``git diff --binary`` from ``base`` (default: the user's HEAD at session start, or the
        empty tree when there was none) to checkpoint ``commit``; applies with ``git apply`` (-p1)
        on that commit, and includes changes the user had uncommitted at start. Contents that are
        not UTF-8 come back as surrogate escapes: use :meth:`write_patch` for exact bytes."""
        return self._patch_bytes(commit, base).decode("utf-8", "surrogateescape")

    @_user_facing
    def write_patch(self, commit: str, path: Path, base: str | None = None) -> None:
        """Write :meth:`patch` byte-exact to ``path`` (atomically)."""
        data = self._patch_bytes(commit, base)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise CheckpointError(f"cannot write the patch to {path}: {exc.strerror or exc}") from None

    def _patch_bytes(self, commit: str, base: str | None) -> bytes:
        start = self._tree_of(base) if base else (self.start_head() or self.empty_tree())
        return self._git("diff", *_DIFF_FLAGS, "--binary", "--full-index", start, self._tree_of(commit),
                         config=_DIFF_CONFIG)

    # ------------------------------------------------------------------ moving and cleaning up

    @_user_facing
    def save_bundle(self, path: Path) -> None:
        """Write this session's checkpoints (without the user's history) to a git bundle, e.g. in
        a cached state dir, so a retried CI job on a fresh clone can :meth:`load_bundle` and
        :meth:`restore` the workspace."""
        if self.head() is None:
            raise CheckpointError(f"session {self.session_id} has no checkpoints to save")
        start = self.start_head()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            self._git("bundle", "create", "-q", str(tmp), self.head_ref, self.base_ref,
                      *([f"^{start}"] if start else []))
        except GitCommandError as exc:
            raise CheckpointError(f"cannot write checkpoint bundle: {_git_error(exc)}") from None
        os.replace(tmp, path)

    @_user_facing
    def load_bundle(self, path: Path) -> None:
        """Bring this session's refs back from a bundle made by :meth:`save_bundle`."""
        try:
            listed = self._text("bundle", "unbundle", str(path))
        except GitCommandError as exc:
            raise CheckpointError(f"cannot read checkpoint bundle {path}: {_git_error(exc)}") from None
        for line in listed.splitlines():
            sha, _, ref = line.partition(" ")
            if ref in (self.head_ref, self.base_ref):
                self._head = _UNKNOWN
                self._git("update-ref", "-m", "kimi-code: bundle", ref, sha)

    @_user_facing
    def prune(self) -> None:
        """Delete this session's refs and private index (the commits go with the next gc)."""
        refs = self._text("for-each-ref", "--format=%(refname)", f"{REF_ROOT}/{self.session_id}/")
        self._head, self._tree = _UNKNOWN, None
        for ref in refs.splitlines():
            self._git("update-ref", "-d", ref)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    @staticmethod
    @_user_facing
    def sessions_with_refs(repo: Path) -> list[str]:
        """Session ids that have checkpoint refs (or a leftover private index) in ``repo``."""
        try:
            r = git.Repo(Path(repo))
        except (InvalidGitRepositoryError, NoSuchPathError):
            raise CheckpointError(f"{repo} is not a git work tree") from None
        refs = r.git.for_each_ref("--format=%(refname)", f"{REF_ROOT}/")
        found = {ref.split("/")[2] for ref in refs.splitlines() if ref.count("/") >= 3}
        state = Path(r.git_dir) / "kimi-code"
        if state.is_dir():
            found.update(p.name for p in state.iterdir() if p.is_dir())
        return sorted(found)
