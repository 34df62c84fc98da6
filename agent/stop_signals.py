"""How a run is asked to stop: Ctrl-C and SIGTERM, and what each means at each moment.

First Ctrl-C: a model request is aborted at once (nothing is lost), anything else (a running tool,
bookkeeping) is let finish and the run stops before the next step. Second Ctrl-C, or SIGTERM (a CI
runner's stop, before its SIGKILL): stop now, so the interruption is recorded and the resume hint
printed while there is still time. Only the main thread can take signals: a loop run elsewhere (a
sub-agent's) installs nothing and is stopped by its parent.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class StopSignals:
    """The stop requests of one run; ``with signals:`` installs the handlers for its duration."""

    def __init__(self, notice: Callable[[str], None]) -> None:
        self._notice = notice
        self.interrupts = 0  # Ctrl-C presses so far
        self.terminated = False  # SIGTERM arrived
        self.phase = "idle"  # "model" while a request is in flight (a first Ctrl-C aborts it)
        self._previous: tuple[Any, Any] | None = None
        self._critical = 0  # inside critical(): a stop waits for its end
        self._deferred = False

    @property
    def stop_requested(self) -> bool:
        return self.interrupts > 0

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupts += 1
        if self.interrupts >= 2 or self.phase == "model":
            self._stop_now()
            return
        self._notice("stopping after the running tool (Ctrl-C again to stop now)")

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True
        self._stop_now()

    def _stop_now(self) -> None:
        if self._critical:
            self._deferred = True
            return
        self._deferred = False  # this stop is the one a critical block might still hold
        raise KeyboardInterrupt

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A stop that arrives inside waits until the block is done (recording an event: on disk
        and in the state, or neither). Signal handlers run in the main thread, between bytecodes,
        so this counter needs no lock."""
        self._critical += 1
        done = False
        try:
            yield
            done = True
        finally:
            self._critical -= 1
            if not self._critical and self._deferred:
                self._deferred = False
                if done:  # a failed block's own error goes first; it ends the run anyway
                    raise KeyboardInterrupt

    def request_stop(self) -> None:
        """A stop asked through the interface rather than a signal (Ctrl-C at an approval
        prompt, which reads the key itself): like a first Ctrl-C, no call starts after it."""
        self.interrupts += 1

    def __enter__(self) -> StopSignals:
        # Each run starts with no stop requested (an interactive session runs one per turn).
        self.interrupts, self.terminated, self._deferred = 0, False, False
        if threading.current_thread() is threading.main_thread():
            self._previous = (signal.signal(signal.SIGINT, self._on_sigint),
                              signal.signal(signal.SIGTERM, self._on_sigterm))
        return self

    def shield(self) -> None:
        """While stopping: a further SIGTERM must not cut the bookkeeping short."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous[0])
            signal.signal(signal.SIGTERM, self._previous[1])
            self._previous = None
