"""The declared payload of every event type: one pydantic model per type, one line per field.

The log stays plain JSON (``events.jsonl``, see events.py); these models are its schema and the
only way to make an event: the recorder takes an instance (``recorder.record(ToolResult(...))``),
so a field the model does not declare, a missing required one or a wrong type fails where the
event is made, and the log holds exactly the fields the constructor was given. Old logs are never
checked on load: readers keep accepting what earlier versions wrote. The README's table of event
types is generated from these models (``payload_table``) and a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import events as ev

Message = dict[str, Any]


class EventPayload(BaseModel):
    """Base of every payload model; ``TYPE`` is the event type it makes."""

    model_config = ConfigDict(extra="forbid")
    TYPE: ClassVar[str]

    def data(self) -> dict[str, Any]:
        """The payload as the log holds it: the fields the constructor was given, in declared order."""
        given = self.model_fields_set
        return {name: getattr(self, name) for name in type(self).model_fields if name in given}


class SessionStarted(EventPayload):
    """The session's first event, written with its directory before the sandbox starts."""

    TYPE = ev.SESSION_STARTED

    session_id: str = Field(description="the session's id")
    task: str = Field(description="the task, verbatim")
    repo: str = Field(description="the repository on the host")
    workspace: str = Field(description="the workspace as commands see it (/workspace in Docker)")
    model: str = Field(description="the model name")
    provider: str = Field(description="the endpoint preset")
    base_url: str = Field(description="the endpoint's base URL")
    system_prompt: str = Field(description="the system prompt, fixed for the whole session")
    tools: list[dict[str, Any]] = Field(description="the tool schemas sent with every request")
    settings: dict[str, Any] = Field(description="the settings a resume keeps (no API key)")
    fixed_tokens: int = Field(description="tokens of the system prompt and tool schemas")
    pid: int = Field(description="the process that ran it")
    checkpoints: bool | None = Field(None, description="false with --no-git (absent in first-wave logs)")
    attachments: list[dict[str, Any]] | None = Field(
        None, description="media given with the task (--attach): references to copies in the session's media/")
    parent: str | None = Field(None, description="a sub-agent's parent session")
    root: str | None = Field(None, description="a sub-agent's root session (the tree's budget holder)")


class Sandbox(EventPayload):
    """The sandbox was started, reattached or restarted."""

    TYPE = ev.SANDBOX

    action: str = Field(description="started, reattached or restarted")
    backend: str = Field(description="docker or local")
    container: str | None = Field(None, description="the container's name")
    container_id: str | None = Field(None, description="the container's id")
    image: str | None = Field(None, description="the sandbox image")
    workspace: str | None = Field(None, description="the workspace as commands see it")
    workspace_mode: str | None = Field(None, description="mount, or copy: the container holds its own copy")


class UserMessage(EventPayload):
    """A message in the user's role: the task, later instructions, notices, attachments."""

    TYPE = ev.USER_MESSAGE

    message: Message = Field(description="the message as sent to the model")
    kind: Literal["task", "continue", "notice", "attachment"] = Field(description="why it was added")
    tokens: int | None = Field(None, description="its counted size")


class Assistant(EventPayload):
    """A model turn: text, reasoning and tool calls; starts a step."""

    TYPE = ev.ASSISTANT

    message: Message = Field(description="content, reasoning_content and tool_calls, as sent back later")
    usage: dict[str, Any] = Field(description="prompt_tokens, completion_tokens, cached_tokens")
    cost: float = Field(description="money spent on the request, USD")
    cost_saved: float | None = Field(None, description="money the prefix cache saved, USD")
    finish_reason: str | None = Field(None, description="why the model stopped")
    request_id: str | None = Field(None, description="the endpoint's request id")
    tokens: int | None = Field(None, description="the message's counted size")


class ToolStarted(EventPayload):
    """A tool call began (a call without this never ran)."""

    TYPE = ev.TOOL_STARTED

    call_id: str = Field(description="the call's id")
    name: str = Field(description="the tool")
    index: int = Field(description="its position in the turn")
    arguments: str = Field(description="the arguments, as the model sent them")
    read_only: bool = Field(description="whether it only reads (re-run on resume if cut short)")


class ToolResult(EventPayload):
    """A tool call's result, as the model sees it."""

    TYPE = ev.TOOL_RESULT

    call_id: str = Field(description="the call's id")
    name: str = Field(description="the tool")
    content: str = Field(description="what the model sees")
    is_error: bool = Field(description="whether the call failed")
    metadata: dict[str, Any] = Field(description="e.g. exit_code, diff, tests, todo, saved output path")
    tokens: int | None = Field(None, description="the result message's counted size")
    interrupted: bool | None = Field(None, description="the call was cut short by a stop")


class Todo(EventPayload):
    """The plan (written by early versions; today the todo tool's result carries it)."""

    TYPE = ev.TODO

    items: list[dict[str, Any]] = Field(description="the plan's steps")


class Compaction(EventPayload):
    """Older history replaced by a summary."""

    TYPE = ev.COMPACTION

    keep_from: int = Field(description="index of the first message kept verbatim")
    head: list[Message] = Field(description="the instructions and summary that replace the older part")
    summary: str = Field(description="the summary's text")
    summarized_messages: int = Field(description="how many messages it replaced")
    tokens_before: int = Field(description="the context's size before")
    usage: dict[str, Any] | None = Field(None, description="the summary request's usage")
    cost: float | None = Field(None, description="the summary request's cost, USD")
    mechanical: bool | None = Field(None, description="more dropped without a new summary, to fit")


class Checkpoint(EventPayload):
    """The workspace was snapshotted after a step."""

    TYPE = ev.CHECKPOINT

    commit: str = Field(description="the checkpoint commit")
    changed: list[str] = Field(description="files changed since the previous checkpoint")
    skipped: list[str] = Field(description="files left out (too large, not regular)")
    base: bool | None = Field(None, description="the workspace as the agent found it")
    unchanged: bool | None = Field(None, description="nothing changed since the last one")
    restored_from_bundle: bool | None = Field(None, description="brought back from a CI bundle")


class Rewind(EventPayload):
    """The user rewound the session: the workspace and the conversation go back to a step."""

    TYPE = ev.REWIND

    to_step: int = Field(description="the step rewound to")
    commit: str = Field(description="that step's checkpoint")
    restored: list[str] | None = Field(None, description="files put back")


class ApiRetry(EventPayload):
    """A model request failed and is retried."""

    TYPE = ev.API_RETRY

    attempt: int = Field(description="the attempt that failed")
    wait: float = Field(description="seconds until the next one")
    reason: str = Field(description="what went wrong")
    status: int | None = Field(None, description="the HTTP status, if any")
    request_id: str | None = Field(None, description="the endpoint's request id")


class Limit(EventPayload):
    """A limit stopped the run."""

    TYPE = ev.LIMIT

    kind: Literal["steps", "cost", "time"] = Field(description="which limit")
    value: int | float = Field(description="the value reached")
    limit: int | float = Field(description="the limit")


class Interrupted(EventPayload):
    """The run stopped before finishing (Ctrl-C, SIGTERM, an API or sandbox failure)."""

    TYPE = ev.INTERRUPTED

    reason: str = Field(description="why")


class Resumed(EventPayload):
    """A process took the session over."""

    TYPE = ev.RESUMED

    pid: int = Field(description="the process")
    in_flight: list[str] = Field(description="tool calls that were running when the last one stopped")


class MediaUploaded(EventPayload):
    """An image or video was uploaded with the endpoint's files API; requests refer to it as ms://<id>."""

    TYPE = ev.MEDIA_UPLOADED

    sha256: str = Field(description="the content hash of the media (its copy is media/<sha256>.<ext>)")
    file_id: str = Field(description="the id the endpoint gave it")
    purpose: Literal["image", "video"] = Field(description="the upload's purpose")
    bytes: int = Field(description="its size")
    name: str = Field(description="the file it came from")


class Finished(EventPayload):
    """The run ended."""

    TYPE = ev.FINISHED

    status: Literal["success", "failure"] = Field(description="success or failure")
    summary: str = Field(description="what was done, or what blocked it")
    reason: str = Field(description="finish_tool, no_tool_calls, loop_guard, output_limit or empty_reply")


class SettingsChanged(EventPayload):
    """A setting changed mid-session (a chat's `/model`, `/thinking`); resume keeps it."""

    TYPE = ev.SETTINGS_CHANGED

    changes: dict[str, Any] = Field(description="the settings and their new values, e.g. {\"model\": \"kimi-k2.5\"}")


class ChildSpawned(EventPayload):
    """A sub-agent was created (agent/swarm.py); it is a session of its own, with its own log."""

    TYPE = ev.CHILD_SPAWNED

    child_id: str = Field(description="the child's session id")
    name: str = Field(description="the name the parent gave it")
    task: str = Field(description="its task, as the child received it")
    mode: Literal["worktree", "read_only"] = Field(description="where it works")
    call_id: str = Field(description="the spawn_agents call that made it")
    index: int = Field(description="its position in that call")
    depth: int = Field(description="1 for a child of the root")
    max_steps: int | None = Field(None, description="its own step budget")
    max_cost: float | None = Field(None, description="its own cost budget, USD")
    base: str | None = Field(None, description="the parent's checkpoint its worktree starts from")
    worktree: str | None = Field(None, description="its worktree on the host")


class ChildStarted(EventPayload):
    """A sub-agent began (or resumed) running."""

    TYPE = ev.CHILD_STARTED

    child_id: str = Field(description="the child's session id")
    resumed: bool = Field(False, description="it continued an earlier run")


class ChildEnded(EventPayload):
    """A sub-agent stopped: its compact result, as the parent sees it."""

    TYPE = ev.CHILD_ENDED

    child_id: str = Field(description="the child's session id")
    status: Literal["success", "failure", "limit", "cancelled", "error"] = Field(description="how it ended")
    result: dict[str, Any] = Field(description="summary, changed files, diffstat, steps, tokens, cost, head")


class ChildMerge(EventPayload):
    """A worktree child's changes against the parent's workspace: intent first, then the outcome."""

    TYPE = ev.CHILD_MERGE

    child_id: str = Field(description="the child's session id")
    phase: Literal["intent", "applied", "conflict", "nothing"] = Field(description="where the merge is")
    base: str = Field(description="tree the child started from")
    theirs: str = Field(description="tree of the child's final snapshot")
    ours: str | None = Field(None, description="tree of the parent's workspace before the merge")
    merged: str | None = Field(None, description="the merged tree written to the workspace (intent, applied)")
    files: list[str] = Field(default_factory=list, description="files written, or the conflicting ones")
    ref: str | None = Field(None, description="the ref holding the child's work")


PAYLOADS: dict[str, type[EventPayload]] = {model.TYPE: model for model in (
    SessionStarted, Sandbox, UserMessage, Assistant, ToolStarted, ToolResult, Todo, Compaction, Checkpoint,
    Rewind, ApiRetry, Limit, Interrupted, Resumed, Finished, MediaUploaded, SettingsChanged,
    ChildSpawned, ChildStarted, ChildEnded, ChildMerge,
)}


def check_payload(type_: str, payload: dict[str, Any]) -> None:
    """Raise ValueError naming what is wrong when ``payload`` does not fit its type's model."""
    model = PAYLOADS.get(type_)
    if model is None:
        raise ValueError(f"unknown event type {type_!r}")
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(f"{type_} event does not fit its declared payload: {problems}") from None


def payload_table() -> str:
    """The README's table of event types (optional fields end in ``?``)."""
    rows = ["| type | what it records | payload |", "|---|---|---|"]
    for type_, model in PAYLOADS.items():
        fields = ", ".join(f"`{name}`" + ("" if info.is_required() else "?") for name, info in model.model_fields.items())
        rows.append(f"| `{type_}` | {(model.__doc__ or '').strip()} | {fields} |")
    return "\n".join(rows)
