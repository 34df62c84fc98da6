"""File tools: read_file, write_file, edit_file, list_files. All paths go through tools/paths.py."""

from __future__ import annotations

import codecs
import difflib
import os
import re
import stat
from collections import Counter
from typing import BinaryIO

from .image import sniff_image
from .media import sniff
from .paths import PathError, WorkspacePath, lstat, open_read, read_bytes, resolve, resolve_for_write, write_bytes
from .types import ToolContext, ToolError, ToolResult
from .walk import MAX_LIST_ENTRIES, list_tree

MAX_LINE_CHARS = 2000  # a longer line is shown cut, with its full length
MAX_READ_CHARS = 40_000  # one read_file result stops at a line boundary before this (~10k tokens)
MAX_EDIT_BYTES = 10 * 1024 * 1024  # edit_file loads the whole file
SNIFF_BYTES = 8192
_LINE_READ_CAP = 64 * 1024  # bytes of one line kept in memory while reading a window
_COUNT_CAP_BYTES = 512 * 1024 * 1024  # beyond this, the line count of a huge file is a lower bound
DIFF_TEXT_LINES = 80  # diff lines shown to the model; the full diff goes to metadata
DIFF_METADATA_CHARS = 200_000
LIST_DIR_ENTRIES = 200  # entries shown per directory in list_files
LIST_TOTAL_LINES = 2000


# -- text detection -----------------------------------------------------------------------------


def _binary_hint(wp: WorkspacePath, head: bytes, size: int) -> str | None:
    """Why this is not a text file (and what to do instead), or None for text."""
    kind = sniff_image(head)
    if kind:
        return f"{wp.rel} is a {kind} image: use view_image to look at it."
    fmt = sniff(head)
    if fmt is not None:  # a video (images are matched above)
        return f"{wp.rel} is a {fmt.label} video: use view_video to look at it."
    if head.startswith(b"%PDF"):
        return (f"{wp.rel} is a PDF ({size} bytes): read_file shows text only; extract text with "
                "shell, e.g. `pdftotext file.pdf -` if installed.")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return (f"{wp.rel} is UTF-16 text: read_file shows UTF-8/latin-1 text only; convert it with "
                "shell, e.g. `iconv -f UTF-16 -t UTF-8 file`.")
    if b"\0" in head:
        return (f"{wp.rel} looks binary ({size} bytes): read_file shows text only. Inspect it with "
                "shell, e.g. `file PATH` or `xxd PATH | head -50`.")
    return None


def _head_encoding(head: bytes, complete: bool) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # The sample may end in the middle of a multi-byte character.
        if not complete and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            return "utf-8"
        return "latin-1"


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) for a whole file: UTF-8 (with or without BOM), else latin-1 (lossless)."""
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data.decode("utf-8-sig"), "utf-8-sig"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _count_lines(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


# -- read_file ----------------------------------------------------------------------------------


# read_file never scans more than this many bytes of one file (a huge sparse file must not stall it).
SCAN_CAP = 256 << 20


def _skip_lines(f: BinaryIO, n: int) -> int:
    """Advance past n newline characters (fewer at end of file); returns how many were passed."""
    passed = scanned = 0
    while passed < n:
        if scanned >= SCAN_CAP:
            raise ToolError(f"line {n + 1} lies beyond the first {SCAN_CAP >> 20} MB of the file, which is as "
                            "far as read_file scans; use shell (e.g. sed -n or tail) for such a file")
        chunk = f.read(1 << 20)
        scanned += len(chunk)
        if not chunk:
            break
        count = chunk.count(b"\n")
        if passed + count < n:
            passed += count
            continue
        pos = -1
        for _ in range(n - passed):
            pos = chunk.index(b"\n", pos + 1)
        f.seek(pos + 1 - len(chunk), 1)
        passed = n
    return passed


def _count_newlines(f: BinaryIO, cap: int) -> tuple[int, bool]:
    """Newlines from the current position to the end (or to cap bytes); (count, reached end)."""
    count = scanned = 0
    while scanned < cap:
        chunk = f.read(min(1 << 20, cap - scanned))
        if not chunk:
            return count, True
        scanned += len(chunk)
        count += chunk.count(b"\n")
    return count, f.read(1) == b""


def read_file(ctx: ToolContext, path: str, offset: int = 1, limit: int = 2000) -> ToolResult:
    """Read a text file; lines come numbered (`     12<TAB>text`).

    Shows `limit` lines from line `offset` on, and says how many lines the file has and how to
    read on. Lines over 2000 characters are cut. Binary files are refused; for images use view_image.
    The line-number prefixes are not part of the file: never copy them into edit_file.

    Args:
        path: file to read, relative to the workspace.
        offset: line number to start from (1 = first line).
        limit: maximum number of lines to return.
    """
    if offset < 1:
        raise ToolError("offset is a line number and starts at 1")
    if limit < 1:
        raise ToolError("limit must be at least 1")
    wp = resolve(ctx.workspace, path, ctx.sandbox_root)
    with open_read(wp) as f:
        size = _fstat_size(f)
        head = f.read(SNIFF_BYTES)
        hint = _binary_hint(wp, head, size)
        if hint:
            return ToolResult(hint, is_error=True, metadata={"path": wp.rel, "bytes": size})
        encoding = _head_encoding(head, complete=len(head) == size)
        if size == 0:
            return ToolResult(f"[{wp.rel}: empty file]", metadata={"path": wp.rel, "total_lines": 0})
        f.seek(0)
        passed = _skip_lines(f, offset - 1)
        shown: list[str] = []
        newlines_in_window = 0
        chars = 0
        crlf = False
        cut_by_size = False
        while len(shown) < limit:
            raw = f.readline(_LINE_READ_CAP)
            if not raw:
                break
            full_len = len(raw)
            ended = raw.endswith(b"\n")
            if not ended and full_len == _LINE_READ_CAP:
                while True:  # the rest of a very long line: counted, not kept
                    more = f.readline(_LINE_READ_CAP)
                    full_len += len(more)
                    if not more or more.endswith(b"\n"):
                        ended = bool(more)
                        break
                    if full_len > SCAN_CAP:  # stop scanning; the line is reported as cut
                        break
            newlines_in_window += ended
            body = raw[:-1] if raw.endswith(b"\n") else raw
            if body.endswith(b"\r"):
                crlf = True
                body = body[:-1]
            line = body.decode("utf-8" if encoding != "latin-1" else "latin-1", "replace")
            if passed == 0 and not shown and encoding == "utf-8-sig":
                line = line.removeprefix("\ufeff")
            if len(line) > MAX_LINE_CHARS or full_len > len(raw):
                line = f"{line[:MAX_LINE_CHARS]}… [line cut: {full_len} bytes in total]"
            rendered = f"{offset + len(shown):>6}\t{line}"
            if shown and chars + len(rendered) > MAX_READ_CHARS:
                cut_by_size = True
                # Unread this line so the count below includes it.
                newlines_in_window -= ended
                f.seek(-full_len, 1)
                break
            shown.append(rendered)
            chars += len(rendered) + 1
        rest, complete = _count_newlines(f, _COUNT_CAP_BYTES)
        f.seek(size - 1)
        last_is_newline = f.read(1) == b"\n"
    total = passed + newlines_in_window + rest + (0 if last_is_newline else 1)
    if not shown:
        raise ToolError(f"offset {offset} is past the end of {wp.rel}: it has {total} lines")
    first, last = offset, offset + len(shown) - 1
    total_text = f"{total}" if complete else f"at least {total}"
    notes = []
    if encoding == "latin-1":
        notes.append("not UTF-8: decoded as latin-1")
    if crlf:
        notes.append("CRLF line endings")
    note = f" ({'; '.join(notes)})" if notes else ""
    span = f"line {first}" if first == last else f"lines {first}-{last}"
    header = f"[{wp.rel}: {span} of {total_text}{note}]"
    parts = [header, *shown]
    if last < total or not complete:
        why = " (output size limit)" if cut_by_size else ""
        parts.append(f"[{total - last if complete else 'more'} more lines{why}: "
                     f"read_file(path={wp.rel!r}, offset={last + 1}) to read on]")
    return ToolResult("\n".join(parts), metadata={
        "path": wp.rel, "start": first, "end": last, "total_lines": total if complete else None,
    })


def _fstat_size(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


# -- diffs --------------------------------------------------------------------------------------

_HUNK_RE = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def bounded_diff(old: str, new: str, path: str, context: int = 3) -> str:
    """Unified diff whose cost depends on the changed region, not on the file's size."""
    a = old.replace("\r\n", "\n").split("\n")
    b = new.replace("\r\n", "\n").split("\n")
    for lines in (a, b):
        if lines and lines[-1] == "":
            lines.pop()
    p = 0
    limit = min(len(a), len(b))
    while p < limit and a[p] == b[p]:
        p += 1
    s = 0
    while s < limit - p and a[-1 - s] == b[-1 - s]:
        s += 1
    lo = max(0, p - context)
    a_hi = len(a) - max(0, s - context)
    b_hi = len(b) - max(0, s - context)
    header = [f"--- a/{path}", f"+++ b/{path}"]
    if (a_hi - lo) + (b_hi - lo) > 40_000:
        return "\n".join(header + [f"@@ diff omitted: lines {p + 1}-{len(a) - s} changed "
                                   f"({a_hi - lo} -> {b_hi - lo} lines) @@"])
    body = list(difflib.unified_diff(a[lo:a_hi], b[lo:b_hi], lineterm="", n=context))[2:]

    def shift(m: re.Match[str]) -> str:
        return (f"@@ -{int(m.group(1)) + lo}{m.group(2) or ''} "
                f"+{int(m.group(3)) + lo}{m.group(4) or ''} @@")

    body = [_HUNK_RE.sub(shift, line) if line.startswith("@@") else line for line in body]
    return "\n".join(header + body) if body else ""


def _short_diff(diff: str) -> str:
    lines = diff.split("\n")
    if len(lines) <= DIFF_TEXT_LINES:
        return diff
    return "\n".join(lines[:DIFF_TEXT_LINES] + [f"… ({len(lines) - DIFF_TEXT_LINES} more diff lines)"])


def _cap(text: str, limit: int = DIFF_METADATA_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "\n… (diff cut)"


# -- write_file ---------------------------------------------------------------------------------


def write_file(ctx: ToolContext, path: str, content: str) -> ToolResult:
    """Write a whole file (UTF-8), creating parent directories; overwrites an existing file.

    For changes to part of an existing file, prefer edit_file.

    Args:
        path: file to write, relative to the workspace.
        content: the complete new content of the file.
    """
    wp = resolve_for_write(ctx.workspace, path, ctx.sandbox_root)
    st = lstat(wp)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{wp.rel} is a directory")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ToolError(f"content cannot be encoded as UTF-8: {exc}") from None
    old_text = None
    if st is not None and st.st_size <= MAX_EDIT_BYTES:
        old = read_bytes(wp)
        if old == data:
            return ToolResult(f"{wp.rel} already has exactly this content ({_count_lines(content)} "
                              "lines); nothing written.", metadata={"path": wp.rel, "created": False,
                                                                    "unchanged": True})
        if b"\0" not in old[:SNIFF_BYTES]:
            old_text = decode_text(old)[0]
    created = write_bytes(wp, data)
    ctx.wrote(wp.rel)
    lines = _count_lines(content)
    if created:
        text = f"Created {wp.rel} ({lines} lines, {len(data)} bytes)."
    else:
        was = f"; it had {_count_lines(old_text)} lines" if old_text is not None else ""
        text = f"Overwrote {wp.rel} ({lines} lines, {len(data)} bytes{was})."
    diff = bounded_diff(old_text or "", content, wp.rel) if (created or old_text is not None) else ""
    return ToolResult(text, metadata={"path": wp.rel, "created": created, "lines": lines,
                                      "bytes": len(data), "diff": _cap(diff)})


# -- edit_file ----------------------------------------------------------------------------------


def _to_crlf(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\n", "\r\n")


def _line_of(text: str, positions: list[int]) -> list[int]:
    lines = []
    line, last = 1, 0
    for pos in positions:
        line += text.count("\n", last, pos)
        last = pos
        lines.append(line)
    return lines


def _find_all(text: str, needle: str) -> list[int]:
    found = []
    pos = text.find(needle)
    while pos != -1:
        found.append(pos)
        pos = text.find(needle, pos + len(needle))
    return found


_NUMBERED_RE = re.compile(r"^\s*\d+\t")


_TOKEN_RE = re.compile(r"\w+")


def _closest_region(lines: list[str], old: str) -> tuple[int, int, float] | None:
    """(start, end, similarity) of the window of lines most like ``old``; cost linear in the file.

    Candidate windows get votes from identical lines and from shared words (a rare word such as
    an identifier or a number counts more than a common one); only the best few are compared
    character by character.
    """
    old_lines = old.replace("\r\n", "\n").strip("\n").split("\n")
    k = max(1, len(old_lines))
    if not lines:
        return None
    old_stripped: dict[str, list[int]] = {}
    old_tokens: dict[str, list[int]] = {}
    for j, ol in enumerate(old_lines):
        if ol.strip():
            old_stripped.setdefault(ol.strip(), []).append(j)
        for tok in set(_TOKEN_RE.findall(ol)):
            old_tokens.setdefault(tok, []).append(j)
    hits: dict[str, list[int]] = {}
    votes: Counter[int] = Counter()
    for i, line in enumerate(lines):
        for j in old_stripped.get(line.strip(), ()):
            votes[i - j] += 2.0
        for tok in set(_TOKEN_RE.findall(line)):
            if tok in old_tokens:
                hits.setdefault(tok, []).append(i)
    for tok, where in hits.items():
        if len(where) > 2000:
            continue
        weight = 1.0 / len(where)
        for i in where:
            for j in old_tokens[tok]:
                votes[i - j] += weight
    target = "\n".join(old_lines)[:5000]
    best: tuple[int, int, float] | None = None
    for start, _ in votes.most_common(12):
        lo = max(0, min(start, len(lines) - 1))
        hi = min(len(lines), lo + k)
        window = "\n".join(lines[lo:hi])[:5000]
        ratio = difflib.SequenceMatcher(None, window, target, autojunk=False).ratio()
        if best is None or ratio > best[2]:
            best = (lo, hi, ratio)
    if best is None or best[2] < 0.3:
        return None
    return best


def _no_match_message(wp: WorkspacePath, text: str, old: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    message = f"old_string was not found in {wp.rel}."
    old_lines = old.replace("\r\n", "\n").split("\n")
    if sum(bool(_NUMBERED_RE.match(ol)) for ol in old_lines) >= max(1, len(old_lines) // 2 + 1):
        message += (" It seems to include the line-number prefixes of read_file's output; "
                    "old_string must be the file's text only.")
    region = _closest_region(lines, old)
    if region is None:
        return message + " No similar region either: read the file again to see its current content."
    lo, hi, ratio = region
    ctx_lo, ctx_hi = max(0, lo - 2), min(len(lines), hi + 2)
    shown = [f"{n + 1:>6}\t{lines[n][:MAX_LINE_CHARS]}" for n in range(ctx_lo, min(ctx_hi, ctx_lo + 40))]
    squash = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    same_but_space = squash("\n".join(lines[lo:hi])) == squash(old)
    span = f"line {lo + 1}" if hi - lo == 1 else f"lines {lo + 1}-{hi}"
    message += (f" The most similar region is {span} ({ratio:.0%} similar)"
                + (", which differs only in whitespace/indentation" if same_but_space else "")
                + ":\n" + "\n".join(shown)
                + "\nCopy old_string exactly from the file (without the line-number prefixes).")
    return message


def edit_file(
    ctx: ToolContext, path: str, old_string: str, new_string: str, replace_all: bool = False
) -> ToolResult:
    """Replace an exact piece of text in a file; returns a unified diff.

    old_string must match the file exactly (whitespace included) and be unique unless
    replace_all is true; include a few surrounding lines to make it unique. The file's line
    endings, encoding and permissions are kept. To create a file, use write_file.

    Args:
        path: file to edit, relative to the workspace.
        old_string: the exact text to replace.
        new_string: the replacement text.
        replace_all: replace every occurrence instead of exactly one.
    """
    if old_string == "":
        raise ToolError("old_string is empty: give the exact text to replace (use write_file to "
                        "create a file or replace all of it)")
    if old_string == new_string:
        raise ToolError("old_string and new_string are the same: nothing to change")
    wp = resolve_for_write(ctx.workspace, path, ctx.sandbox_root)
    st = lstat(wp)
    if st is None:
        open_read(wp)  # raises "does not exist; did you mean ..."
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ToolError(f"{wp.rel} is a directory")
    if st is not None and st.st_size > MAX_EDIT_BYTES:
        raise ToolError(f"{wp.rel} is {st.st_size // (1024 * 1024)} MB; edit_file handles files up "
                        f"to {MAX_EDIT_BYTES // (1024 * 1024)} MB. Use shell (e.g. sed) for this one.")
    data = read_bytes(wp)
    hint = _binary_hint(wp, data[:SNIFF_BYTES], len(data))
    if hint:
        raise ToolError(hint.replace("view_image to look at it", "shell tools to change it")
                        .replace("view_video to look at it", "shell tools to change it"))
    text, encoding = decode_text(data)
    crlf_count = text.count("\r\n")
    crlf_file = crlf_count > text.count("\n") - crlf_count

    candidates = [old_string]
    if crlf_file:
        candidates.append(_to_crlf(old_string))
    elif "\r\n" in old_string:
        candidates.append(old_string.replace("\r\n", "\n"))
    needle, positions = old_string, []
    for cand in dict.fromkeys(candidates):
        positions = _find_all(text, cand)
        if positions:
            needle = cand
            break
    if not positions:
        raise ToolError(_no_match_message(wp, text, old_string))
    match_lines = _line_of(text, positions)
    if len(positions) > 1 and not replace_all:
        shown = ", ".join(str(n) for n in match_lines[:30])
        more = f" and {len(positions) - 30} more" if len(positions) > 30 else ""
        raise ToolError(f"old_string occurs {len(positions)} times in {wp.rel} (at lines {shown}{more}). "
                        "Include more surrounding lines to make it unique, or set replace_all=true.")
    replacement = _to_crlf(new_string) if crlf_file else new_string.replace("\r\n", "\n")
    if replace_all:
        new_text = text.replace(needle, replacement)
    else:
        pos = positions[0]
        new_text = text[:pos] + replacement + text[pos + len(needle):]
    try:
        new_data = new_text.encode(encoding)
    except UnicodeEncodeError as exc:
        bad = new_text[exc.start:exc.end]
        raise ToolError(f"{wp.rel} is {encoding}-encoded and cannot store {bad!r} from new_string; "
                        "use characters the file's encoding has (or convert the file first)") from None
    write_bytes(wp, new_data)
    ctx.wrote(wp.rel)
    diff = bounded_diff(text, new_text, wp.rel)
    count = len(positions)
    where = ", ".join(str(n) for n in match_lines[:10]) + (" …" if count > 10 else "")
    summary = (f"Edited {wp.rel}: replaced {count} occurrence{'s' if count > 1 else ''} "
               f"(line{'s' if count > 1 else ''} {where}).")
    return ToolResult(summary + ("\n" + _short_diff(diff) if diff else ""), metadata={
        "path": wp.rel, "replacements": count, "lines": match_lines[:100], "diff": _cap(diff),
        "encoding": encoding, "line_endings": "crlf" if crlf_file else "lf",
    })


# -- list_files ---------------------------------------------------------------------------------


class _Dir:
    __slots__ = ("dirs", "files", "opaque", "n_files", "n_dirs")

    def __init__(self) -> None:
        self.dirs: dict[str, _Dir] = {}
        self.files: list[str] = []
        self.opaque: list[str] = []
        self.n_files = 0  # recursive counts
        self.n_dirs = 0


def _build_tree(files: list[str], dirs: list[str], opaque: list[str]) -> _Dir:
    root = _Dir()

    def node_for(parts: list[str]) -> _Dir:
        node = root
        for part in parts:
            node = node.dirs.setdefault(part, _Dir())
        return node

    for d in dirs:
        node_for(d.split("/"))
    for f in files:
        parts = f.split("/")
        node_for(parts[:-1]).files.append(parts[-1])
    for o in opaque:
        parts = o.split("/")
        node_for(parts[:-1]).opaque.append(parts[-1])

    def count(node: _Dir) -> None:
        node.n_files = len(node.files)
        node.n_dirs = len(node.dirs) + len(node.opaque)
        for child in node.dirs.values():
            count(child)
            node.n_files += child.n_files
            node.n_dirs += child.n_dirs

    count(root)
    return root


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def list_files(ctx: ToolContext, path: str = ".", depth: int = 2) -> ToolResult:
    """Show the tree of a directory, respecting .gitignore and skipping .git.

    Directories end with `/`; a directory deeper than `depth` is shown with the number of files
    and directories it holds. Symlinks are shown as `name -> target`. A byte of a name that is not
    UTF-8 is shown as `\\xNN` (e.g. `bad\\xffname.txt`); the file tools accept the name so written.

    Args:
        path: directory to list, relative to the workspace.
        depth: how many levels to show (1 = only the directory's own entries).
    """
    if depth < 1:
        raise ToolError("depth must be at least 1")
    wp = resolve(ctx.workspace, path, ctx.sandbox_root)
    st = lstat(wp)
    if st is None:
        open_read(wp)
        raise PathError(f"{path} does not exist")
    if not stat.S_ISDIR(st.st_mode):
        return ToolResult(f"{wp.rel} is a file ({st.st_size} bytes), not a directory; use read_file.",
                          is_error=True)
    listing = list_tree(wp)
    tree = _build_tree(listing.files, listing.dirs, listing.opaque)
    base = "." if wp.rel == "." else wp.rel
    out: list[str] = [f"{base}/ ({_plural(tree.n_files, 'file')}, {_plural(tree.n_dirs, 'dir')})"]
    cut_total = [False]

    def link_suffix(rel: str) -> str:
        target = wp.host / rel
        if target.is_symlink():
            try:
                return f" -> {os.readlink(target)}"
            except OSError:
                return " -> ?"
        return ""

    def render(node: _Dir, prefix: str, level: int, indent: str) -> None:
        entries: list[tuple[str, str, object]] = (
            [(name, "dir", child) for name, child in sorted(node.dirs.items())]
            + [(name, "opaque", None) for name in sorted(node.opaque)]
            + [(name, "file", None) for name in sorted(node.files)]
        )
        for i, (name, kind, child) in enumerate(entries):
            if len(out) >= LIST_TOTAL_LINES:
                cut_total[0] = True
                return
            if i >= LIST_DIR_ENTRIES:
                rest = entries[i:]
                n_files = sum(1 for e in rest if e[1] == "file")
                n_dirs = len(rest) - n_files
                out.append(f"{indent}… {len(rest)} more entries here ({_plural(n_files, 'file')}, "
                           f"{_plural(n_dirs, 'dir')})")
                return
            rel = f"{prefix}{name}"
            if kind == "file":
                out.append(f"{indent}{name}{link_suffix(rel)}")
            elif kind == "opaque":
                out.append(f"{indent}{name}/ (nested repository, not listed)")
            else:
                assert isinstance(child, _Dir)
                if level >= depth:
                    if child.n_files or child.n_dirs:
                        out.append(f"{indent}{name}/ ({_plural(child.n_files, 'file')}, "
                                   f"{_plural(child.n_dirs, 'dir')})")
                    else:
                        out.append(f"{indent}{name}/ (empty)")
                else:
                    out.append(f"{indent}{name}/")
                    render(child, f"{rel}/", level + 1, indent + "  ")

    render(tree, "", 1, "  ")
    if cut_total[0]:
        out.append(f"[output cut at {LIST_TOTAL_LINES} lines: list a subdirectory or use a smaller depth]")
    if listing.truncated:
        out.append(f"[the listing stopped after {MAX_LIST_ENTRIES} entries]")
    if tree.n_files == 0 and tree.n_dirs == 0:
        out.append("  (empty, or everything in it is ignored by .gitignore)")
    return ToolResult("\n".join(out), metadata={
        "path": wp.rel, "files": tree.n_files, "dirs": tree.n_dirs, "source": listing.source,
    })
