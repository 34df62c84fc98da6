"""Environment images: one derived image per (base image, repository, setup commit, recipe), built
once and reused by every task (and every later run) that needs the same environment.

The recipe runs as root in a container of the base image with the environment's checkout at
/workspace (network on, the host CA bundle trusted), then /workspace is emptied and the container
is committed with the venv's bin first on PATH. An editable install made there points at
/workspace, which is each task's own checkout when the agent's sandbox or the grader puts it
there. Emptying it makes an image built with the checkout copied in (a remote engine) the same as
one built over a bind mount (which a commit never holds): no file of the setup commit is left to
shadow a task's, and the metadata an editable install keeps in the source tree comes from each
task's own re-install.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import containers, repos
from .errors import BenchError, EnvBuildError
from .recipes import Recipe

IMAGE_REPO = "kimi-code-bench-env"
VENV_ROOT = "/opt/kimi-bench"
VENV = f"{VENV_ROOT}/venv"
# Printed by the build when uv could not fetch the recipe's Python.
PYTHON_FETCH_FAILED = "KIMI-BENCH-PYTHON-FETCH-FAILED"
# Passed from the host to environment builds: package and Python mirrors.
MIRROR_ENV = ("UV_PYTHON_INSTALL_MIRROR", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL",
              "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")
# Part of every image's tag: a change to build_script that changes what an image holds bumps it.
BUILD_SCRIPT_VERSION = "9"
_locks: dict[str, threading.Lock] = {}
# Builds that failed in this process: the other tasks of the environment fail at once with the same
# error instead of repeating a build that takes minutes and fails the same way.
_failed: dict[str, EnvBuildError] = {}
_guard = threading.Lock()


@dataclass(frozen=True)
class EnvSpec:
    repo: str
    setup_commit: str
    recipe: Recipe
    base_image: str


def base_image_id(client: Any, image: str) -> tuple[str, list[str]]:
    """The base image's id and environment, pulling it when missing (on the run's engine)."""
    from docker.errors import APIError, ImageNotFound

    try:
        img = client.images.get(image)
    except ImageNotFound:
        try:
            img = client.images.pull(image)
        except Exception as exc:  # noqa: BLE001 - any pull failure is the same user error
            raise BenchError(f"base image {image} is not available and could not be pulled: "
                             f"{' '.join(str(exc).split())[:200]}") from None
    except APIError as exc:
        raise BenchError(f"cannot inspect image {image}: {exc.explanation or exc}") from None
    return img.id, list((img.attrs.get("Config") or {}).get("Env") or [])


def image_tag(client: Any, spec: EnvSpec) -> str:
    """The environment's tag: a hash of everything that goes into the image."""
    base_id, _ = base_image_id(client, spec.base_image)
    key = "\0".join([base_id, spec.repo, spec.setup_commit, spec.recipe.to_json(), BUILD_SCRIPT_VERSION])
    return f"{IMAGE_REPO}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def build_script(recipe: Recipe, ca: bool) -> str:
    """The shell script that turns a base image plus a checkout into the environment."""
    q = shlex.quote
    lines = ["set -euo pipefail", "export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONDONTWRITEBYTECODE=1"]
    if ca:
        lines.append(containers.ca_prelude(True).rstrip("\n"))
    lines.append("cd /workspace")
    lines += [f"export {k}={q(v)}" for k, v in recipe.env]  # the build sees the recipe's variables too
    lines += [f"echo '+ pre_install: '{q(cmd)}\n{cmd}" for cmd in recipe.pre_install]
    want = recipe.python or ""
    lines += [
        "command -v python3 >/dev/null || { echo 'the base image has no python3'; exit 90; }",
        f"want={q(want)}",
        "have=$(python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])')",
        f'if [ -z "$want" ] || [ "$want" = "$have" ]; then python3 -m venv {VENV}',
        "else",
        "  echo \"+ Python $want (the image has $have): fetched with uv\"",
        f"  python3 -m venv {VENV_ROOT}/uv && {VENV_ROOT}/uv/bin/python -m pip install -q uv",
        f"  UV_PYTHON_INSTALL_DIR={VENV_ROOT}/python {VENV_ROOT}/uv/bin/uv venv -q --seed --python \"$want\" {VENV}"
        f" || {{ echo \"{PYTHON_FETCH_FAILED} $want\"; exit 92; }}",
        "fi",
        f"export PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV}",
        "python --version",
        # A distribution's python3-venv seeds the pip of its day (Debian 11: pip 20.3), whose
        # editable installs of pyproject projects run `setup.py develop` and fail with today's
        # setuptools: a newer pip, as SWE-bench's environments have; before 25.3, which dropped
        # --no-use-pep517 and legacy editable installs that recipes (scikit-learn's) use.
        'python -m pip install -q --upgrade "pip<25.3"',
    ]
    reinstall = recipe.checkout_install is not None and not recipe.task_install
    if recipe.checkout_install is not None:
        # The install in each checkout builds without isolation, with the env's setuptools: an
        # editable install of a pyproject project needs one with PEP 660 (64+), which a venv seeded
        # by an older distribution lacks (Debian 11's: 44); the recipe's own pins come after and win.
        lines.append('python -m pip install -q --upgrade "setuptools<70" wheel')
    if recipe.packages:
        lines.append("python -m pip install " + " ".join(q(p) for p in recipe.packages))
    for req in recipe.requirements:
        lines.append(f"if [ -f {q(req)} ]; then python -m pip install -r {q(req)}; fi")
    if reinstall:
        # What the offline re-install in each checkout builds with (--no-build-isolation): the
        # project's declared build requirements (setuptools_scm, flit_core...), held to the
        # versions already installed (the recipe's pins), so nothing they pull in conflicts.
        lines += ["if [ -f pyproject.toml ]; then",
                  "  python -c 'import tomllib' 2>/dev/null || python -m pip install -q tomli",
                  "  python - > /tmp/build-requires.txt <<'KIMI_BENCH_PY' || true",
                  "try:\n    import tomllib as toml\nexcept ImportError:\n    import tomli as toml",
                  "with open('pyproject.toml', 'rb') as fh:",
                  "    print('\\n'.join(toml.load(fh).get('build-system', {}).get('requires', [])))",
                  "KIMI_BENCH_PY",
                  "  python -m pip freeze --exclude-editable | grep -v ' @ ' > /tmp/kimi-bench-constraints.txt || true",
                  "  if [ -s /tmp/build-requires.txt ]; then echo '+ build requirements:' $(cat /tmp/build-requires.txt);"
                  " python -m pip install -q -r /tmp/build-requires.txt -c /tmp/kimi-bench-constraints.txt"
                  " || echo 'kimi-bench: build requirements not installed' >&2; fi",
                  "fi"]
    if recipe.install:
        lines.append(f"echo '+ install: '{q(recipe.install)}\n{recipe.install}")
    lines += [f"chmod -R a+rwX {VENV_ROOT}", "python -m pip list --format=freeze > /tmp/pip-freeze.txt || true",
              # Each task brings its own checkout (see the module's docstring).
              "find /workspace -mindepth 1 -delete", 'chown "$KIMI_BENCH_OWNER" /workspace', "echo KIMI-BENCH-ENV-OK"]
    return "\n".join(lines) + "\n"


def _lock(tag: str) -> threading.Lock:
    with _guard:
        return _locks.setdefault(tag, threading.Lock())


def ensure_env_image(engine: containers.Engine, spec: EnvSpec, *, mirror: Path, work_dir: Path, ca_bundle: Path | None,
                     network: bool = True, timeout: float = 3600,
                     echo: Callable[[str], None] | None = None,
                     notice: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """The environment's image tag, building it if missing; returns (tag, built_now).

    Raises EnvBuildError (with the log's path) when the recipe fails: the caller records the tasks
    that need this environment as env_error and carries on with the others.
    """
    from docker.errors import ImageNotFound

    client = engine.client
    tag = image_tag(client, spec)
    with _lock(tag):
        try:
            client.images.get(tag)
            return tag, False
        except ImageNotFound:
            pass
        if tag in _failed:
            raise EnvBuildError(str(_failed[tag])) from None
        try:
            return tag, _build(engine, spec, tag, mirror=mirror, work_dir=work_dir, ca_bundle=ca_bundle,
                               network=network, timeout=timeout, echo=echo, notice=notice)
        except EnvBuildError as exc:
            if "(timed out)" not in str(exc):  # a busy machine may do it in time for the next task
                _failed[tag] = exc
            raise


def _build(engine: containers.Engine, spec: EnvSpec, tag: str, *, mirror: Path, work_dir: Path,
           ca_bundle: Path | None, network: bool, timeout: float, echo: Callable[[str], None] | None,
           notice: Callable[[str], None] | None) -> bool:
    """Build the environment image ``tag`` (its lock held); True when done."""
    client = engine.client
    key = tag.split(":")[1]
    src = work_dir / "env-src" / key
    log_path = work_dir / "env-logs" / f"{key}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        repos.checkout(mirror, spec.setup_commit, src)
    except BenchError as exc:
        raise EnvBuildError(f"environment {tag}: {exc}") from None
    if notice is not None:
        notice(f"building the environment for {spec.repo} @ {spec.setup_commit[:12]} (log: {log_path})")
    owner = containers.owner_of(src)
    script = f"export KIMI_BENCH_OWNER={owner}\n" + build_script(spec.recipe, ca_bundle is not None)
    mirrors = {name: os.environ[name] for name in MIRROR_ENV if os.environ.get(name)}
    run, container = containers.run_script(engine, spec.base_image, script, workspace=src, network=network,
                                           user="0:0", timeout=timeout, ca_bundle=ca_bundle,
                                           name_hint=f"env-{key}", env=mirrors, log_to=log_path, echo=echo)
    try:
        log_path.write_text(run.output)  # whole, whatever the follower managed
        fetch_failed = f"{PYTHON_FETCH_FAILED} " in run.output
        if fetch_failed and not run.timed_out:
            want = spec.recipe.python
            raise EnvBuildError(f"environment for {spec.repo}: Python {want} could not be downloaded with uv "
                                f"(set UV_PYTHON_INSTALL_MIRROR, or give an image that has it: --python-image "
                                f"{want}=IMAGE) — log: {log_path}")
        if run.timed_out or run.exit_code != 0 or "KIMI-BENCH-ENV-OK" not in run.output:
            why = "timed out" if run.timed_out else f"exit {run.exit_code}"
            tail = [ln for ln in run.output.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
            raise EnvBuildError(f"environment for {spec.repo} @ {spec.setup_commit[:12]} failed to build "
                                f"({why}): {tail[0][:200]} — log: {log_path}")
        _, base_env = base_image_id(client, spec.base_image)
        base_path = next((e.split("=", 1)[1] for e in base_env if e.startswith("PATH=")),
                         "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        changes = [f"ENV PATH={VENV}/bin:{base_path}", f"ENV VIRTUAL_ENV={VENV}",
                   "ENV PYTHONDONTWRITEBYTECODE=1", 'CMD ["bash"]', "WORKDIR /workspace",
                   f'LABEL {containers.LABEL}="1" kimi-code-bench.repo="{spec.repo}"']
        changes += [f"ENV {k}={v}" for k, v in spec.recipe.env]
        repo_name, tag_name = tag.split(":")
        container.commit(repository=repo_name, tag=tag_name, changes=changes)
    finally:
        containers.remove(container)
        shutil.rmtree(src, ignore_errors=True)  # each task brings its own checkout
    return True
