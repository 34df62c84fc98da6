"""The persistent-bash protocol both backends share.

One long-lived ``bash`` per sandbox keeps ``cd``, exported variables and an activated virtualenv
from one command to the next. Each command is sent as a single-quoted shell word and ``eval``-ed at
the top level of that shell, so syntax errors stay inside the command and state changes persist.
Its stdout and stderr go, interleaved, to a file inside the sandbox (stdin is ``/dev/null``); the
shell then prints a frame carrying the exit code, the new working directory and the head and tail
of that file. Reading only head and tail keeps a 50 MB output cheap, and because background
processes write to that file rather than to the protocol pipe, ``server &`` never blocks a command.

Frames on the shell's stdout (``N`` is a random per-command nonce that output cannot guess)::

    N:B <exit code> <size in bytes> <pwd, printf %q>\\n <head> [\\nN:T\\n <tail>] \\nN:E\\n

A timeout kills the command's process tree from a second process (the "side" runner): every process
started since the command began that is in the shell's process group, descends from the shell, or
carries the command's ``KIMI_CODE_CMD_ID`` in its environment — so a backgrounded grandchild dies too
while a server started by an earlier command survives. TERM first, then KILL; if the shell itself is
stuck (a loop in a shell builtin) it is killed and a new one started, and the result says so.

The transport is a :class:`Channel` (a docker exec socket, or a local subprocess's pipes) and the
backend is a :class:`ShellHost`, so Docker and local sandboxes run exactly this code.
"""

from __future__ import annotations

import collections
import secrets
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from .errors import SandboxError
from .base import ExecResult

# A command that outlives its timeout exits with this code, as with coreutils' timeout(1).
TIMEOUT_EXIT_CODE = 124
# Seconds between SIGTERM and SIGKILL for a command that timed out.
DEFAULT_KILL_GRACE = 2.0
# Read the whole output file when it is at most this many times the character cap (in bytes);
# otherwise read this many times the cap from each end. Bytes >= characters, so never too little.
_FULL_FACTOR = 4
_PART_FACTOR = 2
# How many earlier commands' processes a timeout can tell apart from the timed-out command's own.
_ISSUED_KEPT = 256
# Outputs up to this many bytes are read by bash builtins alone (no process started per command).
_FAST_BYTES = 65_536
# Small output files are deleted in batches of this many to keep the common case fork-free.
_JUNK_BATCH = 64

# Shell functions installed once per shell. ``__kimi_emit`` is shared with the side-channel
# collector used when the shell died before it could report. ``__kimi_small`` reads a short output
# with builtins alone, so the common command starts no process besides itself: the file offset in
# /proc/self/fdinfo counts every byte read, and bash keeps every byte but NUL, so when the two
# agree (and the end was reached) the text is exact; otherwise stat/head/tail read the file.
_EMIT = r"""
__kimi_small() {
  local LC_ALL=C pos= rc=0
  # fd 9 only for this block (bash restores a user's own fd 9 after it); no `exec`, which a user
  # function may shadow and which `builtin` makes temporary.
  { IFS= builtin read -r -d '' -N "$__kimi_fast" -u 9 __kimi_data; rc=$?
    builtin read -r _ pos <"/proc/self/fdinfo/9"; } 9<"$1" 2>/dev/null || return 1
  [[ $rc != 0 && $pos =~ ^[0-9]+$ ]] && (( ${#__kimi_data} == pos )) && __kimi_size=$pos
}
__kimi_emit() {
  local n=$1 f=$2 ec=$3 s=0
  if [[ -s $f ]]; then
    if __kimi_small "$f"; then
      builtin printf '%s:B %s %s %q\n%s\n%s:E\n' "$n" "$ec" "$__kimi_size" "$PWD" "$__kimi_data" "$n"
      __kimi_data=
      return
    fi
    s=$(command stat -c %s -- "$f" 2>/dev/null) || s=$(command wc -c <"$f" 2>/dev/null) || s=-1
  fi
  [[ $s =~ ^[0-9]+$ ]] || s=-1
  __kimi_size=$s __kimi_data=
  builtin printf '%s:B %s %s %q\n' "$n" "$ec" "$s" "$PWD"
  if (( s > __kimi_full )); then
    command head -c "$__kimi_part" -- "$f"
    builtin printf '\n%s:T\n' "$n"
    command tail -c "$__kimi_part" -- "$f"
  elif (( s > 0 )); then
    command head -c "$s" -- "$f"
  fi
  builtin printf '\n%s:E\n' "$n"
}
"""

_FUNCTIONS = _EMIT + r"""
__kimi_begin() {
  export KIMI_CODE_CMD_ID=$1
  local t=0
  [[ -r /proc/uptime ]] && builtin read -r t _ </proc/uptime
  builtin printf '%s %s %s\n' "$1" "$t" "$$" >|"$__kimi_dir/current"
}
__kimi_end() {
  local ec=$1 n=$2 tag=$3 xt=
  # A user's `set -x` would copy every output into the shell's stderr log: off while reporting.
  case $- in *x*) xt=1; builtin set +x ;; esac
  export -n KIMI_CODE_CMD_ID; unset KIMI_CODE_CMD_ID __kimi_cmd
  set +e
  __kimi_emit "$n" "$__kimi_out/$tag.log" "$ec"
  # Outputs small enough to be returned whole are deleted in batches; larger ones are kept.
  if (( __kimi_size >= 0 && __kimi_size <= __kimi_cap )); then
    __kimi_junk+=("$__kimi_out/$tag.log")
    if (( ${#__kimi_junk[@]} >= __kimi_batch )); then
      command rm -f -- "${__kimi_junk[@]}"; __kimi_junk=()
    fi
  fi
  [[ -z $xt ]] || builtin set -x
}
"""

# Kills what a command started: args SIGNAL SHELL_PID TAG STATE_DIR WITH_SHELL EARLIER_TAGS.
# Prints the number of processes signalled. Pure bash builtins in the scan so it still runs when
# the sandbox is near its process limit.
KILL_SCRIPT = r"""
sig=$1 shell=$2 tag=$3 dir=$4 with_shell=$5
declare -A earlier=()  # tags of this shell's earlier commands (arg 6), known only to kimi-code
for t in $6; do earlier[$t]=1; done
since=0 cur= t=
if [[ -r $dir/current ]]; then read -r cur t _ <"$dir/current"; fi
hz=100  # /proc reports start times in USER_HZ, which is 100 on Linux
if [[ $cur == "$tag" && $t =~ ^([0-9]+)\.([0-9]+)$ ]]; then
  since=$(( (10#${BASH_REMATCH[1]} * 100 + 10#${BASH_REMATCH[2]:0:2}) * hz / 100 ))
fi
rounds=1; [[ $sig == KILL ]] && rounds=8
total=0
for ((r = 0; r < rounds; r++)); do
  declare -A parent=() group=()
  cands=() victims=()
  shell_pg=
  for d in /proc/[0-9]*; do
    p=${d##*/}
    line=
    read -r line 2>/dev/null <"$d/stat" || continue
    rest=${line##*) }
    f=($rest)
    parent[$p]=${f[1]}
    [[ $p == "$shell" ]] && shell_pg=${f[2]}
    [[ $p == $$ || $p == "$shell" || ${f[0]} == Z ]] && continue
    (( ${f[19]} >= since )) && { cands+=("$p"); group[$p]=${f[2]}; }
  done
  for p in "${cands[@]}"; do
    # A process carrying an earlier command's tag was started by that command's processes (even in
    # the same clock tick as this one): spared. A tag kimi-code never issued counts for nothing,
    # so setting the variable cannot shield a process from its command's timeout.
    env=() owner=
    mapfile -d '' -t env 2>/dev/null <"/proc/$p/environ"
    for e in "${env[@]}"; do
      if [[ $e == KIMI_CODE_CMD_ID=* ]]; then owner=${e#KIMI_CODE_CMD_ID=}; break; fi
    done
    if [[ $owner == "$tag" ]]; then victims+=("$p"); continue; fi
    [[ -n $owner && ${earlier[$owner]+x} ]] && continue
    if [[ -n $shell_pg && ${group[$p]} == "$shell_pg" ]]; then victims+=("$p"); continue; fi
    q=$p
    for ((i = 0; i < 64; i++)); do
      q=${parent[$q]}
      [[ -z $q || $q == 0 || $q == 1 ]] && break
      if [[ $q == "$shell" ]]; then victims+=("$p"); break; fi
    done
  done
  [[ $with_shell == 1 && -d /proc/$shell ]] && victims+=("$shell")
  (( ${#victims[@]} )) || break
  kill -s "$sig" -- "${victims[@]}" 2>/dev/null
  total=$(( total + ${#victims[@]} ))
  unset parent group
done
echo "$total"
"""

# Reads a command's output file when its shell could not: args NONCE FILE FULL PART CWD_FILE.
# The frame's directory is the one the shell's EXIT trap recorded, or "" when it left none.
COLLECT_SCRIPT = _EMIT + r"""
__kimi_full=$3 __kimi_part=$4 __kimi_fast=$(( $3 < FAST ? $3 : FAST ))
cwd=
if [[ -r $5 ]]; then cwd=$(<"$5"); rm -f -- "$5"; fi
cd -- "${cwd:-/}" 2>/dev/null && [[ -n $cwd ]] || PWD=
__kimi_emit "$1" "$2" -1
""".replace("FAST", str(_FAST_BYTES))


class Channel(Protocol):
    """A bidirectional byte pipe to a running ``bash``."""

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes | None:
        """Next bytes of the shell's stdout; ``b""`` at end of stream, None if nothing came in time."""
        ...

    def close(self) -> None: ...

    def exit_code(self) -> int | None:
        """The shell's exit status once it has ended, when the transport can tell."""
        ...


class SideRunError(SandboxError):
    """A helper process could not be started in the sandbox (e.g. its process limit is reached)."""


class ShellHost(Protocol):
    """What a backend provides to :class:`PersistentShell`."""

    def open_channel(self, cwd: str) -> Channel:
        """Start ``bash --noprofile --norc`` in the sandbox, stdin and stdout attached."""
        ...

    def run_side(self, argv: list[str], timeout: float) -> tuple[int, bytes]:
        """Run a helper next to the shell; raises SideRunError when it cannot be started."""
        ...

    def recover(self) -> tuple[bool, list[str]]:
        """After the shell was lost: make sure the sandbox itself runs; (sandbox_restarted, notes)."""
        ...

    def force_reset(self) -> tuple[bool, list[str]]:
        """Last resort when processes cannot be killed from inside; (sandbox_restarted, notes)."""
        ...


class ShellLost(Exception):
    """The shell's stream ended (it exited, was killed, or its container died)."""


@dataclass
class _Frame:
    exit_code: int
    size: int
    cwd: str | None
    head: bytes
    tail: bytes | None


def _decode_head(data: bytes) -> str:
    """Decode, dropping a UTF-8 sequence cut at the end."""
    cut = len(data)
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0xC0:  # lead byte: is its sequence complete?
            need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4
            if back < need:
                cut = len(data) - back
            break
        if b & 0x80 == 0:
            break
    return data[:cut].decode("utf-8", errors="replace")


def _decode_tail(data: bytes) -> str:
    """Decode, dropping continuation bytes of a UTF-8 sequence cut at the start."""
    start = 0
    while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
        start += 1
    return data[start:].decode("utf-8", errors="replace")


class PersistentShell:
    """One persistent bash in a sandbox; :meth:`run` is the whole exec protocol."""

    def __init__(
        self,
        host: ShellHost,
        *,
        state_dir: str,
        cwd: str,
        output_cap: int,
        kill_grace: float = DEFAULT_KILL_GRACE,
        start_timeout: float = 30.0,
    ) -> None:
        self._host = host
        self.state_dir = state_dir.rstrip("/")
        self.out_dir = f"{self.state_dir}/out"
        self.cwd = cwd  # last known working directory; a restarted shell goes back there
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self.start_timeout = start_timeout
        self.pid: int | None = None
        self._chan: Channel | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()
        # The tags of the latest commands (a timeout spares the processes of earlier ones).
        self._issued: collections.deque[str] = collections.deque(maxlen=_ISSUED_KEPT)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._chan is not None

    def start(self) -> None:
        """Start a shell and wait until it reports ready."""
        self.close()
        chan = self._host.open_channel(self.cwd)
        self._chan = chan
        self._buf = bytearray()
        nonce = secrets.token_hex(8)
        q = shlex.quote
        boot = "\n".join(
            [
                f"__kimi_dir={q(self.state_dir)} __kimi_out={q(self.out_dir)}",
                f"__kimi_cap={self.output_cap} __kimi_full={self.output_cap * _FULL_FACTOR}"
                f" __kimi_part={self.output_cap * _PART_FACTOR} __kimi_batch={_JUNK_BATCH}"
                f" __kimi_fast={min(_FAST_BYTES, self.output_cap * _FULL_FACTOR)}",
                "__kimi_junk=()",
                'mkdir -p -- "$__kimi_out" 2>/dev/null; chmod 700 "$__kimi_dir" 2>/dev/null',
                'if [[ -w $__kimi_out ]]; then exec 2>>"$__kimi_dir/shell.err"; __kimi_ok=ok;'
                " else __kimi_ok=unwritable; fi",
                _FUNCTIONS,
                '[[ -n $HOME && ! -d $HOME ]] && mkdir -p -- "$HOME" 2>/dev/null',
                # Where the shell was when a command ended it (exit, set -e), for its successor.
                'command rm -f -- "$__kimi_dir/exit-cwd"',
                "trap 'builtin printf %s \"$PWD\" >|\"$__kimi_dir/exit-cwd\"' EXIT",
                f"cd -- {q(self.cwd)} 2>/dev/null",
                f'printf \'%s:R %s %s\\n\' {nonce} "$__kimi_ok" "$$"',
                "",
            ]
        )
        try:
            chan.send(_encode(boot))
            line = self._read_line(f"{nonce}:R ".encode(), time.monotonic() + self.start_timeout)
        except ShellLost:
            self.close()
            raise SandboxError("the sandbox shell exited while starting (is bash installed in the image?)") from None
        if line is None:
            self.close()
            raise SandboxError(f"the sandbox shell did not start within {self.start_timeout:.0f}s")
        status, _, pid = line.partition(" ")
        if status != "ok":
            self.close()
            raise SandboxError(f"cannot create {self.out_dir} in the sandbox: is /tmp writable?")
        self.pid = int(pid)

    def close(self) -> None:
        chan, self._chan = self._chan, None
        self.pid = None
        if chan is not None:
            try:
                chan.close()
            except Exception:  # noqa: BLE001 - closing a dead transport must not raise
                pass

    # -- reading ---------------------------------------------------------------------------
    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False on timeout; ShellLost at end of stream."""
        assert self._chan is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        data = self._chan.recv(remaining)
        if data is None:
            return False
        if not data:
            raise ShellLost()
        self._buf += data
        return True

    def _read_line(self, prefix: bytes, deadline: float) -> str | None:
        while True:
            i = self._buf.find(prefix)
            if i >= 0:
                j = self._buf.find(b"\n", i)
                if j >= 0:
                    line = bytes(self._buf[i + len(prefix) : j]).decode("utf-8", "replace")
                    del self._buf[: j + 1]
                    return line
            if not self._fill(deadline):
                return None

    def _read_frame(self, nonce: str, deadline: float) -> _Frame | None:
        """Wait for the command's frame; None on timeout."""
        begin = f"{nonce}:B ".encode()
        end = f"\n{nonce}:E\n".encode()
        scanned = 0
        while True:
            i = self._buf.find(begin)
            if i < 0 and len(self._buf) > len(begin):
                # Nothing before the begin marker matters (junk written into the shell's pipe by a
                # process in the sandbox): keep only what could be the start of the marker.
                del self._buf[: len(self._buf) - len(begin)]
            if i >= 0:
                j = self._buf.find(b"\n", i)
                if j >= 0:
                    k = self._buf.find(end, max(j, scanned - len(end)))
                    if k >= 0:
                        header = bytes(self._buf[i + len(begin) : j])
                        payload = bytes(self._buf[j + 1 : k])
                        del self._buf[: k + len(end)]
                        return _parse_frame(nonce, header, payload)
                    scanned = len(self._buf)
            if not self._fill(deadline):
                return None

    # -- running ---------------------------------------------------------------------------
    def run(self, command: str, timeout: float) -> ExecResult:
        """Run one command; never raises for anything the command does."""
        with self._lock:
            return self._run(command, timeout)

    def _run(self, command: str, timeout: float) -> ExecResult:
        notes: list[str] = []
        shell_restarted = sandbox_restarted = False
        if self._chan is None:
            self.start()
        # The frame nonce never appears where the command's processes can see it (environment,
        # file names, the "current" file): they get a separate tag, so a background process
        # cannot forge the end of a later command's output.
        nonce = secrets.token_hex(8)
        tag = secrets.token_hex(8)
        self._issued.append(tag)
        log = f"{self.out_dir}/{tag}.log"
        script = (
            f"__kimi_begin {tag}\n"
            f"__kimi_cmd={shlex.quote(command.replace(chr(0), ''))}\n"
            f'{{ eval "$__kimi_cmd"\n}} >{shlex.quote(log)} 2>&1 </dev/null\n'
            f"__kimi_end $? {nonce} {tag}\n"
        )
        started = time.monotonic()
        timed_out = False
        frame: _Frame | None = None
        try:
            self._chan.send(_encode(script))  # type: ignore[union-attr]
            frame = self._read_frame(nonce, started + timeout)
            if frame is None:
                timed_out = True
                frame, extra, reset = self._kill_tree(nonce, tag)
                notes += extra
                sandbox_restarted |= reset
        except (ShellLost, OSError):
            frame = None
        if frame is None:
            # The shell is gone (exit, set -e, killed, container died) or had to be killed.
            code = self._chan.exit_code() if self._chan is not None else None
            self.close()
            restarted, extra, frame, started_ok = self._replace_shell(nonce, log)
            sandbox_restarted |= restarted
            notes += extra
            if frame.exit_code < 0 and code is not None:
                frame.exit_code = code
            if not timed_out and not sandbox_restarted:
                notes.insert(0, "the command ended the shell (exit, exec, set -e or a signal)")
            shell_restarted = True
            if started_ok:
                notes.append(
                    f"a new shell was started in {self.cwd}: variables, functions and an activated "
                    "virtualenv from earlier commands are gone"
                )
        elif frame.cwd:
            self.cwd = frame.cwd
        duration = time.monotonic() - started
        output, truncated = self._render(frame, log)
        exit_code = TIMEOUT_EXIT_CODE if timed_out else frame.exit_code
        if timed_out:
            notes.insert(0, f"command timed out after {timeout:g}s; its processes were killed")
        return ExecResult(
            output=output,
            exit_code=exit_code,
            duration=duration,
            timed_out=timed_out,
            truncated=truncated,
            full_output_path=log if truncated else None,
            shell_restarted=shell_restarted,
            sandbox_restarted=sandbox_restarted,
            notes=notes,
        )

    def _replace_shell(self, nonce: str, log: str) -> tuple[bool, list[str], _Frame, bool]:
        """After the shell was lost: make sure the sandbox lives, read what the command wrote,
        and start a new shell where the old one ended. (sandbox_restarted, notes, frame, started)."""
        restarted, notes = _said(*self._host.recover())
        frame = self._collect(nonce, log)
        for attempt in range(2):
            if frame.cwd:
                self.cwd = frame.cwd
            try:
                self.start()
                return restarted, notes, frame, True
            except SandboxError as exc:
                if attempt:
                    notes.append(f"could not start a new shell: {exc}")
                    break
            # The sandbox may have been dying when it was checked: look again.
            time.sleep(0.5)
            again, extra = _said(*self._host.recover())
            restarted |= again
            notes += extra
            if frame.size < 0:
                frame = self._collect(nonce, log)
        return restarted, notes, frame, False

    def _render(self, frame: _Frame, log: str) -> tuple[str, bool]:
        cap = self.output_cap
        if frame.tail is None:
            text = frame.head.decode("utf-8", errors="replace")
            if len(text) <= cap:
                return text, False
            head, tail = text, text
        else:
            head, tail = _decode_head(frame.head), _decode_tail(frame.tail)
        size = f"{frame.size:,} bytes" if frame.size >= 0 else "output"
        note = f"[... output truncated: the middle of {size} was cut; full output saved at {log} ...]"
        half = cap // 2
        return f"{head[:half]}\n{note}\n{tail[-(cap - half):] if cap - half else ''}", True

    def _side(self, script: str, *args: str, timeout: float = 30.0) -> tuple[int, bytes]:
        return self._host.run_side(["bash", "-c", script, "kimi-code", *args], timeout)

    def _collect(self, nonce: str, log: str) -> _Frame:
        """Read a command's output from its file when the shell could not report it."""
        try:
            _, out = self._side(
                COLLECT_SCRIPT, nonce, log, str(self.output_cap * _FULL_FACTOR),
                str(self.output_cap * _PART_FACTOR), f"{self.state_dir}/exit-cwd", timeout=30.0,
            )
        except SandboxError:
            return _Frame(-1, -1, None, b"", None)
        begin = f"{nonce}:B ".encode()
        end = f"\n{nonce}:E\n".encode()
        i, k = out.find(begin), out.rfind(end)
        j = out.find(b"\n", i)
        if i < 0 or j < 0 or k < j:
            return _Frame(-1, -1, None, b"", None)
        return _parse_frame(nonce, out[i + len(begin) : j], out[j + 1 : k])

    def _kill(self, tag: str, sig: str, with_shell: bool = False) -> int:
        code, out = self._side(
            KILL_SCRIPT, sig, str(self.pid or 0), tag, self.state_dir, "1" if with_shell else "0",
            " ".join(t for t in self._issued if t != tag), timeout=30.0,
        )
        try:
            return int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def _kill_tree(self, nonce: str, tag: str) -> tuple[_Frame | None, list[str], bool]:
        """TERM, then KILL, what the command started; kill the shell itself if it stays stuck.

        Returns the command's frame if the shell survived, notes, and whether the whole sandbox
        had to be restarted.
        """
        notes: list[str] = []
        try:
            self._kill(tag, "TERM")
            frame = self._read_frame(nonce, time.monotonic() + self.kill_grace)
            self._kill(tag, "KILL")  # also whatever ignored TERM and was left behind
            if frame is None:
                frame = self._read_frame(nonce, time.monotonic() + 1.0)
            if frame is not None:
                return frame, notes, False
            # Still no frame: the shell itself is busy (a loop in a builtin). End it.
            self._kill(tag, "KILL", with_shell=True)
            try:
                while self._fill(time.monotonic() + 5.0):
                    pass
            except ShellLost:
                return None, notes, False
            notes.append("the shell did not exit after SIGKILL")
        except SideRunError as exc:
            notes.append(f"could not run the process killer in the sandbox ({exc})")
        except ShellLost:
            return None, notes, False
        restarted, extra = _said(*self._host.force_reset())
        notes += extra
        return None, notes, restarted


# What a restart is known to cost when the host did not say (any restart stops every process).
RESTART_NOTE = "the sandbox was restarted: every process running in it was stopped"


def _said(restarted: bool, notes: list[str]) -> tuple[bool, list[str]]:
    """A host's (restarted, notes), with a note whenever it restarted. The host's own notes are
    the only statement of what a restart kept (installed packages survive a restarted container,
    not a recreated one): tools/shell.py relays them and adds no sentence of its own."""
    notes = list(notes)
    if restarted and not notes:
        notes.append(RESTART_NOTE)
    return restarted, notes


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _parse_frame(nonce: str, header: bytes, payload: bytes) -> _Frame:
    parts = header.decode("utf-8", "replace").split(" ", 2)
    try:
        exit_code, size = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        exit_code, size = -1, -1
    cwd: str | None = None
    if len(parts) > 2:
        try:
            words = shlex.split(parts[2])
            cwd = words[0] if len(words) == 1 else parts[2]
        except ValueError:
            cwd = parts[2]
    sep = f"\n{nonce}:T\n".encode()
    if sep in payload:
        head, _, tail = payload.partition(sep)
        return _Frame(exit_code, size, cwd, head, tail)
    return _Frame(exit_code, size, cwd, payload, None)
