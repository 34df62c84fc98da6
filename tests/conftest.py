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
