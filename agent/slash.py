"""The slash commands of an interactive session: one table, one handler each.

They act on the live session between turns, through the same modules the command line uses
(rewind.py for ``/diff``, ``/rewind`` and ``/undo``, the loop's compactor for ``/compact``), and
anything that changes the session goes into its log first (a rewind's events, a
``settings_changed``), so a resume after a kill finds what the user did. Printing goes through
``ChatContext.out``; no terminal library is needed here.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import event_payloads as ep
from .config import MODELS, Settings
from .errors import KimiCodeError

if TYPE_CHECKING:
    from .attachments import Attachment, RunTool
    from .session import LiveSession


class Output(Protocol):
    """Where a command's text goes (the chat's console)."""

    def line(self, text: str, style: str = "") -> None: ...

    def diff(self, text: str) -> None: ...


@dataclass
class ChatContext:
    """What a command may use: the live session (None before a new chat's first message), the
    settings a new session would start with, the attachments queued for the next message."""

    out: Output
    settings: Settings
    workspace: Path
    run_tool: RunTool
    live: LiveSession | None = None
    attachments: list[Attachment] = field(default_factory=list)
    leave: bool = False

    @property
    def current_settings(self) -> Settings:
        return self.live.loop.settings if self.live is not None else self.settings


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    run: Callable[[ChatContext, list[str]], None]
    needs_session: bool = True


class CommandError(Exception):
    """A command that cannot do what was asked; one line for the user."""


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, help: str, needs_session: bool = True) -> Callable[..., Any]:
    def register(fn: Callable[[ChatContext, list[str]], None]) -> Callable[[ChatContext, list[str]], None]:
        COMMANDS[name] = Command(name, usage, help, fn, needs_session)
        return fn
    return register


def is_command(line: str) -> bool:
    """A line starting with ``/`` is a command; ``//`` sends a message that starts with ``/``."""
    return line.startswith("/") and not line.startswith("//")


def dispatch(ctx: ChatContext, line: str) -> None:
    """Run one command line; every failure becomes one line of output."""
    try:
        words = shlex.split(line[1:])
    except ValueError as exc:
        ctx.out.line(f"cannot read the command: {exc}", "red")
        return
    name, args = (words[0].lower(), words[1:]) if words else ("", [])
    cmd = COMMANDS.get(name)
    if cmd is None:
        ctx.out.line(f"unknown command /{name} (try /help)", "red")
        return
    if cmd.needs_session and ctx.live is None:
        ctx.out.line(f"/{name}: no session yet; send a message to start one", "yellow")
        return
    try:
        cmd.run(ctx, args)
    except (CommandError, KimiCodeError) as exc:
        ctx.out.line(f"/{name}: {exc}", "red")


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"{what} must be a step number, not {text!r}") from None


@contextmanager
def _whole() -> Iterator[None]:
    """A command that changes the session runs to its end: a Ctrl-C meanwhile (the terminal is
    not in raw mode between prompts) must not leave half of it in the log."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _live(ctx: ChatContext) -> LiveSession:
    assert ctx.live is not None  # needs_session
    return ctx.live


def _checkpointer(ctx: ChatContext) -> Any:
    live = _live(ctx)
    if live.checkpointer is None or live.loop.state.base_commit is None:
        raise CommandError("this session has no checkpoints (not a git repository, or --no-git)")
    return live.checkpointer


# -- the commands --------------------------------------------------------------------------------
@command("diff", "/diff [STEP]", "what the session changed, or what one step changed")
def _diff(ctx: ChatContext, args: list[str]) -> None:
    from .rewind import step_diff

    step = _int(args[0], "STEP") if args else None
    text = step_diff(_checkpointer(ctx), _live(ctx).loop.state, step)
    if text is None:
        ctx.out.line(f"step {step} changed nothing in the workspace")
    elif not text.strip():
        ctx.out.line("no changes yet")
    else:
        ctx.out.diff(text)


def _rewind_to(ctx: ChatContext, step: int, force: bool) -> None:
    from .rewind import rewind_live

    live = _live(ctx)
    settings = live.loop.settings
    before = (settings.model, settings.thinking)
    sandbox = live.loop.tool_ctx.sandbox
    with _whole():
        sandbox.sync_workspace()  # a sandbox with its own copy (workspace = copy): its last changes first
        result = rewind_live(live.loop.recorder, _checkpointer(ctx), step, force)
        sandbox.workspace_written(list(result.restored))  # and the restored files go back into it
    state = live.loop.state
    live.loop.tool_ctx.todo = state.todo
    live.loop.update_meta()
    # A rewind takes the settings back too (settings_changed events are part of their step).
    for key in ("model", "thinking"):
        if key in state.settings and getattr(settings, key) != state.settings[key]:
            setattr(settings, key, state.settings[key])
    files = ", ".join(result.restored[:8]) + (" …" if len(result.restored) > 8 else "")
    ctx.out.line(f"rewound to step {step}: {len(result.restored)} file(s) restored" + (f" ({files})" if files else "")
                 + "; the conversation is back there too", "green")
    if (settings.model, settings.thinking) != before:
        ctx.out.line(f"model {settings.model}, thinking {_on(settings.thinking_enabled)} (as at step {step})")


@command("rewind", "/rewind N [--force]", "workspace and conversation back to the end of step N")
def _rewind(ctx: ChatContext, args: list[str]) -> None:
    force = "--force" in args
    rest = [a for a in args if a != "--force"]
    if len(rest) != 1:
        raise CommandError("usage: /rewind N [--force]")
    _rewind_to(ctx, _int(rest[0], "N"), force)


@command("undo", "/undo [--force]", "take back the last turn: its files and its conversation")
def _undo(ctx: ChatContext, args: list[str]) -> None:
    from .rewind import undo_target

    live = _live(ctx)
    _checkpointer(ctx)
    target = undo_target(live.runner.session.log.load(), live.loop.state.step)
    _rewind_to(ctx, target, "--force" in args)


@command("cost", "/cost", "tokens, cached share, money and budget left")
def _cost(ctx: ChatContext, args: list[str]) -> None:
    live = _live(ctx)
    state = live.loop.state
    t = state.totals
    window = live.loop.settings.model_info.context_window
    ctx.out.line(f"tokens: {t.prompt_tokens:,} in ({t.cached_tokens:,} cached, {t.cached_share:.0%}) · "
                 f"{t.completion_tokens:,} out · {t.requests} request(s)")
    ctx.out.line(f"cost: ${t.cost:.4f} (the cache saved ${t.cost_saved_by_cache:.4f})")
    ctx.out.line(f"context: {state.context_tokens:,} of {window:,} tokens · {state.step} step(s)")
    limit = live.loop.limits.max_cost
    if limit is None:
        ctx.out.line("budget: none (--max-cost USD sets one)")
    else:
        ctx.out.line(f"budget: ${max(0.0, limit - t.cost):.4f} left of ${limit:.4f}")


@command("compact", "/compact", "summarize older history now")
def _compact(ctx: ChatContext, args: list[str]) -> None:
    loop = _live(ctx).loop
    before = loop.state.context_tokens
    with loop.signals:  # a Ctrl-C aborts the summary request; an event is recorded whole or not at all
        try:
            done = loop.compactor.compact()
        except KeyboardInterrupt:
            ctx.out.line("compaction cancelled", "yellow")
            return
    if not done:
        ctx.out.line("nothing to compact yet: the history is short")
    else:
        ctx.out.line(f"compacted: context {before:,} → {loop.state.context_tokens:,} tokens", "green")


@command("todo", "/todo", "the agent's plan")
def _todo(ctx: ChatContext, args: list[str]) -> None:
    items = _live(ctx).loop.state.todo
    if not items:
        ctx.out.line("no plan yet")
    marks = {"pending": "[ ]", "in_progress": "[>]", "done": "[x]"}
    for item in items:
        ctx.out.line(f"{marks.get(item.get('status'), '[ ]')} {item.get('content', '')}")


def _change(ctx: ChatContext, **changes: Any) -> None:
    """Apply a settings change: recorded first when a session is live, so a resume keeps it."""
    settings = ctx.current_settings
    before = {key: getattr(settings, key) for key in changes}
    try:
        for key, value in changes.items():
            setattr(settings, key, value)  # validated (pydantic): a bad value fails before anything is recorded
        if ctx.live is not None:
            with _whole():
                ctx.live.loop.record(ep.SettingsChanged(changes=changes))
    except Exception:
        for key, value in before.items():
            setattr(settings, key, value)
        raise


@command("model", "/model NAME", "the model for the next messages", needs_session=False)
def _model(ctx: ChatContext, args: list[str]) -> None:
    settings = ctx.current_settings
    if len(args) != 1:
        known = ", ".join(MODELS)
        raise CommandError(f"usage: /model NAME (now {settings.model}; known: {known})")
    try:
        _change(ctx, model=args[0])
    except ValueError as exc:
        raise CommandError(str(exc).splitlines()[0]) from None
    ctx.out.line(f"model: {settings.model} from the next message", "green")


def _on(flag: bool) -> str:
    return "on" if flag else "off"


@command("thinking", "/thinking on|off", "Kimi thinking mode for the next messages", needs_session=False)
def _thinking(ctx: ChatContext, args: list[str]) -> None:
    settings = ctx.current_settings
    if len(args) != 1 or args[0].lower() not in ("on", "off"):
        raise CommandError(f"usage: /thinking on|off (now {_on(settings.thinking_enabled)})")
    _change(ctx, thinking=args[0].lower() == "on")
    ctx.out.line(f"thinking: {_on(settings.thinking_enabled)} from the next message", "green")


@command("attach", "/attach FILE", "attach a file (text or image) to the next message", needs_session=False)
def _attach(ctx: ChatContext, args: list[str]) -> None:
    from .attachments import AttachmentError, attach

    if not args:
        raise CommandError("usage: /attach FILE")
    for path in args:
        try:
            item = attach(path, ctx.run_tool)
        except AttachmentError as exc:
            raise CommandError(str(exc)) from None
        ctx.attachments.append(item)
        ctx.out.line(f"attached {item.summary}: it goes with your next message", "green")


@command("sessions", "/sessions", "the sessions in the state directory", needs_session=False)
def _sessions(ctx: ChatContext, args: list[str]) -> None:
    import datetime as dt

    from .store import SessionStore

    current = ctx.live.runner.session.id if ctx.live is not None else None
    metas = SessionStore(ctx.current_settings.state_dir).list()
    if not metas:
        ctx.out.line("no sessions")
    for m in metas[:20]:
        when = dt.datetime.fromtimestamp(m.updated).strftime("%Y-%m-%d %H:%M")
        task = (m.task.splitlines() or [""])[0][:50]
        mark = "*" if m.id == current else " "
        ctx.out.line(f"{mark} {m.id}  {m.status:<11} {m.steps:>4} steps  ${m.cost:.4f}  {when}  {task}")
    if len(metas) > 20:
        ctx.out.line(f"… and {len(metas) - 20} more (kimi-code sessions)")


@command("help", "/help", "this list", needs_session=False)
def _help(ctx: ChatContext, args: list[str]) -> None:
    for cmd in COMMANDS.values():
        ctx.out.line(f"{cmd.usage:<22} {cmd.help}")
    ctx.out.line("@path in a message attaches that file; Tab completes commands and paths.")
    ctx.out.line("Enter sends; Esc Enter (or a line ending in \\) starts a new line; //text sends /text.")
    ctx.out.line("Ctrl-C stops a turn; at an empty prompt Ctrl-C or Ctrl-D leaves.")


@command("exit", "/exit", "leave (the session can be resumed)", needs_session=False)
def _exit(ctx: ChatContext, args: list[str]) -> None:
    ctx.leave = True
