"""What `kimi-code mcp list` and `kimi-code doctor` say about MCP servers.

Every configured server with where it comes from (the config file and flags, or the repository's
``.kimi-code/mcp.toml``), and, for those a run would start on the host, whether it starts and the
tools it offers (under the names the model sees). A repository's servers are only started here
when the repository is trusted, as for a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kimi_code.tools.mcp_config import McpServerConfig

from .config import Settings, read_mcp_file
from .errors import ConfigError
from .mcp_trust import RepoConfig, repo_config


@dataclass
class ToolRow:
    name: str  # as the model sees it: mcp__server__tool
    description: str
    read_only: bool


@dataclass
class ServerStatus:
    name: str
    source: str  # user (config file, flags) | repository
    transport: str  # stdio | http
    command: str  # the command line or URL
    state: str  # started | failed | disabled | untrusted | sandbox
    detail: str = ""
    required: bool = False
    tools: list[ToolRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "transport": self.transport, "command": self.command,
                "state": self.state, "detail": self.detail, "required": self.required,
                "tools": [vars(t) for t in self.tools]}


def workspace_of(repo: Path) -> Path:
    """The work tree ``repo`` is in (as a run finds it), or the directory itself outside git."""
    from .session import find_workspace

    try:
        return find_workspace(repo, False)
    except ConfigError:
        return find_workspace(repo, True)


def server_statuses(settings: Settings, workspace: Path, *, trust_mcp: bool = False, probe: bool = True,
                    environ: Mapping[str, str] | None = None) -> tuple[list[ServerStatus], RepoConfig]:
    """Every configured server of a run in ``workspace``; with ``probe``, the host ones are started.
    ``environ`` (default: the process's) locates the trust list, as for ``user_config_path``."""
    repo = repo_config(workspace, environ)
    repo_servers: dict[str, McpServerConfig] = {}
    if repo.state != "absent":
        repo_servers = read_mcp_file(repo.path, "repository MCP config")
    allowed = repo.state == "trusted" or trust_mcp
    rows: dict[str, ServerStatus] = {}
    start: dict[str, McpServerConfig] = {}
    for name in sorted({*repo_servers, *settings.mcp_servers}):
        from_user = name in settings.mcp_servers
        config = settings.mcp_servers[name] if from_user else repo_servers[name]
        row = ServerStatus(name, "user" if from_user else "repository", config.transport, config.describe(),
                           "started", required=config.required)
        if not from_user and not allowed:
            row.state, row.detail = "untrusted", "not started: the repository is not trusted"
        elif not config.enabled:
            row.state, row.detail = "disabled", "enabled = false"
        elif config.sandbox and settings.sandbox == "docker":
            row.state, row.detail = "sandbox", "starts inside each session's sandbox (not checked here)"
        else:
            start[name] = config
        rows[name] = row
    if probe and start:
        from .assembly import probe_mcp_servers

        for probe_result in probe_mcp_servers(start, workspace):
            row = rows[probe_result.name]
            row.detail = probe_result.detail
            row.tools = [ToolRow(*tool) for tool in probe_result.tools]
            if not probe_result.ok:
                row.state = "failed"
    return list(rows.values()), repo
