"""The MCP client: servers started, listed, called and restarted on one background event loop.

The ``mcp`` SDK is async-only; the agent loop is synchronous. So one daemon thread runs one
asyncio loop for every server of a session, and the synchronous side calls into it
(``asyncio.run_coroutine_threadsafe``) and waits. Each server is held by one task that enters the
SDK's ``Client`` and keeps it open until the manager closes (anyio needs a connection opened and
closed in the same task); calls are made from their own tasks, so read-only calls run at the same
time. Transports are the SDK's (stdio, streamable HTTP) plus one over a sandbox's process channel
for a server that runs in the session's container.

Faults never raise into the loop: a server that does not start is reported once and left out
(``StartReport``); a call over ``tool_timeout`` is cancelled (the SDK tells the server) and
answered with an error result; a server that went away is restarted once and the call says so;
a malformed answer is an error result.

This module imports the SDK; only the assembly imports it, and only when a server is configured.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from .mcp_config import BASE_ENV, McpServerConfig
from .mcp_results import tool_result
from .mcp_tools import ListedTool, exposed_name
from .types import ToolResult

log = logging.getLogger(__name__)

# A server that went away is restarted this many times in one run; after that its tools answer
# with errors until the next run (a server that keeps crashing would cost a start per call).
MAX_RESTARTS = 1
# Pages of tools/list read at most (a server whose cursor never ends cannot hang the start).
MAX_PAGES = 50
# Extra seconds the synchronous side waits beyond a timeout the SDK enforces itself.
GRACE = 15.0
# Seconds ``close`` waits for all servers to end (each transport bounds its own shutdown).
CLOSE_TIMEOUT = 20.0
STDERR_TAIL = 300

_CLIENT_INFO = mcp_types.Implementation(name="kimi-code", version="0.1.0")


class ProcessChannel(Protocol):
    """A program's standard streams in a sandbox (``DockerSandbox.open_process``)."""

    stderr: bytearray

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes | None: ...

    def close_input(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Launch:
    """How to reach one server: a host process, a process in the sandbox, or a URL."""

    name: str
    config: McpServerConfig
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # For a server in the sandbox: opens its process there (argv, env and cwd are its, inside).
    open_in_sandbox: Callable[[list[str], dict[str, str], str | None], ProcessChannel] | None = None


class LaunchError(Exception):
    """A server's configuration cannot be turned into a launch (a variable it needs is not set)."""


def host_launch(name: str, config: McpServerConfig, workspace: Path, environ: Mapping[str, str],
                secret_env: Iterable[str]) -> Launch:
    """The launch of a server on the host: the environment is an allow-list (BASE_ENV, never a
    secret) plus what the config names or sets; a relative ``cwd`` is taken in the workspace."""
    if config.url is not None:
        headers = dict(config.headers)
        if config.bearer_token_env:
            token = environ.get(config.bearer_token_env)
            if not token:
                raise LaunchError(f"bearer_token_env {config.bearer_token_env} is not set")
            headers["Authorization"] = f"Bearer {token}"
        return Launch(name, config, url=config.url, headers=headers)
    secrets = frozenset(secret_env)
    env = {k: environ[k] for k in BASE_ENV if k in environ and k not in secrets}
    env.update(_config_env(config, environ))
    cwd = str((workspace / config.cwd).resolve()) if config.cwd else str(workspace)
    return Launch(name, config, argv=[config.command or "", *config.args], env=env, cwd=cwd)


def sandbox_launch(name: str, config: McpServerConfig, open_process: Callable[..., ProcessChannel],
                   environ: Mapping[str, str]) -> Launch:
    """The launch of a stdio server inside the session's sandbox: its environment is the
    container's plus what the config names or sets (the sandbox drops secret variables)."""
    env = _config_env(config, environ)

    def opener(argv: list[str], env: dict[str, str], cwd: str | None) -> ProcessChannel:
        return open_process(argv, env=env, cwd=cwd)

    return Launch(name, config, argv=[config.command or "", *config.args], env=env, cwd=config.cwd,
                  open_in_sandbox=opener)


def _config_env(config: McpServerConfig, environ: Mapping[str, str]) -> dict[str, str]:
    if isinstance(config.env, dict):
        return dict(config.env)
    return {k: environ[k] for k in config.env if k in environ}


@dataclass
class StartReport:
    """How one server's start went: its tools (filtered by its config), or why it did not start."""

    name: str
    ok: bool
    tools: list[ListedTool] = field(default_factory=list)
    error: str | None = None
    server_info: str | None = None


@dataclass
class _Server:
    launch: Launch
    client: Any = None  # mcp.Client while connected
    tools: dict[str, ListedTool] = field(default_factory=dict)  # by the server's names, filtered
    status: str = "new"  # new | running | failed | closed
    error: str | None = None
    restarts: int = 0
    generation: int = 0
    task: asyncio.Future[Any] | None = None
    stop: asyncio.Event | None = None
    scope: anyio.CancelScope | None = None
    stderr: Any = None  # a temporary file, or a sandbox channel's stderr buffer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    info: str | None = None

    @property
    def name(self) -> str:
        return self.launch.name

    def stderr_size(self) -> int:
        """How much the server has written to stderr so far (a mark for :meth:`stderr_tail`)."""
        if isinstance(self.stderr, (bytes, bytearray)):
            return len(self.stderr)
        try:
            return os.fstat(self.stderr.fileno()).st_size if self.stderr is not None else 0
        except (OSError, ValueError):
            return 0

    def stderr_tail(self, since: int = 0) -> str:
        """The last lines the server wrote to stderr (after the mark ``since``), for messages."""
        data = b""
        if isinstance(self.stderr, (bytes, bytearray)):
            data = bytes(self.stderr[-4096:])  # a bounded buffer: marks do not apply
        elif self.stderr is not None:
            try:
                size = os.fstat(self.stderr.fileno()).st_size
                self.stderr.seek(max(since, size - 4096))
                data = self.stderr.read()
            except (OSError, ValueError):
                data = b""
        lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
        text = " | ".join(lines[-3:])
        return text if len(text) <= STDERR_TAIL else "…" + text[-STDERR_TAIL:]


class McpManager:
    """Every MCP server of one session, on one background event loop (see the module docstring).

    ``start`` connects servers and returns what each offers; ``call`` and ``is_read_only`` are the
    router the registered tools use (tools/mcp_tools.ToolRouter); ``close`` ends them all.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kimi-code-mcp", daemon=True)
        self._thread.start()
        self._servers: dict[str, _Server] = {}
        self._routes: dict[str, tuple[str, str]] = {}  # exposed name -> (server, tool)
        self._closed = False
        _open_managers.add(self)

    # -- synchronous side ---------------------------------------------------------------------
    def _wait(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:  # a timeout here, or Ctrl-C: the server is told the call is cancelled
            future.cancel()
            raise

    def start(self, launches: Iterable[Launch]) -> list[StartReport]:
        """Connect every server (at the same time), each within its ``startup_timeout``."""
        launches = list(launches)
        if not launches:
            return []
        for launch in launches:
            self._servers[launch.name] = _Server(launch)
        longest = max(launch.config.startup_timeout for launch in launches)
        try:
            return self._wait(self._start_all([launch.name for launch in launches]), 2 * longest + GRACE)
        except concurrent.futures.TimeoutError:
            return [self._report(self._servers[launch.name]) for launch in launches]

    def add_failed(self, name: str, config: McpServerConfig, error: str) -> None:
        """A server that could not even be launched: its tools answer with ``error``."""
        self._servers[name] = _Server(Launch(name, config), status="failed", error=error)

    def call(self, exposed: str, arguments: dict[str, Any]) -> ToolResult:
        """Call a registered MCP tool; never raises."""
        route = self._routes.get(exposed)
        server_name = route[0] if route else _server_part(exposed)
        srv = self._servers.get(server_name or "")
        if srv is None:
            return ToolResult(f"{exposed} is not available: its MCP server {server_name!r} is not configured in this "
                              "run (it was when the session started)", is_error=True)
        if srv.status == "failed" or srv.status == "closed":
            return ToolResult(f"{exposed} is not available: the MCP server {srv.name} {srv.error or 'is not running'}",
                              is_error=True)
        if route is None:
            return ToolResult(f"{exposed} no longer exists: the MCP server {srv.name} does not offer that tool any "
                              "more (it did when the session started); use another tool", is_error=True)
        config = srv.launch.config
        timeout = config.tool_timeout
        # The SDK ends the call at the timeout; a restart after a crash may take a start's time more.
        wait = timeout + config.startup_timeout + 3 * GRACE
        try:
            return self._wait(self._call(srv, route[1], arguments, timeout), wait)
        except concurrent.futures.TimeoutError:
            return ToolResult(f"{exposed}: no answer within {timeout:g} s (tool_timeout); the call was cancelled",
                              is_error=True)
        except Exception as exc:  # noqa: BLE001 - the loop must get a result whatever happened
            return ToolResult(f"{exposed} failed: {_describe(exc)}", is_error=True)

    def is_read_only(self, exposed: str) -> bool:
        """Whether the server declares the tool read-only (``readOnlyHint``): it may run
        concurrently with other read-only calls."""
        route = self._routes.get(exposed)
        srv = self._servers.get(route[0]) if route else None
        tool = srv.tools.get(route[1]) if srv is not None and route is not None else None
        return bool(tool is not None and tool.read_only)

    def reports(self) -> list[StartReport]:
        return [self._report(srv) for srv in self._servers.values()]

    def close(self) -> None:
        """End every server and the loop thread; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        _open_managers.discard(self)
        try:
            self._wait(self._close_all(), CLOSE_TIMEOUT)
        except Exception:  # noqa: BLE001 - closing is best effort; processes die with us anyway
            log.debug("MCP servers did not all close", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    # -- on the loop ----------------------------------------------------------------------------
    async def _start_all(self, names: list[str]) -> list[StartReport]:
        await asyncio.gather(*(self._start_one(self._servers[n]) for n in names))
        return [self._report(self._servers[n]) for n in names]

    async def _start_one(self, srv: _Server) -> None:
        try:
            await self._connect(srv)
        except _StartFailed as exc:
            srv.status, srv.error = "failed", f"did not start: {exc}"

    def _report(self, srv: _Server) -> StartReport:
        ok = srv.status == "running"
        return StartReport(srv.name, ok, list(srv.tools.values()) if ok else [],
                           None if ok else (srv.error or "did not start"), srv.info)

    async def _connect(self, srv: _Server) -> None:
        """Open the connection and list the tools, within ``startup_timeout``; _StartFailed if not."""
        srv.generation += 1
        ready: asyncio.Future[list[Any]] = self._loop.create_future()
        srv.stop = asyncio.Event()
        srv.task = asyncio.ensure_future(self._hold(srv, ready))
        timeout = srv.launch.config.startup_timeout
        try:
            listed = await asyncio.wait_for(asyncio.shield(ready), timeout)
        except asyncio.TimeoutError:
            await self._drop(srv)
            raise _StartFailed(f"no answer within {timeout:g} s (startup_timeout){_tail(srv)}") from None
        except Exception as exc:  # noqa: BLE001 - any failure to start is one line for the user
            await self._drop(srv)
            raise _StartFailed(_start_error(srv, exc) + _tail(srv)) from None
        config = srv.launch.config
        srv.tools = {t.name: t for t in listed if config.wants(t.name)}
        self._routes = {k: v for k, v in self._routes.items() if v[0] != srv.name}
        for tool in srv.tools.values():
            self._routes[exposed_name(srv.name, tool.name)] = (srv.name, tool.name)
        srv.status, srv.error = "running", None

    async def _hold(self, srv: _Server, ready: asyncio.Future[list[Any]]) -> None:
        """The task that owns one connection: open, list, then wait until told to stop."""
        with anyio.CancelScope() as scope:
            srv.scope = scope
            try:
                async with AsyncExitStack() as stack:
                    transport = await self._transport(srv, stack)
                    client = await stack.enter_async_context(
                        Client(transport, read_timeout_seconds=srv.launch.config.startup_timeout,
                               client_info=_CLIENT_INFO, cache=None))
                    info = client.server_info
                    srv.info = f"{info.name} {info.version}".strip() if info is not None else None
                    listed = await _list_tools(client)
                    srv.client = client
                    if not ready.done():
                        ready.set_result(listed)
                    assert srv.stop is not None
                    await srv.stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                elif isinstance(exc, Exception):
                    log.debug("MCP server %s: connection ended: %s", srv.name, _describe(exc))
                if not isinstance(exc, Exception):
                    raise
            finally:
                srv.client = None

    async def _transport(self, srv: _Server, stack: AsyncExitStack) -> Any:
        launch = srv.launch
        if launch.url is not None:
            from mcp.shared._httpx_utils import create_mcp_http_client

            http = await stack.enter_async_context(create_mcp_http_client(headers=launch.headers or None))
            return streamable_http_client(launch.url, http_client=http)
        if launch.open_in_sandbox is not None:
            return _channel_transport(srv, launch)
        _close_stderr(srv)  # the previous start's, if any (kept until now for its tail)
        srv.stderr = tempfile.TemporaryFile(prefix="kimi-code-mcp-")
        params = StdioServerParameters(command=launch.argv[0], args=launch.argv[1:], env=launch.env, cwd=launch.cwd)
        return stdio_client(params, errlog=srv.stderr)

    async def _drop(self, srv: _Server) -> None:
        """End the connection's task (a clean exit of the SDK's contexts), however it is doing."""
        task = srv.task
        if task is None:
            return
        if srv.client is None and srv.scope is not None:
            srv.scope.cancel()  # still starting: nothing to wait for
        if srv.stop is not None:
            srv.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10.0)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001
            if srv.scope is not None:
                srv.scope.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), 10.0)
            except BaseException:  # noqa: BLE001 - abandoned: the process dies with ours
                pass
        srv.client = None

    async def _call(self, srv: _Server, tool: str, arguments: dict[str, Any], timeout: float) -> ToolResult:
        generation = srv.generation
        client = srv.client
        mark = srv.stderr_size()
        if client is None:
            return await self._lost(srv, generation, tool, f"the MCP server {srv.name} had stopped", mark)
        try:
            result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                return ToolResult(f"{tool} (MCP server {srv.name}): no answer within {timeout:g} s (tool_timeout); "
                                  "the call was cancelled", is_error=True)
            if exc.code == mcp_types.CONNECTION_CLOSED:
                return await self._lost(srv, generation, tool, f"the MCP server {srv.name} stopped during the call",
                                        mark)
            return ToolResult(f"{tool} (MCP server {srv.name}) failed: {exc.message}", is_error=True)
        except ValidationError as exc:
            return ToolResult(f"the MCP server {srv.name} sent a malformed answer to {tool}: "
                              f"{_validation_summary(exc)}", is_error=True)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, ConnectionError) as exc:
            return await self._lost(srv, generation, tool,
                                    f"the MCP server {srv.name} stopped during the call ({_describe(exc)})", mark)
        except Exception as exc:  # noqa: BLE001 - an SDK or transport failure is a result, never a traceback
            return ToolResult(f"{tool} (MCP server {srv.name}) failed: {_describe(exc)}", is_error=True)
        try:
            return tool_result(result, server=srv.name, tool=tool)
        except Exception as exc:  # noqa: BLE001 - a result we cannot read is malformed
            return ToolResult(f"the MCP server {srv.name} sent a malformed answer to {tool}: {_describe(exc)}",
                              is_error=True)

    async def _lost(self, srv: _Server, generation: int, tool: str, what: str, mark: int) -> ToolResult:
        """The connection is gone: restart the server once, and say what happened."""
        async with srv.lock:
            if srv.generation != generation and srv.status == "running":
                return ToolResult(f"{what}; it was restarted, and the call to {tool} was not repeated: call it "
                                  "again if it is still needed", is_error=True)
            tail = _tail(srv, mark)
            if srv.status != "running":
                return ToolResult(f"{what}{tail}; {srv.error or 'it is not running'}", is_error=True)
            if srv.restarts >= MAX_RESTARTS:
                await self._drop(srv)
                srv.status = "failed"
                srv.error = f"stopped again after a restart{tail}: its tools are unavailable for the rest of this run"
                return ToolResult(f"{what}{tail}; it had been restarted once already and is not restarted again: "
                                  "its tools are unavailable for the rest of this run", is_error=True)
            srv.restarts += 1
            await self._drop(srv)
            try:
                await self._connect(srv)
            except _StartFailed as exc:
                srv.status, srv.error = "failed", f"could not be restarted: {exc}"
                return ToolResult(f"{what}{tail}; restarting it failed ({exc}): its tools are unavailable for the "
                                  "rest of this run", is_error=True)
            return ToolResult(f"{what}{tail}. It was restarted; the call to {tool} was not repeated: call it again "
                              "if it is still needed", is_error=True)

    async def _close_all(self) -> None:
        servers = list(self._servers.values())
        await asyncio.gather(*(self._drop(s) for s in servers), return_exceptions=True)
        for srv in servers:
            _close_stderr(srv)
            if srv.status == "running":
                srv.status, srv.error = "closed", "was closed"


class _StartFailed(Exception):
    pass


async def _list_tools(client: Any) -> list[ListedTool]:
    tools: list[ListedTool] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            annotations = tool.annotations
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
            tools.append(ListedTool(tool.name, tool.description or "", schema,
                                    bool(annotations is not None and annotations.read_only_hint)))
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


@asynccontextmanager
async def _channel_transport(srv: _Server, launch: Launch) -> AsyncIterator[Any]:
    """An MCP stdio transport over a process channel of the sandbox (newline-delimited JSON-RPC
    on its stdin/stdout), the same framing the SDK's stdio transport uses on the host."""
    assert launch.open_in_sandbox is not None
    channel = await anyio.to_thread.run_sync(launch.open_in_sandbox, launch.argv, launch.env, launch.cwd)
    srv.stderr = channel.stderr
    read_in, read_out = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_in, write_out = anyio.create_memory_object_stream[SessionMessage](0)
    reader_done = anyio.Event()

    async def reader() -> None:
        buffer = b""
        try:
            async with read_in:
                while True:
                    data = await anyio.to_thread.run_sync(channel.recv, 2.0, abandon_on_cancel=True)
                    if data is None:
                        continue
                    if not data:
                        return
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            await read_in.send(_parse_line(line))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            reader_done.set()

    async def writer() -> None:
        try:
            async with write_out:
                async for message in write_out:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
                    await anyio.to_thread.run_sync(channel.send, data, abandon_on_cancel=True)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            await read_in.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_out, write_in
        finally:
            with anyio.CancelScope(shield=True):
                await write_in.aclose()
                await anyio.to_thread.run_sync(channel.close_input)
                with anyio.move_on_after(3.0):
                    await reader_done.wait()
                await anyio.to_thread.run_sync(channel.close)
            tg.cancel_scope.cancel()


def _parse_line(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


def _close_stderr(srv: _Server) -> None:
    if srv.stderr is not None and not isinstance(srv.stderr, (bytes, bytearray)):
        try:
            srv.stderr.close()
        except OSError:
            pass
    srv.stderr = None


def _server_part(exposed: str) -> str | None:
    from .mcp_tools import server_of

    return server_of(exposed)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _leaf(exc)
    if isinstance(exc, MCPError):
        return exc.message
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _start_error(srv: _Server, exc: BaseException) -> str:
    exc = _leaf(exc)
    launch = srv.launch
    if isinstance(exc, FileNotFoundError) and launch.argv:
        if launch.cwd and not Path(launch.cwd).is_dir():
            return f"its cwd {launch.cwd} is not a directory"
        return f"command {launch.argv[0]!r} not found (is it installed and on PATH?)"
    if isinstance(exc, PermissionError) and launch.argv:
        return f"command {launch.argv[0]!r} cannot be executed ({exc.strerror})"
    if isinstance(exc, MCPError) and exc.code == mcp_types.CONNECTION_CLOSED:
        return "it exited before answering" if launch.argv else "the connection closed before it answered"
    if isinstance(exc, ValidationError):
        return f"it sent a malformed answer: {_validation_summary(exc)}"
    return _describe(exc)


def _tail(srv: _Server, since: int = 0) -> str:
    tail = srv.stderr_tail(since)
    return f" (stderr: {tail})" if tail else ""


def _validation_summary(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "it does not match the protocol"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "result"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


# Managers still open when the process exits are closed, so no server outlives kimi-code.
_open_managers: weakref.WeakSet[McpManager] = weakref.WeakSet()


@atexit.register
def _close_open_managers() -> None:
    for manager in list(_open_managers):
        try:
            manager.close()
        except Exception:  # noqa: BLE001
            pass

