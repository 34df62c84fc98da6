"""Listing and pruning kimi-code's containers (``kimi-code sandbox ls`` / ``prune``).

Only containers carrying the ``kimi-code.managed=1`` label are ever listed or removed; the label is
checked again on each container right before removing it. On an engine several people use, only
this user's own (the ``kimi-code.owner`` label; containers made before that label count as
anyone's) unless all owners are asked for. A stopped copy-mode container is kept unless asked for:
its copy may hold the only copy of work that could not be brought back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import docker
from docker.errors import APIError, NotFound

from .errors import SandboxError
from .docker import (
    LABEL_CREATED,
    LABEL_IMAGE,
    LABEL_MANAGED,
    LABEL_MODE,
    LABEL_OWNER,
    LABEL_SESSION,
    LABEL_WORKSPACE,
    connect,
    owner_id,
)


@dataclass
class ContainerSummary:
    name: str
    id: str
    session_id: str
    workspace: str
    status: str  # running, exited, created, paused, dead, ...
    image: str
    created: str
    owner: str = ""  # user@host; "" for containers made before the owner label
    workspace_mode: str = "mount"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(container: Any) -> ContainerSummary:
    labels = container.labels or {}
    return ContainerSummary(
        name=container.name,
        id=container.short_id,
        session_id=labels.get(LABEL_SESSION, ""),
        workspace=labels.get(LABEL_WORKSPACE, ""),
        status=container.status,
        image=labels.get(LABEL_IMAGE, ""),
        created=labels.get(LABEL_CREATED, ""),
        owner=labels.get(LABEL_OWNER, ""),
        workspace_mode=labels.get(LABEL_MODE) or "mount",
    )


def _managed(client: docker.DockerClient, all_owners: bool) -> list[Any]:
    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=1"})
    except APIError as exc:
        raise SandboxError(f"cannot list containers: {exc.explanation or exc}") from None
    me = owner_id()
    return [c for c in found if (c.labels or {}).get(LABEL_MANAGED) == "1"
            and (all_owners or (c.labels or {}).get(LABEL_OWNER, me) == me)]


def list_containers(client: docker.DockerClient | None = None, *, all_owners: bool = False) -> list[ContainerSummary]:
    """kimi-code's containers (this user's, unless ``all_owners``), newest first."""
    client = client or connect()
    rows = [_summary(c) for c in _managed(client, all_owners)]
    return sorted(rows, key=lambda r: r.created, reverse=True)


def prune_containers(
    client: docker.DockerClient | None = None,
    *,
    include_running: bool = False,
    ended: Callable[[str], bool] | None = None,
    select: Callable[[ContainerSummary], bool] | None = None,
    dry_run: bool = False,
    all_owners: bool = False,
    copies: bool = False,
    kept: list[ContainerSummary] | None = None,
) -> list[ContainerSummary]:
    """Remove the containers of ended sessions and return what was (or, dry, would be) removed.

    A stopped container is an ended session's (a normal end removes it; ``--keep-sandbox`` stops
    it). A running one is removed only with ``include_running``, or when ``ended(session_id)``
    says its session is over (the CLI can pass a check against its session store). ``select``
    narrows the candidates further (e.g. one session). Copy-mode containers that would go are
    kept unless ``copies`` (appended to ``kept`` when given): `kimi-code resume` brings their work
    back first.
    """
    client = client or connect()
    removed: list[ContainerSummary] = []
    for container in _managed(client, all_owners):
        row = _summary(container)
        if select is not None and not select(row):
            continue
        if row.status == "running" and not include_running and not (ended and ended(row.session_id)):
            continue
        if row.workspace_mode == "copy" and not copies:
            if kept is not None:
                kept.append(row)
            continue
        if not dry_run:
            try:
                container.reload()
                if (container.labels or {}).get(LABEL_MANAGED) != "1":
                    continue
                container.remove(force=True)
            except NotFound:
                continue
            except APIError as exc:
                raise SandboxError(f"cannot remove {row.name}: {exc.explanation or exc}") from None
        removed.append(row)
    return removed
