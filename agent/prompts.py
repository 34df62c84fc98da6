"""The system prompt and the fixed texts the loop sends.

The system prompt is built once per session, recorded in the ``session_started`` event and reused
verbatim on resume: nothing in it changes from step to step (no clock, no counters), so the
provider's prefix cache keeps hitting. Changing facts are appended as messages instead.
"""

from __future__ import annotations

from pathlib import Path

INSTRUCTION_FILES = ("AGENTS.md", "KIMI.md", "CLAUDE.md")
MAX_INSTRUCTION_CHARS = 40_000

SYSTEM_TEMPLATE = """\
You are kimi-code, an autonomous software engineering agent. You work alone on the task below until \
it is done: nobody will answer questions mid-task, so make reasonable decisions and keep going.

# How to work
- Explore before you change: use list_files, search and read_file to understand the code.
- Keep a plan with the todo tool for any task of more than a couple of steps; update it as you go \
(exactly one item in_progress at a time).
- Make focused changes with edit_file (exact string replacement) or write_file (new files).
- Run commands with shell and tests with run_tests; read failures carefully and fix the cause.
- Tool results may be truncated to fit the context; full outputs are saved at the path named in the \
notice, which you can page through with read_file or shell.
- When you have verified the result, call finish with a concise summary of what changed and how \
you checked it (status "failure" if you could not do the task, saying why).
- Old parts of a long session may be replaced by a summary; trust it and continue from it.

# Environment
- Workspace (the repository, your working directory): {workspace}
- Commands run in: {sandbox}
- Network access from commands: {network}
{git_note}{instructions}"""


def read_instruction_files(repo: Path) -> str:
    """The project's instruction files, in a stable order, bounded in size."""
    parts = []
    for name in INSTRUCTION_FILES:
        path = repo / name
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if len(text) > MAX_INSTRUCTION_CHARS:
                text = text[:MAX_INSTRUCTION_CHARS] + "\n[... truncated ...]"
            parts.append(f"## {name}\n{text.strip()}")
    if not parts:
        return ""
    return "\n# Project instructions (from the repository)\n" + "\n\n".join(parts) + "\n"


GIT_READ_ONLY_NOTE = (
    "- The repository's .git directory is read-only: use git to inspect history (status, diff, log, "
    "show, blame), but do not commit, stash or switch branches; your changes are checkpointed "
    "automatically and handed to the user at the end.\n"
)


def build_system_prompt(*, workspace: str, sandbox: str, network: bool, repo: Path,
                        git_read_only: bool = False) -> str:
    """Everything here is known before the sandbox starts (the session's first event is written
    before it does); the sandbox's operating system goes into the task message instead."""
    return SYSTEM_TEMPLATE.format(
        git_note=GIT_READ_ONLY_NOTE if git_read_only else "",
        workspace=workspace,
        sandbox=sandbox,
        network="on" if network else "off (installing packages from the internet will fail)",
        instructions=read_instruction_files(repo),
    )


def reconciled_notice(reconciled: object) -> str | None:
    """What reattaching to a sandbox with its own copy of the workspace brought back and sent in
    (``DockerSandbox.reconciled``: two reports with ``written``/``deleted``), for the agent."""
    if not reconciled:
        return None
    pulled, pushed = reconciled  # type: ignore[misc]
    parts = []

    def names(report: object) -> str:
        paths = list(getattr(report, "written", [])) + list(getattr(report, "deleted", []))
        return ", ".join(paths[:10]) + (" …" if len(paths) > 10 else "")

    if getattr(pulled, "changed", 0):
        parts.append(f"files changed in the sandbox after the last sync (an interrupted command's work) "
                     f"were brought back: {names(pulled)}")
    if getattr(pushed, "changed", 0):
        parts.append(f"files changed on this machine while the session was stopped were sent into the "
                     f"sandbox: {names(pushed)}")
    if not parts:
        return None
    return "[kimi-code] The sandbox was still there after the stop; " + "; ".join(parts) + "."


def task_message(task: str, os_release: str | None = None) -> str:
    text = f"# Task\n{task.strip()}"
    if os_release:
        text += f"\n\n(Commands run on {os_release}.)"
    return text


def continue_message(text: str) -> str:
    return f"# Additional instructions from the user\n{text.strip()}"


SANDBOX_LOST_NOTICE = (
    "[kimi-code] The session was resumed after a stop. The previous sandbox container is gone and a "
    "new one was started: files in the workspace are intact, but anything outside it (installed "
    "packages, files in /tmp, running processes, shell state such as cwd and environment variables) "
    "was lost. Reinstall what you need."
)
# Added when the sandbox held its own copy of the workspace (workspace = copy, a remote engine).
SANDBOX_COPY_RESTORED_NOTE = (
    " The workspace was copied in again from this machine's copy, which holds everything up to the "
    "end of the last command that returned; what an interrupted command changed in the old "
    "container is lost."
)
SHELL_RESET_NOTICE = (
    "[kimi-code] The session was resumed after a stop; the sandbox container was kept, but the shell "
    "was restarted: the working directory, environment variables and background processes are reset."
)


def drift_notice(paths: list[str]) -> str:
    shown = "\n".join(f"- {p}" for p in paths[:50])
    more = f"\n- ... and {len(paths) - 50} more" if len(paths) > 50 else ""
    return (
        "[kimi-code] While the session was stopped, these workspace files were changed outside the agent "
        f"(by the user or another program). Re-read them before editing:\n{shown}{more}"
    )


def rewind_notice(step: int) -> str:
    return (
        f"[kimi-code] The user rewound the session to the end of step {step}: the workspace files and the "
        "conversation are back to that point; everything done after it was undone."
    )


def limit_text(kind: str, value: float, limit: float) -> str:
    return f"{kind} limit reached ({value:g} of {limit:g})"
