"""Progress of a run: a live line on a terminal (done / running / queued, resolved and cost so far,
an ETA), one plain line per finished task otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from .records import Task, TaskResult


class Progress:
    """Counts what the runner reports; renders live on a TTY, line by line elsewhere."""

    def __init__(self, total: int, workers: int, stream: TextIO | None = None) -> None:
        self.total, self.workers = total, max(1, workers)
        self.stream = stream or sys.stderr
        self.running: dict[str, float] = {}
        self.done: list[TaskResult] = []
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._live: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=2,
                              transient=False)
            self._live.start()

    def line(self) -> str:
        with self._lock:
            done, running = len(self.done), len(self.running)
            queued = self.total - done - running
            resolved = sum(r.resolved for r in self.done)
            cost = sum(r.cost for r in self.done)
            eta = ""
            if self.done and queued + running:
                per_task = (time.monotonic() - self.started) / done * min(self.workers, self.total)
                left = per_task * (queued + running) / min(self.workers, self.total)
                eta = f" · ETA {_duration(left)}"
        return (f"done {done}/{self.total} · running {running} · queued {queued} · resolved {resolved}"
                f" · cost ${cost:.2f}{eta}")

    def _render(self) -> Any:
        from rich.text import Text

        active = ", ".join(sorted(self.running)[:4]) + (" …" if len(self.running) > 4 else "")
        return Text(self.line() + (f"\n  running: {active}" if active else ""))

    def notice(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, task: Task) -> None:
        with self._lock:
            self.running[task.instance_id] = time.monotonic()
        self._refresh()

    def finish(self, result: TaskResult) -> None:
        with self._lock:
            self.running.pop(result.instance_id, None)
            self.done.append(result)
        if self._live is None:
            print(f"[{result.instance_id}] {result.status} ({result.wall_time:.1f}s) — {self.line()}",
                  file=self.stream, flush=True)
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
