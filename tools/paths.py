"""Workspace confinement: the single place that decides whether a path is inside the workspace.

A model-given path is resolved against the workspace (relative paths, absolute host paths inside
it, and ``/workspace/...`` as the sandbox sees it); ``..`` and symlinks may move it around inside
the workspace but never out. Resolution gives a real relative path without symlinks; files are
then opened by walking that path from the workspace directory one component at a time with
``O_NOFOLLOW``, so a symlink swapped in after the check (by a process still running in the
sandbox) makes the open fail instead of escaping.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kimi_code.sandbox.atomic import replace_file
from kimi_code.sandbox.base import WORKSPACE as SANDBOX_WORKSPACE

from .types import ToolError
from .text import has_byte_escape, unescape_name

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class PathError(ToolError):
    """A path the tools refuse or cannot find; the message is meant for the model."""


class PathNotFound(PathError):
    pass


@dataclass(frozen=True)
class WorkspacePath:
    root: Path  # real (symlink-free) path of the workspace
    rel: str  # posix path relative to root without symlinks; "." for the root itself
    given: str = ""  # what the model wrote

    @property
    def host(self) -> Path:
        return self.root if self.rel == "." else self.root / self.rel

    @property
    def parts(self) -> list[str]:
        return [] if self.rel == "." else self.rel.split("/")

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else "."

    def child(self, rel: str) -> WorkspacePath:
        """A path below this one from a listing (git, os.walk): no resolution, opening checks it."""
        joined = rel if self.rel == "." else f"{self.rel}/{rel}"
        return WorkspacePath(self.root, joined, joined)

    def __str__(self) -> str:
        return self.rel


def workspace_root(workspace: Path | str) -> Path:
    root = Path(os.path.realpath(workspace))
    if not root.is_dir():
        raise PathError(f"the workspace {workspace} is not a directory")
    return root


def resolve(workspace: Path | str, path: str, sandbox_root: str = SANDBOX_WORKSPACE) -> WorkspacePath:
    """Resolve a model-given path to a real path inside the workspace, or raise PathError.
    ``sandbox_root`` is where commands see the workspace (an absolute path under it is accepted)."""
    if not isinstance(path, str) or not path.strip():
        raise PathError("the path is empty: give a path relative to the workspace, e.g. 'src/main.py'")
    if "\x00" in path:
        raise PathError("the path contains a NUL character")
    if path.startswith("~"):
        raise PathError(f"{path}: '~' is not expanded; give a path relative to the workspace")
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise PathError(f"{path!r} contains characters that cannot be part of a file name (lone "
                        "surrogates); names that are not UTF-8 are written with \\xNN escapes, "
                        "as list_files shows them") from None
    root = workspace_root(workspace)
    root_s = str(root)
    if os.path.isabs(path):
        norm = os.path.normpath(path)
        rel = None
        for base in dict.fromkeys((root_s, os.path.abspath(workspace), sandbox_root)):
            if norm == base:
                rel = "."
                break
            if norm.startswith(base.rstrip("/") + "/"):
                rel = norm[len(base.rstrip("/")) + 1:]
                break
        if rel is None:
            raise PathError(
                f"{path} is outside the workspace; give a path relative to the workspace "
                f"(or under {sandbox_root}/)"
            )
    else:
        rel = path
    rel = _undo_byte_escapes(root_s, rel)
    lexical = os.path.normpath(os.path.join(root_s, rel))
    if not _inside(lexical, root_s):
        raise PathError(f"{path} escapes the workspace (through '..'); refused")
    real = os.path.realpath(os.path.join(root_s, rel))
    if not _inside(real, root_s):
        link = _escaping_link(root, rel)
        how = f"the symlink {link[0]} -> {link[1]}" if link else "a symlink"
        raise PathError(f"{path} leads outside the workspace through {how}; refused")
    rel_real = os.path.relpath(real, root_s)
    return WorkspacePath(root, Path(rel_real).as_posix(), path)


def _undo_byte_escapes(root: str, path: str) -> str:
    """A name shown as ``bad\\xffname.txt`` (tools/text.py: a byte that is not UTF-8) means the
    file whose name has the byte 0xff there. The path as typed wins when it exists, since a name
    may really contain a backslash; otherwise the unescaped one is used when it, or its parent
    directory (for a new file), exists."""
    if not has_byte_escape(path):
        return path
    raw = unescape_name(path)
    typed, unescaped = os.path.join(root, path), os.path.join(root, raw)
    if os.path.lexists(typed):
        return path
    if os.path.lexists(unescaped):
        return raw
    if not os.path.isdir(os.path.dirname(typed)) and os.path.isdir(os.path.dirname(unescaped)):
        return raw
    return path


def resolve_for_write(workspace: Path | str, path: str, sandbox_root: str = SANDBOX_WORKSPACE) -> WorkspacePath:
    """``resolve``, and refuse anything inside the repository's ``.git``: host-side git (checkpoints,
    listings) reads its config and hooks, so writing there would let the model run code on the host."""
    wp = resolve(workspace, path, sandbox_root)
    if any(is_git_dir_name(part) for part in wp.parts):
        raise PathError(f"{path} is inside a repository's .git directory, which tools never write; "
                        "use git commands through shell to inspect the repository")
    return wp


# Characters HFS+ ignores in names (so ".g\u200cit" is ".git" there), as git itself checks.
_IGNORABLE = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070),
                            0xFEFF])


def is_git_dir_name(name: str) -> bool:
    """Whether a path component may name ``.git`` on some file system: case-insensitively
    (macOS, Windows), ignoring trailing dots and spaces (Windows) and the characters HFS+
    ignores, or as the NTFS short name ``GIT~1``."""
    folded = name.translate(_IGNORABLE).casefold().rstrip(". ")
    return folded in (".git", "git~1")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _escaping_link(root: Path, rel: str) -> tuple[str, str] | None:
    """The first symlink on the way to rel whose target leaves the workspace (for the message)."""
    current = root
    for part in Path(rel).parts:
        if part in (".", ""):
            continue
        current = current / part
        if current.is_symlink():
            if not _inside(os.path.realpath(current), str(root)):
                with contextlib.suppress(OSError):
                    return (os.path.relpath(current, root), os.readlink(current))
        if part == "..":
            current = Path(os.path.realpath(current))
    return None


# -- opening without following symlinks ---------------------------------------------------------


@contextlib.contextmanager
def parent_dir(wp: WorkspacePath, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """(fd of the parent directory, final name); walks from the root refusing every symlink."""
    parts = wp.parts
    if not parts:
        raise PathError("the workspace root itself is not a file")
    fd = os.open(wp.root, _DIR_FLAGS)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise PathNotFound(_not_found(wp.root, "/".join(parts[: i + 1]))) from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _component_error(exc, "/".join(parts[: i + 1]), fd, part) from None
            os.close(fd)
            fd = nfd
        yield fd, parts[-1]
    finally:
        os.close(fd)


def _component_error(exc: OSError, where: str, dir_fd: int, name: str) -> PathError:
    is_link = exc.errno in (errno.ELOOP, errno.EMLINK)
    if not is_link and exc.errno == errno.ENOTDIR:  # O_DIRECTORY|O_NOFOLLOW on a symlink
        with contextlib.suppress(OSError):
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    if is_link:
        return PathError(f"{where} became a symlink after it was checked; refused")
    if exc.errno == errno.ENOTDIR:
        return PathError(f"{where} is not a directory")
    return PathError(f"{where}: {exc.strerror}")


def _not_found(root: Path, shown: str) -> str:
    message = f"{shown} does not exist (paths are relative to the workspace)"
    parent = os.path.dirname(str(root / shown))
    with contextlib.suppress(OSError):
        names = os.listdir(parent)
        close = difflib.get_close_matches(os.path.basename(shown), names, n=3, cutoff=0.6)
        if close:
            prefix = os.path.dirname(shown)
            options = ", ".join((f"{prefix}/{c}" if prefix else c) for c in close)
            message += f"; did you mean {options}?"
    return message


def lstat(wp: WorkspacePath) -> os.stat_result | None:
    """stat of the final component without following it; None when it does not exist."""
    if not wp.parts:
        return os.stat(wp.root)
    try:
        with parent_dir(wp) as (dfd, name):
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except (FileNotFoundError, PathNotFound):
        return None


def open_read(wp: WorkspacePath) -> BinaryIO:
    """Open a regular file for reading, refusing symlinks, directories and special files."""
    if not wp.parts:
        raise PathError(f"{wp.given or '.'} is the workspace directory; use list_files to see what it holds")
    with parent_dir(wp) as (dfd, name):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                         dir_fd=dfd)
        except FileNotFoundError:
            raise PathNotFound(_not_found(wp.root, wp.rel)) from None
        except OSError as exc:
            raise _component_error(exc, wp.rel, dfd, name) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PathError(f"{wp.rel} is a directory; use list_files to see what it holds")
        if not stat.S_ISREG(st.st_mode):
            raise PathError(f"{wp.rel} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(wp: WorkspacePath) -> bytes:
    with open_read(wp) as f:
        return f.read()


def write_bytes(wp: WorkspacePath, data: bytes) -> bool:
    """Replace (or create) a file atomically; keeps mode and, when allowed, owner. True if created.

    The new content goes to a temporary file in the same directory which is then renamed over
    the target, so a crash at any instant leaves either the old or the new file.
    """
    with parent_dir(wp, create=True) as (dfd, name):
        try:
            old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None:
            if stat.S_ISLNK(old.st_mode):
                raise PathError(f"{wp.rel} became a symlink while it was being written; refused")
            if stat.S_ISDIR(old.st_mode):
                raise PathError(f"{wp.rel} is a directory")
            if not stat.S_ISREG(old.st_mode):
                raise PathError(f"{wp.rel} is not a regular file")
        mode = stat.S_IMODE(old.st_mode) if old else 0o666
        owner = None
        if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            owner = (old.st_uid, old.st_gid)
        replace_file(dfd, name, lambda f: f.write(data), create_mode=mode,
                     mode=mode if old is not None else None, owner=owner)
    return old is None
