"""Small SWE-bench-format tasks built from git repositories the tests create.

Commits are made with fixed dates and authors, so the repositories (and the environment image tag,
which hashes the setup commit) are the same on every run: the image is built once per machine.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

REPO = "kimi-test/calc"
FIXED = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
         "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}
# pytest from PyPI; the package installed editable (its .pth points at /workspace).
RECIPE = {"python": None, "packages": ["pytest"], "install": "python -m pip install -e ."}

BASE_FILES = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
                      '[project]\nname = "calc"\nversion = "0.1"\n\n[tool.setuptools]\npackages = ["calc"]\n',
    # calc/_gen.py: generated into each checkout by calc__calc-gen's task_install, and ignored.
    ".gitignore": "*.egg-info/\n__pycache__/\nbuild/\ncalc/_gen.py\n",
    "calc/__init__.py": "",
    "calc/ops.py": (
        "def add(a, b):\n"
        "    return a - b\n"
        "\n\n"
        "def mul(a, b):\n"
        "    return a * b\n"
    ),
    "calc/text.py": (
        # Two identical bodies: an edit of the second must carry context to be unique.
        "def shout(s):\n"
        "    s = s.strip()\n"
        "    return s\n"
        "\n\n"
        "def whisper(s):\n"
        "    s = s.strip()\n"
        "    return s\n"
    ),
    "tests/test_ops.py": (
        "from calc.ops import add, mul\n"
        "\n\n"
        "def test_mul():\n"
        "    assert mul(3, 4) == 12\n"
    ),
    # Run only by calc__calc-gen (its test patch touches it): needs the generated calc/_gen.py.
    "tests/test_gen.py": (
        "def test_gen_base():\n"
        "    from calc._gen import BASE\n"
        "    assert BASE == 2\n"
    ),
    "tests/test_text.py": (
        "from calc.text import shout\n"
        "\n\n"
        "def test_shout_strips():\n"
        "    assert shout('  ') == ''\n"
    ),
}


def git(repo: Path, *args: str, input: str | None = None) -> str:
    env = {**os.environ, **FIXED}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env,
                          input=input).stdout


def _write(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        f = repo / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)


def _diff_of(repo: Path, files: dict[str, str], context: int = 3) -> str:
    """The patch that turns HEAD into HEAD + ``files`` (computed in the work tree, then undone)."""
    _write(repo, files)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", f"-U{context}", "HEAD")
    git(repo, "reset", "-q", "--hard", "HEAD")
    git(repo, "clean", "-qfd")
    return patch


def make_calc_repo(repos_dir: Path) -> tuple[Path, str]:
    """repos_dir/kimi-test+calc with one commit; returns (path, base commit)."""
    repo = repos_dir / REPO.replace("/", "+")
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    _write(repo, BASE_FILES)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "calc")
    return repo, git(repo, "rev-parse", "HEAD").strip()


def record(iid: str, base: str, patch: str, test_patch: str, f2p: list[str], p2p: list[str],
           problem: str, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"instance_id": iid, "repo": REPO, "base_commit": base, "environment_setup_commit": base,
            "version": "0.1", "problem_statement": problem, "patch": patch, "test_patch": test_patch,
            "FAIL_TO_PASS": json.dumps(f2p), "PASS_TO_PASS": json.dumps(p2p), "hints_text": "",
            "created_at": "2024-01-01T00:00:00Z", "env_recipe": recipe if recipe is not None else dict(RECIPE)}


def make_tasks(repos_dir: Path) -> list[dict[str, Any]]:
    """Four tasks: two valid ones, the first with a wrong patch, and one whose environment cannot build."""
    repo, base = make_calc_repo(repos_dir)
    ops, text, test_ops, test_text = (BASE_FILES[k] for k in ("calc/ops.py", "calc/text.py", "tests/test_ops.py",
                                                                "tests/test_text.py"))
    add_fix = _diff_of(repo, {"calc/ops.py": ops.replace("return a - b", "return a + b")})
    add_tests = _diff_of(repo, {"tests/test_ops.py": test_ops + "\n\ndef test_add():\n    assert add(2, 3) == 5\n"})
    wrong_fix = _diff_of(repo, {"calc/ops.py": ops.replace("return a - b", "return a * b")})
    # whisper lowercases, shout uppercases; a new helper module too (write_file). Without context
    # lines (-U0) each hunk's text occurs twice: the oracle must widen it to make edit_file unique.
    text_fix = _diff_of(repo, {
        "calc/text.py": text.replace("    s = s.strip()\n    return s\n\n\ndef whisper",
                                     "    s = s.strip()\n    return s.upper()\n\n\ndef whisper")
                            .replace("def whisper(s):\n    s = s.strip()\n    return s\n",
                                     "def whisper(s):\n    s = s.strip()\n    return s.lower()\n"),
        "calc/const.py": "LOUD = True\n",
    }, context=0)
    text_tests = _diff_of(repo, {
        "tests/test_text.py": test_text.replace("from calc.text import shout\n", "from calc.text import shout, whisper\n")
        + "\n\ndef test_shout_upper():\n    assert shout('a') == 'A'\n"
          "\n\ndef test_whisper_lower():\n    assert whisper(' B ') == 'b'\n",
        "tests/test_const.py": "from calc.const import LOUD\n\n\ndef test_loud():\n    assert LOUD\n",
    })
    ops_f2p, ops_p2p = ["tests/test_ops.py::test_add"], ["tests/test_ops.py::test_mul"]
    text_f2p = ["tests/test_text.py::test_shout_upper", "tests/test_text.py::test_whisper_lower",
                "tests/test_const.py::test_loud"]
    return [
        record("calc__calc-1", base, add_fix, add_tests, ops_f2p, ops_p2p, "add(2, 3) returns -1 instead of 5."),
        record("calc__calc-2", base, text_fix, text_tests, text_f2p, ["tests/test_text.py::test_shout_strips"],
               "shout() should upper-case its result, whisper() lower-case it; also add calc.const.LOUD = True."),
        record("calc__calc-wrong", base, wrong_fix, add_tests, ops_f2p, ops_p2p, "add(2, 3) returns -1."),
        record("calc__calc-noenv", base, add_fix, add_tests, ops_f2p, ops_p2p, "add is broken.",
               recipe={**RECIPE, "pre_install": ["echo 'no such toolchain' >&2; exit 7"]}),
    ]


def make_generated_task(repos_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A task whose tests import a module the recipe's task_install generates into each checkout
    (an ignored file, as an editable install's egg-info is): it must be there for the agent's own
    test run too, on any engine. Needs ``make_tasks`` to have made the repository."""
    repo = repos_dir / REPO.replace("/", "+")
    base = records[0]["base_commit"]
    gen_test = _diff_of(repo, {"tests/test_gen.py": BASE_FILES["tests/test_gen.py"] + "\n\ndef test_gen_add():\n"
                               "    from calc._gen import BASE\n    from calc.ops import add\n\n"
                               "    assert add(BASE, 3) == 5\n"})
    recipe = {**RECIPE, "task_install": "printf 'BASE = 2\\n' > calc/_gen.py"}
    return record("calc__calc-gen", base, records[0]["patch"], gen_test, ["tests/test_gen.py::test_gen_add"],
                  ["tests/test_gen.py::test_gen_base"], "add(2, 3) returns -1 instead of 5.", recipe=recipe)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def agent_tool_results(state_dir: Path, instance_id: str, tool: str) -> list[str]:
    """What ``tool`` returned to the agent in the kimi-code sessions of one task (read from the
    sessions' event logs under ``state_dir``): the agent's own view inside its sandbox."""
    out: list[str] = []
    for events in sorted(state_dir.rglob("events.jsonl")):
        text = events.read_text(encoding="utf-8")
        if f"/tasks/{instance_id}/repo" not in text:
            continue
        for line in text.splitlines():
            event = json.loads(line)
            data = event.get("data") or event.get("payload") or event
            if event.get("type") == "tool_result" and data.get("name") == tool:
                out.append(str(data.get("content")))
    return out


def agent_sessions(state_dir: Path, instance_id: str) -> list[dict[str, Any]]:
    """The ``session_started`` payloads of one task's kimi-code sessions (repo, workspace, ...)."""
    out = []
    for events in sorted(state_dir.rglob("events.jsonl")):
        first = json.loads(events.read_text(encoding="utf-8").splitlines()[0])
        payload = first.get("payload") or {}
        if first.get("type") == "session_started" and f"/tasks/{instance_id}/repo" in str(payload.get("repo")):
            out.append(payload)
    return out
