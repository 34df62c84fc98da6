"""Running tasks: repository, environment, agent (``kimi-code run`` as a subprocess), grading.

Every failure of one task is caught and recorded in its result line with a status saying what
went wrong (env_error, timeout, limit, error...), and the run goes on with the next task.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import containers, environment, grading, repos, swebench_images
from .errors import BenchError, EnvBuildError
from .patches import test_directives
from .recipes import Recipe, recipe_for
from .records import Task, TaskResult

ORACLE = "oracle"
SWEBENCH_IMAGES = "swebench-images"
ENV_SOURCES = ("build", SWEBENCH_IMAGES)
# A task's own image on an engine that cannot see this machine's files (see _task_install).
TASK_IMAGE_REPO = "kimi-code-bench-task"
DEFAULT_IMAGE = "python:3.12-bookworm"
TASK_SUFFIX = ("\n\n---\nResolve the issue above by changing the repository's code. Hidden tests will check the fix; "
               "you may add or run tests, but do not rely on changing existing tests.\n")


@dataclass
class RunConfig:
    """Everything a run needs besides the tasks (from the command line)."""

    work_dir: Path
    model: str = "kimi-k2.6"
    base_url: str | None = None
    thinking: bool | None = None
    max_steps: int | None = None
    max_cost: float | None = None
    max_time: str | None = None
    image: str = DEFAULT_IMAGE
    ca_bundle: Path | None = None
    network: bool = False  # the agent's sandbox; environment builds always have network
    repos_dir: Path | None = None
    workers: int = 1
    env_timeout: float = 3600
    test_timeout: float = 1800
    keep_trees: bool = False
    # Python version -> base image that already has it (--python-image 3.9=IMAGE): no uv download.
    python_images: dict[str, str] = field(default_factory=dict)
    verbose: bool = False  # environment builds' output on the console too
    # The engine for environment builds, grading and the agent's sandbox (None: DOCKER_HOST or the
    # local socket). One that cannot see this machine's files gets them copied in (containers.py).
    docker_host: str | None = None
    # "build": environment images built from recipes; "swebench-images": SWE-bench's own instance
    # images (the repository installed at /testbed), from this registry namespace.
    env: str = "build"
    swebench_namespace: str = "swebench"

    @property
    def oracle(self) -> bool:
        return self.model == ORACLE

    def base_image(self, recipe: Recipe) -> str:
        """The image a recipe's environment is built from."""
        return self.python_images.get(recipe.python or "", self.image)


def parse_python_images(specs: list[str]) -> dict[str, str]:
    """``["3.9=python:3.9-bookworm", ...]`` -> ``{"3.9": "python:3.9-bookworm"}``; one clear error if malformed."""
    out: dict[str, str] = {}
    for spec in specs:
        version, sep, image = spec.partition("=")
        if not sep or not image.strip() or not version.strip().replace(".", "").isdigit():
            raise BenchError(f"--python-image {spec!r}: expected VERSION=IMAGE, e.g. 3.9=python:3.9-bookworm")
        out[version.strip()] = image.strip()
    return out


def parse_duration(text: str | None) -> float | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, KeyError):
        raise BenchError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h") from None


def _cleanup_sandboxes(client: Any, under: Path) -> None:
    """Remove kimi-code sandbox containers whose workspace is under ``under`` (a killed run's)."""
    try:
        for c in client.containers.list(all=True, filters={"label": "kimi-code.managed=1"}):
            workspace = str((c.labels or {}).get("kimi-code.workspace", ""))
            if workspace == str(under) or workspace.startswith(str(under) + os.sep):  # not tasks/x-12 for x-1
                c.remove(force=True)
    except Exception:  # noqa: BLE001 - best effort
        pass


def _remove_image(client: Any, image: str) -> None:
    try:
        client.images.remove(image, force=True)
    except Exception:  # noqa: BLE001 - best effort: already gone
        pass


def _agent_command(cfg: RunConfig, workspace: Path, task_file: Path, patch_file: Path, image: str,
                   base_url: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "kimi_code.agent.cli", "run", "-f", str(task_file), "--repo", str(workspace),
           "--model", "kimi-k2.6" if cfg.oracle else cfg.model, "--sandbox", "docker", "--image", image,
           "--output", "json", "--patch-out", str(patch_file), "--remove-sandbox",
           "--network" if cfg.network else "--no-network"]
    if base_url:
        cmd += ["--base-url", base_url]
    if cfg.thinking is not None:
        cmd.append("--thinking" if cfg.thinking else "--no-thinking")
    if cfg.max_steps is not None:
        cmd += ["--max-steps", str(cfg.max_steps)]
    if cfg.max_cost is not None:
        cmd += ["--max-cost", str(cfg.max_cost)]
    if cfg.max_time is not None:
        cmd += ["--max-time", cfg.max_time]
    if cfg.ca_bundle is not None:
        cmd += ["--ca-bundle", str(cfg.ca_bundle)]
    if cfg.oracle:
        cmd.append("--no-compaction")  # the oracle answers tool turns only
    return cmd


def _run_agent(cmd: list[str], env: dict[str, str], timeout: float | None, log: Path) -> tuple[int | None, dict[str, Any]]:
    """Run kimi-code; (exit code or None on timeout, its JSON summary or {})."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # let it save its state first
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            return None, _last_json(out)
    return proc.returncode, _last_json(out)


def _last_json(out: str) -> dict[str, Any]:
    for line in reversed((out or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


def _agent_status(code: int | None, summary: dict[str, Any]) -> str | None:
    """None when the agent ended normally (finished with success or failure), else the status to record."""
    if code is None:
        return "timeout"
    status = summary.get("status")
    if status in ("success", "failure"):
        return None
    if status == "limit":
        return "timeout" if summary.get("kind") == "time" else "limit"
    if status in ("api_error", "sandbox_error", "interrupted"):
        return str(status)
    return "error"


def _failing_tests(result: TaskResult, shown: int = 3) -> str:
    """One line naming the tests that decided an unresolved grade."""
    parts = []
    for label, tests in (("FAIL_TO_PASS", result.fail_to_pass_failed), ("PASS_TO_PASS", result.pass_to_pass_failed)):
        if tests:
            more = f" (+{len(tests) - shown} more)" if len(tests) > shown else ""
            parts.append(f"{label} failing: {', '.join(tests[:shown])}{more}")
    return "; ".join(parts)


class BenchRunner:
    """Runs tasks (concurrently with ``workers``), one result per task, in input order."""

    def __init__(self, cfg: RunConfig, on_result: Callable[[TaskResult], None] | None = None,
                 on_notice: Callable[[str], None] | None = None,
                 on_start: Callable[[Task], None] | None = None) -> None:
        self.cfg = cfg
        self.on_result = on_result
        self.on_start = on_start
        self.on_notice = on_notice or (lambda text: print(text, file=sys.stderr))
        self._engine: containers.Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> containers.Engine:
        with self._lock:
            if self._engine is None:
                # Without --docker-host the engine is DOCKER_HOST's, which may be remote as well.
                url = self.cfg.docker_host or os.environ.get("DOCKER_HOST") or None
                self._engine = containers.Engine(containers.docker_client(self.cfg.docker_host), url,
                                                 {containers.WORK_DIR_LABEL: str(self.cfg.work_dir)})
            return self._engine

    @property
    def client(self) -> Any:
        return self.engine.client

    def run(self, tasks: list[Task]) -> list[TaskResult]:
        self.cfg.work_dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.ca_bundle is not None and not self.cfg.ca_bundle.is_file():
            raise BenchError(f"CA bundle {self.cfg.ca_bundle} does not exist")
        if self.cfg.env not in ENV_SOURCES:
            raise BenchError(f"--env {self.cfg.env!r}: use one of {', '.join(ENV_SOURCES)}")
        if self.cfg.env == "build":
            environment.base_image_id(self.client, self.cfg.image)  # no Docker or no base image: one clear error
        else:
            self.client  # noqa: B018 - no Docker: one clear error before any task
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.workers)) as pool:
            return list(pool.map(self._run_one, tasks))

    def _run_one(self, task: Task) -> TaskResult:
        if self.on_start is not None:
            self.on_start(task)
        result = self.run_task(task)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def run_task(self, task: Task) -> TaskResult:
        """One task end to end; never raises for a task's own failure."""
        t0 = time.monotonic()
        result = TaskResult(instance_id=task.instance_id)
        root = self.cfg.work_dir / "tasks" / task.instance_id
        try:
            self._run_task(task, root, result)
        except EnvBuildError as exc:
            result.status, result.error = "env_error", str(exc)
        except BenchError as exc:
            result.status, result.error = "error", str(exc)
        except Exception as exc:  # noqa: BLE001 - one task's crash must not stop the run
            result.status, result.error = "error", f"{exc.__class__.__name__}: {exc}"
        finally:
            result.wall_time = round(time.monotonic() - t0, 2)
            if self._engine is not None:
                _cleanup_sandboxes(self._engine.client, root)
            if not self.cfg.keep_trees:
                for sub in ("repo", "eval"):
                    shutil.rmtree(root / sub, ignore_errors=True)
        why = result.error or _failing_tests(result)
        if result.status != "resolved" and why:
            log = root / "tests.log"
            self.on_notice(f"{task.instance_id}: {result.status}: {why}" + (f" (log: {log})" if log.exists() else ""))
        return result

    def _run_task(self, task: Task, root: Path, result: TaskResult) -> None:
        cfg = self.cfg
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        recipe = recipe_for(task.repo, task.version, task.env_recipe)
        mirror = repos.mirror_for(task.repo, cfg.repos_dir, cfg.work_dir)
        patch_file = root / "agent.patch"
        if cfg.env == SWEBENCH_IMAGES:
            # The image holds the repository at /testbed; the host checkout (at the same commit) is
            # what kimi-code's copy mode streams over it, and where the agent's changes come back.
            image = swebench_images.image_name(task.instance_id, cfg.swebench_namespace)
            swebench_images.ensure_image(self.client, image)
            result.env_image = image
            workspace = repos.checkout(mirror, task.base_commit, root / "repo")
            agent_image = swebench_images.agent_image(self.client, image)
            code, summary, agent_time = self._agent(task, recipe, agent_image, workspace, root, patch_file, result,
                                                    workspace_path=swebench_images.TESTBED)
        else:
            spec = environment.EnvSpec(task.repo, task.environment_setup_commit, recipe, cfg.base_image(recipe))
            echo = (lambda line: self.on_notice(f"[env {task.repo}] {line}")) if cfg.verbose else None
            image, built = environment.ensure_env_image(self.engine, spec, mirror=mirror, work_dir=cfg.work_dir,
                                                        echo=echo, notice=self.on_notice,
                                                        ca_bundle=cfg.ca_bundle, timeout=cfg.env_timeout)
            result.env_image, result.env_built = image, built
            workspace = repos.checkout(mirror, task.base_commit, root / "repo")
            agent_image = self._task_install(task, recipe, image, workspace)
            try:
                code, summary, agent_time = self._agent(task, recipe, agent_image, workspace, root, patch_file, result)
            finally:
                if agent_image != image:
                    _remove_image(self.client, agent_image)
        result.agent_time = round(agent_time, 2)
        result.exit_code = code
        result.agent_status = summary.get("status")
        result.steps = int(summary.get("steps") or 0)
        tokens = summary.get("tokens") or {}
        result.tokens = {k: int(tokens.get(k) or 0) for k in ("prompt", "cached", "completion")}
        result.cached_share = float(tokens.get("cached_share") or 0.0)
        # The oracle's "model" is the gold patch through a local fake server: it costs nothing.
        result.cost = 0.0 if cfg.oracle else float(summary.get("cost") or 0.0)
        # kimi-code writes --patch-out when it ends; one killed at the harness timeout doesn't, and its
        # work is still graded, from the work tree.
        patch = patch_file.read_text() if patch_file.exists() else repos.work_tree_diff(workspace)
        result.patch_lines = patch.count("\n")
        result.model_patch = patch
        ended = _agent_status(code, summary)
        if ended and not summary and code is not None:
            result.status = "error"
            result.error = f"kimi-code run exited {code} without a summary (see {root / 'agent.log'})"
            return

        if cfg.env == SWEBENCH_IMAGES:
            grade, log = swebench_images.grade(self.engine, task, recipe, image, patch, timeout=cfg.test_timeout)
        else:
            grade, log = grading.grade(self.engine, task, recipe, image, mirror, patch, root / "eval",
                                       timeout=cfg.test_timeout)
        (root / "tests.log").write_text(log)
        result.resolved = grade.resolved
        result.fail_to_pass_failed = grade.fail_to_pass_failed
        result.pass_to_pass_failed = grade.pass_to_pass_failed
        result.status = ended or grade.status
        if grade.detail:
            result.error = grade.detail
        elif ended:
            result.error = f"the agent stopped: {summary.get('summary') or ended}"[:500]

    def _task_install(self, task: Task, recipe: Recipe, image: str, workspace: Path) -> str:
        """Run the recipe's per-checkout install in the task's checkout; returns the image the
        agent's sandbox starts from. On an engine that sees this machine's files that is the
        environment image (the sandbox mounts the checkout, build products included). Elsewhere
        the checkout is copied in and back, and the container is committed as the task's image:
        kimi-code's copy mode then streams the checkout's tracked and untracked files over its
        /workspace, and the ignored build products (egg-info, entry points) stay there, as a mount
        would have shown them."""
        install = recipe.checkout_install
        if install is None:
            return image
        command, required = install
        local = self.engine.local_files
        run, container = containers.run_script(self.engine, image, f"cd /workspace && {command}",
                                               workspace=workspace, network=False,
                                               user=containers.owner_of(workspace), copy_back=not local,
                                               timeout=self.cfg.env_timeout, name_hint="task-install")
        try:
            if run.exit_code != 0:
                tail = [ln for ln in run.output.splitlines() if ln.strip()][-1:] or ["(no output)"]
                if required:
                    raise EnvBuildError(f"task_install failed in the checkout: {tail[0][:200]}")
                self.on_notice(f"the offline re-install failed in the checkout (the image's install is used): "
                               f"{tail[0][:200]}")
                repos.git("checkout", "-q", "--", ".", cwd=workspace)
                repos.git("clean", "-q", "-fd", cwd=workspace)
                return image
            # The checkout is the agent's starting point: install artifacts stay out of its diff.
            repos.git("add", "-A", cwd=workspace)
            repos.git("commit", "-q", "--allow-empty", "-m", "task_install artifacts", cwd=workspace)
            if local:
                return image
            tag = f"{task.instance_id.lower()[:100]}-{uuid.uuid4().hex[:8]}"
            container.commit(repository=TASK_IMAGE_REPO, tag=tag, changes=['CMD ["bash"]', "WORKDIR /workspace",
                                                                           f'LABEL {containers.LABEL}="1"'])
            return f"{TASK_IMAGE_REPO}:{tag}"
        finally:
            containers.remove(container)

    def _agent(self, task: Task, recipe: Recipe, image: str, workspace: Path, root: Path, patch_file: Path,
               result: TaskResult, workspace_path: str | None = None) -> tuple[int | None, dict[str, Any], float]:
        """Run kimi-code on the task (the oracle through the fake server); ``workspace_path``: the
        repository's place in the image, which the sandbox then holds as a copy (workspace = copy)."""
        cfg = self.cfg
        task_file = root / "task.md"
        task_file.write_text(task.problem_statement.rstrip() + TASK_SUFFIX)
        env = dict(os.environ)
        env.setdefault("KIMI_CODE_STATE_DIR", str(cfg.work_dir / "state"))
        if cfg.docker_host:
            env["DOCKER_HOST"] = cfg.docker_host  # kimi-code picks workspace = copy for a remote one
        limit = parse_duration(cfg.max_time)
        timeout = None if limit is None else limit + 300  # kimi-code stops itself first
        t0 = time.monotonic()
        placement = {"KIMI_CODE_WORKSPACE": "copy", "KIMI_CODE_WORKSPACE_PATH": workspace_path} if workspace_path else {}
        env.update(placement)
        if not cfg.oracle:
            cmd = _agent_command(cfg, workspace, task_file, patch_file, image, cfg.base_url)
            code, summary = _run_agent(cmd, env, timeout, root / "agent.log")
            return code, summary, time.monotonic() - t0
        from kimi_code.agent.fake_kimi import FakeKimi

        from .oracle import OraclePolicy

        files = [d for f, d in zip(test_directives(task.test_patch), test_directives(task.test_patch, task.repo))
                 if (workspace / f).is_file()]
        test_cmd = f"{recipe.test_cmd} {' '.join(files)}".strip() if files else None
        policy = OraclePolicy(workspace, task.patch, test_cmd)
        if policy.problems:
            raise BenchError("oracle: " + "; ".join(policy.problems))
        # Nothing of the user's own configuration (a key or provider in the config file, KIMI_CODE_*
        # overrides) may point the oracle's run anywhere but the fake server.
        for name in [k for k in env if k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))
                     and k != "KIMI_CODE_STATE_DIR"]:
            del env[name]
        empty_config = root / "oracle-config.toml"
        empty_config.write_text("")
        env["KIMI_CODE_CONFIG"] = str(empty_config)
        env.update(placement)
        with FakeKimi(policy) as fake:
            env["KIMI_CODE_API_KEY"] = fake.api_key
            cmd = _agent_command(cfg, workspace, task_file, patch_file, image, fake.base_url)
            code, summary = _run_agent(cmd, env, timeout, root / "agent.log")
        return code, summary, time.monotonic() - t0
