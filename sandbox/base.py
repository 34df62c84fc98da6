"""The one interface every execution backend implements.

The agent never assumes how files reach the sandbox: today the workspace is a bind mount (Docker)
or the host directory itself (local); a remote engine or a Kubernetes pod can implement the same
protocol later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

# The images kimi-code builds, and what `sandbox build` starts from (here, not in images.py, so
# naming them does not import the docker SDK).
BUILD_TAG = "kimi-code-sandbox:latest"
OFFLINE_TAG = "kimi-code-sandbox:offline"
BASE_IMAGE = "debian:bookworm-slim"

DEFAULT_TIMEOUT = 120.0
# Output above this many characters is cut in the middle; the full text is saved in the sandbox.
DEFAULT_OUTPUT_CAP = 30_000
WORKSPACE = "/workspace"


@dataclass
class ExecResult:
    """What one command did. ``output`` is stdout and stderr interleaved, decoded leniently."""

    output: str
    exit_code: int
    duration: float
    timed_out: bool = False
    truncated: bool = False
    # Where the full output was saved (a path inside the sandbox) when it was cut.
    full_output_path: str | None = None
    # The shell had to be restarted (after a timeout it could not recover from, or a crash).
    shell_restarted: bool = False
    # The container had died and was restarted: state outside the workspace was lost.
    sandbox_restarted: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SandboxInfo:
    backend: str  # "docker" | "local"
    session_id: str
    workspace: str  # path of the workspace as commands see it
    host_workspace: str  # path of the workspace on the host
    container_id: str | None = None
    container_name: str | None = None
    image: str | None = None
    os_release: str | None = None
    network: bool = False
    status: str = "unknown"
    workspace_mode: str = "mount"  # "copy": the container holds its own working copy


@runtime_checkable
class Sandbox(Protocol):
    """Where the agent's commands run."""

    def start(self) -> SandboxInfo:
        """Create (or reuse a live one for the same session) and start the sandbox."""
        ...

    def reattach(self) -> bool:
        """Attach to the session's existing sandbox; False when there is none left to attach to."""
        ...

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        """Run ``command`` in the persistent shell; stdin is at end-of-file."""
        ...

    def stop(self, remove: bool = True) -> None:
        """End the sandbox; ``remove=False`` keeps it for a later reattach."""
        ...

    def info(self) -> SandboxInfo:
        ...

    def workspace_written(self, paths: list[str]) -> None:
        """File tools wrote these workspace paths on the host; a sandbox holding its own copy of
        the workspace (``workspace = "copy"``) takes them in before the next command."""
        ...

    def sync_workspace(self) -> object | None:
        """Bring the sandbox's own copy of the workspace back to the host (None: nothing to do)."""
        ...
