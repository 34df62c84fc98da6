"""One-shot containers: run a bash script over a work tree, collect output and exit code.

Used to build environment images and to grade; the agent's own sandbox is kimi-code's business.
Every container is labelled so an interrupted run's leftovers can be found and removed.

The work tree reaches the container as a bind mount when the engine is this machine's own, and
otherwise (``--docker-host`` naming an engine elsewhere, which cannot see this machine's paths)
as a tar stream through the Engine API's archive call before the container starts; what the
caller needs back comes out the same way (``get_archive``), never through a host path.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchError

LABEL = "kimi-code-bench.managed"
WORK_DIR_LABEL = "kimi-code-bench.work-dir"  # the run's --work-dir: whose container it is
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


def shares_host_files(url: str | None) -> bool:
    """Whether an engine sees this machine's paths: the default engine or a unix:// (npipe://)
    socket does; a tcp:// or ssh:// one may be anywhere. The same rule kimi-code's
    ``workspace = "auto"`` applies (agent/assembly.py, workspace_mode), so the agent's sandbox and
    these containers agree on where the files are."""
    host = (url or "").strip()
    return not host or host.startswith(("unix://", "npipe://"))


@dataclass
class Engine:
    """The Docker engine a run uses: its client, its URL (None: DOCKER_HOST or the local socket)
    and whether it sees this machine's files (bind mounts) or needs them copied in."""

    client: Any
    url: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # put on every container made here

    @property
    def local_files(self) -> bool:
        return shares_host_files(self.url)


def docker_client(url: str | None = None) -> Any:
    """The daemon's client (the one ``url`` names, else DOCKER_HOST's or the local socket's), or
    one clear error."""
    if url:
        import docker
        from docker.errors import DockerException

        try:
            client = docker.DockerClient(base_url=url, timeout=300)
            client.ping()
            return client
        except DockerException as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
            raise BenchError(f"cannot reach the Docker engine {url}: {first[:200]}") from None
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


def run_script(engine: Engine, image: str, script: str, *, workspace: Path | None, network: bool, user: str,
               timeout: float, ca_bundle: Path | None = None, name_hint: str = "run",
               env: dict[str, str] | None = None, log_to: Path | None = None,
               echo: Callable[[str], None] | None = None, copy_back: bool = False,
               files: dict[str, bytes] | None = None, working_dir: str = WORKSPACE) -> tuple[ContainerRun, Any]:
    """Run ``bash -c script`` in a new container of ``image``; returns the run and the (stopped,
    not yet removed) container so the caller can commit it. The caller removes it.

    ``workspace`` (a host directory) is the container's /workspace: bind-mounted on an engine that
    sees this machine's files, else copied in before the start, and with ``copy_back`` copied out
    over the host directory afterwards (a mount needs nothing back). ``files`` (absolute path ->
    content) are copied in on any engine. With ``log_to`` the output is written to that file as
    it comes (a long build can be followed with tail -f), and ``echo`` gets each line (--verbose)."""
    import time

    from docker.errors import APIError, ImageNotFound
    from docker.types import Mount

    if ca_bundle is not None and not ca_bundle.is_file():
        raise BenchError(f"CA bundle {ca_bundle} does not exist")
    copy_in = workspace is not None and not engine.local_files
    mounts = []
    if workspace is not None and not copy_in:
        mounts.append(Mount(target=WORKSPACE, source=str(workspace.resolve()), type="bind"))
    extra = dict(files or {})
    if ca_bundle is not None:
        if copy_in or workspace is None:
            extra[CA_IN_CONTAINER] = ca_bundle.read_bytes()
        else:
            mounts.append(Mount(target=CA_IN_CONTAINER, source=str(ca_bundle.resolve()), type="bind", read_only=True))
    kwargs: dict[str, Any] = dict(
        command=["bash", "-c", script], name=f"kimi-code-bench-{name_hint}-{uuid.uuid4().hex[:8]}",
        labels={**engine.labels, LABEL: "1"}, detach=True, init=True, user=user, working_dir=working_dir, mounts=mounts,
        environment={"HOME": "/tmp", "LANG": "C.UTF-8", **(env or {})}, mem_limit=os.environ.get("KIMI_BENCH_MEMORY", "8g"),
    )
    if not network:
        kwargs["network_mode"] = "none"
    try:
        container = engine.client.containers.create(image, **kwargs)
    except ImageNotFound:
        raise BenchError(f"image {image} is not available (docker pull it, or pass --image)") from None
    except APIError as exc:
        raise BenchError(f"cannot create a container from {image}: {exc.explanation or exc}") from None
    start = time.monotonic()
    code: int | None
    follower: threading.Thread | None = None
    try:
        if copy_in:
            assert workspace is not None
            put_tree(container, workspace, WORKSPACE)
        if extra:
            put_files(container, extra)
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
        if copy_in and copy_back and code is not None:
            assert workspace is not None
            get_tree(container, WORKSPACE, workspace)
    except BaseException:
        remove(container)
        raise
    return ContainerRun(code, output, time.monotonic() - start), container


def _dir_entries(path: str) -> list[tarfile.TarInfo]:
    """Tar entries for every parent directory of ``path`` (relative), so extraction creates them."""
    parts = path.strip("/").split("/")[:-1]
    out = []
    for i in range(len(parts)):
        d = tarfile.TarInfo("/".join(parts[: i + 1]))
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        out.append(d)
    return out


def put_files(container: Any, files: dict[str, bytes]) -> None:
    """Copy ``files`` (absolute path -> content) into a created container, parents included."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        seen: set[str] = set()
        for path, data in files.items():
            for d in _dir_entries(path):
                if d.name not in seen:
                    seen.add(d.name)
                    tar.addfile(d)
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    if not container.put_archive("/", buf.getvalue()):
        raise BenchError(f"cannot copy {', '.join(files)} into the container")


def put_tree(container: Any, tree: Path, target: str) -> None:
    """Copy a host directory (everything in it, .git included, owners and modes kept) into the
    created container at ``target``, through a temporary tar file (a repository can be large)."""
    with tempfile.TemporaryFile() as fh:
        with tarfile.open(fileobj=fh, mode="w") as tar:
            for d in _dir_entries(target):
                tar.addfile(d)
            tar.add(str(tree), arcname=target.strip("/"), recursive=True)
        fh.seek(0)
        if not container.put_archive("/", fh):
            raise BenchError(f"cannot copy {tree} into the container")


def get_tree(container: Any, source: str, dest: Path) -> None:
    """Copy the container's ``source`` directory out over the host directory ``dest`` (files the
    container created or changed; members that would land outside ``dest`` are skipped)."""
    stream, _ = container.get_archive(source)
    with tempfile.TemporaryFile() as fh:
        for chunk in stream:
            fh.write(chunk)
        fh.seek(0)
        root = os.path.basename(source.rstrip("/"))
        with tarfile.open(fileobj=fh, mode="r") as tar:
            for member in tar:
                name = member.name
                if name != root and not name.startswith(root + "/"):
                    continue
                member.name = name[len(root) + 1:] if name != root else "."
                if member.name == ".":
                    continue
                try:
                    member = tarfile.data_filter(member, str(dest))
                except tarfile.FilterError:
                    continue
                target = dest / member.name
                if target.is_dir() and not target.is_symlink() and not member.isdir():
                    shutil.rmtree(target)
                elif (target.exists() or target.is_symlink()) and not (member.isdir() and target.is_dir()):
                    target.unlink()
                tar.extract(member, str(dest), set_attrs=not member.isdir(), filter="fully_trusted")


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


def run_and_remove(engine: Engine, image: str, script: str, **kwargs: Any) -> ContainerRun:
    run, container = run_script(engine, image, script, **kwargs)
    remove(container)
    return run
