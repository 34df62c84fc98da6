"""``--env swebench-images``: SWE-bench's own per-instance images as the environment.

Each instance has an image with the repository checked out and installed at ``/testbed`` and a
conda environment named ``testbed`` (``swebench`` on PyPI, ``harness/test_spec``: the image is
``<namespace>/sweb.eval.<arch>.<instance_id>:latest``, lower-cased, with ``__`` written ``_1776_``,
as Docker Hub refuses a double underscore). Nothing is built: the agent works in it (kimi-code's
``workspace = copy`` with the workspace at /testbed) and grading runs the way SWE-bench's eval
script does there: activate the env, apply the model's patch, re-run the install, reset the test
files and apply the test patch, run the test command between the start and end markers.
"""

from __future__ import annotations

import hashlib
import platform
import shlex
import threading
from typing import Any

from . import containers, logparse
from .errors import EnvBuildError
from .grading import Grade, judge, reset_test_files_script
from .patches import test_directives
from .recipes import Recipe
from .records import Task

TESTBED = "/testbed"
CONDA_ENV = "testbed"
CONDA_ROOT = "/opt/miniconda3"
ACTIVATE = f"source {CONDA_ROOT}/bin/activate && conda activate {CONDA_ENV}"
START_TEST_OUTPUT = ">>>>> Start Test Output"  # SWE-bench's markers (harness/constants)
END_TEST_OUTPUT = ">>>>> End Test Output"
AGENT_IMAGE_REPO = "kimi-code-bench-testbed"
PATCH_DIR = "/tmp/kimi-bench"
_lock = threading.Lock()


def arch() -> str:
    """The architecture part of SWE-bench's image names for this machine."""
    return "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"


def image_name(instance_id: str, namespace: str = "swebench", arch_name: str | None = None) -> str:
    """SWE-bench's published image of one instance."""
    key = f"sweb.eval.{arch_name or arch()}.{instance_id.lower()}:latest"
    return f"{namespace}/{key}".replace("__", "_1776_")


def agent_image(client: Any, image: str) -> str:
    """The instance image with the testbed env first on PATH, for the agent's sandbox: SWE-bench
    activates it from /root/.bashrc, which kimi-code's non-interactive shell does not read. A
    commit of a created container (a config change, no layer of files): cheap, no network."""
    img = client.images.get(image)
    env = list((img.attrs.get("Config") or {}).get("Env") or [])
    path = next((e.split("=", 1)[1] for e in env if e.startswith("PATH=")),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    prefix = f"{CONDA_ROOT}/envs/{CONDA_ENV}"
    tag = f"{AGENT_IMAGE_REPO}:{hashlib.sha256(img.id.encode()).hexdigest()[:16]}"
    with _lock:
        try:
            client.images.get(tag)
            return tag
        except Exception:  # noqa: BLE001 - not built yet
            pass
        container = client.containers.create(image, command=["true"], labels={containers.LABEL: "1"})
        try:
            repo, name = tag.split(":")
            container.commit(repository=repo, tag=name, changes=[
                f"ENV PATH={prefix}/bin:{path}", f"ENV CONDA_DEFAULT_ENV={CONDA_ENV}", f"ENV CONDA_PREFIX={prefix}",
                f"WORKDIR {TESTBED}", f'LABEL {containers.LABEL}="1"'])
        finally:
            containers.remove(container)
    return tag


def ensure_image(client: Any, image: str) -> None:
    """The instance image, pulled when missing; an EnvBuildError (the task's env_error) if it cannot be had."""
    from .environment import base_image_id
    from .errors import BenchError

    try:
        base_image_id(client, image)
    except BenchError as exc:
        raise EnvBuildError(f"SWE-bench image: {exc}") from None


def eval_script(task: Task, recipe: Recipe, with_model_patch: bool) -> str:
    """SWE-bench's eval script for an instance image, with our recipe's test command and
    per-checkout install (the install SWE-bench re-runs there)."""
    q = shlex.quote
    files = " ".join(q(f) for f in test_directives(task.test_patch, task.repo))
    lines = ["set -uo pipefail", ACTIVATE, f"cd {TESTBED}"]
    lines += [f"export {k}={q(v)}" for k, v in recipe.env]
    lines.append(f"git config --global --add safe.directory {TESTBED}")
    if with_model_patch:
        lines.append(f"git apply -v {PATCH_DIR}/model.patch || "
                     "{ echo KIMI-BENCH-MODEL-PATCH-FAILED; exit 93; }")
    install = recipe.checkout_install
    if install is not None:
        command, required = install
        failed = ("{ cat /tmp/task-install.log; echo KIMI-BENCH-INSTALL-FAILED; exit 91; }" if required
                  else "echo 'kimi-bench: the re-install failed; the image install is used' >&2")
        lines.append(f"{{ {command} ; }} > /tmp/task-install.log 2>&1 || {failed}")
    lines.append(reset_test_files_script(task))
    lines.append(f"git apply -v {PATCH_DIR}/test.patch || {{ echo KIMI-BENCH-TEST-PATCH-FAILED; exit 94; }}")
    lines += [f"echo {q(START_TEST_OUTPUT)}", f"{recipe.test_cmd} {files}", f"echo {q(END_TEST_OUTPUT)}"]
    return "\n".join(lines) + "\n"


def test_section(output: str) -> str:
    """The part of the log between SWE-bench's markers (what its grader reads), else all of it."""
    if START_TEST_OUTPUT in output and END_TEST_OUTPUT in output:
        return output.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0]
    return output


def grade(engine: containers.Engine, task: Task, recipe: Recipe, image: str, model_patch: str,
          *, timeout: float = 1800) -> tuple[Grade, str]:
    """Grade ``model_patch`` in the instance image, as root at /testbed, as SWE-bench does; the
    patches go in through the archive call, so any engine will do."""
    files = {f"{PATCH_DIR}/test.patch": _with_newline(task.test_patch).encode()}
    if model_patch.strip():
        files[f"{PATCH_DIR}/model.patch"] = _with_newline(model_patch).encode()
    failed = (list(task.fail_to_pass), list(task.pass_to_pass))
    run = containers.run_and_remove(engine, image, eval_script(task, recipe, bool(model_patch.strip())),
                                    workspace=None, network=False, user="0:0", timeout=timeout,
                                    name_hint="grade", files=files, working_dir=TESTBED)
    if run.timed_out:
        return Grade(False, "error", *failed, detail=f"the tests did not finish within {timeout:g}s"), run.output
    for marker, status, detail in (("KIMI-BENCH-MODEL-PATCH-FAILED", "patch_failed", "the agent's patch does not apply"),
                                   ("KIMI-BENCH-TEST-PATCH-FAILED", "error", "the test patch does not apply "
                                                                             "(the task record is inconsistent)"),
                                   ("KIMI-BENCH-INSTALL-FAILED", "error", "task_install failed before the tests")):
        if marker in run.output:
            return Grade(False, status, *failed, detail=detail), run.output
    result = judge(task, logparse.parser_for(task.repo)(test_section(run.output)))
    if not result.statuses:
        result.detail = f"no test results in the output (exit {run.exit_code})"
    return result, run.output


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
