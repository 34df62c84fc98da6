"""Commands on the host itself (``--sandbox none``): no isolation, same shell protocol as Docker.

Only for machines without Docker or for trusted work; the CLI prints a warning when it is chosen.
The agent's own API key variables are removed from the shell's environment all the same.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import SandboxError
from .base import DEFAULT_OUTPUT_CAP, DEFAULT_TIMEOUT, ExecResult, SandboxInfo
from .shell import Channel, PersistentShell, SideRunError


class _PipeChannel:
    """A local ``bash`` in its own session, talked to through pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._in = proc.stdin
        self._out = proc.stdout.fileno()

    def send(self, data: bytes) -> None:
        self._in.write(data)
        self._in.flush()

    def recv(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._out], [], [], max(0.0, timeout))
        if not ready:
            return None
        return os.read(self._out, 1 << 16)

    def close(self) -> None:
        try:
            self._in.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def exit_code(self) -> int | None:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code  # killed by a signal: shell convention


class LocalSandbox:
    """Runs commands in a persistent bash on the host, in the workspace directory."""

    backend = "local"

    def __init__(
        self,
        session_id: str,
        workspace: Path,
        *,
        env: dict[str, str] | None = None,
        secret_env: Iterable[str] = (),
        default_timeout: float = DEFAULT_TIMEOUT,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        kill_grace: float | None = None,
    ) -> None:
        """``secret_env``: names of variables (the model API keys) never passed to commands."""
        self.session_id = session_id
        self.workspace = Path(workspace).resolve()
        self.default_timeout = default_timeout
        self.output_cap = output_cap
        secrets_ = frozenset(secret_env)
        base = {k: v for k, v in os.environ.items() if k not in secrets_ and k != "KIMI_CODE_CMD_ID"}
        base.update({k: v for k, v in (env or {}).items() if k not in secrets_})
        base.setdefault("PAGER", "cat")
        base.setdefault("GIT_PAGER", "cat")
        base["KIMI_CODE_SANDBOX"] = "local"
        self._env = base
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", session_id) or "session"
        self.state_dir = Path(tempfile.gettempdir()) / f"kimi-code-{os.getuid()}" / safe
        kwargs = {} if kill_grace is None else {"kill_grace": kill_grace}
        self._shell = PersistentShell(
            self, state_dir=str(self.state_dir), cwd=str(self.workspace), output_cap=output_cap, **kwargs
        )
        self._pgids: set[int] = set()
        self._status = "created"

    # -- Sandbox protocol --------------------------------------------------------------------
    def start(self) -> SandboxInfo:
        if not self.workspace.is_dir():
            raise SandboxError(f"workspace {self.workspace} is not a directory")
        if shutil.which("bash") is None:
            raise SandboxError("bash is not installed on this machine")
        self.state_dir.parent.mkdir(mode=0o700, exist_ok=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        self._shell.start()
        self._status = "running"
        return self.info()

    def reattach(self) -> bool:
        """The host is always there: a resumed session just gets a new shell."""
        self.start()
        return True

    def exec(self, command: str, timeout: float | None = None) -> ExecResult:
        if self._status == "stopped":
            raise SandboxError("the sandbox was stopped")
        if self._status != "running":
            self.start()
        return self._shell.run(command, self.default_timeout if timeout is None else timeout)

    def stop(self, remove: bool = True) -> None:
        """End the shell; ``remove`` also kills what it left running and deletes saved outputs."""
        self._shell.close()
        if remove:
            for pgid in self._pgids:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self._status = "stopped"

    def info(self) -> SandboxInfo:
        return SandboxInfo(
            backend="local",
            session_id=self.session_id,
            workspace=str(self.workspace),
            host_workspace=str(self.workspace),
            os_release=_host_os_release(),
            network=True,
            status=self._status,
        )

    # -- ShellHost -----------------------------------------------------------------------------
    def workspace_written(self, paths: list[str]) -> None:
        """The commands see the host's files themselves: nothing to send."""

    def sync_workspace(self) -> None:
        return None

    def open_channel(self, cwd: str) -> Channel:
        try:
            proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=cwd if os.path.isdir(cwd) else str(self.workspace),
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start bash: {exc}") from None
        self._pgids.add(proc.pid)
        return _PipeChannel(proc)

    def run_side(self, argv: list[str], timeout: float) -> tuple[int, bytes]:
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=self._env, timeout=timeout, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SideRunError(str(exc)) from None
        return done.returncode, done.stdout

    def recover(self) -> tuple[bool, list[str]]:
        return False, []

    def force_reset(self) -> tuple[bool, list[str]]:
        """Kill the shell's whole process group, background processes included."""
        pid = self._shell.pid
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        return False, ["the shell's whole process group was killed, background processes included"]


def _host_os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None
