"""Connecting to the Docker engine: the one client every Docker-using part of the sandbox starts from."""

from __future__ import annotations

import os

import docker
from docker.errors import DockerException

from .errors import SandboxError


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for the daemon ``DOCKER_HOST`` (or the default socket) names; one clear error if none."""
    try:
        # ssh:// through the ssh program (the SDK's own ssh transport needs paramiko).
        ssh = os.environ.get("DOCKER_HOST", "").startswith("ssh://")
        client = docker.from_env(timeout=timeout, use_ssh_client=ssh)
        client.ping()
        return client
    except DockerException as exc:
        raise SandboxError(explain_connect_error(exc)) from None


def explain_connect_error(exc: BaseException) -> str:
    text = str(exc)
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if "PermissionError" in text or "Permission denied" in text or "permission denied" in text:
        return (
            f"no permission to use the Docker socket ({where}): add your user to the 'docker' group "
            "(then log in again), or run with --sandbox none"
        )
    if any(s in text for s in ("FileNotFoundError", "No such file", "ConnectionRefused", "Connection refused")):
        return (
            f"the Docker daemon is not running ({where}): start it (e.g. `sudo systemctl start docker`), "
            "or run with --sandbox none"
        )
    first = text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
    return f"cannot reach the Docker daemon ({where}): {first}"
