"""Which MCP servers a run starts: the user's, and a repository's own only once it is trusted.

A repository may carry ``.kimi-code/mcp.toml`` (``[mcp_servers.NAME]`` tables). Starting those
servers runs programs on the host, so a cloned repository must not get that by being opened: its
file is used only when the user trusted it (``kimi-code mcp trust``) or passes ``--trust-mcp``
for one run. Trust is kept in ``trusted-mcp.json`` next to the user's config file, keyed by the
repository's resolved path and bound to the file's SHA-256: a changed file needs trusting again.
The user's own servers (config file, ``--mcp``, ``--mcp-config``) win over the repository's of
the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Mapping

from kimi_code.tools.mcp_config import McpServerConfig

from .config import Settings, read_mcp_file, user_config_path
from .errors import ConfigError

REPO_FILE = Path(".kimi-code") / "mcp.toml"
TRUST_FILE = "trusted-mcp.json"

TrustState = Literal["absent", "trusted", "untrusted", "changed"]


@dataclass(frozen=True)
class RepoConfig:
    """A repository's MCP file and whether it may be used."""

    workspace: Path
    path: Path
    state: TrustState
    digest: str | None = None

    def notice(self) -> str | None:
        """What to tell the user when the file exists but is not used."""
        if self.state == "untrusted":
            return (f"{self.path} defines MCP servers that were not started: this repository is not trusted "
                    f"(`kimi-code mcp trust --repo {self.workspace}` or --trust-mcp to allow it)")
        if self.state == "changed":
            return (f"{self.path} changed since it was trusted; its MCP servers were not started "
                    f"(`kimi-code mcp trust --repo {self.workspace}` to trust it again)")
        return None


def trust_path(environ: Mapping[str, str] | None = None) -> Path:
    return user_config_path(environ).parent / TRUST_FILE


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load(environ: Mapping[str, str] | None) -> dict[str, dict[str, str]]:
    path = trust_path(environ)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise ConfigError(f"cannot read the MCP trust list {path}: remove it and trust repositories again") from None
    repos = data.get("repos") if isinstance(data, dict) else None
    return {k: v for k, v in repos.items() if isinstance(v, dict)} if isinstance(repos, dict) else {}


def _save(repos: dict[str, dict[str, str]], environ: Mapping[str, str] | None) -> None:
    path = trust_path(environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trusted-mcp-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "repos": repos}, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write the MCP trust list {path}: {exc.strerror or exc}") from None


def repo_config(workspace: Path, environ: Mapping[str, str] | None = None) -> RepoConfig:
    """The repository's MCP file and its trust state."""
    workspace = workspace.resolve()
    path = workspace / REPO_FILE
    digest = _digest(path)
    if digest is None:
        return RepoConfig(workspace, path, "absent")
    entry = _load(environ).get(str(workspace))
    if entry is None:
        return RepoConfig(workspace, path, "untrusted", digest)
    return RepoConfig(workspace, path, "trusted" if entry.get("sha256") == digest else "changed", digest)


def trust(workspace: Path, environ: Mapping[str, str] | None = None) -> tuple[RepoConfig, dict[str, McpServerConfig]]:
    """Trust the repository's MCP file as it is now; returns it and the servers it defines."""
    config = repo_config(workspace, environ)
    if config.state == "absent":
        raise ConfigError(f"{config.path} does not exist: nothing to trust")
    servers = read_mcp_file(config.path, "repository MCP config")  # refuse to trust a broken file
    repos = _load(environ)
    repos[str(config.workspace)] = {"sha256": config.digest or "",
                                    "trusted_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _save(repos, environ)
    return RepoConfig(config.workspace, config.path, "trusted", config.digest), servers


def untrust(workspace: Path, environ: Mapping[str, str] | None = None) -> bool:
    """Forget the repository; False when it was not trusted."""
    repos = _load(environ)
    if repos.pop(str(workspace.resolve()), None) is None:
        return False
    _save(repos, environ)
    return True


def run_servers(settings: Settings, workspace: Path, *, trust_repo: bool = False, include_disabled: bool = False,
                environ: Mapping[str, str] | None = None) -> tuple[dict[str, McpServerConfig], RepoConfig]:
    """The enabled MCP servers of a run in ``workspace`` (by name, sorted) and the repository's file
    state (its ``notice()`` says why its servers were left out, if they were)."""
    repo = repo_config(workspace, environ)
    servers: dict[str, McpServerConfig] = {}
    if repo.state != "absent" and (repo.state == "trusted" or trust_repo):
        servers.update(read_mcp_file(repo.path, "repository MCP config"))
        if repo.state != "trusted":
            repo = RepoConfig(repo.workspace, repo.path, "trusted", repo.digest)
    servers.update(settings.mcp_servers)
    return {name: servers[name] for name in sorted(servers) if include_disabled or servers[name].enabled}, repo
