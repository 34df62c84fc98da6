"""Runs inside the sandbox container (``workspace = "copy"``): an inotify journal of what changes in
the container's workspace, so a sync costs what changed rather than a scan of every file.

kimi-code never imports this module: workspace_sync.py sends its text into the container and
starts it with the container's ``python3`` (standard library only, Python 3.6 and newer), as the
container's user. Without a ``python3``, or whenever this watcher cannot vouch for a complete
journal (inotify's queue overflowed, a watch could not be added, it was killed), the sync falls
back to a full ``find -cnewer`` scan, which is always correct, and starts a new watcher.

Protocol, over two FIFOs in the sync directory: a request line ``NONCE GEN OFFSET DIR`` asks for
the entries journaled since OFFSET of generation GEN. The watcher first drains its inotify queue
(the kernel queues an event before the file system call returns, so everything a finished command
did is there), writes the changed paths (``./a/b``, NUL-separated, each once) to ``DIR/changed``
and the listing of every directory whose entries changed to ``DIR/.kimi-sync-dirs.NONCE``, and
answers ``NONCE ok GEN NEWOFFSET``; for another generation or an unknown offset it answers
``NONCE full GEN NEWOFFSET`` (the caller scans everything and keeps NEWOFFSET for next time). When
it cannot watch (a directory it may not read, the kernel's watch limit, an overflowed queue) it
says ``fail GEN REASON`` and exits.
"""

import ctypes
import errno
import os
import select
import struct
import sys

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_Q_OVERFLOW, IN_IGNORED, IN_ISDIR = 0x4000, 0x8000, 0x40000000
IN_ONLYDIR, IN_DONT_FOLLOW = 0x01000000, 0x02000000
MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
ENTRY_CHANGES = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
LISTING = ".kimi-sync-dirs"
_EVENT = struct.Struct("iIII")


class Broken(Exception):
    """The journal can no longer be complete."""


class Watcher:
    def __init__(self, root, sync_dir, gen):
        self.root = root.encode() if isinstance(root, str) else root
        self.sync_dir = sync_dir
        self.gen = gen
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise Broken("inotify_init1: " + os.strerror(ctypes.get_errno()))
        self.dirs = {}  # watch descriptor -> directory, as b"." or b"./a/b"
        self.journal = []  # (path, parent directory whose entries changed, or None)
        # Absolute offset of journal[0]: entries before the oldest offset asked for are dropped (the
        # caller deletes every stamp older than the one it asks from, so none can ask for them again).
        self.origin = 0

    def add_tree(self, rel, journal):
        """Watch ``rel`` and every directory below it (never through a symlink, never ``./.git``);
        with ``journal`` every entry found goes into the journal (a new or moved-in directory,
        whose early events came before its watch)."""
        stack = [rel]
        while stack:
            d = stack.pop()
            full = os.path.join(self.root, d)
            wd = self._add(self.fd, full, MASK | IN_ONLYDIR | IN_DONT_FOLLOW)
            if wd < 0:
                err = ctypes.get_errno()
                if err in (errno.ENOENT, errno.ENOTDIR):
                    continue  # gone again, or replaced by a file: its parent's events say so
                raise Broken("inotify_add_watch %r: %s" % (full, os.strerror(err)))
            self.dirs[wd] = d
            try:
                entries = list(os.scandir(full))
            except OSError:
                continue
            for entry in entries:
                name = entry.name if isinstance(entry.name, bytes) else os.fsencode(entry.name)
                if d == b"." and name == b".git":
                    continue
                path = d + b"/" + name
                if journal:
                    self.journal.append((path, d))
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(path)
                except OSError:
                    pass

    def drain(self):
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            i = 0
            while i < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, i)
                name = data[i + _EVENT.size:i + _EVENT.size + length].rstrip(b"\0")
                i += _EVENT.size + length
                self._event(wd, mask, name)

    def _event(self, wd, mask, name):
        if mask & IN_Q_OVERFLOW:
            raise Broken("the inotify queue overflowed")
        if mask & IN_IGNORED:
            self.dirs.pop(wd, None)
            return
        d = self.dirs.get(wd)
        if d is None or not name or (d == b"." and name == b".git"):
            return
        path = d + b"/" + name
        self.journal.append((path, d if mask & ENTRY_CHANGES else None))
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
            self.add_tree(path, journal=True)

    def answer(self, gen, offset, out_dir, nonce):
        """(status, new offset) for a request, after writing its files into ``out_dir``."""
        self.drain()
        end = self.origin + len(self.journal)
        try:
            start = int(offset)
        except ValueError:
            start = -1
        if gen != self.gen or not self.origin <= start <= end:
            return "full", end
        del self.journal[:start - self.origin]
        self.origin = start
        seen, listed, listed_set = set(), [], set()
        out = []
        for path, parent in self.journal:
            if path not in seen:
                seen.add(path)
                out.append(path)
            if parent is not None and parent not in listed_set:
                listed_set.add(parent)
                listed.append(parent)
        self._write(out_dir, "changed", b"".join(p + b"\0" for p in out))
        self._write(out_dir, "%s.%s" % (LISTING, nonce), b"".join(self._listing(d) for d in listed))
        return "ok", end

    def _listing(self, d):
        full = os.path.join(self.root, d)
        if os.path.islink(full) or not os.path.isdir(full) or not os.access(full, os.R_OK | os.X_OK):
            return b""  # no record at all: an empty one would mean that everything in it is gone
        try:
            names = os.listdir(full)
        except OSError:
            return b""
        return d + b"\0" + b"".join(d + b"/" + n + b"\0" for n in names) + b"\0"

    def _write(self, out_dir, name, data):
        path = os.path.join(out_dir, name.encode())
        with open(path + b".tmp", "wb") as f:
            f.write(data)
        os.replace(path + b".tmp", path)


def serve(root, sync_dir, gen, ack):
    watcher = Watcher(root, sync_dir, gen)
    watcher.add_tree(b".", journal=False)
    req = os.open(os.path.join(sync_dir, "req"), os.O_RDWR | os.O_NONBLOCK)
    os.write(ack, ("ready %s\n" % gen).encode())
    pending = b""
    while True:
        ready, _, _ = select.select([watcher.fd, req], [], [])
        if watcher.fd in ready:
            watcher.drain()
        if req in ready:
            try:
                pending += os.read(req, 1 << 16)
            except BlockingIOError:
                pass
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                parts = line.split(b" ", 3)
                if len(parts) != 4:
                    continue
                nonce, gen_asked, offset, out_dir = parts
                nonce = nonce.decode("ascii", "replace")
                status, end = watcher.answer(gen_asked.decode("ascii", "replace"),
                                             offset.decode("ascii", "replace"), out_dir, nonce)
                os.write(ack, ("%s %s %s %d\n" % (nonce, status, gen, end)).encode())


def main():
    root, sync_dir, gen = sys.argv[1:4]
    ack = os.open(os.path.join(sync_dir, "ack"), os.O_RDWR)
    try:
        serve(root, sync_dir, gen, ack)
    except (Broken, OSError) as exc:
        reason = " ".join(str(exc).split())
        with open(os.path.join(sync_dir, "watch.err"), "w") as f:
            f.write(reason + "\n")
        os.write(ack, ("fail %s %s\n" % (gen, reason)).encode())
        sys.exit(3)


if __name__ == "__main__":
    main()
