"""The ``search`` tool: a regular expression over the files of a tree, line by line.

The files come from tools/walk.py (git's view of the tree, ``.gitignore`` respected), the
``glob`` filter from tools/ignore.py.
"""

from __future__ import annotations

import os
import stat
import time

import regex as rx

from .ignore import glob_matcher
from .paths import PathError, lstat, open_read, resolve
from .types import ToolContext, ToolError, ToolResult
from .walk import MAX_LIST_ENTRIES, Listing, list_tree

# search skips files larger than this, and reads at most this many characters of a line.
SEARCH_MAX_FILE_BYTES = 4 * 1024 * 1024
SEARCH_LINE_SHOWN = 300
SEARCH_TIME_BUDGET = 20.0


def _left(started: float) -> float:
    """Seconds of the search budget left (at least a sliver, so the match can start)."""
    return max(0.01, SEARCH_TIME_BUDGET - (time.monotonic() - started))


# -- the search tool ----------------------------------------------------------------------------


def _looks_binary(head: bytes) -> bool:
    return b"\0" in head


def search(
    ctx: ToolContext,
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    ignore_case: bool = False,
    max_results: int = 200,
) -> ToolResult:
    """Search file contents with a regular expression (Python `re` syntax), line by line.

    Respects .gitignore and skips .git, binary files and files over 4 MB. Results are
    `file:line: text`, in path order; when there are more than max_results, the rest is counted.

    Args:
        pattern: regular expression searched in each line, e.g. `def \\w+_handler` or `TODO|FIXME`.
        path: file or directory to search, relative to the workspace.
        glob: only search files matching this glob, e.g. `*.py`, `*.{ts,tsx}` or `src/**/test_*.py`; without a `/` it matches file names at any depth.
        ignore_case: match case-insensitively.
        max_results: maximum number of matching lines to return.
    """
    if max_results < 1:
        raise ToolError("max_results must be at least 1")
    # The `regex` module (re-compatible syntax) because its matching takes a timeout: a pattern
    # with catastrophic backtracking must not hang the host.
    flags = rx.IGNORECASE if ignore_case else 0
    try:
        regex = rx.compile(pattern, flags | rx.VERSION0)
    except (rx.error, ValueError) as exc:
        raise ToolError(f"invalid regular expression {pattern!r}: {exc}") from None
    # One whole-file test skips files without a match quickly; with MULTILINE it can only
    # over-match line by line, except for \A and \Z, which mean "every line" in a line search.
    prefilter = None
    if "\\A" not in pattern and "\\Z" not in pattern:
        prefilter = rx.compile(pattern, flags | rx.VERSION0 | rx.MULTILINE)
    target = resolve(ctx.workspace, path, ctx.sandbox_root)
    st = lstat(target)
    if st is None:
        open_read(target)  # raises the "does not exist; did you mean" error
        raise PathError(f"{path} does not exist")
    if stat.S_ISDIR(st.st_mode):
        listing = list_tree(target)
        candidates = [(target.child(rel), rel if target.rel == "." else f"{target.rel}/{rel}")
                      for rel in listing.files]
    else:
        listing = Listing(files=[target.rel])
        candidates = [(target, target.rel)]
    if glob:
        matcher = glob_matcher(glob)
        base_len = 0 if target.rel == "." or not stat.S_ISDIR(st.st_mode) else len(target.rel) + 1
        candidates = [(wp, shown) for wp, shown in candidates
                      if matcher.match(shown[base_len:]) or matcher.match(shown)]

    lines_out: list[str] = []
    total = 0
    files_with_matches = 0
    skipped_big = skipped_binary = 0
    started = time.monotonic()
    out_of_time = False
    for wp, shown in candidates:
        if time.monotonic() - started > SEARCH_TIME_BUDGET:
            out_of_time = True
            break
        try:
            f = open_read(wp)
        except (PathError, OSError):  # symlinks and special files are not searched
            continue
        with f:
            size = os.fstat(f.fileno()).st_size
            if size > SEARCH_MAX_FILE_BYTES:
                skipped_big += 1
                continue
            data = f.read()
        if _looks_binary(data[:8192]):
            skipped_binary += 1
            continue
        # Lines are "\n"-separated (as read_file counts them), a trailing "\r" dropped.
        text = data.decode("utf-8", "replace").replace("\r\n", "\n")
        try:
            if prefilter is not None and prefilter.search(text, timeout=_left(started)) is None:
                continue
        except TimeoutError:
            out_of_time = True
            break
        matched_here = False
        for lineno, line in enumerate(text.split("\n"), 1):
            try:
                m = regex.search(line, timeout=_left(started))
            except TimeoutError:
                out_of_time = True
                break
            if m is None:
                continue
            total += 1
            matched_here = True
            if len(lines_out) < max_results:
                lines_out.append(f"{shown}:{lineno}: {_shorten_around(line, m.start(), m.end())}")
        files_with_matches += matched_here
        if out_of_time:
            break

    summary_bits = []
    if total > len(lines_out):
        summary_bits.append(
            f"showing {len(lines_out)} of {total} matching lines in {files_with_matches} files; "
            "narrow the pattern, path or glob to see the rest"
        )
    if skipped_big:
        summary_bits.append(f"{skipped_big} files over {SEARCH_MAX_FILE_BYTES // (1024 * 1024)} MB skipped")
    if skipped_binary:
        summary_bits.append(f"{skipped_binary} binary files skipped")
    if listing.truncated:
        summary_bits.append(f"the file listing stopped at {MAX_LIST_ENTRIES} entries")
    if out_of_time:
        summary_bits.append(f"stopped after {SEARCH_TIME_BUDGET:.0f} s; results are incomplete")
    if not lines_out:
        where = f" among {len(candidates)} files" + (f" matching {glob!r}" if glob else "")
        text = f"No matches for {pattern!r} in {target.rel}{where}."
    else:
        text = "\n".join(lines_out)
    if summary_bits:
        text += "\n[" + "; ".join(summary_bits) + "]"
    return ToolResult(text, metadata={
        "matches": total, "shown": len(lines_out), "files_with_matches": files_with_matches,
        "files_searched": len(candidates), "truncated": total > len(lines_out) or out_of_time,
    })


def _shorten_around(line: str, start: int, end: int) -> str:
    line = line.rstrip("\r")
    if len(line) <= SEARCH_LINE_SHOWN:
        return line
    room = max(0, SEARCH_LINE_SHOWN - (end - start))
    lo = max(0, start - room // 2)
    hi = min(len(line), lo + SEARCH_LINE_SHOWN)
    lo = max(0, hi - SEARCH_LINE_SHOWN)
    return ("…" if lo > 0 else "") + line[lo:hi] + ("…" if hi < len(line) else "")
