"""shell and run_tests: commands in the sandbox's persistent shell."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass

from kimi_code.sandbox.errors import SandboxError
from kimi_code.sandbox.base import ExecResult

from .paths import PathError, WorkspacePath, open_read, workspace_root
from .types import ToolContext, ToolError, ToolResult
from .testparse import TestSummary, parse_test_output

# Test suites run longer than ordinary commands: run_tests waits at least this long by default.
MIN_TEST_TIMEOUT = 600.0
TAIL_LINES = 60
TAIL_CHARS = 6000


def _exec(ctx: ToolContext, command: str, timeout: float) -> ExecResult:
    try:
        return ctx.sandbox.exec(command, timeout)
    except SandboxError as exc:
        raise ToolError(f"the sandbox failed to run the command: {exc}") from None


def _notes(res: ExecResult, timeout: float) -> list[str]:
    notes = []
    if res.timed_out:
        notes.append(f"timed out after {timeout:g} s and was stopped; run long jobs in the background "
                     "(`cmd > log 2>&1 &`) or pass a larger timeout")
    if res.truncated:
        where = f"; the full output is in the sandbox at {res.full_output_path}" if res.full_output_path else ""
        notes.append(f"output cut in the middle{where} (look at it with head/tail/grep)")
    # What a restart kept is the sandbox's to say (a restarted container keeps installed packages,
    # a recreated one does not), and it says it in res.notes: a sentence added here could
    # contradict it. Only a backend that gave no note at all gets a generic, always-true one.
    if not res.notes:
        if res.sandbox_restarted:
            notes.append("the sandbox was restarted: every process running in it was stopped")
        elif res.shell_restarted:
            notes.append("the shell was restarted: exported variables, functions and an activated "
                         "virtualenv from earlier commands are gone")
    notes.extend(res.notes)
    return notes


def _exec_metadata(res: ExecResult, command: str) -> dict:
    return {
        "command": command, "exit_code": res.exit_code, "duration": round(res.duration, 3),
        "timed_out": res.timed_out, "truncated": res.truncated, "full_output_path": res.full_output_path,
        "shell_restarted": res.shell_restarted, "sandbox_restarted": res.sandbox_restarted,
    }


def shell(ctx: ToolContext, command: str, timeout: float | None = None) -> ToolResult:
    """Run a bash command in the sandbox (Linux; it starts in the workspace directory).

    The shell is persistent: the working directory, exported variables and an activated
    virtualenv carry over to the next call. stdin is closed, so interactive programs get EOF;
    stdout and stderr come back interleaved, long output cut in the middle. Use read_file,
    edit_file and search for files rather than cat/sed/grep.

    Args:
        command: the command line, run by bash.
        timeout: seconds before the command is stopped (default: the configured command timeout).
    """
    if not command.strip():
        raise ToolError("command is empty")
    if timeout is not None and timeout <= 0:
        raise ToolError("timeout must be a positive number of seconds")
    limit = timeout or ctx.command_timeout
    res = _exec(ctx, command, limit)
    output = res.output.rstrip("\n")
    parts = [output if output else "(no output)"]
    parts.append(f"[exit code {res.exit_code} · {res.duration:.1f} s]")
    parts += [f"[{note}]" for note in _notes(res, limit)]
    return ToolResult("\n".join(parts), is_error=res.timed_out, metadata=_exec_metadata(res, command))


# -- run_tests ----------------------------------------------------------------------------------


@dataclass
class TestCommand:
    command: str
    source: str  # argument | config | AGENTS.md | detected
    why: str = ""
    framework: str | None = None  # parser hint

    __test__ = False


def _read_text(ctx: ToolContext, rel: str, limit: int = 1 << 20) -> str | None:
    try:
        root = workspace_root(ctx.workspace)
        with open_read(WorkspacePath(root, rel, rel)) as f:
            return f.read(limit).decode("utf-8", "replace")
    except (PathError, OSError):
        return None


_AGENTS_INLINE = re.compile(
    r"^\s*(?:[-*]\s+)?(?:\*\*|__)?(?:to\s+)?(?:run(?:ning)?\s+)?(?:the\s+|all\s+)?(?:unit\s+)?tests?"
    r"(?:\s+(?:command|suite))?(?:\*\*|__)?\s*(?::|with|using)\s*(?:\*\*|__)?\s*`([^`\n]+)`",
    re.IGNORECASE,
)


def command_from_agents_md(text: str) -> str | None:
    """The test command documented in AGENTS.md, by either common convention:

    a line such as ``Test command: `make check` `` (or ``- Run tests with `pytest -q` ``), or the
    first fenced code block under a heading that mentions tests.
    """
    lines = text.splitlines()
    for line in lines:
        m = _AGENTS_INLINE.match(line)
        if m:
            return m.group(1).strip()
    in_test_section = False
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            in_test_section = bool(re.search(r"\btest", heading.group(1), re.IGNORECASE))
        elif in_test_section and re.match(r"^\s*(```|~~~)", line):
            fence = line.strip()[:3]
            block: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                block.append(lines[i])
                i += 1
            commands = [ln.strip().removeprefix("$ ").strip() for ln in block]
            commands = [c for c in commands if c and not c.startswith("#")]
            if commands:
                return " && ".join(commands)
        i += 1
    return None


def _python_project_hint(ctx: ToolContext) -> tuple[bool, str] | None:
    """(has pytest configuration, why) for a Python project with tests; None otherwise."""
    root = workspace_root(ctx.workspace)
    if (root / "pytest.ini").is_file():
        return True, "pytest.ini"
    pyproject = _read_text(ctx, "pyproject.toml")
    if pyproject:
        try:
            data = tomllib.loads(pyproject)
        except tomllib.TOMLDecodeError:
            data = {}
        if "pytest" in data.get("tool", {}):
            return True, "[tool.pytest] in pyproject.toml"
    for name, section in (("setup.cfg", "[tool:pytest]"), ("tox.ini", "[pytest]")):
        text = _read_text(ctx, name)
        if text and section in text:
            return True, f"{section} in {name}"
    for conftest in ("conftest.py", "tests/conftest.py", "test/conftest.py"):
        if (root / conftest).is_file():
            return True, conftest
    for folder in (root, root / "tests", root / "test"):
        if folder.is_dir() and not folder.is_symlink():
            for entry in folder.iterdir():
                if entry.suffix == ".py" and (entry.name.startswith("test") or entry.name.endswith("_test.py")):
                    return False, f"Python test files in {folder.relative_to(root).as_posix() or '.'}"
    return None


def _probe_python(ctx: ToolContext) -> tuple[str, bool]:
    """(python executable, whether it can import pytest) inside the sandbox."""
    probe = ("for p in python python3; do if command -v $p >/dev/null 2>&1; then "
             "if $p -c 'import pytest' >/dev/null 2>&1; then echo \"$p yes\"; else echo \"$p no\"; fi; "
             "break; fi; done")
    try:
        res = ctx.sandbox.exec(probe, 30)
    except SandboxError:
        return "python3", False
    words = res.output.split()
    if len(words) >= 2:
        return words[-2], words[-1] == "yes"
    return "python3", False


def detect_test_command(ctx: ToolContext) -> TestCommand | None:
    """A test command from the project's files: pytest, unittest, npm test, go, cargo, make."""
    root = workspace_root(ctx.workspace)
    py = _python_project_hint(ctx)
    if py is not None:
        has_config, why = py
        python, has_pytest = _probe_python(ctx)
        if has_config or has_pytest:
            return TestCommand(f"{python} -m pytest -rfE", "detected", why, "pytest")
        tests = root / "tests"
        start = " -s tests" if tests.is_dir() and not (tests / "__init__.py").exists() else ""
        return TestCommand(f"{python} -m unittest discover{start}", "detected",
                           why + " (pytest is not installed)", "unittest")
    package = _read_text(ctx, "package.json")
    if package:
        try:
            script = (json.loads(package).get("scripts") or {}).get("test")
        except (ValueError, AttributeError):
            script = None
        if isinstance(script, str) and script.strip() and "no test specified" not in script:
            hint = ("jest" if "jest" in script else "mocha" if "mocha" in script
                    else "node:test" if "--test" in script else None)
            return TestCommand("npm test", "detected", f"scripts.test in package.json: {script}", hint)
    if (root / "go.mod").is_file():
        return TestCommand("go test ./...", "detected", "go.mod", "go")
    if (root / "Cargo.toml").is_file():
        return TestCommand("cargo test", "detected", "Cargo.toml", "cargo")
    for name in ("Makefile", "makefile", "GNUmakefile"):
        text = _read_text(ctx, name)
        if text and re.search(r"^test\s*:", text, re.MULTILINE):
            return TestCommand("make test", "detected", f"a test target in {name}")
    return None


def resolve_test_command(ctx: ToolContext, command: str | None) -> TestCommand | None:
    if command and command.strip():
        return TestCommand(command.strip(), "argument")
    if ctx.test_command:
        return TestCommand(ctx.test_command, "config")
    agents = _read_text(ctx, "AGENTS.md")
    if agents:
        found = command_from_agents_md(agents)
        if found:
            return TestCommand(found, "AGENTS.md")
    return detect_test_command(ctx)


def _framework_hint(command: str) -> str | None:
    for word, name in (("pytest", "pytest"), ("unittest", "unittest"), ("jest", "jest"),
                       ("mocha", "mocha"), ("go test", "go"), ("cargo test", "cargo"),
                       ("node --test", "node:test")):
        if word in command:
            return name
    return None


def _tail(output: str) -> str:
    lines = output.rstrip("\n").split("\n")[-TAIL_LINES:]
    text = "\n".join(lines)
    return text[-TAIL_CHARS:]


def _workspace_in_sandbox(ctx: ToolContext) -> str | None:
    try:
        return ctx.sandbox.info().workspace
    except Exception:
        return None


def run_tests(ctx: ToolContext, command: str | None = None, timeout: float | None = None) -> ToolResult:
    """Run the project's tests from the workspace root and summarise the result.

    Without a command it uses the configured test command, else the one documented in AGENTS.md,
    else one detected from the project (pytest, unittest, npm test, go test ./..., cargo test,
    make test). Returns passed/failed/errors/skipped counts, the failing test ids and their
    trimmed failure output.

    Args:
        command: test command to run instead, e.g. `pytest tests/test_api.py -x` to run a subset.
        timeout: seconds before the run is stopped (default: the command timeout, at least 600).
    """
    if timeout is not None and timeout <= 0:
        raise ToolError("timeout must be a positive number of seconds")
    chosen = resolve_test_command(ctx, command)
    if chosen is None:
        raise ToolError("No test command found: pass command=..., set test_command in the config, or "
                        "document it in AGENTS.md (e.g. a line `Test command: `pytest -q``).")
    limit = timeout or max(ctx.command_timeout, MIN_TEST_TIMEOUT)
    where = _workspace_in_sandbox(ctx)
    # A subshell keeps the persistent shell's directory and variables as they were.
    wrapped = f"(cd {shlex.quote(where)} && {chosen.command}\n)" if where else f"({chosen.command}\n)"
    res = _exec(ctx, wrapped, limit)
    summary = parse_test_output(res.output, chosen.framework or _framework_hint(chosen.command))
    text = _render(chosen, res, summary, limit)
    metadata = _exec_metadata(res, chosen.command)
    metadata.update(tests=summary.to_dict(), source=chosen.source)
    return ToolResult(text, is_error=res.timed_out, metadata=metadata)


def _render(chosen: TestCommand, res: ExecResult, s: TestSummary, limit: float) -> str:
    origin = {"argument": "given", "config": "from the config", "AGENTS.md": "from AGENTS.md"}.get(
        chosen.source, f"detected: {chosen.why}" if chosen.why else "detected")
    lines = []
    if s.parsed:
        passed = res.exit_code == 0 and s.failed == 0 and s.errors == 0 and not res.timed_out
        state = "PASSED" if passed else "FAILED"
        extra = "; ".join(s.notes)
        lines.append(f"Tests {state}: {s.counts()} ({s.framework}{'; ' + extra if extra else ''})")
        if not passed and s.failed == 0 and s.errors == 0 and not res.timed_out:
            lines.append(f"No test failed, but the command exited with code {res.exit_code}.")
    else:
        lines.append(f"No test summary recognised in the output (exit code {res.exit_code}).")
    lines.append(f"Command: {chosen.command} ({origin}); exit code {res.exit_code}, {res.duration:.1f} s")
    lines += [f"[{note}]" for note in _notes(res, limit)]
    if s.failing:
        lines.append("Failing tests:")
        lines += [f"  {t}" for t in s.failing]
    if s.failures:
        lines.append("Failure output (trimmed):")
        lines.append(s.failures)
    elif not s.parsed or (res.exit_code != 0 and not s.failing):
        lines.append("Last lines of output:")
        lines.append(_tail(res.output) or "(no output)")
    return "\n".join(lines)
