"""Compaction: when the context nears the model's window, older history becomes a summary.

What to keep and what to summarize is planned in context.py; this is the part that acts: it asks
the model for the summary (a dedicated call without tools or thinking) and records the result as
one ``compaction`` event, so a resume rebuilds exactly the same context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import context as ctxmod
from . import event_payloads as ep
from . import prompts
from .client import AssistantTurn, ModelClient
from .config import Settings
from .errors import ModelAPIError
from .events import Event
from .media import strip_media
from .state import SessionState


class Compactor:
    """One session's compaction, used by its loop before a model request."""

    def __init__(self, *, state: SessionState, settings: Settings, client: ModelClient,
                 record: Callable[[ep.EventPayload], Event], notice: Callable[[str], None],
                 set_phase: Callable[[str], None]) -> None:
        self.state = state
        self.settings = settings
        self.client = client
        self._record = record
        self._notice = notice
        self._set_phase = set_phase

    def due(self) -> bool:
        """The context is past the threshold (and no compaction ran in the last step)."""
        state, info = self.state, self.settings.model_info
        recently = state.last_compaction_step is not None and state.step - state.last_compaction_step < 2
        return bool(self.settings.compaction and not recently and ctxmod.needs_compaction(
            state.context_tokens, info.context_window, self.settings.output_reserve,
            self.settings.compaction_threshold))

    def compact(self, force: bool = False) -> bool:
        """Summarize older history; recorded as one event so a resume rebuilds the same context."""
        state = self.state
        info = self.settings.model_info
        threshold = ctxmod.threshold_tokens(info.context_window, self.settings.output_reserve, self.settings.compaction_threshold)
        # The task and the user's later instructions at the front stay verbatim.
        head_count = 0
        while head_count < len(state.messages) and ctxmod.is_instruction(state.messages[head_count]):
            head_count += 1
        recent_budget = int(threshold * ctxmod.RECENT_SHARE)
        plan = None
        for _ in range(4):
            plan = ctxmod.plan_compaction(state.messages, state.message_tokens, recent_budget, head_count)
            if plan is not None:
                break
            recent_budget //= 2
        if plan is None:
            if force:
                largest = max(state.message_tokens, default=0)
                raise ModelAPIError(
                    f"the request does not fit the model's {info.context_window:,}-token window and nothing more "
                    f"can be compacted (context ~{state.context_tokens:,} tokens, of which the system prompt and "
                    f"tools ~{state.fixed_tokens:,}, the largest message ~{largest:,}; "
                    f"{self.settings.output_reserve:,} are reserved for the answer)")
            return False
        self._notice(f"compacting context ({state.context_tokens:,} tokens)")
        instructions = state.messages[:head_count] or [{"role": "user", "content": prompts.task_message(state.task)}]
        # --continue instructions inside the summarized part are carried over verbatim too; their
        # images and videos are old by now: placeholders naming the file take their place.
        instructions += [m for m in plan.to_summarize if ctxmod.is_instruction(m)]
        instructions = [strip_media(m) for m in instructions]
        summary, turn = self._summarize(instructions, plan.to_summarize)
        if summary is None:
            self._notice("the summary call returned no text: dropping older history without a summary")
            summary = ("(No summary could be written. The older part of the session was dropped; re-check the "
                       "workspace state before continuing.)")
        head = [*instructions, ctxmod.summary_message(summary, state.todo)]
        spent: dict[str, Any] = {}
        if turn is not None:
            spent = {"usage": {"prompt_tokens": turn.usage.prompt_tokens,
                               "completion_tokens": turn.usage.completion_tokens,
                               "cached_tokens": turn.usage.cached_tokens},
                     "cost": turn.cost}
        self._record(ep.Compaction(keep_from=plan.keep_from, head=head, summary=summary,
                                   summarized_messages=len(plan.to_summarize),
                                   tokens_before=state.context_tokens, **spent))
        # A compaction must end below the threshold: if the recent part alone is too big, drop more.
        if state.context_tokens > threshold and len(state.messages) > len(head) + 1:
            plan2 = ctxmod.plan_compaction(state.messages, state.message_tokens, recent_budget // 4, len(head))
            keep_from = plan2.keep_from if plan2 else len(state.messages)
            self._record(ep.Compaction(keep_from=keep_from, head=state.messages[:len(head)], summary=summary,
                                       summarized_messages=0, tokens_before=state.context_tokens,
                                       mechanical=True))
        return True

    def _summarize(self, instructions: list[dict[str, Any]],
                   history: list[dict[str, Any]]) -> tuple[str | None, AssistantTurn | None]:
        """The summary call: no tools, no thinking (the whole budget goes to the note), output capped;
        one retry with more room if it came back empty or cut off."""
        info = self.settings.model_info
        budget = info.context_window - ctxmod.SUMMARY_MAX_TOKENS * 2 - 4_096
        request = ctxmod.summary_request(self.state.system_prompt, instructions, history, budget)
        turn = None
        text = None
        for cap in (ctxmod.SUMMARY_MAX_TOKENS, ctxmod.SUMMARY_MAX_TOKENS * 2):
            self._set_phase("model")
            try:
                turn = self.client.complete(request, None, session_id=self.state.session_id,
                                            max_output_tokens=min(cap, info.context_window // 4), thinking=False)
            finally:
                self._set_phase("idle")
            if turn.content.strip() and turn.finish_reason != "length":
                text = turn.content.strip()
                break
        return text, turn
