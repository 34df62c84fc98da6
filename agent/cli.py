"""The `kimi-code` command line: parses flags, builds objects, maps errors to exit codes.

Kept thin on purpose: every behaviour lives in a module of its own; this file only wires them.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from . import config as config_mod
from .errors import EXIT_INTERRUPTED, USER_ERRORS, ConfigError, exit_code_of

app = typer.Typer(
    name="kimi-code",
    help="A long-horizon, crash-safe coding agent for Kimi K2.x.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _register_sandbox_commands() -> None:
    from kimi_code.sandbox.commands import sandbox_app

    app.add_typer(sandbox_app, name="sandbox")


_register_sandbox_commands()

err_console = Console(stderr=True)
_debug = {"on": False}


def _print_error(message: str, label: str = "error:") -> None:
    """One line on stderr, never wrapped, the message never read as rich markup."""
    from rich.text import Text

    err_console.print(Text.assemble((label, "bold red"), " ", " ".join(message.splitlines())),
                      highlight=False, soft_wrap=True)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.", envvar="KIMI_CODE_DEBUG"),
) -> None:
    _debug["on"] = debug


# -- shared option helpers ---------------------------------------------------------------------
ModelOpt = typer.Option(None, "--model", help="Model name (default kimi-k2.6).")
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible base URL (env MOONSHOT_BASE_URL).")
ProviderOpt = typer.Option(None, "--provider", help="Endpoint preset: " + ", ".join(config_mod.PROVIDERS))


def endpoint_flags(model: Optional[str], base_url: Optional[str], provider: Optional[str]) -> dict[str, Any]:
    return {"model": model, "base_url": base_url, "provider": provider}


# -- config ------------------------------------------------------------------------------------
@config_app.command("path")
def config_path() -> None:
    """Print the config file's path."""
    typer.echo(str(config_mod.user_config_path()))


@config_app.command("show")
def config_show(
    model: Optional[str] = ModelOpt, base_url: Optional[str] = BaseUrlOpt, provider: Optional[str] = ProviderOpt
) -> None:
    """Print the effective settings as JSON (the API key only as set / not set)."""
    settings = config_mod.load_settings(endpoint_flags(model, base_url, provider))
    typer.echo(json.dumps(settings.public_dict(), indent=2))


@config_app.command("providers")
def config_providers() -> None:
    """List the endpoint presets and the model table."""
    console = Console()
    table = Table("provider", "base URL", "key variables", "media", "description")
    for p in config_mod.PROVIDERS.values():
        media = ", ".join(name for name, on in (("images", p.image_input), ("video", p.video_input),
                                                ("files API", p.file_uploads)) if on) or "none"
        table.add_row(p.name, p.base_url or "(--base-url)", ", ".join(p.key_envs), media, p.description)
    console.print(table)
    models = Table("model", "context", "max output", "thinks", "$/M input", "$/M cached", "$/M output")
    for m in config_mod.MODELS.values():
        models.add_row(m.name, f"{m.context_window:,}", f"{m.max_output_tokens:,}", "yes" if m.thinks else "no",
                       f"{m.price_input:.2f}", f"{m.price_cached_input:.2f}", f"{m.price_output:.2f}")
    console.print(models)



# -- run / resume ------------------------------------------------------------------------------
McpOpt = typer.Option(None, "--mcp", help="Add an MCP server for this run: NAME=COMMAND [ARGS] (stdio) or NAME=URL (streamable HTTP); repeatable.")
McpConfigOpt = typer.Option(None, "--mcp-config", help="Add the [mcp_servers.NAME] tables of this TOML file for this run; repeatable.")
TrustMcpOpt = typer.Option(False, "--trust-mcp", help="Start the servers of the repository's .kimi-code/mcp.toml without `kimi-code mcp trust`.")
OutputOpt = typer.Option("text", "--output", "-o", help="text | json (one summary object) | stream-json (one event per line).")
StateDirOpt = typer.Option(None, "--state-dir", help="Where sessions are stored (env KIMI_CODE_STATE_DIR).")
WorkspaceOpt = typer.Option(None, "--workspace", help="mount (bind-mount the repository) or copy (the container holds "
                            "its own copy, synced back after each command; the default for a remote DOCKER_HOST).")
AttachOpt = typer.Option(None, "--attach", help="An image (PNG, JPEG, WebP, GIF) or video (MP4, MPEG, MOV, AVI, FLV, "
                         "WebM, WMV, 3GPP) sent with the task; repeatable.")


def _parse_duration(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            seconds = float(text[:-1]) * units[text[-1]]
        else:
            seconds = float(text)
    except ValueError:
        raise ConfigError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h") from None
    if not math.isfinite(seconds) or seconds <= 0:  # nan would mean "no limit", a negative one "stop now"
        raise ConfigError(f"--max-time must be a positive duration such as 90s, 30m or 2h, not {text!r}")
    return seconds


def _limits(max_steps: Optional[int], max_cost: Optional[float], max_time: Optional[str]) -> Any:
    from .loop import Limits

    if max_cost is not None and (not math.isfinite(max_cost) or max_cost <= 0):
        raise ConfigError(f"--max-cost must be a positive amount in USD, not {max_cost:g}")
    return Limits(max_steps, max_cost, _parse_duration(max_time))


def _state_dir_name(path: Path, flag: Optional[Path]) -> str:
    return f"--state-dir {flag}" if flag is not None else f"state directory {path}"


def _check_state_dir(path: Path, flag: Optional[Path], *, write: bool = False, create: bool = False) -> None:
    """One clear line for a state directory sessions cannot live in (a regular file, a path under
    one, an unwritable or impossible place), before any session is made or touched. ``create``:
    make it (as a new session would) and prove a file can be written there."""
    path = Path(path).expanduser()
    name = _state_dir_name(path, flag)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} is not a directory")
    if create:
        import tempfile

        try:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".kimi-code-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ConfigError(f"{name} cannot hold sessions: {exc.strerror or exc.__class__.__name__}") from None
    elif write and path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} is not writable")


def _check_recording(path: Path) -> None:
    """A recording must be UTF-8 text (JSON lines): say so instead of failing deep in the replay."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read recording {path}: {exc.strerror or exc.__class__.__name__}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recording {path} is not a text file (invalid UTF-8 at byte {exc.start}): a recording "
                          "is a file written by `kimi-code export` (or a session's events.jsonl)") from None


def _replay_path(model: Optional[str]) -> Optional[Path]:
    if model and model.startswith(config_mod.REPLAY_PREFIX):
        name = model[len(config_mod.REPLAY_PREFIX):].strip()
        return Path(name).expanduser().resolve() if name else None
    return None


def _check_task_fits(settings: Any, task: str, workspace: Path) -> None:
    """A task that cannot fit the model's window is a usage error, found before any session exists
    (otherwise every request fails and the run ends as a model API failure that resume cannot fix).
    The input budget is the window minus the output reserved per request (Settings.output_reserve,
    the same as AgentLoop.max_output); the system prompt and tool schemas count too."""
    budget = settings.input_budget
    if len(task.encode("utf-8")) <= budget // 2:
        # A token is at least one byte: this fits with half the budget left for the system prompt
        # and tools, no counting needed (the common case costs nothing).
        return
    from . import prompts
    from .tokens import MESSAGE_OVERHEAD, count_text, estimate_text_tokens, tokenizer_name

    exact = tokenizer_name().startswith("tiktoken")  # without it, the documented estimate (and no warning)
    count = count_text if exact else estimate_text_tokens
    task_tokens = count(prompts.task_message(task)) + MESSAGE_OVERHEAD
    fixed = 0
    try:
        from .assembly import default_tools

        system = prompts.build_system_prompt(workspace=str(workspace), sandbox="the sandbox", network=settings.network,
                                             repo=workspace)
        fixed = count(system) + count(json.dumps(default_tools().schemas(), separators=(",", ":")))
    except Exception:  # noqa: BLE001 - the check is about the task; the rest is a refinement
        pass
    need = task_tokens + fixed
    if need <= budget:
        return
    info = settings.model_info
    approx = "" if exact else " (estimated)"
    raise ConfigError(
        f"the task is too large for the model's context window: ~{task_tokens:,} tokens{approx} plus {fixed:,} of "
        f"system prompt and tools, but {settings.model} takes at most {budget:,} input tokens "
        f"({info.context_window:,}-token window minus {settings.output_reserve:,} reserved for the answer): "
        f"~{need - budget:,} tokens too many; shorten it, or put the material in a file in the repository "
        "and ask the agent to read it"
    )


def _check_output(output: str) -> str:
    if output not in ("text", "json", "stream-json"):
        raise ConfigError(f"--output must be text, json or stream-json, not {output!r}")
    return output


def _decode_task(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (invalid byte at offset {exc.start}): "
                          "the task must be text") from None


def _read_task(task: Optional[str], task_file: Optional[Path]) -> str:
    if task and task_file:
        raise ConfigError("give the task either as an argument or with -f, not both")
    if task_file is not None:
        try:
            data = task_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read task file {task_file}: {exc.strerror or exc.__class__.__name__}") from None
        return _decode_task(data, f"task file {task_file}")
    if task:
        try:
            task.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes in argv arrive as lone surrogates
            raise ConfigError("the task argument is not UTF-8 text") from None
        return task
    if not sys.stdin.isatty():
        stream = getattr(sys.stdin, "buffer", None)
        return sys.stdin.read() if stream is None else _decode_task(stream.read(), "the task on standard input")
    raise ConfigError('no task given: kimi-code run "what to do" (or -f FILE, or pipe it on stdin)')


def _report(result: Any, output: str, state_dir_flag: Optional[Path]) -> None:
    from .session import summary_json

    outcome, summary = result.outcome, result.summary
    if output == "json":
        typer.echo(summary_json(summary))
    elif output == "stream-json":
        typer.echo(summary_json({"type": "summary", **summary}))
    else:
        t = summary["tokens"]
        typer.echo(
            f"{outcome.status}: {outcome.summary or '(no summary)'}\n"
            f"session {result.session_id} · {summary['steps']} steps · ${summary['cost']:.4f} · "
            f"{t['prompt']:,} in ({t['cached_share']:.0%} cached) / {t['completion']:,} out"
        )
        for key in ("branch", "patch"):
            if key in summary:
                typer.echo(f"{key}: {summary[key]}")
    if outcome.status in ("interrupted", "limit", "api_error", "sandbox_error"):
        cmd = f"kimi-code resume {shlex.quote(result.session_id)}"
        if state_dir_flag:
            cmd += f" --state-dir {shlex.quote(str(state_dir_flag))}"
        # Plain, never wrapped (rich wraps at 80 columns when stderr is no terminal): it is copied.
        typer.echo(f"resume with: {cmd}", err=True)


@app.command()
def run(
    task: Optional[str] = typer.Argument(None, help="What to do (or -f FILE, or stdin)."),
    task_file: Optional[Path] = typer.Option(None, "-f", "--file", help="Read the task from a file."),
    repo: Path = typer.Option(Path("."), "--repo", help="Repository to work in (default: current directory)."),
    no_git: bool = typer.Option(False, "--no-git", help="Allow a directory that is not a git work tree."),
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    provider: Optional[str] = ProviderOpt,
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="Kimi thinking mode."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many model turns."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop when the session cost reaches this (USD)."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop after this long (e.g. 90s, 30m, 2h)."),
    sandbox: Optional[str] = typer.Option(None, "--sandbox", help="docker (default) or none (runs on the host)."),
    image: Optional[str] = typer.Option(None, "--image", help="Sandbox Docker image."),
    network: Optional[bool] = typer.Option(None, "--network/--no-network", help="Network inside the sandbox (default off)."),
    workspace_mode: Optional[str] = WorkspaceOpt,
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle", help="Host CA bundle to trust inside the sandbox."),
    keep_sandbox: Optional[bool] = typer.Option(None, "--keep-sandbox/--remove-sandbox", help="Keep the container at the end."),
    no_compaction: bool = typer.Option(False, "--no-compaction", help="Never summarize old history."),
    output: str = OutputOpt,
    state_dir: Optional[Path] = StateDirOpt,
    branch: Optional[str] = typer.Option(None, "--branch", help="At the end, commit the result to this new branch."),
    patch_out: Optional[Path] = typer.Option(None, "--patch-out", help="At the end, write the result as a unified diff."),
    resume_if_exists: bool = typer.Option(False, "--resume-if-exists", help="Continue the unfinished session of the same task and repo, if any (CI retries)."),
    attach: Optional[list[Path]] = AttachOpt,
    mcp: Optional[list[str]] = McpOpt,
    mcp_config: Optional[list[Path]] = McpConfigOpt,
    trust_mcp: bool = TrustMcpOpt,
) -> None:
    """Run the agent on a task until it finishes or a limit is reached."""
    from .session import RunOptions, find_workspace, resume as resume_session, session_key, start
    from .store import SessionStore

    output = _check_output(output)
    limits = _limits(max_steps, max_cost, max_time)
    flags = {"model": model, "base_url": base_url, "provider": provider, "thinking": thinking, "sandbox": sandbox,
             "image": image, "network": network, "ca_bundle": ca_bundle, "state_dir": state_dir,
             "workspace": workspace_mode,
             "compaction": False if no_compaction else None,
             "mcp_servers": config_mod.mcp_flag_servers(mcp, mcp_config)}
    settings = config_mod.load_settings(flags)
    if settings.replay is not None:
        _check_recording(settings.replay)
    if settings.ca_bundle is not None and not settings.ca_bundle.expanduser().is_file():
        raise ConfigError(f"CA bundle {settings.ca_bundle} is not a file")
    text = _read_task(task, task_file)
    if not text.strip():
        raise ConfigError("the task is empty")
    options = RunOptions(output=output, limits=limits, no_git=no_git, keep_sandbox=keep_sandbox, branch=branch,
                         patch_out=patch_out, bundle=resume_if_exists, trust_mcp=trust_mcp,
                         attach=tuple(attach or ()))
    workspace = find_workspace(repo, no_git)
    _check_task_fits(settings, text.strip(), workspace)
    _check_state_dir(settings.state_dir, state_dir, create=True)
    key = session_key(workspace, text)
    result = None
    if resume_if_exists:
        existing = [m for m in SessionStore(settings.state_dir).list()
                    if m.key == key and m.status in ("running", "interrupted", "limit")]
        if existing:
            err_console.print(f"resuming session {existing[0].id} (--resume-if-exists)", highlight=False,
                              soft_wrap=True)
            result = resume_session(flags, existing[0].id, options, state_dir=settings.state_dir)
    if result is None:
        result = start(settings, text, repo, options, key=key)
    _report(result, output, state_dir)
    raise typer.Exit(result.outcome.exit_code)


def _interactive_terminal() -> bool:
    """A person at a terminal: stdin and stdout are TTYs and this is not CI (which never waits
    for input)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return sys.stdin.isatty() and sys.stdout.isatty() and not ci


ApprovalOpt = typer.Option("auto", "--approval",
                           help="auto (never ask) | edits (ask before writes and commands that may change something) "
                                "| all (ask before every tool call). Interactive sessions only.")


def _check_approval(approval: str) -> str:
    from .approval import MODES

    if approval not in MODES:
        raise ConfigError(f"--approval must be {', '.join(MODES[:-1])} or {MODES[-1]}, not {approval!r}")
    return approval


@app.command()
def chat(
    repo: Path = typer.Option(Path("."), "--repo", help="Repository to work in (default: current directory)."),
    no_git: bool = typer.Option(False, "--no-git", help="Allow a directory that is not a git work tree."),
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    provider: Optional[str] = ProviderOpt,
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="Kimi thinking mode."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many model turns (whole session)."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop when the session cost reaches this (USD)."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Stop a turn after this long (e.g. 90s, 30m)."),
    sandbox: Optional[str] = typer.Option(None, "--sandbox", help="docker (default) or none (runs on the host)."),
    image: Optional[str] = typer.Option(None, "--image", help="Sandbox Docker image."),
    network: Optional[bool] = typer.Option(None, "--network/--no-network", help="Network inside the sandbox (default off)."),
    workspace_mode: Optional[str] = WorkspaceOpt,
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle", help="Host CA bundle to trust inside the sandbox."),
    keep_sandbox: Optional[bool] = typer.Option(None, "--keep-sandbox/--remove-sandbox", help="Keep the container at the end."),
    no_compaction: bool = typer.Option(False, "--no-compaction", help="Never summarize old history."),
    state_dir: Optional[Path] = StateDirOpt,
    approval: str = ApprovalOpt,
) -> None:
    """Talk to the agent: each message is a turn of one session, with slash commands (needs a terminal)."""
    from .session import RunOptions, find_workspace

    if not _interactive_terminal():
        raise ConfigError("kimi-code chat needs a terminal; in scripts and CI use `kimi-code run`")
    approval = _check_approval(approval)
    limits = _limits(max_steps, max_cost, max_time)
    flags = {"model": model, "base_url": base_url, "provider": provider, "thinking": thinking, "sandbox": sandbox,
             "image": image, "network": network, "ca_bundle": ca_bundle, "state_dir": state_dir,
             "workspace": workspace_mode,
             "compaction": False if no_compaction else None}
    settings = config_mod.load_settings(flags)
    if settings.replay is not None:
        _check_recording(settings.replay)
    if settings.ca_bundle is not None and not settings.ca_bundle.expanduser().is_file():
        raise ConfigError(f"CA bundle {settings.ca_bundle} is not a file")
    settings.require_api_key()
    settings.effective_base_url  # noqa: B018 - a provider without a URL fails before the prompt
    workspace = find_workspace(repo, no_git)
    _check_state_dir(settings.state_dir, state_dir, create=True)
    from .interactive import chat as chat_session  # prompt_toolkit: only on this path

    options = RunOptions(output="text", limits=limits, no_git=no_git, keep_sandbox=keep_sandbox)
    chat_session(settings, workspace, options, approval, state_dir)
    raise typer.Exit(0)


@app.command()
def demo(
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to put the sample repository (default: a new temporary directory)."),
    sandbox: Optional[str] = typer.Option(None, "--sandbox", help="docker (default; falls back to none without Docker) or none."),
    image: Optional[str] = typer.Option(None, "--image", help="Sandbox Docker image."),
    output: str = OutputOpt,
    state_dir: Optional[Path] = StateDirOpt,
) -> None:
    """Watch the agent fix a bug in a sample repository: a recorded session, replayed for real. No API key needed."""
    from . import demo as demo_mod
    from .session import RunOptions, start

    output = _check_output(output)
    # Replayed turns carry their recorded usage: the tokenizer notice would only distract here.
    import logging

    logging.getLogger("kimi_code.agent.tokens").setLevel(logging.ERROR)

    def say(text: str) -> None:  # progress lines go to stdout only in text mode (json stays parseable)
        typer.echo(text, err=output != "text")

    plan = demo_mod.plan({"sandbox": sandbox, "image": image, "state_dir": state_dir}, directory, say)
    _check_state_dir(plan.settings.state_dir, state_dir, create=True)
    if plan.notice:
        err_console.print(f"[bold yellow]notice:[/] {plan.notice}", highlight=False, soft_wrap=True)
    say(f"kimi-code demo: replaying a recorded session in {plan.repo}\ntask: {demo_mod.TASK}\n")
    result = start(plan.settings, demo_mod.TASK, plan.repo,
                   RunOptions(output=output, pace=demo_mod.pace_for(output)))
    _report(result, output, state_dir)
    say(demo_mod.epilogue(plan.repo, result.session_id, plan.settings.state_dir, state_dir is not None))
    raise typer.Exit(result.outcome.exit_code)


@app.command()
def resume(
    session_id: Optional[str] = typer.Argument(None, help="Session id (or a unique prefix)."),
    last: bool = typer.Option(False, "--last", help="Resume the most recently updated session."),
    continue_text: Optional[str] = typer.Option(None, "--continue", help="Add instructions (reopens a finished session)."),
    model: Optional[str] = ModelOpt,
    base_url: Optional[str] = BaseUrlOpt,
    provider: Optional[str] = ProviderOpt,
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1),
    max_cost: Optional[float] = typer.Option(None, "--max-cost"),
    max_time: Optional[str] = typer.Option(None, "--max-time"),
    image: Optional[str] = typer.Option(None, "--image"),
    workspace_mode: Optional[str] = WorkspaceOpt,
    keep_sandbox: Optional[bool] = typer.Option(None, "--keep-sandbox/--remove-sandbox"),
    output: str = OutputOpt,
    state_dir: Optional[Path] = StateDirOpt,
    branch: Optional[str] = typer.Option(None, "--branch"),
    patch_out: Optional[Path] = typer.Option(None, "--patch-out"),
    attach: Optional[list[Path]] = AttachOpt,
    mcp: Optional[list[str]] = McpOpt,
    mcp_config: Optional[list[Path]] = McpConfigOpt,
    trust_mcp: bool = TrustMcpOpt,
    approval: str = ApprovalOpt,
) -> None:
    """Continue a stopped session exactly where it stopped (on a terminal: reopen it interactively)."""
    from .session import RunOptions, resume as resume_session

    output = _check_output(output)
    approval = _check_approval(approval)
    if not session_id and not last:
        raise ConfigError("give a session id or --last (see `kimi-code sessions`)")
    if session_id and last:
        raise ConfigError("give a session id or --last, not both")
    if continue_text is not None and not continue_text.strip():
        raise ConfigError("--continue needs the instructions to add")
    if attach and continue_text is None:
        raise ConfigError('--attach on resume goes with --continue "..." (the files come with those instructions)')
    limits = _limits(max_steps, max_cost, max_time)
    recording = _replay_path(model)
    if recording is not None:
        _check_recording(recording)
    flags = {"model": model, "base_url": base_url, "provider": provider, "image": image, "state_dir": state_dir,
             "workspace": workspace_mode, "mcp_servers": config_mod.mcp_flag_servers(mcp, mcp_config)}
    _check_state_dir(state_dir or config_mod.load_settings({"state_dir": state_dir}).state_dir, state_dir, write=True)
    options = RunOptions(output=output, limits=limits, keep_sandbox=keep_sandbox, branch=branch,
                         patch_out=patch_out, continue_text=continue_text, trust_mcp=trust_mcp,
                         attach=tuple(attach or ()))
    if output == "text" and not (branch or patch_out) and _interactive_terminal():
        from .interactive import reopen  # prompt_toolkit: only on this path

        reopen(flags, session_id, options, approval, state_dir)
        raise typer.Exit(0)
    result = resume_session(flags, session_id, options, state_dir=state_dir)
    if result.outcome.detail.get("already_finished"):
        err_console.print(f"session {result.session_id} already finished; use --continue \"...\" to add instructions",
                          highlight=False, soft_wrap=True)
    _report(result, output, state_dir)
    raise typer.Exit(result.outcome.exit_code)


# -- sessions ----------------------------------------------------------------------------------
sessions_app = typer.Typer(help="List and prune sessions.", invoke_without_command=True)
app.add_typer(sessions_app, name="sessions")


def _store(state_dir: Optional[Path], *, write: bool = False) -> Any:
    from .store import SessionStore

    path = state_dir or config_mod.load_settings({}).state_dir
    _check_state_dir(path, state_dir, write=write)
    return SessionStore(path)


@sessions_app.callback()
def sessions_list(ctx: typer.Context, state_dir: Optional[Path] = StateDirOpt,
                  as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """List sessions: id, repository, task, status, steps, cost, last update."""
    if ctx.invoked_subcommand is not None:
        return
    import datetime as dt
    from dataclasses import asdict

    metas = _store(state_dir).list()
    if as_json:
        for m in metas:
            typer.echo(json.dumps(asdict(m)))
        return
    if not metas:
        typer.echo("no sessions")
        return
    # The id whole, whatever the width: it is what `show`, `resume` and `diff` take.
    table = Table(Column("id", no_wrap=True), "repository", "task", "status", "steps", "cost", "updated")
    from .swarm import session_tree  # sub-agents under their parents

    for m, depth in session_tree(metas):
        updated = dt.datetime.fromtimestamp(m.updated).strftime("%Y-%m-%d %H:%M")
        # Text cells: a task or path with [brackets] is not rich markup.
        table.add_row(("  " * depth + "└ " if depth else "") + m.id, Text(m.repo),
                      Text(m.task.splitlines()[0][:50] if m.task else ""), m.status,
                      str(m.steps), f"${m.cost:.4f}", updated)
    from kimi_code.sandbox.commands import table_console

    table_console().print(table)


@sessions_app.command("prune")
def sessions_prune(
    state_dir: Optional[Path] = StateDirOpt,
    older_than: float = typer.Option(7.0, "--older-than", help="Days since the last update."),
    include_unfinished: bool = typer.Option(False, "--include-unfinished", help="Also remove interrupted sessions."),
    dry_run: bool = typer.Option(False, "--dry-run"),
) -> None:
    """Remove old sessions, their checkpoint refs and their sandbox containers."""
    from .prune import prunable, remove_session

    if not math.isfinite(older_than) or older_than < 0:
        raise ConfigError(f"--older-than must be a number of days, 0 or more (got {older_than:g})")

    store = _store(state_dir)
    removed = 0
    for m in prunable(store, older_than, include_unfinished):
        typer.echo(f"{'would remove' if dry_run else 'removing'} {m.id} ({m.status}, {m.repo})")
        if dry_run:
            continue
        for warning in remove_session(store, m):
            err_console.print(f"  {warning}", highlight=False, markup=False)
        removed += 1
    typer.echo(f"{removed} session(s) removed")


@app.command()
def show(
    session_id: Optional[str] = typer.Argument(None, help="Session id (default: the last one)."),
    state_dir: Optional[Path] = StateDirOpt,
    reasoning: bool = typer.Option(False, "--reasoning", help="Include the model's reasoning."),
    agents: bool = typer.Option(False, "--agents", help="Summarise the session's sub-agents instead."),
) -> None:
    """Print a readable transcript of a session (or, with --agents, a line per sub-agent)."""
    from .transcript import render_transcript

    store = _store(state_dir)
    session = store.open(session_id) if session_id else store.last()
    if agents:
        from .swarm import agents_summary

        typer.echo(agents_summary(session.log.load()))
        return
    typer.echo(render_transcript(session.log.load(), reasoning=reasoning))


@app.command()
def export(
    session_id: Optional[str] = typer.Argument(None, help="Session id (default: the last one)."),
    fmt: str = typer.Option("recording", "--format", help="recording (replay with --model replay:FILE) | trajectory (JSON)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write here instead of standard output."),
    state_dir: Optional[Path] = StateDirOpt,
) -> None:
    """Export a session: a recording of its model turns, or its whole trajectory. Secrets are scrubbed."""
    from .export import FORMATS, Scrubber, recording_lines, trajectory

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    store = _store(state_dir)
    session = store.open(session_id) if session_id else store.last()
    events = session.log.load()
    key = config_mod.load_settings({}).api_key  # also when it comes from the config file
    scrubber = Scrubber(extra={"API_KEY": key.get_secret_value()} if key else None)
    if fmt == "recording":
        text = "".join(line + "\n" for line in recording_lines(events, scrubber))
    else:
        text = json.dumps(trajectory(session.read_meta(), events, scrubber), ensure_ascii=False, indent=1) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    err_console.print(f"wrote {fmt} of session {session.id} to {out}", highlight=False, markup=False, soft_wrap=True)


# -- mcp ---------------------------------------------------------------------------------------
mcp_app = typer.Typer(help="MCP servers: list them, trust a repository's own.", no_args_is_help=True)
app.add_typer(mcp_app, name="mcp")
McpRepoOpt = typer.Option(Path("."), "--repo", help="Repository (default: the current directory).")


@mcp_app.command("list")
def mcp_list(
    repo: Path = McpRepoOpt,
    mcp: Optional[list[str]] = McpOpt,
    mcp_config: Optional[list[Path]] = McpConfigOpt,
    trust_mcp: bool = TrustMcpOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per server."),
) -> None:
    """Show the configured MCP servers, whether they start, and their tools (as the model sees them)."""
    from .mcp_status import server_statuses, workspace_of

    settings = config_mod.load_settings({"mcp_servers": config_mod.mcp_flag_servers(mcp, mcp_config)})
    rows, repo_file = server_statuses(settings, workspace_of(repo), trust_mcp=trust_mcp)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict()))
    else:
        if not rows:
            typer.echo("no MCP servers configured (see `[mcp_servers.NAME]` in the README)")
        for row in rows:
            typer.echo(f"{row.name} ({row.source}, {row.transport}: {row.command}){' required' if row.required else ''}"
                       f": {row.state}{' - ' + row.detail if row.detail else ''}")
            for tool in row.tools:
                first = tool.description.splitlines()[0] if tool.description else ""
                typer.echo(f"  {tool.name}{' [read-only]' if tool.read_only else ''}  {first[:100]}")
    notice = repo_file.notice() if not trust_mcp else None
    if notice:
        err_console.print(notice, highlight=False, markup=False, soft_wrap=True)


@mcp_app.command("trust")
def mcp_trust(repo: Path = McpRepoOpt) -> None:
    """Allow the repository's .kimi-code/mcp.toml to start its servers (until the file changes)."""
    from .mcp_status import workspace_of
    from .mcp_trust import trust

    config, servers = trust(workspace_of(repo))
    typer.echo(f"trusted {config.path} ({len(servers)} server(s)):")
    for name, server in servers.items():
        typer.echo(f"  {name}: {server.describe()}")


@mcp_app.command("untrust")
def mcp_untrust(repo: Path = McpRepoOpt) -> None:
    """Stop trusting the repository's .kimi-code/mcp.toml."""
    from .mcp_status import workspace_of
    from .mcp_trust import untrust

    workspace = workspace_of(repo)
    typer.echo(f"{workspace} is no longer trusted" if untrust(workspace) else f"{workspace} was not trusted")


# -- doctor ------------------------------------------------------------------------------------
@app.command()
def doctor(
    model: Optional[str] = ModelOpt, base_url: Optional[str] = BaseUrlOpt, provider: Optional[str] = ProviderOpt,
    image: Optional[str] = typer.Option(None, "--image"),
    sandbox: Optional[str] = typer.Option(None, "--sandbox"),
    repo: Path = typer.Option(Path("."), "--repo", help="Repository whose own MCP servers are checked too, if trusted."),
) -> None:
    """Check config, API key, endpoint, Docker, the sandbox image and MCP servers; exit 1 if something required is missing."""
    from .doctor import any_required_failed, run_checks

    checks = run_checks({"model": model, "base_url": base_url, "provider": provider, "image": image,
                         "sandbox": sandbox}, workspace=repo)
    styles = {"ok": "[green]OK[/]", "fail": "[red]FAIL[/]", "warn": "[yellow]WARN[/]"}
    table = Table("check", "status", "detail")
    for check in checks:
        table.add_row(check.name, styles[check.status], Text(check.detail))
    Console().print(table)
    raise typer.Exit(1 if any_required_failed(checks) else 0)


# -- checkpoints: diff / rewind ----------------------------------------------------------------
def _load_session(session_id: Optional[str], state_dir: Optional[Path]) -> tuple[Any, Any]:
    from .rewind import load_session

    return load_session(_store(state_dir), session_id)


@app.command()
def diff(
    session_id: Optional[str] = typer.Argument(None, help="Session id (default: the last one)."),
    step: Optional[int] = typer.Option(None, "--step", help="Only what this step changed."),
    state_dir: Optional[Path] = StateDirOpt,
) -> None:
    """Show the session's changes to the workspace (or one step's)."""
    from .checkpoints import Checkpointer
    from .rewind import step_diff

    session, state = _load_session(session_id, state_dir)
    if state.base_commit is None:
        raise ConfigError(f"session {session.id} has no checkpoints (not a git repository, or no step yet)")
    text = step_diff(Checkpointer(Path(state.repo), session.id), state, step)
    if text is None:
        typer.echo(f"step {step} changed nothing in the workspace")
        return
    typer.echo(text, nl=False)


@app.command()
def rewind(
    session_id: str = typer.Argument(..., help="Session id."),
    to: int = typer.Option(..., "--to", help="Put the workspace back to its state after this step."),
    force: bool = typer.Option(False, "--force", help="Even if the workspace was changed outside the agent."),
    state_dir: Optional[Path] = StateDirOpt,
) -> None:
    """Rewind the workspace and the conversation to the end of a step; resume continues from there."""
    from .rewind import rewind as rewind_session

    result = rewind_session(_store(state_dir).state_dir, session_id, to, force)
    typer.echo(f"workspace rewound to step {to} ({len(result.restored)} file(s) restored); "
               f"continue with: kimi-code resume {result.session_id}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and an exit code for user errors."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args in ([], ["--debug"]) and _interactive_terminal():
        args.append("chat")  # a bare `kimi-code` on a terminal opens a chat; elsewhere it prints help
    try:
        rc = app(args=args, standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except USER_ERRORS as exc:
        if _debug["on"]:
            traceback.print_exc()
        _print_error(str(exc))
        sys.exit(exit_code_of(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors (typer vendors click) and anything unexpected
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            if exc.__class__.__name__ == "NoArgsIsHelpError" or not callable(getattr(exc, "format_message", None)):
                exc.show()  # the help text itself
                sys.exit(exc.exit_code)
            # One line, like every other user error (click's own form is usage + hint + error).
            message = " ".join(str(exc.format_message()).split())
            ctx = getattr(exc, "ctx", None)
            if ctx is not None:
                message += f" (see `{ctx.command_path} --help`)"
            _print_error(message)
            sys.exit(exc.exit_code)
        if exc.__class__.__name__ == "Abort":
            err_console.print("aborted")
            sys.exit(EXIT_INTERRUPTED)
        if _debug["on"]:
            traceback.print_exc()
        _print_error(f"{exc.__class__.__name__}: {exc} (run with --debug for the traceback)", "internal error:")
        sys.exit(70)


if __name__ == "__main__":  # pragma: no cover
    main()
