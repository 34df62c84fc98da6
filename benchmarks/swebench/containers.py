"""One-shot containers: run a bash script over a bind-mounted work tree, collect output and exit code.

Used to build environment images and to grade; the agent's own sandbox is kimi-code's business.
Every container is labelled so an interrupted run's leftovers can be found and removed.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError

LABEL = "kimi-code-bench.managed"
WORKSPACE = "/workspace"
CA_IN_CONTAINER = "/etc/kimi-code-bench/ca-bundle.crt"
CA_VARS = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")


@dataclass
class ContainerRun:
    exit_code: int | None  # None: timed out (the container was killed)
    output: str
    duration: float

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def docker_client() -> Any:
    """The daemon's client, or one clear error."""
    try:
        from kimi_code.sandbox.docker import connect
    except ImportError as exc:  # pragma: no cover - kimi-code is installed with the repo
        raise BenchError(f"kimi-code is not installed: {exc}") from None
    from kimi_code.sandbox.errors import SandboxError

    try:
        return connect(timeout=300)
    except SandboxError as exc:
        raise BenchError(str(exc)) from None


def owner_of(path: Path) -> str:
    """uid:gid the container runs as: the work tree's owner (so files it writes stay the user's)."""
    st = path.stat()
    return f"{st.st_uid}:{st.st_gid}"


def ca_prelude(enabled: bool) -> str:
    """Shell lines making pip, git, curl and Python trust the mounted host CA bundle."""
    if not enabled:
        return ""
    return "".join(f"export {v}={CA_IN_CONTAINER}\n" for v in CA_VARS)


def run_script(client: Any, image: str, script: str, *, workspace: Path, network: bool, user: str,
               timeout: float, ca_bundle: Path | None = None, name_hint: str = "run",
               env: dict[str, str] | None = None, log_to: Path | None = None,
               echo: Callable[[str], None] | None = None) -> tuple[ContainerRun, Any]:
    """Run ``bash -c script`` in a new container of ``image``; returns the run and the (stopped,
    not yet removed) container so the caller can commit it. The caller removes it. With
    ``log_to`` the output is written to that file as it comes (a long build can be followed with
    tail -f), and ``echo`` gets each line too (--verbose)."""
    import time

    from docker.errors import APIError, ImageNotFound
    from docker.types import Mount

    mounts = [Mount(target=WORKSPACE, source=str(workspace.resolve()), type="bind")]
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise BenchError(f"CA bundle {ca_bundle} does not exist")
        mounts.append(Mount(target=CA_IN_CONTAINER, source=str(ca_bundle.resolve()), type="bind", read_only=True))
    kwargs: dict[str, Any] = dict(
        command=["bash", "-c", script], name=f"kimi-code-bench-{name_hint}-{uuid.uuid4().hex[:8]}",
        labels={LABEL: "1"}, detach=True, init=True, user=user, working_dir=WORKSPACE, mounts=mounts,
        environment={"HOME": "/tmp", "LANG": "C.UTF-8", **(env or {})}, mem_limit=os.environ.get("KIMI_BENCH_MEMORY", "8g"),
    )
    if not network:
        kwargs["network_mode"] = "none"
    try:
        container = client.containers.create(image, **kwargs)
    except ImageNotFound:
        raise BenchError(f"image {image} is not available (docker pull it, or pass --image)") from None
    except APIError as exc:
        raise BenchError(f"cannot create a container from {image}: {exc.explanation or exc}") from None
    start = time.monotonic()
    code: int | None
    follower: threading.Thread | None = None
    try:
        container.start()
        if log_to is not None:
            follower = threading.Thread(target=_follow, args=(container, log_to, echo), daemon=True)
            follower.start()
        try:
            code = int(container.wait(timeout=timeout).get("StatusCode", 1))
        except Exception:  # noqa: BLE001 - requests' ReadTimeout: the script ran too long
            code = None
            try:
                container.kill()
            except APIError:
                pass
        if follower is not None:
            follower.join(timeout=30)
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    except BaseException:
        remove(container)
        raise
    return ContainerRun(code, output, time.monotonic() - start), container


def _follow(container: Any, path: Path, echo: Callable[[str], None] | None) -> None:
    """Copy the container's output to ``path`` while it runs (and each line to ``echo``)."""
    pending = b""
    try:
        with open(path, "wb") as fh:
            for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
                fh.write(chunk)
                fh.flush()
                if echo is not None:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        echo(line.decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - the log on disk is a convenience; the run's output is read after
        pass


def remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def run_and_remove(client: Any, image: str, script: str, **kwargs: Any) -> ContainerRun:
    run, container = run_script(client, image, script, **kwargs)
    remove(container)
    return run
