"""Which tool calls an interactive session asks about, and what the user is shown.

``--approval auto`` (the default) never asks; ``edits`` asks before a call that may change
something (writes, tests, a shell command that is not plainly read-only); ``all`` asks before
every call. This module decides and describes; the terminal question itself is agent/interactive.py's,
and the loop's ``approve`` hook turns a refusal into the call's result (agent/loop.py), so the log
and the model both know the call never ran. Headless runs never get here.
"""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("auto", "edits", "all")
# Calls that change only the session's own bookkeeping: never worth a question in `edits`.
BOOKKEEPING = frozenset({"todo", "finish"})
PREVIEW_LINES = 80

# Programs that only read, and the arguments that would make them write or run something else.
_READ_ONLY_PROGRAMS = frozenset({
    "ls", "cat", "head", "tail", "wc", "grep", "egrep", "fgrep", "rg", "pwd", "echo", "printf", "tree",
    "file", "stat", "which", "type", "du", "df", "sort", "cut", "diff", "cmp", "basename", "dirname",
    "realpath", "readlink", "nl", "tr", "true", "false", "test", "[", "cd", "md5sum", "sha256sum", "find", "git",
})
_WRITING_ARGS = {
    "find": ("-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"),
    "sort": ("-o", "--output"),
    "tree": ("-o",),
    "rg": ("--pre",),
}
_GIT_READ_ONLY = frozenset({"status", "diff", "log", "show", "blame", "ls-files", "ls-tree", "rev-parse",
                            "grep", "describe", "shortlog", "cat-file"})
_OPERATORS = frozenset({"|", "||", "&&", ";", ";;"})
_HARMLESS_REDIRECTS = frozenset({"2>&1", ">&2", "1>&2", "2>/dev/null", ">/dev/null", "&>/dev/null"})


def shell_is_read_only(command: str) -> bool:
    """Whether a shell command plainly only reads: every part of a pipeline or list is a known
    reading program without writing options, with no output redirection and no substitution.
    Conservative: anything it does not recognise needs approval."""
    if any(bad in command for bad in ("`", "$(", "<(", ">(")):
        return False
    try:
        lexer = shlex.shlex(command.replace("\n", " ; "), posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
    except ValueError:
        return False
    segments: list[list[str]] = [[]]
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _OPERATORS:
            segments.append([])
        elif set(token) <= set("<>&") and token:
            # A redirection: only the harmless ones (joined with their target) are let through.
            target = tokens[i + 1] if i + 1 < len(tokens) else ""
            joined = (segments[-1].pop() if segments[-1] and segments[-1][-1].isdigit() else "") + token + target
            if joined not in _HARMLESS_REDIRECTS and token != "<":
                return False
            i += 1
        else:
            segments[-1].append(token)
        i += 1
    for words in segments:
        while words and "=" in words[0] and not words[0].startswith("="):
            words = words[1:]  # VAR=value before the program
        if not words:
            continue
        program, args = words[0], words[1:]
        if program not in _READ_ONLY_PROGRAMS:
            return False
        if any(a == bad or a.startswith(bad + "=") for a in args for bad in _WRITING_ARGS.get(program, ())):
            return False
        if program == "git" and not _git_reads(args):
            return False
    return True


def _git_reads(args: list[str]) -> bool:
    while args and args[0] in ("--no-pager", "-C", "-P"):
        args = args[2:] if args[0] == "-C" else args[1:]
    return bool(args) and args[0] in _GIT_READ_ONLY and not any(a.startswith("--output") for a in args)


def needs_approval(mode: str, name: str, arguments: str, read_only: bool) -> bool:
    """Whether ``mode`` asks before this call (``read_only``: the registry's classification)."""
    if mode == "all":
        return True
    if mode != "edits" or read_only or name in BOOKKEEPING:
        return False
    if name == "shell":
        command = _arguments(arguments).get("command")
        return not (isinstance(command, str) and shell_is_read_only(command))
    return True


def refusal_text(name: str, reason: str = "") -> str:
    """The result the model reads for a refused call."""
    text = (f"[kimi-code] The user refused this {name} call: it did not run, and nothing changed. "
            "Do not repeat it as is; find another way or ask the user in your reply.")
    return text + (f" The user said: {reason.strip()}" if reason.strip() else "")


STOPPED_TEXT = "[kimi-code] The user stopped the turn at the approval of this call: it did not run."


def preview(name: str, arguments: str, workspace: Path) -> str:
    """What the user is shown before answering: the diff for an edit or a write, the command for
    shell and run_tests, the arguments for anything else."""
    args = _arguments(arguments)
    if name == "shell" and isinstance(args.get("command"), str):
        return f"$ {args['command']}"
    if name == "run_tests":
        return f"$ {args.get('command') or '(the project test command)'}"
    if name in ("edit_file", "write_file") and isinstance(args.get("path"), str):
        try:
            return _edit_preview(name, args, workspace)
        except Exception as exc:  # noqa: BLE001 - a preview must never break the question
            return f"{name} {args['path']} (no preview: {exc})"
    text = json.dumps(args, ensure_ascii=False, indent=2) if args else arguments
    return f"{name} {_clip(text, 2000)}"


def _edit_preview(name: str, args: dict[str, Any], workspace: Path) -> str:
    from kimi_code.tools.paths import PathError, PathNotFound, read_bytes, resolve_for_write

    path = args["path"]
    try:
        wp = resolve_for_write(workspace, path)
    except PathError as exc:
        return f"{name} {path}: {exc} (the call will fail)"
    rel = wp.rel
    try:
        old = read_bytes(wp).decode("utf-8", "replace")
    except PathNotFound as exc:
        if name == "edit_file":
            return f"edit_file {rel}: {exc} (the call will fail)"
        old = ""  # a new file
    if name == "write_file":
        new = str(args.get("content", ""))
    else:
        before, after = str(args.get("old_string", "")), str(args.get("new_string", ""))
        if not before or before not in old:
            return f"edit_file {rel}: old_string is not in the file (the call will fail)\n{_clip(before, 1000)}"
        new = old.replace(before, after) if args.get("replace_all") else old.replace(before, after, 1)
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{rel}", f"b/{rel}", lineterm="", n=3))
    if not lines:
        return f"{name} {rel}: no change"
    if len(lines) > PREVIEW_LINES:
        lines = lines[:PREVIEW_LINES] + [f"… ({len(lines) - PREVIEW_LINES} more diff lines)"]
    return "\n".join(lines)


def _arguments(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + "…"


# An answer to one question: "yes", "no" (with what the user said, if anything), "always" (this
# tool, for the rest of this chat) or "stop" (Ctrl-C: refuse and end the turn).
Answer = tuple[str, str]


@dataclass
class Approvals:
    """One chat's approval policy and what the user answered "always" to."""

    mode: str
    ask: Callable[[str, str], Answer]  # (tool name, preview) -> answer
    workspace: Path
    always: set[str] = field(default_factory=set)
    stop: Callable[[], None] = lambda: None  # ends the turn (the loop's StopSignals.request_stop)

    def decide(self, name: str, arguments: str, read_only: bool) -> str | None:
        """None: run the call; else the text of its refusal."""
        if name in self.always or not needs_approval(self.mode, name, arguments, read_only):
            return None
        answer, reason = self.ask(name, preview(name, arguments, self.workspace))
        if answer == "always":
            self.always.add(name)
            return None
        if answer == "yes":
            return None
        if answer == "stop":
            self.stop()
            return STOPPED_TEXT
        return refusal_text(name, reason)
