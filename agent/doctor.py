"""`kimi-code doctor`'s checks: config, API key, endpoint, Docker, the sandbox image, git and
the configured MCP servers (each one started and listed; none when none is configured).

``run_checks`` returns one typed row per check; the CLI prints them and exits 1 when a required
one failed (``any_required_failed``). Heavy modules (openai, docker) are imported by the checks
that need them, when they run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import config as config_mod
from .errors import USER_ERRORS, KimiCodeError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool  # a failed required check fails the doctor; another one is a warning

    @property
    def status(self) -> str:
        """ok | fail | warn"""
        return "ok" if self.ok else ("fail" if self.required else "warn")


def any_required_failed(checks: list[Check]) -> bool:
    return any(c.status == "fail" for c in checks)


def _endpoint(settings: Any, has_key: bool) -> Check:
    try:
        url = settings.effective_base_url
        if not has_key:
            return Check("endpoint", False, f"{url}: not checked without a key", True)
        from .client import ModelClient

        detail = ModelClient(settings.model_copy(update={"retry_window": 0.0})).ping()
        return Check("endpoint", True, f"{url}: {detail}", True)
    except KimiCodeError as exc:
        return Check("endpoint", False, str(exc), True)


def _docker(settings: Any) -> list[Check]:
    need_docker = settings.sandbox == "docker"
    rows: list[Check] = []
    try:
        from kimi_code.sandbox.engine import connect
        from kimi_code.sandbox.images import image_exists, missing_image_message

        client = connect(timeout=10)
        version = client.version().get("Version", "?")
        rows.append(Check("docker", True, f"daemon {version} reachable", need_docker))
        present = image_exists(client, settings.image)
        rows.append(Check("sandbox image", present,
                          settings.image + (" present" if present else f": {missing_image_message(settings.image)}"),
                          need_docker))
        from .assembly import workspace_mode

        mode = workspace_mode(settings)
        how = ("the repository is bind-mounted" if mode == "mount" else
               "the container holds its own copy, synced back after each command")
        rows.append(Check("workspace", True, f"{mode} at {settings.workspace_path}: {how}", False))
        client.close()
    except USER_ERRORS as exc:
        rows.append(Check("docker", False, str(exc), need_docker))
    return rows


def _mcp(settings: Any, workspace: Path, environ: Mapping[str, str] | None) -> list[Check]:
    from .mcp_status import server_statuses, workspace_of

    try:
        rows, repo = server_statuses(settings, workspace_of(workspace), environ=environ)
    except KimiCodeError as exc:
        return [Check("MCP servers", False, str(exc), True)]
    checks = []
    for row in rows:
        ok = row.state not in ("failed", "untrusted")
        checks.append(Check(f"MCP server {row.name}", ok, f"{row.state}: {row.detail}" if row.detail else row.state,
                            row.required and row.state == "failed"))
    if repo.notice():
        checks.append(Check("MCP repository config", False, repo.notice() or "", False))
    return checks


def run_checks(settings_flags: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None,
               config_path: Path | None = None, workspace: Path | None = None) -> list[Check]:
    """Every check, in order. A config that does not load is the only row (nothing else can be
    checked). ``environ``/``config_path`` default to the process's, as for ``load_settings``."""
    env = dict(environ) if environ is not None else None
    path = config_path or config_mod.user_config_path(env)
    try:
        settings = config_mod.load_settings(dict(settings_flags or {}), environ=env, config_path=config_path)
    except KimiCodeError as exc:
        return [Check("config", False, str(exc), True)]
    rows = [Check("config", True, f"{path} ({'found' if path.exists() else 'not present, defaults used'})", True)]
    has_key = settings.api_key is not None or not settings.key_required
    envs = " or ".join(settings.provider_info.key_envs[:2])
    key_text = "set" if settings.api_key is not None else (
        "not set (not required by this endpoint)" if has_key else f"missing: set {envs}")
    rows.append(Check("API key", has_key, key_text, True))
    rows.append(_endpoint(settings, has_key))
    rows.extend(_docker(settings))
    git = shutil.which("git")
    rows.append(Check("git", git is not None, git or "git not found on PATH", True))
    rows.extend(_mcp(settings, workspace or Path("."), env))
    return rows
