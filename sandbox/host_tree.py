"""The host's side of a copied workspace (``workspace = "copy"``): what changed here, and applying
what changed in the container, without ever following a symlink out of the workspace.

The container's copy is written by code we do not trust, so everything it sends is applied the
way the file tools write: names are normalised and refused when absolute, when they climb with
``..`` or name the repository's ``.git``; every directory on the way is opened with
``O_NOFOLLOW`` from the workspace root, so a symlink the container planted is recreated as a
symlink but never walked through; setuid and setgid bits are dropped; device files and hard links
are skipped. Files are replaced atomically (a temporary name, then a rename), so a kill at any
instant leaves the old or the new content.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .atomic import TMP_SUFFIX, replace_file

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The listing of changed directories travels as this first member of a pulled archive.
LISTING = ".kimi-sync-dirs"


class UnsafeName(ValueError):
    pass


def normalise(name: str) -> str:
    """A member name as a relative posix path ("." for the root); UnsafeName when it could leave
    the workspace or names its ``.git``."""
    if "\x00" in name:
        raise UnsafeName(name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or any(p == ".." for p in parts):
        raise UnsafeName(name)
    if parts and is_git_name(parts[0]):
        raise UnsafeName(name)
    return "/".join(parts) or "."


def is_git_name(name: str) -> bool:
    """``.git`` as any file system may spell it (case, trailing dots and spaces, the 8.3 name)."""
    folded = name.casefold().rstrip(". ")
    return folded in (".git", "git~1")


@contextlib.contextmanager
def _parent(root: Path, rel: str, *, create: bool) -> Iterator[tuple[int, str] | None]:
    """(fd of the parent directory, last name), walking from ``root`` without following symlinks;
    None when a directory on the way is missing (and not created) or is not a real directory."""
    parts = rel.split("/")
    fd = os.open(root, _DIR)
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    nfd = os.open(part, _DIR, dir_fd=fd)
                except OSError:
                    yield None
                    return
            except OSError:  # a symlink (ELOOP/ENOTDIR) or a file where a directory should be
                yield None
                return
            os.close(fd)
            fd = nfd
        yield fd, parts[-1]
    finally:
        os.close(fd)


def _lstat(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dfd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)  # fd-based: never follows a symlink inside
    else:
        os.unlink(name, dir_fd=dfd)


@dataclass
class Applied:
    """What a pull did to the host's copy."""

    written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # Directories the container has that the host lacked: their contents come in a second pull.
    new_dirs: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.deleted)


def parse_listing(data: bytes) -> dict[str, set[str]]:
    """``dir\\0child\\0child\\0\\0`` records (children as paths below the workspace) -> names."""
    out: dict[str, set[str]] = {}
    fields = data.split(b"\0")
    i = 0
    while i < len(fields):
        head = fields[i]
        i += 1
        if not head:
            continue
        names: set[str] = set()
        while i < len(fields) and fields[i]:
            names.add(os.fsdecode(fields[i]).rsplit("/", 1)[-1])
            i += 1
        i += 1
        try:
            out[normalise(os.fsdecode(head))] = names
        except UnsafeName:
            continue
    return out


class KnownPaths:
    """Paths that have been in the container: seeded, pulled from it or pushed to it. A pull
    never replaces or deletes a host entry outside this set (it exists only here: a git-ignored
    ``.env``, a file the user made meanwhile), and a git-ignored entry the container made and then
    deleted is deleted here too. Kept in ``file`` (NUL-separated, appended) for a resumed process;
    ``complete`` says whether this process knows the whole set (else pulls fall back to asking
    git what is ignored)."""

    def __init__(self, file: Path | None) -> None:
        self.file = file
        self.paths: set[str] = set()
        self.dirs: set[str] = set()
        self.complete = False
        self._persisted = False
        if file is not None:
            try:
                data = file.read_bytes()
                self.complete = self._persisted = True
            except OSError:
                data = b""
            self._remember(os.fsdecode(p) for p in data.split(b"\0") if p)

    def _remember(self, rels: Iterable[str]) -> list[str]:
        new = [r for r in rels if r not in self.paths]
        for rel in new:
            self.paths.add(rel)
            parent = rel
            while "/" in parent:
                parent = parent.rsplit("/", 1)[0]
                if parent in self.dirs:
                    break
                self.dirs.add(parent)
        return new

    def seeded(self, rels: Iterable[str]) -> None:
        """The seed went in: from now on this process knows the whole set."""
        self.complete = True
        self.add(rels)

    def add(self, rels: Iterable[str]) -> None:
        new = self._remember(rels)
        if self.file is None or not (new or not self._persisted):
            return
        try:
            if not self._persisted:  # written whole once its directory exists (the session's)
                if not self.file.parent.is_dir():
                    return
                with open(self.file, "wb") as f:
                    f.write(b"".join(os.fsencode(r) + b"\0" for r in sorted(self.paths)))
                self._persisted = True
            else:
                with open(self.file, "ab") as f:
                    f.write(b"".join(os.fsencode(r) + b"\0" for r in new))
        except OSError:
            pass

    def covers(self, rel: str) -> bool:
        return rel in self.paths or rel in self.dirs


class HostTree:
    """The host's copy of the workspace. ``owner`` (uid, gid) is given to what a pull creates when
    this process may (root working on a user's checkout keeps the files that user's)."""

    def __init__(self, root: Path, owner: tuple[int, int] | None = None, known: KnownPaths | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.owner = owner if owner is not None and os.geteuid() == 0 else None
        self.known = known if known is not None else KnownPaths(None)

    # -- applying the container's changes ------------------------------------------------------
    def apply(self, archive: bytes | IO[bytes], *, keep: Iterable[str] = ()) -> Applied:
        """Apply a pulled archive as a stream: its first member lists the changed directories
        (entries the container no longer has are deleted here), then come the changed entries.
        Paths in ``keep`` (changed here since the last sync, e.g. by a rewind) are left alone. A
        member that cannot be applied is reported as refused; the rest still are."""
        keep_set = set(keep)
        done = Applied()
        fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else archive
        if not fileobj.read(1):
            return done  # nothing changed: the container sent no archive at all
        fileobj.seek(0)
        modes: list[tuple[str, int]] = []
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:  # iterated lazily; seekable for re-reads
            first = True
            for m in tar:
                if first:
                    first = False
                    if _is_listing(m.name) and m.isfile():
                        f = tar.extractfile(m)
                        listing = parse_listing(f.read() if f else b"")
                        gone: list[str] = []
                        for rel in sorted(listing):
                            self._prune(rel, listing[rel], keep_set, done, gone)
                        if gone:
                            self._delete(gone, done)
                        continue
                try:
                    rel = normalise(m.name)
                except UnsafeName:
                    if not _is_git_member(m.name):
                        done.refused.append(m.name)
                    continue
                if rel == "." or rel in keep_set:
                    continue
                try:
                    self._member(tar, m, rel, done, modes)
                except OSError as exc:
                    done.refused.append(f"{rel} ({exc.strerror or exc})")
        for rel, mode in reversed(modes):  # directories' own modes last, deepest first
            with contextlib.suppress(OSError), _parent(self.root, rel, create=False) as pair:
                if pair is not None:
                    os.chmod(pair[1], mode, dir_fd=pair[0], follow_symlinks=False)
        self.known.add(done.written)
        return done

    def exists(self, rel: str) -> bool:
        with _parent(self.root, rel, create=False) as pair:
            return pair is not None and _lstat(*pair) is not None

    def _ours(self, rels: list[str]) -> set[str]:
        """Which existing host entries a pull may replace or delete: those that have been in the
        container (or, when this process cannot know that, those git does not ignore)."""
        if self.known.complete:
            return {r for r in rels if self.known.covers(r)}
        ignored = git_ignored(self.root, rels)
        return {r for r in rels if r not in ignored or self.known.covers(r)}

    def sendable(self, rels: list[str]) -> list[str]:
        """Host paths that may go into the container: not git-ignored, or already there."""
        ignored = git_ignored(self.root, rels)
        return [r for r in rels if r not in ignored or self.known.covers(r)]

    def _prune(self, rel: str, names: set[str], keep: set[str], done: Applied, gone: list[str]) -> None:
        """Collect the host entries of directory ``rel`` that the container's listing lacks."""
        if rel == ".":
            ctx = contextlib.nullcontext((None, None))
        else:
            ctx = _parent(self.root, rel, create=False)  # type: ignore[assignment]
        with ctx as pair:
            if pair is None:
                done.new_dirs.append(rel)
                return
            dfd, name = pair
            try:
                fd = os.open(self.root if dfd is None else name, _DIR, dir_fd=dfd)
            except OSError:
                done.new_dirs.append(rel)
                return
            try:
                for entry in os.listdir(fd):
                    child = entry if rel == "." else f"{rel}/{entry}"
                    if entry in names or child in keep or entry.endswith(TMP_SUFFIX):
                        continue
                    if rel == "." and is_git_name(entry):
                        continue
                    gone.append(child)
            finally:
                os.close(fd)

    def _delete(self, rels: list[str], done: Applied) -> None:
        """Delete what the container deleted, and only what has been there: inside a deleted
        directory, entries that exist only here (git-ignored ones that never went in) are kept,
        and so is the directory that holds them."""
        ours = self._ours(rels)
        for rel in rels:
            if rel not in ours:
                continue
            with _parent(self.root, rel, create=False) as pair:
                if pair is None:
                    continue
                dfd, name = pair
                st = _lstat(dfd, name)
                if st is None:
                    continue
                try:
                    if stat.S_ISDIR(st.st_mode):
                        self._delete_dir(dfd, name, rel, done)
                    else:
                        os.unlink(name, dir_fd=dfd)
                        done.deleted.append(rel)
                except OSError as exc:
                    done.refused.append(f"{rel} ({exc.strerror or exc})")

    def _delete_dir(self, dfd: int, name: str, rel: str, done: Applied) -> bool:
        """Delete a directory's entries that are ours, then the directory if it is empty; True
        when it is gone. Never follows a symlink (each level is opened with O_NOFOLLOW)."""
        fd = os.open(name, _DIR, dir_fd=dfd)
        try:
            entries = os.listdir(fd)
            kept = False
            children = [f"{rel}/{e}" for e in entries]
            ours = self._ours(children) if children else set()
            for entry, child in zip(entries, children):
                if child not in ours or is_git_name(entry):
                    kept = True
                    continue
                st = _lstat(fd, entry)
                if st is None:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    kept |= not self._delete_dir(fd, entry, child, done)
                else:
                    os.unlink(entry, dir_fd=fd)
                    done.deleted.append(child)
        finally:
            os.close(fd)
        if kept:
            return False
        os.rmdir(name, dir_fd=dfd)
        done.deleted.append(rel)
        return True

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo, rel: str, done: Applied,
                modes: list[tuple[str, int]]) -> None:
        if not (m.isdir() or m.isreg() or m.issym()):
            return  # devices, fifos and hard links are not brought to the host
        with _parent(self.root, rel, create=True) as pair:
            if pair is None:
                done.refused.append(rel)
                return
            dfd, name = pair
            st = _lstat(dfd, name)
            mode = m.mode & 0o777
            if st is not None and not (m.isdir() and stat.S_ISDIR(st.st_mode)) and not self._ours([rel]):
                done.refused.append(f"{rel} (it exists only on this machine, which keeps its copy)")
                return
            if m.isdir():
                if st is not None and stat.S_ISDIR(st.st_mode):
                    if stat.S_IMODE(st.st_mode) != mode and mode:
                        modes.append((rel, mode))
                    return
                if st is not None:
                    _remove(dfd, name, st)
                os.mkdir(name, 0o700, dir_fd=dfd)  # writable while its entries come in
                self._chown(dfd, name)
                modes.append((rel, mode or 0o755))
                done.written.append(rel)
                return
            if m.issym():
                if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dfd) == m.linkname:
                    return
                if st is not None:
                    _remove(dfd, name, st)
                os.symlink(m.linkname, name, dir_fd=dfd)
                self._chown(dfd, name)
                done.written.append(rel)
                return
            src = tar.extractfile(m)
            if src is None:
                return
            if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == m.size:
                same = _same_content(dfd, name, src)
                if same:
                    if stat.S_IMODE(st.st_mode) != mode:
                        os.chmod(name, mode, dir_fd=dfd, follow_symlinks=False)
                    return
                src = tar.extractfile(m)  # from the start again
                if src is None:
                    return
            if st is not None and not stat.S_ISREG(st.st_mode):
                _remove(dfd, name, st)
            replace_file(dfd, name, lambda f: shutil.copyfileobj(src, f, _CHUNK), mode=mode, owner=self.owner,
                         mtime=m.mtime)
            done.written.append(rel)

    def _chown(self, dfd: int, name: str) -> None:
        if self.owner is not None:
            with contextlib.suppress(OSError):
                os.chown(name, *self.owner, dir_fd=dfd, follow_symlinks=False)

    # -- what changed here ---------------------------------------------------------------------
    def changed_since(self, when_ns: int) -> tuple[list[str], list[str]]:
        """(entries whose status changed after ``when_ns``, directories among them), below the
        root, never inside the top-level ``.git``, never through a symlink."""
        changed: list[str] = []
        dirs: list[str] = []
        stack = [""]
        with contextlib.suppress(OSError):
            if os.lstat(self.root).st_ctime_ns > when_ns:
                dirs.append(".")
        while stack:
            base = stack.pop()
            try:
                entries = list(os.scandir(self.root / base if base else self.root))
            except OSError:
                continue
            for entry in entries:
                if not base and is_git_name(entry.name):
                    continue
                if entry.name.endswith(TMP_SUFFIX):
                    continue
                rel = f"{base}/{entry.name}" if base else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if st.st_ctime_ns > when_ns:
                    changed.append(rel)
                    if is_dir:
                        dirs.append(rel)
                if is_dir:
                    stack.append(rel)
        return changed, dirs

    def listing(self, rel: str) -> set[str] | None:
        """Names in one directory of the host's copy; None when it is not a real directory here."""
        path = self.root if rel == "." else self.root / rel
        try:
            if rel != "." and (os.path.islink(path) or not path.is_dir()):
                return None
            names = set(os.listdir(path))
        except OSError:
            return None
        if rel == ".":
            names = {n for n in names if not is_git_name(n)}
        return {n for n in names if not n.endswith(TMP_SUFFIX)}

    def archive(self, rels: Iterable[str], out: IO[bytes], *, owner: tuple[int, int] = (0, 0),
                prefix: str = "") -> int:
        """Write a tar of these host paths (regular files, symlinks and directories as they are:
        no symlink followed, directories without their contents) to ``out``; how many went in."""
        count = 0
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel in rels:
                info = self.entry(rel, owner, prefix)
                if info is None:
                    continue
                info_obj, data = info
                tar.addfile(info_obj, data)
                count += 1
        return count

    def entry(self, rel: str, owner: tuple[int, int], prefix: str = "") -> tuple[tarfile.TarInfo, IO[bytes] | None] | None:
        """A tar member for one host path (no symlink followed); None when it is not there."""
        with _parent(self.root, rel, create=False) as pair:
            if pair is None:
                return None
            dfd, name = pair
            st = _lstat(dfd, name)
            if st is None:
                return None
            info = tarfile.TarInfo(f"{prefix}{rel}")
            info.uid, info.gid = owner
            info.mode = stat.S_IMODE(st.st_mode) & 0o1777
            info.mtime = st.st_mtime
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                return info, None
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(name, dir_fd=dfd)
                return info, None
            if not stat.S_ISREG(st.st_mode):
                return None
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                return None
            with os.fdopen(fd, "rb") as f:
                data = f.read()
            info.size = len(data)
            return info, io.BytesIO(data)


def _is_listing(name: str) -> bool:
    """The first member of a pulled archive is the listing, named ``LISTING.<nonce>``."""
    return name.startswith((f"{LISTING}.", f"./{LISTING}."))


def git_ignored(root: Path, rels: list[str]) -> set[str]:
    """Which of these paths git ignores in the repository at ``root`` (none outside a repository)."""
    import subprocess

    if not rels or not (root / ".git").exists():
        return set()
    try:
        done = subprocess.run(
            ["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-C", str(root),
             "check-ignore", "-z", "--stdin"],
            input=b"".join(os.fsencode(r) + b"\0" for r in rels), capture_output=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return set(rels)  # cannot tell: treat all as ignored (kept here, never sent)
    if done.returncode not in (0, 1):  # 1: none is ignored
        return set(rels)
    return {os.fsdecode(p) for p in done.stdout.split(b"\0") if p}


def _is_git_member(name: str) -> bool:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return bool(parts) and is_git_name(parts[0])


_CHUNK = 1 << 20


def _same_content(dfd: int, name: str, src: IO[bytes]) -> bool:
    """Whether the host file holds exactly what ``src`` holds, compared a chunk at a time."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        while True:
            a = src.read(_CHUNK)
            if a != f.read(len(a) or 1):
                return False
            if not a:
                return True


# What a linked worktree shares with its repository, as git's own table has it (path.c,
# common_list): these live in the common directory, except the per-worktree paths below them;
# everything else (HEAD, index, rebase and merge state, config.worktree...) is the worktree's own.
_SHARED = ("branches", "common", "hooks", "info", "logs", "lost-found", "objects", "refs", "remotes",
           "rr-cache", "svn", "config", "packed-refs", "shallow")
_OWN_BELOW_SHARED = ("info/sparse-checkout", "logs/HEAD", "logs/refs/bisect", "logs/refs/rewritten",
                     "logs/refs/worktree", "refs/bisect", "refs/rewritten", "refs/worktree")
# In a worktree's git directory but about the link itself, not part of a repository.
_LINK_FILES = ("commondir", "gitdir", "locked")


def _under(rel: str, tops: Iterable[str]) -> bool:
    return any(rel == t or rel.startswith(t + "/") for t in tops)


@dataclass(frozen=True)
class LinkedWorktree:
    """A workspace that is a linked worktree (``git worktree add``): its ``.git`` is a file naming
    ``git_dir`` (the main repository's ``.git/worktrees/NAME``), which keeps this worktree's own
    state; what it shares with the repository (objects, refs, config) is in ``common_dir``.
    ``written`` is the git directory as the ``.git`` file names it, and ``common_written`` the
    common directory as ``git_dir/commondir`` names it (either may be relative)."""

    git_dir: Path
    common_dir: Path
    written: str = ""
    common_written: str = ""

    def members(self) -> Iterator[tuple[str, Path]]:
        """(path under a stand-alone ``.git``, where it is here) for a git directory that is this
        worktree's repository on its own: the shared part from the common directory, without the
        other worktrees, and the rest from this worktree's. Symlinks are not followed."""
        for top, wanted in ((self.common_dir, True), (self.git_dir, False)):
            for dirpath, dirnames, filenames in os.walk(top):
                rel_dir = os.path.relpath(dirpath, top)
                rel_dir = "" if rel_dir == "." else rel_dir
                for name in sorted(dirnames) + sorted(filenames):
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    shared = _under(rel, _SHARED) and not _under(rel, _OWN_BELOW_SHARED)
                    if shared if wanted else not shared and rel not in _LINK_FILES:
                        yield rel, Path(dirpath, name)
                if wanted:
                    dirnames[:] = [d for d in dirnames if _under(f"{rel_dir}/{d}" if rel_dir else d, _SHARED)]

    def container_common_dir(self, workspace_path: str) -> str:
        """Where git in a container whose workspace is at ``workspace_path`` looks for the common
        directory (the paths resolved as git resolves them, relative ones from there)."""
        git_dir = os.path.normpath(os.path.join(workspace_path, self.written))
        return os.path.normpath(os.path.join(git_dir, self.common_written))


def linked_worktree(root: Path) -> LinkedWorktree | None:
    """The worktree ``root`` is, when its ``.git`` is a file naming a linked worktree's git
    directory that names this worktree back (else None: a normal repository, a submodule, no
    repository, or a ``.git`` file pointing anywhere else, which is never followed)."""
    dot_git = Path(root) / ".git"
    try:
        if dot_git.is_symlink() or not dot_git.is_file():
            return None
        first = dot_git.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith("gitdir:"):
        return None
    written = first[len("gitdir:"):].strip()
    git_dir = Path(os.path.realpath(Path(root) / written))
    try:
        common_written = (git_dir / "commondir").read_text().strip()
        back = (git_dir / "gitdir").read_text().strip()
    except OSError:
        return None  # a submodule's .git file, or a stale worktree
    common_dir = Path(os.path.realpath(git_dir / common_written))
    # Only the layout git itself makes: COMMON/worktrees/NAME, naming this .git file back.
    if (git_dir.parent.name != "worktrees" or git_dir.parent.parent != common_dir
            or os.path.realpath(git_dir / back) != os.path.realpath(dot_git)
            or not (common_dir / "objects").is_dir() or not (git_dir / "HEAD").is_file()):
        return None
    return LinkedWorktree(git_dir, common_dir, written, common_written)


def seed_paths(root: Path) -> list[str]:
    """What a new container's copy holds: in a git repository the tracked files and the untracked
    ones that are not ignored, plus ``.git``; elsewhere everything."""
    import subprocess

    root = Path(os.path.realpath(root))
    git = root / ".git"
    if git.exists():
        try:
            out = subprocess.run(
                ["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-C", str(root),
                 "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True, check=True, timeout=300,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = None
        if out is not None:
            listed = [os.fsdecode(p) for p in dict.fromkeys(out.split(b"\0")) if p]
            files: list[str] = []
            for f in listed:
                path = root / f.rstrip("/")
                if f.endswith("/") or (path.is_dir() and not path.is_symlink()):
                    # A submodule (a gitlink) or a nested repository: git lists it as one entry;
                    # its working tree (and its own .git) goes in whole.
                    files.extend(_walk(root, f.rstrip("/")))
                else:
                    files.append(f)
            dirs: dict[str, None] = {}
            for f in files:
                parent = f.rsplit("/", 1)[0] if "/" in f else ""
                while parent and parent not in dirs:
                    dirs[parent] = None
                    parent = parent.rsplit("/", 1)[0] if "/" in parent else ""
            # A linked worktree's .git file names a host path: the copy gets a git directory of
            # its own instead (LinkedWorktree.members), sent by the caller.
            git_dir = [] if linked_worktree(root) is not None else _walk(root, ".git")
            return sorted(dirs) + files + git_dir
    return _walk(root, "")


def _walk(root: Path, top: str) -> list[str]:
    out: list[str] = []
    start = root / top if top else root
    if top:
        if start.is_symlink() or not start.is_dir():
            return [top] if start.is_symlink() or start.is_file() else []
        out.append(top)
    for dirpath, dirnames, filenames in os.walk(start):
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel + "/"
        for d in list(dirnames):
            p = rel + d
            if os.path.islink(os.path.join(dirpath, d)):
                dirnames.remove(d)
                out.append(p)
            else:
                out.append(p)
        out.extend(rel + f for f in filenames)
    return out
