"""One MCP server's configuration: how to start or reach it, and which of its tools to use.

The type of a ``[mcp_servers.NAME]`` table (the config file, ``--mcp-config``, a repository's
``.kimi-code/mcp.toml``). It lives in ``tools/`` because the MCP client takes it, like the sandbox
takes its own settings; ``agent/config.py`` reads the files into it. Importing this module does not
import the ``mcp`` SDK.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A server's name is part of its tools' names (mcp__NAME__tool), so it must fit Kimi's function
# names and contain no "__" (which separates the parts).
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(?:_[A-Za-z0-9-]+)*$")
MAX_SERVER_NAME = 24

# What a host stdio server gets of this process's environment without asking: enough to run a
# program, nothing that holds credentials. More is passed by naming it in ``env``.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")

_STDIO_ONLY = ("args", "env", "cwd", "sandbox")
_HTTP_ONLY = ("headers", "bearer_token_env")


def check_server_name(name: str) -> str:
    """``name`` if it can name an MCP server; else ValueError saying what a name may hold."""
    if not isinstance(name, str) or not SERVER_NAME_RE.match(name) or len(name) > MAX_SERVER_NAME:
        raise ValueError(f"MCP server name {name!r} must be 1-{MAX_SERVER_NAME} letters, digits, '-' and "
                         "single '_' between them")
    return name


class McpServerConfig(BaseModel):
    """A stdio server (``command``) or a streamable-HTTP server (``url``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    command: str | None = Field(None, description="program of a stdio server")
    args: list[str] = Field(default_factory=list, description="its arguments")
    env: list[str] | dict[str, str] = Field(
        default_factory=list, description="variables to pass through (a list of names) or to set (a table)")
    cwd: str | None = Field(None, description="its working directory (relative: to the workspace)")
    url: str | None = Field(None, description="endpoint of a streamable-HTTP server")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers sent to it")
    bearer_token_env: str | None = Field(None, description="variable holding a bearer token for it")
    enabled: bool = Field(True, description="false: configured but not started")
    required: bool = Field(False, description="a run does not start without it (exit 2)")
    sandbox: bool = Field(False, description="run the stdio server inside the session's sandbox")
    startup_timeout: float = Field(30.0, gt=0, description="seconds to start and list its tools")
    tool_timeout: float = Field(120.0, gt=0, description="seconds one call may take")
    include_tools: list[str] | None = Field(None, description="only these tools (by the server's names)")
    exclude_tools: list[str] = Field(default_factory=list, description="never these tools")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        given = self.model_fields_set
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a stdio server) or url (an HTTP server)")
        if self.command is not None:
            if not self.command.strip():
                raise ValueError("command is empty")
            wrong = [k for k in _HTTP_ONLY if k in given]
            if wrong:
                raise ValueError(f"{', '.join(wrong)} only apply to a url server")
        else:
            wrong = [k for k in _STDIO_ONLY if k in given]
            if wrong:
                raise ValueError(f"{', '.join(wrong)} only apply to a command (stdio) server")
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url {self.url!r} is not an http:// or https:// URL with a host")
        return self

    @property
    def transport(self) -> str:
        """stdio | http"""
        return "stdio" if self.command is not None else "http"

    def wants(self, tool: str) -> bool:
        """Whether the server's tool ``tool`` is used (``include_tools`` / ``exclude_tools``)."""
        if self.include_tools is not None and tool not in self.include_tools:
            return False
        return tool not in self.exclude_tools

    def describe(self) -> str:
        """How it is started, for people: the command line or the URL (never env values or headers)."""
        if self.url is not None:
            return self.url
        import shlex

        where = " (in the sandbox)" if self.sandbox else ""
        return shlex.join([self.command or "", *self.args]) + where


def parse_servers(data: Any, where: str) -> dict[str, McpServerConfig]:
    """``{name: table}`` (as TOML gives it) as checked configurations; ValueError names the problem."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise ValueError(f"{where}: mcp_servers must be a table of [mcp_servers.NAME] tables")
    out: dict[str, McpServerConfig] = {}
    for name, table in data.items():
        try:
            check_server_name(name)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if isinstance(table, McpServerConfig):
            out[name] = table
            continue
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [mcp_servers.{name}] must be a table")
        try:
            out[name] = McpServerConfig.model_validate(table)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise ValueError(f"{where}: [mcp_servers.{name}]{' ' + field if field else ''}: {message}") from None
    return out
