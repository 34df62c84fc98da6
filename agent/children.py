"""Building and running sub-agents' sessions: the same ``AgentLoop`` as any session, many per
process, on the tree's shared client transport and budget.

A child's session is created when it starts (not when it is spawned), in the same state directory
as every session (so ``show``, ``diff`` and ``export`` work on it), its first event naming its
parent and root. A ``worktree`` child gets its own persistent shell in the parent's sandbox whose
working directory is its worktree (``ChildSandbox``), file tools confined to the worktree and its
own checkpoints; a ``read_only`` child sees the parent's workspace with the read-only tools only.
The system prompt and tool list of a mode are built once per tree, so every child of that mode
sends byte-identical prefixes and the swarm shares the provider's prefix cache.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kimi_code.sandbox.base import DEFAULT_OUTPUT_CAP, ExecResult, Sandbox, SandboxInfo
from kimi_code.sandbox.shell import PersistentShell
from kimi_code.tools.registry import Handler, ToolContext, ToolRegistry, ToolSpec
from kimi_code.tools.types import ToolError

from . import event_payloads as ep
from . import events as ev
from . import prompts, worktrees
from .assembly import default_tools
from .budget import TreeBudget
from .client import ModelClient, SharedTransport
from .config import Settings
from .errors import KimiCodeError
from .events import Event
from .loop import AgentLoop, Limits, Outcome
from .media import MEDIA_DIR, MediaStore, MediaWire, endpoint_refusal
from .recorder import Recorder
from .state import SessionState
from .store import EVENTS_FILE, SessionMeta, SessionStore
from .swarm import RESUMABLE_TOOLS, SWARM_TOOLS, Child, Ledger, Swarm, register_tools, row
from .tokens import count_message, count_text, count_tools

if TYPE_CHECKING:
    from .assembly import Runner
    from .checkpoints import Checkpointer

log = logging.getLogger(__name__)

CHILD_NOTE = {
    "worktree": (
        "\n# You are a sub-agent\n- Another agent gave you the task below and gets your finish summary: make it "
        "say what you changed and how you checked it.\n- You work in your own git worktree of the repository "
        "(its path is in the task message): use paths relative to it. When you finish, your changes are merged "
        "into the other agent's workspace; other sub-agents work beside you in their own worktrees.\n"),
    "read_only": (
        "\n# You are a sub-agent\n- Another agent gave you the task below and gets your finish summary: put your "
        "findings there.\n- You can read the workspace but not change it: you have only read-only tools.\n"),
}


class ChildSandbox:
    """A sub-agent's own persistent shell inside its parent's sandbox (the same container or host),
    starting in the child's worktree. It implements the ``Sandbox`` protocol the tools use."""

    backend = "child"

    def __init__(self, parent: Sandbox, child_id: str, cwd: str) -> None:
        self.parent = parent
        self.child_id = child_id
        self.cwd = cwd
        host_state = getattr(parent, "state_dir", None)
        state_dir = f"{host_state}/agents/{child_id}" if isinstance(host_state, Path) else f"/tmp/kimi-code/agents/{child_id}"
        self.default_timeout = float(getattr(parent, "default_timeout", 120.0))
        self._shell = PersistentShell(parent, state_dir=state_dir, cwd=cwd,  # type: ignore[arg-type]
                                      output_cap=int(getattr(parent, "output_cap", DEFAULT_OUTPUT_CAP)))
        self._stopped = False

    def start(self) -> SandboxInfo:
        self._shell.start()
        return self.info()

    def reattach(self) -> bool:
        self.start()
        return True

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        if self._stopped:
            from kimi_code.sandbox.errors import SandboxError

            raise SandboxError("the sub-agent's shell was stopped")
        if not self._shell.running:
            self._shell.start()
        return self._shell.run(command, self.default_timeout if timeout is None else timeout)

    def stop(self, remove: bool = True) -> None:
        self._stopped = True
        self._shell.close()

    def info(self) -> SandboxInfo:
        return dataclasses.replace(self.parent.info(), workspace=self.cwd, session_id=self.child_id)


class ChildView:
    """A running child's view: keeps the counters the parent's live view shows, prints nothing."""

    def __init__(self, child: Child, parent_view: Any) -> None:
        self.child = child
        self.parent_view = parent_view

    def on_event(self, event: Event, state: Any) -> None:
        live = self.child.live
        if event.type == ev.ASSISTANT:
            live.step, live.cost, live.tool = event.step, state.totals.cost, None
        elif event.type == ev.TOOL_STARTED:
            live.tool = event.payload.get("name")
        elif event.type == ev.TOOL_RESULT:
            live.tool = None

    def notice(self, text: str) -> None:
        try:
            self.parent_view.notice(f"[{self.child.short} {self.child.name}] {text}")
        except Exception:  # noqa: BLE001
            log.debug("notice failed", exc_info=True)

    def close(self) -> None:
        pass


@dataclass
class Kit:
    """What every session of one tree shares."""

    settings: Settings
    store: SessionStore
    sandbox: Sandbox
    host_root: Path  # the root's workspace on the host ...
    sandbox_root: str  # ... and as commands see it
    root_id: str
    transport: SharedTransport
    budget: TreeBudget
    view: Any
    prefixes: dict[str, tuple[str, list[dict[str, Any]], ToolRegistry | None]] = field(default_factory=dict)
    git_lock: threading.Lock = field(default_factory=threading.Lock)  # `git worktree add` one at a time

    def in_sandbox(self, path: Path) -> str:
        rel = os.path.relpath(path, self.host_root)
        return self.sandbox_root if rel == "." else f"{self.sandbox_root.rstrip('/')}/{Path(rel).as_posix()}"

    def prefix(self, mode: str, spawns: bool) -> tuple[str, list[dict[str, Any]], ToolRegistry | None]:
        """(system prompt, tool schemas, shared registry or None) of a mode, built once per tree."""
        key = f"{mode}:{spawns}"
        if key not in self.prefixes:
            s = self.settings
            docker = s.sandbox == "docker"
            system = prompts.build_system_prompt(
                workspace="your own working directory, named in the task message",
                sandbox=f"a Docker container ({s.image})" if docker else "the host machine (no sandbox)",
                network=s.network, repo=self.host_root,
                git_read_only=docker and (self.host_root / ".git").is_dir()) + CHILD_NOTE[mode]
            registry = child_registry(mode, spawns, None)
            self.prefixes[key] = (system, registry.schemas(), None if spawns else registry)
        return self.prefixes[key]


def child_registry(mode: str, spawns: bool, holder: Any) -> ToolRegistry:
    full = default_tools()
    if mode == "read_only":
        full = full.subset(lambda spec: spec.read_only is True or spec.name in ("todo", "finish"))
    else:
        full = full.subset(lambda spec: True, _worktree_paths)
    if spawns:
        register_tools(full, holder if holder is not None else _no_swarm)
    return full


def _worktree_paths(spec: ToolSpec) -> Handler:
    """A worktree child is told its directory as the sandbox sees it (/workspace/.kimi-code/...):
    a path given that way means the same file as the path relative to the worktree."""
    inner = spec.handler
    if "path" not in (spec.parameters.get("properties") or {}):
        return inner

    def handler(args: dict[str, Any], ctx: ToolContext) -> Any:
        path = args.get("path")
        where = ctx.sandbox.cwd if isinstance(ctx.sandbox, ChildSandbox) else None
        if isinstance(path, str) and where and (path == where or path.startswith(where.rstrip("/") + "/")):
            args = {**args, "path": path[len(where.rstrip("/")) + 1:] or "."}
        return inner(args, ctx)

    return handler


def _no_swarm() -> Swarm:
    raise ToolError("sub-agents are not available")


class SwarmHolder:
    """A session's swarm, made once its loop exists; the swarm tools ask it for the swarm."""

    def __init__(self) -> None:
        self.swarm: Swarm | None = None

    def __call__(self) -> Swarm:
        if self.swarm is None:
            raise ToolError("sub-agents are not available in this session")
        return self.swarm


class Children:
    """Runs the children of one parent (the ``ChildHost`` of agent/swarm.py)."""

    def __init__(self, kit: Kit, parent_id: str, repo: Path, depth: int) -> None:
        self.kit = kit
        self.parent_id = parent_id
        self.repo = repo  # the parent's workspace (the git work tree its children branch from)
        self.depth = depth

    def prior_totals(self, child: Child) -> tuple[float, int]:
        try:
            meta = self.kit.store.open(child.id).read_meta()
        except KimiCodeError:
            return 0.0, 0
        return float(meta.cost), int(meta.steps)

    def _exists(self, child: Child) -> bool:
        try:
            return (self.kit.store.state_dir / child.id / EVENTS_FILE).stat().st_size > 0
        except OSError:
            return False

    def run(self, child: Child, swarm: Swarm) -> tuple[str, dict[str, Any]]:
        kit = self.kit
        s = kit.settings
        spawns = child.depth < s.max_depth
        resuming = self._exists(child)
        checkpointer: Checkpointer | None = None
        if child.mode == "worktree":
            ws = Path(child.worktree or worktrees.worktree_path(self.repo, child.id))
            if not (ws / ".git").is_file():
                head = worktrees.head_ref(self.repo, child.id) if resuming else None
                with kit.git_lock:
                    worktrees.create_worktree(self.repo, child.id, head or child.base or "HEAD")
            from .checkpoints import Checkpointer

            checkpointer = Checkpointer(ws, child.id)
        else:
            ws = self.repo
        cwd = kit.in_sandbox(ws)
        system, tools, shared_registry = kit.prefix(child.mode, spawns)
        holder = SwarmHolder() if spawns else None
        registry = shared_registry or child_registry(child.mode, spawns, holder)
        if resuming:
            session = kit.store.open(child.id)
            session.lock()
            state = SessionState.fold(session.log.load())
            recorder = Recorder(session, state)
        else:
            task = child.task.strip()
            started = ep.SessionStarted(
                session_id=child.id, task=task, repo=str(ws), workspace=cwd, model=s.model, provider=s.provider,
                base_url=s.effective_base_url, system_prompt=system, tools=tools, settings=_sticky(s),
                fixed_tokens=count_text(system) + count_tools(tools), pid=os.getpid(),
                checkpoints=checkpointer is not None, parent=self.parent_id, root=kit.root_id)
            recorder = Recorder.start(kit.store, SessionMeta(id=child.id, repo=str(ws), task=task[:500], model=s.model,
                                                             parent=self.parent_id, root=kit.root_id), started)
            session, state = recorder.session, recorder.state
            session.lock()
        sandbox: ChildSandbox | None = ChildSandbox(kit.sandbox, child.id, cwd) if child.mode == "worktree" else None
        try:
            if state.finished and child.follow_up is None:
                # It ended, but the parent's log did not hear of it (a crash in between).
                session.rebuild_meta()
                return _status(state, None, child), self._result(child, state, None, checkpointer, ws)
            loop = self._loop(child, swarm, session, recorder, state, registry, checkpointer, ws, sandbox)
            if holder is not None:
                holder.swarm = self._nested(child, loop, checkpointer, ws, session)
            child.loop = loop
            if swarm.stopping:
                loop.signals.interrupts += 1
            swarm.started(child, resumed=resuming)
            if sandbox is not None:
                sandbox.start()
            info = (sandbox or kit.sandbox).info()
            if resuming:
                loop.settle_workspace()
                loop.record(ep.Resumed(pid=os.getpid(), in_flight=[c.call_id for c in state.pending]))
            loop.record(ep.Sandbox(action="started", backend=info.backend, container=info.container_name,
                                   container_id=info.container_id, image=info.image, workspace=cwd), step=state.step)
            if not state.messages and state.step == 0:
                text = prompts.task_message(_located(child, cwd), info.os_release)
                message = {"role": "user", "content": text}
                loop.record(ep.UserMessage(message=message, kind="task", tokens=count_message(message)), step=0)
            if checkpointer is not None and not state.checkpoints:
                base = checkpointer.base()
                loop.record(ep.Checkpoint(commit=base.commit, changed=[], skipped=base.skipped, base=True), step=0)
            if child.follow_up is not None:
                loop.pending_notices.append(("continue", prompts.continue_message(child.follow_up)))
                child.follow_up = None
            outcome = loop.run()
            if holder is not None and holder.swarm is not None:
                holder.swarm.close(outcome)
            if os.environ.get("KIMI_CODE_VERIFY_REPLAY") == "1":
                _verify(session, state)
            return _status(state, outcome, child), self._result(child, state, outcome, checkpointer, ws)
        finally:
            child.loop = None
            if sandbox is not None:
                sandbox.stop()
            session.close()

    def _loop(self, child: Child, swarm: Swarm, session: Any, recorder: Recorder, state: SessionState,
              registry: ToolRegistry, checkpointer: Checkpointer | None, ws: Path,
              sandbox: ChildSandbox | None) -> AgentLoop:
        kit = self.kit
        s = kit.settings
        client = ModelClient(s, shared=kit.transport)
        tool_ctx = ToolContext(workspace=ws, sandbox=sandbox or kit.sandbox, command_timeout=s.command_timeout,
                               test_command=s.test_command, todo=state.todo)
        view = ChildView(child, kit.view)
        loop = AgentLoop(session=session, state=state, settings=s, client=client, registry=registry,
                         tool_context=tool_ctx, view=view, limits=Limits(child.max_steps, child.max_cost),
                         checkpointer=checkpointer, workspace=ws, recorder=recorder)
        client.on_retry = loop.on_retry
        tool_ctx.media = MediaStore(session.root / MEDIA_DIR, check=lambda info: endpoint_refusal(s, info))
        loop.wire = MediaWire(session.root, s, client, state, loop.record, notice=view.notice)
        loop.budget = kit.budget
        loop.cache_key = kit.root_id  # one prompt cache for the swarm
        loop.stop_checks.append(lambda: swarm.cancelled(child))
        loop.inbox = lambda: swarm.take_inbox(child)
        loop.resumable |= RESUMABLE_TOOLS
        return loop

    def _nested(self, child: Child, loop: AgentLoop, checkpointer: Checkpointer | None, ws: Path,
                session: Any) -> Swarm:
        ledger = Ledger.fold(session.log.load())
        swarm = Swarm(parent=loop, ledger=ledger, host=Children(self.kit, child.id, ws, child.depth),
                      max_agents=self.kit.settings.max_agents, depth=child.depth,
                      max_depth=self.kit.settings.max_depth, checkpointer=checkpointer, workspace=ws,
                      view=ChildView(child, self.kit.view))
        swarm.recover()
        return swarm

    def _result(self, child: Child, state: SessionState, outcome: Outcome | None,
                checkpointer: Checkpointer | None, ws: Path) -> dict[str, Any]:
        t = state.totals
        finish = state.finish or {}
        summary = finish.get("summary") or (outcome.summary if outcome is not None else "")
        result: dict[str, Any] = {
            "summary": summary, "steps": state.step, "cost": round(t.cost, 6),
            "cost_saved_by_cache": round(t.cost_saved_by_cache, 6),
            "tokens": {"prompt": t.prompt_tokens, "cached": t.cached_tokens, "completion": t.completion_tokens,
                       "cached_share": round(t.cached_share, 4)},
            "changed_files": [], "diffstat": "",
        }
        if checkpointer is not None and state.last_checkpoint and child.base:
            try:
                tree = worktrees.tree_of(ws, state.last_checkpoint)
                base_tree = worktrees.tree_of(ws, child.base)
                result.update(tree=tree, base_tree=base_tree, head=state.last_checkpoint,
                              ref=f"{checkpointer.head_ref}",
                              changed_files=[p for _, _, _, p in worktrees.changed_paths(ws, base_tree, tree)],
                              diffstat=(worktrees.diffstat(ws, base_tree, tree).splitlines() or [""])[-1].strip())
            except KimiCodeError as exc:
                result["merge_error"] = str(exc)
        return result


def _located(child: Child, cwd: str) -> str:
    where = (f"\n\nYour working directory: {cwd} (your own git worktree; use paths relative to it)."
             if child.mode == "worktree" else f"\n\nThe workspace (read-only for you): {cwd}")
    return child.task.strip() + where


def _status(state: SessionState, outcome: Outcome | None, child: Child) -> str:
    if outcome is None or state.finished:
        return str((state.finish or {}).get("status", "success"))
    status = outcome.status
    if status in ("success", "failure", "limit"):
        return status
    if status in ("stopped", "interrupted"):
        return "cancelled" if child.cancel else ("interrupted" if status == "interrupted" else "error")
    return "error"


def _sticky(settings: Settings) -> dict[str, Any]:
    data = settings.public_dict()
    data.pop("api_key", None)
    return data


def _verify(session: Any, state: SessionState) -> None:
    """KIMI_CODE_VERIFY_REPLAY=1 (tests): a child's log folds into exactly its live state."""
    replayed = SessionState.fold(session.log.load()).snapshot()
    live = state.snapshot()
    diff = sorted(k for k in live if live[k] != replayed.get(k))
    if diff:
        raise RuntimeError(f"sub-agent {session.id}: replayed state differs from the live one in {diff}")


# -- wiring a root session ---------------------------------------------------------------------


def swarm_tools(settings: Settings, registry: ToolRegistry, recorded: list[dict[str, Any]] | None = None
                ) -> SwarmHolder | None:
    """Register the swarm tools on a root session's registry (a new session when max_depth allows
    sub-agents; a resumed one when its recorded tool list has them). None: no swarm here."""
    if recorded is not None:
        names = {t.get("function", {}).get("name") for t in recorded if isinstance(t, dict)}
        if "spawn_agents" not in names:
            return None
    elif settings.max_depth < 1:
        return None
    holder = SwarmHolder()
    register_tools(registry, holder)
    return holder


def attach(runner: Runner, loop: AgentLoop, checkpointer: Checkpointer | None, holder: SwarmHolder | None,
           events: list[Event] | None = None) -> Swarm | None:
    """The root session's swarm: one transport and one budget for the tree, the ledger folded
    from the root's log (a resumed tree), its children queued again by ``Swarm.recover``."""
    if holder is None or runner.sandbox is None:
        return None
    settings = runner.settings
    transport = SharedTransport()
    if isinstance(loop.client, ModelClient):
        loop.client.shared = transport
    limits = runner.options.limits
    budget = TreeBudget(max_steps=limits.max_steps, max_cost=limits.max_cost, max_time=limits.max_time)
    budget.charge(loop.state.session_id, loop.state.totals.cost, loop.state.step)
    loop.budget = budget
    loop.resumable |= RESUMABLE_TOOLS
    info = runner.sandbox.info()
    kit = Kit(settings=settings, store=SessionStore(settings.state_dir), sandbox=runner.sandbox,
              host_root=Path(info.host_workspace), sandbox_root=info.workspace, root_id=loop.state.session_id,
              transport=transport, budget=budget, view=runner.view)
    swarm = Swarm(parent=loop, ledger=Ledger.fold(events or []), host=Children(kit, kit.root_id, runner.workspace, 0),
                  max_agents=settings.max_agents, depth=0, max_depth=settings.max_depth, checkpointer=checkpointer,
                  workspace=runner.workspace, view=runner.view)
    swarm.worktrees_visible = getattr(info, "workspace_mode", "mount") != "copy"
    holder.swarm = swarm
    if hasattr(runner.view, "swarm"):
        runner.view.swarm = swarm
    return swarm


def close_swarm(swarm: Swarm | None, outcome: Outcome) -> Outcome:
    """The root's run ended: end its swarm (agent/swarm.py ``Swarm.close``) and put every child's
    result, and the swarm's prompt-cache figures, into the run's summary."""
    if swarm is None:
        return outcome
    swarm.close(outcome)
    if os.environ.get("KIMI_CODE_VERIFY_REPLAY") == "1":  # tests: the parent's log holds the whole ledger
        folded = Ledger.fold(swarm.parent.session.log.load())
        live = [row(c) for c in swarm.ledger.children.values() if c.ended]
        if [row(c) for c in folded.children.values() if c.ended] != live:
            raise RuntimeError(f"session {swarm.parent.session.id}: the sub-agents folded from its log differ "
                               "from the live ones")
    if swarm.ledger.children:
        rows = swarm.results()
        outcome.detail["agents"] = rows
        tokens = [r.get("tokens") or {} for r in rows]
        prompt = sum(int(t.get("prompt") or 0) for t in tokens)
        cached = sum(int(t.get("cached") or 0) for t in tokens)
        outcome.detail["agents_total"] = {
            "count": len(rows), **swarm.counts(),
            "cost": round(sum(float(r.get("cost") or 0) for r in rows), 6),
            "cached_share": round(cached / prompt, 4) if prompt else 0.0,
            "cost_saved_by_cache": round(sum(float(r.get("cost_saved_by_cache") or 0) for r in rows), 6),
            "tree_cost": round(swarm.parent.budget.cost, 6) if swarm.parent.budget is not None else None,
        }
    return outcome


__all__ = ["SWARM_TOOLS", "ChildSandbox", "Children", "SwarmHolder", "attach", "swarm_tools"]
