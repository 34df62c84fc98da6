"""finish: the model's way to end the run; the loop stops when it sees metadata["finish"]."""

from __future__ import annotations

from typing import Literal

from .types import ToolContext, ToolError, ToolResult


def finish(ctx: ToolContext, summary: str, status: Literal["success", "failure"] = "success") -> ToolResult:
    """End the run. Call it once, when the task is done or cannot be done.

    Args:
        summary: what was done (files changed, how it was verified) or, on failure, what blocked you.
        status: success when the task is done, failure when it could not be completed.
    """
    summary = summary.strip()
    if not summary:
        raise ToolError("summary is empty: say what was done and how it was verified")
    return ToolResult(f"Run finished ({status}).", metadata={"finish": {"summary": summary, "status": status}})
