"""``--env swebench-images`` with images in SWE-bench's layout, built here from the offline test
image without network: the repository installed at /testbed (a .pth in the env's site-packages),
an env at /opt/miniconda3/envs/testbed with pytest, activated as SWE-bench's eval script does
(``source /opt/miniconda3/bin/activate && conda activate testbed``; the image's activate script
is a small stand-in for conda's, as the offline image has no conda), and a build product in
/testbed that git ignores (calc/_gen.py), as egg-info and compiled extensions are in the real
images. Named as SWE-bench names them, under a test namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))

from benchmarks.swebench import swebench_images  # noqa: E402
from conftest import TEST_IMAGE  # noqa: E402
from swebench_fixtures import agent_sessions, agent_tool_results, make_generated_task, make_tasks, write_jsonl  # noqa: E402
from test_swebench import bench_env, run_bench  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAMESPACE = "kimi-code-test"
IDS = ("calc__calc-1", "calc__calc-wrong", "calc__calc-gen")
ACTIVATE = ('# A stand-in for conda\'s activate script: `conda activate NAME` puts the env first on PATH.\n'
            'conda() { if [ "$1" = activate ]; then export CONDA_DEFAULT_ENV="$2" '
            'PATH="/opt/miniconda3/envs/$2/bin:$PATH"; fi; }\n')
DOCKERFILE = f"""FROM {TEST_IMAGE}
COPY testbed /testbed
COPY activate /opt/miniconda3/bin/activate
COPY site /opt/testbed-site
RUN python3 -m venv --without-pip /opt/miniconda3/envs/testbed \\
 && SITE=$(/opt/miniconda3/envs/testbed/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \\
 && cp -r /opt/testbed-site/. "$SITE"/ && rm -rf /opt/testbed-site \\
 && echo /testbed > "$SITE"/testbed.pth \\
 && printf '#!/opt/miniconda3/envs/testbed/bin/python\\nimport sys\\nfrom pytest import console_main\\nsys.exit(console_main())\\n' \\
      > /opt/miniconda3/envs/testbed/bin/pytest && chmod +x /opt/miniconda3/envs/testbed/bin/pytest \\
 && printf 'BASE = 2\\n' > /testbed/calc/_gen.py
WORKDIR /testbed
"""


def _context(tmp: Path, mirror: Path) -> Path:
    ctx = tmp / "ctx"
    ctx.mkdir()
    subprocess.run(["git", "clone", "-q", str(mirror), str(ctx / "testbed")], check=True)
    (ctx / "activate").write_text(ACTIVATE)
    site = ctx / "site"
    site.mkdir()
    import _pytest
    import iniconfig
    import packaging
    import pluggy
    import pygments

    for mod in (_pytest, pytest, pluggy, iniconfig, packaging, pygments):
        src = Path(mod.__file__).parent
        shutil.copytree(src, site / src.name, ignore=shutil.ignore_patterns("__pycache__"))
    host_site = Path(pytest.__file__).parent.parent
    shutil.copy(host_site / "py.py", site / "py.py")
    for name in ("pytest", "pluggy", "iniconfig", "packaging", "pygments"):  # their metadata too
        for info in host_site.glob(f"{name}-*.dist-info"):
            shutil.copytree(info, site / info.name)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


@pytest.fixture(scope="module")
def testbed_tasks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("testbed")
    records = make_tasks(tmp / "repos")
    records.append(make_generated_task(tmp / "repos", records))
    records = [r for r in records if r["instance_id"] in IDS]
    ctx = _context(tmp, tmp / "repos" / "kimi-test+calc")
    images = [swebench_images.image_name(iid, NAMESPACE) for iid in IDS]
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    build = subprocess.run(["docker", "build", "-q", "--network", "none", *sum((["-t", i] for i in images), []),
                            str(ctx)], capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    yield tmp, write_jsonl(tmp / "tasks.jsonl", records), ctx
    subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, env=env)


def test_swebench_image_names_follow_swebench() -> None:
    assert swebench_images.image_name("django__django-11099", arch_name="x86_64") == (
        "swebench/sweb.eval.x86_64.django_1776_django-11099:latest")
    assert swebench_images.image_name("Foo__Bar-1", "ns", "arm64") == "ns/sweb.eval.arm64.foo_1776_bar-1:latest"


def _run_and_check(tmp: Path, tasks: Path, tmp_path: Path, *extra: str) -> None:
    args = ["run", str(tasks), "--model", "oracle", "--repos-dir", str(tmp / "repos"), "--env", "swebench-images",
            "--swebench-namespace", NAMESPACE, "--work-dir", str(tmp_path / "work"),
            "--out", str(tmp_path / "results.jsonl"), *extra]
    env = bench_env(tmp_path)
    env.pop("DOCKER_HOST", None)
    proc = run_bench(args, tmp_path, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["instance_id"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    r = results["calc__calc-1"]
    assert (r["status"], r["resolved"], r["env_image"]) == (
        "resolved", True, f"{NAMESPACE}/sweb.eval.{swebench_images.arch()}.calc_1776_calc-1:latest"), r
    w = results["calc__calc-wrong"]
    assert (w["status"], w["resolved"], w["fail_to_pass_failed"]) == (
        "unresolved", False, ["tests/test_ops.py::test_add"]), w
    g = results["calc__calc-gen"]
    assert (g["status"], g["resolved"]) == ("resolved", True), g
    # The agent worked at /testbed with the env on PATH (pytest is only there), and the image's
    # ignored build product (calc/_gen.py, which the host checkout lacks) stayed in place.
    runs = agent_tool_results(tmp_path / "state", "calc__calc-gen", "run_tests")
    assert runs and "1 passed" in runs[-1], runs
    assert [s["workspace"] for s in agent_sessions(tmp_path / "state", "calc__calc-1")] == ["/testbed"]
    assert not (tmp / "repos" / "kimi-test+calc" / "calc" / "_gen.py").exists()
    preds = {p["instance_id"]: p for p in map(json.loads, (tmp_path / "results.predictions.jsonl").read_text().splitlines())}
    assert "+    return a + b" in preds["calc__calc-1"]["model_patch"] and "_gen.py" not in preds["calc__calc-gen"]["model_patch"]


def test_a_run_on_swebench_images_works_in_testbed(testbed_tasks, tmp_path: Path) -> None:
    tmp, tasks, _ = testbed_tasks
    _run_and_check(tmp, tasks, tmp_path)


def test_swebench_images_on_a_remote_engine(testbed_tasks, tmp_path: Path, remote_engine) -> None:
    """The same images built on an engine that cannot see this machine's files: the agent's copy
    and the patches for grading reach /testbed through the Engine API only."""
    tmp, tasks, ctx = testbed_tasks
    images = [swebench_images.image_name(iid, NAMESPACE) for iid in IDS]
    env = {**{k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}, "DOCKER_HOST": remote_engine.url,
           "DOCKER_BUILDKIT": "0"}  # the engine's own (legacy) builder: no buildx needed on this side
    build = subprocess.run(["docker", "build", "-q", "--network", "none", *sum((["-t", i] for i in images), []),
                            str(ctx)], capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    _run_and_check(tmp, tasks, tmp_path, "--docker-host", remote_engine.url)
    leftovers = remote_engine.docker("ps", "-a", "--filter", "label=kimi-code-bench.managed=1", "-q").stdout.split()
    assert leftovers == []
