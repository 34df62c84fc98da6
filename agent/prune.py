"""`kimi-code sessions prune`: which sessions are old enough to go, and removing one of them.

Removing a session deletes its directory from the store, its checkpoint refs in its repository
and its sandbox container. The refs and the container are best effort (the repository may be gone,
Docker unavailable): what could not be removed is returned as warnings, the session is deleted
all the same. Heavy modules (git, docker) are imported on use.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

ENDED = ("finished", "failed")  # statuses pruned without --include-unfinished


def prunable(store: Any, older_than_days: float, include_unfinished: bool = False,
             now: float | None = None) -> list[Any]:
    """The sessions (``SessionMeta``, newest first) last updated more than ``older_than_days`` ago
    and ended, or also unfinished ones with ``include_unfinished``."""
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    return [m for m in store.list()
            if not (m.updated > cutoff or (m.status not in ENDED and not include_unfinished))]


def remove_session(store: Any, meta: Any) -> list[str]:
    """Remove one session: its checkpoint refs, the images and videos it uploaded to the endpoint's
    files API, its container, then its directory. Returns a warning line for each part that could
    not be removed."""
    warnings: list[str] = []
    try:
        from .checkpoints import Checkpointer

        Checkpointer(Path(meta.repo), meta.id).prune()
    except Exception as exc:  # noqa: BLE001 - the repository may be gone
        warnings.append(f"refs of {meta.id} not pruned: {exc}")
    from .worktrees import AGENTS_DIR, remove_worktree

    top, sep, _ = str(meta.repo).partition("/" + AGENTS_DIR + "/")
    if getattr(meta, "parent", None) and sep:  # a sub-agent's worktree goes with it (its work was on the refs)
        remove_worktree(Path(top), meta.id)
    try:
        warnings.extend(_delete_uploads(store, meta))
    except Exception as exc:  # noqa: BLE001 - the endpoint may be unreachable; the session goes anyway
        warnings.append(f"uploaded files of {meta.id} not deleted: {exc}")
    try:
        from kimi_code.sandbox.manage import prune_containers

        prune_containers(include_running=True, copies=True, all_owners=True, select=lambda row, sid=meta.id: row.session_id == sid)
    except Exception as exc:  # noqa: BLE001 - docker may be unavailable
        warnings.append(f"container of {meta.id} not removed: {exc}")
    store.delete(meta.id)
    return warnings


def _delete_uploads(store: Any, meta: Any) -> list[str]:
    """DELETE /files/{id} for each upload the session's log records, at the endpoint it used (the
    key from this environment, as for any run)."""
    from .media import delete_uploads

    events = store.open(meta.id).log.load()

    def client(settings: Any) -> Any:
        from .client import ModelClient

        settings.require_api_key()
        return ModelClient(settings)

    from .config import load_settings

    return delete_uploads(events, load_settings, client)
