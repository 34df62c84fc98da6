"""The live session state: a fold over the event log, and the request builder.

A running session and a resumed one use the same ``apply``, so resuming is load + fold + continue,
and a test can replay any log into a fresh state and compare it with the live one.

Every message is kept as a ready-to-send dict built once, when its event is applied, with its token
count; the message list only grows at its end between compactions (prompt-cache friendly), and
building a request costs O(1) per step, not O(history).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .events import Event
from .tokens import count_message, count_text, count_tools

INTERRUPTED_RESULT = (
    "[kimi-code] This tool call was interrupted (the agent process stopped while it ran) and its "
    "effect is unknown. Check the current state before relying on it or repeating it."
)
NOT_AVAILABLE_RESULT = "[kimi-code] No result is available for this tool call; do not assume it completed."


@dataclass
class PendingCall:
    """A tool call of the latest assistant message that has no recorded result yet."""

    index: int
    call_id: str  # the id as sent back to the model (duplicates already renamed)
    name: str
    arguments: str
    started: bool = False


@dataclass
class Totals:
    """Money and tokens spent; these never rewind."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cost_saved_by_cache: float = 0.0

    @property
    def cached_share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class SessionState:
    session_id: str = ""
    task: str = ""
    repo: str = ""
    workspace: str = ""
    model: str = ""
    system_prompt: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    messages: list[dict[str, Any]] = field(default_factory=list)  # live context, without the system prompt
    message_tokens: list[int] = field(default_factory=list)
    tokens_total: int = 0  # sum of message_tokens
    fixed_tokens: int = 0  # system prompt + tool schemas
    measured_prompt_tokens: int | None = None  # the API's count for the last request...
    tokens_total_at_measure: int = 0  # ...and tokens_total when it was sent

    step: int = 0
    pending: list[PendingCall] = field(default_factory=list)
    seen_call_ids: set[str] = field(default_factory=set)
    _dup_next: dict[str, int] = field(default_factory=dict, repr=False)  # next suffix per repeated id
    _system_message: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    todo: list[dict[str, Any]] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    compactions: int = 0
    checkpoints: dict[int, str] = field(default_factory=dict)  # step -> checkpoint commit
    base_commit: str | None = None  # checkpoint of the workspace before the agent started
    last_checkpoint: str | None = None
    last_test_summary: dict[str, Any] | None = None
    changed_files: set[str] = field(default_factory=set)
    sandbox: dict[str, Any] = field(default_factory=dict)
    checkpoints_enabled: bool | None = None  # None: a log from before this was recorded
    attachments: list[dict[str, Any]] = field(default_factory=list)  # media given with the task
    uploads: dict[str, str] = field(default_factory=dict)  # media sha256 -> the endpoint's file id

    status: str = "running"  # running | finished | interrupted | limit | failed
    finish: dict[str, Any] | None = None  # {"status", "summary", "reason"}
    pending_finish: dict[str, Any] | None = None  # the finish tool's request in the current step
    last_finish_reason: str | None = None  # of the latest assistant turn
    workspace_dirty: bool = False  # a call that may change files ran since the last checkpoint
    last_compaction_step: int | None = None
    limit: dict[str, Any] | None = None
    events_applied: int = 0

    # -- fold ------------------------------------------------------------------------------
    @classmethod
    def fold(cls, events: list[Event]) -> "SessionState":
        """Rebuild the state from a whole log, honouring rewinds."""
        state = cls()
        effective: list[Event] = []
        for event in events:
            if event.type == ev.REWIND:
                to_step = int(event.payload["to_step"])
                kept = [e for e in effective if ev.survives_rewind(e, to_step)]
                totals, sandbox, uploads = state.totals, state.sandbox, state.uploads
                state = cls()
                for e in kept:
                    state.apply(e)
                state.totals, state.sandbox, state.uploads = totals, sandbox, uploads  # the world, not rewound
                effective = kept
            effective.append(event)
            state.apply(event)
        return state

    def refold(self, events: list[Event]) -> None:
        """Become the fold of ``events`` in place: a live session rewound by the user (every
        collaborator of its loop holds this very object) is the same as one loaded again."""
        fresh = type(self).fold(events)
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            handler(self, event)
        self.events_applied += 1

    # -- message bookkeeping ---------------------------------------------------------------
    def _add_message(self, message: dict[str, Any], tokens: int | None = None) -> None:
        n = count_message(message) if tokens is None else int(tokens)
        self.messages.append(message)
        self.message_tokens.append(n)
        self.tokens_total += n

    def _on_started(self, e: Event) -> None:
        p = e.payload
        self.session_id = p.get("session_id", self.session_id)
        self.task = p.get("task", "")
        self.repo = p.get("repo", "")
        self.workspace = p.get("workspace", "")
        self.model = p.get("model", "")
        self.system_prompt = p.get("system_prompt", "")
        self.tools = p.get("tools") or []
        self.settings = p.get("settings") or {}
        self.checkpoints_enabled = p.get("checkpoints")
        self.attachments = list(p.get("attachments") or [])
        self.fixed_tokens = int(p.get("fixed_tokens") or (count_text(self.system_prompt) + count_tools(self.tools)))

    def _on_user(self, e: Event) -> None:
        self._resolve_unanswered()
        if e.payload.get("kind") == "continue":  # `resume --continue` reopens a finished session
            self.status, self.finish, self.pending_finish = "running", None, None
        self._add_message(e.payload["message"], e.payload.get("tokens"))

    def _on_assistant(self, e: Event) -> None:
        self._resolve_unanswered()
        p = e.payload
        message = dict(p["message"])
        calls = message.get("tool_calls") or []
        if calls:
            renamed = []
            for i, call in enumerate(calls):
                call_id = call.get("id") or f"call_{self.step + 1}_{i}"
                if call_id in self.seen_call_ids:
                    # Kimi rejects a history that repeats an id: keep the first, rename later ones
                    # (K2.6 reuses `functions.NAME:0` every turn, so this runs on most steps: O(1)).
                    n = self._dup_next.get(call_id, 2)
                    while f"{call_id}~{n}" in self.seen_call_ids:
                        n += 1
                    self._dup_next[call_id] = n + 1
                    call_id = f"{call_id}~{n}"
                if call_id != call.get("id"):
                    call = {**call, "id": call_id}
                self.seen_call_ids.add(call_id)
                renamed.append(call)
            message["tool_calls"] = renamed
            self.pending = [
                PendingCall(i, c["id"], c["function"]["name"], c["function"].get("arguments") or "")
                for i, c in enumerate(renamed)
            ]
        self.step = max(self.step, e.step)
        self.pending_finish = None
        self.last_finish_reason = p.get("finish_reason")
        # The measurement belongs to the request, i.e. to the context *before* this message.
        usage = p.get("usage") or {}
        if usage.get("prompt_tokens"):
            self.measured_prompt_tokens = int(usage["prompt_tokens"])
            self.tokens_total_at_measure = self.tokens_total
        if calls or _has_text(message.get("content")):
            # An empty reply (cut off at the output limit) stays in the log, never in the context:
            # an empty assistant message breaks later requests.
            self._add_message(message, p.get("tokens"))
        self._count_usage(usage, float(p.get("cost") or 0.0), float(p.get("cost_saved") or 0.0))

    def _count_usage(self, usage: dict[str, Any], cost: float, saved: float) -> None:
        t = self.totals
        t.requests += 1
        t.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        t.cached_tokens += int(usage.get("cached_tokens") or 0)
        t.completion_tokens += int(usage.get("completion_tokens") or 0)
        t.cost += cost
        t.cost_saved_by_cache += saved

    def _on_tool_started(self, e: Event) -> None:
        if not e.payload.get("read_only", False):
            self.workspace_dirty = True
        for call in self.pending:
            if call.call_id == e.payload["call_id"]:
                call.started = True

    # -- the pairing rule: every tool call gets exactly one result, and no result lacks its call.
    # Kimi rejects a history that breaks it; these two methods are the only places that keep it.
    def _take_pending(self, call_id: str) -> bool:
        """Claim the pending call a result answers; False for an orphan or duplicate result, which
        is then never sent."""
        if not any(c.call_id == call_id for c in self.pending):
            return False
        self.pending = [c for c in self.pending if c.call_id != call_id]
        return True

    def _placeholder_results(self) -> list[dict[str, Any]]:
        """Results for the calls still waiting for one (a crash, a rewind): "not available"."""
        return [{"role": "tool", "tool_call_id": call.call_id, "name": call.name, "content": NOT_AVAILABLE_RESULT}
                for call in self.pending]

    def _on_tool_result(self, e: Event) -> None:
        p = e.payload
        call_id = p["call_id"]
        if not self._take_pending(call_id):
            return
        message = {"role": "tool", "tool_call_id": call_id, "name": p.get("name", ""), "content": p["content"]}
        self._add_message(message, p.get("tokens"))
        meta = p.get("metadata") or {}
        if "todo" in meta:
            self.todo = list(meta["todo"])
        if "finish" in meta and not p.get("is_error"):
            self.pending_finish = dict(meta["finish"])
        if "tests" in meta:
            self.last_test_summary = meta["tests"]
        for path in meta.get("changed_files") or ():
            self.changed_files.add(path)

    def _resolve_unanswered(self) -> None:
        """A new message arrives while calls lack results (crash, rewind): answer them so the
        history stays valid. Only reachable through logs the loop did not finish writing."""
        for message in self._placeholder_results():
            self._add_message(message)
        self.pending = []

    def _on_todo(self, e: Event) -> None:
        self.todo = list(e.payload.get("items") or [])

    def _on_compaction(self, e: Event) -> None:
        p = e.payload
        keep_from = int(p["keep_from"])
        head = [m for m in p["head"]]  # task + summary messages, ready to send
        kept = self.messages[keep_from:]
        kept_tokens = self.message_tokens[keep_from:]
        self.messages, self.message_tokens, self.tokens_total = [], [], 0
        for m in head:
            self._add_message(m)
        for m, n in zip(kept, kept_tokens):
            self._add_message(m, n)
        self.measured_prompt_tokens = None
        self.tokens_total_at_measure = 0
        self.compactions += 1
        self.last_compaction_step = e.step
        usage = p.get("usage") or {}
        if usage:
            self._count_usage(usage, float(p.get("cost") or 0.0), float(p.get("cost_saved") or 0.0))

    def _on_checkpoint(self, e: Event) -> None:
        self.workspace_dirty = False
        if e.payload.get("unchanged"):
            return  # the step changed nothing: same commit as before
        commit = e.payload.get("commit")
        if commit:
            if e.payload.get("base"):
                self.base_commit = commit
            self.checkpoints[e.step] = commit
            self.last_checkpoint = commit
        for path in e.payload.get("changed") or ():
            self.changed_files.add(path)

    def _on_sandbox(self, e: Event) -> None:
        self.sandbox = dict(e.payload)

    def _on_limit(self, e: Event) -> None:
        self.status = "limit"
        self.limit = dict(e.payload)

    def _on_interrupted(self, e: Event) -> None:
        self.status = "interrupted"

    def _on_resumed(self, e: Event) -> None:
        self.status = "running"
        self.limit = None

    def _on_media_uploaded(self, e: Event) -> None:
        self.uploads[e.payload["sha256"]] = e.payload["file_id"]

    def _on_settings(self, e: Event) -> None:
        changes = dict(e.payload.get("changes") or {})
        self.settings = {**self.settings, **changes}
        if changes.get("thinking") is True:
            # Kimi rejects a thinking-mode history whose tool-call messages lack reasoning_content:
            # those made with thinking off get an empty one (new dicts: a message in the history is
            # never changed in place, the client caches its JSON by identity).
            self.messages = [{**m, "reasoning_content": " "}
                             if m.get("role") == "assistant" and m.get("tool_calls") and m.get("reasoning_content") is None
                             else m for m in self.messages]

    def _on_finished(self, e: Event) -> None:
        self.status = "finished"
        self.finish = dict(e.payload)
        self.pending_finish = None

    # -- queries ---------------------------------------------------------------------------
    @property
    def context_tokens(self) -> int:
        """Estimated prompt tokens of the next request, corrected by the last measurement."""
        if self.measured_prompt_tokens is not None:
            return self.measured_prompt_tokens + (self.tokens_total - self.tokens_total_at_measure)
        return self.fixed_tokens + self.tokens_total

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def request_messages(self) -> list[dict[str, Any]]:
        """The message list of the next request: valid for any prefix of the log."""
        # Defensive: the loop answers every call before asking again.
        # The same system dict each time while the prompt is unchanged: the client reuses the
        # serialized text of an unchanged prefix by identity.
        system = self._system_message
        if system is None or system["content"] is not self.system_prompt:
            system = self._system_message = {"role": "system", "content": self.system_prompt}
        return [system, *self.messages, *self._placeholder_results()]

    def snapshot(self) -> dict[str, Any]:
        """A comparable summary of everything the fold derives (tests: live vs replayed)."""
        return {
            "messages": self.messages,
            "message_tokens": self.message_tokens,
            "step": self.step,
            "pending": [(c.call_id, c.name, c.arguments, c.started) for c in self.pending],
            "todo": self.todo,
            "totals": vars(self.totals),
            "status": self.status,
            "finish": self.finish,
            "checkpoints": self.checkpoints,
            "compactions": self.compactions,
            "context_tokens": self.context_tokens,
            "system_prompt": self.system_prompt,
            "tools": self.tools,
        }


def _has_text(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content.strip())
    return bool(content)


_HANDLERS = {
    ev.SESSION_STARTED: SessionState._on_started,
    ev.USER_MESSAGE: SessionState._on_user,
    ev.ASSISTANT: SessionState._on_assistant,
    ev.TOOL_STARTED: SessionState._on_tool_started,
    ev.TOOL_RESULT: SessionState._on_tool_result,
    ev.TODO: SessionState._on_todo,
    ev.COMPACTION: SessionState._on_compaction,
    ev.CHECKPOINT: SessionState._on_checkpoint,
    ev.SANDBOX: SessionState._on_sandbox,
    ev.LIMIT: SessionState._on_limit,
    ev.INTERRUPTED: SessionState._on_interrupted,
    ev.RESUMED: SessionState._on_resumed,
    ev.FINISHED: SessionState._on_finished,
    ev.MEDIA_UPLOADED: SessionState._on_media_uploaded,
    ev.SETTINGS_CHANGED: SessionState._on_settings,
}
