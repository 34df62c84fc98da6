"""The Docker backend: one labelled container per session, commands through a persistent shell.

Everything goes through the docker SDK (no docker CLI), so a remote engine (``DOCKER_HOST``) works
the same as the local socket. The container is the session's: it is named and labelled with the
session id, survives a crash of the CLI (``reattach`` finds it again), and is the only container this
module ever modifies — anything without our labels is refused, never touched.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import shlex
import socket
import sys
import tarfile
import time
from datetime import datetime, timezone
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from .engine import connect, explain_connect_error  # noqa: F401 - also imported from here
from .errors import SandboxError
from .base import DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT, WORKSPACE, ExecResult, SandboxInfo
from .host_tree import linked_worktree
from .workspace_sync import SyncReport, WorkspaceSync
from .images import ensure_image, require_image
from .seccomp import security_opt as no_setid_security_opt
from .shell import Channel, PersistentShell, SideRunError

log = logging.getLogger(__name__)

NAME_PREFIX = "kimi-code-"
LABEL_MANAGED = "kimi-code.managed"
LABEL_SESSION = "kimi-code.session"
LABEL_WORKSPACE = "kimi-code.workspace"
LABEL_CREATED = "kimi-code.created"
LABEL_IMAGE = "kimi-code.image"
LABEL_MODE = "kimi-code.workspace-mode"  # "copy" when the container holds the working copy
LABEL_OWNER = "kimi-code.owner"  # user@host that made it: `sandbox ls/prune` on a shared engine keep to their own


def owner_id() -> str:
    """This user on this machine, as the owner label records it."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no name for this uid
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"

# Writable for any uid, so HOME works even when the uid has no passwd entry in the image.
SANDBOX_HOME = "/tmp/kimi-home"
# Per-shell state and saved command outputs, inside the container.
STATE_DIR = "/tmp/kimi-code"
# Where a host CA bundle is copied, and the variables that make common tools trust it.
CA_PATH = "/etc/kimi-code/ca-bundle.crt"
CA_ENV_VARS = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CURL_CA_BUNDLE",
)


def container_name(session_id: str) -> str:
    """Docker allows ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``; anything else becomes ``-``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", session_id).strip("-.") or "session"
    return (NAME_PREFIX + safe)[:200]


def _api_error(what: str, exc: APIError) -> SandboxError:
    detail = exc.explanation if isinstance(exc.explanation, str) else str(exc)
    detail = " ".join(str(detail).split())
    return SandboxError(f"{what}: {detail}")


# Clears setuid/setgid bits on workspace files (run inside the container, as its user): once when
# a root sandbox ends, and after every command only in a root container made by a version of
# kimi-code before the no-setid seccomp profile (see seccomp.py), which may still be reattached.
def setid_sweep(workspace: str) -> str:
    return f"find {shlex.quote(workspace)} -xdev -type f -perm /6000 -exec chmod ug-s {{}} + 2>/dev/null; true"


SETID_SWEEP = setid_sweep(WORKSPACE)


def _is_root(user: str) -> bool:
    return user.split(":")[0] in ("", "0", "root")


def default_user(workspace: Path) -> str:
    """The host user's uid:gid; when that is root, the workspace owner's (so a root-run agent
    working on a user's repository still leaves files owned by that user)."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        st = workspace.stat()
        uid, gid = st.st_uid, st.st_gid
    return f"{uid}:{gid}"


class _ExecChannel:
    """The hijacked socket of a ``docker exec``: frames demultiplexed, stdout returned."""

    def __init__(self, api: docker.APIClient, exec_id: str, sock: Any) -> None:
        self._api = api
        self.exec_id = exec_id
        self._io = sock
        self._raw = getattr(sock, "_sock", sock)  # unix: SocketIO wraps the socket
        self._pending = bytearray()
        self.stderr = bytearray()
        self._eof = False

    def send(self, data: bytes) -> None:
        self._raw.settimeout(30.0)
        self._raw.sendall(data)

    def _take(self) -> bytes:
        out = bytearray()
        while len(self._pending) >= 8:
            size = int.from_bytes(self._pending[4:8], "big")
            if len(self._pending) < 8 + size:
                break
            stream = self._pending[0]
            payload = self._pending[8 : 8 + size]
            del self._pending[: 8 + size]
            if stream == 2:
                self.stderr += payload
                del self.stderr[:-65536]
            else:
                out += payload
        return bytes(out)

    def recv(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            out = self._take()
            if out:
                return out
            if self._eof:
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            data = self._read(remaining)
            if data is None:
                return None
            if not data:
                self._eof = True
            else:
                self._pending += data

    def _read(self, timeout: float) -> bytes | None:
        """Up to 64 KiB from the socket: None when nothing came within ``timeout``, b"" at its end."""
        self._raw.settimeout(timeout)
        try:
            return self._raw.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            return None
        except OSError:
            return b""

    def close_input(self) -> None:
        """End the process's stdin (the socket's write half); its output can still be read."""
        try:
            self._raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for fn in (lambda: self._raw.shutdown(socket.SHUT_RDWR), self._raw.close, self._io.close):
            try:
                fn()
            except Exception:  # noqa: BLE001 - closing a dead socket must not raise
                pass

    def exit_code(self) -> int | None:
        deadline = time.monotonic() + 2.0
        while True:
            try:
                state = self._api.exec_inspect(self.exec_id)
            except (APIError, DockerException):
                return None
            if not state.get("Running") or time.monotonic() > deadline:
                return state.get("ExitCode")
            time.sleep(0.05)


class _ProcessChannel(_ExecChannel):
    """A ``docker exec`` whose stdin and stdout are used from two threads at once (an MCP server:
    requests are written while answers are read). The socket stays in blocking mode (a timeout set
    by one thread would cut the other's call short); reading waits with ``select`` instead."""

    def __init__(self, api: docker.APIClient, exec_id: str, sock: Any) -> None:
        super().__init__(api, exec_id, sock)
        self._raw.settimeout(None)

    def send(self, data: bytes) -> None:
        self._raw.sendall(data)

    def _read(self, timeout: float) -> bytes | None:
        pending = getattr(self._raw, "pending", None)  # TLS: bytes already decrypted
        if not (callable(pending) and pending()):
            try:
                ready, _, _ = select.select([self._raw], [], [], timeout)
            except (OSError, ValueError):
                ready = [self._raw]  # closed under us: recv says so
            if not ready:
                return None
        try:
            return self._raw.recv(1 << 16)
        except OSError:
            return b""


class DockerSandbox:
    """A session's container and its persistent shell. ``secret_env`` names variables (the model
    API keys) that are never passed into the container, even when given in ``env``."""

    backend = "docker"

    def __init__(
        self,
        session_id: str,
        workspace: Path,
        *,
        image: str,
        network: bool = False,
        memory: str = "4g",
        cpus: float = 2.0,
        pids_limit: int = 1024,
        ca_bundle: Path | None = None,
        env: dict[str, str] | None = None,
        secret_env: Iterable[str] = (),
        default_timeout: float = DEFAULT_TIMEOUT,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        user: str | None = None,
        kill_grace: float | None = None,
        client: docker.DockerClient | None = None,
        workspace_mode: str = "mount",
        workspace_path: str = WORKSPACE,
        sync_stamp: Path | None = None,
    ) -> None:
        self.session_id = session_id
        self.workspace = Path(workspace).resolve()
        self.image = image
        self.network = network
        self.memory = memory
        self.cpus = cpus
        self.pids_limit = pids_limit
        self.ca_bundle = Path(ca_bundle).expanduser() if ca_bundle else None
        self.default_timeout = default_timeout
        self.output_cap = output_cap
        self.name = container_name(session_id)
        if workspace_mode not in ("mount", "copy"):
            raise SandboxError(f"unknown workspace mode {workspace_mode!r}: use mount or copy")
        if workspace_path.rstrip("/") in ("", "/tmp", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin") \
                or workspace_path.startswith(("/tmp/kimi-code", "/proc/", "/sys/", "/dev/")):
            raise SandboxError(f"workspace_path {workspace_path!r} cannot hold the workspace: use a directory "
                               "of its own, e.g. /workspace")
        self.workspace_mode = workspace_mode
        self.workspace_path = workspace_path.rstrip("/") or "/"
        self._sync_stamp = sync_stamp
        self._sync: WorkspaceSync | None = None
        self._seeded = False
        self.reconciled: tuple[SyncReport, SyncReport] | None = None  # what a reattach reconciled
        self._sync_failed = False  # the last pull failed (the container may hold unsynced work)
        self._user = user
        secrets_ = self._secret_env = frozenset(secret_env)
        dropped = sorted(k for k in (env or {}) if k in secrets_)
        if dropped:
            log.warning("not passing %s into the sandbox", ", ".join(dropped))
        self._extra_env = {k: v for k, v in (env or {}).items() if k not in secrets_}
        self._client = client
        self._container: Any = None
        self._os_release: str | None = None
        self._status = "created"
        self._oom_seen = 0
        self._sweep_each_command = False
        kwargs = {} if kill_grace is None else {"kill_grace": kill_grace}
        self._shell = PersistentShell(self, state_dir=STATE_DIR, cwd=self.workspace_path, output_cap=output_cap, **kwargs)

    # -- connection and lookup ---------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect()
        return self._client

    @property
    def container(self) -> Any:
        if self._container is None:
            raise SandboxError("the sandbox is not started")
        return self._container

    def _find(self) -> Any | None:
        """This session's container, or None; refuses a same-named container we did not create."""
        try:
            container = self.client.containers.get(self.name)
        except NotFound:
            return None
        except APIError as exc:
            raise _api_error("cannot look up the sandbox container", exc) from None
        labels = container.labels or {}
        if labels.get(LABEL_MANAGED) != "1" or labels.get(LABEL_SESSION) != self.session_id:
            raise SandboxError(
                f"a container named {self.name} exists but was not created by kimi-code for session "
                f"{self.session_id}; it was left alone: remove or rename it"
            )
        mode = labels.get(LABEL_MODE) or "mount"
        if mode != self.workspace_mode:
            raise SandboxError(
                f"the sandbox container {self.name} of session {self.session_id} was made with workspace = "
                f"{mode}, not {self.workspace_mode}: resume with --workspace {mode}, or remove it with "
                "`kimi-code sandbox prune --all`"
            )
        mounted = labels.get(LABEL_WORKSPACE)
        if mounted and mounted != str(self.workspace):
            raise SandboxError(
                f"the sandbox container {self.name} of session {self.session_id} mounts {mounted}, "
                f"not {self.workspace}: run from that directory, or remove it with `kimi-code sandbox prune --all`"
            )
        return container

    # -- creation ----------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """The container's whole environment from the host: an allow-list, never os.environ."""
        env = {
            "HOME": SANDBOX_HOME,
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PAGER": "cat",
            "GIT_PAGER": "cat",
            "KIMI_CODE_SANDBOX": "docker",
        }
        if self.ca_bundle:
            env.update({name: CA_PATH for name in CA_ENV_VARS})
        env.update(self._extra_env)
        return env

    def _ca_archive(self) -> bytes:
        assert self.ca_bundle is not None
        try:
            data = self.ca_bundle.read_bytes()
        except OSError as exc:
            raise SandboxError(f"cannot read the CA bundle {self.ca_bundle}: {exc.strerror}") from None
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            parent = os.path.dirname(CA_PATH).lstrip("/")
            for i, part in enumerate(parent.split("/")):
                d = tarfile.TarInfo("/".join(parent.split("/")[: i + 1]))
                d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                tar.addfile(d)
            info = tarfile.TarInfo(CA_PATH.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def _mounts(self) -> list[Mount]:
        """The workspace read-write, and its ``.git`` directory read-only on top.

        kimi-code runs git on the host against this repository (checkpoints, list_files, search).
        A writable ``.git`` would let code in the sandbox plant hooks, an fsmonitor command, filter
        or diff drivers, or config includes that the host's git would then execute: a way out of
        the sandbox. Read-only, the agent can still inspect history (status, diff, log, show,
        blame) but not change refs; its work is recorded by kimi-code's checkpoints instead.
        """
        if self.workspace_mode == "copy":
            return []  # the container holds its own copy (workspace_sync.py)
        target = self.workspace_path
        mounts = [Mount(target=target, source=str(self.workspace), type="bind", read_only=False)]
        git_dir = self.workspace / ".git"
        if git_dir.is_symlink():
            return mounts
        if git_dir.is_dir() or git_dir.is_file():
            # A .git file (a linked worktree, a submodule) is held read-only too: rewritten, it
            # would point the host's git at a directory of the sandbox's making.
            mounts.append(Mount(target=f"{target}/.git", source=str(git_dir), type="bind", read_only=True))
        worktree = linked_worktree(self.workspace)
        if worktree is not None:
            # The main repository's git directory, read-only, where git in the container will
            # look for it (the path the .git file names, resolved from the workspace's path),
            # unless that is inside the workspace, which a mount point would change on the host.
            inside = worktree.container_common_dir(target)
            if not (inside == target or inside.startswith(target.rstrip("/") + "/")):
                mounts.append(Mount(target=inside, source=str(worktree.common_dir), type="bind", read_only=True))
        return mounts

    def _create(self) -> Any:
        if not self.workspace.is_dir():
            raise SandboxError(f"workspace {self.workspace} is not a directory")
        if self.ca_bundle and not self.ca_bundle.is_file():
            raise SandboxError(f"CA bundle {self.ca_bundle} does not exist")
        ensure_image(self.client, self.image, on_notice=lambda text: print(f"kimi-code: {text}", file=sys.stderr))
        user = self._user or default_user(self.workspace)
        labels = {
            LABEL_MANAGED: "1",
            LABEL_SESSION: self.session_id,
            LABEL_WORKSPACE: str(self.workspace),
            LABEL_CREATED: datetime.now(timezone.utc).isoformat(timespec="seconds"),
            LABEL_IMAGE: self.image,
            LABEL_MODE: self.workspace_mode,
            LABEL_OWNER: owner_id(),
        }
        kwargs: dict[str, Any] = dict(
            command=["sh", "-c", 'mkdir -p "$HOME" 2>/dev/null; exec sleep infinity'],
            name=self.name,
            labels=labels,
            detach=True,
            init=True,
            user=user,
            working_dir="/" if self.workspace_mode == "copy" else self.workspace_path,
            environment=self.environment(),
            mounts=self._mounts(),
            mem_limit=self.memory,
            memswap_limit=self.memory,
            nano_cpus=int(self.cpus * 1e9),
            pids_limit=self.pids_limit,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", *([no_setid_security_opt()] if _is_root(user) else [])],
            privileged=False,
            hostname="sandbox",
        )
        if not self.network:
            kwargs["network_mode"] = "none"
        try:
            container = self.client.containers.create(self.image, **kwargs)
        except ImageNotFound:
            require_image(self.client, self.image)
            raise
        except APIError as exc:
            if self.workspace_mode == "mount" and "bind source path does not exist" in str(exc.explanation or exc):
                # An engine that is not on this machine (a forwarded socket, a VM that does not
                # share this path): it cannot mount what it cannot see.
                raise SandboxError(f"the Docker engine cannot see {self.workspace} (it is not on this machine, or "
                                   f"does not share that path): run with --workspace copy, which copies the "
                                   f"workspace in and brings changes back") from None
            raise _api_error(f"cannot create the sandbox container {self.name}", exc) from None
        try:
            if self.ca_bundle:
                container.put_archive("/", self._ca_archive())
            container.start()
            if self.workspace_mode == "copy":
                self._container = container
                self._syncer().seed()
                self._seeded = True
        except (APIError, SandboxError) as exc:
            try:
                container.remove(force=True)
            except APIError:
                pass
            if isinstance(exc, SandboxError):
                raise
            raise _api_error(f"cannot start the sandbox container {self.name}", exc) from None
        return container

    def _ensure_running(self, container: Any) -> None:
        container.reload()
        if container.status != "running":
            try:
                container.start()
            except APIError as exc:
                raise _api_error(f"cannot start the sandbox container {self.name}", exc) from None
            container.reload()

    # -- Sandbox protocol --------------------------------------------------------------------
    def start(self) -> SandboxInfo:
        """Create the session's container, or reuse the one already there, and open a shell."""
        container = self._find()
        if container is None:
            container = self._create()
        else:
            self._ensure_running(container)
        self._attach(container)
        return self.info()

    def reattach(self) -> bool:
        """Find the session's container (after a crash or --keep-sandbox), start it if stopped,
        and open a new shell; False when there is none."""
        container = self._find()
        if container is None:
            return False
        self._ensure_running(container)
        self._attach(container)
        return True

    def _attach(self, container: Any) -> None:
        self._container = container
        self._sweep_each_command = self._runs_as_root() and not self._has_no_setid_profile()
        if self._sweep_each_command:
            log.warning("sandbox %s predates the no-setid seccomp profile: sweeping setuid bits after "
                        "every command (remove it with `kimi-code sandbox prune` for full speed)", self.name)
            self._strip_setid_bits()
        if self.workspace_mode == "copy" and not self._seeded:
            self._reconcile()
        self._seeded = False
        self._shell.start()
        self._status = "running"
        self._oom_seen = self._oom_kills() or 0

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        if self._status == "stopped":
            raise SandboxError("the sandbox was stopped")
        if self._container is None:
            self.start()
        result = self._shell.run(command, self.default_timeout if timeout is None else timeout)
        if self._sweep_each_command:
            self._strip_setid_bits()
        if self.workspace_mode == "copy":
            self._pull_into(result)
        if result.exit_code == 137 and not result.sandbox_restarted:
            kills = self._oom_kills()
            if kills is not None and kills > self._oom_seen:
                result.notes.append(
                    f"a process was killed for exceeding the sandbox memory limit ({self.memory})"
                )
                self._oom_seen = kills
        return result

    # -- a copied workspace (workspace_mode "copy") -------------------------------------------
    def _syncer(self) -> WorkspaceSync:
        if self._sync is None:
            user = self._user or default_user(self.workspace)
            uid, _, gid = user.partition(":")
            owner = (int(uid), int(gid or uid)) if uid.isdigit() and (gid or uid).isdigit() else (0, 0)
            st = self.workspace.stat()
            self._sync = WorkspaceSync(self, self.workspace, self.workspace_path, stamp_file=self._sync_stamp,
                                       owner=owner, host_owner=(st.st_uid, st.st_gid))
        return self._sync

    def tar_in(self, path: str, data: Any) -> None:
        """Extract a tar into ``path`` in the container (the engine's archive call, no host path)."""
        try:
            if not self.container.put_archive(path, data):
                raise SandboxError(f"the engine refused to copy files into {path} in the sandbox")
        except NotFound:
            raise SandboxError(f"cannot copy files into the sandbox: {path} or the container is gone") from None
        except APIError as exc:
            raise _api_error("cannot copy files into the sandbox", exc) from None

    def _copied_note(self) -> str:
        if self.workspace_mode != "copy":
            return ""
        return "; the workspace was copied in again from the host (as of the last command's end)"

    def _reconcile(self) -> None:
        pulled, pushed = self._syncer().reconcile()
        if pulled.changed or pushed.changed:
            log.info("workspace reconciled with the sandbox: %d from it, %d to it", pulled.changed, pushed.changed)
        self.reconciled = (pulled, pushed)

    def _pull_into(self, result: ExecResult) -> None:
        try:
            report = self._syncer().pull()
        except SandboxError as exc:
            self._sync_failed = True
            result.notes.append(f"the workspace could not be brought back from the sandbox: {exc}")
            return
        self._sync_failed = False
        if report.refused:
            shown = "; ".join(report.refused[:5]) + (" …" if len(report.refused) > 5 else "")
            result.notes.append(f"not copied back from the sandbox: {shown}")

    def sync_workspace(self) -> SyncReport | None:
        """Bring what changed in the container's copy to the host's (copy mode; None otherwise)."""
        if self.workspace_mode != "copy" or self._container is None:
            return None
        return self._syncer().pull()

    def workspace_written(self, paths: list[str]) -> None:
        """A file tool wrote these workspace paths on the host: in copy mode, send them in now."""
        if self.workspace_mode != "copy" or self._container is None:
            return
        report = self._syncer().push(paths)
        if report.refused:
            raise SandboxError("the sandbox refused to place " + ", ".join(report.refused[:5])
                               + " (a directory on the way is a symlink in the sandbox)")

    def _oom_kills(self) -> int | None:
        """How many processes the kernel killed for memory in this container (cgroup v1 or v2)."""
        script = "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null"
        try:
            _, out = self.run_side(["sh", "-c", script], 10.0)
        except SandboxError:
            return None
        for line in out.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return None

    def _runs_as_root(self) -> bool:
        if self._container is None:
            return False
        return _is_root(str((self._container.attrs.get("Config") or {}).get("User") or "0"))

    def _has_no_setid_profile(self) -> bool:
        opts = (self._container.attrs.get("HostConfig") or {}).get("SecurityOpt") or []
        return any(isinstance(o, str) and o.startswith("seccomp=") and "fchmodat" in o for o in opts)

    def _strip_setid_bits(self) -> None:
        """A container running as root (the CLI run as root on a root-owned workspace, as in CI)
        gets a seccomp profile that refuses setuid/setgid bits (seccomp.py). Before the sandbox
        ends, clear any such bits anyway (defence in depth: one ``find``, not one per command)."""
        if not self._runs_as_root():
            return
        try:
            self.run_side(["sh", "-c", setid_sweep(self.workspace_path)], 60.0)
        except SandboxError as exc:
            log.warning("could not clear setuid bits in the workspace: %s", exc)

    def stop(self, remove: bool = True) -> None:
        """Close the shell; remove the container, or with ``remove=False`` stop it for a later reattach."""
        if self._container is not None and self._status != "stopped":
            self._strip_setid_bits()
            if self.workspace_mode == "copy":
                try:
                    self.sync_workspace()  # what background processes wrote since the last command
                    self._sync_failed = False
                except SandboxError as exc:
                    self._sync_failed = True
                    log.warning("could not bring the last changes back from the sandbox: %s", exc)
                if self._sync_failed and remove:
                    # Its copy may hold the only copy of some work: keep the container.
                    remove = False
                    print(f"kimi-code: the sandbox's last changes could not be brought back; its container "
                          f"{self.name} is kept (stopped): `kimi-code resume` reattaches it and tries again",
                          file=sys.stderr)
        if self._sync is not None:
            self._sync.close()
        self._shell.close()
        self._status = "stopped"
        container, self._container = self._container, None
        if container is None:
            container = self._find() if remove else None
            if container is None:
                return
        try:
            if remove:
                container.remove(force=True)
            else:
                container.stop(timeout=5)
        except NotFound:
            pass
        except APIError as exc:
            raise _api_error(f"cannot {'remove' if remove else 'stop'} {self.name}", exc) from None

    def info(self) -> SandboxInfo:
        status = self._status
        cid = None
        if self._container is not None:
            cid = self._container.id
            try:
                self._container.reload()
                status = self._container.status
            except (APIError, DockerException):
                status = "unknown"
            if self._os_release is None and status == "running":
                self._os_release = self._read_os_release()
        return SandboxInfo(
            backend="docker",
            session_id=self.session_id,
            workspace=self.workspace_path,
            host_workspace=str(self.workspace),
            container_id=cid,
            container_name=self.name,
            image=self.image,
            os_release=self._os_release,
            network=self.network,
            status=status,
            workspace_mode=self.workspace_mode,
        )

    def _read_os_release(self) -> str | None:
        try:
            code, out = self.run_side(["cat", "/etc/os-release"], 10.0)
        except SandboxError:
            return None
        for line in out.decode("utf-8", "replace").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
        return None

    # -- ShellHost -----------------------------------------------------------------------------
    def _exec_socket(self, argv: list[str], *, stdin: bool, workdir: str | None = None,
                     environment: dict[str, str] | None = None,
                     channel: type[_ExecChannel] = _ExecChannel) -> _ExecChannel:
        api = self.client.api
        try:
            exec_id = api.exec_create(
                self.container.id, argv, stdin=stdin, stdout=True, stderr=True, tty=False, workdir=workdir,
                environment=environment or None,
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        except NotFound:
            raise SideRunError("the sandbox container is gone") from None
        except APIError as exc:
            raise SideRunError(" ".join(str(exc.explanation or exc).split())) from None
        return channel(api, exec_id, sock)

    def open_process(self, argv: list[str], *, env: dict[str, str] | None = None,
                     cwd: str | None = None) -> _ExecChannel:
        """Start ``argv`` in the container with its standard streams attached, for a program that
        talks over them (an MCP server): ``send`` writes its stdin, ``recv`` reads its stdout,
        ``close_input`` ends its stdin, ``stderr`` keeps the tail of its stderr. It runs as the
        container's user with the container's environment plus ``env`` (never a secret variable);
        a relative ``cwd`` is taken inside the workspace."""
        if self._container is None:
            raise SandboxError("the sandbox is not started")
        dropped = sorted(k for k in (env or {}) if k in self._secret_env)
        if dropped:
            log.warning("not passing %s into the sandbox", ", ".join(dropped))
        environment = {k: v for k, v in (env or {}).items() if k not in self._secret_env}
        base = self.workspace_path
        workdir = base if not cwd else (cwd if cwd.startswith("/") else f"{base}/{cwd}")
        try:
            return self._exec_socket(argv, stdin=True, workdir=workdir, environment=environment,
                                     channel=_ProcessChannel)
        except SideRunError as exc:
            raise SandboxError(f"cannot start {argv[0]} in the sandbox: {exc}") from None

    def open_channel(self, cwd: str) -> Channel:
        return self._exec_socket(["bash", "--noprofile", "--norc"], stdin=True,
                                 workdir=cwd if cwd == "/" else self.workspace_path)

    def run_side(self, argv: list[str], timeout: float) -> tuple[int, bytes]:
        chan = self._exec_socket(argv, stdin=False)
        out = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                data = chan.recv(max(0.0, deadline - time.monotonic()))
                if data is None:
                    raise SideRunError(f"{argv[0]} did not finish within {timeout:g}s")
                if not data:
                    break
                out += data
        finally:
            chan.close()
        code = chan.exit_code()
        if code is None:
            raise SideRunError(f"{argv[0]} could not be run in the sandbox")
        if code in (126, 127) and not out:
            raise SideRunError(bytes(chan.stderr).decode("utf-8", "replace").strip() or f"exit {code}")
        return code, bytes(out)

    def recover(self) -> tuple[bool, list[str]]:
        """The shell's stream ended: if the container died, start it again (or recreate it)."""
        container = self._find()
        if container is None:
            self._container = self._create()
            self._seeded = False
            return True, [
                f"the sandbox container was gone; a new one was created from {self.image}: "
                f"anything installed outside {self.workspace_path} is lost" + self._copied_note()
            ]
        container.reload()
        self._container = container
        if container.status == "running":
            # The daemon may not have noticed the death yet: only a working exec proves it alive.
            try:
                self.run_side(["true"], 10.0)
                return False, []
            except SideRunError:
                deadline = time.monotonic() + 5.0
                while container.status == "running" and time.monotonic() < deadline:
                    time.sleep(0.1)
                    container.reload()
                if container.status == "running":
                    return self.force_reset()
        state = container.attrs.get("State", {})
        why = f"exit code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            why += ", killed for exceeding its memory limit"
        self._ensure_running(container)
        return True, [
            f"the sandbox container died during the command ({why}) and was restarted: its running "
            "processes were lost; files in /workspace and installed packages are kept"
        ]

    def force_reset(self) -> tuple[bool, list[str]]:
        """Restart the container (SIGKILL to everything in it); its filesystem is kept."""
        try:
            self.container.restart(timeout=0)
            self.container.reload()
        except NotFound:
            self._container = self._create()
            self._seeded = False
            return True, [
                f"the sandbox container was gone; a new one was created from {self.image}: "
                f"anything installed outside {self.workspace_path} is lost" + self._copied_note()
            ]
        except APIError as exc:
            raise _api_error(f"cannot restart {self.name}", exc) from None
        return True, [
            "the sandbox container was restarted to stop the command: all its processes were killed; "
            "files in /workspace and installed packages are kept"
        ]
