"""read_file, write_file and edit_file: normal and error cases, encodings, line endings, big files."""

from __future__ import annotations

import json
import stat
import time
import tracemalloc
from pathlib import Path

import pytest

from kimi_code.tools import files
from kimi_code.tools.builtin import default_registry
from kimi_code.tools.registry import ToolContext, ToolResult

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path


def call(ws: Path, name: str, **args: object) -> ToolResult:
    ctx = ToolContext(workspace=ws, sandbox=None)  # type: ignore[arg-type]
    return default_registry().run(name, json.dumps(args), ctx)


# -- read_file ----------------------------------------------------------------------------------


def test_read_numbered_window_and_how_to_read_on(ws: Path) -> None:
    (ws / "f.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    res = call(ws, "read_file", path="f.txt")
    assert not res.is_error
    assert res.text.split("\n")[0] == "[f.txt: lines 1-10 of 10]"
    assert "     1\tline 1\n     2\tline 2" in res.text and "more lines" not in res.text
    res = call(ws, "read_file", path="f.txt", offset=4, limit=3)
    assert res.text == ("[f.txt: lines 4-6 of 10]\n     4\tline 4\n     5\tline 5\n     6\tline 6\n"
                        "[4 more lines: read_file(path='f.txt', offset=7) to read on]")
    assert res.metadata == {"path": "f.txt", "start": 4, "end": 6, "total_lines": 10}
    res = call(ws, "read_file", path="f.txt", offset=11)
    assert res.is_error and "past the end" in res.text and "10 lines" in res.text
    assert call(ws, "read_file", path="f.txt", offset=0).is_error
    assert call(ws, "read_file", path="f.txt", limit=0).is_error


def test_read_last_line_without_newline_and_empty_file(ws: Path) -> None:
    (ws / "f.txt").write_text("a\nb")
    res = call(ws, "read_file", path="f.txt")
    assert res.text == "[f.txt: lines 1-2 of 2]\n     1\ta\n     2\tb"
    (ws / "empty.txt").write_text("")
    res = call(ws, "read_file", path="empty.txt")
    assert not res.is_error and "empty file" in res.text
    res = call(ws, "read_file", path=".")
    assert res.is_error and "list_files" in res.text


def test_read_unicode_crlf_bom_and_latin1(ws: Path) -> None:
    (ws / "u.txt").write_text("héllo wörld ✓ 🐍\nzweite Zeile\n", encoding="utf-8")
    res = call(ws, "read_file", path="u.txt")
    assert "     1\théllo wörld ✓ 🐍" in res.text
    (ws / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
    res = call(ws, "read_file", path="crlf.txt")
    assert "CRLF" in res.text and "\r" not in res.text and "     2\ttwo" in res.text
    (ws / "bom.txt").write_bytes(b"\xef\xbb\xbffirst\nsecond\n")
    res = call(ws, "read_file", path="bom.txt")
    assert "     1\tfirst" in res.text and "\ufeff" not in res.text
    (ws / "latin.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    res = call(ws, "read_file", path="latin.txt")
    assert "     1\tcafé crème" in res.text and "latin-1" in res.text


def test_read_refuses_binary_and_points_images_to_view_image(ws: Path) -> None:
    (ws / "blob.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    res = call(ws, "read_file", path="blob.bin")
    assert res.is_error and "binary" in res.text and "xxd" in res.text
    (ws / "pic.dat").write_bytes(PNG_1x1)  # judged by content, not by name
    res = call(ws, "read_file", path="pic.dat")
    assert res.is_error and "PNG image" in res.text and "view_image" in res.text


def test_read_cuts_very_long_lines(ws: Path) -> None:
    (ws / "min.js").write_text("x" * 5000 + "\nshort\n")
    res = call(ws, "read_file", path="min.js")
    first = res.text.split("\n")[1]
    assert first.startswith("     1\t" + "x" * 2000 + "…") and "5001 bytes in total" in first
    assert len(first) < 2100
    assert "     2\tshort" in res.text


def test_read_stops_before_the_output_limit_and_says_where_to_go_on(ws: Path) -> None:
    (ws / "wide.txt").write_text("".join(f"{i:05d} " + "y" * 200 + "\n" for i in range(1, 1001)))
    res = call(ws, "read_file", path="wide.txt")
    assert len(res.text) <= files.MAX_READ_CHARS + 500
    end = res.metadata["end"]
    assert 100 < end < 1000
    assert f"offset={end + 1}" in res.text and "output size limit" in res.text
    assert "of 1000" in res.text.split("\n")[0]


def test_read_window_of_a_huge_file_without_loading_it(ws: Path) -> None:
    big = ws / "big.log"
    with big.open("w") as f:
        for i in range(1, 600_001):
            f.write(f"entry {i}\n")
    one_line = ws / "oneline.txt"
    with one_line.open("wb") as f:
        f.write(b"z" * (40 * 1024 * 1024))  # 40 MB, one line, no newline
    tracemalloc.start()
    started = time.monotonic()
    res = call(ws, "read_file", path="big.log", offset=599_998, limit=10)
    res2 = call(ws, "read_file", path="oneline.txt")
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert res.text.split("\n")[0] == "[big.log: lines 599998-600000 of 600000]"
    assert "599998\tentry 599998" in res.text and "600000\tentry 600000" in res.text
    assert res2.text.split("\n")[0] == "[oneline.txt: line 1 of 1]"
    assert f"{40 * 1024 * 1024} bytes in total" in res2.text
    assert peak < 8 * 1024 * 1024, peak  # neither file was read into memory whole
    assert elapsed < 5


# -- write_file ---------------------------------------------------------------------------------


def test_write_creates_parents_then_overwrites_keeping_mode(ws: Path) -> None:
    res = call(ws, "write_file", path="a/b/c.py", content="x = 1\ny = 2\n")
    assert not res.is_error and res.text == "Created a/b/c.py (2 lines, 12 bytes)."
    assert res.metadata["created"] is True and "+x = 1" in res.metadata["diff"]
    target = ws / "a" / "b" / "c.py"
    target.chmod(0o754)
    res = call(ws, "write_file", path="a/b/c.py", content="z = 3\n")
    assert res.text == "Overwrote a/b/c.py (1 lines, 6 bytes; it had 2 lines)."
    assert res.metadata["created"] is False and "-x = 1" in res.metadata["diff"]
    assert target.read_text() == "z = 3\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o754
    res = call(ws, "write_file", path="a/b/c.py", content="z = 3\n")
    assert "nothing written" in res.text and res.metadata["unchanged"]
    assert call(ws, "write_file", path="a/b", content="x").is_error  # a directory
    assert [p.name for p in (ws / "a" / "b").iterdir()] == ["c.py"]  # no temporary files left


def test_write_unicode_and_file_under_a_file_fails_cleanly(ws: Path) -> None:
    res = call(ws, "write_file", path="ü/日本.txt", content="こんにちは\n")
    assert not res.is_error and (ws / "ü" / "日本.txt").read_text(encoding="utf-8") == "こんにちは\n"
    (ws / "plain").write_text("x")
    res = call(ws, "write_file", path="plain/child.txt", content="x")
    assert res.is_error and "not a directory" in res.text


# -- edit_file ----------------------------------------------------------------------------------

SOURCE = """import os


def greet(name):
    message = "hello " + name
    print(message)
    return message


def shout(name):
    message = "HELLO " + name
    print(message)
    return message
"""


def test_edit_unique_match_returns_diff(ws: Path) -> None:
    (ws / "m.py").write_text(SOURCE)
    res = call(ws, "edit_file", path="m.py", old_string='"hello " + name', new_string='f"hello {name}"')
    assert not res.is_error, res.text
    assert res.text.startswith("Edited m.py: replaced 1 occurrence (line 5).")
    assert '-    message = "hello " + name\n+    message = f"hello {name}"' in res.text
    assert "@@ -2,7 +2,7 @@" in res.metadata["diff"]
    assert (ws / "m.py").read_text() == SOURCE.replace('"hello " + name', 'f"hello {name}"')


def test_edit_several_matches_lists_lines_and_replace_all(ws: Path) -> None:
    (ws / "m.py").write_text(SOURCE)
    res = call(ws, "edit_file", path="m.py", old_string="    print(message)\n", new_string="")
    assert res.is_error
    assert "occurs 2 times" in res.text and "lines 6, 12" in res.text and "replace_all" in res.text
    assert (ws / "m.py").read_text() == SOURCE
    res = call(ws, "edit_file", path="m.py", old_string="    print(message)\n", new_string="",
               replace_all=True)
    assert not res.is_error and "replaced 2 occurrences (lines 6, 12)" in res.text
    assert "print" not in (ws / "m.py").read_text()


def test_edit_no_match_shows_closest_region(ws: Path) -> None:
    (ws / "m.py").write_text(SOURCE)
    res = call(ws, "edit_file", path="m.py",
               old_string='def shout(name):\n    message = "HELLO" + name\n    print(message)',
               new_string="pass")
    assert res.is_error
    assert "not found" in res.text and "most similar region is lines 10-12" in res.text
    assert '    11\t    message = "HELLO " + name' in res.text
    # Only the indentation differs: the message says so.
    res = call(ws, "edit_file", path="m.py", old_string='def greet(name):\n  message = "hello " + name',
               new_string="x")
    assert "differs only in whitespace" in res.text
    # Line-number prefixes copied from read_file are recognised.
    res = call(ws, "edit_file", path="m.py", old_string='     4\tdef greet(name):\n     5\t    message',
               new_string="x")
    assert "line-number prefixes" in res.text
    res = call(ws, "edit_file", path="m.py", old_string="completely unrelated text qqq", new_string="x")
    assert res.is_error and "not found" in res.text
    assert (ws / "m.py").read_text() == SOURCE


def test_edit_closest_region_in_a_large_file_is_fast(ws: Path) -> None:
    lines = [f"value_{i} = compute({i}, factor={i % 7})" for i in range(100_000)]
    (ws / "big.py").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    res = call(ws, "edit_file", path="big.py", old_string="value_77777 = compute(77777, factor=99)",
               new_string="x")
    assert time.monotonic() - started < 5
    assert res.is_error and "line 77778 " in res.text


def test_edit_keeps_crlf_line_endings(ws: Path) -> None:
    (ws / "w.txt").write_bytes(b"alpha\r\nbeta\r\ngamma\r\n")
    res = call(ws, "edit_file", path="w.txt", old_string="alpha\nbeta", new_string="ALPHA\nnew line\nBETA")
    assert not res.is_error, res.text
    assert (ws / "w.txt").read_bytes() == b"ALPHA\r\nnew line\r\nBETA\r\ngamma\r\n"
    assert res.metadata["line_endings"] == "crlf" and "\r" not in res.metadata["diff"]
    # Old text given with \r\n matches too.
    res = call(ws, "edit_file", path="w.txt", old_string="BETA\r\ngamma", new_string="BETA\ngamma!")
    assert not res.is_error
    assert (ws / "w.txt").read_bytes() == b"ALPHA\r\nnew line\r\nBETA\r\ngamma!\r\n"


def test_edit_keeps_encoding_bom_and_permissions(ws: Path) -> None:
    path = ws / "bom.py"
    path.write_bytes(b"\xef\xbb\xbf# caf\xc3\xa9\nx = 1\n")
    path.chmod(0o755)
    res = call(ws, "edit_file", path="bom.py", old_string="x = 1", new_string="x = '✓'")
    assert not res.is_error and res.metadata["encoding"] == "utf-8-sig"
    assert path.read_bytes() == "\ufeff# café\nx = '✓'\n".encode("utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755

    latin = ws / "latin.txt"
    latin.write_bytes("prix: 5 \xa3\nnom: caf\xe9\n".encode("latin-1"))
    res = call(ws, "edit_file", path="latin.txt", old_string="café", new_string="thé")
    assert not res.is_error and res.metadata["encoding"] == "latin-1"
    assert latin.read_bytes() == "prix: 5 \xa3\nnom: th\xe9\n".encode("latin-1")
    res = call(ws, "edit_file", path="latin.txt", old_string="thé", new_string="茶")
    assert res.is_error and "latin-1" in res.text
    assert latin.read_bytes() == "prix: 5 \xa3\nnom: th\xe9\n".encode("latin-1")


def test_edit_error_cases(ws: Path) -> None:
    (ws / "m.py").write_text(SOURCE)
    assert "old_string is empty" in call(ws, "edit_file", path="m.py", old_string="", new_string="x").text
    assert "the same" in call(ws, "edit_file", path="m.py", old_string="os", new_string="os").text
    res = call(ws, "edit_file", path="nope.py", old_string="a", new_string="b")
    assert res.is_error and "does not exist" in res.text
    assert not (ws / "nope.py").exists()
    (ws / "blob.bin").write_bytes(b"\x00\x01\x02abc")
    res = call(ws, "edit_file", path="blob.bin", old_string="abc", new_string="x")
    assert res.is_error and "binary" in res.text
    huge = ws / "huge.txt"
    with huge.open("wb") as f:
        f.truncate(files.MAX_EDIT_BYTES + 1)
    res = call(ws, "edit_file", path="huge.txt", old_string="a", new_string="b")
    assert res.is_error and "10 MB" in res.text


def test_bounded_diff_numbers_hunks_in_the_whole_file() -> None:
    old = "".join(f"l{i}\n" for i in range(1000))
    new = old.replace("l500\n", "L500\n")
    diff = files.bounded_diff(old, new, "f")
    assert diff.split("\n")[:3] == ["--- a/f", "+++ b/f", "@@ -498,7 +498,7 @@"]
    assert "-l500\n+L500" in diff
    assert files.bounded_diff(old, old, "f") == ""


def test_huge_sparse_file_does_not_stall_read_file(tmp_path: Path, monkeypatch) -> None:
    import json
    import time

    from kimi_code.sandbox.local import LocalSandbox
    from kimi_code.tools import files as files_mod
    from kimi_code.tools.builtin import default_registry
    from kimi_code.tools.registry import ToolContext

    monkeypatch.setattr(files_mod, "SCAN_CAP", 8 << 20)
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.write(b"text line\n" * 1000)
        fh.truncate(50 << 30)  # 50 GB, sparse: nothing but zeros after the first 10 KB
    ctx = ToolContext(workspace=tmp_path, sandbox=LocalSandbox("s", tmp_path))
    started = time.monotonic()
    result = default_registry().run("read_file", json.dumps({"path": "big.txt", "offset": 5000}), ctx)
    assert time.monotonic() - started < 10
    assert result.is_error and "beyond the first 8 MB" in result.text
