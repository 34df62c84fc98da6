"""A workspace the container holds (``workspace = "copy"``), kept in step with the host's copy.

On an engine that cannot see the host's files (a remote ``DOCKER_HOST``, a build server, later a
Kubernetes pod), the container gets its own working copy at start, streamed in as a tar through
the engine's archive call. The host's copy stays the source of truth for everything kimi-code does
there (file tools, search, checkpoints, diff, rewind), so the two are kept equal at every tool
boundary:

- after each command (and at the end of each step) the container reports what changed since the
  last sync, as one tar over a long-lived ``bash`` channel: a ``find -cnewer`` against a stamp file
  (status-change times, which no program can set back) lists changed entries, and for each changed
  directory its children, so deletions and renames are seen too. Only changed files travel, so
  the cost is one metadata scan plus the changed bytes. Directories new to the host come in a
  second round, whole;
- a file tool's write is pushed at once: the tar goes to a staging directory in the container
  through the archive call, and the channel moves each file into place after checking that no
  directory on its way is a symlink (the container-side counterpart of the host's O_NOFOLLOW walk);
- stamps are numbered and a stamp is deleted only once a later one has been applied on the host,
  so a kill of kimi-code between the container's scan and the host's write loses nothing: the next
  process scans from the oldest stamp left;
- reattaching (resume) reconciles both ways: what the container changed since its oldest stamp
  comes to the host, what the host changed since its own stamp (a rewind, a user's edit) goes to
  the container, and the host wins where both changed.

The transport is two primitives any engine has, an exec with streams and a tar copied in
(:class:`Remote`); that is the whole surface a Kubernetes backend would implement.
"""

from __future__ import annotations

import io
import os
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from .errors import SandboxError
from .host_tree import LISTING, Applied, HostTree, KnownPaths, parse_listing, seed_paths
from .shell import Channel

SYNC_DIR = "/tmp/kimi-code/sync"
_FRAME = b"\n@@KIMI-SYNC "
# Archives up to this size are built in memory; larger ones spill to a temporary file.
_SPOOL = 32 << 20
# Files a tool wrote travel on the sync shell's own input up to this size (one round trip; the
# engine's archive call costs tens of milliseconds on a remote engine), beyond it by that call.
_INLINE = 4 << 20


class Remote(Protocol):
    """What the sync needs from an engine."""

    def open_channel(self, cwd: str) -> Channel:
        """A ``bash`` in the container, its stdin and stdout ours."""
        ...

    def tar_in(self, path: str, data: IO[bytes]) -> None:
        """Extract a tar into directory ``path`` of the container (the engine's archive call)."""
        ...


def _script(workspace: str, sync_dir: str, watch: bool = True) -> str:
    """The container-side functions, installed once per channel (bash, GNU find and tar; with a
    ``python3`` there, the inotify journal of container_watch.py too)."""
    return rf"""
__ks_d={shlex.quote(sync_dir)} __ks_w={shlex.quote(workspace)} __ks_gen=
command mkdir -p -- "$__ks_d" 2>/dev/null
__ks_py={"$(command -v python3 2>/dev/null)" if watch else ""}
__ks_setsid=$(command -v setsid 2>/dev/null)
[ -z "$__ks_py" ] || command cat > "$__ks_d/watch.py" <<'KIMI_SYNC_WATCHER_END'
{_watcher_source() if watch else ""}
KIMI_SYNC_WATCHER_END
__ks_send() {{ local n=0; [ -f "$2" ] && n=$(command stat -c %s -- "$2"); builtin printf '\n@@KIMI-SYNC %s %s %s\n' "$1" "$3" "$n"; [ "$n" = 0 ] || command cat -- "$2"; }}
__ks_fail() {{ builtin printf '%s' "$2" > "$__ks_d/err"; __ks_send "$1" "$__ks_d/err" E; }}
__ks_watch() {{
  # The inotify journal (container_watch.py): 0 when a watcher of this workspace runs.
  [ -n "$__ks_py" ] || return 1
  local pid= line
  if [ -n "$__ks_gen" ] && [ -f "$__ks_d/watch.pid" ] && builtin read -r pid _ < "$__ks_d/watch.pid" \
      && [ -n "$pid" ] && builtin kill -0 "$pid" 2>/dev/null; then return 0; fi
  if [ -f "$__ks_d/watch.pid" ] && builtin read -r pid __ks_gen < "$__ks_d/watch.pid" && [ -n "$pid" ] \
      && builtin kill -0 "$pid" 2>/dev/null; then
    exec 7<>"$__ks_d/req" 8<>"$__ks_d/ack" || return 1
    return 0
  fi
  [ -p "$__ks_d/req" ] || command mkfifo -m 600 -- "$__ks_d/req" "$__ks_d/ack" 2>/dev/null || return 1
  exec 7<>"$__ks_d/req" 8<>"$__ks_d/ack" || return 1
  __ks_gen=$RANDOM$RANDOM$$
  $__ks_setsid "$__ks_py" "$__ks_d/watch.py" "$__ks_w" "$__ks_d" "$__ks_gen" </dev/null >/dev/null 2>>"$__ks_d/watch.log" &
  builtin printf '%s %s\n' "$!" "$__ks_gen" > "$__ks_d/watch.pid"
  while builtin read -r -t 60 -u 8 line; do [ "$line" = "ready $__ks_gen" ] && return 0; done
  __ks_py=  # it did not start: scan from now on
  return 1
}}
__ks_scan() {{
  local nonce=$1 base=$2 next=$3 since=() f mode=find gen= off= tok= st= g= newoff=
  builtin cd -- "$__ks_w" 2>/dev/null || {{ __ks_fail "$nonce" "the workspace $__ks_w is missing"; return; }}
  {{ : > "$__ks_d/stamp.$next"; }} 2>/dev/null || {{ __ks_fail "$nonce" "cannot write in $__ks_d"; return; }}
  if __ks_watch; then
    [ -n "$base" ] && [ -f "$__ks_d/off.$base" ] && builtin read -r gen off < "$__ks_d/off.$base"
    builtin printf '%s %s %s\n' "$nonce" "${{gen:-none}}" "${{off:--1}}" >&7
    while builtin read -r -t 10 -u 8 tok st g newoff; do [ "$tok" = "$nonce" ] && break; done
    if [ "$tok" = "$nonce" ]; then
      builtin printf '%s %s\n' "$g" "$newoff" > "$__ks_d/off.$next"
      [ "$st" = ok ] && mode=journal
    fi
  fi
  if [ $mode = find ]; then
    [ -n "$base" ] && [ -e "$__ks_d/stamp.$base" ] && since=(-cnewer "$__ks_d/stamp.$base")
    command find . -path ./.git -prune -o "${{since[@]}}" -print0 > "$__ks_d/changed" 2>/dev/null
  fi
  local kind=T; [ $mode = journal ] && kind=J
  if [ ! -s "$__ks_d/changed" ]; then
    builtin printf '\n@@KIMI-SYNC %s %s 0\n' "$nonce" "$kind"
  else
    if [ $mode = find ]; then
      while IFS= builtin read -r -d '' f; do
        [ -d "$f" ] && [ ! -L "$f" ] || continue
        builtin printf '%s\0' "$f"; command find "$f" -mindepth 1 -maxdepth 1 -print0 2>/dev/null; builtin printf '\0'
      done < "$__ks_d/changed" > "$__ks_d/{LISTING}"
    fi
    command tar -c -f "$__ks_d/out.tar" --no-recursion --hard-dereference --ignore-failed-read \
      -C "$__ks_d" {LISTING} --null -C "$__ks_w" -T "$__ks_d/changed" 2>/dev/null
    __ks_send "$nonce" "$__ks_d/out.tar" "$kind"
  fi
  __ks_prune "${{base:-0}}"
  builtin cd / ; true
}}
__ks_prune() {{
  # Stamps older than the one just scanned from are never asked for again.
  local f n
  for f in "$__ks_d"/stamp.* "$__ks_d"/off.*; do
    n=${{f##*.}}
    [[ $n =~ ^[0-9]+$ ]] && (( n < $1 )) && command rm -f -- "$f"
  done
  true
}}
__ks_mark() {{ command touch -- "$__ks_d/stamp.$2" && builtin printf '\n@@KIMI-SYNC %s L 0\n' "$1" || __ks_fail "$1" "cannot write in $__ks_d"; }}
__ks_stamps() {{ local f; builtin printf '' > "$__ks_d/stamps"; for f in "$__ks_d"/stamp.*; do [ -e "$f" ] && builtin printf '%s\n' "${{f##*.}}" >> "$__ks_d/stamps"; done; __ks_send "$1" "$__ks_d/stamps" L; }}
__ks_tree() {{
  local nonce=$1; builtin shift
  command tar -c -f "$__ks_d/out.tar" --hard-dereference --ignore-failed-read -C "$__ks_w" -- "$@" 2>/dev/null
  __ks_send "$nonce" "$__ks_d/out.tar" T
}}
__ks_ls() {{
  local nonce=$1 f; builtin shift
  for f in "$@"; do
    [ -d "$__ks_w/$f" ] && [ ! -L "$__ks_w/$f" ] || continue
    builtin printf '%s\0' "$f"; (builtin cd -- "$__ks_w" && command find "$f" -mindepth 1 -maxdepth 1 -print0 2>/dev/null); builtin printf '\0'
  done > "$__ks_d/ls"
  __ks_send "$nonce" "$__ks_d/ls" L
}}
__ks_parent_ok() {{
  local rest=$1 cur=$__ks_w part
  [ "${{rest%/*}}" = "$rest" ] && return 0
  rest=${{rest%/*}}
  while :; do
    part=${{rest%%/*}} cur=$cur/$part
    [ -L "$cur" ] && return 1
    [ -d "$cur" ] || command mkdir -- "$cur" 2>/dev/null || return 1
    [ "$part" = "$rest" ] && return 0
    rest=${{rest#*/}}
  done
}}
__ks_take() {{
  # The next $2 bytes of this shell's input are the tar __ks_place applies (head reads no further).
  command rm -rf -- "$__ks_d/push" "$__ks_d/push.tar"
  command head -c "$2" > "$__ks_d/push.tar" && command tar -x -f "$__ks_d/push.tar" -C "$__ks_d" 2>/dev/null \
    || {{ __ks_fail "$1" "cannot unpack the files sent in"; return; }}
  __ks_place "$1"
}}
__ks_place() {{
  local nonce=$1 p t
  builtin printf '' > "$__ks_d/refused"
  while IFS= builtin read -r -d '' p; do
    if __ks_parent_ok "$p"; then command rm -rf -- "$__ks_w/$p"; else builtin printf '%s\0' "$p" >> "$__ks_d/refused"; fi
  done < "$__ks_d/push/del"
  while IFS= builtin read -r -d '' p; do
    t=$__ks_w/$p
    if ! __ks_parent_ok "$p"; then builtin printf '%s\0' "$p" >> "$__ks_d/refused"; continue; fi
    if [ -d "$__ks_d/push/f/$p" ] && [ ! -L "$__ks_d/push/f/$p" ]; then
      [ -d "$t" ] && [ ! -L "$t" ] || {{ command rm -rf -- "$t"; command mkdir -- "$t"; }}
    else
      [ -d "$t" ] && [ ! -L "$t" ] && command rm -rf -- "$t"
      command mv -f -T -- "$__ks_d/push/f/$p" "$t" 2>/dev/null || builtin printf '%s\0' "$p" >> "$__ks_d/refused"
    fi
  done < "$__ks_d/push/put"
  command rm -rf -- "$__ks_d/push"
  __ks_send "$nonce" "$__ks_d/refused" L
}}
"""


_GNU_TAR: list[bool] = []


def _host_gnu_tar() -> bool:
    """Whether this machine's ``tar`` is GNU tar (the seed's fast path), asked once."""
    if not _GNU_TAR:
        import subprocess

        try:
            out = subprocess.run(["tar", "--version"], capture_output=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = b""
        _GNU_TAR.append(b"GNU tar" in out)
    return _GNU_TAR[0]


def _watcher_source() -> str:
    return (Path(__file__).with_name("container_watch.py")).read_text(encoding="utf-8")


@dataclass
class SyncReport:
    """One sync's effect on the host (pull) or the container (push)."""

    written: list[str]
    deleted: list[str]
    refused: list[str]
    seconds: float
    journal: bool = False  # found from the container's inotify journal, not a scan of every file

    @property
    def changed(self) -> int:
        return len(self.written) + len(self.deleted)


class WorkspaceSync:
    """Keeps a container's working copy and the host's in step (see the module docstring).

    ``stamp_file`` is a host file whose modification time marks the host's last sync (kept in the
    session's directory, so a resumed process knows what the host changed while none ran);
    ``owner`` is the container user's (uid, gid), given to the files pushed in."""

    def __init__(self, remote: Remote, host_root: Path, workspace: str, *, stamp_file: Path | None,
                 owner: tuple[int, int] = (0, 0), host_owner: tuple[int, int] | None = None,
                 sync_dir: str = SYNC_DIR, watch: bool = True) -> None:
        self.remote = remote
        self.workspace = workspace.rstrip("/") or "/"
        known = KnownPaths(stamp_file.with_suffix(".known") if stamp_file is not None else None)
        self.host = HostTree(host_root, owner=host_owner, known=known)
        self.stamp_file = stamp_file
        self.owner = owner
        self.sync_dir = sync_dir
        self.watch = watch  # use the container's inotify journal when it has a python3
        self._chan: Channel | None = None
        self._base: int | None = None  # the stamp the host has applied everything up to
        self._next = 1
        self.on_sync: Callable[[SyncReport], None] | None = None

    # -- the channel ---------------------------------------------------------------------------
    def _channel(self) -> Channel:
        if self._chan is None:
            chan = self.remote.open_channel("/")
            chan.send(_script(self.workspace, self.sync_dir, self.watch).encode())
            self._chan = chan
        return self._chan

    def close(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            try:
                chan.send(b"exit\n")
            except (OSError, SandboxError):
                pass
            chan.close()

    def _call(self, function: str, *args: str, timeout: float = 300.0,
              payload: bytes | None = None) -> tuple[str, bytes]:
        """Run one helper function; (kind, payload) of its frame. ``payload`` follows the command
        line on the shell's input (for __ks_take). One retry on a fresh channel when the old one
        had died (the container was restarted)."""
        for attempt in (0, 1):
            nonce = secrets.token_hex(6)
            line = " ".join([function, nonce, *(shlex.quote(a) for a in args)]) + "\n"
            try:
                chan = self._channel()
                chan.send(line.encode("utf-8", "surrogateescape") + (payload or b""))
                return self._read_frame(chan, nonce, timeout)
            except (OSError, SandboxError) as exc:
                self.close()
                if attempt:
                    raise SandboxError(f"cannot sync the workspace with the container: {exc}") from None
        raise AssertionError("unreachable")

    def _read_frame(self, chan: Channel, nonce: str, timeout: float) -> tuple[str, bytes]:
        deadline = time.monotonic() + timeout
        buf = bytearray()
        marker = _FRAME + nonce.encode() + b" "
        header_end = -1
        while True:
            start = buf.find(marker)
            if start >= 0:
                header_end = buf.find(b"\n", start + len(marker))
                if header_end >= 0:
                    kind, _, size_s = bytes(buf[start + len(marker):header_end]).decode().partition(" ")
                    size = int(size_s)
                    while len(buf) < header_end + 1 + size:
                        self._more(chan, buf, deadline)
                    return kind, bytes(buf[header_end + 1:header_end + 1 + size])
            self._more(chan, buf, deadline)

    @staticmethod
    def _more(chan: Channel, buf: bytearray, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SandboxError("the container did not answer the workspace sync in time")
        data = chan.recv(left)
        if data is None:
            raise SandboxError("the container did not answer the workspace sync in time")
        if not data:
            raise SandboxError("the container's sync shell ended")
        buf += data

    # -- seeding -------------------------------------------------------------------------------
    def seed(self) -> int:
        """Copy the host's working copy into an empty container (the repository's tracked and
        untracked-but-not-ignored files, and ``.git``); how many entries went in. This machine's
        GNU tar streams it when there is one (tens of times faster than Python's tarfile on a
        large repository); otherwise the archive is built here."""
        rels = seed_paths(self.host.root)
        parent, _, name = self.workspace.rpartition("/")
        with tempfile.SpooledTemporaryFile(_SPOOL) as out:
            if _host_gnu_tar():
                self._archive_members(out, name, [])  # the workspace directory itself, owned right
                out.seek(0)
                self.remote.tar_in(parent or "/", out)
                self._stream_with_tar(rels)
            else:
                self._archive_members(out, name, rels)
                out.seek(0)
                self.remote.tar_in(parent or "/", out)
        self._base = None
        self._set_stamps()
        self._mark_host()
        return len(rels)

    def _stream_with_tar(self, rels: list[str]) -> None:
        import subprocess
        import threading

        uid, gid = self.owner
        proc = subprocess.Popen(
            ["tar", "-c", "-f", "-", "--no-recursion", "--ignore-failed-read", "--numeric-owner",
             f"--owner={uid}", f"--group={gid}", "-C", str(self.host.root), "--null", "-T", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None and proc.stdout is not None

        def feed() -> None:
            try:
                for rel in rels:
                    proc.stdin.write(os.fsencode(rel) + b"\0")
            except OSError:
                pass
            finally:
                proc.stdin.close()

        feeder = threading.Thread(target=feed, name="kimi-code-seed", daemon=True)
        feeder.start()
        try:
            self.remote.tar_in(self.workspace, proc.stdout)
        finally:
            feeder.join(timeout=60)
            proc.stdout.close()
            code = proc.wait(timeout=60)
        if code not in (0, 1):  # 1: a file changed or vanished while it was read
            raise SandboxError(f"tar could not read the workspace to copy it in (exit {code})")

    def _archive_members(self, out: IO[bytes], name: str, rels: list[str]) -> None:
        import tarfile

        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            top = tarfile.TarInfo(name)
            top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            top.uid, top.gid = self.owner
            tar.addfile(top)
            for rel in rels:
                info = self.host.entry(rel, self.owner, f"{name}/")
                if info is not None:
                    info[0].mtime = int(info[0].mtime)
                    tar.addfile(*info)

    def _set_stamps(self) -> None:
        """Start the container's stamp sequence after the newest stamp it holds (a first scan
        with no base stamp sets one)."""
        kind, data = self._call("__ks_stamps")
        numbers = sorted(int(x) for x in data.decode().split() if x.isdigit())
        if numbers:
            self._base = numbers[0]
            self._next = numbers[-1] + 1
        else:
            self._base = None
            self._next = 1
        if self._base is None:
            # Everything the container holds now is what the host sent: start the sequence.
            kind, data = self._call("__ks_mark", str(self._next))
            if kind == "E":
                raise SandboxError(data.decode("utf-8", "replace"))
            self._base = self._next
            self._next += 1

    def _mark_host(self) -> None:
        if self.stamp_file is None:
            return
        try:
            self.stamp_file.touch()
        except OSError:
            pass

    def _host_mark_ns(self) -> int | None:
        if self.stamp_file is None:
            return None
        try:
            return self.stamp_file.stat().st_mtime_ns
        except OSError:
            return None

    # -- container -> host ---------------------------------------------------------------------
    def pull(self, *, keep: Iterable[str] = ()) -> SyncReport:
        """Bring what changed in the container since the last sync to the host's copy."""
        started = time.monotonic()
        if self._base is None:
            self._set_stamps()
        nxt = self._next
        kind, data = self._call("__ks_scan", str(self._base), str(nxt))
        if kind == "E":
            raise SandboxError(data.decode("utf-8", "replace"))
        applied = self.host.apply(data, keep=keep)
        journal = kind == "J"
        rounds = 0
        while applied.new_dirs and rounds < 8:
            rounds += 1
            more_kind, more = self._call("__ks_tree", *applied.new_dirs)
            extra = self.host.apply(more, keep=keep)
            applied.written += extra.written
            applied.deleted += extra.deleted
            applied.refused += extra.refused
            applied.new_dirs = [d for d in extra.new_dirs if d not in applied.new_dirs]
        self._base, self._next = nxt, nxt + 1
        if applied.changed:
            self._mark_host()
        return self._report(applied, started, journal)

    def _report(self, applied: Applied, started: float, journal: bool = False) -> SyncReport:
        report = SyncReport(sorted(set(applied.written)), applied.deleted, applied.refused,
                            time.monotonic() - started, journal)
        if self.on_sync is not None:
            self.on_sync(report)
        return report

    # -- host -> container ---------------------------------------------------------------------
    def push(self, rels: Iterable[str], deleted: Iterable[str] = ()) -> SyncReport:
        """Send host paths (files a tool wrote) to the container, and delete ``deleted`` there."""
        import tarfile

        started = time.monotonic()
        put = [r for r in dict.fromkeys(rels) if r and r != "."]
        dele = [r for r in dict.fromkeys(deleted) if r and r != "."]
        with tempfile.SpooledTemporaryFile(_SPOOL) as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                present: list[str] = []
                for rel in put:
                    info = self.host.entry(rel, self.owner, "push/f/")
                    if info is not None:
                        tar.addfile(*info)
                        present.append(rel)
                    else:
                        dele.append(rel)
                for name, items in (("push/put", present), ("push/del", dele)):
                    blob = b"".join(os.fsencode(p) + b"\0" for p in items)
                    ti = tarfile.TarInfo(name)
                    ti.size, ti.mode, ti.mtime = len(blob), 0o644, int(time.time())
                    ti.uid, ti.gid = self.owner
                    tar.addfile(ti, io.BytesIO(blob))
            size = out.tell()
            out.seek(0)
            if size <= _INLINE:
                kind, refused_raw = self._call("__ks_take", str(size), payload=out.read())
            else:
                self.remote.tar_in(self.sync_dir, out)
                kind, refused_raw = self._call("__ks_place")
        if kind == "E":
            raise SandboxError(refused_raw.decode("utf-8", "replace"))
        refused = [os.fsdecode(p) for p in refused_raw.split(b"\0") if p]
        self._mark_host()
        done = Applied(written=[p for p in present if p not in refused], deleted=dele, refused=refused)
        self.host.known.add(done.written)
        return self._report(done, started)

    # -- both ways, after a restart --------------------------------------------------------------
    def reconcile(self) -> tuple[SyncReport, SyncReport]:
        """After a new process attached to a container that outlived the last one: the container's
        unsynced changes come here, the host's changes since its stamp go there; the host's win."""
        self._set_stamps()
        mark = self._host_mark_ns()
        host_changed: list[str] = []
        host_dirs: list[str] = []
        if mark is not None:
            host_changed, host_dirs = self.host.changed_since(mark)
        pulled = self.pull(keep=host_changed)
        deleted: list[str] = []
        if host_dirs:
            _, raw = self._call("__ks_ls", *host_dirs)
            for rel, names in parse_listing(raw).items():
                mine = self.host.listing(rel)
                if mine is None:
                    continue
                for gone in sorted(names - mine):
                    deleted.append(gone if rel == "." else f"{rel}/{gone}")
        pushed = self.push([p for p in host_changed if p != "."], deleted) if (host_changed or deleted) else \
            SyncReport([], [], [], 0.0)
        if mark is None:
            self._mark_host()
        return pulled, pushed
