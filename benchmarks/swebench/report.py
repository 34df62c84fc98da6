"""The results JSONL and the end-of-run summary (a rich table on a terminal, plain text otherwise)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from .records import TaskResult


class ResultsWriter:
    """Appends one JSON line per finished task (flushed at once: a long run can be watched with
    tail -f), and, with ``predictions``, the task's patch in SWE-bench's predictions format."""

    def __init__(self, path: Path, predictions: Path | None = None, model_name: str = "kimi-code") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh = open(path, "w", encoding="utf-8")
        self._pred = None
        if predictions is not None:
            predictions.parent.mkdir(parents=True, exist_ok=True)
            self._pred = open(predictions, "w", encoding="utf-8")
        self.model_name = model_name
        self._lock = threading.Lock()

    def write(self, result: TaskResult) -> None:
        with self._lock:
            self._fh.write(result.to_json() + "\n")
            self._fh.flush()
            if self._pred is not None:
                self._pred.write(result.prediction(self.model_name) + "\n")
                self._pred.flush()

    def close(self) -> None:
        self._fh.close()
        if self._pred is not None:
            self._pred.close()


def _row(r: TaskResult) -> list[str]:
    tokens = r.tokens.get("prompt", 0) + r.tokens.get("completion", 0)
    return [r.instance_id, r.status, "yes" if r.resolved else "no", str(r.steps), f"{tokens:,}",
            f"{r.cached_share:.0%}", f"${r.cost:.4f}", f"{r.wall_time:.1f}s"]


HEADERS = ["instance", "status", "resolved", "steps", "tokens", "cached", "cost", "time"]


def totals_line(results: list[TaskResult]) -> str:
    n = len(results)
    solved = sum(r.resolved for r in results)
    cost = sum(r.cost for r in results)
    wall = sum(r.wall_time for r in results)
    share = f" ({solved / n:.0%})" if n else ""
    return f"resolved {solved}/{n}{share} · cost ${cost:.4f} · task time {wall:.1f}s"


def print_summary(results: list[TaskResult], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*HEADERS, title="SWE-bench run")
        for r in results:
            style = "green" if r.resolved else ("red" if r.status not in ("unresolved",) else None)
            table.add_row(*_row(r), style=style)
        console = Console(file=stream)
        console.print(table)
        console.print(totals_line(results), highlight=False)
        return
    rows = [HEADERS] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    for row in rows:
        stream.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n")
    stream.write(totals_line(results) + "\n")
