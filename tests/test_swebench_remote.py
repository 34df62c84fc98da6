"""The SWE-bench runner on a second, real Docker engine that cannot see this machine's files
(tests/remote_engine.py): ``--docker-host tcp://127.0.0.1:PORT``. Environment builds, the per-task
install, the agent's sandbox (kimi-code's workspace = copy) and grading all happen there, with the
work trees copied in and out through the Engine API, never bind-mounted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from conftest import TEST_IMAGE  # noqa: E402
from swebench_fixtures import agent_tool_results, make_generated_task, make_tasks, write_jsonl  # noqa: E402
from test_swebench import CA, bench_env, run_bench  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _leftovers(engine) -> list[str]:
    names = []
    for label in ("kimi-code-bench.managed=1", "kimi-code.managed=1"):
        out = engine.docker("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}").stdout
        names += out.split()
    return names


def test_a_run_on_a_remote_engine_builds_runs_and_grades_there(tmp_path: Path, remote_engine) -> None:
    records = make_tasks(tmp_path / "repos")
    gen = make_generated_task(tmp_path / "repos", records)
    wrong = next(r for r in records if r["instance_id"] == "calc__calc-wrong")
    wrong["env_recipe"] = gen["env_recipe"]  # one environment for both tasks: one build
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [gen, wrong])
    args = ["run", str(tasks), "--model", "oracle", "--repos-dir", str(tmp_path / "repos"), "--image", TEST_IMAGE,
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "results.jsonl"),
            "--docker-host", remote_engine.url]
    if CA.is_file():
        args += ["--ca-bundle", str(CA)]
    env = bench_env(tmp_path)
    env.pop("DOCKER_HOST", None)  # the flag alone must send everything there
    proc = run_bench(args, tmp_path, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["instance_id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}

    # A bind mount would have given the build and the grader an empty /workspace on that engine.
    r = results["calc__calc-gen"]
    assert (r["status"], r["resolved"], r["fail_to_pass_failed"], r["pass_to_pass_failed"]) == (
        "resolved", True, [], []), r
    w = results["calc__calc-wrong"]
    assert (w["status"], w["resolved"], w["fail_to_pass_failed"]) == (
        "unresolved", False, ["tests/test_ops.py::test_add"]), w
    assert r["env_image"] == w["env_image"] and r["env_built"] != w["env_built"]
    assert remote_engine.docker("image", "inspect", r["env_image"]).returncode == 0  # built there

    # The agent's sandbox ran there in copy mode, and its checkout held the file the per-task
    # install generated (ignored by git, so kimi-code's copy does not carry it: the task image does).
    assert "workspace = copy" in (tmp_path / "work" / "tasks" / "calc__calc-gen" / "agent.log").read_text()
    runs = agent_tool_results(tmp_path / "state", "calc__calc-gen", "run_tests")
    assert runs and "1 passed" in runs[-1] and "ModuleNotFoundError" not in runs[-1], runs
    # The agent's patch came back to the host (predictions) through kimi-code's sync.
    preds = {p["instance_id"]: p for p in map(json.loads, (tmp_path / "results.predictions.jsonl").read_text().splitlines())}
    assert "+    return a + b" in preds["calc__calc-gen"]["model_patch"]

    assert _leftovers(remote_engine) == []
    tasks_images = remote_engine.docker("images", "--format", "{{.Repository}}", "kimi-code-bench-task").stdout
    assert tasks_images.split() == []  # each task's image is removed with the task


def test_a_remote_docker_host_from_the_environment_is_treated_as_remote(tmp_path: Path, remote_engine) -> None:
    """DOCKER_HOST=tcp://... without --docker-host: the same engine, so the same copying."""
    records = make_tasks(tmp_path / "repos")
    gen = make_generated_task(tmp_path / "repos", records)
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [gen])
    args = ["run", str(tasks), "--model", "oracle", "--repos-dir", str(tmp_path / "repos"), "--image", TEST_IMAGE,
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "results.jsonl")]
    if CA.is_file():
        args += ["--ca-bundle", str(CA)]
    env = {**bench_env(tmp_path), "DOCKER_HOST": remote_engine.url}
    proc = run_bench(args, tmp_path, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert (r["status"], r["resolved"]) == ("resolved", True), r
    runs = agent_tool_results(tmp_path / "state", "calc__calc-gen", "run_tests")
    assert runs and "1 passed" in runs[-1], runs
    assert _leftovers(remote_engine) == []
