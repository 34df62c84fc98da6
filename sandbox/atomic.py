"""Atomic replacement of one file inside an open directory: the one way both the file tools and
the copy-mode sync write into the user's workspace.

The content goes to a temporary name in the same directory (created exclusively, never through a
symlink) and is renamed over the target, so a crash at any instant leaves the old file or the new
one, and at worst a stray temporary that every walker skips by its suffix.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from typing import BinaryIO

# Every temporary made here ends with this; tree walks and change checks ignore such names.
TMP_SUFFIX = ".kimi-tmp"


def replace_file(dfd: int, name: str, fill: Callable[[BinaryIO], object], *, create_mode: int = 0o600,
                 mode: int | None = None, owner: tuple[int, int] | None = None,
                 mtime: float | None = None) -> None:
    """Write ``name`` in directory ``dfd`` with what ``fill`` writes to the file it is given.

    create_mode: the temporary's mode at creation (the umask applies); mode: set exactly
    afterwards; owner: (uid, gid), best effort; mtime: access and modification time.
    """
    tmp = f".{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                 create_mode, dir_fd=dfd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            fill(f)
        if mode is not None:
            os.fchmod(fd, mode)
        if owner is not None:
            with contextlib.suppress(OSError):
                os.fchown(fd, *owner)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        fd, closing = -1, fd
        os.close(closing)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
