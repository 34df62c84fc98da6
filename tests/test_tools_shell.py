"""shell and run_tests through real sandboxes: LocalSandbox for the fast cases, Docker for the rest."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimi_code.sandbox.local import LocalSandbox
from kimi_code.tools.builtin import default_registry
from kimi_code.tools.registry import ToolContext, ToolResult
from kimi_code.tools.shell import command_from_agents_md, resolve_test_command

VENV_BIN = str(Path(sys.executable).parent)  # has python with pytest
BARE_PATH = "/usr/bin:/bin"  # python3 without pytest, no `python`

PYTEST_PROJECT = {
    "calc.py": "def add(a, b):\n    return a + b + (a == 2)\n",
    "tests/test_calc.py": textwrap.dedent("""\
        from calc import add

        def test_one():
            assert add(1, 1) == 2

        def test_two():
            assert add(2, 2) == 4

        def test_three():
            assert add(0, 3) == 3
    """),
}

UNITTEST_PROJECT = {
    "calc.py": "def add(a, b):\n    return a + b + (a == 2)\n",
    "tests/test_calc.py": textwrap.dedent("""\
        import unittest
        from calc import add

        class TestAdd(unittest.TestCase):
            def test_one(self):
                self.assertEqual(add(1, 1), 2)

            def test_two(self):
                self.assertEqual(add(2, 2), 4)

            @unittest.skip("later")
            def test_skip(self):
                pass
    """),
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def call(ctx: ToolContext, name: str, **args: object) -> ToolResult:
    return default_registry().run(name, json.dumps(args), ctx)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[ToolContext, LocalSandbox]]:
    ws = tmp_path / "ws"
    ws.mkdir()
    sandbox = LocalSandbox(f"test-{uuid.uuid4().hex[:8]}", ws, env={"PATH": f"{VENV_BIN}:{BARE_PATH}"})
    sandbox.start()
    yield ToolContext(workspace=ws, sandbox=sandbox, command_timeout=30), sandbox
    sandbox.stop()


def bare_local(tmp_path: Path) -> LocalSandbox:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    sandbox = LocalSandbox(f"test-{uuid.uuid4().hex[:8]}", ws, env={"PATH": BARE_PATH})
    sandbox.start()
    return sandbox


# -- shell --------------------------------------------------------------------------------------


def test_shell_output_exit_code_and_persistence(local: tuple[ToolContext, LocalSandbox]) -> None:
    ctx, _ = local
    res = call(ctx, "shell", command="echo hello; echo oops >&2; exit 3")
    assert not res.is_error  # a failing command is a result, not a tool error
    lines = res.text.split("\n")
    assert lines[:2] == ["hello", "oops"] and lines[2].startswith("[exit code 3 · ")
    assert res.metadata["exit_code"] == 3 and res.metadata["command"].startswith("echo hello")
    assert res.metadata["duration"] >= 0 and res.metadata["timed_out"] is False
    call(ctx, "shell", command="mkdir -p sub && cd sub && export GREETING=hi")
    res = call(ctx, "shell", command='pwd; echo "$GREETING"')
    assert res.text.split("\n")[:2] == [str(ctx.workspace / "sub"), "hi"]
    res = call(ctx, "shell", command="true")
    assert res.text.startswith("(no output)\n[exit code 0")
    assert call(ctx, "shell", command="   ").is_error
    assert call(ctx, "shell", command="true", timeout=-1).is_error


def test_shell_timeout_is_reported(local: tuple[ToolContext, LocalSandbox]) -> None:
    ctx, _ = local
    res = call(ctx, "shell", command="echo started; sleep 20", timeout=1)
    assert res.is_error and res.metadata["timed_out"] is True
    assert "started" in res.text and "timed out after 1 s" in res.text
    assert res.metadata["duration"] < 15
    assert call(ctx, "shell", command="echo alive").text.startswith("alive")


def test_shell_and_file_tools_see_the_same_files(local: tuple[ToolContext, LocalSandbox]) -> None:
    ctx, _ = local
    call(ctx, "shell", command="printf 'from shell\\n' > made.txt")
    assert "     1\tfrom shell" in call(ctx, "read_file", path="made.txt").text
    call(ctx, "write_file", path="from_tool.txt", content="from tool\n")
    assert call(ctx, "shell", command="cat from_tool.txt").text.startswith("from tool")


# -- run_tests: choosing the command ------------------------------------------------------------


def test_agents_md_conventions() -> None:
    assert command_from_agents_md("# Dev\n\nTest command: `make check`\n") == "make check"
    assert command_from_agents_md("- Run tests with `pytest -q tests/unit`\n") == "pytest -q tests/unit"
    assert command_from_agents_md("**Tests:** `npm run test:ci`\n") == "npm run test:ci"
    fenced = "# Project\n\n```bash\nmake build\n```\n\n## Running the tests\n\n```sh\n$ pip install -e .\n# quick\npytest -x\n```\n"
    assert command_from_agents_md(fenced) == "pip install -e . && pytest -x"
    assert command_from_agents_md("# Notes\nUse tabs.\n```\nls\n```\n") is None


def test_command_resolution_order(tmp_path: Path) -> None:
    ctx = ToolContext(workspace=tmp_path, sandbox=None)  # type: ignore[arg-type]
    (tmp_path / "go.mod").write_text("module x\n")
    assert (resolve_test_command(ctx, None).command, resolve_test_command(ctx, None).source) == (
        "go test ./...", "detected")
    (tmp_path / "AGENTS.md").write_text("Test command: `go test -race ./...`\n")
    assert resolve_test_command(ctx, None).command == "go test -race ./..."
    assert resolve_test_command(ctx, None).source == "AGENTS.md"
    ctx.test_command = "make ci"
    assert (resolve_test_command(ctx, None).command, resolve_test_command(ctx, None).source) == (
        "make ci", "config")
    assert resolve_test_command(ctx, "go test ./pkg").source == "argument"


@pytest.mark.parametrize("files,expected", [
    ({"package.json": '{"scripts": {"test": "jest --ci"}}'}, "npm test"),
    ({"package.json": '{"scripts": {"test": "echo \\"Error: no test specified\\" && exit 1"}}',
      "Makefile": "all:\n\ttrue\ntest: all\n\t./run\n"}, "make test"),
    ({"Cargo.toml": "[package]\nname='x'\n"}, "cargo test"),
    ({"go.mod": "module x\n", "Cargo.toml": ""}, "go test ./..."),
])
def test_detection_without_python(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    write(tmp_path, files)
    ctx = ToolContext(workspace=tmp_path, sandbox=None)  # type: ignore[arg-type]
    assert resolve_test_command(ctx, None).command == expected


def test_python_detection_probes_the_sandbox(tmp_path: Path) -> None:
    write(tmp_path / "ws", UNITTEST_PROJECT)
    sandbox = bare_local(tmp_path)
    try:
        ctx = ToolContext(workspace=tmp_path / "ws", sandbox=sandbox)
        chosen = resolve_test_command(ctx, None)
        assert chosen.command == "python3 -m unittest discover -s tests" and chosen.framework == "unittest"
        (tmp_path / "ws" / "pytest.ini").write_text("[pytest]\n")
        assert resolve_test_command(ctx, None).command == "python3 -m pytest -rfE"
    finally:
        sandbox.stop()


# -- run_tests: running -------------------------------------------------------------------------


def test_run_tests_pytest_project(local: tuple[ToolContext, LocalSandbox]) -> None:
    ctx, _ = local
    write(ctx.workspace, PYTEST_PROJECT)
    call(ctx, "shell", command="mkdir -p elsewhere && cd elsewhere")
    res = call(ctx, "run_tests")
    assert not res.is_error, res.text
    assert res.text.startswith("Tests FAILED: 2 passed, 1 failed, 0 errors, 0 skipped (pytest)")
    assert "Command: python -m pytest -rfE (detected: Python test files in tests)" in res.text
    assert "Failing tests:\n  tests/test_calc.py::test_two" in res.text
    assert "assert 5 == 4" in res.text
    tests = res.metadata["tests"]
    assert (tests["passed"], tests["failed"], tests["failing"]) == (2, 1, ["tests/test_calc.py::test_two"])
    assert res.metadata["source"] == "detected" and res.metadata["exit_code"] == 1
    # The tests ran from the workspace root, and the shell stayed where it was.
    assert call(ctx, "shell", command="pwd").text.startswith(str(ctx.workspace / "elsewhere"))
    res = call(ctx, "run_tests", command="python -m pytest tests/test_calc.py -k 'one or three'")
    assert res.text.startswith("Tests PASSED: 2 passed, 0 failed") and res.metadata["source"] == "argument"


def test_run_tests_unrecognised_output_and_missing_command(local: tuple[ToolContext, LocalSandbox]) -> None:
    ctx, _ = local
    res = call(ctx, "run_tests")
    assert res.is_error and "No test command found" in res.text
    res = call(ctx, "run_tests", command="echo compiling; echo 'fatal: linker exploded'; exit 2")
    assert not res.is_error
    assert res.text.startswith("No test summary recognised in the output (exit code 2).")
    assert "Last lines of output:\ncompiling\nfatal: linker exploded" in res.text
    assert res.metadata["tests"]["parsed"] is False


# -- through the real Docker sandbox ------------------------------------------------------------


@pytest.mark.docker
def test_shell_in_docker(docker_sandbox_factory, tmp_path: Path) -> None:
    ws = tmp_path / "dws"
    ws.mkdir()
    sandbox = docker_sandbox_factory(ws)
    ctx = ToolContext(workspace=ws, sandbox=sandbox, command_timeout=30)
    res = call(ctx, "shell", command="cd /workspace && echo \"$(id -u) $(pwd)\"; uname -s; exit 7")
    assert res.text.split("\n")[1] == "Linux" and "/workspace" in res.text
    assert res.metadata["exit_code"] == 7 and not res.is_error
    call(ctx, "write_file", path="notes/a.txt", content="written on the host side\n")
    assert call(ctx, "shell", command="cat /workspace/notes/a.txt").text.startswith("written on the host side")
    call(ctx, "shell", command="echo 'from the container' > /workspace/b.txt")
    assert "     1\tfrom the container" in call(ctx, "read_file", path="/workspace/b.txt").text
    res = call(ctx, "shell", command="sleep 30", timeout=1)
    assert res.is_error and res.metadata["timed_out"] and "timed out" in res.text


@pytest.mark.docker
def test_run_tests_in_docker_unittest_project(docker_sandbox_factory, tmp_path: Path) -> None:
    ws = tmp_path / "dws"
    ws.mkdir()
    write(ws, UNITTEST_PROJECT)
    sandbox = docker_sandbox_factory(ws)
    ctx = ToolContext(workspace=ws, sandbox=sandbox, command_timeout=60)
    res = call(ctx, "run_tests")
    assert not res.is_error, res.text
    assert res.metadata["command"] == "python3 -m unittest discover -s tests"  # the image has no pytest
    assert res.text.startswith("Tests FAILED: 1 passed, 1 failed, 0 errors, 1 skipped (unittest)")
    assert res.metadata["tests"]["failing"] == ["test_calc.TestAdd.test_two"]
    assert "AssertionError: 5 != 4" in res.text
    (ws / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    res = call(ctx, "run_tests")
    assert res.text.startswith("Tests PASSED: 2 passed, 0 failed, 0 errors, 1 skipped"), res.text
    assert res.metadata["exit_code"] == 0
