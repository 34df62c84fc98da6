"""The oracle policy: a scripted "model" that applies the gold patch through the real agent loop.

It proves the pipeline without a model: the real ``kimi-code run`` process talks to the fake Kimi
server, which answers with tool calls derived from the task's gold ``patch`` — an ``edit_file`` per
hunk (old text widened with neighbouring lines until it occurs exactly once), ``write_file`` for new
files, ``shell`` for deletions — then ``run_tests`` on the test files, then ``finish``. A correct
harness resolves every valid task this way.
"""

from __future__ import annotations

import itertools
import shlex
import threading
from pathlib import Path
from typing import Any

from kimi_code.agent.fake_kimi import ToolCallSpec, Turn

from .patches import FilePatch, lines_of, new_content, parse_patch


def _count(text: str, needle: str) -> int:
    """Occurrences, overlapping ones included (stricter than edit_file's own count)."""
    n, pos = 0, text.find(needle)
    while pos != -1:
        n += 1
        pos = text.find(needle, pos + 1)
    return n


def _locate(lines: list[str], old: list[str], expected: int) -> int | None:
    """Where the hunk's old block sits: at its line number if it matches there, else the nearest match."""
    n = len(old)
    if 0 <= expected <= len(lines) - n and lines[expected:expected + n] == old:
        return expected
    matches = [i for i in range(len(lines) - n + 1) if lines[i:i + n] == old]
    return min(matches, key=lambda i: abs(i - expected)) if matches else None


def hunk_edits(text: str, fp: FilePatch) -> tuple[list[tuple[str, str]], str] | None:
    """The (old_string, new_string) pairs that turn ``text`` into the patched file, in order, and the
    result; None when a hunk does not match (the patch is not for this file)."""
    lines = lines_of(text)
    edits: list[tuple[str, str]] = []
    delta = 0
    for h in fp.hunks:
        expected = (h.old_start - 1 if h.old else h.old_start) + delta
        start = _locate(lines, h.old, expected)
        if start is None:
            return None
        end = start + len(h.old)
        s, e = start, end
        full = "".join(lines)
        # Widen with neighbouring lines until the old text is non-empty and unique.
        for step in itertools.count():
            old = "".join(lines[s:e])
            if old and _count(full, old) == 1:
                break
            if s == 0 and e == len(lines):
                break
            if (step % 2 == 0 and e < len(lines)) or s == 0:
                e += 1
            else:
                s -= 1
        new_lines = lines[s:start] + h.new + lines[end:e]
        old_text, new_text = "".join(lines[s:e]), "".join(new_lines)
        if old_text != new_text:
            edits.append((old_text, new_text))
        lines[s:e] = new_lines
        delta += len(h.new) - len(h.old)
    return edits, "".join(lines)


class OraclePolicy:
    """A FakeKimi responder: one tool call per turn from a script computed from the gold patch."""

    def __init__(self, workspace: Path, gold_patch: str, test_command: str | None) -> None:
        self.turns: list[Turn] = []
        self.problems: list[str] = []  # hunks the oracle could not place (the task is then not valid)
        self.requests = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()
        for fp in parse_patch(gold_patch):
            self._plan_file(workspace, fp)
        if test_command:
            self._add("Now I run the tests that cover this change.", "run_tests", {"command": test_command})
        self._finish = ("The patch is applied; finishing.", "finish",
                        {"summary": "Applied the fix hunk by hunk and ran the tests.", "status": "success"})
        self._add(*self._finish)

    def _add(self, reasoning: str, name: str, arguments: dict[str, Any]) -> None:
        self.turns.append(Turn(reasoning=reasoning, content="",
                               tool_calls=[ToolCallSpec(name, arguments, id=f"functions.{name}:{next(self._ids)}")]))

    def _plan_file(self, workspace: Path, fp: FilePatch) -> None:
        if fp.binary:
            self.problems.append(f"{fp.path}: binary patches are not supported")
            return
        if fp.new_path is None:
            self._add(f"{fp.old_path} has to go.", "shell", {"command": f"rm -f -- {shlex.quote(fp.old_path or '')}"})
            return
        source = workspace / (fp.old_path or fp.new_path)
        if fp.old_path is None or not source.is_file():
            self._add(f"I create {fp.new_path}.", "write_file", {"path": fp.new_path, "content": new_content(fp)})
            return
        with open(source, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            text = fh.read()  # newline="": CRLF files keep their CRs, as the patch does
        planned = hunk_edits(text, fp)
        if planned is None:
            self.problems.append(f"{fp.path}: a hunk does not match the checkout")
            return
        edits, result = planned
        if fp.old_path != fp.new_path:  # a rename: write the new file, remove the old one
            self._add(f"{fp.old_path} moves to {fp.new_path}.", "write_file", {"path": fp.new_path, "content": result})
            self._add(f"Removing {fp.old_path}.", "shell", {"command": f"rm -f -- {shlex.quote(fp.old_path)}"})
            return
        for n, (old, new) in enumerate(edits, 1):
            self._add(f"Change {n} of {len(edits)} in {fp.path}.", "edit_file",
                      {"path": fp.path, "old_string": old, "new_string": new})

    def __call__(self, body: dict[str, Any]) -> Turn:
        """Next scripted turn; once the script is used up, finish again (the loop should have stopped)."""
        with self._lock:
            self.requests += 1
            if self.turns:
                return self.turns.pop(0)
            reasoning, name, args = self._finish
            return Turn(reasoning=reasoning, tool_calls=[ToolCallSpec(name, args, id=f"functions.{name}:{next(self._ids)}")])
