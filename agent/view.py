"""What the user sees. Views subscribe to events; they never own state.

- ``RichView``: a live panel on a terminal (step, running tool and its elapsed time, tokens, cost,
  cached share, the todo list) above a line per finished tool call.
- ``PlainView``: one plain line per event, for logs and pipes.
- ``StreamJsonView`` (``--output stream-json``): every session event as one JSON object per line on
  stdout, exactly as stored in ``events.jsonl`` plus ``session_id``; then a final ``summary`` object.
- ``QuietView`` (``--output json``): nothing while running; the CLI prints one summary object.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from . import events as ev
from .events import Event

STATUS_MARK = {"pending": "[ ]", "in_progress": "[>]", "done": "[x]"}


def _short(text: str, n: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _call_label(name: str, arguments: str) -> str:
    try:
        args = json.loads(arguments) if arguments else {}
    except ValueError:
        return f"{name}({_short(arguments, 60)})"
    if not isinstance(args, dict):
        return f"{name}(...)"
    key = next((k for k in ("command", "path", "pattern", "summary") if k in args), None)
    if key:
        return f"{name} {_short(str(args[key]), 80)}"
    return name


def describe(event: Event, state: Any) -> str | None:
    """A one-line human description of an event (None: not worth a line)."""
    p = event.payload
    t = event.type
    if t == ev.SESSION_STARTED:
        return f"session {p.get('session_id')} · {p.get('model')} · {p.get('workspace')}"
    if t == ev.ASSISTANT:
        msg = p.get("message", {})
        content = msg.get("content") or ""
        calls = len(msg.get("tool_calls") or [])
        usage = p.get("usage", {})
        line = f"step {event.step}: {calls} tool call(s), {usage.get('prompt_tokens', 0):,} in / {usage.get('completion_tokens', 0):,} out"
        if content.strip():
            line += f" · {_short(content, 120)}"
        return line
    if t == ev.TOOL_RESULT:
        meta = p.get("metadata") or {}
        mark = "✗" if p.get("is_error") else "✓"
        extra = f" exit={meta['exit_code']}" if "exit_code" in meta else ""
        if p.get("interrupted"):
            extra += " (interrupted)"
        return f"  {mark} {p.get('name')}{extra} · {_short(p.get('content', ''), 90)}"
    if t == ev.API_RETRY:
        return f"  model API: {p.get('reason')}; retry {p.get('attempt')} in {p.get('wait')}s"
    if t == ev.COMPACTION:
        return f"  context compacted ({p.get('tokens_before', 0):,} tokens before)"
    if t == ev.CHECKPOINT:
        if p.get("unchanged"):
            return None
        return f"  checkpoint {str(p.get('commit', ''))[:10]} ({len(p.get('changed') or [])} file(s))"
    if t == ev.LIMIT:
        return f"limit reached: {p.get('kind')} ({p.get('value')} of {p.get('limit')})"
    if t == ev.FINISHED:
        return f"finished ({p.get('status')}): {_short(p.get('summary', ''), 300)}"
    if t == ev.INTERRUPTED:
        return f"stopped: {p.get('reason')}"
    if t == ev.USER_MESSAGE and p.get("kind") in ("notice", "continue"):
        content = p.get("message", {}).get("content")
        return f"  note: {_short(content if isinstance(content, str) else '[content]', 120)}"
    if t == ev.SANDBOX:
        return f"  sandbox {p.get('action')}: {p.get('container') or p.get('backend')}"
    if t == ev.RESUMED:
        return f"resumed at step {event.step}"
    if t == ev.CHILD_SPAWNED:
        return f"  agent {p.get('child_id')} spawned: {p.get('name')} ({p.get('mode')}) · {_short(p.get('task', ''), 80)}"
    if t == ev.CHILD_STARTED:
        return f"  agent {p.get('child_id')} {'resumed' if p.get('resumed') else 'started'}"
    if t == ev.CHILD_ENDED:
        r = p.get("result") or {}
        return (f"  agent {p.get('child_id')} ended ({p.get('status')}): {r.get('steps', 0)} step(s), "
                f"${float(r.get('cost') or 0):.4f} · {_short(r.get('summary', ''), 100)}")
    if t == ev.CHILD_MERGE and p.get("phase") != "intent":
        what = {"applied": f"merged {len(p.get('files') or [])} file(s)", "nothing": "nothing to merge",
                "conflict": f"CONFLICT in {', '.join(p.get('files') or [])} (work kept on {p.get('ref')})"}
        return f"  agent {p.get('child_id')}: {what.get(p.get('phase'), p.get('phase'))}"
    return None


def swarm_lines(swarm: Any, budget: Any) -> list[str]:
    """The live view's swarm section: counts, the tree's cost against its budget, active children."""
    c = swarm.counts()
    spent = budget.cost if budget is not None else 0.0
    cost = f"${spent:.4f}" + (f" of ${budget.max_cost:g}" if budget is not None and budget.max_cost else "")
    lines = [f"agents: {c['running']} running · {c['queued']} queued · {c['done']} done · {c['failed']} failed"
             f" · tree {cost}"]
    for child in swarm.active()[:12]:
        live = child.live
        lines.append(f"  {child.short} {_short(child.name, 24)}  step {live.step}  "
                     f"{'⏵ ' + live.tool if live.tool else ''}  ${live.cost:.4f}")
    return lines


class View(Protocol):
    """Where a session is shown: what the loop and the session ask of every view below."""

    def on_event(self, event: Event, state: Any) -> None: ...

    def notice(self, text: str) -> None: ...

    def close(self) -> None: ...


class PlainView:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def on_event(self, event: Event, state: Any) -> None:
        line = describe(event, state)
        if line:
            print(line, file=self.stream, flush=True)

    def notice(self, text: str) -> None:
        print(f"kimi-code: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class QuietView(PlainView):
    def on_event(self, event: Event, state: Any) -> None:
        pass


class StreamJsonView:
    def __init__(self, session_id: str, stream: TextIO | None = None) -> None:
        self.session_id = session_id
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()  # sub-agents' lifecycle events come from their threads

    def on_event(self, event: Event, state: Any) -> None:
        obj = {"v": event.v, "seq": event.seq, "type": event.type, "step": event.step,
               "time": round(event.time, 3), "session_id": self.session_id, "payload": event.payload}
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()

    def notice(self, text: str) -> None:
        self.stream.write(json.dumps({"type": "notice", "session_id": self.session_id, "text": text}) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class RichView:
    """Live status panel on a terminal; finished tool calls scroll above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._state: Any = None
        self._tool: tuple[str, float] | None = None
        self._thinking = ""
        self._lock = threading.Lock()
        self.swarm: Any = None  # the session's sub-agents (agent/swarm.py), shown when it has any
        self._live = self._start_live()

    def _start_live(self) -> Live:
        live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True,
                    get_renderable=self._render)
        live.start()
        return live

    def _render(self) -> Any:
        state = self._state
        if state is None:
            return Text("starting…")
        t = state.totals
        head = Text.assemble(
            (f"step {state.step}", "bold"), "  ",
            f"context {state.context_tokens:,} tok", "  ",
            f"in {t.prompt_tokens:,} · out {t.completion_tokens:,}", "  ",
            f"cached {t.cached_share:.0%}", "  ",
            (f"${t.cost:.4f}", "green"),
        )
        parts: list[Any] = [head]
        if self._tool:
            name, since = self._tool
            parts.append(Text(f"⏵ {name}  {time.monotonic() - since:.0f}s", style="cyan"))
        elif self._thinking:
            parts.append(Text(f"… {_short(self._thinking[-200:], 110)}", style="dim"))
        swarm = self.swarm
        if swarm is not None and swarm.ledger.children:
            parts.extend(Text(line, style="magenta") for line in swarm_lines(swarm, swarm.parent.budget))
        for item in state.todo[:12]:
            parts.append(Text(f"{STATUS_MARK.get(item.get('status'), '[ ]')} {_short(item.get('content', ''), 100)}",
                              style="dim" if item.get("status") == "done" else ""))
        return Group(*parts)

    def on_event(self, event: Event, state: Any) -> None:
        with self._lock:
            self._state = state
            if event.type == ev.TOOL_STARTED:
                self._tool = (_call_label(event.payload.get("name", ""), event.payload.get("arguments", "")),
                              time.monotonic())
            elif event.type in (ev.TOOL_RESULT, ev.ASSISTANT):
                self._tool = None
                self._thinking = ""
        line = self.line_for(event, state)
        if line:
            self.console.print(line, highlight=False, markup=False)

    def line_for(self, event: Event, state: Any) -> str | Text | None:
        """What is printed above the panel for an event (a chat's view prints the agent's words whole)."""
        return describe(event, state)

    def on_delta(self, kind: str, text: str) -> None:
        self._thinking = (self._thinking + text)[-400:]

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]kimi-code:[/] {text}")

    def pause(self) -> None:
        """Take the live panel off the screen while the terminal is someone else's (a chat's prompt,
        an approval question); ``resume`` brings it back."""
        self._live.stop()

    def resume(self) -> None:
        # A new Live: a restarted one would first move up over its old panel's height, erasing
        # the lines printed meanwhile.
        self._live = self._start_live()

    def close(self) -> None:
        self._live.stop()


def make_view(output: str, session_id: str) -> View:
    if output == "stream-json":
        return StreamJsonView(session_id)
    if output == "json":
        return QuietView()
    if sys.stdout.isatty():
        return RichView()
    return PlainView()
