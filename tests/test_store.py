"""The session store: append-only, torn tails, corruption, locks, atomic metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kimi_code.agent.errors import SessionError
from kimi_code.agent.events import Event
from kimi_code.agent.store import EventLog, SessionMeta, SessionStore


def _meta(i: str = "s1") -> SessionMeta:
    return SessionMeta(id=i, repo="/r", task="do it", model="kimi-k2.6")


def _start() -> Event:
    return Event("session_started", {"task": "do it"}, step=0)


def test_append_and_load_roundtrip(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl")
    for i in range(5):
        log.append(Event(type="user_message", payload={"n": i, "text": "héllo"}, step=i))
    log.close()
    events = EventLog(tmp_path / "events.jsonl").load()
    assert [e.payload["n"] for e in events] == [0, 1, 2, 3, 4]
    assert [e.seq for e in events] == [0, 1, 2, 3, 4]
    assert events[0].payload["text"] == "héllo"
    assert all(e.v == 1 for e in events)


def test_append_never_rewrites_earlier_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append(Event(type="a", payload={"x": 1}))
    before = path.read_bytes()
    inode = path.stat().st_ino
    log.append(Event(type="b", payload={"x": 2}))
    log.close()
    after = path.read_bytes()
    assert after.startswith(before)
    assert path.stat().st_ino == inode
    # Reopening continues the sequence instead of restarting it.
    log2 = EventLog(path)
    e = log2.append(Event(type="c"))
    assert e.seq == 2


def test_torn_last_line_ignored_then_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append(Event(type="a", payload={"x": 1}))
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"v":1,"seq":1,"type":"assist')  # crash mid-write
    events = EventLog(path).load()
    assert [e.type for e in events] == ["a"]
    log2 = EventLog(path)
    log2.load()
    log2.append(Event(type="b"))
    log2.close()
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["a", "b"]
    aside = list(tmp_path.glob("events.jsonl.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b'{"v":1,"seq":1')


def test_corruption_in_the_middle_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type":"a","payload":{}}\nnot json at all\n{"type":"b","payload":{}}\n')
    with pytest.raises(SessionError, match="corrupt at line 2"):
        EventLog(path).load()
    assert path.read_bytes().count(b"\n") == 3  # untouched


def test_store_create_list_open_prefix_and_lock(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    s = store.create(_meta("20260101-000000-abcdef"), _start())
    store.create(_meta("20260101-000001-123456"), _start())
    assert {m.id for m in store.list()} == {"20260101-000000-abcdef", "20260101-000001-123456"}
    assert store.open("20260101-000000").id == "20260101-000000-abcdef"
    with pytest.raises(SessionError, match="ambiguous"):
        store.open("20260101")
    with pytest.raises(SessionError, match="no session"):
        store.open("nope")
    s.lock()
    other = store.open("20260101-000000-abcdef")
    with pytest.raises(SessionError, match="another kimi-code process"):
        other.lock()
    s.unlock()
    other.lock()
    other.unlock()


def test_meta_written_atomically(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    s = store.create(_meta(), _start())
    meta = s.read_meta()
    meta.steps, meta.cost = 42, 1.5
    s.write_meta(meta)
    again = s.read_meta()
    assert (again.steps, again.cost) == (42, 1.5)
    assert not [p for p in os.listdir(s.root) if p.endswith(".tmp")]


def test_a_new_session_directory_already_holds_its_start_event(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    s = store.create(_meta("20260101-000000-abcdef"), _start())
    assert [e.type for e in s.log.load()] == ["session_started"]
    assert s.log.append(Event("user_message", {}, step=0)).seq == 1
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no building directory left


def test_last_skips_a_directory_without_a_start_event(tmp_path: Path) -> None:
    """Directories an older version created before writing the start event are never picked."""
    store = SessionStore(tmp_path)
    good = store.create(_meta("20260101-000000-abcdef"), _start())
    legacy = tmp_path / "20260101-000009-999999"
    legacy.mkdir()
    (legacy / "meta.json").write_text(json.dumps({**_meta(legacy.name).__dict__, "updated": 9e12}))
    assert store.list()[0].id == legacy.name  # newest...
    assert store.last().id == good.id  # ...but never started: not the one to resume
    (tmp_path / ".20260101-000010-aaaaaa.123.new").mkdir()  # a creation killed half-way
    assert {m.id for m in store.list()} == {good.id, legacy.name}
