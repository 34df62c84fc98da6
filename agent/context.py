"""Keeping a long session inside the model's window: tool-output budgets and compaction.

Compaction replaces old history with a hand-off summary written by a dedicated model call. The new
context is: system prompt, the task (verbatim), the summary plus the live todo list (verbatim), and
the most recent steps (verbatim, reasoning included). A compaction must end below the threshold: if
the summary request itself would not fit, the oldest history is dropped from it first; if the
result is still too big, fewer recent steps are kept; the summary's own size is capped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .media import strip_media
from .tokens import count_message, count_text

log = logging.getLogger(__name__)

SUMMARY_MAX_TOKENS = 8_192
RECENT_SHARE = 0.25  # of the threshold, kept verbatim as "recent steps"
OUTPUTS_DIR = ".kimi-code/outputs"

SUMMARY_PROMPT = """\
The conversation above is the older part of a long autonomous coding session. It will be replaced \
by your summary, so write a precise hand-off note for yourself to continue the work without it. \
Include, with exact file paths, commands, identifiers and error messages:
1. The task as you understand it, and any constraints or decisions the user or the project imposed.
2. What has been done so far and why (in order), including files created or changed.
3. Decisions taken and approaches that were tried and rejected (and why).
4. The current state: test results, failing tests and their errors, anything broken.
5. Open problems and questions.
6. The next steps, concretely.
Do not call tools. Reply with the note only."""


# -- tool-output budget --------------------------------------------------------------------------
def budget_tool_output(
    text: str, max_tokens: int, *, workspace: Path, session_id: str, call_id: str
) -> tuple[str, dict[str, Any]]:
    """Cut a too-long tool result in the middle, saving the full text where read_file can page it."""
    tokens = count_text(text)
    if tokens <= max_tokens:
        return text, {}
    safe_id = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in call_id)[:80]
    rel = Path(OUTPUTS_DIR) / session_id / f"{safe_id}.txt"
    path = workspace / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", errors="replace")
        _exclude_from_git(workspace)
        where = f"the full output ({len(text.splitlines())} lines) is saved at {rel.as_posix()}: page through it with read_file"
    except OSError as exc:
        where = f"the full output could not be saved ({exc})"
        rel = None  # type: ignore[assignment]
    # Keep head and tail in proportion to the budget (characters per token measured on this text).
    chars_per_token = max(1.0, len(text) / tokens)
    keep_chars = int(max_tokens * chars_per_token * 0.9)
    head, tail = text[: keep_chars * 2 // 3], text[len(text) - keep_chars // 3 :]
    removed_lines = text.count("\n") - head.count("\n") - tail.count("\n")
    notice = (
        f"\n\n[... {tokens - max_tokens:,}+ tokens ({len(text) - len(head) - len(tail):,} characters, about "
        f"{max(removed_lines, 0):,} lines) removed from the middle to fit the tool-output budget; {where} ...]\n\n"
    )
    meta = {"budget_cut": {"tokens": tokens, "budget": max_tokens, "saved_to": rel.as_posix() if rel else None}}
    return head + notice + tail, meta


def _exclude_from_git(workspace: Path) -> None:
    """Keep saved outputs out of git status, checkpoints and patches (local exclude, not .gitignore)."""
    exclude = workspace / ".git" / "info" / "exclude"
    if not (workspace / ".git").is_dir():
        return
    line = "/.kimi-code/"
    try:
        current = exclude.read_text() if exclude.exists() else ""
        if line not in current.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            with exclude.open("a") as fh:
                fh.write(("" if current.endswith("\n") or not current else "\n") + line + "\n")
    except OSError:
        pass


# -- compaction ----------------------------------------------------------------------------------
@dataclass
class CompactionPlan:
    keep_from: int  # index in state.messages of the first message kept verbatim
    to_summarize: list[dict[str, Any]]


def threshold_tokens(window: int, max_output: int, share: float) -> int:
    """Prompt size above which we compact: a share of what is left after reserving the answer."""
    return int((window - max_output) * share)


def needs_compaction(context_tokens: int, window: int, max_output: int, share: float) -> bool:
    return context_tokens > threshold_tokens(window, max_output, share)


def _cut_points(messages: list[dict[str, Any]]) -> list[int]:
    """Indices where the history can be split without separating tool calls from their results."""
    points = []
    for i, m in enumerate(messages):
        if m.get("role") in ("assistant", "user") and i > 0:
            points.append(i)
    return points


def plan_compaction(messages: list[dict[str, Any]], tokens: list[int], recent_budget: int,
                    head_count: int) -> CompactionPlan | None:
    """Keep as many recent messages as fit ``recent_budget``, starting at a clean cut point."""
    if len(messages) <= head_count + 1:
        return None
    keep_from = len(messages)
    acc = 0
    cuts = set(_cut_points(messages))
    best = None
    for i in range(len(messages) - 1, head_count - 1, -1):
        acc += tokens[i]
        if acc > recent_budget:
            break
        if i in cuts and messages[i].get("role") == "assistant":
            best = i
    keep_from = best if best is not None else len(messages)
    if keep_from <= head_count:
        return None
    return CompactionPlan(keep_from=keep_from, to_summarize=messages[head_count:keep_from])


INSTRUCTION_PREFIXES = ("# Task\n", "# Additional instructions from the user\n")


def is_instruction(message: dict[str, Any]) -> bool:
    """The task and the user's later instructions: carried over verbatim, never summarized away
    (their images and videos become placeholders: see ``media.strip_media``)."""
    content = message.get("content")
    if isinstance(content, list):  # with attachments: the instruction text comes first
        first = content[0] if content else None
        content = first.get("text") if isinstance(first, dict) and first.get("type") == "text" else None
    return message.get("role") == "user" and isinstance(content, str) and content.startswith(INSTRUCTION_PREFIXES)


def summary_request(system_prompt: str, instructions: list[dict[str, Any]] | dict[str, Any],
                    history: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """Messages for the summary call, dropping the oldest history until it fits ``budget``."""
    head = [instructions] if isinstance(instructions, dict) else list(instructions)
    strip = [strip_media(_without_reasoning(m)) for m in history if not is_instruction(m)]
    total = sum(count_message(m) for m in strip)
    fixed = count_text(system_prompt) + sum(count_message(m) for m in head) + count_text(SUMMARY_PROMPT) + 64
    start = 0
    while start < len(strip) and fixed + total > budget:
        total -= count_message(strip[start])
        start += 1
    body = _as_plain_transcript(strip[start:], dropped=start)
    return [
        {"role": "system", "content": system_prompt},
        *head,
        {"role": "user", "content": body + "\n\n" + SUMMARY_PROMPT},
    ]


def _without_reasoning(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "reasoning_content"}


def _as_plain_transcript(history: list[dict[str, Any]], dropped: int) -> str:
    """Render history as text so the summary call has no tool-call structure to validate."""
    lines = ["# Session history to summarize"]
    if dropped:
        lines.append(f"(the {dropped} oldest messages were dropped to fit; an earlier summary may be among them)")
    for m in history:
        role = m.get("role")
        content = m.get("content")
        if isinstance(content, list):  # media are placeholders naming the file by now (strip_media)
            content = " ".join(p.get("text", "[image]") for p in content if isinstance(p, dict))
        if role == "assistant":
            if content:
                lines.append(f"## assistant\n{content}")
            for call in m.get("tool_calls") or ():
                fn = call.get("function", {})
                lines.append(f"## tool call {fn.get('name')} {fn.get('arguments', '')[:4000]}")
        elif role == "tool":
            lines.append(f"## tool result ({m.get('name', '')})\n{(content or '')[:6000]}")
        else:
            lines.append(f"## {role}\n{content or ''}")
    return "\n\n".join(lines)


def summary_message(summary: str, todo: list[dict[str, Any]]) -> dict[str, Any]:
    todo_text = json.dumps(todo, ensure_ascii=False, indent=1) if todo else "(empty)"
    return {
        "role": "user",
        "content": (
            "[kimi-code] The older part of this session was compacted. Your hand-off summary of it:\n\n"
            f"{summary.strip()}\n\n# Current todo list (verbatim)\n{todo_text}\n\n"
            "Continue the task from here."
        ),
    }
