"""The autonomous loop: ask the model, record, run tools, record, checkpoint, repeat.

Every state change goes through ``record``: append the event to the log (fsynced), then apply it
to the state, then show it. So at any instant the log on disk is a prefix of what happened, and a
resumed session (load + fold + ``run``) continues exactly where this one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kimi_code.tools.types import ToolResult

from . import context as ctxmod
from . import event_payloads as ep
from . import prompts
from .client import AssistantTurn, ContextOverflowError, ModelClient, RetryNotice
from .config import Settings
from .errors import (
    EXIT_AGENT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_LIMIT,
    EXIT_MODEL_API,
    EXIT_OK,
    EXIT_SANDBOX,
    EXIT_TERMINATED,
    KimiCodeError,
    ModelAPIError,
    SandboxError,
)
from .events import Event
from .state import INTERRUPTED_RESULT, PendingCall, SessionState
from .compaction import Compactor
from .recorder import Recorder
from .budget import TreeBudget
from .step_snapshot import Snapshotter, StepCheckpoints
from .stop_signals import StopSignals
from .store import SessionDir, SessionMeta
from .tokens import count_message

if TYPE_CHECKING:
    from kimi_code.tools.registry import ToolContext

    from .view import View

log = logging.getLogger(__name__)

# Loop guard: the same call repeated this many times in a row gets a reminder; STOP_REPEATS stops.
REMIND_REPEATS = (3, 5, 8)
STOP_REPEATS = 12
# Replies cut off at the output limit without a tool call, in a row, before the run stops.
MAX_CUTOFFS = 3
# Empty replies (no text, no tool call) in a row before the run stops as a failure.
MAX_EMPTY_REPLIES = 2
# Seconds between refreshes of meta.json during a run (derived data; always written at the end).
META_INTERVAL = 1.0


class ToolRunner(Protocol):
    """What the loop needs of the tool registry (kimi_code.tools.registry.ToolRegistry)."""

    def is_read_only(self, name: str, arguments: str) -> bool: ...

    def run_calls(self, calls: Sequence[tuple[str, str]], ctx: ToolContext, *,
                  on_start: Callable[[int], ToolResult | None] | None = None,
                  on_result: Callable[[int, ToolResult], None] | None = None) -> None: ...


@dataclass
class Limits:
    max_steps: int | None = None
    max_cost: float | None = None  # USD, whole session
    max_time: float | None = None  # seconds, this invocation


@dataclass
class Outcome:
    status: str  # success | failure | limit | interrupted | api_error | sandbox_error
    exit_code: int
    summary: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Interrupted(Exception):
    """Raised inside the loop when the user asked to stop."""


class AgentLoop:
    """One session's loop. Many can live in one process (no globals): sub-agents will need that."""

    def __init__(
        self,
        *,
        session: SessionDir,
        state: SessionState,
        settings: Settings,
        client: ModelClient,
        registry: ToolRunner,
        tool_context: ToolContext,
        view: View,
        limits: Limits | None = None,
        checkpointer: Snapshotter | None = None,
        workspace: Path,
        recorder: Recorder | None = None,
    ) -> None:
        self.session = session
        self.recorder = recorder if recorder is not None else Recorder(session, state)
        self.state = state
        self.settings = settings
        self.client = client
        self.registry = registry
        self.tool_ctx = tool_context
        self.view = view
        self.limits = limits or Limits()
        self.signals = StopSignals(notice=lambda text: self.view.notice(text))
        # Snapshots after changing steps, run while the next model request does (step_snapshot.py).
        self.checkpoints = (StepCheckpoints(checkpointer, state, self.record, lambda text: self.view.notice(text))
                            if checkpointer is not None else None)
        self.compactor = Compactor(state=state, settings=settings, client=client, record=self.record,
                                   notice=lambda text: self.view.notice(text), set_phase=self._set_phase)
        self.workspace = workspace
        self._meta: SessionMeta | None = None  # the session's metadata, read once (see update_meta)
        self._meta_written = 0.0  # monotonic time of the last write after a step
        self._started = time.monotonic()
        self._repeat: tuple[str, str] | None = None
        self._repeat_count = 0
        self._cutoffs = 0
        self._empty_replies = 0
        self._step_changed_workspace = False
        # Messages to append once in-flight calls are resolved (resume notices, --continue, the
        # files a chat message attaches): a text, or (kind, content) where content may be parts.
        self.pending_notices: list[str | tuple[str, Any]] = []
        # Asked before each tool call starts (interactive approvals, agent/approval.py): None runs
        # the call; a text refuses it and becomes its result, an error the model reads and the log
        # keeps (a refused call never ran, so it has no tool_started).
        self.approve: Callable[[PendingCall], str | None] | None = None
        # Called with every recorded event, after the state applied it (the recorder's list).
        self.observers: list[Callable[[Event], None]] = self.recorder.observers
        # Asked before each model request; the first reason one returns stops the run (the replay
        # provider stops here when its recording no longer fits the session).
        self.stop_checks: list[Callable[[], str | None]] = []
        # Turns the message list into the one sent: images and videos from their references
        # (media.MediaWire, set by the assembly); None sends the messages as they are.
        self.wire: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
        # The tree's budget when this session is part of a swarm (agent/budget.py): asked before
        # every model request, charged after it. None: only ``limits`` apply.
        self.budget: TreeBudget | None = None
        # The prompt_cache_key sent (sub-agents share their root's, so the swarm shares one cache).
        self.cache_key: str | None = None
        # Tools whose call, cut short by a crash, is run again on resume rather than answered as
        # interrupted: they are idempotent by their own log (spawn_agents, wait_agents).
        self.resumable: set[str] = set()
        # Messages sent to this session while it runs (a parent's message_agent), taken before
        # each step and added as the user's follow-up instructions.
        self.inbox: Callable[[], list[str]] | None = None

    # -- recording -------------------------------------------------------------------------
    def record(self, payload: ep.EventPayload, step: int | None = None) -> Event:
        """Record through the session's recorder (recorder.py), then show the event."""
        with self.signals.critical():
            event = self.recorder.record(payload, step)
        try:
            self.view.on_event(event, self.state)
        except Exception:  # noqa: BLE001 - a display problem must never break the session
            log.exception("view failed on %s", event.type)
        return event

    def update_meta(self, durable: bool = True) -> None:
        """Refresh ``meta.json`` (derived data). After a step it is not fsynced (``durable=False``):
        a meta.json lost or torn by a crash is rebuilt from the log."""
        if self._meta is None:
            try:
                self._meta = self.session.read_meta()
            except Exception:  # noqa: BLE001
                return
        meta = self._meta
        t = self.state.totals
        meta.status = {"running": "running", "finished": "finished"}.get(self.state.status, self.state.status)
        if self.state.finished and self.state.finish and self.state.finish.get("status") == "failure":
            meta.status = "failed"
        meta.steps = self.state.step
        meta.cost = round(t.cost, 6)
        meta.prompt_tokens, meta.cached_tokens, meta.completion_tokens = t.prompt_tokens, t.cached_tokens, t.completion_tokens
        try:
            self.session.write_meta(meta, durable=durable)
        except KimiCodeError as exc:  # derived data: the log is the truth, and is rebuilt from
            log.debug("%s", exc)

    def _set_phase(self, phase: str) -> None:
        self.signals.phase = phase  # "model": a first Ctrl-C aborts the request at once

    def _settle_checkpoint(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.settle()

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Outcome:
        self._started = time.monotonic()  # --max-time counts this run (in a chat, this turn)
        with self.signals:
            try:
                return self._run()
            except KeyboardInterrupt:
                self.signals.shield()
                self._settle_checkpoint()
                if self.signals.terminated:
                    self._record_interrupt("terminated (SIGTERM)")
                    return Outcome("interrupted", EXIT_TERMINATED, "terminated by SIGTERM")
                self._record_interrupt("interrupted by the user")
                return Outcome("interrupted", EXIT_INTERRUPTED, "interrupted")
            finally:
                self._settle_checkpoint()
                self.update_meta()

    def _record_interrupt(self, reason: str) -> None:
        try:
            self.record(ep.Interrupted(reason=reason))
        except Exception:  # noqa: BLE001 - the log stays consistent even if this one is lost
            log.exception("could not record the interruption")

    def _run(self) -> Outcome:
        self._resolve_in_flight()
        for notice in self.pending_notices:
            kind, text = notice if isinstance(notice, tuple) else ("notice", notice)
            self._user_notice(text, kind=kind)
        self.pending_notices = []
        while True:
            if self.inbox is not None and not self.state.finished:
                for text in self.inbox():
                    self._user_notice(prompts.continue_message(text), kind="continue")
            if self.state.finished:
                return self._finished_outcome()
            if self.signals.interrupts:
                self._settle_checkpoint()
                self._record_interrupt("interrupted by the user")
                return Outcome("interrupted", EXIT_INTERRUPTED, "interrupted")
            limit = self._check_limits()
            if limit is not None:
                return limit
            reason = next((r for r in (check() for check in self.stop_checks) if r), None)
            if reason:
                self._settle_checkpoint()
                self._record_interrupt(reason)
                return Outcome("stopped", EXIT_AGENT_FAILURE, reason)
            if self.budget is not None:
                reached = self.budget.admit()
                if reached is not None:
                    return self._limit(reached.kind, reached.value, reached.limit)
            request_cost = 0.0
            try:
                try:
                    turn = self._ask_model()
                    request_cost = turn.cost
                except ModelAPIError as exc:
                    self._settle_checkpoint()
                    self._record_interrupt(f"model API failure: {exc}")
                    return Outcome("api_error", EXIT_MODEL_API, str(exc))
                # The previous step's snapshot ran during the request: its checkpoint goes in first.
                self._settle_checkpoint()
                step = self.state.step + 1
                self.record(self._assistant_payload(turn), step=step)
            finally:
                if self.budget is not None:
                    self.budget.charge(self.state.session_id, self.state.totals.cost, self.state.step, request_cost)
                    self.budget.done()
            if self.state.pending:
                self._cutoffs = self._empty_replies = 0
            else:
                self._no_tool_calls(turn)
                continue
            try:
                self._run_calls(list(self.state.pending))
            except SandboxError as exc:
                self._record_interrupt(f"sandbox failure: {exc}")
                return Outcome("sandbox_error", EXIT_SANDBOX, str(exc))
            self._end_of_step()

    def _finished_outcome(self) -> Outcome:
        finish = self.state.finish or {}
        status = finish.get("status", "success")
        return Outcome(status, EXIT_OK if status == "success" else EXIT_AGENT_FAILURE, finish.get("summary", ""))

    def _check_limits(self) -> Outcome | None:
        checks = [
            ("steps", self.limits.max_steps, self.state.step),
            ("cost", self.limits.max_cost, self.state.totals.cost),
            ("time", self.limits.max_time, time.monotonic() - self._started),
        ]
        for kind, limit, value in checks:
            if limit is not None and value >= limit:
                return self._limit(kind, value, limit)
        return None

    def _limit(self, kind: str, value: float, limit: float) -> Outcome:
        self._settle_checkpoint()
        text = prompts.limit_text(kind, round(value, 4), limit)
        self.record(ep.Limit(kind=kind, value=value, limit=limit))  # type: ignore[arg-type]
        return Outcome("limit", EXIT_LIMIT, text, {"kind": kind})

    # -- model -----------------------------------------------------------------------------
    def max_output(self) -> int:
        """Output tokens asked per request (see ``Settings.output_reserve``)."""
        return self.settings.output_reserve

    def _ask_model(self) -> AssistantTurn:
        max_out = self.max_output()
        if self.compactor.due():
            self.compactor.compact()
        self.signals.phase = "model"
        try:
            try:
                return self._complete(self.state.request_messages(), max_out)
            except ContextOverflowError:
                if not self.settings.compaction:
                    raise
                self.compactor.compact(force=True)
                return self._complete(self.state.request_messages(), max_out)
        finally:
            self.signals.phase = "idle"

    def _complete(self, messages: list[dict[str, Any]], max_out: int) -> AssistantTurn:
        return self.client.complete(
            self.wire(messages) if self.wire is not None else messages,
            self.state.tools,
            session_id=self.cache_key or self.state.session_id,
            input_tokens=self.state.context_tokens,
            max_output_tokens=max_out,
            on_delta=getattr(self.view, "on_delta", None),
        )

    def on_retry(self, notice: RetryNotice) -> None:
        """Given to the client: each retry is shown and logged."""
        self.record(ep.ApiRetry(attempt=notice.attempt, wait=round(notice.wait, 2), reason=notice.reason,
                                status=notice.status, request_id=notice.request_id))

    def _assistant_payload(self, turn: AssistantTurn) -> ep.Assistant:
        message = turn.to_message()
        if message.get("tool_calls") and self.settings.thinking_enabled and not message.get("reasoning_content"):
            # Kimi rejects a thinking-mode tool-call message without reasoning_content.
            message["reasoning_content"] = " "
        usage = {"prompt_tokens": turn.usage.prompt_tokens, "completion_tokens": turn.usage.completion_tokens,
                 "cached_tokens": turn.usage.cached_tokens}
        info = self.settings.model_info
        saved = turn.usage.cached_tokens * (info.price_input - info.price_cached_input) / 1_000_000
        return ep.Assistant(message=message, usage=usage, cost=turn.cost, cost_saved=saved,
                            finish_reason=turn.finish_reason, request_id=turn.request_id,
                            tokens=count_message(message))

    def _no_tool_calls(self, turn: AssistantTurn) -> None:
        if turn.finish_reason == "length":
            self._cutoffs += 1
            if self._cutoffs >= MAX_CUTOFFS:
                self.record(ep.Finished(status="failure", reason="output_limit",
                                        summary=f"the model's replies hit the output limit {self._cutoffs} "
                                                "times in a row"))
                return
            self._user_notice("[kimi-code] Your last reply was cut off at the output limit. Continue; keep "
                              "replies shorter and call tools.", kind="notice")
            return
        if not turn.content.strip():
            # An empty reply is not an answer: ask once more, then stop as a failure.
            self._empty_replies += 1
            if self._empty_replies >= MAX_EMPTY_REPLIES:
                self.record(ep.Finished(status="failure", reason="empty_reply",
                                        summary=f"the model sent {self._empty_replies} empty replies in a row"))
                return
            self._user_notice("[kimi-code] Your last reply was empty. Continue the task with tool calls, or call "
                              "finish with a summary.", kind="notice")
            return
        self.record(ep.Finished(status="success", summary=turn.content.strip(), reason="no_tool_calls"))

    def _user_notice(self, text: str | list[dict[str, Any]], kind: str = "notice") -> None:
        message = {"role": "user", "content": text}
        self.record(ep.UserMessage(message=message, kind=kind, tokens=count_message(message)))

    # -- tools -----------------------------------------------------------------------------
    def settle_workspace(self) -> None:
        """Resume: checkpoint what the agent changed after its last checkpoint (a crash between a
        tool's result and the snapshot), before anything compares the workspace with it."""
        if self.checkpoints is not None and self.state.workspace_dirty and not self.state.pending:
            self._step_changed_workspace = True
            self.checkpoints.take()

    def _resolve_in_flight(self) -> None:
        """Resume: answer calls that started but left no result; run those that never started."""
        pending = list(self.state.pending)
        if not pending:
            self.settle_workspace()
            last = self.state.messages[-1] if self.state.messages else {}
            if (not self.state.finished and last.get("role") == "assistant" and not last.get("tool_calls")
                    and self.state.last_finish_reason != "length"):
                # The final answer was recorded but not the end of the run: don't ask again.
                self.record(ep.Finished(status="success", summary=str(last.get("content") or "").strip(),
                                        reason="no_tool_calls"))
            self._maybe_finish()
            return
        rerun: list[PendingCall] = []
        for call in pending:
            if (call.started and not self.registry.is_read_only(call.name, call.arguments)
                    and call.name not in self.resumable):
                self.record(ep.ToolResult(call_id=call.call_id, name=call.name, content=INTERRUPTED_RESULT,
                                          is_error=True, metadata={"interrupted": True}, interrupted=True))
            else:
                rerun.append(call)
        self._step_changed_workspace = True
        if rerun:
            self._run_calls(rerun)
        self._end_of_step()

    def _run_calls(self, calls: list[PendingCall]) -> None:
        self.signals.phase = "tools"
        self._step_changed_workspace = self._step_changed_workspace or not all(
            self.registry.is_read_only(c.name, c.arguments) for c in calls)
        attachments: list[dict[str, Any]] = []
        attached_by: list[str] = []  # the tools whose results carried them (view_image, MCP tools)
        stop_requested = [False]

        def on_start(i: int) -> ToolResult | None:
            if self.signals.interrupts and not stop_requested[0]:
                stop_requested[0] = True
            if stop_requested[0]:
                raise Interrupted()
            call = calls[i]
            refusal = self.approve(call) if self.approve is not None else None
            if refusal is not None:
                return ToolResult(refusal, is_error=True, metadata={"refused": True})
            self.record(ep.ToolStarted(call_id=call.call_id, name=call.name, index=call.index,
                                       arguments=call.arguments,
                                       read_only=self.registry.is_read_only(call.name, call.arguments)))
            return None

        def on_result(i: int, result: ToolResult) -> None:
            call = calls[i]
            text, budget_meta = ctxmod.budget_tool_output(
                result.text, self.settings.tool_output_tokens, workspace=self.workspace,
                session_id=self.state.session_id, call_id=call.call_id,
            )
            metadata = dict(result.metadata or {})
            metadata.update(budget_meta)
            message = {"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": text}
            self.record(ep.ToolResult(call_id=call.call_id, name=call.name, content=text,
                                      is_error=bool(result.is_error), metadata=metadata,
                                      tokens=count_message(message)))
            attachments.extend(result.attachments or ())
            if result.attachments and call.name not in attached_by:
                attached_by.append(call.name)
            if "todo" in metadata:
                self.tool_ctx.todo = self.state.todo

        try:
            self.registry.run_calls([(c.name, c.arguments) for c in calls], self.tool_ctx,
                                    on_start=on_start, on_result=on_result)
        except Interrupted:
            pass
        finally:
            self.signals.phase = "idle"
        if self.state.pending:
            return  # interrupted mid-batch: a message now would cancel the calls that never started
        if attachments:
            content = [{"type": "text", "text": f"[kimi-code] Attached by {', '.join(attached_by)}:"},
                       *attachments]
            message = {"role": "user", "content": content}
            self.record(ep.UserMessage(message=message, kind="attachment", tokens=count_message(message)))
        self._loop_guard(calls)

    def _loop_guard(self, calls: list[PendingCall]) -> None:
        key = tuple((c.name, c.arguments) for c in calls)
        if self._repeat == key:
            self._repeat_count += 1
        else:
            self._repeat, self._repeat_count = key, 1  # type: ignore[assignment]
        if self._repeat_count >= STOP_REPEATS:
            self.record(ep.Finished(status="failure", reason="loop_guard",
                                    summary=f"stopped: the same tool call was repeated {self._repeat_count} times"))
        elif self._repeat_count in REMIND_REPEATS:
            self._user_notice(f"[kimi-code] You have made the same tool call {self._repeat_count} times in a row "
                              "with the same result. Step back and try a different approach.")

    def _end_of_step(self) -> None:
        # Steps whose calls all only read cannot have changed the workspace: no snapshot needed.
        if self.checkpoints is not None and not self.state.pending and self._step_changed_workspace:
            if self.state.pending_finish is not None or self.state.finished:
                self.checkpoints.take()  # the run ends here: its last checkpoint precedes "finished"
            else:
                self.checkpoints.start()
        self._step_changed_workspace = False
        self._maybe_finish()
        # For `sessions` and the like a second-old figure is as good: at most one write a second.
        now = time.monotonic()
        if now - self._meta_written >= META_INTERVAL:
            self._meta_written = now
            self.update_meta(durable=False)

    def _maybe_finish(self) -> None:
        """Record FINISHED once the step that called finish is complete (also after a crash)."""
        finish = self.state.pending_finish
        if self.state.finished or self.state.pending or finish is None:
            return
        self.record(ep.Finished(status=finish.get("status", "success"), summary=finish.get("summary", ""),
                                reason="finish_tool"))
