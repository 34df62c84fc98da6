"""Grading the way SWE-bench does: the agent's diff on a fresh checkout, the test files of
``test_patch`` reset to the base commit and the test patch applied, the test command run on those
files, and the task resolved only if every FAIL_TO_PASS and PASS_TO_PASS test passes.

Per-test statuses come from the test log, read by the repository's SWE-bench parser (logparse.py),
and are judged by SWE-bench's rules: a FAIL_TO_PASS test must pass (PASSED or XFAIL), a
PASS_TO_PASS test must pass or be skipped, and a test missing from the log has failed; a dataset id
cut inside its parameters (SWE-bench issue 290) matches the ids it starts, when they agree.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import containers, logparse, repos
from .errors import BenchError
from .patches import test_directives, touched_files
from .recipes import Recipe
from .records import Task

@dataclass
class Grade:
    resolved: bool
    status: str  # resolved | unresolved | patch_failed | error
    fail_to_pass_failed: list[str] = field(default_factory=list)
    pass_to_pass_failed: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    detail: str | None = None


PASSING = ("PASSED", "XFAIL")


def _lookup(test: str, statuses: dict[str, str]) -> str | None:
    """The status of ``test``: its own, or, for an id cut inside its brackets, that of the ids it
    starts when they all pass or all fail (SWE-bench's fallback for its truncated ids)."""
    if test in statuses:
        return statuses[test]
    if test.count("[") > test.count("]"):
        found = [status for name, status in statuses.items() if name.startswith(test)]
        if found and len({status in PASSING for status in found}) == 1:
            return found[0]
    return None


def judge(task: Task, statuses: dict[str, str]) -> Grade:
    """Resolved iff every FAIL_TO_PASS test passes and every PASS_TO_PASS test passes or is skipped."""
    f2p = [t for t in task.fail_to_pass if _lookup(t, statuses) not in PASSING]
    p2p = [t for t in task.pass_to_pass if _lookup(t, statuses) not in (*PASSING, "SKIPPED")]
    ok = not f2p and not p2p
    return Grade(ok, "resolved" if ok else "unresolved", f2p, p2p, statuses)


def test_script(recipe: Recipe, task: Task) -> str:
    """The shell script run in the environment image over the graded checkout."""
    files = " ".join(shlex.quote(f) for f in test_directives(task.test_patch, task.repo))
    lines = ["cd /workspace"]
    install = recipe.checkout_install
    if install is not None:
        command, required = install
        failed = ("{ cat /tmp/task-install.log; echo KIMI-BENCH-INSTALL-FAILED; exit 91; }" if required
                  else "echo 'kimi-bench: the offline re-install failed; the image install is used' >&2")
        lines.append(f"{{ {command} ; }} > /tmp/task-install.log 2>&1 || {failed}")
    lines.append(f"{recipe.test_cmd} {files}")
    return "\n".join(lines) + "\n"


def reset_test_files_script(task: Task) -> str:
    """Shell lines putting the files ``test_patch`` touches back as they are at the base commit
    (removed when the base commit has no such file), as SWE-bench's eval script does."""
    lines = []
    for path in touched_files(task.test_patch):
        p = shlex.quote(path)
        lines.append(f"git checkout -q {shlex.quote(task.base_commit)} -- {p} 2>/dev/null || rm -f -- {p}")
    return "\n".join(lines)


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


def grade(engine: containers.Engine, task: Task, recipe: Recipe, image: str, mirror: Path, model_patch: str, dest: Path,
          *, timeout: float = 1800) -> tuple[Grade, str]:
    """Grade ``model_patch``; returns the grade and the test log."""
    try:
        prepare_eval_tree(mirror, task, model_patch, dest)
    except BenchError as exc:
        status = "patch_failed" if "agent's patch" in str(exc) else "error"
        return Grade(False, status, list(task.fail_to_pass), list(task.pass_to_pass), detail=str(exc)), ""
    run = containers.run_and_remove(engine, image, test_script(recipe, task), workspace=dest, network=False,
                                    user=containers.owner_of(dest), timeout=timeout, name_hint="grade")
    if run.timed_out:
        return Grade(False, "error", list(task.fail_to_pass), list(task.pass_to_pass),
                     detail=f"the tests did not finish within {timeout:g}s"), run.output
    if "KIMI-BENCH-INSTALL-FAILED" in run.output:
        return Grade(False, "error", list(task.fail_to_pass), list(task.pass_to_pass),
                     detail="task_install failed before the tests"), run.output
    result = judge(task, logparse.parser_for(task.repo)(run.output))
    if not result.statuses:
        result.detail = f"no test results in the output (exit {run.exit_code})"
    return result, run.output
