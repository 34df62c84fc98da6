"""The one way an event enters a session's log.

``record`` takes a payload model (event_payloads.py: the one constructor of each event type),
appends the event durably (store.py fsyncs it), then applies it to the state, then
hands it to the observers (the replay's checks, the view): so at any instant the log on disk is a
prefix of what happened, and the state is the fold of that log. A session's first event is
written with its directory (``start``), so no directory is ever seen without it. The loop, the
session's start and resume, and ``rewind`` all write through here; nothing appends behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from .event_payloads import EventPayload, SessionStarted
from .events import Event
from .state import SessionState
from .store import SessionDir, SessionMeta, SessionStore


class Recorder:
    """Writes one session's events and keeps its state the fold of them."""

    def __init__(self, session: SessionDir, state: SessionState) -> None:
        self.session = session
        self.state = state
        # Called with every event after the state applied it (the replay provider checks tool
        # results against its recording here; the loop shows events in its view).
        self.observers: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self.first: Event | None = None  # the first event, when this recorder wrote it (start)

    @classmethod
    def start(cls, store: SessionStore, meta: SessionMeta, started: SessionStarted,
              adopt: dict[str, Path] | None = None) -> "Recorder":
        """Create the session's directory holding its first event (and the directories ``adopt``
        names, see ``SessionStore.create``), and its recorder."""
        first = Event(type=started.TYPE, payload=started.data(), step=0)
        session = store.create(meta, first, adopt)
        state = SessionState()
        state.apply(first)
        recorder = cls(session, state)
        recorder.first = first
        return recorder

    def record(self, payload: EventPayload, step: int | None = None) -> Event:
        """Append the event ``payload`` makes (at the current step unless told), fold it, tell
        the observers."""
        with self._lock:
            event = Event(type=payload.TYPE, payload=payload.data(), step=self.state.step if step is None else step)
            self.session.log.append(event)
            self.state.apply(event)
        for observer in list(self.observers):
            observer(event)
        return event
