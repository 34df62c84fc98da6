"""Session events: the typed, versioned records of everything that happens.

The session log (``events.jsonl``) is the single source of truth; the live state is a fold over
these events (see ``state.py``). Readers must keep accepting every older ``v``: sessions outlive
upgrades.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

SCHEMA_VERSION: Final = 1

# Event types. Each payload is plain JSON; its fields are declared in event_payloads.py.
SESSION_STARTED: Final = "session_started"
USER_MESSAGE: Final = "user_message"
ASSISTANT: Final = "assistant"
TOOL_STARTED: Final = "tool_started"
TOOL_RESULT: Final = "tool_result"
TODO: Final = "todo"
COMPACTION: Final = "compaction"
CHECKPOINT: Final = "checkpoint"
REWIND: Final = "rewind"
SANDBOX: Final = "sandbox"
API_RETRY: Final = "api_retry"
LIMIT: Final = "limit"
INTERRUPTED: Final = "interrupted"
RESUMED: Final = "resumed"
FINISHED: Final = "finished"
MEDIA_UPLOADED: Final = "media_uploaded"
SETTINGS_CHANGED: Final = "settings_changed"
# Sub-agents (agent/swarm.py), in the parent's log: each child is a session with its own log.
CHILD_SPAWNED: Final = "child_spawned"
CHILD_STARTED: Final = "child_started"
CHILD_ENDED: Final = "child_ended"
CHILD_MERGE: Final = "child_merge"

ALL_TYPES: Final = frozenset(
    {SESSION_STARTED, USER_MESSAGE, ASSISTANT, TOOL_STARTED, TOOL_RESULT, TODO, COMPACTION, CHECKPOINT,
     REWIND, SANDBOX, API_RETRY, LIMIT, INTERRUPTED, RESUMED, FINISHED, MEDIA_UPLOADED, SETTINGS_CHANGED,
     CHILD_SPAWNED, CHILD_STARTED, CHILD_ENDED, CHILD_MERGE}
)


# Events a rewind does not undo: they describe the world (money spent, the sandbox, how runs
# ended, files uploaded to the endpoint), not the conversation.
NOT_REWOUND: Final = frozenset({API_RETRY, LIMIT, INTERRUPTED, RESUMED, FINISHED, SANDBOX, MEDIA_UPLOADED,
                                CHILD_SPAWNED, CHILD_STARTED, CHILD_ENDED, CHILD_MERGE})


def survives_rewind(event: "Event", to_step: int) -> bool:
    """The rewind rule, the one place it lives: an event earlier than a rewind stays in effect
    when it belongs to a step up to the target and is part of the conversation or workspace."""
    return event.step <= to_step and event.type not in NOT_REWOUND


def effective_events(events: list["Event"]) -> list["Event"]:
    """The events still in effect after the log's rewinds (what the fold, export and replay use)."""
    kept: list[Event] = []
    for event in events:
        if event.type == REWIND:
            to_step = int(event.payload.get("to_step", 0))
            kept = [e for e in kept if survives_rewind(e, to_step)]
        kept.append(event)
    return kept


def newer_version_message(v: int, where: str) -> str | None:
    """The error for an event of a format this code does not know (None when it knows it)."""
    if v <= SCHEMA_VERSION:
        return None
    return (f"{where} was written by a newer kimi-code (event format v{v}; this one reads up to "
            f"v{SCHEMA_VERSION}): upgrade kimi-code to open it")


@dataclass
class Event:
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    seq: int = 0  # position in the log, assigned by the store
    time: float = field(default_factory=time.time)
    v: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(
            {"v": self.v, "seq": self.seq, "type": self.type, "step": self.step, "time": round(self.time, 3),
             "payload": self.payload},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return cls(
            type=data["type"],
            payload=data.get("payload") or {},
            step=int(data.get("step", 0)),
            seq=int(data.get("seq", 0)),
            time=float(data.get("time", 0.0)),
            v=int(data.get("v", 1)),
        )
