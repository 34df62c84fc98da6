"""Choosing and building the sandbox backend from the settings (agent-side: the sandbox package
knows nothing of kimi-code's settings or providers)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from kimi_code.sandbox.base import WORKSPACE, Sandbox, SandboxInfo
from kimi_code.sandbox.local import LocalSandbox

from .config import Settings, secret_env_names

LOCAL_WARNING = (
    "--sandbox none: commands run directly on this machine, with your permissions and no isolation"
)


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def make_sandbox(
    settings: Settings,
    session_id: str,
    workspace: Path,
    *,
    warn: Callable[[str], None] | None = None,
) -> Sandbox:
    """A DockerSandbox (default) or, for ``sandbox = "none"``, a LocalSandbox after a warning."""
    if settings.sandbox == "none":
        (warn or _stderr_warning)(LOCAL_WARNING)
        return LocalSandbox(session_id, workspace, default_timeout=settings.command_timeout,
                            secret_env=secret_env_names())
    from kimi_code.sandbox.docker import DockerSandbox  # the docker SDK only for a Docker sandbox

    return DockerSandbox(
        session_id,
        workspace,
        image=settings.image,
        network=settings.network,
        memory=settings.memory,
        cpus=settings.cpus,
        pids_limit=settings.pids_limit,
        ca_bundle=settings.ca_bundle,
        default_timeout=settings.command_timeout,
        secret_env=secret_env_names(),
    )


def planned_info(settings: Settings, session_id: str, workspace: Path) -> SandboxInfo:
    """What the sandbox :func:`make_sandbox` would make will look like, known without making it
    (no Docker round trip, no docker SDK import): the session's first event is written from this."""
    if settings.sandbox == "none":
        return SandboxInfo(backend="local", session_id=session_id, workspace=str(workspace),
                           host_workspace=str(workspace), network=True, status="created")
    return SandboxInfo(backend="docker", session_id=session_id, workspace=WORKSPACE, host_workspace=str(workspace),
                       image=settings.image, network=settings.network, status="created")
