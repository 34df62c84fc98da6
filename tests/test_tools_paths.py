"""Workspace confinement: no tool reads or writes outside the workspace, whatever the path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kimi_code.tools.builtin import default_registry
from kimi_code.tools.paths import PathError, open_read, resolve, write_bytes
from kimi_code.tools.registry import ToolContext


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("print('a')\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace standing in for the host's files (safe to write to)."""
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret.txt").write_text("TOP SECRET\n")
    return d


def call(ws: Path, name: str, **args: object):
    ctx = ToolContext(workspace=ws, sandbox=None)  # type: ignore[arg-type]
    return default_registry().run(name, json.dumps(args), ctx)


def test_relative_absolute_and_sandbox_paths_resolve_inside(ws: Path) -> None:
    assert resolve(ws, "src/a.py").rel == "src/a.py"
    assert resolve(ws, "./src/../src/a.py").rel == "src/a.py"
    assert resolve(ws, str(ws / "src" / "a.py")).rel == "src/a.py"
    assert resolve(ws, "/workspace/src/a.py").rel == "src/a.py"
    assert resolve(ws, "/workspace").rel == "."
    assert resolve(ws, ".").rel == "."
    assert resolve(ws, "new/file.txt").rel == "new/file.txt"  # need not exist yet


@pytest.mark.parametrize("bad", ["../x", "src/../../x", "/etc/passwd", "/workspace/../etc/passwd",
                                 "/workspacex/a", "~/.ssh/id_rsa", "", "a\x00b"])
def test_escapes_and_bad_paths_are_refused(ws: Path, bad: str) -> None:
    with pytest.raises(PathError):
        resolve(ws, bad)


def test_workspace_reached_through_a_symlink_is_fine(tmp_path: Path, ws: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(ws)
    assert resolve(alias, "src/a.py").rel == "src/a.py"
    assert resolve(alias, str(alias / "src" / "a.py")).rel == "src/a.py"


def test_symlink_to_etc_passwd_is_refused_for_every_tool(ws: Path) -> None:
    (ws / "pw").symlink_to("/etc/passwd")
    for name, args in [("read_file", {"path": "pw"}),
                       ("edit_file", {"path": "pw", "old_string": "root", "new_string": "toor"}),
                       ("write_file", {"path": "pw", "content": "x"}),
                       ("view_image", {"path": "pw"}),
                       ("search", {"pattern": "root", "path": "pw"}),
                       ("list_files", {"path": "pw"})]:
        res = call(ws, name, **args)
        assert res.is_error, name
        assert "outside the workspace" in res.text and "pw -> /etc/passwd" in res.text, (name, res.text)
        assert "root:" not in res.text


def test_symlinked_directory_is_refused_for_reading_and_writing(ws: Path, outside: Path) -> None:
    (ws / "linkdir").symlink_to(outside)
    res = call(ws, "read_file", path="linkdir/secret.txt")
    assert res.is_error and "linkdir ->" in res.text and "TOP SECRET" not in res.text
    res = call(ws, "write_file", path="linkdir/new.txt", content="pwned")
    assert res.is_error and not (outside / "new.txt").exists()
    res = call(ws, "write_file", path="linkdir/deeper/new.txt", content="pwned")
    assert res.is_error and not (outside / "deeper").exists()
    res = call(ws, "edit_file", path="linkdir/secret.txt", old_string="TOP", new_string="NO")
    assert res.is_error and (outside / "secret.txt").read_text() == "TOP SECRET\n"
    res = call(ws, "list_files", path="linkdir")
    assert res.is_error and "secret" not in res.text
    # An intermediate component that is a symlink to outside, reached through '..'.
    (ws / "src" / "up").symlink_to(outside)
    res = call(ws, "read_file", path="src/up/../up/secret.txt")
    assert res.is_error and "TOP SECRET" not in res.text


def test_dangling_symlink_to_outside_is_not_written_through(ws: Path, outside: Path) -> None:
    (ws / "dangling").symlink_to(outside / "created-by-agent.txt")
    res = call(ws, "write_file", path="dangling", content="x")
    assert res.is_error
    assert not (outside / "created-by-agent.txt").exists()


def test_symlinks_inside_the_workspace_are_followed(ws: Path) -> None:
    (ws / "alias.py").symlink_to("src/a.py")
    (ws / "srcdir").symlink_to("src")
    assert resolve(ws, "alias.py").rel == "src/a.py"
    res = call(ws, "read_file", path="srcdir/a.py")
    assert not res.is_error and "print('a')" in res.text
    res = call(ws, "edit_file", path="alias.py", old_string="'a'", new_string="'b'")
    assert not res.is_error
    assert (ws / "src" / "a.py").read_text() == "print('b')\n"
    assert (ws / "alias.py").is_symlink()  # the link itself is kept


def test_symlink_swapped_in_after_the_check_is_not_followed(ws: Path, outside: Path) -> None:
    """A process in the sandbox replaces a checked directory by a symlink: opening must fail."""
    (ws / "data").mkdir()
    (ws / "data" / "secret.txt").write_text("inside\n")
    wp = resolve(ws, "data/secret.txt")
    (ws / "data" / "secret.txt").unlink()
    (ws / "data").rmdir()
    (ws / "data").symlink_to(outside)
    with pytest.raises(PathError, match="symlink"):
        open_read(wp)
    with pytest.raises(PathError, match="symlink"):
        write_bytes(wp, b"pwned")
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"
    # The same for the final component.
    (ws / "f.txt").write_text("x")
    wp = resolve(ws, "f.txt")
    os.unlink(ws / "f.txt")
    (ws / "f.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(PathError):
        open_read(wp)
    with pytest.raises(PathError, match="symlink"):
        write_bytes(wp, b"pwned")
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"


def test_missing_file_suggests_close_names(ws: Path) -> None:
    res = call(ws, "read_file", path="src/b.py")
    assert res.is_error and "does not exist" in res.text
    res = call(ws, "read_file", path="src/a.pyy")
    assert "did you mean src/a.py?" in res.text
    res = call(ws, "read_file", path="nodir/a.py")
    assert res.is_error and "nodir does not exist" in res.text


def test_file_tools_never_write_inside_dot_git(tmp_path: Path) -> None:
    """Host-side git reads .git/config and hooks: a tool write there would be host code execution."""
    import json
    import subprocess

    from kimi_code.sandbox.local import LocalSandbox
    from kimi_code.tools.builtin import default_registry
    from kimi_code.tools.registry import ToolContext

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "link").symlink_to(".git")
    config_before = (tmp_path / ".git" / "config").read_bytes()
    ctx = ToolContext(workspace=tmp_path, sandbox=LocalSandbox("s", tmp_path))
    reg = default_registry()
    attempts = [
        ("write_file", {"path": ".git/config", "content": "[core]\n\tfsmonitor = touch PWNED\n"}),
        ("write_file", {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\ntouch PWNED\n"}),
        ("write_file", {"path": "link/hooks/reference-transaction", "content": "x"}),
        ("write_file", {"path": "/workspace/.git/info/attributes", "content": "* filter=x"}),
        ("edit_file", {"path": ".git/config", "old_string": "[core]", "new_string": "[core]\n\tfsmonitor = x"}),
    ]
    for name, args in attempts:
        result = reg.run(name, json.dumps(args), ctx)
        assert result.is_error and ".git" in result.text, (name, args, result.text)
    assert (tmp_path / ".git" / "config").read_bytes() == config_before
    assert not (tmp_path / ".git" / "hooks" / "pre-commit").exists()
    assert not (tmp_path / ".git" / "hooks" / "reference-transaction").exists()
    # Reading stays allowed.
    assert not reg.run("read_file", json.dumps({"path": ".git/config"}), ctx).is_error
