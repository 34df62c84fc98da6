"""The step snapshot, taken in the background while the next model request is on its way.

A snapshot runs several git processes (tens of milliseconds, more in a big repository); the model
takes seconds to answer. So the loop starts the snapshot when a step's tools are done and collects
it once the model has answered, before anything else happens: the ``checkpoint`` event lands in
the log at the same place as before (after the step's results, before the next assistant turn),
with the same meaning, and the next step's tools wait only if the snapshot is still running. A kill
while it runs is what a kill between a result and a synchronous snapshot always was: the log says
the workspace is dirty, and resume checkpoints it before going on.

:class:`StepCheckpoints` is the loop's collaborator for all of it: the snapshot in the background,
its ``checkpoint`` event, and the git bundle a CI retry on a fresh clone restores from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from . import event_payloads as ep
from .errors import StorageError
from .state import SessionState

log = logging.getLogger(__name__)

# Seconds between two checkpoint bundles (CI mode).
BUNDLE_INTERVAL = 30.0


class Snapshotter(Protocol):
    """What the step checkpoints need of the workspace's git checkpoints (checkpoints.Checkpointer)."""

    def snapshot(self, step: int) -> Any: ...

    def head(self) -> str | None: ...

    def changed_files(self, a: str, b: str) -> list[str]: ...

    def save_bundle(self, path: Path) -> None: ...


class BackgroundSnapshot:
    """At most one snapshot in flight; :meth:`result` waits for it and returns what it returned."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._outcome: tuple[Any, BaseException | None] = (None, None)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, work: Callable[[], Any], name: str = "kimi-code-snapshot") -> None:
        """Run ``work`` (the snapshot, and whatever decides what to record) on its own thread."""
        if self._thread is not None:
            raise RuntimeError("a step snapshot is already running")

        def run() -> None:
            try:
                self._outcome = (work(), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread
                self._outcome = (None, exc)

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    def result(self) -> Any:
        """What ``work`` returned; its exception is raised here, in the caller's thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            raise RuntimeError("no step snapshot is running")
        thread.join()
        value, error = self._outcome
        self._outcome = (None, None)
        if error is not None:
            raise error
        return value


class StepCheckpoints:
    """Checkpoints the workspace after the steps that may have changed it, and records them."""

    def __init__(self, checkpointer: Snapshotter, state: SessionState, record: Callable[[ep.EventPayload], Any],
                 notice: Callable[[str], None]) -> None:
        self.checkpointer = checkpointer
        self.state = state
        self._record = record
        self._notice = notice
        self._snapshot = BackgroundSnapshot()
        # Where to keep a git bundle of the checkpoints (CI jobs resumed on a fresh clone).
        self.bundle_path: Path | None = None
        self._last_bundle = 0.0

    def start(self) -> None:
        """Snapshot the workspace as it is after the current step, in the background."""
        self.settle()
        checkpointer, step = self.checkpointer, self.state.step
        dirty, last = self.state.workspace_dirty, self.state.last_checkpoint

        def work() -> ep.Checkpoint | None:
            """The snapshot, and the checkpoint event it calls for (None: nothing to record)."""
            cp = checkpointer.snapshot(step)
            if cp is not None:
                return ep.Checkpoint(commit=cp.commit, changed=cp.changed, skipped=cp.skipped)
            if not (dirty and last):
                return None
            head = checkpointer.head()
            if head and head != last:
                # Snapshot taken but not recorded before a crash: record the one git has.
                return ep.Checkpoint(commit=head, changed=checkpointer.changed_files(last, head), skipped=[])
            return ep.Checkpoint(commit=last, changed=[], skipped=[], unchanged=True)

        self._snapshot.start(work, name=f"kimi-code-snapshot-{step}")

    def take(self) -> None:
        """Snapshot now and record it before returning (the end of a run, a resume)."""
        self.start()
        self.settle()

    def settle(self) -> None:
        """Wait for the running snapshot, if any, and record its checkpoint. A failed snapshot is
        reported and the work goes on; a log that cannot be written stops everything."""
        if not self._snapshot.running:
            return
        try:
            payload = self._snapshot.result()
            if payload is not None:
                self._record(payload)
            if self.bundle_path is not None and time.monotonic() - self._last_bundle >= BUNDLE_INTERVAL:
                self.save_bundle()
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed snapshot must not stop the work
            log.warning("checkpoint failed: %s", exc)
            self._notice(f"checkpoint failed: {exc}")

    def save_bundle(self) -> None:
        """Keep the checkpoints where a CI retry on a fresh clone finds them (throttled: its cost
        grows with the session's checkpoints; also written at every end of a run)."""
        if self.bundle_path is None or not self.state.last_checkpoint:
            return
        try:
            self.checkpointer.save_bundle(self.bundle_path)
            self._last_bundle = time.monotonic()
        except Exception as exc:  # noqa: BLE001
            log.warning("checkpoint bundle failed: %s", exc)
