"""Rewinding a session: the workspace back to a step's checkpoint, the conversation with it.

``rewind`` restores the files of the checkpoint at (or before) the step, then appends to the
session log the events that put the conversation back there; ``resume`` continues from that point.
The events are built in one place, ``rewind_events``. Heavy modules (git) are imported on use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .event_payloads import Checkpoint, EventPayload, Rewind, UserMessage


@dataclass(frozen=True)
class RewindResult:
    session_id: str
    to_step: int
    commit: str  # the checkpoint restored
    restored: list[str] = field(default_factory=list)  # the files put back


def load_session(store: Any, session_id: str | None) -> tuple[Any, Any]:
    """The session (``store.last()`` without an id) and the state its log folds to."""
    from .state import SessionState

    session = store.open(session_id) if session_id else store.last()
    return session, SessionState.fold(session.log.load())


def commit_at(state: Any, step: int) -> str:
    """The checkpoint commit of the workspace at the end of ``step`` (the last one at or before it)."""
    candidates = [s for s in state.checkpoints if s <= step]
    if not candidates:
        raise ConfigError(f"no checkpoint at or before step {step}")
    return state.checkpoints[max(candidates)]


def rewind_events(to_step: int, commit: str, restored: list[str], head: str | None) -> list[EventPayload]:
    """The events a rewind appends, in order: the rewind itself, the checkpoint the workspace is at
    now (``head``, the checkpoint ref after the restore, else ``commit``), and the notice the model
    reads on resume."""
    from . import prompts
    from .tokens import count_message

    message = {"role": "user", "content": prompts.rewind_notice(to_step)}
    return [
        Rewind(to_step=to_step, commit=commit, restored=restored),
        Checkpoint(commit=head or commit, changed=restored, skipped=[]),
        UserMessage(message=message, kind="notice", tokens=count_message(message)),
    ]


def step_diff(checkpointer: Any, state: Any, step: int | None = None) -> str | None:
    """What the session changed (``step`` None) or what one step changed, as a unified diff;
    None when that step changed nothing."""
    if state.base_commit is None:
        raise ConfigError(f"session {state.session_id} has no checkpoints (not a git repository, or no step yet)")
    if step is None:
        return checkpointer.diff(state.base_commit, state.last_checkpoint)
    if step not in state.checkpoints:
        return None
    return checkpointer.diff(commit_at(state, step - 1), state.checkpoints[step])


def undo_target(events: list[Any], step: int) -> int:
    """The step ``/undo`` goes back to from ``step``: the one at which the user's latest message
    (the task or a follow-up) was sent, so the last turn's work is taken back; undone again, it
    goes one message further back. ``events``: the session's log."""
    from . import events as ev

    marks = [e.step for e in ev.effective_events(events)
             if e.type == ev.USER_MESSAGE and e.payload.get("kind") in ("task", "continue") and e.step < step]
    if not marks:
        raise ConfigError("nothing to undo: no step since the session's first message")
    return max(marks)


def rewind_live(recorder: Any, checkpointer: Any, to_step: int, force: bool = False) -> RewindResult:
    """Rewind a session whose lock this process holds (``rewind`` below, or an interactive
    session between turns): restore the files, append the rewind's events, then rebuild the state
    from the log, so the live state is exactly what a resume would load."""
    state = recorder.state
    if state.base_commit is None:
        raise ConfigError(f"session {state.session_id} has no checkpoints to rewind to")
    if to_step < 0 or to_step > state.step:
        raise ConfigError(f"the step must be between 0 and {state.step}")
    target = commit_at(state, to_step)
    changed = checkpointer.restore(target, force=force, expected=state.last_checkpoint)
    for payload in rewind_events(to_step, target, changed, checkpointer.head()):
        recorder.record(payload, to_step)
    state.refold(recorder.session.log.load())
    return RewindResult(session_id=state.session_id, to_step=to_step, commit=target, restored=list(changed))


def rewind(state_dir: Path | str, session_id: str, to_step: int, force: bool = False) -> RewindResult:
    """Put the session's workspace and conversation back to the end of ``to_step``.

    Refuses (``CheckpointError``) when the workspace changed since the last checkpoint, unless
    ``force``. Takes the session's lock; the session is left ``interrupted`` at ``to_step``."""
    from .checkpoints import Checkpointer
    from .recorder import Recorder
    from .state import SessionState
    from .store import SessionStore

    session, state = load_session(SessionStore(Path(state_dir)), session_id)
    if state.base_commit is None:
        raise ConfigError(f"session {session.id} has no checkpoints to rewind to")
    if to_step < 0 or to_step > state.step:
        raise ConfigError(f"--to must be between 0 and {state.step}")
    session.lock()
    try:
        # Read again under the lock: the recorder appends after the log's last event.
        recorder = Recorder(session, SessionState.fold(session.log.load()))
        result = rewind_live(recorder, Checkpointer(Path(state.repo), session.id), to_step, force)
        changed, target = result.restored, result.commit
        meta = session.read_meta()
        meta.status = "interrupted"
        meta.steps = to_step
        session.write_meta(meta)
    finally:
        session.close()
    return RewindResult(session_id=session.id, to_step=to_step, commit=target, restored=list(changed))
