"""todo: the agent's plan. The whole list is replaced on every call, so the latest call is the plan."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict
from typing_extensions import TypedDict

from .types import ToolContext, ToolError, ToolResult

TodoStatus = Literal["pending", "in_progress", "done"]
_MARK = {"done": "[x]", "in_progress": "[>]", "pending": "[ ]"}


class TodoItem(TypedDict):
    """One step of the plan.

    Attributes:
        id: short stable identifier of the step, e.g. "1" or "tests".
        content: what the step is, in one line.
        status: pending, in_progress or done.
    """

    # Models often send numeric ids; they are identifiers, so "3" and 3 are the same.
    __pydantic_config__ = ConfigDict(coerce_numbers_to_str=True, extra="forbid")  # type: ignore[misc]

    id: str
    content: str
    status: TodoStatus


def render_todo(items: list[dict]) -> str:
    """The plan as the model and the terminal view show it."""
    if not items:
        return "Plan: (empty)"
    done = sum(1 for it in items if it.get("status") == "done")
    lines = [f"Plan ({done}/{len(items)} done):"]
    for it in items:
        lines.append(f"{_MARK.get(it.get('status', 'pending'), '[ ]')} {it.get('id')}. {it.get('content')}")
    return "\n".join(lines)


def todo(ctx: ToolContext, items: list[TodoItem]) -> ToolResult:
    """Replace your plan with this list of steps (send the whole list each time).

    Keep it current: mark a step in_progress when you start it and done when it is finished;
    work on one step at a time. The plan survives context compaction. An empty list clears it.

    Args:
        items: all steps of the plan, in order.
    """
    cleaned: list[dict] = []
    seen: set[str] = set()
    for n, item in enumerate(items, 1):
        item_id = item["id"].strip()
        content = " ".join(item["content"].split())
        if not item_id:
            raise ToolError(f"item {n}: id is empty")
        if not content:
            raise ToolError(f"item {n} ({item_id}): content is empty")
        if item_id in seen:
            raise ToolError(f"item {n}: id {item_id!r} is used twice; ids must be unique")
        seen.add(item_id)
        cleaned.append({"id": item_id, "content": content, "status": item["status"]})
    # Rebind rather than mutate: the list passed in may be the session state's own, which only
    # the event fold (from metadata["todo"]) may change.
    ctx.todo = cleaned
    text = render_todo(cleaned)
    active = [it["id"] for it in cleaned if it["status"] == "in_progress"]
    if len(active) > 1:
        text += (f"\nNote: {len(active)} steps are in_progress ({', '.join(active)}); "
                 "finish one before starting the next.")
    return ToolResult(text, metadata={"todo": cleaned})
