"""The fold over session events and the request builder."""

from __future__ import annotations

from kimi_code.agent import events as ev
from kimi_code.agent.events import Event
from kimi_code.agent.state import INTERRUPTED_RESULT, NOT_AVAILABLE_RESULT, SessionState


def _start() -> list[Event]:
    return [
        Event(ev.SESSION_STARTED, {"session_id": "s", "task": "t", "system_prompt": "SYS", "tools": []}),
        Event(ev.USER_MESSAGE, {"message": {"role": "user", "content": "# Task\nt"}, "kind": "task"}),
    ]


def _assistant(step: int, *ids: str, content: str = "", prompt_tokens: int = 0) -> Event:
    calls = [{"id": i, "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a"}'}}
             for i in ids]
    msg = {"role": "assistant", "reasoning_content": f"think {step}", "tool_calls": calls}
    if content:
        msg["content"] = content
    return Event(ev.ASSISTANT, {"message": msg, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 10,
                                                          "cached_tokens": prompt_tokens // 2}, "cost": 0.01},
                 step=step)


def _result(step: int, call_id: str, text: str = "ok", **meta: object) -> Event:
    return Event(ev.TOOL_RESULT, {"call_id": call_id, "name": "read_file", "content": text, "metadata": meta},
                 step=step)


def test_duplicate_tool_call_ids_renamed_consistently() -> None:
    events = _start() + [
        _assistant(1, "functions.read_file:0"), _result(1, "functions.read_file:0"),
        _assistant(2, "functions.read_file:0"),
    ]
    state = SessionState.fold(events)
    second = state.messages[-1]["tool_calls"][0]["id"]
    assert second != "functions.read_file:0" and second.startswith("functions.read_file:0")
    assert state.pending[0].call_id == second
    state.apply(_result(2, second))
    ids = [m.get("tool_call_id") for m in state.messages if m["role"] == "tool"]
    assert ids == ["functions.read_file:0", second]
    # The first occurrence is kept byte for byte.
    assert state.messages[1]["tool_calls"][0]["id"] == "functions.read_file:0"
    # Every later repeat gets its own id, and the renaming replays identically.
    events += [_result(2, second), _assistant(3, "functions.read_file:0", "functions.read_file:0")]
    state = SessionState.fold(events)
    third = [c["id"] for c in state.messages[-1]["tool_calls"]]
    assert len(set(third) | {second, "functions.read_file:0"}) == 4
    assert SessionState.fold(events).snapshot() == state.snapshot()


def test_request_is_valid_for_any_prefix() -> None:
    events = _start() + [_assistant(1, "a", "b"), Event(ev.TOOL_STARTED, {"call_id": "a"}, step=1), _result(1, "a")]
    state = SessionState.fold(events)
    req = state.request_messages()
    assert req[0] == {"role": "system", "content": "SYS"}
    tool_ids = [m["tool_call_id"] for m in req if m["role"] == "tool"]
    assert tool_ids == ["a", "b"]
    assert req[-1]["content"] == NOT_AVAILABLE_RESULT
    # Orphan and duplicate results are never sent.
    state.apply(_result(1, "zzz"))
    state.apply(_result(1, "a"))
    assert [m["tool_call_id"] for m in state.messages if m["role"] == "tool"] == ["a"]


def test_pending_started_flags_and_unanswered_resolution() -> None:
    state = SessionState.fold(_start() + [_assistant(1, "a", "b"), Event(ev.TOOL_STARTED, {"call_id": "a"}, step=1)])
    assert [(c.call_id, c.started) for c in state.pending] == [("a", True), ("b", False)]
    # A user message arriving while calls lack results answers them first (history stays valid).
    state.apply(Event(ev.USER_MESSAGE, {"message": {"role": "user", "content": "more"}, "kind": "continue"}))
    roles = [m["role"] for m in state.messages]
    assert roles[-3:] == ["tool", "tool", "user"]
    assert INTERRUPTED_RESULT != NOT_AVAILABLE_RESULT


def test_live_state_equals_replayed_state() -> None:
    events = _start() + [
        _assistant(1, "a", prompt_tokens=1000), _result(1, "a", todo=[{"id": "1", "content": "x", "status": "pending"}]),
        Event(ev.CHECKPOINT, {"commit": "c1", "changed": ["f.py"]}, step=1),
        _assistant(2, "b", prompt_tokens=1500), _result(2, "b", finish={"summary": "done", "status": "success"}),
        Event(ev.FINISHED, {"status": "success", "summary": "done"}, step=2),
    ]
    live = SessionState()
    for e in events:
        live.apply(e)
    assert live.snapshot() == SessionState.fold(events).snapshot()
    assert live.todo == [{"id": "1", "content": "x", "status": "pending"}]
    assert live.finished and live.finish["summary"] == "done"
    assert live.totals.prompt_tokens == 2500 and live.totals.cached_tokens == 1250
    assert live.changed_files == {"f.py"}


def test_context_tokens_corrected_by_measurement() -> None:
    state = SessionState.fold(_start() + [_assistant(1, "a", prompt_tokens=5000)])
    before = state.context_tokens
    assert before >= 5000  # the measurement plus the assistant message added after it
    state.apply(_result(1, "a", text="x" * 4000))
    assert state.context_tokens - before >= 900  # ~1000 tokens added, counted once


def test_compaction_replaces_head_and_keeps_recent_verbatim() -> None:
    events = _start() + [_assistant(1, "a"), _result(1, "a"), _assistant(2, "b"), _result(2, "b")]
    state = SessionState.fold(events)
    recent = state.messages[3:]
    head = [state.messages[0], {"role": "user", "content": "SUMMARY"}]
    state.apply(Event(ev.COMPACTION, {"keep_from": 3, "head": head, "summary": "SUMMARY"}, step=2))
    assert state.messages[:2] == head
    assert state.messages[2:] == recent
    assert state.messages[2]["reasoning_content"] == "think 2"  # kept steps keep reasoning
    assert state.compactions == 1
    assert state.measured_prompt_tokens is None
    replay = SessionState.fold(events + [Event(ev.COMPACTION, {"keep_from": 3, "head": head, "summary": "SUMMARY"},
                                               step=2)])
    assert replay.snapshot() == state.snapshot()


def test_rewind_restores_conversation_but_not_spending() -> None:
    events = _start() + [
        _assistant(1, "a"), _result(1, "a"), Event(ev.CHECKPOINT, {"commit": "c1"}, step=1),
        _assistant(2, "b"), _result(2, "b"), Event(ev.CHECKPOINT, {"commit": "c2"}, step=2),
        Event(ev.FINISHED, {"status": "success", "summary": "x"}, step=2),
    ]
    before = SessionState.fold(events)
    after = SessionState.fold(events + [Event(ev.REWIND, {"to_step": 1, "commit": "c1"}, step=1)])
    assert after.step == 1 and after.status == "running"
    assert len(after.messages) == 3
    assert after.checkpoints == {1: "c1"}
    assert after.totals.cost == before.totals.cost  # money spent stays spent


def test_empty_reply_stays_in_the_log_but_not_in_the_context() -> None:
    empty = Event(ev.ASSISTANT, {"message": {"role": "assistant", "content": "", "reasoning_content": "long think"},
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 5000}, "cost": 0.02,
                                 "finish_reason": "length"}, step=1)
    state = SessionState.fold(_start() + [empty])
    assert [m["role"] for m in state.messages] == ["user"]
    assert state.step == 1 and state.totals.completion_tokens == 5000 and state.last_finish_reason == "length"
