"""Shared fixtures. Docker tests use the real daemon and the offline-built test image.

Outside CI a test that cannot get Docker skips with a loud reason; with KIMI_CODE_REQUIRE_DOCKER=1
(set by .ci/run) the same condition is a failure, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os

import pytest

TEST_IMAGE = os.environ.get("KIMI_CODE_TEST_IMAGE", "kimi-code-sandbox:offline")
REQUIRE_DOCKER = os.environ.get("KIMI_CODE_REQUIRE_DOCKER") == "1"


def _docker_unavailable_reason() -> str | None:
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        return f"docker SDK missing: {exc}"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        return f"no Docker daemon reachable ({exc.__class__.__name__}: {exc})"
    try:
        client.images.get(TEST_IMAGE)
    except ImageNotFound:
        return f"test image {TEST_IMAGE} missing: run `bash sandbox/build-offline-image.sh {TEST_IMAGE}`"
    finally:
        client.close()
    return None


_reason_cache: list[str | None] = []


def docker_unavailable_reason() -> str | None:
    if not _reason_cache:
        _reason_cache.append(_docker_unavailable_reason())
    return _reason_cache[0]


def require_docker() -> None:
    """Skip loudly, or fail in CI, when the real Docker daemon or test image is not there."""
    reason = docker_unavailable_reason()
    if reason is None:
        return
    if REQUIRE_DOCKER:
        pytest.fail(f"KIMI_CODE_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(f"DOCKER TESTS SKIPPED: {reason}")


@pytest.fixture
def docker_available() -> None:
    require_docker()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        require_docker()


# -- Docker sandbox fixtures (sandbox/ tests; usable by any Docker test) --------------------------
@pytest.fixture(scope="session")
def docker_client():
    """One SDK client for the whole run (requires the daemon and TEST_IMAGE)."""
    require_docker()
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_sandbox_factory(docker_client, tmp_path_factory):
    """``make(workspace=None, *, start=True, **DockerSandbox kwargs) -> DockerSandbox``.

    Each sandbox gets a unique ``test-…`` session id (unless ``session_id=`` is given), a fresh tmp
    workspace unless one is passed, TEST_IMAGE and the shared client; every container it made is
    removed at the end of the run (call ``sandbox.stop()`` to remove one earlier).
    """
    import uuid

    from kimi_code.agent.config import secret_env_names
    from kimi_code.sandbox.docker import DockerSandbox

    made: list = []

    def make(workspace=None, *, start: bool = True, **kwargs):
        ws = workspace if workspace is not None else tmp_path_factory.mktemp("sandbox-ws")
        session_id = kwargs.pop("session_id", None) or f"test-{uuid.uuid4().hex[:12]}"
        kwargs.setdefault("image", TEST_IMAGE)
        kwargs.setdefault("client", docker_client)
        kwargs.setdefault("secret_env", secret_env_names())  # as kimi-code's own assembly passes them
        sandbox = DockerSandbox(session_id, ws, **kwargs)
        made.append(sandbox)
        if start:
            sandbox.start()
        return sandbox

    yield make
    for sandbox in made:
        try:
            sandbox.stop(remove=True)
        except Exception:  # noqa: BLE001 - best effort: also try by name below
            pass
        try:
            container = docker_client.containers.get(sandbox.name)
            if (container.labels or {}).get("kimi-code.managed") == "1":
                container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture
def remove_containers_under(tmp_path):
    """Remove, after the test, every kimi-code container whose workspace lies under ``tmp_path``
    (containers the CLI process created and a killed CLI could not remove)."""
    yield tmp_path
    try:
        import docker

        client = docker.from_env(timeout=30)
        for c in client.containers.list(all=True, filters={"label": "kimi-code.managed=1"}):
            if str((c.labels or {}).get("kimi-code.workspace", "")).startswith(str(tmp_path)):
                c.remove(force=True)
        client.close()
    except Exception:  # noqa: BLE001 - no daemon: nothing to clean
        pass


@pytest.fixture(scope="session")
def remote_engine():
    """A second real Docker engine that cannot see this machine's files (tests/remote_engine.py),
    with TEST_IMAGE loaded; removed with everything in it at the end of the run."""
    require_docker()
    from remote_engine import RemoteEngine

    try:
        engine = RemoteEngine(TEST_IMAGE).start()
    except RuntimeError as exc:
        if REQUIRE_DOCKER:
            pytest.fail(f"KIMI_CODE_REQUIRE_DOCKER=1 but the remote test engine is unavailable: {exc}", pytrace=False)
        pytest.skip(f"REMOTE ENGINE TESTS SKIPPED: {exc}")
    yield engine
    engine.stop()
