"""The step snapshot, taken in the background while the next model request is on its way.

A snapshot runs several git processes (tens of milliseconds, more in a big repository); the model
takes seconds to answer. So the loop starts the snapshot when a step's tools are done and collects
it once the model has answered, before anything else happens: the ``checkpoint`` event lands in
the log at the same place as before (after the step's results, before the next assistant turn),
with the same meaning, and the next step's tools wait only if the snapshot is still running. A kill
while it runs is what a kill between a result and a synchronous snapshot always was: the log says
the workspace is dirty, and resume checkpoints it before going on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


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
