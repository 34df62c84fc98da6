"""Gitignore-style patterns: the glob dialect, search's ``glob`` filter and ``.gitignore`` rules.

``*`` and ``?`` stay inside one path component, ``**/`` spans directories, ``[...]`` is a class.
``glob_matcher`` is the search tool's filter (``{a,b}`` alternatives, a pattern without ``/``
matches file names at any depth); ``IgnoreRules`` applies ``.gitignore`` files the way git does,
for the walker of tools/walk.py when there is no git repository to ask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


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
