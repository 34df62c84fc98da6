"""Real MCP servers for the tests, started as users start them.

The reference servers ``mcp-server-git`` and ``mcp-server-time`` come from the test extra and land
next to this interpreter (not necessarily on PATH); ``tests/mcp_servers/demo_server.py`` is an SDK
server (stdio, or streamable HTTP on 127.0.0.1), ``mini_server.py`` a standard-library one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SERVERS = Path(__file__).resolve().parent / "mcp_servers"
DEMO = SERVERS / "demo_server.py"
MINI = SERVERS / "mini_server.py"


def reference_server(name: str) -> str:
    """The installed reference server's executable (they come with `pip install -e '.[test]'`)."""
    found = shutil.which(name, path=str(BIN))
    if found is None:
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[test]'", pytrace=False)
    return found


def toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(toml_str(v) for v in values) + "]"


def server_table(name: str, command: str, args: list[str] = (), **extra: str) -> str:  # type: ignore[assignment]
    """A ``[mcp_servers.NAME]`` table; ``extra`` values are TOML literals."""
    lines = [f"[mcp_servers.{name}]", f"command = {toml_str(command)}", f"args = {toml_list(list(args))}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@contextmanager
def http_demo_server(tmp_path: Path, token: str | None = None) -> Iterator[str]:
    """The demo server over streamable HTTP on 127.0.0.1; yields its URL."""
    port_file = tmp_path / f"demo-port-{time.monotonic_ns()}"
    args = [sys.executable, str(DEMO), "--http", str(port_file)]
    env = dict(os.environ)
    if token is not None:
        env["DEMO_SERVER_TOKEN"] = token
        args += ["--token-env", "DEMO_SERVER_TOKEN"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"the HTTP demo server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("the HTTP demo server did not start within 120 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}/mcp"
    finally:
        proc.kill()
        proc.wait(timeout=30)
