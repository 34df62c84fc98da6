"""Listing a tree the way git sees it, and the ``search`` tool (a regular expression over files).

Inside a git repository the file list comes from ``git ls-files --cached --others
--exclude-standard`` (the index is fast, and git's own ignore rules are the truth). Elsewhere a
walker applies ``.gitignore`` files itself. Git runs on the host against a directory the sandbox
can write, so it runs with every repository-configurable command hook turned off.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache

import regex as rx

from .paths import PathError, WorkspacePath, lstat, open_read, resolve
from .registry import ToolContext, ToolError, ToolResult

# A listing stops after this many entries (a workspace full of generated files must not stall).
MAX_LIST_ENTRIES = 200_000
# search skips files larger than this, and reads at most this many characters of a line.
SEARCH_MAX_FILE_BYTES = 4 * 1024 * 1024
SEARCH_LINE_SHOWN = 300
SEARCH_TIME_BUDGET = 20.0


def _left(started: float) -> float:
    """Seconds of the search budget left (at least a sliver, so the match can start)."""
    return max(0.01, SEARCH_TIME_BUDGET - (time.monotonic() - started))
GIT_TIMEOUT = 30.0

# Config that could make git run a command, from a repository the model can write.
_GIT_SAFE = [
    "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.untrackedCache=false",
    "-c", "core.sshCommand=false",
    "-c", "core.pager=cat",
    "--no-pager",
    "--no-optional-locks",
]


# -- glob patterns ------------------------------------------------------------------------------


def _translate_glob(pattern: str) -> str:
    """gitignore-style glob -> regex body: ``*`` and ``?`` stay inside one path component."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern[i:i + 2] == "**":
                before_ok = i == 0 or pattern[i - 1] == "/"
                after = pattern[i + 2:i + 3]
                if before_ok and after == "/":  # "**/": zero or more directories
                    out.append("(?:.*/)?")
                    i += 3
                    continue
                if before_ok and after == "":  # trailing "/**": everything inside
                    out.append(".*")
                    i += 2
                    continue
                out.append("[^/]*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _expand_braces(pattern: str) -> list[str]:
    m = re.search(r"\{([^{}]*,[^{}]*)\}", pattern)
    if not m:
        return [pattern]
    out: list[str] = []
    for option in m.group(1).split(","):
        out += _expand_braces(pattern[:m.start()] + option + pattern[m.end():])
    return out


@lru_cache(maxsize=256)
def glob_matcher(pattern: str) -> re.Pattern[str]:
    """Matcher for search's ``glob``: without a '/', it matches the file name at any depth."""
    parts = []
    for p in _expand_braces(pattern.strip()):
        p = p.lstrip("/") if p.startswith("/") else p
        if "/" in p:
            parts.append(_translate_glob(p))
        else:
            parts.append("(?:.*/)?" + _translate_glob(p))
    return re.compile("^(?:" + "|".join(parts) + ")$")


# -- .gitignore without git ---------------------------------------------------------------------


@dataclass
class _Rule:
    base: str  # directory of the .gitignore, relative to the listing root ("" for the root)
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


class IgnoreRules:
    """The subset of gitignore semantics a walker needs: nested files, negation, anchoring,
    directory-only patterns, ``**``. Later rules win; a deeper file's rules come later."""

    def __init__(self) -> None:
        self.rules: list[_Rule] = []

    def add_file(self, base: str, text: str) -> None:
        for raw in text.splitlines():
            line = raw.rstrip("\r")
            if not line or line.startswith("#"):
                continue
            # Trailing spaces are ignored unless escaped.
            stripped = line.rstrip(" ")
            if stripped.endswith("\\") and len(stripped) < len(line):
                stripped += " "
            line = stripped
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            elif line.startswith("\\!") or line.startswith("\\#"):
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            if not line:
                continue
            anchored = "/" in line
            body = _translate_glob(line.lstrip("/"))
            regex = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$")
            self.rules.append(_Rule(base, regex, negated, dir_only))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        for rule in self.rules:
            if rule.base:
                if not rel.startswith(rule.base + "/"):
                    continue
                sub = rel[len(rule.base) + 1:]
            else:
                sub = rel
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(sub):
                result = not rule.negated
        return result


# -- listing ------------------------------------------------------------------------------------


@dataclass
class Listing:
    """Entries below a directory, relative to it (posix), as git would show them."""

    files: list[str] = field(default_factory=list)  # regular files and symlinks
    dirs: list[str] = field(default_factory=list)  # directories known to exist (incl. empty ones)
    opaque: list[str] = field(default_factory=list)  # nested repositories / submodules: not entered
    truncated: bool = False
    source: str = "walk"  # "git" or "walk"


def _git_env(root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C",
               # Only a repository at or below the workspace counts: a dotfiles repository in a
               # parent directory (often ignoring "*") must not decide what the workspace holds.
               GIT_CEILING_DIRECTORIES=os.path.dirname(root))
    return env


def _git_listing(directory: str, root: str) -> Listing | None:
    try:
        proc = subprocess.run(
            ["git", *_GIT_SAFE, "-C", directory, "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=GIT_TIMEOUT, env=_git_env(root),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    listing = Listing(source="git")
    seen: set[str] = set()
    for raw in proc.stdout.split(b"\0"):
        if not raw:
            continue
        rel = os.fsdecode(raw)
        if rel in seen or rel.startswith("../"):
            continue
        seen.add(rel)
        if rel.endswith("/"):
            listing.opaque.append(rel.rstrip("/"))
            continue
        try:
            st = os.lstat(os.path.join(directory, rel))
        except OSError:  # tracked but deleted from the work tree
            continue
        if stat.S_ISDIR(st.st_mode):  # a submodule (gitlink)
            listing.opaque.append(rel)
        else:
            listing.files.append(rel)
        if len(seen) >= MAX_LIST_ENTRIES:
            listing.truncated = True
            break
    listing.files.sort()
    return listing


def _read_small_text(wp: WorkspacePath, limit: int = 1 << 20) -> str:
    try:
        with open_read(wp) as f:
            return f.read(limit).decode("utf-8", "replace")
    except (PathError, OSError):
        return ""


def _walk_listing(start: WorkspacePath) -> Listing:
    """Fallback for directories outside any git repository."""
    rules = IgnoreRules()
    # Ignore files from the workspace root down to the listed directory apply too.
    prefix_parts = start.parts
    for depth in range(len(prefix_parts) + 1):
        base_parts = prefix_parts[:depth]
        gi = WorkspacePath(start.root, "/".join(base_parts + [".gitignore"]))
        text = _read_small_text(gi)
        if text:
            rules.add_file("/".join(base_parts), text)
    start_prefix = "" if start.rel == "." else start.rel + "/"
    listing = Listing(source="walk")
    count = 0
    top = str(start.host)
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        if rel_dir:
            gi = start.child(rel_dir + "/.gitignore")
            if ".gitignore" in filenames:
                text = _read_small_text(gi)
                if text:
                    rules.add_file(start_prefix + rel_dir, text)
        keep = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d == ".git":
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                if not rules.ignored(start_prefix + rel, False):
                    listing.files.append(rel)
                continue
            if rules.ignored(start_prefix + rel, True):
                continue
            if os.path.exists(os.path.join(dirpath, d, ".git")):
                listing.opaque.append(rel)
                continue
            keep.append(d)
            listing.dirs.append(rel)
        dirnames[:] = keep
        for fname in sorted(filenames):
            rel = f"{rel_dir}/{fname}" if rel_dir else fname
            if not rules.ignored(start_prefix + rel, False):
                listing.files.append(rel)
        count += len(filenames) + len(keep)
        if count >= MAX_LIST_ENTRIES:
            listing.truncated = True
            break
    listing.files.sort()
    return listing


def list_tree(start: WorkspacePath) -> Listing:
    """Every non-ignored entry below ``start`` (a directory inside the workspace)."""
    return _git_listing(str(start.host), str(start.root)) or _walk_listing(start)


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
    target = resolve(ctx.workspace, path)
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
