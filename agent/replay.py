"""The replay model provider: ``--model replay:FILE`` serves recorded model turns.

A recording is a file in the session-event format (``kimi-code export`` writes one; a session's own
``events.jsonl`` works too). Its assistant turns are served, one per step, by an in-process
:class:`~kimi_code.agent.fake_kimi.FakeKimi` on 127.0.0.1, so the client, the loop, the sandbox,
the tools, the session log and the checkpoints all run for real; only the model is recorded.

A recorded turn was chosen by a model that saw the recorded tool results. When the live results
differ (an edit that no longer applies, tests that now fail), the rest of the recording no longer
makes sense, so the replay stops with a message that says where and how the results differ.
What is compared: the error flag always; exit code and test counts for commands and test runs
(their text carries timings, versions and paths that differ between machines); the text itself
for every other tool.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from . import events as ev
from .config import DEFAULT_MODEL, MODELS, Settings
from .errors import EXIT_AGENT_FAILURE, ConfigError
from .events import Event
from .fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn

DIVERGENCE_TYPE = "replay_divergence"
DIVERGED = "replay_diverged"  # the outcome status of a stopped replay
# Tools whose result text depends on the machine (timings, versions, absolute paths).
_EXEC_TOOLS = frozenset({"shell", "run_tests"})
_TEST_KEYS = ("parsed", "passed", "failed", "errors", "skipped", "failing")


@dataclass
class RecordedTurn:
    step: int
    message: dict[str, Any]
    usage: dict[str, Any] | None
    finish_reason: str | None
    # call id as the session sent it back (repeated ids renamed, as a live replay renames them too)
    # -> the tool_result payload
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def call_ids(self) -> list[str]:
        return [c.get("id", "") for c in self.message.get("tool_calls") or ()]


@dataclass
class Recording:
    """The model's side of a recorded session, with the tool results it saw."""

    path: Path
    task: str
    model: str
    thinking: bool | None
    turns: list[RecordedTurn]
    summaries: list[str]  # compaction summaries, in order

    @classmethod
    def load(cls, path: Path) -> "Recording":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read recording {path}: {exc.strerror}") from None
        events: list[Event] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(Event.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path}:{number} is not a session event: a recording is a file "
                                  "written by `kimi-code export` (or a session's events.jsonl)") from None
        return cls.from_events(path, effective_events(events))

    @classmethod
    def from_events(cls, path: Path, events: list[Event]) -> "Recording":
        start = next((e for e in events if e.type == ev.SESSION_STARTED), None)
        if start is None:
            raise ConfigError(f"{path} has no session_started event: not a recording")
        settings = start.payload.get("settings") or {}
        turns: list[RecordedTurn] = []
        summaries: list[str] = []
        for e in events:
            if e.type == ev.ASSISTANT:
                p = e.payload
                turns.append(RecordedTurn(e.step, p.get("message") or {}, p.get("usage"), p.get("finish_reason")))
            elif e.type == ev.TOOL_RESULT and turns and not e.payload.get("interrupted"):
                turns[-1].results[str(e.payload.get("call_id"))] = e.payload
            elif e.type == ev.COMPACTION and not e.payload.get("mechanical"):
                summaries.append(str(e.payload.get("summary") or ""))
        if not turns:
            raise ConfigError(f"{path} holds no model turns to replay")
        model = str(start.payload.get("model") or settings.get("model") or DEFAULT_MODEL)
        return cls(path, str(start.payload.get("task", "")), model if model in MODELS else DEFAULT_MODEL,
                   settings.get("thinking"), turns, summaries)


def effective_events(events: list[Event]) -> list[Event]:
    """The events still in effect: a rewind drops the steps after its target, as the fold does."""
    kept: list[Event] = []
    for event in events:
        if event.type == ev.REWIND:
            to_step = int(event.payload.get("to_step", 0))
            kept = [e for e in kept if e.step <= to_step]
        kept.append(event)
    return kept


def fingerprint(name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What must match between a recorded and a live tool result (see the module docstring)."""
    meta = payload.get("metadata") or {}
    out: dict[str, Any] = {"is_error": bool(payload.get("is_error"))}
    if name in _EXEC_TOOLS and "exit_code" in meta:
        out["exit_code"] = meta.get("exit_code")
        tests = meta.get("tests")
        if isinstance(tests, dict):
            out["tests"] = {k: tests.get(k) for k in _TEST_KEYS}
    else:
        content = payload.get("content")
        out["content"] = content.strip() if isinstance(content, str) else content
    return out


def _first_difference(recorded: dict[str, Any], live: dict[str, Any]) -> str:
    for key in recorded.keys() | live.keys():
        a, b = recorded.get(key), live.get(key)
        if a != b:
            if key == "content" and isinstance(a, str) and isinstance(b, str):
                a_lines, b_lines = a.splitlines() or [""], b.splitlines() or [""]
                for ra, rb in zip(a_lines + [""] * len(b_lines), b_lines + [""] * len(a_lines)):
                    if ra != rb:
                        return f"recorded {_clip(ra)!r}, now {_clip(rb)!r}"
            return f"{key}: recorded {_clip(json.dumps(a))}, now {_clip(json.dumps(b))}"
    return "results differ"


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


class Replayer:
    """Answers the loop's model requests from a recording and watches the tool results.

    ``position`` tells which turn comes next (the session's step count), so a resumed replay picks
    up where it stopped; ``observe`` is called with every recorded event of the live session.
    """

    def __init__(self, recording: Recording, position: Callable[[], int] | None = None) -> None:
        self.recording = recording
        self.position = position or (lambda: 0)
        self.divergence: str | None = None
        self._summaries_served = 0

    def observe(self, event: Event) -> None:
        if event.type != ev.TOOL_RESULT or self.divergence or event.payload.get("interrupted"):
            return
        index = event.step - 1
        turns = self.recording.turns
        if not 0 <= index < len(turns):
            return
        turn = turns[index]
        call_id = str(event.payload.get("call_id"))
        recorded = turn.results.get(call_id)
        name = str(event.payload.get("name"))
        if recorded is None:
            if not turn.results:
                return  # the recorded session stopped before this step's results: nothing to compare
            self.divergence = (f"replay diverged at step {event.step}: the recording has no result for {name} "
                               f"({call_id})")
            return
        want, got = fingerprint(name, recorded), fingerprint(name, event.payload)
        if want != got:
            self.divergence = (f"replay diverged at step {event.step}: the result of {name} ({call_id}) differs "
                               f"from the recording ({_first_difference(want, got)}); stopped instead of "
                               "replaying turns chosen for other results")

    def stop_reason(self) -> str | None:
        """Why the next turn can't be replayed, if it can't (asked by the loop before each request)."""
        if self.divergence is None and self.position() >= len(self.recording.turns):
            self.divergence = (f"the recording ends after step {len(self.recording.turns)}: nothing more to replay "
                               "(the recorded session stopped there)")
        return self.divergence

    def respond(self, body: dict[str, Any]) -> Turn | Fault:
        if self.divergence:
            return Fault(status=400, error_type=DIVERGENCE_TYPE, message=self.divergence)
        if not body.get("tools"):  # the compaction call: no tools
            summaries = self.recording.summaries
            text = summaries[min(self._summaries_served, len(summaries) - 1)] if summaries else (
                "(Replay: the recording has no summary for this point; the older history was dropped.)")
            self._summaries_served += 1
            return Turn(content=text)
        index = self.position()
        turns = self.recording.turns
        if index >= len(turns):
            self.divergence = (f"the recording ends after step {len(turns)}, but the session asked for step "
                               f"{index + 1}: nothing more to replay")
            return Fault(status=400, error_type=DIVERGENCE_TYPE, message=self.divergence)
        turn = turns[index]
        message = turn.message
        calls = [ToolCallSpec(c["function"]["name"], c["function"].get("arguments") or "{}", id=c.get("id"))
                 for c in message.get("tool_calls") or ()]
        usage = None
        if turn.usage:
            prompt, completion = int(turn.usage.get("prompt_tokens") or 0), int(turn.usage.get("completion_tokens") or 0)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                     "cached_tokens": int(turn.usage.get("cached_tokens") or 0)}
        content = message.get("content")
        return Turn(content=content if isinstance(content, str) else "",
                    reasoning=str(message.get("reasoning_content") or "").strip(),
                    tool_calls=calls, usage=usage,
                    finish_reason=turn.finish_reason if turn.finish_reason in ("stop", "tool_calls", "length") else None)


class ReplaySource:
    """A running replay: the fake endpoint, the settings that point at it, and its replayer."""

    def __init__(self, settings: Settings, recording: Recording, *, pace: float = 0.0) -> None:
        self.recording = recording
        self.replayer = Replayer(recording)
        self.server = FakeKimi(self.replayer.respond, api_key="sk-replay-local",
                               chunk_delay=pace, chunk_chars=12 if pace else 24).start()
        thinking = recording.thinking if recording.thinking is not None else settings.thinking
        self.settings = settings.model_copy(update={
            "model": recording.model, "thinking": thinking, "base_url": self.server.base_url,
            "provider": "moonshot", "api_key": SecretStr(self.server.api_key),
        })

    def bind(self, loop: Any) -> None:
        """Follow ``loop``: its step count says which turn is next; its events are checked."""
        self.replayer.position = lambda: loop.state.step
        loop.observers.append(self.replayer.observe)
        loop.stop_check = self.replayer.stop_reason

    def outcome(self, outcome: Any) -> Any:
        """A run that stopped because of a divergence says so, whatever the loop made of it."""
        if self.replayer.divergence is None:
            return outcome
        from .loop import Outcome

        return Outcome(DIVERGED, EXIT_AGENT_FAILURE, self.replayer.divergence, dict(outcome.detail))

    def close(self) -> None:
        self.server.stop()


def open_source(settings: Settings, *, pace: float = 0.0) -> ReplaySource | None:
    """Start serving the recording named by ``settings.replay``; None for an ordinary model."""
    if settings.replay is None:
        return None
    return ReplaySource(settings, Recording.load(settings.replay), pace=pace)
