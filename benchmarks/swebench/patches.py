"""Unified diffs as data: which files a patch touches and its hunks (for the oracle and the grader)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# SWE-bench does not pass files with these endings to the test runner.
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")


@dataclass
class Hunk:
    old_start: int
    old: list[str] = field(default_factory=list)  # context and removed lines, with their "\n"
    new: list[str] = field(default_factory=list)  # context and added lines


@dataclass
class FilePatch:
    old_path: str | None  # None: a new file
    new_path: str | None  # None: a deleted file
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""



def lines_of(text: str) -> list[str]:
    """Lines with their endings, split at "\\n" only: a CR or U+2028 inside a line is content, as
    for git (str.splitlines would split there too)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def _strip_prefix(name: str) -> str | None:
    name = name.split("\t")[0].strip()
    if name == "/dev/null":
        return None
    if name.startswith('"') and name.endswith('"'):
        name = name[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape").encode("latin-1").decode()
    return name[2:] if name[:2] in ("a/", "b/") else name


def parse_patch(text: str) -> list[FilePatch]:
    """Parse a (git-style) unified diff. Lines keep their endings; "\\ No newline" drops the last one's."""
    files: list[FilePatch] = []
    cur: FilePatch | None = None
    hunk: Hunk | None = None
    last: list[str] | None = None  # the block the previous +/-/space line went to (for "\ No newline")
    lines = lines_of(text)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            cur, hunk = FilePatch(None, None), None
            parts = line.rstrip("\n").split(" ")
            if len(parts) >= 4:
                cur.old_path, cur.new_path = _strip_prefix(parts[2]), _strip_prefix(parts[3])
            files.append(cur)
        elif line.startswith("--- ") and (hunk is None or _hunk_done(hunk)) and i + 1 < len(lines) \
                and lines[i + 1].startswith("+++ "):
            if cur is None or cur.hunks:
                cur = FilePatch(None, None)
                files.append(cur)
            cur.old_path = _strip_prefix(line[4:])
            cur.new_path = _strip_prefix(lines[i + 1][4:])
            hunk = None
            i += 1
        elif line.startswith("new file mode") and cur is not None:
            cur.old_path = None
        elif line.startswith("deleted file mode") and cur is not None:
            cur.new_path = None
        elif line.startswith(("Binary files", "GIT binary patch")) and cur is not None:
            cur.binary = True
        elif (m := _HUNK.match(line)) and cur is not None:
            hunk = Hunk(int(m.group(1)))
            hunk._want = (int(m.group(2) or 1), int(m.group(4) or 1))  # type: ignore[attr-defined]
            cur.hunks.append(hunk)
        elif hunk is not None and line[:1] in (" ", "-", "+") and not _hunk_done(hunk):
            body = line[1:]
            if line[0] in (" ", "-"):
                hunk.old.append(body)
            if line[0] in (" ", "+"):
                hunk.new.append(body)
            last = [hunk.old, hunk.new] if line[0] == " " else ([hunk.old] if line[0] == "-" else [hunk.new])
        elif hunk is not None and line.startswith("\\") and last:
            for block in last:
                if block and block[-1].endswith("\n"):
                    block[-1] = block[-1][:-1]
        elif hunk is not None and line in ("\n", "\r\n") and not _hunk_done(hunk):
            # Some tools strip the lone space of an empty context line.
            hunk.old.append(line)
            hunk.new.append(line)
            last = [hunk.old, hunk.new]
        i += 1
    return files


def _hunk_done(h: Hunk) -> bool:
    want_old, want_new = getattr(h, "_want", (0, 0))
    return len(h.old) >= want_old and len(h.new) >= want_new


def new_content(fp: FilePatch) -> str:
    """The whole content of a file the patch creates."""
    return "".join(line for h in fp.hunks for line in h.new)


def touched_files(patch: str) -> list[str]:
    """Every path a patch touches (old and new names), in order, once each."""
    seen: dict[str, None] = {}
    for fp in parse_patch(patch):
        for p in (fp.old_path, fp.new_path):
            if p:
                seen.setdefault(p, None)
    return list(seen)


def test_directives(test_patch: str, repo: str = "") -> list[str]:
    """What the test command is given (SWE-bench's "test directives"): the test patch's files, and
    for django the test modules they hold (``tests/a/test_b.py`` -> ``a.test_b``), as its
    ``runtests.py`` takes them."""
    files = [fp.new_path for fp in parse_patch(test_patch) if fp.new_path and not fp.new_path.endswith(NON_TEST_EXTS)]
    if repo != "django/django":
        return files
    return [f.removesuffix(".py").removeprefix("tests/").replace("/", ".") for f in files]
