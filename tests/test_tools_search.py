"""list_files and search: .gitignore (through git and without it), depth, truncation, safety."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kimi_code.tools.builtin import default_registry
from kimi_code.tools.paths import resolve
from kimi_code.tools.registry import ToolContext, ToolResult
from kimi_code.tools.ignore import IgnoreRules, glob_matcher
from kimi_code.tools.walk import _walk_listing, list_tree


def call(ws: Path, name: str, **args: object) -> ToolResult:
    ctx = ToolContext(workspace=ws, sandbox=None)  # type: ignore[arg-type]
    return default_registry().run(name, json.dumps(args), ctx)


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(ws), *args], check=True, capture_output=True, text=True).stdout


def make_tree(root: Path) -> None:
    files = {
        ".gitignore": "*.log\nbuild/\n/top_only.txt\n!keep.log\ndocs/**/secret*\nnode_modules\n",
        "README.md": "# Demo\nTODO: write docs\n",
        "top_only.txt": "ignored at the top\n",
        "keep.log": "kept despite *.log\n",
        "debug.log": "ignored\n",
        "src/app.py": "def main():\n    return helper()  # TODO tidy\n",
        "src/util/helper.py": "def helper():\n    return 42\n",
        "src/util/top_only.txt": "not anchored here: kept\n",
        "src/build/gen.py": "generated = True\n",
        "build/out.txt": "ignored dir\n",
        "docs/a/b/secret_plan.md": "ignored by **\n",
        "docs/a/public.md": "public TODO\n",
        "node_modules/pkg/index.js": "module.exports = 1\n",
        "sub/.gitignore": "*.tmp\n!important.tmp\n",
        "sub/x.tmp": "ignored by nested file\n",
        "sub/important.tmp": "re-included\n",
        "sub/y.txt": "kept\n",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


EXPECTED = {
    ".gitignore", "README.md", "keep.log", "src/app.py", "src/util/helper.py", "src/util/top_only.txt",
    "docs/a/public.md", "sub/.gitignore", "sub/important.tmp", "sub/y.txt",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    make_tree(root)
    git(root, "init", "-q")
    return root


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    root = tmp_path / "plain"
    root.mkdir()
    make_tree(root)
    return root


def test_git_listing_and_fallback_walker_agree(repo: Path, plain: Path) -> None:
    from_git = list_tree(resolve(repo, "."))
    assert from_git.source == "git"
    assert set(from_git.files) == EXPECTED
    walked = list_tree(resolve(plain, "."))
    assert walked.source == "walk"
    assert set(walked.files) == EXPECTED
    # Listing a subdirectory applies the ignore files above it too.
    sub = _walk_listing(resolve(plain, "src"))
    assert set(sub.files) == {"app.py", "util/helper.py", "util/top_only.txt"}
    assert set(list_tree(resolve(repo, "src")).files) == {"app.py", "util/helper.py", "util/top_only.txt"}


def test_git_listing_skips_deleted_files_and_shows_nested_repos(repo: Path) -> None:
    git(repo, "add", "-A")
    (repo / "README.md").unlink()
    nested = repo / "vendor" / "lib"
    nested.mkdir(parents=True)
    (nested / "f.c").write_text("int x;\n")
    git(nested, "init", "-q")
    listing = list_tree(resolve(repo, "."))
    assert "README.md" not in listing.files
    assert "vendor/lib" in listing.opaque
    res = call(repo, "list_files", depth=3)
    assert "lib/ (nested repository, not listed)" in res.text


def test_a_repository_above_the_workspace_is_not_used(tmp_path: Path) -> None:
    outer = tmp_path / "home"
    ws = outer / "project"
    ws.mkdir(parents=True)
    git(outer, "init", "-q")
    (outer / ".gitignore").write_text("*\n")  # the dotfiles-repository habit
    (ws / "main.py").write_text("x = 1\n")
    listing = list_tree(resolve(ws, "."))
    assert listing.source == "walk" and listing.files == ["main.py"]


def test_git_config_cannot_run_commands_on_the_host(repo: Path, tmp_path: Path) -> None:
    """The sandbox can write .git/config; git runs on the host: its hooks must stay off."""
    marker = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    git(repo, "add", "-A")
    git(repo, "config", "core.fsmonitor", str(hook))
    # Without protection git would run it (proves the test can see the attack):
    subprocess.run(["git", "-C", str(repo), "ls-files", "--cached", "--others"], capture_output=True)
    assert marker.exists()
    marker.unlink()
    assert not call(repo, "list_files").is_error
    assert not call(repo, "search", pattern="TODO").is_error
    assert list_tree(resolve(repo, ".")).source == "git"
    assert not marker.exists()


@pytest.mark.parametrize("pattern,path,is_dir,ignored", [
    ("*.log", "a/b/c.log", False, True),
    ("/top.txt", "top.txt", False, True),
    ("/top.txt", "sub/top.txt", False, False),
    ("build/", "build", False, False),  # dir-only pattern, a file of that name
    ("build/", "x/build", True, True),
    ("doc/*.txt", "doc/a.txt", False, True),
    ("doc/*.txt", "doc/x/a.txt", False, False),
    ("**/foo", "a/b/foo", False, True),
    ("a/**/b", "a/b", True, True),
    ("a/**/b", "a/x/y/b", True, True),
    ("abc/**", "abc/d/e", False, True),
    ("\\#hash", "#hash", False, True),
    ("[abc].txt", "b.txt", False, True),
    ("[!abc].txt", "b.txt", False, False),
    ("?.py", "x.py", False, True),
    ("?.py", "xy.py", False, False),
])
def test_ignore_rules(pattern: str, path: str, is_dir: bool, ignored: bool) -> None:
    rules = IgnoreRules()
    rules.add_file("", pattern + "\n")
    assert rules.ignored(path, is_dir) is ignored


def test_glob_matcher() -> None:
    assert glob_matcher("*.py").match("src/deep/x.py")
    assert not glob_matcher("*.py").match("src/x.pyc")
    assert glob_matcher("*.{ts,tsx}").match("a/b.tsx") and glob_matcher("*.{ts,tsx}").match("b.ts")
    assert glob_matcher("src/**/test_*.py").match("src/a/b/test_x.py")
    assert glob_matcher("src/**/test_*.py").match("src/test_x.py")
    assert not glob_matcher("src/*.py").match("src/a/x.py")


def test_list_files_tree_depth_and_counts(repo: Path) -> None:
    res = call(repo, "list_files", depth=1)
    assert not res.is_error
    lines = res.text.split("\n")
    assert lines[0] == "./ (10 files, 5 dirs)"
    assert "  src/ (3 files, 1 dir)" in lines and "  docs/ (1 file, 1 dir)" in lines
    assert "  README.md" in lines and "  debug.log" not in lines and "  build/" not in res.text
    assert "  .git/" not in res.text and "  .gitignore" in lines
    res = call(repo, "list_files", depth=3)
    assert "  src/\n    util/\n      helper.py\n      top_only.txt\n    app.py" in res.text
    assert "      a/ (1 file, 0 dirs)" not in res.text and "    a/\n      public.md" in res.text
    res = call(repo, "list_files", path="src/util")
    assert res.text.split("\n")[0] == "src/util/ (2 files, 0 dirs)"
    assert call(repo, "list_files", depth=0).is_error
    res = call(repo, "list_files", path="README.md")
    assert res.is_error and "read_file" in res.text
    assert call(repo, "list_files", path="missing").is_error


def test_list_files_cuts_big_directories(tmp_path: Path) -> None:
    for i in range(250):
        (tmp_path / f"f{i:03d}.txt").write_text("x")
    res = call(tmp_path, "list_files")
    assert "… 50 more entries here (50 files, 0 dirs)" in res.text
    assert res.text.count("\n") < 210


def test_search_results_format_gitignore_and_glob(repo: Path) -> None:
    res = call(repo, "search", pattern="TODO")
    assert res.text.split("\n") == [
        "README.md:2: TODO: write docs",
        "docs/a/public.md:1: public TODO",
        "src/app.py:2:     return helper()  # TODO tidy",
    ]
    assert res.metadata["matches"] == 3 and res.metadata["files_with_matches"] == 3
    res = call(repo, "search", pattern="todo", ignore_case=True, glob="*.py")
    assert res.text == "src/app.py:2:     return helper()  # TODO tidy"
    res = call(repo, "search", pattern="def", path="src/util")
    assert res.text == "src/util/helper.py:1: def helper():"
    res = call(repo, "search", pattern="return", path="src/util/helper.py")
    assert res.text == "src/util/helper.py:2:     return 42"
    res = call(repo, "search", pattern="ignored")  # only in ignored files
    assert res.text.startswith("No matches for 'ignored'")
    res = call(repo, "search", pattern="(unclosed")
    assert res.is_error and "invalid regular expression" in res.text


def test_search_truncates_with_a_count(tmp_path: Path) -> None:
    (tmp_path / "many.txt").write_text("".join(f"hit {i}\n" for i in range(500)))
    res = call(tmp_path, "search", pattern=r"^hit \d+$", max_results=10)
    lines = res.text.split("\n")
    assert lines[:2] == ["many.txt:1: hit 0", "many.txt:2: hit 1"] and len(lines) == 11
    assert "showing 10 of 500 matching lines in 1 files" in lines[-1]
    assert res.metadata["truncated"] is True
    assert call(tmp_path, "search", pattern="x", max_results=0).is_error


def test_search_skips_binary_and_huge_files_and_handles_crlf_and_unicode(tmp_path: Path) -> None:
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01needle\x00")
    with (tmp_path / "huge.txt").open("w") as f:
        f.write("needle\n" + "x" * (5 * 1024 * 1024))
    (tmp_path / "win.txt").write_bytes(b"first\r\nneedle here\r\nthird needle\r\n")
    (tmp_path / "uni.txt").write_text("ünïcödé ✓ needle\n", encoding="utf-8")
    res = call(tmp_path, "search", pattern=r"needle( here)?$")
    assert res.text.split("\n")[:3] == ["uni.txt:1: ünïcödé ✓ needle", "win.txt:2: needle here",
                                        "win.txt:3: third needle"]
    assert "1 files over 4 MB skipped" in res.text and "1 binary files skipped" in res.text
    # Line numbers agree with read_file's.
    read = call(tmp_path, "read_file", path="win.txt", offset=2, limit=1)
    assert "     2\tneedle here" in read.text


def test_search_shows_long_lines_around_the_match(tmp_path: Path) -> None:
    (tmp_path / "min.js").write_text("a" * 5000 + "NEEDLE" + "b" * 5000 + "\n")
    res = call(tmp_path, "search", pattern="NEEDLE")
    assert "NEEDLE" in res.text and len(res.text) < 400


def test_search_does_not_follow_symlinks_out(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("password=hunter2\n")
    (ws / "link.txt").symlink_to(outside / "secret.txt")
    (ws / "linkdir").symlink_to(outside)
    (ws / "ok.txt").write_text("password=fine\n")
    res = call(ws, "search", pattern="password")
    assert res.text == "ok.txt:1: password=fine"


def test_catastrophic_pattern_is_stopped_by_the_time_budget(tmp_path: Path, monkeypatch) -> None:
    import json
    import time

    from kimi_code.sandbox.local import LocalSandbox
    from kimi_code.tools import search as search_mod
    from kimi_code.tools.builtin import default_registry
    from kimi_code.tools.registry import ToolContext

    monkeypatch.setattr(search_mod, "SEARCH_TIME_BUDGET", 2.0)
    (tmp_path / "t.txt").write_text("a" * 60 + "b\n")
    ctx = ToolContext(workspace=tmp_path, sandbox=LocalSandbox("s", tmp_path))
    started = time.monotonic()
    result = default_registry().run("search", json.dumps({"pattern": "(a|aa)+$", "path": "t.txt"}), ctx)
    assert time.monotonic() - started < 10
    assert "incomplete" in result.text
