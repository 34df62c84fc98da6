"""The SWE-bench harness (benchmarks/swebench): records, recipes, patch parsing, the oracle's edits,
grading, and end to end in Docker with the oracle driving the real agent loop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # benchmarks/ is not an installed package

from benchmarks.swebench import grading, logparse, repos  # noqa: E402
from benchmarks.swebench.errors import BenchError, EnvBuildError  # noqa: E402
from benchmarks.swebench.oracle import OraclePolicy, hunk_edits  # noqa: E402
from benchmarks.swebench import patches  # noqa: E402
from benchmarks.swebench.patches import parse_patch, touched_files  # noqa: E402
from benchmarks.swebench.recipes import RECIPES, recipe_for  # noqa: E402
from benchmarks.swebench.records import Task, load_tasks  # noqa: E402
from swebench_fixtures import (  # noqa: E402
    agent_tool_results, make_calc_repo, make_generated_task, make_tasks, write_jsonl)

CA = Path("/etc/ssl/certs/ca-certificates.crt")


def bench_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))}
    config = tmp_path / "empty-config.toml"  # isolates from the user's config; a missing one is an error
    if not config.exists():
        config.write_text("")
    env.update({"PYTHONPATH": str(ROOT), "KIMI_CODE_CONFIG": str(config),
                "KIMI_CODE_STATE_DIR": str(tmp_path / "state"), "KIMI_CODE_VERIFY_REPLAY": "1"})
    return env


def run_bench(args: list[str], tmp_path: Path, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchmarks.swebench", *args], cwd=ROOT,
                          env=env or bench_env(tmp_path), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def task_set(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    base = tmp_path_factory.mktemp("swebench")
    records = make_tasks(base / "repos")
    records.append(make_generated_task(base / "repos", records))
    return base / "repos", write_jsonl(base / "tasks.jsonl", records), records


# -- records and recipes -----------------------------------------------------------------------
def test_records_decode_json_encoded_test_lists_and_select_ids(task_set) -> None:
    _, path, _ = task_set
    tasks = load_tasks(path)
    assert [t.instance_id for t in tasks][:2] == ["calc__calc-1", "calc__calc-2"]
    assert tasks[0].fail_to_pass == ["tests/test_ops.py::test_add"]
    assert tasks[0].repo_dir_name == "kimi-test+calc"
    picked = load_tasks(path, ["calc__calc-wrong", "calc__calc-1"])
    assert [t.instance_id for t in picked] == ["calc__calc-1", "calc__calc-wrong"]  # file order
    with pytest.raises(BenchError, match="no instance nope"):
        load_tasks(path, ["nope"])


def test_records_reject_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instance_id": "x"}\n')
    with pytest.raises(BenchError, match="x: record lacks repo"):
        load_tasks(bad)
    bad.write_text("{not json\n")
    with pytest.raises(BenchError, match=r"bad.jsonl:1: not valid JSON"):
        load_tasks(bad)
    rec = {"instance_id": "y", "repo": "a/b", "base_commit": "0", "problem_statement": "", "patch": "",
           "test_patch": "", "FAIL_TO_PASS": "not a list", "PASS_TO_PASS": "[]", "version": "1"}
    with pytest.raises(BenchError, match="y: FAIL_TO_PASS is not a JSON list"):
        Task.from_record(rec)


def test_recipe_table_covers_the_required_repositories_and_overrides_change_the_hash() -> None:
    for repo in ("psf/requests", "marshmallow-code/marshmallow", "pallets/flask", "pydicom/pydicom",
                 "pvlib/pvlib-python", "sqlfluff/sqlfluff", "pylint-dev/astroid", "pytest-dev/pytest"):
        assert RECIPES[repo], repo
    assert recipe_for("pallets/flask", "2.3").python == "3.11"
    assert recipe_for("pydicom/pydicom", "1.4").python == "3.8"
    assert recipe_for("pytest-dev/pytest", "7.4").task_install  # _version.py is generated per checkout
    with pytest.raises(EnvBuildError, match="no install recipe for pyvista/pyvista 0.40.*known repositories"):
        recipe_for("pyvista/pyvista", "0.40")  # guessing would grade every such task unresolved
    # Every repository of SWE-bench Lite and Verified has recipes.
    lite_and_verified = {"astropy/astropy", "django/django", "matplotlib/matplotlib", "mwaskom/seaborn", "pallets/flask",
                         "psf/requests", "pydata/xarray", "pylint-dev/pylint", "pytest-dev/pytest",
                         "scikit-learn/scikit-learn", "sphinx-doc/sphinx", "sympy/sympy"}
    assert lite_and_verified <= set(RECIPES)
    for repo, version in (("pylint-dev/pylint", "2.15"), ("mwaskom/seaborn", "0.12"), ("astropy/astropy", "5.2"),
                          ("scikit-learn/scikit-learn", "1.3"), ("django/django", "4.2"), ("sympy/sympy", "1.12")):
        assert recipe_for(repo, version).python == "3.9" or repo == "django/django", repo
    with pytest.raises(EnvBuildError, match="no install recipe for django/django 1.0: add one to benchmarks/swebench/recipes.py or give the task an env_recipe$"):
        recipe_for("django/django", "1.0")  # a known repository, an unknown version
    assert recipe_for("unknown/repo", "1.0", {"install": "make"}).packages == ("pytest",)
    base = recipe_for("psf/requests", "2.0")
    changed = recipe_for("psf/requests", "2.0", {"packages": ["pytest", "httpbin"], "env": {"A": "1"}})
    assert changed.packages == ("pytest", "httpbin") and changed.env == (("A", "1"),)
    assert changed.to_json() != base.to_json()
    with pytest.raises(BenchError, match="unknown field"):
        recipe_for("psf/requests", "2.0", {"pip": ["x"]})


# -- patches, test output, oracle ------------------------------------------------------------
def test_patch_parsing_finds_new_files_and_test_directives(task_set) -> None:
    _, _, records = task_set
    files = parse_patch(records[1]["patch"])
    assert [(f.old_path, f.new_path) for f in files] == [(None, "calc/const.py"), ("calc/text.py", "calc/text.py")]
    assert [len(h.old) for h in files[1].hunks] == [1, 1]  # -U0: no context at all
    assert patches.test_directives(records[1]["test_patch"]) == ["tests/test_const.py", "tests/test_text.py"]
    assert touched_files("diff --git a/x.txt b/y.txt\nrename from x.txt\nrename to y.txt\n") == ["x.txt", "y.txt"]


def test_oracle_edits_are_unique_and_rebuild_the_gold_result(task_set, tmp_path: Path) -> None:
    repos_dir, _, records = task_set
    work = tmp_path / "w"
    subprocess.run(["git", "clone", "-q", str(repos_dir / "kimi-test+calc"), str(work)], check=True)
    text = (work / "calc/text.py").read_text()
    fp = parse_patch(records[1]["patch"])[1]
    edits, result = hunk_edits(text, fp)
    current = text
    for old, new in edits:  # what edit_file will see: each old string exactly once, in order
        assert current.count(old) == 1, old
        current = current.replace(old, new)
    subprocess.run(["git", "apply", "--unidiff-zero", "-"], cwd=work, input=records[1]["patch"], text=True, check=True)
    assert current == result == (work / "calc/text.py").read_text()
    policy = OraclePolicy(tmp_path / "w", records[0]["patch"], "pytest -rA tests/test_ops.py")
    names = [t.tool_calls[0].name for t in policy.turns]
    assert names == ["edit_file", "run_tests", "finish"]
    ids = [t.tool_calls[0].id for t in policy.turns]
    assert len(set(ids)) == len(ids)  # Kimi rejects a history with a repeated tool-call id
    assert all(t.reasoning for t in policy.turns)  # thinking mode requires reasoning on tool turns


LOGS = {
 "pytest": (
    "PASSED tests/t.py::test_a\n"
    "FAILED tests/t.py::test_b - assert [1] == [2]\n"
    "FAILED tests/t.py::test_c[x - y] - AssertionError: boom\n"
    "PASSED tests/t.py::test_d[1 2]\n"
    "XFAIL tests/t.py::test_e - known\n"
    "XPASS tests/t.py::test_x\n"
    "PASSED tests/t.py::test_f\n"
    "ERROR tests/t.py::test_f - teardown failed\n"
    "SKIPPED [1] tests/t.py:9: no network\n"
    "SKIPPED tests/t.py::test_g\n"
    "PASSED\n"),
 "options": (
    "PASSED tests/test_r.py::test_path[/tmp/abc/def/file.txt]\n"
    "PASSED tests/test_r.py::test_url[//host/x]\n"
    "FAILED tests/test_r.py::test_glob[/a/*.py] - boom\n"
    "PASSED tests/test_r.py::test_plain\n"),
 "v2": (
    "\x1b[32mPASSED\x1b[0m astropy/t.py::test_a[x y]\n"
    "FAILED astropy/t.py::test_b[1 - 2] - AssertionError\n"
    "astropy/t.py::test_old PASSED\n"
    "SKIPPED [2] astropy/t.py:3: why\n"),
 "matplotlib": "PASSED lib/t.py::test_click[MouseButton.LEFT]\nFAILED lib/t.py::test_r[MouseButton.RIGHT] - x\n",
 "seaborn": "tests/test_a.py::test_one PASSED [ 10%]\nFAILED tests/test_a.py::test_two - boom\nPASSED tests/test_a.py::test_three\n",
 "sympy": (
    "test_basic ok\n"
    "test_broken F\n"
    "test_error E\n"
    "________________ sympy/core/tests/test_basic.py:test_broken ________________\n"
    "  not a test ok\n"),
 "django": (
    "test_one (app.tests.T) ... ok\n"
    "test_two (app.tests.T) ... FAIL\n"
    "test_three (app.tests.T) ... ERROR\n"
    "test_four (app.tests.T) ... skipped 'no db'\n"
    "test_five (app.tests.T) ... printed something\n"
    "ok\n"
    "test_six (app.tests.T) ... System check identified no issues (0 silenced)\n"
    "ok\n"
    "FAIL: test_seven (app.tests.T)\n"
    "ERROR: test_eight (app.tests.U)\n"),
}

# What SWE-bench's parsers (swebench.harness.log_parsers.python, 5.0.2) give for LOGS: checked
# against that package once, pinned here. Note the cut ids: "test_c[x", "test_d[1".
PARSED = {
    "pytest": {"tests/t.py::test_a": "PASSED", "tests/t.py::test_b": "FAILED", "tests/t.py::test_c[x": "FAILED",
               "tests/t.py::test_d[1": "PASSED", "tests/t.py::test_e": "XFAIL", "tests/t.py::test_f": "ERROR",
               "tests/t.py::test_g": "SKIPPED"},
    "options": {"tests/test_r.py::test_path[/file.txt]": "PASSED", "tests/test_r.py::test_url[//host/x]": "PASSED",
                "tests/test_r.py::test_glob[/a/*.py]": "FAILED", "tests/test_r.py::test_plain": "PASSED"},
    "v2": {"astropy/t.py::test_a[x y]": "PASSED", "astropy/t.py::test_b[1": "FAILED", "astropy/t.py::test_old": "PASSED"},
    "matplotlib": {"lib/t.py::test_click[1]": "PASSED", "lib/t.py::test_r[3]": "FAILED"},
    "seaborn": {"tests/test_a.py::test_one": "PASSED", "tests/test_a.py::test_two": "FAILED",
                "tests/test_a.py::test_three": "PASSED"},
    "sympy": {"sympy/core/tests/test_basic.py:test_broken": "FAILED", "test_basic": "PASSED", "test_broken": "FAILED",
              "test_error": "ERROR"},
    "django": {"test_one (app.tests.T)": "PASSED", "test_two (app.tests.T)": "FAILED",
               "test_three (app.tests.T)": "ERROR", "test_four (app.tests.T)": "SKIPPED",
               "test_five (app.tests.T)": "PASSED", "test_six (app.tests.T)": "PASSED", "test_seven": "FAILED",
               "test_eight": "ERROR"},
}
PARSERS = {"pytest": logparse.pytest_plain, "options": logparse.pytest_options, "v2": logparse.pytest_v2,
           "matplotlib": logparse.matplotlib, "seaborn": logparse.seaborn, "sympy": logparse.sympy,
           "django": logparse.django}


@pytest.mark.parametrize("kind", sorted(PARSED))
def test_logs_parse_as_swebench_parses_them(kind: str) -> None:
    assert PARSERS[kind](LOGS[kind]) == PARSED[kind]


def test_django_ids_printed_by_python_311_match_the_datasets() -> None:
    """django 5's records hold the ids Python 3.11 prints, older versions' the ids of 3.6-3.9:
    a test printed by 3.11 is found under both."""
    log = ("test_empty (utils_tests.test_numberformat.TestNumberFormat.test_empty) ... ok\n"
           "test_b (a.B.test_other) ... FAIL\n")
    assert logparse.django(log) == {"test_empty (utils_tests.test_numberformat.TestNumberFormat)": "PASSED",
                                    "test_empty (utils_tests.test_numberformat.TestNumberFormat.test_empty)": "PASSED",
                                    "test_b (a.B.test_other)": "FAILED"}


def test_each_repository_gets_swebench_parser() -> None:
    assert logparse.parser_for("psf/requests") is logparse.pytest_options
    assert logparse.parser_for("django/django") is logparse.django
    assert logparse.parser_for("sympy/sympy") is logparse.sympy
    assert logparse.parser_for("scikit-learn/scikit-learn") is logparse.pytest_v2
    assert logparse.parser_for("someone/else") is logparse.pytest_plain
    assert len(logparse.BY_REPO) == 18


def test_judging_follows_swebench_rules() -> None:
    statuses = logparse.pytest_plain(LOGS["pytest"])
    # The dataset holds the cut id of a parametrised test with a space: it matches, so resolved.
    task = Task("i", "a/b", "0", "", "", "", ["tests/t.py::test_a", "tests/t.py::test_e"],
                ["tests/t.py::test_d[1", "tests/t.py::test_g"], "1", "0")
    assert grading.judge(task, statuses).resolved  # a skipped PASS_TO_PASS test is no regression
    f2p_skipped = Task("i", "a/b", "0", "", "", "", ["tests/t.py::test_g"], [], "1", "0")
    assert grading.judge(f2p_skipped, statuses).fail_to_pass_failed == ["tests/t.py::test_g"]
    task.pass_to_pass.append("tests/t.py::test_missing")  # absent from the output: failed
    graded = grading.judge(task, statuses)
    assert not graded.resolved and graded.pass_to_pass_failed == ["tests/t.py::test_missing"]
    xpass = Task("i", "a/b", "0", "", "", "", ["tests/t.py::test_x"], [], "1", "0")
    assert not grading.judge(xpass, statuses).resolved  # XPASS is not a result SWE-bench reads
    # A dataset id truncated inside its brackets matches the ids it starts, if they agree.
    cut = {"t.py::test_p[log(photon-1]": "PASSED", "t.py::test_p[log(photon-2]": "PASSED", "t.py::test_q[a-1]": "PASSED",
           "t.py::test_q[a-2]": "FAILED"}
    trunc = Task("i", "a/b", "0", "", "", "", ["t.py::test_p[log(photon"], ["t.py::test_q[a"], "1", "0")
    assert grading.judge(trunc, cut).fail_to_pass_failed == [] and grading.judge(trunc, cut).pass_to_pass_failed == [
        "t.py::test_q[a"]


def test_eval_tree_resets_test_files_the_agent_touched(task_set, tmp_path: Path) -> None:
    repos_dir, path, records = task_set
    task = load_tasks(path, ["calc__calc-1"])[0]
    mirror = repos_dir / "kimi-test+calc"
    cheat = ("diff --git a/tests/test_ops.py b/tests/test_ops.py\n--- a/tests/test_ops.py\n+++ b/tests/test_ops.py\n"
             "@@ -4,2 +4,2 @@ from calc.ops import add, mul\n def test_mul():\n-    assert mul(3, 4) == 12\n"
             "+    assert True\n")
    grading.prepare_eval_tree(mirror, task, records[0]["patch"] + cheat, tmp_path / "eval")
    test_file = (tmp_path / "eval/tests/test_ops.py").read_text()
    assert "assert mul(3, 4) == 12" in test_file and "def test_add" in test_file
    assert "return a + b" in (tmp_path / "eval/calc/ops.py").read_text()
    log = repos.git("log", "--oneline", "--all", cwd=tmp_path / "eval").stdout
    assert len(log.splitlines()) == 1  # the checkout holds no later history to peek at
    with pytest.raises(BenchError, match="agent's patch does not apply"):
        grading.prepare_eval_tree(mirror, task, cheat.replace("== 12", "== 13"), tmp_path / "eval2")


def test_summary_is_a_rich_table_on_a_terminal_and_plain_text_otherwise() -> None:
    import io

    from benchmarks.swebench.records import TaskResult
    from benchmarks.swebench.report import print_summary

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    results = [TaskResult("a__b-1", resolved=True, status="resolved", steps=4, cost=0.5, wall_time=3.0),
               TaskResult("a__b-2", status="env_error")]
    plain, tty = io.StringIO(), Tty()
    print_summary(results, plain)
    print_summary(results, tty)
    assert plain.getvalue().splitlines()[1].split() == ["a__b-1", "resolved", "yes", "4", "0", "0%", "$0.5000", "3.0s"]
    assert "resolved 1/2 (50%) · cost $0.5000" in plain.getvalue() and "│" not in plain.getvalue()
    assert "┃" in tty.getvalue() and "a__b-2" in tty.getvalue() and "resolved 1/2 (50%)" in tty.getvalue()


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_bench(["run", str(tmp_path / "missing.jsonl")], tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"]
    assert "Traceback" not in proc.stderr
    proc = run_bench(["run", str(tmp_path / "missing.jsonl"), "--env", "conda"], tmp_path, timeout=60)
    assert (proc.returncode, proc.stderr.strip()) == (2, "error: --env 'conda': use one of build, swebench-images")


def test_an_unreachable_docker_host_is_one_line(tmp_path: Path) -> None:
    records_path = write_jsonl(tmp_path / "t.jsonl", [{
        "instance_id": "a__b-1", "repo": "a/b", "base_commit": "0", "problem_statement": "", "patch": "",
        "test_patch": "", "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]", "version": "1", "env_recipe": {"install": "true"}}])
    proc = run_bench(["run", str(records_path), "--docker-host", "tcp://127.0.0.1:1", "--work-dir",
                      str(tmp_path / "w"), "--out", str(tmp_path / "o.jsonl")], tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot reach the Docker engine tcp://127.0.0.1:1")
    assert "Traceback" not in proc.stderr


# -- end to end: oracle mode in Docker -----------------------------------------------------------
def _bench_args(task_set, tmp_path: Path, *extra: str) -> list[str]:
    from conftest import TEST_IMAGE

    repos_dir, path, _ = task_set
    args = ["run", str(path), "--model", "oracle", "--repos-dir", str(repos_dir), "--image", TEST_IMAGE,
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "results.jsonl")]
    if CA.is_file():
        args += ["--ca-bundle", str(CA)]
    return args + list(extra)


def _results(tmp_path: Path) -> dict[str, dict]:
    return {r["instance_id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def oracle_run(task_set, tmp_path_factory):
    """All five tasks, two workers, once for the module (the environment image is built once per machine)."""
    from conftest import require_docker

    require_docker()
    tmp = tmp_path_factory.mktemp("oracle-run")
    # A user's own kimi-code configuration (a real key, another provider) must not reach the oracle's runs.
    config = tmp / "user-config.toml"
    config.write_text('provider = "openrouter"\napi_key = "sk-or-users-real-key-000000"\n')
    env = {**bench_env(tmp), "KIMI_CODE_CONFIG": str(config), "KIMI_CODE_API_KEY": "sk-users-real-key-0000000"}
    proc = run_bench(_bench_args(task_set, tmp, "--workers", "2"), tmp, env=env)
    yield proc, _results(tmp) if (tmp / "results.jsonl").exists() else {}
    _assert_no_leftover_containers(tmp)


def _assert_no_leftover_containers(under: Path) -> None:
    import docker

    client = docker.from_env()
    try:
        # This test run's own (other runs may be using the same engine at the same time).
        mine = [c.name for c in client.containers.list(all=True, filters={"label": "kimi-code-bench.managed=1"})
                if str((c.labels or {}).get("kimi-code-bench.work-dir", "")).startswith(str(under))]
        sandboxes = [c.name for c in client.containers.list(all=True, filters={"label": "kimi-code.managed=1"})
                     if str((c.labels or {}).get("kimi-code.workspace", "")).startswith(str(under))]
        assert not mine and not sandboxes, (mine, sandboxes)
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.slow
def test_oracle_resolves_valid_tasks(oracle_run) -> None:
    proc, results = oracle_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for iid, steps in (("calc__calc-1", 3), ("calc__calc-2", 5)):
        r = results[iid]
        assert (r["status"], r["resolved"], r["agent_status"], r["exit_code"]) == ("resolved", True, "success", 0), r
        assert r["steps"] == steps and r["fail_to_pass_failed"] == [] and r["pass_to_pass_failed"] == []
        assert r["tokens"]["prompt"] > 0 and 0 < r["cached_share"] < 1 and r["patch_lines"] > 0 and r["cost"] == 0
    # Non-TTY output is a plain table with the totals line.
    assert re.search(r"^calc__calc-2 +resolved +yes +5 ", proc.stdout, re.M) and "resolved 3/5 (60%)" in proc.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_files_the_checkout_install_generates_reach_the_agent_and_the_grader(oracle_run) -> None:
    """calc/_gen.py is generated into each checkout by the recipe's task_install and is ignored by
    git: the agent's own run_tests (in its sandbox) and the grading both see it."""
    proc, results = oracle_run
    r = results["calc__calc-gen"]
    assert (r["status"], r["resolved"], r["pass_to_pass_failed"]) == ("resolved", True, []), r
    state = Path(proc.args[proc.args.index("--work-dir") + 1]).parent / "state"
    runs = agent_tool_results(state, "calc__calc-gen", "run_tests")
    assert runs and "1 passed" in runs[-1] and "ModuleNotFoundError" not in runs[-1], runs


@pytest.mark.docker
@pytest.mark.slow
def test_predictions_file_follows_swebench_format(oracle_run, task_set, tmp_path: Path) -> None:
    """SWE-bench's documented predictions format: one JSON object per line with exactly
    instance_id, model_name_or_path and model_patch (a diff git can apply to the base commit)."""
    proc, results = oracle_run
    path = Path(proc.args[proc.args.index("--out") + 1]).with_name("results.predictions.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(p["instance_id"] for p in lines) == sorted(results)
    for pred in lines:
        assert set(pred) == {"instance_id", "model_name_or_path", "model_patch"}
        assert all(isinstance(v, str) for v in pred.values()) and pred["model_name_or_path"] == "kimi-code/oracle"
    repos_dir, _, records = task_set
    by_id = {p["instance_id"]: p for p in lines}
    gold = next(r for r in records if r["instance_id"] == "calc__calc-1")
    work = tmp_path / "apply"
    subprocess.run(["git", "clone", "-q", str(repos_dir / "kimi-test+calc"), str(work)], check=True)
    subprocess.run(["git", "checkout", "-q", gold["base_commit"]], cwd=work, check=True)
    subprocess.run(["git", "apply", "--check", "-"], cwd=work, input=by_id["calc__calc-1"]["model_patch"], text=True,
                   check=True)
    assert by_id["calc__calc-noenv"]["model_patch"] == ""  # no environment: nothing was done
    assert all(r["cost"] == 0 for r in results.values())  # the oracle costs nothing


@pytest.mark.docker
@pytest.mark.slow
def test_wrong_patch_is_graded_unresolved(oracle_run) -> None:
    proc, results = oracle_run
    r = results["calc__calc-wrong"]
    assert (r["status"], r["resolved"], r["agent_status"]) == ("unresolved", False, "success")
    assert r["fail_to_pass_failed"] == ["tests/test_ops.py::test_add"] and r["pass_to_pass_failed"] == []
    # One line says why, with the test log's path.
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("calc__calc-wrong: unresolved:"))
    assert "FAIL_TO_PASS failing: tests/test_ops.py::test_add" in line and line.endswith("tests.log)")


@pytest.mark.docker
@pytest.mark.slow
def test_unbuildable_environment_is_reported_not_fatal(oracle_run) -> None:
    proc, results = oracle_run
    r = results["calc__calc-noenv"]
    assert (r["status"], r["resolved"], r["steps"]) == ("env_error", False, 0)
    assert "exit 7" in r["error"] and "no such toolchain" in r["error"]
    log = Path(r["error"].rsplit("log: ", 1)[1])
    assert "no such toolchain" in log.read_text()
    work_dir = log.parent.parent
    assert not any((work_dir / "env-src").glob("*")), "a failed build must not leave its checkout behind"
    assert len(results) == 5  # the others ran
    assert "calc__calc-noenv: env_error" in proc.stderr
    # The build said where its log is as it began; off a terminal, each task ends with a progress line.
    assert f"(log: {log})" in proc.stderr and "building the environment for kimi-test/calc" in proc.stderr
    assert re.search(r"^\[calc__calc-\S+\] \w+ \(\d+\.\ds\) — done 5/5 · running 0 · queued 0 · resolved 3",
                     proc.stderr, re.M)


@pytest.mark.docker
def test_a_failed_environment_build_is_not_repeated_in_the_run(task_set, tmp_path: Path) -> None:
    """Every task of an environment whose build failed gets that failure at once: a build of
    minutes that fails the same way is not run again for each of its tasks."""
    from conftest import TEST_IMAGE

    from benchmarks.swebench import containers, environment
    from benchmarks.swebench.recipes import Recipe

    repos_dir, _, records = task_set
    recipe = Recipe(python=None, install=None, pre_install=(f"echo built-{tmp_path.name}; exit 7",))
    spec = environment.EnvSpec("kimi-test/calc", records[0]["environment_setup_commit"], recipe, TEST_IMAGE)
    engine = containers.Engine(containers.docker_client(None))
    mirror = repos_dir / "kimi-test+calc"
    notices: list[str] = []
    errors = []
    for _ in range(2):
        with pytest.raises(EnvBuildError) as info:
            environment.ensure_env_image(engine, spec, mirror=mirror, work_dir=tmp_path, ca_bundle=None,
                                         network=False, notice=notices.append)
        errors.append(str(info.value))
    assert len(notices) == 1, notices  # one build
    assert errors[0] == errors[1] and "exit 7" in errors[0] and "log: " in errors[0]
    assert f"built-{tmp_path.name}" in Path(errors[0].rsplit("log: ", 1)[1]).read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_environment_image_is_shared_and_reused(oracle_run, task_set, tmp_path: Path) -> None:
    _, results = oracle_run
    valid = [results[i] for i in ("calc__calc-1", "calc__calc-2", "calc__calc-wrong")]
    assert len({r["env_image"] for r in valid}) == 1 and valid[0]["env_image"].startswith("kimi-code-bench-env:")
    assert sum(r["env_built"] for r in valid) <= 1  # built at most once, by one of the workers
    # A later run reuses it. A budget the oracle cannot finish in is recorded as a limit, and the
    # work done before it (the one edit, which is the whole fix) is still graded.
    proc = run_bench(_bench_args(task_set, tmp_path, "--ids", "calc__calc-1", "--max-steps", "1"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = _results(tmp_path)["calc__calc-1"]
    assert r["env_built"] is False and r["env_image"] == valid[0]["env_image"]
    assert (r["status"], r["agent_status"], r["resolved"], r["steps"]) == ("limit", "limit", True, 1)
    _assert_no_leftover_containers(tmp_path)


def test_work_tree_diff_carries_the_agents_work_when_no_patch_was_written(tmp_path: Path) -> None:
    """A kimi-code killed at the harness timeout writes no --patch-out; its work is graded from the tree."""
    mirror, head = make_calc_repo(tmp_path / "repos")
    tree = repos.checkout(mirror, head, tmp_path / "tree")
    (tree / "calc" / "ops.py").write_text("def add(a, b):\n    return a + b\n")
    (tree / "calc" / "new.py").write_bytes(b"X = 1\n\x00binary\n")
    (tree / "calc" / "__pycache__").mkdir()
    (tree / "calc" / "__pycache__" / "ops.cpython-311.pyc").write_bytes(b"junk")  # ignored: not in the diff
    patch = repos.work_tree_diff(tree)
    assert "__pycache__" not in patch and "calc/new.py" in patch
    fresh = repos.checkout(mirror, head, tmp_path / "fresh")
    repos.apply_patch(fresh, patch, "agent's patch")
    assert (fresh / "calc" / "ops.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert (fresh / "calc" / "new.py").read_bytes() == b"X = 1\n\x00binary\n"


def test_oracle_edits_files_with_crlf_endings_and_unicode_line_separators() -> None:
    text = "a\r\nb\r\nc \u2028 d\r\n"
    patch = ("diff --git a/f.txt b/f.txt\n--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n"
             " a\r\n-b\r\n+B\r\n c \u2028 d\r\n")
    planned = hunk_edits(text, parse_patch(patch)[0])
    assert planned is not None, "the hunk must match a CRLF file read with its CRs"
    edits, result = planned
    assert result == "a\r\nB\r\nc \u2028 d\r\n"
    assert all(text.count(old) == 1 for old, _ in edits)


def test_checkout_carries_the_nearest_tag_and_nothing_later(tmp_path: Path) -> None:
    """setuptools_scm and versioneer read `git describe`: a depth-1 checkout without tags gives
    0.1.dev1 (pytest's minversion then refuses to start); later history stays out of reach."""
    src = tmp_path / "src"
    src.mkdir()
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    commits = []
    for i, tag in enumerate(["v1.0", "v1.1", None, "v2.0"]):
        (src / "f.txt").write_text(f"{i}\n")
        subprocess.run(["git", *repos.GIT_ID, "-C", str(src), "add", "."], check=True)
        subprocess.run(["git", *repos.GIT_ID, "-C", str(src), "commit", "-qm", f"c{i}"], check=True)
        commits.append(subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                      check=True).stdout.strip())
        if tag:
            subprocess.run(["git", "-C", str(src), "tag", tag], check=True)
    dest = repos.checkout(src, commits[2], tmp_path / "co")
    describe = subprocess.run(["git", "-C", str(dest), "describe", "--tags"], capture_output=True, text=True)
    assert describe.stdout.strip() == "v1.1"
    assert subprocess.run(["git", "-C", str(dest), "tag"], capture_output=True, text=True).stdout.split() == ["v1.1"]
    assert subprocess.run(["git", "-C", str(dest), "cat-file", "-e", commits[3]]).returncode != 0
    untagged = tmp_path / "plain"
    subprocess.run(["git", "init", "-q", str(untagged)], check=True)
    (untagged / "a").write_text("a\n")
    subprocess.run(["git", *repos.GIT_ID, "-C", str(untagged), "add", "."], check=True)
    subprocess.run(["git", *repos.GIT_ID, "-C", str(untagged), "commit", "-qm", "a"], check=True)
    head = subprocess.run(["git", "-C", str(untagged), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert subprocess.run(["git", "-C", str(repos.checkout(untagged, head, tmp_path / "co2")), "tag"],
                          capture_output=True, text=True).stdout == ""


def test_recipe_env_applies_during_the_build_and_checkouts_are_reinstalled() -> None:
    from benchmarks.swebench.environment import build_script
    from benchmarks.swebench.recipes import REINSTALL, Recipe

    recipe = Recipe(packages=("pytest",), pre_install=("echo pre",), env=(("SETUPTOOLS_SCM_PRETEND_VERSION", "7.4.0"),))
    script = build_script(recipe, ca=False)
    export = script.index("export SETUPTOOLS_SCM_PRETEND_VERSION=7.4.0")
    assert export < script.index("echo pre") and export < script.index("pip install -e .")
    # An editable install is repeated offline in each checkout, best effort; a recipe's own
    # task_install replaces it and must succeed; no editable install, nothing to repeat.
    assert recipe.checkout_install == (REINSTALL, False)
    # That offline re-install builds without isolation: the project's build requirements are in the env.
    assert "build-system" in script and script.index("pip install pytest") < script.index("/tmp/build-requires.txt")
    assert "-c /tmp/kimi-bench-constraints.txt" in script  # held to the recipe's pins
    assert "build-requires" not in build_script(Recipe(task_install="make gen"), ca=False)
    # Both build without isolation: a setuptools with PEP 660 editable installs, whatever the venv had.
    for r in (recipe, Recipe(task_install="make gen")):
        assert '--upgrade "setuptools<70"' in build_script(r, ca=False)
    assert "setuptools<70" not in build_script(Recipe(install="python -m pip install ."), ca=False)
    assert Recipe(task_install="make gen").checkout_install == ("make gen", True)
    assert Recipe(install="python -m pip install .").checkout_install is None
    task = Task("i", "a/b", "0", "", "", "diff --git a/tests/t.py b/tests/t.py\n--- a/tests/t.py\n+++ b/tests/t.py\n"
                "@@ -1 +1 @@\n-x\n+y\n", [], [], "1", "0")
    best_effort = grading.test_script(recipe, task)
    assert REINSTALL in best_effort and "KIMI-BENCH-INSTALL-FAILED" not in best_effort
    assert "KIMI-BENCH-INSTALL-FAILED" in grading.test_script(Recipe(task_install="make gen"), task)


def test_recipes_for_conda_and_tox_repositories_are_pip_only() -> None:
    """matplotlib, xarray and sphinx use conda or tox in SWE-bench's specs: here pip, with what
    those gave (system freetype/qhull for matplotlib, tox's pytest invocation for sphinx)."""
    mpl = recipe_for("matplotlib/matplotlib", "3.5")
    assert dict(mpl.env)["MPLSETUPCFG"].startswith("/etc/")  # outside the checkout: each re-install uses it
    assert any("libfreetype6-dev" in c and "libqhull-dev" in c for c in mpl.pre_install)
    assert mpl.checkout_install is not None  # editable: each checkout rebuilds its extensions
    assert 'python -m pip install --no-build-isolation -e ".[dev]"' in recipe_for("matplotlib/matplotlib", "3.8").install
    assert dict(mpl.env)["XDG_CACHE_HOME"].startswith("/opt/kimi-bench/")  # the download cache, for every re-install


    xarray = recipe_for("pydata/xarray", "0.12")
    assert xarray.python == "3.10" and "numpy==1.23.0" in xarray.packages and "conda" not in xarray.to_json()
    sphinx = recipe_for("sphinx-doc/sphinx", "3.5")
    assert sphinx.test_cmd == "python -X dev -m pytest -rA --durations 25" and "tox" not in sphinx.to_json()
    assert dict(sphinx.env)["PYTHONWARNINGS"].startswith("all,")
    assert any("Jinja2<3.0" in c for c in sphinx.pre_install)
    assert not any("Jinja2<3.0" in c for c in recipe_for("sphinx-doc/sphinx", "7.1").pre_install)
    assert recipe_for("sphinx-doc/sphinx", "8.1").python == "3.10"
    assert logparse.parser_for("sphinx-doc/sphinx") is logparse.pytest_v2
    old = recipe_for("scikit-learn/scikit-learn", "0.20")
    assert old.python == "3.6" and "cython<3" in old.packages and "--no-build-isolation" in (old.install or "")


@pytest.mark.parametrize("download_works", [True, False])
def test_matplotlib_builds_with_its_own_freetype_when_it_can_download_it(tmp_path: Path, download_works: bool) -> None:
    """The build tries matplotlib's own FreeType download first (what its image tests are drawn
    with, as in SWE-bench); when that fails it builds against Debian's and says so."""
    mpl = recipe_for("matplotlib/matplotlib", "3.6")
    cfg = dict(mpl.env)["MPLSETUPCFG"]
    fake_pip = tmp_path / "pip-install"
    # Stands in for the editable install: without network, only a system-FreeType build succeeds.
    fake_pip.write_text(f"#!/bin/sh\necho built >> {tmp_path}/builds\n"
                        + ("exit 0\n" if download_works else f"grep -q 'system_freetype = True' {tmp_path}/cfg\n"))
    fake_pip.chmod(0o755)
    script = "set -euo pipefail\n" + mpl.install.replace(cfg, str(tmp_path / "cfg")).replace(
        "python -m pip install -e .", str(fake_pip))
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "cfg").read_text()
    assert "system_qhull = True" in text
    assert ("system_freetype" in text) is not download_works
    assert (tmp_path / "builds").read_text().count("built") == (1 if download_works else 2)
    assert ("could not be downloaded" in proc.stdout) is not download_works


def test_django_and_sympy_run_their_own_runners() -> None:
    patch = ("diff --git a/tests/auth_tests/test_validators.py b/tests/auth_tests/test_validators.py\n"
             "--- a/tests/auth_tests/test_validators.py\n+++ b/tests/auth_tests/test_validators.py\n@@ -1 +1 @@\n-a\n+b\n"
             "diff --git a/docs/x.txt b/docs/x.txt\n--- a/docs/x.txt\n+++ b/docs/x.txt\n@@ -1 +1 @@\n-a\n+b\n")
    assert patches.test_directives(patch, "django/django") == ["auth_tests.test_validators"]
    assert patches.test_directives(patch) == ["tests/auth_tests/test_validators.py"]
    django = recipe_for("django/django", "3.0")
    task = Task("django__django-1", "django/django", "0", "", "", patch, [], [], "3.0", "0")
    assert grading.test_script(django, task).splitlines()[-1] == (
        "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 auth_tests.test_validators")
    assert ("LANG", "C.UTF-8") in django.env and "tests/requirements/py3.txt" in django.requirements
    sympy = recipe_for("sympy/sympy", "1.12")
    assert sympy.test_cmd.endswith("bin/test -C --verbose") and logparse.parser_for("sympy/sympy") is logparse.sympy


def test_python_versions_map_to_images_and_a_failed_python_download_is_named(tmp_path: Path) -> None:
    from benchmarks.swebench.environment import PYTHON_FETCH_FAILED, build_script
    from benchmarks.swebench.runner import RunConfig, parse_python_images

    images = parse_python_images(["3.9=python:3.9-bookworm", "3.11 = my/py311"])
    assert images == {"3.9": "python:3.9-bookworm", "3.11": "my/py311"}
    cfg = RunConfig(work_dir=tmp_path, python_images=images)
    assert cfg.base_image(recipe_for("psf/requests", "2.0")) == "python:3.9-bookworm"  # python 3.9
    assert cfg.base_image(recipe_for("pallets/flask", "2.3")) == "my/py311"
    assert cfg.base_image(recipe_for("pydicom/pydicom", "1.4")) == cfg.image  # 3.8: not mapped
    with pytest.raises(BenchError, match="expected VERSION=IMAGE"):
        parse_python_images(["python:3.9"])
    script = build_script(recipe_for("pydicom/pydicom", "1.4"), ca=False)
    assert f'{PYTHON_FETCH_FAILED} $want' in script and "exit 92" in script
    proc = run_bench(["run", str(tmp_path / "t.jsonl"), "--python-image", "3.9"], tmp_path, timeout=60)
    assert proc.returncode == 2 and "expected VERSION=IMAGE" in proc.stderr


def test_progress_line_counts_and_estimates() -> None:
    import io

    from benchmarks.swebench.progress import Progress
    from benchmarks.swebench.records import TaskResult

    out = io.StringIO()
    progress = Progress(4, workers=2, stream=out)
    tasks = [Task(f"t{i}", "a/b", "0", "", "", "", [], [], "1", "0") for i in range(4)]
    progress.start(tasks[0])
    progress.start(tasks[1])
    assert progress.line() == "done 0/4 · running 2 · queued 2 · resolved 0 · cost $0.00"
    progress.finish(TaskResult("t0", resolved=True, status="resolved", cost=0.25, wall_time=1.0))
    assert progress.line().startswith("done 1/4 · running 1 · queued 2 · resolved 1 · cost $0.25 · ETA ")
    assert out.getvalue().startswith("[t0] resolved (1.0s) — done 1/4")
    progress.notice("a notice")
    assert out.getvalue().endswith("a notice\n")
