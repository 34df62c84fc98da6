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
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from . import events as ev
from .config import DEFAULT_MODEL, MODELS, Settings
from .errors import EXIT_AGENT_FAILURE, ConfigError
from .events import Event, effective_events, newer_version_message
from .fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn
from .media import instruction_text

DIVERGENCE_TYPE = "replay_divergence"
DIVERGED = "replay_diverged"  # the outcome status of a stopped replay
# Tools whose result text depends on the machine (timings, versions, absolute paths).
_EXEC_TOOLS = frozenset({"shell", "run_tests"})
# Recorded settings a replay takes over: they shape what the model saw (how tool output was cut,
# which tests ran, when history was summarized). Where commands run stays this machine's choice.
REPLAYED_SETTINGS = ("tool_output_tokens", "test_command", "command_timeout", "compaction", "compaction_threshold",
                     "context_window", "max_output_tokens")
_TEST_KEYS = ("parsed", "passed", "failed", "errors", "skipped", "failing")
# Saved full outputs live under a per-session directory: the id differs between runs.
_OUTPUTS = re.compile(r"\.kimi-code/outputs/[^/\s]+/")
# Of a result cut to the token budget, only the start is compared: where the cut falls depends on
# the tokenizer available on the machine, and the notice names the session's saved output.
_CUT_COMPARED = 1000


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
    session_id: str
    task: str
    model: str
    thinking: bool | None
    settings: dict[str, Any]  # the recorded session's (see REPLAYED_SETTINGS)
    turns: list[RecordedTurn]
    summaries: list[str]  # compaction summaries, in order
    # Instructions added with `resume --continue`, by the step after which they came.
    continues: dict[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Recording":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read recording {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"recording {path} is not UTF-8 text: a recording is a file written by "
                              "`kimi-code export` (or a session's events.jsonl)") from None
        events: list[Event] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = Event.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{path}:{number} is not a session event: a recording is a file "
                                  "written by `kimi-code export` (or a session's events.jsonl)") from None
            newer = newer_version_message(event.v, f"recording {path} (line {number})")
            if newer:
                raise ConfigError(newer)
            events.append(event)
        return cls.from_events(path, effective_events(events))

    @classmethod
    def from_events(cls, path: Path, events: list[Event]) -> "Recording":
        start = next((e for e in events if e.type == ev.SESSION_STARTED), None)
        if start is None:
            raise ConfigError(f"{path} has no session_started event: not a recording")
        settings = start.payload.get("settings") or {}
        turns: list[RecordedTurn] = []
        summaries: list[str] = []
        continues: dict[int, str] = {}
        for e in events:
            if e.type == ev.ASSISTANT:
                p = e.payload
                message = p.get("message")
                if not isinstance(message, dict) or not _valid_calls(message.get("tool_calls")):
                    raise ConfigError(f"{path}: the assistant turn of step {e.step} is malformed")
                usage = p.get("usage") if isinstance(p.get("usage"), dict) else None
                turns.append(RecordedTurn(e.step, message, usage, p.get("finish_reason")))
            elif e.type == ev.TOOL_RESULT and turns and not e.payload.get("interrupted"):
                if not isinstance(e.payload.get("metadata") or {}, dict):
                    raise ConfigError(f"{path}: a tool result of step {e.step} is malformed")
                turns[-1].results[str(e.payload.get("call_id"))] = e.payload
            elif e.type == ev.USER_MESSAGE and e.payload.get("kind") == "continue":
                content = (e.payload.get("message") or {}).get("content")
                continues[len(turns)] = content if isinstance(content, str) else instruction_text(content)
            elif e.type == ev.COMPACTION and not e.payload.get("mechanical"):
                summaries.append(str(e.payload.get("summary") or ""))
        if not turns:
            raise ConfigError(f"{path} holds no model turns to replay")
        model = str(start.payload.get("model") or settings.get("model") or DEFAULT_MODEL)
        return cls(path, str(start.payload.get("session_id") or ""), str(start.payload.get("task", "")),
                   model if model in MODELS else DEFAULT_MODEL,
                   settings.get("thinking"), settings, turns, summaries, continues)


def _valid_calls(calls: Any) -> bool:
    if calls is None:
        return True
    return isinstance(calls, list) and all(
        isinstance(c, dict) and isinstance(c.get("function"), dict) and isinstance(c["function"].get("name"), str)
        for c in calls)


def fingerprint(name: str, payload: dict[str, Any], *, cut: bool = False) -> dict[str, Any]:
    """What must match between a recorded and a live tool result (see the module docstring).
    ``cut``: one of the two was cut to the token budget, so only the start of the text counts."""
    meta = payload.get("metadata") or {}
    out: dict[str, Any] = {"is_error": bool(payload.get("is_error"))}
    if name in _EXEC_TOOLS and "exit_code" in meta:
        out["exit_code"] = meta.get("exit_code")
        tests = meta.get("tests")
        if isinstance(tests, dict):
            out["tests"] = {k: tests.get(k) for k in _TEST_KEYS}
        return out
    content = payload.get("content")
    if isinstance(content, str):
        content = _OUTPUTS.sub(".kimi-code/outputs/SESSION/", content.strip())
        if cut:
            content = content.split("\n\n[... ", 1)[0][:_CUT_COMPARED]
    out["content"] = content
    return out


def _first_difference(recorded: dict[str, Any], live: dict[str, Any]) -> str:
    for key in ("is_error", "exit_code", "tests", "content"):
        a, b = recorded.get(key), live.get(key)
        if a == b:
            continue
        if key == "content" and isinstance(a, str) and isinstance(b, str):
            a_lines, b_lines = a.splitlines() or [""], b.splitlines() or [""]
            for number, (ra, rb) in enumerate(zip(a_lines + [""] * len(b_lines), b_lines + [""] * len(a_lines)), 1):
                if ra != rb:
                    at = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), min(len(ra), len(rb)))
                    return f"line {number}: recorded {_around(ra, at)!r}, now {_around(rb, at)!r}"
        return f"{key}: recorded {_clip(json.dumps(a))}, now {_clip(json.dumps(b))}"
    return "results differ"


def _around(text: str, at: int, n: int = 100) -> str:
    """The part of ``text`` around position ``at`` (where two lines first differ)."""
    start = max(0, at - n // 3)
    piece = text[start:start + n]
    return ("…" if start else "") + piece + ("…" if start + n < len(text) else "")


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
        self.live_session_id: Callable[[], str] = lambda: recording.session_id
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
        cut = any((p.get("metadata") or {}).get("budget_cut") for p in (recorded, event.payload))
        want, got = fingerprint(name, recorded, cut=cut), fingerprint(name, event.payload, cut=cut)
        if want != got:
            self.divergence = (f"replay diverged at step {event.step}: the result of {name} ({call_id}) differs "
                               f"from the recording ({_first_difference(want, got)}); stopped instead of "
                               "replaying turns chosen for other results")

    def refused(self, step: int, call_id: str) -> str | None:
        """The result of a call the user refused in the recorded session (a chat's approvals), to
        refuse it again instead of running it: the loop's ``approve`` hook."""
        turns = self.recording.turns
        recorded = turns[step - 1].results.get(call_id) if 0 < step <= len(turns) else None
        if recorded and (recorded.get("metadata") or {}).get("refused"):
            return str(recorded.get("content", ""))
        return None

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
        calls = [ToolCallSpec(c["function"]["name"], self._arguments(c["function"].get("arguments")), id=c.get("id"))
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

    def _arguments(self, arguments: Any) -> str:
        """Recorded arguments, with the recorded session's saved-output paths pointing at this session's."""
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        old, new = self.recording.session_id, self.live_session_id()
        if old and new and old != new:
            text = text.replace(f".kimi-code/outputs/{old}/", f".kimi-code/outputs/{new}/")
        return text


class ReplaySource:
    """A running replay: the fake endpoint, the settings that point at it, and its replayer."""

    def __init__(self, settings: Settings, recording: Recording, *, pace: float = 0.0) -> None:
        self.recording = recording
        self.replayer = Replayer(recording)
        self.server = FakeKimi(self.replayer.respond, api_key="sk-replay-local",
                               chunk_delay=pace, chunk_chars=12 if pace else 24).start()
        thinking = recording.thinking if recording.thinking is not None else settings.thinking
        recorded = {k: recording.settings[k] for k in REPLAYED_SETTINGS if k in recording.settings}
        try:
            self.settings = Settings(**{**settings.model_dump(), **recorded, "model": recording.model,
                                        "thinking": thinking, "base_url": self.server.base_url,
                                        "provider": "moonshot", "api_key": SecretStr(self.server.api_key)})
        except ValueError as exc:
            self.server.stop()
            raise ConfigError(f"{recording.path}: its recorded settings are not valid here ({exc})") from None

    def bind(self, loop: Any) -> None:
        """Follow ``loop``: its step count says which turn is next; its events are checked."""
        self.replayer.position = lambda: loop.state.step
        self.replayer.live_session_id = lambda: loop.state.session_id or loop.session.id
        # A resumed replay checks the results already in the log first: a replay that diverged
        # before it stopped must not go on now.
        for event in loop.session.log.load():
            self.replayer.observe(event)
        loop.observers.append(self.replayer.observe)
        loop.stop_checks.append(self.replayer.stop_reason)
        loop.approve = lambda call: self.replayer.refused(loop.state.step, call.call_id)

    def continuation(self, steps_done: int) -> str | None:
        """When the recorded session went on after the user added instructions at this point: how
        to replay the rest."""
        rest = len(self.recording.turns) - steps_done
        text = self.recording.continues.get(steps_done)
        if rest <= 0 or text is None:
            return None
        instructions = text.split("\n", 1)[1] if text.startswith("# Additional instructions") else text
        return (f"the recording goes on for {rest} more step(s) after the user added instructions; replay them "
                f"with: kimi-code resume SESSION --continue {shlex.quote(instructions.strip())}")

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
