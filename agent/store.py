"""The session store: one directory per session, an append-only event log, small metadata.

Guarantees:
- ``append`` writes one line, flushes and fsyncs before returning, so anything that depends on an
  event happens only after the event is durable. Appending costs O(size of the event).
- A torn last line (a crash mid-write) is ignored on load and moved aside before the next append;
  any other corruption raises ``SessionError`` naming the line: never silently dropped.
- ``meta.json`` (status, task, counters) is derived data, rewritten atomically (temp + rename);
  when it is missing it is rebuilt from the log.
- An event of a newer format version than this code knows stops the load with one clear error:
  never a partial replay.
- A failed write (a full disk) raises ``StorageError`` naming the file and saying the session is
  intact up to its last complete event; no temporary file is left behind.
- A session is run by one process at a time (an ``flock`` on ``lock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import SessionError, StorageError
from .events import Event, newer_version_message

EVENTS_FILE = "events.jsonl"
META_FILE = "meta.json"
LOCK_FILE = "lock"


@dataclass
class SessionMeta:
    id: str
    repo: str
    task: str
    model: str
    status: str = "running"  # running | interrupted | finished | failed | limit | error
    steps: int = 0
    cost: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    parent: str | None = None  # parent session of a sub-agent (agent/swarm.py)
    root: str | None = None  # root session of a sub-agent's tree
    key: str | None = None  # identity used by `run --resume-if-exists`

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SessionMeta":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def session_key(workspace: Path | str, task: str) -> str:
    """The identity ``run --resume-if-exists`` finds a session by: its repository and task."""
    return hashlib.sha256(f"{workspace}\0{task.strip()}".encode()).hexdigest()[:16]


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _line(event: Event) -> bytes:
    """One log line. A lone surrogate (a file name that is not UTF-8, in a checkpoint's file list)
    is written as its JSON escape, which reads back as the same string: nothing is lost."""
    return (event.to_json() + "\n").encode("utf-8", "backslashreplace")


def storage_error(path: Path, exc: OSError, session_id: str | None = None) -> StorageError:
    """One line for a write that failed (a full disk, a read-only or vanished directory)."""
    what = exc.strerror or exc.__class__.__name__
    resume = f"`kimi-code resume {session_id}`" if session_id else "resume it"
    return StorageError(f"cannot write {path}: {what}; the session is intact up to its last complete event: "
                        f"free space (or fix the directory), then {resume}")


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` by ``data`` (temp + rename); ``durable`` fsyncs the data first."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class EventLog:
    """The append-only ``events.jsonl`` of one session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._next_seq = 0

    def load(self) -> list[Event]:
        """Parse the log once. A torn final line is ignored; corruption elsewhere is an error."""
        events: list[Event] = []
        if not self.path.exists():
            self._next_seq = 0
            return events
        with open(self.path, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        complete = lines[:-1]  # the part after the last newline is torn (or empty)
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                event = Event.from_dict(json.loads(raw))
            except (ValueError, KeyError, TypeError) as exc:
                raise SessionError(
                    f"session log {self.path} is corrupt at line {number} ({exc.__class__.__name__}); "
                    "it was not modified: inspect or move it aside"
                ) from None
            newer = newer_version_message(event.v, f"session log {self.path} (line {number})")
            if newer:
                raise SessionError(newer)
            events.append(event)
        self._next_seq = (events[-1].seq + 1) if events else 0
        return events

    def _open_for_append(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            size = self.path.stat().st_size
            if size:
                with open(self.path, "rb") as fh:
                    fh.seek(max(0, size - 1))
                    ends_clean = fh.read(1) == b"\n"
                if not ends_clean:
                    self._set_aside_torn_tail(size)
        self._fh = open(self.path, "ab", buffering=0)
        if self._next_seq == 0 and self.path.stat().st_size:
            self.load()

    def _set_aside_torn_tail(self, size: int) -> None:
        """Move an unfinished last line (never acknowledged to anyone) aside before appending."""
        with open(self.path, "rb+") as fh:
            data = fh.read()
            cut = data.rfind(b"\n") + 1
            torn = data[cut:]
            aside = self.path.with_name(f"{self.path.name}.torn-{int(time.time() * 1000)}")
            aside.write_bytes(torn)
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, event: Event) -> Event:
        """Write one event durably. On a failed write the file may end in a torn line, which the
        next load ignores and the next append sets aside: the log stays a valid prefix."""
        try:
            if self._fh is None:
                self._open_for_append()
            event.seq = self._next_seq
            line = _line(event)
            self._fh.write(line)
            os.fsync(self._fh.fileno())
        except OSError as exc:
            self.close()  # reopened (and a torn tail set aside) by the next append
            raise storage_error(self.path, exc, self.path.parent.name) from None
        self._next_seq += 1
        return event

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None


class SessionDir:
    """One session's directory: the event log, its metadata and its lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.id = root.name
        self.log = EventLog(root / EVENTS_FILE)
        self._lock_fh: Any = None

    @property
    def meta_path(self) -> Path:
        return self.root / META_FILE

    def read_meta(self) -> SessionMeta:
        try:
            return SessionMeta.from_dict(json.loads(self.meta_path.read_text()))
        except FileNotFoundError:
            return self.rebuild_meta()
        except (ValueError, TypeError):  # torn by a crash (it is written without fsync after a step)
            return self.rebuild_meta()

    def rebuild_meta(self) -> SessionMeta:
        """``meta.json`` is derived data: when it is gone, fold the log and write it again."""
        from .state import SessionState

        events = self.log.load()
        if not events:
            raise SessionError(f"session {self.id} has neither metadata nor events in {self.root}")
        state = SessionState.fold(events)
        t = state.totals
        status = {"running": "interrupted"}.get(state.status, state.status)
        if state.finished and (state.finish or {}).get("status") == "failure":
            status = "failed"
        meta = SessionMeta(id=self.id, repo=state.repo, task=state.task[:500], model=state.model, status=status,
                           steps=state.step, cost=round(t.cost, 6), prompt_tokens=t.prompt_tokens,
                           cached_tokens=t.cached_tokens, completion_tokens=t.completion_tokens,
                           created=events[0].time, updated=events[-1].time,
                           key=session_key(state.repo, state.task) if state.repo else None,
                           parent=events[0].payload.get("parent"), root=events[0].payload.get("root"))
        try:
            write_atomic(self.meta_path, json.dumps(asdict(meta), indent=1).encode())
        except OSError:
            pass  # still usable from memory; rebuilt again next time
        return meta

    def write_meta(self, meta: SessionMeta, durable: bool = True) -> None:
        meta.updated = time.time()
        try:
            write_atomic(self.meta_path, json.dumps(asdict(meta), indent=1).encode(), durable)
        except OSError as exc:
            raise storage_error(self.meta_path, exc, self.id) from None

    def lock(self) -> None:
        """Take the session's exclusive lock, or fail clearly if another process runs it."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.root / LOCK_FILE, "a+")
        except OSError as exc:
            raise storage_error(self.root / LOCK_FILE, exc, self.id) from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise SessionError(f"session {self.id} is being run by another kimi-code process") from None
        try:  # the pid is for people looking; the flock is what counts
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
        except OSError:
            pass
        self._lock_fh = fh

    def unlock(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def close(self) -> None:
        self.log.close()
        self.unlock()


def _is_session(root: Path) -> bool:
    """A session directory has its metadata, or at least a log to rebuild it from."""
    if (root / META_FILE).is_file():
        return True
    try:
        return (root / EVENTS_FILE).stat().st_size > 0
    except OSError:
        return False


class SessionStore:
    """All sessions under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).expanduser()

    def create(self, meta: SessionMeta, first: Event, adopt: dict[str, Path] | None = None) -> SessionDir:
        """A new session directory that already holds its first event: built under a hidden name,
        fsynced, then renamed into place, so no session directory is ever seen without its start
        event (a kill at any instant leaves either nothing or a resumable session). ``adopt``:
        directories (already fsynced, on this file system) moved in under the given names first,
        e.g. the task's attachments as ``media``, which the first event refers to; they are removed
        when the session cannot be created."""
        import shutil

        root = self.state_dir / meta.id
        if root.exists():
            for path in (adopt or {}).values():
                shutil.rmtree(path, ignore_errors=True)
            raise SessionError(f"session {meta.id} already exists")
        tmp = self.state_dir / f".{meta.id}.{os.getpid()}.new"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            for name, path in (adopt or {}).items():
                os.rename(path, tmp / name)
            first.seq = 0
            with open(tmp / EVENTS_FILE, "wb") as fh:
                fh.write(_line(first))
                fh.flush()
                os.fsync(fh.fileno())
            meta.updated = time.time()
            write_atomic(tmp / META_FILE, json.dumps(asdict(meta), indent=1).encode())
            fsync_dir(tmp)
            os.rename(tmp, root)
            fsync_dir(self.state_dir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            for path in (adopt or {}).values():
                shutil.rmtree(path, ignore_errors=True)
            raise StorageError(f"cannot create a session in {self.state_dir}: "
                               f"{exc.strerror or exc.__class__.__name__}") from None
        return SessionDir(root)

    def open(self, session_id: str) -> SessionDir:
        root = self.state_dir / session_id
        if not (session_id and _is_session(root)):
            matches = [p for p in self._dirs() if p.name.startswith(session_id)] if session_id else []
            if len(matches) == 1:
                root = matches[0]
            elif len(matches) > 1:
                raise SessionError(f"session id {session_id!r} is ambiguous: {', '.join(p.name for p in matches[:5])}")
            else:
                raise SessionError(f"no session {session_id!r} in {self.state_dir}")
        return SessionDir(root)

    def _dirs(self) -> Iterator[Path]:
        if not self.state_dir.is_dir():
            return iter(())
        return (p for p in self.state_dir.iterdir() if not p.name.startswith(".") and _is_session(p))

    def list(self) -> list[SessionMeta]:
        metas = []
        for path in self._dirs():
            try:
                metas.append(SessionDir(path).read_meta())
            except SessionError:
                continue
        return sorted(metas, key=lambda m: m.updated, reverse=True)

    def last(self) -> SessionDir:
        """The most recently updated session that ever started (a directory left without a start
        event by a version before atomic creation is never picked)."""
        for meta in self.list():
            if meta.parent:  # a sub-agent is resumed with its root (`resume --last` means a root)
                continue
            try:
                if (self.state_dir / meta.id / EVENTS_FILE).stat().st_size > 0:
                    return self.open(meta.id)
            except OSError:
                continue
        raise SessionError(f"no sessions in {self.state_dir}")

    def delete(self, session_id: str) -> None:
        import shutil

        shutil.rmtree(self.state_dir / session_id, ignore_errors=True)
