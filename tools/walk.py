"""Listing a tree the way git sees it (used by list_files and search).

Inside a git repository the file list comes from ``git ls-files --cached --others
--exclude-standard`` (the index is fast, and git's own ignore rules are the truth). Elsewhere a
walker applies ``.gitignore`` files itself (tools/ignore.py). Git runs on the host against a
directory the sandbox can write, so it runs with every repository-configurable command hook
turned off.
"""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import dataclass, field

from .ignore import IgnoreRules
from .paths import PathError, WorkspacePath, open_read

# A listing stops after this many entries (a workspace full of generated files must not stall).
MAX_LIST_ENTRIES = 200_000
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
