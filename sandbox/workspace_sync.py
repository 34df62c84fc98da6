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

import base64
import io
import os
import tarfile
import secrets
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from .errors import SandboxError
from .host_tree import LISTING, Applied, HostTree, KnownPaths, LinkedWorktree, linked_worktree, parse_listing, seed_paths
from .shell import Channel

SYNC_DIR = "/tmp/kimi-code/sync"
_FRAME = b"\n@@KIMI-SYNC "
# Archives up to this size are built in memory; larger ones spill to a temporary file.
_SPOOL = 32 << 20
# Files a tool wrote travel on the sync shell's own input (base64 in a here-document, one round
# trip; the engine's archive call costs tens of milliseconds on a remote engine) up to this size,
# beyond it by that call.
_INLINE = 256 << 10


class Remote(Protocol):
    """What the sync needs from an engine."""

    def open_channel(self, cwd: str) -> Channel:
        """A ``bash`` in the container, its stdin and stdout ours."""
        ...

    def tar_in(self, path: str, data: IO[bytes]) -> None:
        """Extract a tar into directory ``path`` of the container (the engine's archive call)."""
        ...


def _script(workspace: str, sync_dir: str, watch: bool = True) -> str:
    """The container-side functions, installed once per channel (bash 4.4+, GNU find and tar;
    with a ``python3`` there, the inotify journal of container_watch.py too). Each channel keeps
    its scratch files in a directory of its own (``ch.PID``), so a shell left over from a timed-out
    call cannot mix its files with the next one's; stamps and the watcher are shared."""
    return rf"""
export LC_ALL=C
__ks_d={shlex.quote(sync_dir)} __ks_w={shlex.quote(workspace)} __ks_gen= __ks_pid=
__ks_c=$__ks_d/ch.$$
command mkdir -p -- "$__ks_c" 2>/dev/null
for __ks_f in "$__ks_d"/ch.*; do [ "$__ks_f" = "$__ks_c" ] || builtin kill -0 "${{__ks_f##*.}}" 2>/dev/null || command rm -rf -- "$__ks_f"; done
__ks_py={"$(command -v python3 2>/dev/null)" if watch else ""}
__ks_setsid=$(command -v setsid 2>/dev/null)
[ -z "$__ks_py" ] || command cat > "$__ks_d/watch.py" <<'KIMI_SYNC_WATCHER_END'
{_watcher_source() if watch else ""}
KIMI_SYNC_WATCHER_END
__ks_send() {{ local n=0; [ -f "$2" ] && n=$(command stat -c %s -- "$2"); builtin printf '\n@@KIMI-SYNC %s %s %s\n' "$1" "$3" "$n"; [ "$n" = 0 ] || command cat -- "$2"; }}
__ks_fail() {{ builtin printf '\n@@KIMI-SYNC %s E %s\n%s' "$1" "${{#2}}" "$2"; }}
__ks_prep() {{
  [ -d "$__ks_c" ] || command mkdir -p -- "$__ks_c" 2>/dev/null || {{ __ks_fail "$1" "cannot write in $__ks_d"; return 1; }}
}}
__ks_is_watcher() {{
  local a
  [ -n "$1" ] && builtin kill -0 "$1" 2>/dev/null && builtin mapfile -d '' -t a < "/proc/$1/cmdline" 2>/dev/null \
    && [ "${{a[4]}}" = "$2" ]
}}
__ks_watch() {{
  # The inotify journal (container_watch.py): 0 when a watcher of this workspace runs.
  [ -n "$__ks_py" ] || return 1
  if [ -n "$__ks_pid" ]; then __ks_is_watcher "$__ks_pid" "$__ks_gen" && return 0; __ks_pid=; fi
  local pid= gen= line i
  if [ -f "$__ks_d/watch.pid" ] && builtin read -r pid gen < "$__ks_d/watch.pid" && __ks_is_watcher "$pid" "$gen"; then
    exec 7<>"$__ks_d/req" 8<>"$__ks_d/ack" || {{ __ks_py=; return 1; }}
    __ks_pid=$pid __ks_gen=$gen
    return 0
  fi
  [ -p "$__ks_d/req" ] || command mkfifo -m 600 -- "$__ks_d/req" "$__ks_d/ack" 2>/dev/null || {{ __ks_py=; return 1; }}
  exec 7<>"$__ks_d/req" 8<>"$__ks_d/ack" || {{ __ks_py=; return 1; }}
  __ks_gen=$RANDOM$RANDOM$$
  $__ks_setsid "$__ks_py" "$__ks_d/watch.py" "$__ks_w" "$__ks_d" "$__ks_gen" </dev/null >/dev/null 2>>"$__ks_d/watch.log" &
  __ks_pid=$!
  builtin printf '%s %s\n' "$__ks_pid" "$__ks_gen" > "$__ks_d/watch.pid"
  for ((i = 0; i < 600; i++)); do
    if builtin read -r -t 0.1 -u 8 line; then
      [ "$line" = "ready $__ks_gen" ] && return 0
      [ "${{line#fail $__ks_gen }}" != "$line" ] && break
      continue
    fi
    builtin kill -0 "$__ks_pid" 2>/dev/null || break
  done
  builtin kill "$__ks_pid" 2>/dev/null
  __ks_pid= __ks_py=  # it cannot watch this workspace: scan from now on
  return 1
}}
__ks_ask() {{
  # Ask the watcher for what it journaled since $3 of generation $2; sets __ks_st, __ks_g, __ks_off.
  local tok st g o i
  builtin printf '%s %s %s %s\n' "$1" "$2" "$3" "$__ks_c" >&7 || return 1
  for ((i = 0; i < 100; i++)); do
    if builtin read -r -t 0.1 -u 8 tok st g o; then
      [ "$tok" = "$1" ] && {{ __ks_st=$st __ks_g=$g __ks_off=$o; return 0; }}
      continue  # an answer meant for a shell that is gone
    fi
    __ks_is_watcher "$__ks_pid" "$__ks_gen" || return 1
  done
  return 1
}}
__ks_list() {{
  # Listing records (dir NUL children NUL.. NUL) of the directories named in file $1, appended to
  # $2; only for directories this user can read (an empty listing would mean "all deleted").
  local f
  while IFS= builtin read -r -d '' f; do
    [ -d "$f" ] && [ ! -L "$f" ] && [ -r "$f" ] && [ -x "$f" ] || continue
    builtin printf '%s\0' "$f" >> "$2"; command find "$f" -mindepth 1 -maxdepth 1 -print0 >> "$2" 2>/dev/null; builtin printf '\0' >> "$2"
  done < "$1"
}}
__ks_scan() {{
  local nonce=$1 base=$2 next=$3 since=() f mode=find gen= off= kind=T bs= list
  __ks_prep "$nonce" || return
  list=$__ks_c/{LISTING}.$nonce
  builtin cd -- "$__ks_w" 2>/dev/null || {{ __ks_fail "$nonce" "the workspace $__ks_w is missing"; return; }}
  {{ : > "$__ks_d/stamp.$next"; }} 2>/dev/null || {{ __ks_fail "$nonce" "cannot write in $__ks_d"; builtin cd /; return; }}
  : > "$list"; : > "$__ks_c/changed"
  if __ks_watch; then
    [ -n "$base" ] && [ -f "$__ks_d/off.$base" ] && builtin read -r gen off < "$__ks_d/off.$base"
    if __ks_ask "$nonce" "${{gen:-none}}" "${{off:--1}}"; then
      builtin printf '%s %s\n' "$__ks_g" "$__ks_off" > "$__ks_d/off.$next"
      [ "$__ks_st" = ok ] && mode=journal kind=J
    fi
  fi
  if [ $mode = find ]; then
    [ -n "$base" ] && [ -e "$__ks_d/stamp.$base" ] && {{ since=(-cnewer "$__ks_d/stamp.$base"); bs=$__ks_d/stamp.$base; }}
    command find . -path ./.git -prune -o "${{since[@]}}" -print0 > "$__ks_c/changed" 2>/dev/null
    __ks_list "$__ks_c/changed" "$list"
    # A directory whose status changed but whose entries did not was moved in (or chmod-ed): what
    # it holds keeps its old times, so it goes whole, with a listing of every directory in it.
    : > "$__ks_c/whole"
    if [ -n "$bs" ]; then
      while IFS= builtin read -r -d '' f; do
        [ "$f" != . ] && [ -d "$f" ] && [ ! -L "$f" ] && ! [ "$f" -nt "$bs" ] && builtin printf '%s\0' "$f" >> "$__ks_c/whole"
      done < "$__ks_c/changed"
    fi
    if [ -s "$__ks_c/whole" ]; then
      while IFS= builtin read -r -d '' f; do
        command find "$f" -mindepth 1 -print0 >> "$__ks_c/changed" 2>/dev/null
        command find "$f" -mindepth 1 -type d -print0 > "$__ks_c/subdirs" 2>/dev/null
        __ks_list "$__ks_c/subdirs" "$list"
      done < "$__ks_c/whole"
    fi
  fi
  if [ ! -s "$__ks_c/changed" ]; then
    builtin printf '\n@@KIMI-SYNC %s %s 0\n' "$nonce" "$kind"
  else
    __ks_pack "$nonce" "$kind" "the changed files"
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
__ks_mark() {{ __ks_prep "$1" || return; {{ : > "$__ks_d/stamp.$2"; }} 2>/dev/null && builtin printf '\n@@KIMI-SYNC %s L 0\n' "$1" || __ks_fail "$1" "cannot write in $__ks_d"; }}
__ks_stamps() {{
  local f; __ks_prep "$1" || return
  : > "$__ks_c/stamps"
  for f in "$__ks_d"/stamp.*; do [ -e "$f" ] && builtin printf '%s\n' "${{f##*.}}" >> "$__ks_c/stamps"; done
  __ks_send "$1" "$__ks_c/stamps" L
}}
__ks_tree() {{
  # Whole directories (new to the host), with a listing of every directory in them.
  local nonce=$1 f list; builtin shift
  __ks_prep "$nonce" || return
  list=$__ks_c/{LISTING}.$nonce
  builtin cd -- "$__ks_w" 2>/dev/null || {{ __ks_fail "$nonce" "the workspace $__ks_w is missing"; return; }}
  : > "$list"; : > "$__ks_c/changed"
  for f in "$@"; do
    command find "./$f" -print0 >> "$__ks_c/changed" 2>/dev/null
    command find "./$f" -type d -print0 > "$__ks_c/subdirs" 2>/dev/null
    __ks_list "$__ks_c/subdirs" "$list"
  done
  __ks_pack "$nonce" T "the new directories"
  builtin cd / ; true
}}
__ks_pack() {{
  # Send the directory listing and the paths in $__ks_c/changed (cwd: the workspace) as one tar.
  local rc
  command rm -f -- "$__ks_c/out.tar"
  command tar -c -f "$__ks_c/out.tar" --no-recursion --hard-dereference --ignore-failed-read \
    -C "$__ks_c" "{LISTING}.$1" --null -C "$__ks_w" -T "$__ks_c/changed" 2>/dev/null
  rc=$?
  if (( rc > 1 )); then __ks_fail "$1" "tar could not pack $3 (exit $rc; is the disk full?)"
  else __ks_send "$1" "$__ks_c/out.tar" "$2"; fi
  command rm -f -- "$__ks_c/out.tar" "$__ks_c/{LISTING}.$1"
}}
__ks_ls() {{
  local nonce=$1 f; builtin shift
  __ks_prep "$nonce" || return
  builtin cd -- "$__ks_w" 2>/dev/null || {{ __ks_fail "$nonce" "the workspace $__ks_w is missing"; return; }}
  : > "$__ks_c/ls"
  for f in "$@"; do builtin printf '%s\0' "./$f"; done > "$__ks_c/want"
  __ks_list "$__ks_c/want" "$__ks_c/ls"
  __ks_send "$nonce" "$__ks_c/ls" L
  builtin cd / ; true
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
  # A base64 tar comes as this call's here-document (so whatever fails, bash has consumed it and
  # never runs it); __ks_place applies it.
  __ks_prep "$1" || {{ command cat > /dev/null; return; }}
  command rm -rf -- "$__ks_c/push" "$__ks_c/push.tar"
  {{ command base64 -d > "$__ks_c/push.tar" && command tar -x -f "$__ks_c/push.tar" -C "$__ks_c"; }} 2>/dev/null \
    || {{ __ks_fail "$1" "cannot unpack the files sent in (is the disk full?)"; return; }}
  __ks_place "$1"
}}
__ks_place() {{
  # Move the files of $2/push (default: this channel's) into the workspace, each only after
  # checking that no directory on its way is a symlink; answers the refused paths.
  local nonce=$1 src=${{2:-$__ks_c}} p t
  __ks_prep "$nonce" || return
  : > "$__ks_c/refused"
  [ -f "$src/push/del" ] && [ -f "$src/push/put" ] || {{ __ks_fail "$nonce" "the files sent in are missing"; return; }}
  while IFS= builtin read -r -d '' p; do
    if __ks_parent_ok "$p"; then command rm -rf -- "$__ks_w/$p"; else builtin printf '%s\0' "$p" >> "$__ks_c/refused"; fi
  done < "$src/push/del"
  while IFS= builtin read -r -d '' p; do
    t=$__ks_w/$p
    if ! __ks_parent_ok "$p"; then builtin printf '%s\0' "$p" >> "$__ks_c/refused"; continue; fi
    if [ -d "$src/push/f/$p" ] && [ ! -L "$src/push/f/$p" ]; then
      [ -d "$t" ] && [ ! -L "$t" ] || {{ command rm -rf -- "$t"; command mkdir -- "$t"; }}
    else
      [ -d "$t" ] && [ ! -L "$t" ] && command rm -rf -- "$t"
      command mv -f -T -- "$src/push/f/$p" "$t" 2>/dev/null || builtin printf '%s\0' "$p" >> "$__ks_c/refused"
    fi
  done < "$src/push/put"
  command rm -rf -- "$src/push" "$__ks_c/push.tar"
  [ "$src" = "$__ks_c" ] || command rm -rf -- "$src"
  __ks_send "$nonce" "$__ks_c/refused" L
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
        self._pending: set[str] = set()  # tool writes that could not be sent in yet
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

    def _call(self, function: str, *args: str, timeout: float = 120.0,
              heredoc: bytes | None = None) -> tuple[str, IO[bytes]]:
        """Run one helper function; (kind, payload) of its frame, the payload spooled to a
        temporary file (a pull can be large). ``heredoc`` is given to the function as a
        here-document of base64 lines: bash consumes it whatever the function does, so no byte of
        it can ever run as a command. ``timeout`` counts from the last byte received, so a large
        transfer that keeps moving is never cut. One retry on a fresh channel when the old one
        had died (the container was restarted)."""
        for attempt in (0, 1):
            nonce = secrets.token_hex(6)
            line = " ".join([function, nonce, *(shlex.quote(a) for a in args)])
            data = line.encode("utf-8", "surrogateescape")
            if heredoc is not None:
                end = f"KIMI_PUSH_{nonce}".encode()
                data += b" <<'" + end + b"'\n" + base64.encodebytes(heredoc) + end
            try:
                chan = self._channel()
                chan.send(data + b"\n")
                return self._read_frame(chan, nonce, timeout)
            except (OSError, SandboxError) as exc:
                self.close()
                if attempt:
                    raise SandboxError(f"cannot sync the workspace with the container: {exc}") from None
        raise AssertionError("unreachable")

    def _read_frame(self, chan: Channel, nonce: str, timeout: float) -> tuple[str, IO[bytes]]:
        buf = bytearray()
        marker = _FRAME + nonce.encode() + b" "
        while True:
            start = buf.find(marker)
            if start >= 0:
                header_end = buf.find(b"\n", start + len(marker))
                if header_end >= 0:
                    kind, _, size_s = bytes(buf[start + len(marker):header_end]).decode().partition(" ")
                    size = int(size_s)
                    out = tempfile.SpooledTemporaryFile(_SPOOL)
                    body = buf[header_end + 1:header_end + 1 + size]
                    out.write(body)
                    left = size - len(body)
                    while left > 0:
                        chunk = self._recv(chan, timeout)
                        out.write(chunk[:left])
                        left -= len(chunk)
                    out.seek(0)
                    return kind, out
            buf += self._recv(chan, timeout)

    @staticmethod
    def _recv(chan: Channel, timeout: float) -> bytes:
        data = chan.recv(timeout)
        if data is None:
            raise SandboxError(f"the container sent nothing for {timeout:g}s during a workspace sync")
        if not data:
            raise SandboxError("the container's sync shell ended")
        return data

    @staticmethod
    def _text(kind: str, payload: IO[bytes]) -> bytes:
        data = payload.read()
        payload.close()
        if kind == "E":
            raise SandboxError(data.decode("utf-8", "replace") or "the sync helper failed")
        return data

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
        worktree = linked_worktree(self.host.root)
        if worktree is not None:
            self._seed_git_dir(worktree, parent or "/", name)
        self.host.known.seeded(r for r in rels if not _in_git_dir(r))
        self._base = None
        self._set_stamps()
        self._mark_host()
        return len(rels)

    def _seed_git_dir(self, worktree: LinkedWorktree, parent: str, name: str) -> None:
        """A linked worktree's copy gets a ``.git`` directory of its own: the repository's shared
        part and this worktree's own state, so git works in the container as it does here. The
        archive is streamed (a repository's objects can be large), and no symlink is followed."""
        import subprocess
        import tarfile
        import threading

        read_fd, write_fd = os.pipe()
        failed: list[BaseException] = []

        def member(tar: tarfile.TarFile, rel: str, path: Path) -> None:
            info = tar.gettarinfo(str(path), f"{name}/.git/{rel}")
            info.uid, info.gid, info.uname, info.gname = *self.owner, "", ""
            info.mtime = int(info.mtime)
            if info.isdir() or info.issym():
                tar.addfile(info)
            elif info.type == tarfile.REGTYPE:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as fh:
                    data = fh.read() if rel == "config" else None
                    if data is None:
                        info.size = os.fstat(fh.fileno()).st_size
                        tar.addfile(info, fh)
                        return
                # On its own the copy is a normal repository: a bare main repository's
                # core.bare and core.worktree (ignored in a linked worktree) must not apply.
                with tempfile.NamedTemporaryFile() as tmp:
                    tmp.write(data)
                    tmp.flush()
                    for args in (["core.bare", "false"], ["--unset-all", "core.worktree"]):
                        subprocess.run(["git", "config", "--file", tmp.name, *args], capture_output=True, timeout=30)
                    data = Path(tmp.name).read_bytes()  # git config replaced the file: read it anew
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        def produce() -> None:
            try:
                with os.fdopen(write_fd, "wb") as out, tarfile.open(fileobj=out, mode="w|",
                                                                    format=tarfile.GNU_FORMAT) as tar:
                    top = tarfile.TarInfo(f"{name}/.git")
                    top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                    top.uid, top.gid = self.owner
                    tar.addfile(top)
                    for rel, path in worktree.members():
                        try:
                            member(tar, rel, path)
                        except OSError:
                            continue  # vanished or became a symlink meanwhile: left out
            except BaseException as exc:  # noqa: BLE001 - reported after the reader is done
                failed.append(exc)

        writer = threading.Thread(target=produce, name="kimi-code-seed-git", daemon=True)
        writer.start()
        with os.fdopen(read_fd, "rb") as stream:
            try:
                self.remote.tar_in(parent, stream)
            finally:
                stream.close()
                writer.join(timeout=60)
        if failed and not isinstance(failed[0], (BrokenPipeError, ValueError)):
            raise SandboxError(f"could not copy the worktree's git directory in: {failed[0]}")

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
        data = self._text(*self._call("__ks_stamps"))
        numbers = sorted(int(x) for x in data.decode().split() if x.isdigit())
        if numbers:
            self._base = numbers[0]
            self._next = numbers[-1] + 1
        else:
            self._base = None
            self._next = 1
        if self._base is None:
            # Everything the container holds now is what the host sent: start the sequence.
            self._text(*self._call("__ks_mark", str(self._next)))
            self._base = self._next
            self._next += 1

    def _mark_host(self) -> None:
        """Move the host's stamp forward: only while no write waits to go in, so a resumed
        process still finds those writes newer than the stamp and sends them."""
        if self.stamp_file is None or self._pending:
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
        """Bring what changed in the container since the last sync to the host's copy (writes a
        tool could not send in earlier go first)."""
        started = time.monotonic()
        if self._pending:
            self._flush_pending()
        if self._base is None:
            self._set_stamps()
        nxt = self._next
        kind, payload = self._call("__ks_scan", str(self._base), str(nxt))
        journal = kind == "J"
        applied = self._apply(kind, payload, keep)
        rounds = 0
        while applied.new_dirs and rounds < 8:
            rounds += 1
            wanted = _outermost(applied.new_dirs)
            extra = self._apply(*self._call("__ks_tree", *wanted), keep)
            applied.written += extra.written
            applied.deleted += extra.deleted
            applied.refused += extra.refused
            applied.new_dirs = [d for d in extra.new_dirs if not any(_below(d, w) for w in wanted)]
        self._base, self._next = nxt, nxt + 1
        if applied.changed:
            self._mark_host()
        return self._report(applied, started, journal)

    def _apply(self, kind: str, payload: IO[bytes], keep: Iterable[str]) -> Applied:
        if kind == "E":
            self._text(kind, payload)
        try:
            return self.host.apply(payload, keep=keep)
        except (OSError, tarfile.TarError) as exc:
            raise SandboxError(f"the changes from the sandbox could not be applied here: {exc}") from None
        finally:
            payload.close()

    def _report(self, applied: Applied, started: float, journal: bool = False) -> SyncReport:
        report = SyncReport(sorted(set(applied.written)), applied.deleted, applied.refused,
                            time.monotonic() - started, journal)
        if self.on_sync is not None:
            self.on_sync(report)
        return report

    # -- host -> container ---------------------------------------------------------------------
    def push(self, rels: Iterable[str], deleted: Iterable[str] = ()) -> SyncReport:
        """Send host paths (files a tool wrote) to the container, and delete ``deleted`` there.
        On failure they are kept and sent before the next sync (and the host's stamp stays
        behind them, so a resumed process sends them too)."""
        put = [r for r in dict.fromkeys(rels) if r and r != "."]
        dele = [r for r in dict.fromkeys(deleted) if r and r != "."]
        try:
            return self._push(put, dele)
        except SandboxError:
            self._pending.update(put)
            self._pending.update(dele)
            raise

    def _flush_pending(self) -> None:
        pending = sorted(self._pending)
        self._pending.clear()
        try:
            self._push([p for p in pending if self.host.exists(p)], [p for p in pending if not self.host.exists(p)])
        except SandboxError:
            self._pending.update(pending)
            raise

    def _push(self, put: list[str], dele: list[str]) -> SyncReport:
        started = time.monotonic()
        nonce_dir = f"in.{secrets.token_hex(6)}"
        with tempfile.SpooledTemporaryFile(_SPOOL) as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
                present: list[str] = []
                for rel in put:
                    info = self.host.entry(rel, self.owner, "push/f/")
                    if info is not None:
                        info[0].mtime = int(info[0].mtime)
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
                frame = self._call("__ks_take", heredoc=out.read())
            else:
                staged = _prefixed(out, nonce_dir)
                self.remote.tar_in(self.sync_dir, staged)
                frame = self._call("__ks_place", f"{self.sync_dir}/{nonce_dir}")
        refused = [os.fsdecode(p) for p in self._text(*frame).split(b"\0") if p]
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
        # Git-ignored files that never went in (a .env, node_modules) stay here, even when changed.
        host_changed = self.host.sendable(host_changed)
        pulled = self.pull(keep=host_changed)
        deleted: list[str] = []
        if host_dirs:
            raw = self._text(*self._call("__ks_ls", *host_dirs))
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


def _in_git_dir(rel: str) -> bool:
    return rel == ".git" or rel.startswith(".git/")


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top + "/")


def _outermost(dirs: list[str]) -> list[str]:
    """The directories not inside another one of the list (each is fetched whole)."""
    out: list[str] = []
    for d in sorted(set(dirs)):
        if not any(_below(d, o) for o in out):
            out.append(d)
    return out


def _prefixed(src: IO[bytes], prefix: str) -> IO[bytes]:
    """The same archive with every member under ``prefix/`` (a staging directory of its own)."""
    out = tempfile.SpooledTemporaryFile(_SPOOL)
    with tarfile.open(fileobj=src, mode="r:") as tin, tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m) if m.isreg() else None
            m.name = f"{prefix}/{m.name}"
            tout.addfile(m, data)
    out.seek(0)
    return out
