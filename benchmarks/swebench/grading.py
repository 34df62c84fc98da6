"""Grading the way SWE-bench does: the agent's diff on a fresh checkout, the test files of
``test_patch`` reset to the base commit and the test patch applied, the test command run on those
files, and the task resolved only if every FAIL_TO_PASS and PASS_TO_PASS test passes.

Per-test statuses come from pytest's ``-rA`` short summary (``PASSED tests/x.py::t``, ``FAILED
tests/x.py::t - msg``...); a test missing from the output counts as failed, as in SWE-bench.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import containers, repos
from .errors import BenchError
from .patches import test_directives, touched_files
from .recipes import Recipe
from .records import Task

STATUSES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
PASSING = ("PASSED", "XFAIL")
_LINE = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\s+(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _test_id(rest: str) -> str:
    """The test id at the start of a summary line's rest. A parametrized id may hold spaces (and
    " - ") inside its brackets; the failure message comes after the bracket that closes them."""
    rest = rest.strip()
    head = rest.split(" ", 1)[0]
    if "[" not in head:
        return head
    depth = 0
    for i in range(rest.index("["), len(rest)):
        depth += rest[i] == "["
        depth -= rest[i] == "]"
        if depth == 0:
            return rest[: i + 1]
    return head


def parse_pytest_rA(output: str) -> dict[str, str]:
    """Test id -> status from pytest -rA output (the last status wins: ERROR at teardown after PASSED)."""
    statuses: dict[str, str] = {}
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        m = _LINE.match(line)
        if not m:
            continue
        status, rest = m.groups()
        if status == "SKIPPED" and rest.startswith("["):  # "SKIPPED [1] file:12: reason"
            continue
        test = _test_id(rest)
        if not test:
            continue
        if statuses.get(test) in ("FAILED", "ERROR") and status == "PASSED":
            continue
        statuses[test] = status
    return statuses


@dataclass
class Grade:
    resolved: bool
    status: str  # resolved | unresolved | patch_failed | error
    fail_to_pass_failed: list[str] = field(default_factory=list)
    pass_to_pass_failed: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


def judge(task: Task, statuses: dict[str, str]) -> Grade:
    """Resolved iff all FAIL_TO_PASS and all PASS_TO_PASS tests pass (PASSED or XFAIL)."""
    f2p = [t for t in task.fail_to_pass if statuses.get(t) not in PASSING]
    p2p = [t for t in task.pass_to_pass if statuses.get(t) not in PASSING]
    ok = not f2p and not p2p
    return Grade(ok, "resolved" if ok else "unresolved", f2p, p2p, statuses)


def test_script(recipe: Recipe, task: Task) -> str:
    """The shell script run in the environment image over the graded checkout."""
    files = " ".join(shlex.quote(f) for f in test_directives(task.test_patch))
    lines = ["cd /workspace"]
    if recipe.task_install:
        lines.append(f"{{ {recipe.task_install} ; }} > /tmp/task-install.log 2>&1 || "
                     "{ cat /tmp/task-install.log; echo KIMI-BENCH-INSTALL-FAILED; exit 91; }")
    lines.append(f"{recipe.test_cmd} {files}")
    return "\n".join(lines) + "\n"


def prepare_eval_tree(mirror: Path, task: Task, model_patch: str, dest: Path) -> None:
    """A fresh checkout with the model's patch, the test files reset, and the test patch applied."""
    repos.checkout(mirror, task.base_commit, dest)
    repos.apply_patch(dest, model_patch, "agent's patch")
    for path in touched_files(task.test_patch):
        at_base = repos.git("cat-file", "-e", f"HEAD:{path}", cwd=dest, check=False).returncode == 0
        if at_base:
            repos.git("checkout", "-q", "HEAD", "--", path, cwd=dest)
        else:
            (dest / path).unlink(missing_ok=True)
    try:
        repos.apply_patch(dest, task.test_patch, "test patch")
    except BenchError as exc:
        raise BenchError(f"{exc} (the task record is inconsistent)") from None


def grade(client: Any, task: Task, recipe: Recipe, image: str, mirror: Path, model_patch: str, dest: Path,
          *, timeout: float = 1800) -> tuple[Grade, str]:
    """Grade ``model_patch``; returns the grade and the test log."""
    try:
        prepare_eval_tree(mirror, task, model_patch, dest)
    except BenchError as exc:
        status = "patch_failed" if "agent's patch" in str(exc) else "error"
        return Grade(False, status, list(task.fail_to_pass), list(task.pass_to_pass), detail=str(exc)), ""
    run = containers.run_and_remove(client, image, test_script(recipe, task), workspace=dest, network=False,
                                    user=containers.owner_of(dest), timeout=timeout, name_hint="grade")
    if run.timed_out:
        return Grade(False, "error", list(task.fail_to_pass), list(task.pass_to_pass),
                     detail=f"the tests did not finish within {timeout:g}s"), run.output
    if "KIMI-BENCH-INSTALL-FAILED" in run.output:
        return Grade(False, "error", list(task.fail_to_pass), list(task.pass_to_pass),
                     detail="task_install failed before the tests"), run.output
    result = judge(task, parse_pytest_rA(run.output))
    if not result.statuses:
        result.detail = f"no test results in the output (exit {run.exit_code})"
    return result, run.output
