"""The interactive terminal session: a prompt, turns, slash commands and approvals.

It drives the same engine as ``run`` and ``resume``: the first message starts a session
(``session.start``), and each later one continues it exactly as ``resume --continue`` would, with
the sandbox and the loop kept up between turns (``session.Conversation``). The log stays the only
truth: a kill -9 at any moment leaves a session ``kimi-code resume`` continues. Only this module
imports prompt_toolkit, and only ``kimi-code chat`` (or a bare ``kimi-code`` / ``resume`` on a
terminal) imports this module.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console
from rich.text import Text

from . import events as ev
from .approval import Answer, Approvals
from .attachments import AttachmentError, attach, mentions, unresolved_mentions
from .config import MODELS, Settings
from .events import Event
from .loop import Outcome
from .session import LiveSession, RunOptions, RunResult, resume, start
from .slash import COMMANDS, ChatContext, dispatch, is_command
from .view import RichView, describe

HISTORY_FILE = ".chat-history"  # in the state directory (a dot name: never taken for a session)
PROMPT = "› "
MAX_COMPLETIONS = 200


# -- output --------------------------------------------------------------------------------------
class ConsoleOutput:
    """Command output on the chat's console (never read as rich markup)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def line(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style), highlight=False, soft_wrap=True)

    def diff(self, text: str) -> None:
        for line in text.rstrip("\n").split("\n"):
            style = ("bold" if line.startswith(("diff --git", "+++", "---")) else "green" if line.startswith("+")
                     else "red" if line.startswith("-") else "cyan" if line.startswith("@@") else "")
            self.console.print(Text(line, style=style), highlight=False, soft_wrap=True)


class ChatView(RichView):
    """The live view of ``run``, with the agent's words in full: in a chat they are the answer."""

    SILENT = frozenset({ev.SESSION_STARTED, ev.SETTINGS_CHANGED, ev.REWIND})

    def line_for(self, event: Event, state: Any) -> str | Text | None:
        p = event.payload
        if event.type == ev.ASSISTANT:
            content = p.get("message", {}).get("content")
            return Text(content.strip()) if isinstance(content, str) and content.strip() else None
        if event.type in self.SILENT or (event.type == ev.USER_MESSAGE
                                         and p.get("kind") in ("task", "continue", "attachment")):
            return None  # the user typed it, or a command said it
        if (event.type == ev.SANDBOX and p.get("action") == "started") or (event.type == ev.CHECKPOINT
                                                                            and p.get("base")):
            return None  # the usual start: nothing to tell
        if event.type == ev.FINISHED:
            if p.get("reason") == "no_tool_calls":
                return None  # the reply's text was printed as it came
            mark = "done" if p.get("status") == "success" else "failed"
            return Text(f"{mark}: {p.get('summary', '')}", style="bold")
        return describe(event, state)


# -- input ---------------------------------------------------------------------------------------
class ChatCompleter(Completer):
    """Slash commands at the start of a line; workspace paths after ``@`` (and after /attach)."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace.resolve()

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        if text.startswith("/") and not any(c.isspace() for c in text):
            for name, cmd in COMMANDS.items():
                if name.startswith(text[1:].lower()):
                    yield Completion("/" + name, start_position=-len(text), display_meta=cmd.help)
            return
        word = "" if not text or text[-1].isspace() else text.split()[-1]
        if word.startswith("@"):
            yield from self._paths(word[1:])
        elif text.startswith("/attach ") and word:
            yield from self._paths(word)
        elif text.startswith("/model ") and text.count(" ") == 1:
            yield from (Completion(m, start_position=-len(word)) for m in MODELS if m.startswith(word))
        elif text.startswith("/thinking ") and text.count(" ") == 1:
            yield from (Completion(v, start_position=-len(word)) for v in ("on", "off") if v.startswith(word))

    def _paths(self, partial: str) -> Iterator[Completion]:
        folder, _, prefix = partial.rpartition("/")
        base = (self.workspace / folder).resolve() if folder else self.workspace
        if base != self.workspace and self.workspace not in base.parents:
            return
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError:
            return
        shown = 0
        for entry in entries:
            name = entry.name
            if not name.startswith(prefix) or name == ".git" or (name.startswith(".") and not prefix.startswith(".")):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            path = (f"{folder}/" if folder else "") + name + ("/" if is_dir else "")
            yield Completion(path, start_position=-len(partial), display=name + ("/" if is_dir else ""))
            shown += 1
            if shown >= MAX_COMPLETIONS:
                return


def _bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("enter")
    def _send(event: KeyPressEvent) -> None:
        buf = event.current_buffer
        state = buf.complete_state
        if state is not None and state.current_completion is not None:
            buf.apply_completion(state.current_completion)
        elif buf.document.text_before_cursor.endswith("\\"):
            buf.delete_before_cursor(1)
            buf.insert_text("\n")
        else:
            buf.validate_and_handle()

    @kb.add("escape", "enter")
    @kb.add("c-j")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    @kb.add("c-c")
    def _clear_or_leave(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt)

    return kb


class PromptUI:
    """The prompt: history across sessions (a file in the state directory), multi-line input,
    completion; and the one-line questions of approvals."""

    def __init__(self, workspace: Path, state_dir: Path) -> None:
        self.session: PromptSession[str] = PromptSession(
            history=_history(state_dir), completer=ChatCompleter(workspace), complete_while_typing=False,
            multiline=True, key_bindings=_bindings(), prompt_continuation="  ")
        self.questions: PromptSession[str] = PromptSession()

    def read(self) -> str | None:
        """The next input; None when the user leaves (Ctrl-D, or Ctrl-C at an empty prompt)."""
        try:
            # In raw mode Ctrl-C is a key, not a signal: SIGINT stays the loop's (stop_signals.py).
            return self.session.prompt(PROMPT, handle_sigint=False)
        except (EOFError, KeyboardInterrupt):
            return None

    def ask(self, question: str) -> str | None:
        """One answer; None for Ctrl-D. Ctrl-C raises KeyboardInterrupt."""
        try:
            return self.questions.prompt(question, handle_sigint=False)
        except EOFError:
            return None


def _history(state_dir: Path) -> History:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / HISTORY_FILE
        path.touch(exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()


# -- the host --------------------------------------------------------------------------------------
class ChatHost:
    """Talks to the user between turns and answers the loop's approval questions
    (``session.Conversation``)."""

    def __init__(self, settings: Settings | None, workspace: Path | None, approval: str, *,
                 console: Console | None = None, state_dir_flag: Path | None = None) -> None:
        """``settings`` and ``workspace``: a new chat's, known before its session exists; a
        reopened session brings its own (None here)."""
        self.console = console or Console()
        self.out = ConsoleOutput(self.console)
        self.approval = approval
        self.state_dir_flag = state_dir_flag
        self.view: ChatView | None = None
        self.ui: PromptUI | None = None
        self.ctx: ChatContext | None = None
        self.first_attachments: list[Any] = []  # the first message's attachments (contents)
        if settings is not None and workspace is not None:
            self._open_ui(settings, workspace)

    def _open_ui(self, settings: Settings, workspace: Path) -> None:
        from kimi_code.tools.types import ToolContext

        from .assembly import default_tools

        registry = default_tools()
        tool_ctx = ToolContext(workspace=workspace, sandbox=None)  # type: ignore[arg-type] - read_file/view_image only
        self.ui = PromptUI(workspace, settings.state_dir)
        self.ctx = ChatContext(out=self.out, settings=settings, workspace=workspace,
                               run_tool=lambda name, args: registry.run(name, args, tool_ctx))

    # -- Conversation
    def make_view(self, session_id: str) -> ChatView:
        self.view = ChatView(self.console)
        return self.view

    def attach(self, live: LiveSession) -> None:
        if self.ui is None:
            self._open_ui(live.loop.settings, live.runner.workspace)
        assert self.ctx is not None
        self.ctx.live = live
        loop = live.loop
        approvals = Approvals(self.approval, self._ask, live.runner.workspace, stop=loop.signals.request_stop)
        if self.approval != "auto":
            loop.approve = lambda call: approvals.decide(call.name, call.arguments,
                                                         loop.registry.is_read_only(call.name, call.arguments))
        loop.pending_notices.extend(("attachment", content) for content in self.first_attachments)

    def next_turn(self, live: LiveSession, outcome: Outcome | None) -> bool:
        if self.view is not None:
            self.view.pause()
        state = live.loop.state
        if outcome is None:
            where = "finished" if state.finished else f"stopped at step {state.step}"
            self.out.line(f"reopened session {live.runner.session.id} ({where}, {state.step} step(s), "
                          f"${state.totals.cost:.4f}); /help for commands", "bold")
            if not state.finished:
                self.out.line("press Enter to continue where it stopped, or type a message", "dim")
        else:
            self._turn_footer(live, outcome)
        text = self._read(allow_empty=outcome is None and not state.finished)
        if text is None:
            return False
        if text.strip():
            live.follow_up(text, self._attachments_for(text))
        if self.view is not None:
            self.view.resume()
        return True

    # -- a new chat's first message
    def first_message(self) -> str | None:
        """The message that starts the session (None: the user left before sending one)."""
        text = self._read(allow_empty=False)
        if text is not None:
            self.first_attachments = self._attachments_for(text)
        return text

    def _read(self, *, allow_empty: bool) -> str | None:
        assert self.ui is not None and self.ctx is not None
        while True:
            text = self.ui.read()
            if text is None:
                return None
            if is_command(text.strip()):
                try:
                    dispatch(self.ctx, text.strip())
                except KeyboardInterrupt:
                    self.out.line("cancelled", "yellow")
                if self.ctx.leave:
                    return None
                continue
            if text.startswith("//"):
                text = text[1:]
            if text.strip() or allow_empty:
                return text

    def _attachments_for(self, text: str) -> list[Any]:
        """The files the message mentions with ``@`` and those queued with /attach, made now."""
        assert self.ctx is not None
        items = list(self.ctx.attachments)
        self.ctx.attachments.clear()
        for path in mentions(text, self.ctx.workspace):
            if any(a.path == path for a in items):
                continue
            try:
                item = attach(path, self.ctx.run_tool)
            except AttachmentError as exc:
                self.out.line(f"@{path} not attached: {exc}", "yellow")
                continue
            items.append(item)
        for word in unresolved_mentions(text, self.ctx.workspace):
            self.out.line(f"@{word} is not a file in the workspace: not attached", "yellow")
        for item in items:
            self.out.line(f"attached {item.summary}", "dim")
        return [item.content for item in items]

    def _turn_footer(self, live: LiveSession, outcome: Outcome) -> None:
        state = live.loop.state
        t = state.totals
        line = (f"── step {state.step} · ${t.cost:.4f} · context {state.context_tokens:,} tok · "
                f"cached {t.cached_share:.0%}")
        if outcome.status == "limit":
            line += " · limit reached: leave (Ctrl-D) and resume with a higher limit to go on"
        self.out.line(line, "dim")

    # -- approvals
    def _ask(self, name: str, shown: str) -> Answer:
        """The question before a call; the live panel steps aside meanwhile."""
        assert self.ui is not None
        if self.view is not None:
            self.view.pause()
        try:
            self.out.line(f"the agent wants to run {name}:", "bold yellow")
            if shown.startswith("--- "):
                self.out.diff(shown)
            else:
                self.out.line(shown)
            while True:
                try:
                    reply = self.ui.ask(f"allow {name}? [y]es / [n]o (a reason may follow) / [a]lways for {name}: ")
                except KeyboardInterrupt:
                    self.out.line("stopping the turn", "yellow")
                    return ("stop", "")
                if reply is None:
                    return ("no", "")
                word, _, rest = reply.strip().partition(" ")
                word = word.lower()
                if word in ("y", "yes"):
                    return ("yes", "")
                if word in ("a", "always"):
                    return ("always", "")
                if word in ("n", "no"):
                    return ("no", rest)
                self.out.line("answer y, n or a", "yellow")
        finally:
            if self.view is not None:
                self.view.resume()

    def banner(self, workspace: Path | str) -> None:
        assert self.ctx is not None
        s = self.ctx.current_settings
        self.out.line(f"kimi-code chat · {s.model} · {workspace} · approval {self.approval}", "bold")
        self.out.line("Type a message (Enter sends, Esc Enter for a new line), /help for commands, "
                      "Ctrl-D to leave.", "dim")

    def farewell(self, result: RunResult) -> None:
        cmd = f"kimi-code resume {shlex.quote(result.session_id)}"
        if self.state_dir_flag is not None:
            cmd += f" --state-dir {shlex.quote(str(self.state_dir_flag))}"
        t = result.summary["tokens"]
        self.out.line(f"session {result.session_id} · {result.summary['steps']} steps · ${result.summary['cost']:.4f} · "
                      f"{t['prompt']:,} in ({t['cached_share']:.0%} cached) / {t['completion']:,} out")
        self.console.print(f"resume with: {cmd}", highlight=False, markup=False, soft_wrap=True)


# -- entry points (agent/cli.py) ----------------------------------------------------------------------
def chat(settings: Settings, workspace: Path, options: RunOptions, approval: str,
         state_dir_flag: Path | None = None) -> RunResult | None:
    """A new interactive session in ``workspace``; None when the user left before a first message."""
    host = ChatHost(settings, workspace, approval, state_dir_flag=state_dir_flag)
    host.banner(workspace)
    first = host.first_message()
    if first is None:
        return None
    options.conversation = host
    result = start(settings, first, workspace, options)
    host.farewell(result)
    return result


def reopen(settings_flags: dict[str, Any], session_ref: str | None, options: RunOptions, approval: str,
           state_dir: Path | None = None) -> RunResult:
    """``kimi-code resume ID`` on a terminal: the session reopened, waiting for a message (or
    running ``--continue TEXT`` first)."""
    host = ChatHost(None, None, approval, state_dir_flag=state_dir)
    options.conversation = host
    result = resume(settings_flags, session_ref, options, state_dir=state_dir)
    host.farewell(result)
    return result
