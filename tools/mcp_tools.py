"""MCP tools as registry entries: their names, schemas and handlers.

A server's tool ``t`` is the registry's ``mcp__<server>__t`` (a name Kimi accepts: characters it
does not take become ``_``, and a name changed that way or too long gets a short hash of the
original, so it stays the same for the same tool). It is registered with
``ToolRegistry.register_external`` like any tool from elsewhere: the server's description and its
input schema in the shape Kimi accepts (tools/schema.external_schema). Its handler asks a router
(the MCP client) to make the call; whether it may run concurrently is asked of the router at call
time (the server's ``readOnlyHint``).

A resumed session registers the tools its log recorded, with the recorded schemas, whatever the
servers list now: the tool list is part of the prompt prefix. A call to one the server no longer
has is answered by the router with an error result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .registry import MAX_TOOLS, ToolRegistry
from .schema import external_schema
from .types import ToolContext, ToolResult

PREFIX = "mcp__"
MAX_NAME = 64
MAX_DESCRIPTION = 4000


@dataclass(frozen=True)
class ListedTool:
    """One tool as a server listed it (the SDK's ``Tool``, reduced to what is used)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool


class ToolRouter(Protocol):
    """Makes the calls of MCP tools (tools/mcp_client.McpManager)."""

    def call(self, exposed: str, arguments: dict[str, Any]) -> ToolResult: ...

    def is_read_only(self, exposed: str) -> bool: ...


def exposed_name(server: str, tool: str) -> str:
    """The registry name of ``server``'s tool ``tool``: ``mcp__server__tool``, made valid."""
    head = f"{PREFIX}{server}__"
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", tool)
    if safe == tool and len(head) + len(safe) <= MAX_NAME and safe:
        return head + safe
    digest = hashlib.sha256(tool.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{head}{safe[: max(0, MAX_NAME - len(head) - 9)]}_{digest}"


def server_of(exposed: str) -> str | None:
    """The server part of a registry name made by :func:`exposed_name` (None for other tools)."""
    if not exposed.startswith(PREFIX):
        return None
    server, sep, _ = exposed[len(PREFIX):].partition("__")
    return server if sep and server else None


def description_of(tool: ListedTool, server: str) -> str:
    text = (tool.description or "").strip() or f"The {tool.name} tool of the MCP server {server}."
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _handler(router: ToolRouter, exposed: str) -> Callable[[dict[str, Any], ToolContext], ToolResult]:
    def handle(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return router.call(exposed, args)

    return handle


def _read_only(router: ToolRouter, exposed: str) -> Callable[[dict[str, Any]], bool]:
    return lambda args: router.is_read_only(exposed)


def register_listed(registry: ToolRegistry, server: str, tools: Iterable[ListedTool], router: ToolRouter,
                    warn: Callable[[str], None]) -> list[str]:
    """Register ``server``'s tools (already filtered by its config); returns the names registered.
    A tool that cannot be registered (the 128-tool limit, a duplicate name) is skipped with a warning."""
    names: list[str] = []
    skipped: list[str] = []
    for tool in tools:
        exposed = exposed_name(server, tool.name)
        if len(registry.names) >= MAX_TOOLS:
            skipped.append(tool.name)
            continue
        try:
            registry.register_external(exposed, description_of(tool, server), external_schema(tool.input_schema),
                                       _handler(router, exposed), read_only=_read_only(router, exposed))
        except ValueError as exc:
            warn(f"MCP server {server}: tool {tool.name!r} not used: {exc}")
            continue
        names.append(exposed)
    if skipped:
        warn(f"MCP server {server}: {len(skipped)} tool(s) not used, the model takes at most {MAX_TOOLS} tools: "
             + ", ".join(skipped))
    return names


def register_recorded(registry: ToolRegistry, schemas: Iterable[dict[str, Any]], router: ToolRouter) -> list[str]:
    """Register the MCP tools of a session's recorded tool list (resume), as recorded."""
    names: list[str] = []
    for entry in schemas:
        fn = entry.get("function") if isinstance(entry, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or server_of(name) is None or name in registry:
            continue
        parameters = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {"type": "object"}
        registry.register_external(name, str(fn.get("description") or ""), parameters, _handler(router, name),
                                   read_only=_read_only(router, name))
        names.append(name)
    return names


class Unconfigured:
    """The router of a resumed session's MCP tools when no MCP server is configured now."""

    def call(self, exposed: str, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult(f"{exposed} is not available: its MCP server {server_of(exposed)!r} is not configured in "
                          "this run (it was when the session started)", is_error=True)

    def is_read_only(self, exposed: str) -> bool:
        return False
