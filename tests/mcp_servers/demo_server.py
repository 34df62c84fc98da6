"""An MCP server built with the ``mcp`` SDK's server side (MCPServer), for the MCP tests.

Run as users run a server: ``python demo_server.py`` speaks stdio; ``--http PORT_FILE`` serves
streamable HTTP on 127.0.0.1 at a free port, written to PORT_FILE once it listens (with
``--token-env NAME``, every request must carry ``Authorization: Bearer $NAME``). ``--without TOOL``
leaves a tool out (a server that lost a tool).
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image
from mcp.types import ToolAnnotations

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
READ_ONLY = ToolAnnotations(read_only_hint=True)


def build(without: set[str]) -> MCPServer:
    server = MCPServer("demo", version="1.0")

    def tool(name: str, read_only: bool = False):
        def decorate(fn):
            if name not in without:
                server.tool(name=name, annotations=READ_ONLY if read_only else None)(fn)
            return fn
        return decorate

    @tool("echo", read_only=True)
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    @tool("add")
    def add(a: int, b: int, note: str | None = None) -> dict:
        """Add two integers; the answer is structured content."""
        return {"sum": a + b}

    @tool("picture", read_only=True)
    def picture() -> Image:
        """A tiny PNG image."""
        return Image(data=PNG, format="png")

    @tool("fail")
    def fail(message: str) -> str:
        """Always fails with the message."""
        raise ToolError(message)

    @tool("sleep", read_only=True)
    async def sleep(seconds: float) -> str:
        """Sleep, then say so."""
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    meetings: dict[str, dict] = {}

    @tool("meet", read_only=True)
    async def meet(key: str, count: int) -> str:
        """Wait (up to a minute) until `count` calls with this key are in progress at the same time."""
        state = meetings.setdefault(key, {"calls": 0, "all_here": anyio.Event()})
        state["calls"] += 1
        if state["calls"] >= count:
            state["all_here"].set()
        with anyio.move_on_after(60):
            await state["all_here"].wait()
        return "met" if state["all_here"].is_set() else "alone"

    @tool("crash")
    def crash() -> str:
        """Kill this server's process in the middle of the call."""
        print("demo server: crashing on purpose", file=sys.stderr, flush=True)
        os._exit(3)

    @tool("environment", read_only=True)
    def environment() -> str:
        """The names of this process's environment variables, and its working directory."""
        return "cwd=" + os.getcwd() + "\n" + "\n".join(sorted(os.environ))

    @tool("pid", read_only=True)
    def pid() -> str:
        """This server's process id."""
        return str(os.getpid())

    return server


def serve_http(server: MCPServer, port_file: str, token_env: str | None) -> None:
    import uvicorn

    app = server.streamable_http_app()
    token = os.environ.get(token_env) if token_env else None
    if token is not None:
        inner = app

        async def app(scope, receive, send):  # noqa: F811 - the checking wrapper
            if scope["type"] == "http":
                headers = dict(scope.get("headers") or [])
                if headers.get(b"authorization") != f"Bearer {token}".encode():
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"unauthorized"})
                    return
            await inner(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    userver = uvicorn.Server(config)

    async def main() -> None:
        async def announce() -> None:
            while not userver.started:
                await anyio.sleep(0.05)
            tmp = port_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(str(port))
            os.replace(tmp, port_file)

        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            await userver.serve(sockets=[sock])

    anyio.run(main)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--without", action="append", default=[])
    parser.add_argument("--http", metavar="PORT_FILE")
    parser.add_argument("--token-env")
    args = parser.parse_args()
    server = build(set(args.without))
    if args.http:
        serve_http(server, args.http, args.token_env)
    else:
        server.run()


if __name__ == "__main__":
    main()
