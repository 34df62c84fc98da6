"""Sub-agents: the parent's tools (spawn_agents, wait_agents, message_agent, cancel_agents), the
queue that runs at most ``max_agents`` children at once, and the merge of their work.

Each child is a session of its own (agent/children.py builds it: the same loop object, its own
log, linked to its parent and root). The parent's log records what the parent must know to carry
on after a crash: each spawn (``child_spawned``), each start and end (``child_started``,
``child_ended`` with the compact result) and each merge (``child_merge``: its intent before the
workspace is touched, then its outcome). ``Ledger`` is the fold of those events, so resuming a
tree is the same fold as resuming a session: children that ended are never run again, the others
are resumed from their own logs, and a merge whose intent has no outcome is applied again (the
apply is idempotent, agent/worktrees.py).

A child's history never stays in the parent process once it ends: what is kept is its result
(a small dict) and its log on disk. Nothing here runs per step of a child: the parent hears of a
child at its start and end, and the live view reads the few counters each running child keeps.

Merges happen in the parent's thread, when the parent collects results (spawn_agents with
wait=true, wait_agents), or when the parent's run ends: never behind the parent's back in the
middle of one of its steps.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from kimi_code.tools.types import ToolContext, ToolError, ToolResult

from . import event_payloads as ep
from . import events as ev
from . import worktrees
from .events import Event

if TYPE_CHECKING:
    from kimi_code.tools.registry import ToolRegistry

    from .checkpoints import Checkpointer
    from .loop import AgentLoop, Outcome

log = logging.getLogger(__name__)

# The tools a parent gets (a public interface: names and parameters as documented in the README).
SWARM_TOOLS = ("spawn_agents", "wait_agents", "message_agent", "cancel_agents")
# Calls of these are run again on resume when a crash cut them short (idempotent by the ledger).
RESUMABLE_TOOLS = frozenset({"spawn_agents", "wait_agents"})
MAX_BATCH = 300  # children one spawn_agents call may start
SUMMARY_CHARS = 600  # of a child's summary in the parent's tool result
ENDED_STATUSES = ("success", "failure", "limit", "cancelled", "error")


class AgentSpec(BaseModel):
    """One sub-agent to start."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description='a short name for it, unique in the call, e.g. "fix-parser"')
    task: str = Field(description="what it must do, self-contained: it sees nothing of your conversation")
    mode: Literal["worktree", "read_only"] = Field(
        "worktree", description="worktree: its own git worktree of your latest snapshot, its changes merged into "
        "your workspace when it ends; read_only: reads your workspace, cannot change anything")
    max_steps: int | None = Field(None, ge=1, description="its own step budget (the tree's budget applies anyway)")
    max_cost: float | None = Field(None, gt=0, description="its own cost budget in USD")


@dataclass
class Live:
    """What the live view shows of a running child (updated by its view, read by the parent's)."""

    step: int = 0
    tool: str | None = None
    cost: float = 0.0


@dataclass(eq=False)
class Child:
    """A child as the parent knows it: its spawn, its state and, once ended, its result."""

    id: str  # its session id
    short: str  # a1, a2, ... in spawn order
    name: str
    task: str
    mode: str
    call_id: str
    index: int
    depth: int
    max_steps: int | None = None
    max_cost: float | None = None
    base: str | None = None  # the parent's checkpoint commit its worktree starts from
    worktree: str | None = None
    status: str = "queued"  # queued | running | ended
    result: dict[str, Any] | None = None  # the child_ended result
    merge: dict[str, Any] | None = None  # the last child_merge outcome
    pending_merge: dict[str, Any] | None = None  # an intent without an outcome (crash)
    merged_tree: str | None = None  # the child's tree last merged (the next merge's base)
    delivered: bool = False  # its result reached the parent in a tool result
    # Runtime only (never in the log):
    loop: Any = None
    live: Live = field(default_factory=Live)
    cancel: str | None = None  # why the parent stopped it
    inbox: list[str] = field(default_factory=list)  # message_agent texts for a running child
    follow_up: str | None = None  # message_agent text that reopens an ended child
    thread: threading.Thread | None = None

    @property
    def ended(self) -> bool:
        return self.status == "ended"


class Ledger:
    """The fold of a parent's child_* events: its children, in spawn order."""

    def __init__(self) -> None:
        self.children: dict[str, Child] = {}

    @classmethod
    def fold(cls, events: Iterable[Event]) -> Ledger:
        ledger = cls()
        for event in events:
            ledger.apply(event)
        return ledger

    def apply(self, event: Event) -> None:
        p = event.payload
        if event.type == ev.CHILD_SPAWNED:
            self.children[p["child_id"]] = Child(
                id=p["child_id"], short=f"a{len(self.children) + 1}", name=p["name"], task=p["task"],
                mode=p["mode"], call_id=p["call_id"], index=p["index"], depth=p["depth"],
                max_steps=p.get("max_steps"), max_cost=p.get("max_cost"), base=p.get("base"),
                worktree=p.get("worktree"))
            return
        child = self.children.get(p.get("child_id", ""))
        if child is None:
            return
        if event.type == ev.CHILD_STARTED:
            child.status = "running"
            child.delivered = False
        elif event.type == ev.CHILD_ENDED:
            child.status = "ended"
            child.result = dict(p["result"], status=p["status"])
        elif event.type == ev.CHILD_MERGE:
            if p["phase"] == "intent":
                child.pending_merge = dict(p)
            else:
                child.pending_merge = None
                child.merge = dict(p)
                if p["phase"] in ("applied", "nothing"):
                    child.merged_tree = p["theirs"]
                child.delivered = True

    def of_call(self, call_id: str) -> list[Child]:
        return [c for c in self.children.values() if c.call_id == call_id]

    def pending(self) -> bool:
        """Work a crash left undone: a child not ended, a merge under way or not yet made."""
        for c in self.children.values():
            tree = (c.result or {}).get("tree")
            if not c.ended or c.pending_merge is not None:
                return True
            if (c.mode == "worktree" and tree and (c.result or {}).get("status") != "cancelled"
                    and (c.merge is None or c.merge.get("theirs") != tree)):
                return True
        return False


class ChildHost(Protocol):
    """What the swarm needs to run a child (agent/children.py)."""

    def run(self, child: Child, swarm: Swarm) -> tuple[str, dict[str, Any]]:
        """Start or resume the child's session and run it: (status, result) when it ended, or
        ("interrupted", {}) when it was stopped and stays unfinished (resumed with the tree)."""
        ...

    def prior_totals(self, child: Child) -> tuple[float, int]:
        """(cost, steps) a child already spent, from its metadata (before it is resumed)."""
        ...


class Swarm:
    """A parent's children. One per parent session; its budget and transport are the tree's."""

    def __init__(self, *, parent: AgentLoop, ledger: Ledger, host: ChildHost, max_agents: int,
                 depth: int, max_depth: int, checkpointer: Checkpointer | None, workspace: Path,
                 view: Any) -> None:
        self.parent = parent
        self.ledger = ledger
        self.host = host
        self.max_agents = max(1, max_agents)
        self.depth = depth
        self.max_depth = max_depth
        self.checkpointer = checkpointer
        self.workspace = workspace
        self.view = view
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._running = 0
        self._view_lock = threading.Lock()
        self._current_call: str | None = None
        self._closed = False
        self.stopping = False  # the parent was interrupted: children stop where they are
        # Worktrees live in the repository, which the sandbox must see: not so when the container
        # holds a copy of the workspace (a remote engine's `workspace = copy`).
        self.worktrees_visible = True
        parent.observers.append(self._observe)

    # -- recording -------------------------------------------------------------------------
    def _observe(self, event: Event) -> None:
        if event.type == ev.TOOL_STARTED and event.payload.get("name") == "spawn_agents":
            self._current_call = event.payload["call_id"]

    def _record(self, payload: ep.EventPayload) -> Event:
        """Into the parent's log (the recorder's lock orders it with the parent's own events),
        then shown; called from the parent's thread and the children's."""
        event = self.parent.recorder.record(payload)
        self.ledger.apply(event)
        with self._view_lock:
            try:
                self.view.on_event(event, self.parent.state)
            except Exception:  # noqa: BLE001 - a display problem must never break the session
                log.exception("view failed on %s", event.type)
        return event

    # -- counts for the view ---------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = {"running": 0, "queued": 0, "done": 0, "failed": 0}
        for child in self.ledger.children.values():
            if child.ended:
                c["done" if (child.result or {}).get("status") == "success" else "failed"] += 1
            elif child.status == "running" and child.loop is not None:
                c["running"] += 1
            else:
                c["queued"] += 1
        return c

    def active(self) -> list[Child]:
        return [c for c in self.ledger.children.values() if c.loop is not None]

    # -- scheduling ------------------------------------------------------------------------
    def _enqueue(self, child: Child) -> None:
        with self._cond:
            if child.id not in self._queue and child.thread is None:
                self._queue.append(child.id)
        self._dispatch()

    def _dispatch(self) -> None:
        starting: list[Child] = []
        with self._cond:
            while self._queue and self._running < self.max_agents and not self._closed:
                child = self.ledger.children[self._queue.popleft()]
                if child.cancel and child.status == "queued":
                    starting.append(child)  # ends at once as cancelled, below
                    continue
                self._running += 1
                child.thread = threading.Thread(target=self._run_child, args=(child,), daemon=True,
                                                name=f"agent-{child.short}")
                starting.append(child)
        for child in starting:
            if child.thread is None:
                self._end(child, "cancelled", {"summary": f"cancelled before it started: {child.cancel}"})
            else:
                child.thread.start()

    def _run_child(self, child: Child) -> None:
        try:
            try:
                status, result = self.host.run(child, self)
            except Exception as exc:  # noqa: BLE001 - one child's failure must not end the tree
                log.debug("sub-agent %s failed", child.id, exc_info=True)
                status, result = "error", {"summary": f"{type(exc).__name__}: {exc}"}
            if child.cancel and status in ("interrupted", "stopped"):
                status = "cancelled"
            if status != "interrupted":  # interrupted: unfinished, resumed with the tree
                self._end(child, status, result)
        finally:
            child.loop = None
            with self._cond:
                self._running -= 1
                child.thread = None
                self._cond.notify_all()
            self._dispatch()

    def _end(self, child: Child, status: str, result: dict[str, Any]) -> None:
        status = status if status in ENDED_STATUSES else "error"
        self._record(ep.ChildEnded(child_id=child.id, status=status, result=result))  # type: ignore[arg-type]
        with self._cond:
            self._cond.notify_all()

    def started(self, child: Child, resumed: bool) -> None:
        """Called by the host once the child's session exists and its loop is built."""
        self._record(ep.ChildStarted(child_id=child.id, resumed=resumed))

    # -- resume ----------------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash: complete the merge that was under way, then queue every child that had
        not ended (in spawn order), with what it already spent charged to the tree's budget."""
        for child in self.ledger.children.values():
            if child.pending_merge is not None:
                self._finish_merge(child)
        budget = self.parent.budget
        for child in self.ledger.children.values():
            if child.ended:
                if budget is not None and child.result:
                    budget.charge(child.id, float(child.result.get("cost") or 0), int(child.result.get("steps") or 0))
                continue
            if budget is not None:
                cost, steps = self.host.prior_totals(child)
                budget.charge(child.id, cost, steps)
            self._enqueue(child)

    # -- the tools -------------------------------------------------------------------------
    def spawn(self, agents: list[AgentSpec], wait: bool, timeout: float | None = None) -> ToolResult:
        if self.depth >= self.max_depth:
            raise ToolError(f"sub-agents cannot start sub-agents here (max_depth {self.max_depth})")
        if not agents:
            raise ToolError("give at least one agent (agents, or template + items)")
        if len(agents) > MAX_BATCH:
            raise ToolError(f"at most {MAX_BATCH} agents per call (got {len(agents)})")
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ToolError("agent names must be unique within a call")
        call_id = self._current_call or f"call-{time.time_ns()}"
        known = {c.index: c for c in self.ledger.of_call(call_id)}  # a re-run after a crash
        base = self.parent.state.last_checkpoint or None
        if any(a.mode == "worktree" for a in agents) and (self.checkpointer is None or not base):
            raise ToolError("mode=worktree needs a git repository with checkpoints (use mode=read_only)")
        if any(a.mode == "worktree" for a in agents) and not self.worktrees_visible:
            raise ToolError("mode=worktree needs the repository bind-mounted into the sandbox; with a copied "
                            "workspace (workspace = copy) use mode=read_only")
        batch: list[Child] = []
        for i, spec in enumerate(agents):
            child = known.get(i)
            if child is None:
                child_id = f"{self.parent.state.session_id}-a{len(self.ledger.children) + 1}"
                wt = str(worktrees.worktree_path(self.workspace, child_id)) if spec.mode == "worktree" else None
                self._record(ep.ChildSpawned(
                    child_id=child_id, name=spec.name, task=spec.task, mode=spec.mode, call_id=call_id, index=i,
                    depth=self.depth + 1, max_steps=spec.max_steps, max_cost=spec.max_cost,
                    base=base if spec.mode == "worktree" else None, worktree=wt))
                child = self.ledger.children[child_id]
                self._enqueue(child)
            batch.append(child)
        if not wait:
            return self._report(batch, "started")
        self._wait(batch, "all", timeout)
        return self._report(batch, "ended")

    def wait(self, ids: list[str] | None, until: str, timeout: float | None) -> ToolResult:
        children = self._select(ids) if ids else [c for c in self.ledger.children.values() if not c.delivered]
        if not children:
            return ToolResult(json.dumps({"agents": [], "note": "no sub-agents to wait for"}))
        self._wait(children, until, timeout)
        return self._report(children, "waited")

    def message(self, ident: str, text: str) -> ToolResult:
        if not text.strip():
            raise ToolError("the message is empty")
        (child,) = self._select([ident])
        if child.ended:
            with self._cond:
                child.follow_up, child.status, child.delivered = text, "queued", False
            self._enqueue(child)
            return ToolResult(json.dumps({"id": child.short, "name": child.name, "status": "resumed",
                                          "note": "it continues with your message; wait_agents gets its new result"}))
        with self._cond:
            child.inbox.append(text)
        return ToolResult(json.dumps({"id": child.short, "name": child.name, "status": child.status,
                                      "note": "delivered: it reads your message before its next step"}))

    def cancel(self, ids: list[str]) -> ToolResult:
        children = self._select(ids)
        queued: list[Child] = []
        with self._cond:
            for child in children:
                if not child.ended:
                    child.cancel = "cancelled by the parent"
                    if child.id in self._queue:
                        self._queue.remove(child.id)
                        queued.append(child)
        for child in queued:  # never started: they end now, whatever runs
            self._end(child, "cancelled", {"summary": f"cancelled before it started: {child.cancel}"})
        self._wait([c for c in children if not c.ended], "all", 120.0)
        return self._report(children, "cancelled")

    def _select(self, ids: list[str]) -> list[Child]:
        by_key: dict[str, Child] = {}
        for child in self.ledger.children.values():
            by_key.setdefault(child.short, child)
            by_key.setdefault(child.id, child)
            by_key.setdefault(child.name, child)  # the latest spawn of a name wins below
        for child in self.ledger.children.values():
            by_key[child.name] = child
        missing = [i for i in ids if i not in by_key]
        if missing:
            known = ", ".join(f"{c.short} ({c.name})" for c in list(self.ledger.children.values())[:20])
            raise ToolError(f"no sub-agent {', '.join(missing)}; known: {known or 'none'}")
        return list(dict.fromkeys(by_key[i] for i in ids))

    def _wait(self, children: list[Child], until: str, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                done = [c for c in children if c.ended and c.thread is None]
                if (until == "any" and done) or len(done) == len(children):
                    break
                if self.parent.signals.interrupts or self._closed:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._cond.wait(0.25)

    # -- results ---------------------------------------------------------------------------
    def row(self, child: Child) -> dict[str, Any]:
        return row(child)

    def _report(self, children: list[Child], what: str) -> ToolResult:
        for child in children:
            if child.ended and child.thread is None:
                self._deliver(child)
        rows = [self.row(c) for c in children]
        counts = self.counts()
        text = json.dumps({"agents": rows, "swarm": counts}, ensure_ascii=False, separators=(",", ":"))
        return ToolResult(text, metadata={"agents": {"what": what, **counts}})

    def results(self) -> list[dict[str, Any]]:
        return [self.row(c) for c in self.ledger.children.values()]

    # -- merging ---------------------------------------------------------------------------
    def _deliver(self, child: Child) -> None:
        """Merge an ended worktree child's work into the parent's workspace, once per result."""
        r = child.result or {}
        theirs, start = r.get("tree"), r.get("base_tree")
        if (child.mode != "worktree" or not theirs or not start or self.checkpointer is None
                or r.get("status") == "cancelled"):  # a cancelled child's partial work stays on its ref
            child.delivered = True
            return
        if child.merge is not None and child.merge.get("theirs") == theirs:
            child.delivered = True
            return  # this result was merged (or found in conflict) already
        base = child.merged_tree or start
        repo = self.workspace
        ref = r.get("ref")
        try:
            ours = self.checkpointer.current_tree()
            merged = worktrees.three_way(repo, base, ours, theirs)
        except Exception as exc:  # noqa: BLE001 - reported as a conflict-like outcome, work kept
            self._record(ep.ChildMerge(child_id=child.id, phase="conflict", base=base, theirs=theirs,
                                       files=[f"(merge failed: {exc})"], ref=ref))
            return
        if not merged.clean:
            self._record(ep.ChildMerge(child_id=child.id, phase="conflict", base=base, theirs=theirs, ours=ours,
                                       files=merged.conflicts, ref=ref))
            return
        if merged.tree == ours:
            self._record(ep.ChildMerge(child_id=child.id, phase="nothing", base=base, theirs=theirs, ours=ours,
                                       ref=ref))
            return
        files = [path for _, _, _, path in worktrees.changed_paths(repo, ours, merged.tree or ours)]
        self._record(ep.ChildMerge(child_id=child.id, phase="intent", base=base, theirs=theirs, ours=ours,
                                   merged=merged.tree, files=files, ref=ref))
        self._finish_merge(child)

    def _finish_merge(self, child: Child) -> None:
        """Apply a recorded merge intent (again, after a crash: the apply is idempotent)."""
        intent = child.pending_merge
        if intent is None:
            return
        written = worktrees.apply_tree(self.workspace, self.workspace, intent["ours"], intent["merged"])
        self._record(ep.ChildMerge(child_id=child.id, phase="applied", base=intent["base"], theirs=intent["theirs"],
                                   ours=intent["ours"], merged=intent["merged"], files=written, ref=intent.get("ref")))

    # -- the end of the parent's run -------------------------------------------------------
    def close(self, outcome: Outcome) -> None:
        """The parent's run ended. Interrupted: children stop where they are and stay resumable.
        Otherwise: children still going are cancelled, and every result not yet collected is
        merged, so no child's work is left behind."""
        interrupted = outcome.status in ("interrupted",)
        limited = outcome.status == "limit" and self.parent.budget is not None
        if limited:  # the tree's budget is spent: running children end with status limit
            kind = str(outcome.detail.get("kind", "steps"))
            self.parent.budget.close(kind)  # type: ignore[union-attr]
        for child in list(self.ledger.children.values()):
            if child.ended:
                continue
            if interrupted:
                if child.loop is not None:
                    child.loop.signals.interrupts += 1
            elif not (limited and child.loop is not None):
                child.cancel = f"the parent's run ended ({outcome.status})"
        if interrupted:
            with self._cond:
                self._closed = self.stopping = True
                self._queue.clear()
            for child in list(self.ledger.children.values()):  # those that got their loop meanwhile
                if not child.ended and child.loop is not None and not child.loop.signals.interrupts:
                    child.loop.signals.interrupts += 1
        else:
            self._dispatch()
        deadline = time.monotonic() + 600
        with self._cond:
            while any(c.thread is not None for c in self.ledger.children.values()) and time.monotonic() < deadline:
                self._cond.wait(0.25)
        self._closed = True
        if not interrupted:
            for child in self.ledger.children.values():
                if child.ended and not child.delivered:
                    try:
                        self._deliver(child)
                    except Exception as exc:  # noqa: BLE001
                        log.warning("could not merge sub-agent %s: %s", child.id, exc)

    def cancelled(self, child: Child) -> str | None:
        """The child loop's stop check: the parent's reason to stop it."""
        return child.cancel

    def take_inbox(self, child: Child) -> list[str]:
        with self._cond:
            texts, child.inbox = child.inbox, []
        return texts


def row(child: Child) -> dict[str, Any]:
    """A child's compact result, as the parent's tool result and --output json carry it."""
    base = {"id": child.short, "name": child.name, "session_id": child.id, "mode": child.mode}
    if not child.ended:
        return {**base, "status": "running" if child.loop is not None else "queued", "step": child.live.step}
    r = child.result or {}
    summary = str(r.get("summary") or "")
    row = {**base, "status": r.get("status"), "summary": summary[:SUMMARY_CHARS] + ("…" if len(summary) > SUMMARY_CHARS else ""),
           "changed_files": r.get("changed_files", []), "diffstat": r.get("diffstat", ""),
           "merge": _merge_text(child), "steps": r.get("steps", 0), "tokens": r.get("tokens", {}),
           "cost": r.get("cost", 0.0), "cost_saved_by_cache": r.get("cost_saved_by_cache", 0.0)}
    if child.merge and child.merge.get("phase") == "conflict":
        row["conflicts"] = child.merge.get("files", [])
        row["ref"] = child.merge.get("ref")
    return row


def _merge_text(child: Child) -> str:
    if child.mode != "worktree":
        return "none (read_only)"
    m, r = child.merge, child.result or {}
    if m is not None and (m.get("theirs") == r.get("tree") or not r.get("tree")):
        if m["phase"] == "applied":
            return f"merged ({len(m.get('files') or [])} file(s))"
        if m["phase"] == "nothing":
            return "nothing to merge"
        return (f"conflict in {', '.join(m.get('files') or [])}: your workspace is unchanged; "
                f"the work is on {m.get('ref')}")
    if not r.get("changed_files"):
        return "nothing to merge"
    if r.get("status") == "cancelled":
        return f"not merged (cancelled): its work is on {r.get('ref')}"
    return "not merged yet"


def session_tree(metas: list[Any]) -> list[tuple[Any, int]]:
    """Sessions (most recent first) with each sub-agent right under its parent: (meta, depth)."""
    ids = {m.id for m in metas}
    kids: dict[str, list[Any]] = {}
    for m in metas:
        if m.parent and m.parent in ids:
            kids.setdefault(m.parent, []).append(m)
    out: list[tuple[Any, int]] = []

    def add(meta: Any, depth: int) -> None:
        out.append((meta, depth))
        for kid in sorted(kids.get(meta.id, []), key=lambda k: k.created):
            add(kid, depth + 1)

    for m in metas:
        if not (m.parent and m.parent in ids):
            add(m, 0)
    return out


def agents_summary(events: Iterable[Event]) -> str:
    """`kimi-code show ROOT --agents`: one line per child, then the totals."""
    children = list(Ledger.fold(events).children.values())
    if not children:
        return "no sub-agents"
    lines = []
    cost = steps = 0.0
    for child in children:
        r = row(child)
        cost += float(r.get("cost") or 0)
        steps += int(r.get("steps") or 0)
        share = (r.get("tokens") or {}).get("cached_share")
        lines.append(f"{r['id']:>5}  {r['name'][:24]:<24} {str(r['status']):<9} {int(r.get('steps') or 0):>4} steps  "
                     f"${float(r.get('cost') or 0):.4f}" + (f"  cached {share:.0%}" if share is not None else "")
                     + f"  {r.get('merge', '')}  {r['session_id']}")
    counts: dict[str, int] = {}
    for child in children:
        key = str((child.result or {}).get("status")) if child.ended else "unfinished"
        counts[key] = counts.get(key, 0) + 1
    lines.append(f"{len(children)} sub-agent(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                 + f"; {int(steps)} steps, ${cost:.4f}")
    return "\n".join(lines)


def expand_agents(agents: list[AgentSpec] | None, template: str | None, items: list[str] | None,
                  mode: str = "worktree") -> list[AgentSpec]:
    """``agents``, or one agent per item of ``items`` with ``{item}`` in ``template`` replaced."""
    if agents and (template or items):
        raise ToolError("give either agents or template + items, not both")
    if template is not None or items is not None:
        if not template or not items:
            raise ToolError("template and items go together (one agent per item, {item} replaced in the template)")
        if "{item}" not in template:
            raise ToolError("the template must contain {item}")
        return [AgentSpec(name=f"item-{i + 1}", task=template.replace("{item}", str(item)), mode=mode)  # type: ignore[arg-type]
                for i, item in enumerate(items)]
    return list(agents or [])


def register_tools(registry: ToolRegistry, get: Callable[[], Swarm]) -> None:
    """The parent's four tools; ``get`` gives the session's swarm (made once its loop exists)."""

    def spawn_agents(ctx: ToolContext, agents: list[AgentSpec] | None = None, template: str | None = None,
                     items: list[str] | None = None, mode: Literal["worktree", "read_only"] = "worktree",
                     wait: bool = True) -> ToolResult:
        """Start sub-agents that work on separate tasks at the same time, each a full agent with its own context. Returns one compact result per agent (status, summary, changed files, merge outcome, cost), never their transcripts. Give each a self-contained task. Worktree agents' changes are merged into your workspace when they end; a conflict is never applied (you get the files and the ref holding the work).

        Args:
            agents: the agents to start: name, task, mode (worktree or read_only), optional max_steps and max_cost
            template: instead of agents: a task template containing {item}, one agent per item
            items: the items for the template
            mode: the mode of the template's agents
            wait: true: return when all of them have ended; false: return their ids at once (then wait_agents)
        """
        return get().spawn(expand_agents(agents, template, items, mode), wait)

    def wait_agents(ctx: ToolContext, ids: list[str] | None = None, until: Literal["all", "any"] = "all",
                    timeout: float | None = None) -> ToolResult:
        """Wait for sub-agents to end and get their results (their worktree changes are merged into your workspace now).

        Args:
            ids: the agents (ids like a1, or names); default: every agent whose result you have not had
            until: all: until every one has ended; any: until one has
            timeout: seconds to wait at most
        """
        return get().wait(ids, until, timeout)

    def message_agent(ctx: ToolContext, id: str, text: str) -> ToolResult:
        """Send a sub-agent a follow-up: a running one reads it before its next step; an ended one continues with it (then wait_agents for its new result).

        Args:
            id: the agent (an id like a1, or its name)
            text: the message
        """
        return get().message(id, text)

    def cancel_agents(ctx: ToolContext, ids: list[str]) -> ToolResult:
        """Stop sub-agents (running ones stop before their next step; queued ones never start).

        Args:
            ids: the agents (ids like a1, or names)
        """
        return get().cancel(ids)

    for tool in (spawn_agents, wait_agents, message_agent, cancel_agents):
        registry.register(tool)
