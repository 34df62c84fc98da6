"""Starting and resuming sessions: builds the client, sandbox, tools and loop, and ends cleanly.

``start`` and ``resume`` share everything after the state exists, so a resumed session is the
same object graph as a fresh one: load + fold + continue.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import event_payloads as ep
from . import events as ev
from . import media, prompts
from .config import Settings, load_settings
from .errors import EXIT_OK, EXIT_STORAGE, ConfigError, KimiCodeError, SandboxError, SessionError
from .lazy import prefetch
from .assembly import (  # noqa: F401 - RunOptions: cli's
    Host, Runner, RunOptions, make_checkpointer, planned_info, resume_tools, start_tools)
from .recorder import Recorder
from .children import attach as attach_swarm, close_swarm, swarm_tools
from .swarm import Ledger, row as agent_row
from .loop import AgentLoop, Outcome
from .state import SessionState
from .store import SessionMeta, SessionStore, new_session_id, session_key  # noqa: F401 - session_key: cli's
from .tokens import count_message, count_text, count_tools

if TYPE_CHECKING:
    from kimi_code.sandbox.base import SandboxInfo

    from .checkpoints import Checkpointer
    from .replay import ReplaySource
    from .view import View

log = logging.getLogger(__name__)

# Settings a resumed session keeps from its first run unless a flag overrides them.
BUNDLE_FILE = "checkpoints.bundle"
STICKY_SETTINGS = ("provider", "model", "base_url", "thinking", "sandbox", "image", "network", "ca_bundle", "memory", "cpus",
                   "pids_limit", "command_timeout", "tool_output_tokens", "compaction", "compaction_threshold",
                   "max_output_tokens", "test_command", "context_window", "replay", "image_input", "video_input",
                   "media_inline_bytes", "media_tokens", "workspace", "workspace_path")


@dataclass
class RunResult:
    outcome: Outcome
    session_id: str
    state: SessionState
    summary: dict[str, Any]


class Conversation(Host, Protocol):
    """The interactive host of a session (agent/interactive.py), given as ``RunOptions.conversation``.
    The session stays up between turns, and each message the user sends continues it exactly as
    ``resume --continue`` would."""

    def attach(self, live: LiveSession) -> None:
        """The session is up and its start recorded; no turn has run yet (install the approval
        hook, queue the first message's attachments)."""

    def next_turn(self, live: LiveSession, outcome: Outcome | None) -> bool:
        """After a turn (``outcome``; None before the first turn of a reopened session), talk to
        the user until they send a message (queued with ``live.follow_up``) or leave: run again?"""


@dataclass
class LiveSession:
    """A session whose sandbox and loop are up, between the turns of an interactive session."""

    runner: Runner
    loop: AgentLoop
    checkpointer: Checkpointer | None

    def follow_up(self, text: str, attachments: Sequence[Any] = ()) -> None:
        """Queue the user's next message as ``resume --continue`` adds it: the files changed
        outside the agent since its last checkpoint, the instructions, then any attachments."""
        notices = self.loop.pending_notices
        drift = _drift_notice(self.checkpointer, self.loop.state, self.runner.view)
        if drift and drift not in notices:
            notices.append(drift)
        notices.append(("continue", prompts.continue_message(text)))
        notices.extend(("attachment", content) for content in attachments)


def _turns(runner: Runner, loop: AgentLoop, checkpointer: Checkpointer | None, *, reopened: bool) -> Outcome:
    """A headless run is one turn; an interactive one runs a turn per message until the user
    leaves. ``reopened``: a resumed session waits for the user before its first turn."""
    host = cast("Conversation | None", runner.options.conversation)
    if host is None:
        return loop.run()
    live = LiveSession(runner, loop, checkpointer)
    host.attach(live)
    outcome = None if reopened else loop.run()
    while host.next_turn(live, outcome):
        outcome = loop.run()
    if outcome is None:  # left before any turn: the session is as it was
        finish = loop.state.finish or {}
        outcome = Outcome(finish.get("status", "success") if loop.state.finished else "interrupted", EXIT_OK,
                          finish.get("summary", ""))
    return outcome


def _drift_notice(checkpointer: Checkpointer | None, state: SessionState, view: View) -> str | None:
    """The notice telling the agent which files changed outside it since its last checkpoint."""
    if checkpointer is None or not state.last_checkpoint:
        return None
    try:
        drift = checkpointer.drift(state.last_checkpoint)
    except KimiCodeError as exc:
        view.notice(f"could not check the workspace for outside changes: {exc}")
        return None
    return prompts.drift_notice(drift) if drift else None


def find_workspace(repo: Path, no_git: bool) -> Path:
    repo = repo.expanduser().resolve()
    if not repo.is_dir():
        raise ConfigError(f"--repo {repo} is not a directory")
    if no_git:
        return repo
    import subprocess

    # One git process rather than gitpython's import: this runs before the session's first event.
    try:
        # safe.directory: root may work on a user's repository (the sandbox then runs as that user);
        # rev-parse runs no hooks, and fsmonitor is off as in every host-side git of kimi-code.
        proc = subprocess.run(["git", "-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-c",
                               "core.hooksPath=/dev/null", "-C", str(repo), "rev-parse", "--is-bare-repository",
                               "--show-toplevel"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError("git is not installed (use --no-git to run without checkpoints)") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"git did not answer about {repo} within 60 s") from None
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 and "not a git repository" not in proc.stderr:
        why = (proc.stderr.strip().splitlines() or ["git failed"])[0].removeprefix("fatal: ")
        raise ConfigError(f"git cannot use {repo}: {why}")
    if proc.returncode != 0 or not lines:
        raise ConfigError(f"{repo} is not inside a git work tree (use --no-git to run anyway)")
    if lines[0] == "true" or len(lines) < 2:
        raise ConfigError(f"{repo} is a bare repository")
    return Path(lines[1]).resolve()




def _open_replay(settings: Settings, options: RunOptions) -> ReplaySource | None:
    if settings.replay is None:
        return None
    from .replay import open_source

    return open_source(settings, pace=options.pace)


def start(settings: Settings, task: str, repo: Path, options: RunOptions, *, key: str | None = None) -> RunResult:
    """Create a session for ``task`` in ``repo`` and run it."""
    task = task.strip()
    if not task:
        raise ConfigError("the task is empty")
    workspace = find_workspace(repo, options.no_git)
    check_result_targets(workspace, options)
    replay = _open_replay(settings, options)
    try:
        return _start(replay.settings if replay else settings, task, workspace, options, key, replay)
    finally:
        if replay is not None:
            replay.close()


def _start(settings: Settings, task: str, workspace: Path, options: RunOptions, key: str | None,
           replay: ReplaySource | None) -> RunResult:
    """The session's first event is durable before anything slow happens (the sandbox, Docker,
    the model client): a kill from then on leaves a session that ``resume`` completes."""
    settings.require_api_key()
    settings.effective_base_url  # noqa: B018 - fail early on a provider without a URL
    store = SessionStore(settings.state_dir)
    session_id = new_session_id()

    planned = planned_info(settings, session_id, workspace)  # backend, workspace path, image
    system_prompt = prompts.build_system_prompt(
        workspace=planned.workspace,
        sandbox=("a Docker container (" + (planned.image or "") + ")") if planned.backend == "docker"
        else "the host machine (no sandbox)",
        network=settings.network, repo=workspace,
        git_read_only=planned.backend == "docker" and (workspace / ".git").is_dir(),
    )
    # The task's attachments are checked and copied first; the copies become the session's media/.
    staging, attachments = media.stage_attachments(settings, store.state_dir, session_id, list(options.attach))
    # The built-in tools and those of the configured MCP servers, which start here: the tool list
    # is part of the first event.
    try:
        tool_sources = start_tools(settings, session_id, workspace, trust_mcp=options.trust_mcp)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    registry = tool_sources.registry
    swarm_holder = swarm_tools(settings, registry)  # spawn_agents & co. (agent/swarm.py)
    tools = registry.schemas()
    started = ep.SessionStarted(
        session_id=session_id, task=task, repo=str(workspace), workspace=planned.workspace,
        model=settings.model, provider=settings.provider, base_url=settings.effective_base_url,
        system_prompt=system_prompt, tools=tools, settings=_sticky(settings),
        fixed_tokens=count_text(system_prompt) + count_tools(tools), pid=os.getpid(),
        checkpoints=not options.no_git, **({"attachments": attachments} if attachments else {}),
    )
    try:
        recorder = Recorder.start(store, SessionMeta(id=session_id, repo=str(workspace), task=task[:500],
                                                     model=settings.model, key=key), started,
                                  {media.MEDIA_DIR: staging} if staging else None)
    except BaseException:
        tool_sources.close()
        raise
    session = recorder.session
    first = recorder.first
    session.lock()
    prefetch("openai")  # the first model request needs it: load it while the sandbox starts
    runner = Runner(settings, recorder, workspace, options, replay, tools=tool_sources)
    runner.show(first)
    started = False
    try:
        loop, checkpointer, info, action, _ = runner.bring_up(registry, resuming=False, no_git=options.no_git)
        swarm = attach_swarm(runner, loop, checkpointer, swarm_holder)
        if options.bundle and loop.checkpoints is not None:
            loop.checkpoints.bundle_path = session.root / BUNDLE_FILE
        loop.record(_sandbox_payload(action, info), step=0)
        _complete_start(loop, checkpointer, info)
        started = True
        outcome = close_swarm(swarm, _turns(runner, loop, checkpointer, reopened=False))
        return _finish(runner, outcome, checkpointer)
    finally:
        if not started:  # never got going: marked so, though `resume` can still complete it
            try:
                meta = session.read_meta()
                meta.status = "error"
                session.write_meta(meta)
            except KimiCodeError:
                pass
        runner.view.close()
        runner.close_tools()
        session.close()


def _complete_start(loop: AgentLoop, checkpointer: Checkpointer | None, info: SandboxInfo) -> None:
    """What a session records once its sandbox runs: the task message (with the sandbox's OS)
    and the base checkpoint. On resume, whatever a kill during start-up left unrecorded."""
    state = loop.state
    if not state.messages and state.step == 0:
        message = {"role": "user", "content": media.content(prompts.task_message(state.task, info.os_release),
                                                            state.attachments)}
        loop.record(ep.UserMessage(message=message, kind="task", tokens=count_message(message)), step=0)
    if checkpointer is not None and not state.checkpoints:
        base = checkpointer.base()
        loop.record(ep.Checkpoint(commit=base.commit, changed=[], skipped=base.skipped, base=True), step=0)


def resume(settings_flags: dict[str, Any], session_ref: str | None, options: RunOptions,
           *, state_dir: Path | None = None) -> RunResult:
    """Continue a stopped session exactly where it stopped."""
    prefetch("openai")  # loads while the log is read and the sandbox reattached
    base_settings = load_settings({k: v for k, v in settings_flags.items() if k == "state_dir" and v})
    store = SessionStore(state_dir or base_settings.state_dir)
    session = store.last() if not session_ref else store.open(session_ref)
    session.lock()
    try:
        events = session.log.load()
        if not events or events[0].type != ev.SESSION_STARTED:
            raise SessionError(f"session {session.id} has no start event: nothing to resume")
        if events[0].payload.get("root"):
            raise SessionError(f"session {session.id} is a sub-agent: resume its root, "
                               f"`kimi-code resume {events[0].payload['root']}` (it resumes every unfinished child)")
        state = SessionState.fold(events)
        recorded = {k: v for k, v in state.settings.items() if k in STICKY_SETTINGS}
        if recorded.get("replay") and settings_flags.get("model"):
            # A replayed session handed over to a real model: the replay and its local endpoint go.
            for name in ("replay", "base_url", "provider"):
                recorded.pop(name, None)
        settings = load_settings({**recorded, **{k: v for k, v in settings_flags.items() if v is not None}})
        workspace = Path(state.repo)
        if not workspace.is_dir():
            raise SessionError(f"the session's repository {workspace} no longer exists")
        check_result_targets(workspace, options)
        ledger = Ledger.fold(events)
        if (state.finished and not options.continue_text and options.conversation is None
                and not ledger.pending()):  # sub-agents' work a crash left undone: resumed below
            # "Says so and exits 0": resuming a finished session is not a failure of this command.
            meta_outcome = Outcome((state.finish or {}).get("status", "success"), EXIT_OK,
                                   (state.finish or {}).get("summary", ""), {"already_finished": True})
            if (options.patch_out or options.branch) and state.last_checkpoint:
                # Write the result again (e.g. the first --patch-out failed at the end).
                from .view import make_view

                view = make_view(options.output, session.id)
                try:
                    meta_outcome = _export_result(settings, session.id, state, meta_outcome, options,
                                                  make_checkpointer(workspace, session.id, False), view.notice)
                finally:
                    view.close()
            if ledger.children:
                meta_outcome.detail["agents"] = [agent_row(c) for c in ledger.children.values()]
            return RunResult(meta_outcome, session.id, state, build_summary(session.id, state, meta_outcome))
        # --continue's attachments: checked against the session's endpoint, copied into its media/.
        parts = media.attach_to_session(settings, session.root, list(options.attach)) if options.continue_text else []
        replay = _open_replay(settings, options)
        if replay is not None:
            settings = replay.settings
        runner = None
        try:
            settings.require_api_key()
            tool_sources = resume_tools(settings, session.id, workspace, state.tools, trust_mcp=options.trust_mcp)
            swarm_holder = swarm_tools(settings, tool_sources.registry, state.tools)
            runner = Runner(settings, Recorder(session, state), workspace, options, replay, tools=tool_sources)
            uses_git = state.checkpoints_enabled if state.checkpoints_enabled is not None else bool(state.checkpoints)
            loop, checkpointer, sandbox_info, action, notices = runner.bring_up(
                tool_sources.registry, resuming=True, no_git=options.no_git or not uses_git)
            swarm = attach_swarm(runner, loop, checkpointer, swarm_holder, events)
            bundle = session.root / BUNDLE_FILE
            if loop.checkpoints is not None and bundle.exists():
                loop.checkpoints.bundle_path = bundle
                lost = _restore_from_bundle(checkpointer, loop, bundle, runner.view)
                if lost:
                    notices.append(lost)
            if swarm is not None:
                swarm.recover()  # a merge under way completes before the workspace is checked
            loop.settle_workspace()
            loop.record(ep.Resumed(pid=os.getpid(), in_flight=[c.call_id for c in state.pending]))
            loop.record(_sandbox_payload(action, sandbox_info))
            _complete_start(loop, checkpointer, sandbox_info)
            drift = _drift_notice(checkpointer, state, runner.view)
            loop.pending_notices = [*notices, drift] if drift else notices
            if options.continue_text:
                loop.pending_notices.append(("continue", media.content(prompts.continue_message(options.continue_text),
                                                                       parts)))
            outcome = close_swarm(swarm, _turns(runner, loop, checkpointer, reopened=not options.continue_text))
            return _finish(runner, outcome, checkpointer)
        finally:
            if runner is not None:
                runner.view.close()
                runner.close_tools()
            if replay is not None:
                replay.close()
    finally:
        session.close()


def _restore_from_bundle(checkpointer: Checkpointer, loop: AgentLoop, bundle: Path, view: View) -> str | None:
    """A CI retry on a fresh clone: the checkpoint refs are gone; bring them back and put the
    workspace in the state the agent left it in. Returns a notice for the agent when the bundle
    was older than the session's last checkpoint (bundles are throttled)."""
    state = loop.state

    def present(commit: str) -> bool:
        try:
            checkpointer.load(commit)
            return True
        except KimiCodeError:
            return False

    if present(state.last_checkpoint):
        return None  # the refs are here: same clone, nothing to do
    checkpointer.load_bundle(bundle)
    target, lost = state.last_checkpoint, None
    if not present(target):
        older = [(step, c) for step, c in sorted(state.checkpoints.items(), reverse=True) if present(c)]
        if not older:
            view.notice(f"{bundle.name} holds none of the session's checkpoints; the workspace was not restored")
            return None
        step, target = older[0]
        lost = (f"[kimi-code] The session was resumed on a fresh copy of the repository. The workspace was "
                f"restored to its state after step {step}; changes made after that step were lost. Re-check "
                "the files you changed since then.")
    restored = checkpointer.restore(target, force=True)
    loop.record(ep.Checkpoint(commit=target, changed=restored, skipped=[], restored_from_bundle=True))
    view.notice(f"restored {len(restored)} file(s) of the session's work from {bundle.name}")
    return lost


def _sticky(settings: Settings) -> dict[str, Any]:
    data = settings.public_dict()
    data.pop("api_key", None)
    return data


def _sandbox_payload(action: str, info: SandboxInfo) -> ep.Sandbox:
    return ep.Sandbox(action=action, backend=info.backend, container=info.container_name,
                      container_id=info.container_id, image=info.image, workspace=info.workspace,
                      workspace_mode=info.workspace_mode if info.backend == "docker" else None)


def _finish(runner: Runner, outcome: Outcome, checkpointer: Checkpointer | None) -> RunResult:
    """End of a run: export results, stop (or keep) the sandbox, build the summary."""
    state = runner.state
    if runner.replay is not None:
        outcome = runner.replay.outcome(outcome)
        more = runner.replay.continuation(state.step) if state.finished else None
        if more:
            runner.view.notice(more.replace("SESSION", runner.session.id))
            outcome.detail["replay_continues"] = more.replace("SESSION", runner.session.id)
    if os.environ.get("KIMI_CODE_VERIFY_REPLAY") == "1":
        _verify_replay(runner)
    options = runner.options
    detail: dict[str, Any] = {}
    ended = outcome.status not in ("interrupted",)
    if checkpointer is not None and ended and state.last_checkpoint:
        outcome = _export_result(runner.settings, runner.session.id, state, outcome, options, checkpointer,
                                 runner.view.notice)
    if runner.loop is not None and runner.loop.checkpoints is not None:
        runner.loop.checkpoints.save_bundle()
    runner.close_tools()  # MCP servers end before their sandbox does
    keep = options.keep_sandbox if options.keep_sandbox is not None else runner.settings.keep_sandbox
    if runner.sandbox is not None:
        try:
            # A diverged replay can't go on (resuming it stops again at once): nothing to keep.
            if (state.finished or _diverged(runner, outcome)) and not keep:
                runner.sandbox.stop(remove=True)
            else:
                runner.sandbox.stop(remove=False)
        except SandboxError as exc:
            runner.view.notice(f"sandbox cleanup: {exc}")
    if checkpointer is not None and state.last_checkpoint:
        try:
            detail["changed_files"] = checkpointer.result_files(state.last_checkpoint)
        except KimiCodeError:
            pass
    outcome.detail.update(detail)
    return RunResult(outcome, runner.session.id, state, build_summary(runner.session.id, state, outcome))


def check_result_targets(workspace: Path, options: RunOptions) -> None:
    """``--patch-out`` and ``--branch`` are checked before any work is done, so a run of hours
    cannot end in a result that has nowhere to go."""
    import subprocess

    if options.patch_out is not None:
        path = options.patch_out.expanduser()
        parent = path.parent if str(path.parent) else Path(".")
        if path.is_dir():
            raise ConfigError(f"--patch-out {path} is a directory")
        if not parent.is_dir():
            raise ConfigError(f"--patch-out {path}: the directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ConfigError(f"--patch-out {path} is not writable")
    if options.branch is not None:
        def git(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)

        if options.no_git:
            raise ConfigError("--branch needs a git work tree (it cannot be used with --no-git)")
        if git("check-ref-format", "--branch", options.branch).returncode != 0:
            raise ConfigError(f"--branch {options.branch!r} is not a valid branch name")
        if git("rev-parse", "--verify", "--quiet", f"refs/heads/{options.branch}").returncode == 0:
            raise ConfigError(f"--branch {options.branch}: that branch already exists; choose another name")


def _export_result(settings: Settings, session_id: str, state: SessionState, outcome: Outcome, options: RunOptions,
                   checkpointer: Checkpointer, notice: Callable[[str], None]) -> Outcome:
    """Write the result where ``--branch``/``--patch-out`` asked. A failure is reported (exit
    EXIT_STORAGE unless the run already failed) and never stops the sandbox cleanup; the session
    stays finished, and ``resume ID --patch-out FILE`` / ``--branch NAME`` writes it again."""
    failed: list[str] = []
    if options.branch:
        try:
            commit = checkpointer.export_branch(state.last_checkpoint, options.branch, _commit_message(state, outcome),
                                                settings.git_author)
            outcome.detail["branch"] = {"name": options.branch, "commit": commit}
        except KimiCodeError as exc:
            outcome.detail["branch_error"] = str(exc)
            failed.append(f"could not create branch {options.branch}: {exc}")
    if options.patch_out:
        try:
            options.patch_out.expanduser().write_text(checkpointer.patch(state.last_checkpoint))
            outcome.detail["patch"] = str(options.patch_out)
        except (OSError, KimiCodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            outcome.detail["patch_error"] = f"{options.patch_out}: {why}"
            failed.append(f"could not write --patch-out {options.patch_out}: {why}")
    for line in failed:
        notice(f"{line} (the session is intact: `kimi-code resume {session_id}` with the same flag writes it again)")
    if failed and outcome.exit_code == EXIT_OK:
        outcome.exit_code = EXIT_STORAGE
    return outcome


def _diverged(runner: Runner, outcome: Outcome) -> bool:
    if runner.replay is None:
        return False
    from .replay import DIVERGED

    return outcome.status == DIVERGED


def _verify_replay(runner: Runner) -> None:
    """Test aid (KIMI_CODE_VERIFY_REPLAY=1): the log on disk must fold into exactly the live state,
    or some change of state was never recorded and a resume would lose it."""
    replayed = SessionState.fold(runner.session.log.load()).snapshot()
    live = runner.state.snapshot()
    diff = sorted(k for k in live if live[k] != replayed.get(k))
    if diff:
        raise RuntimeError(f"session {runner.session.id}: replayed state differs from the live one in {diff}")


def _commit_message(state: SessionState, outcome: Outcome) -> str:
    summary = (outcome.summary or state.task).strip()
    first = summary.splitlines()[0][:72] if summary else "kimi-code changes"
    return f"{first}\n\n{summary}\n\nkimi-code session {state.session_id}\n"


def build_summary(session_id: str, state: SessionState, outcome: Outcome) -> dict[str, Any]:
    t = state.totals
    return {
        "session_id": session_id,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "summary": outcome.summary,
        "steps": state.step,
        "tokens": {"prompt": t.prompt_tokens, "cached": t.cached_tokens, "completion": t.completion_tokens,
                   "cached_share": round(t.cached_share, 4), "context": state.context_tokens},
        "cost": round(t.cost, 6),
        "cost_saved_by_cache": round(t.cost_saved_by_cache, 6),
        "changed_files": sorted(state.changed_files),
        "last_tests": state.last_test_summary,
        "compactions": state.compactions,
        **{k: v for k, v in outcome.detail.items()},
    }


def summary_json(summary: dict[str, Any]) -> str:
    from kimi_code.tools.text import clean_value  # file names that are not UTF-8 print as \xNN

    return json.dumps(clean_value(summary), ensure_ascii=False)
