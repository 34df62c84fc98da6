"""The registry: schemas from signatures, validation, error results, concurrency and ordering."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from kimi_code.tools.builtin import default_registry
from kimi_code.tools.registry import (
    TOOL_NAME_RE,
    ToolContext,
    ToolError,
    ToolRegistry,
    ToolResult,
    check_schema,
    parse_docstring,
)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    # These tools never touch the sandbox.
    return ToolContext(workspace=tmp_path, sandbox=None)  # type: ignore[arg-type]


def _walk_schema(node: dict, where: str = "") -> list[str]:
    """Every schema node that lacks a type (Kimi rejects those)."""
    missing = [] if "type" in node else [where or "<root>"]
    for name, prop in node.get("properties", {}).items():
        missing += _walk_schema(prop, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        missing += _walk_schema(node["items"], f"{where}[]")
    return missing


def test_builtin_schemas_are_valid_for_kimi() -> None:
    schemas = default_registry().schemas()
    names = [s["function"]["name"] for s in schemas]
    assert names == ["read_file", "write_file", "edit_file", "list_files", "search", "shell",
                     "run_tests", "todo", "view_image", "view_video", "finish"]
    for s in schemas:
        assert s["type"] == "function"
        fn = s["function"]
        assert re.match(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$", fn["name"])
        assert fn["description"] and "Args:" not in fn["description"]
        assert fn["parameters"]["type"] == "object"
        assert _walk_schema(fn["parameters"]) == [], fn["name"]
        assert check_schema(fn["parameters"]) == []
        assert "$ref" not in json.dumps(s) and "anyOf" not in json.dumps(s) and "title" not in fn["parameters"]


def test_schemas_are_stable_and_copies() -> None:
    reg = default_registry()
    first = json.dumps(reg.schemas(), sort_keys=False)
    reg.schemas()[0]["function"]["name"] = "mutated"
    assert json.dumps(reg.schemas(), sort_keys=False) == first
    assert json.dumps(default_registry().schemas(), sort_keys=False) == first


def test_exact_schema_of_read_file_and_edit_file() -> None:
    by_name = {s["function"]["name"]: s["function"] for s in default_registry().schemas()}
    assert by_name["read_file"]["parameters"] == {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "file to read, relative to the workspace."},
            "offset": {"type": "integer", "description": "line number to start from (1 = first line).",
                       "default": 1},
            "limit": {"type": "integer", "description": "maximum number of lines to return.", "default": 2000},
        },
        "required": ["path"],
    }
    assert by_name["edit_file"]["parameters"] == {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "file to edit, relative to the workspace."},
            "old_string": {"type": "string", "description": "the exact text to replace."},
            "new_string": {"type": "string", "description": "the replacement text."},
            "replace_all": {"type": "boolean",
                            "description": "replace every occurrence instead of exactly one.",
                            "default": False},
        },
        "required": ["path", "old_string", "new_string"],
    }


def test_exact_schema_of_todo_items_and_finish_enum() -> None:
    by_name = {s["function"]["name"]: s["function"] for s in default_registry().schemas()}
    items = by_name["todo"]["parameters"]["properties"]["items"]
    assert items["type"] == "array"
    assert items["items"] == {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": 'short stable identifier of the step, e.g. "1" or "tests".'},
            "content": {"type": "string", "description": "what the step is, in one line."},
            "status": {"type": "string", "enum": ["pending", "in_progress", "done"],
                       "description": "pending, in_progress or done."},
        },
        "required": ["id", "content", "status"],
    }
    status = by_name["finish"]["parameters"]["properties"]["status"]
    assert status["enum"] == ["success", "failure"] and status["default"] == "success"
    assert by_name["finish"]["parameters"]["required"] == ["summary"]
    # Optional[...] parameters: the plain type, not required, no null default.
    timeout = by_name["shell"]["parameters"]["properties"]["timeout"]
    assert timeout["type"] == "number" and "default" not in timeout
    assert by_name["shell"]["parameters"]["required"] == ["command"]


@dataclass
class Point:
    """A point.

    Attributes:
        x: horizontal.
        y: vertical.
    """

    x: int
    y: int = 0


def test_schema_from_signature_with_nested_dataclass_and_docstring(ctx: ToolContext) -> None:
    reg = ToolRegistry()

    @reg.register(read_only=True)
    def plot(ctx: ToolContext, points: list[Point], label: Optional[str] = None,
             mode: Literal["line", "bar"] = "line", scale: float = 1.0) -> ToolResult:
        """Plot points.

        Args:
            points: the points to draw, in order; this description
                goes on over two lines.
            label: a caption.
            mode: how to draw.
            scale: zoom factor.

        Returns:
            nothing useful.
        """
        assert all(isinstance(p, Point) for p in points)
        return ToolResult(json.dumps({"points": [asdict(p) for p in points], "label": label,
                                      "mode": mode, "scale": scale}))

    fn = reg.schemas()[0]["function"]
    assert fn["description"] == "Plot points.\n\nReturns:\n    nothing useful."
    props = fn["parameters"]["properties"]
    assert props["points"]["description"] == (
        "the points to draw, in order; this description goes on over two lines.")
    assert props["points"]["items"] == {
        "type": "object",
        "properties": {"x": {"type": "integer", "description": "horizontal."},
                       "y": {"type": "integer", "description": "vertical.", "default": 0}},
        "required": ["x"],
    }
    assert props["mode"] == {"type": "string", "enum": ["line", "bar"], "description": "how to draw.",
                             "default": "line"}
    assert props["scale"]["type"] == "number"
    assert fn["parameters"]["required"] == ["points"]
    # Validation coerces and fills defaults; nested objects arrive as validated values.
    res = reg.run("plot", '{"points": [{"x": "3"}], "scale": 2}', ctx)
    assert not res.is_error, res.text
    value = json.loads(res.text)
    assert value == {"points": [{"x": 3, "y": 0}], "label": None, "mode": "line", "scale": 2.0}


def test_registration_rejects_bad_tools() -> None:
    reg = ToolRegistry()

    def no_ctx(path: str) -> str:
        """Doc."""
        return path

    with pytest.raises(TypeError, match="ctx"):
        reg.register(no_ctx)

    def untyped(ctx: ToolContext, path) -> str:  # type: ignore[no-untyped-def]
        """Doc."""
        return ""

    with pytest.raises(TypeError, match="type hint"):
        reg.register(untyped)

    def okay(ctx: ToolContext, a: int) -> str:
        """Doc."""
        return ""

    with pytest.raises(ValueError, match="does not match"):
        reg.register(okay, name="a b")
    with pytest.raises(ValueError, match="does not match"):
        reg.register(okay, name="ab")  # too short for Kimi's pattern
    reg.register(okay)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(okay)
    with pytest.raises(ValueError, match="no 'type'"):
        reg.register_external("ext_tool", "d", {"type": "object", "properties": {"q": {}}},
                              lambda a, c: ToolResult("x"))
    assert TOOL_NAME_RE.pattern == r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$"


def test_docstring_parser_keeps_other_sections() -> None:
    desc, params = parse_docstring("""Do it.

    More words
    here.

    Args:
        a (int): first.
        b: second,
            continued.
    Note:
        careful.
    """)
    assert params == {"a": "first.", "b": "second, continued."}
    assert desc.startswith("Do it.\n\nMore words here.") and "careful." in desc and "first." not in desc


def _simple_registry() -> ToolRegistry:
    reg = ToolRegistry()

    def echo(ctx: ToolContext, text: str, times: int = 1) -> str:
        """Echo text."""
        return text * times

    def boom(ctx: ToolContext) -> ToolResult:
        """Raise."""
        raise RuntimeError("kaput")

    def refuse(ctx: ToolContext) -> ToolResult:
        """Refuse."""
        raise ToolError("no, because reasons")

    reg.register(echo, read_only=True)
    reg.register(boom)
    reg.register(refuse)
    return reg


def test_bad_calls_become_error_results(ctx: ToolContext) -> None:
    reg = _simple_registry()
    ok = reg.run("echo", '{"text": "ab", "times": "2"}', ctx)
    assert (ok.text, ok.is_error) == ("abab", False)

    res = reg.run("nope", "{}", ctx)
    assert res.is_error and "Unknown tool 'nope'" in res.text and "echo" in res.text

    res = reg.run("echo", '{"text": "a",', ctx)
    assert res.is_error and "not valid JSON" in res.text and "Parameters: text (string, required)" in res.text

    res = reg.run("echo", '["a"]', ctx)
    assert res.is_error and "must be a JSON object" in res.text

    res = reg.run("echo", '{"times": 1.5, "extra": 1}', ctx)
    assert res.is_error
    assert "- text: required argument is missing" in res.text
    assert "- times: Input should be a valid integer" in res.text
    assert "- extra: unknown argument" in res.text

    res = reg.run("boom", "", ctx)  # empty arguments mean {}
    assert res.is_error and res.text == "boom failed: RuntimeError: kaput"
    res = reg.run("refuse", "{}", ctx)
    assert res.is_error and res.text == "no, because reasons"


def test_external_tool_and_read_only_predicate(ctx: ToolContext) -> None:
    reg = ToolRegistry()
    seen = []

    def handler(args: dict, c: ToolContext) -> ToolResult:
        seen.append(args)
        return ToolResult(f"q={args['q']}", metadata={"n": 1})

    reg.register_external("mcp_lookup", "Look something up.",
                          {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
                          handler, read_only=True)

    def act(ctx: ToolContext, dry_run: bool = False) -> str:
        """Act, or pretend to."""
        return "done"

    reg.register(act, read_only=lambda args: bool(args.get("dry_run")))
    assert reg.run("mcp_lookup", '{"q": "x"}', ctx).text == "q=x"
    res = reg.run("mcp_lookup", "{}", ctx)
    assert res.is_error and "q: required argument is missing" in res.text
    assert seen == [{"q": "x"}]
    assert reg.is_read_only("mcp_lookup", "{}")
    assert reg.is_read_only("act", '{"dry_run": true}')
    assert not reg.is_read_only("act", "{}")
    assert reg.is_read_only("act", "{not json")  # can only fail: changes nothing
    assert not reg.is_read_only("unknown_tool", "{}")
    assert reg.schemas()[0]["function"] == {
        "name": "mcp_lookup", "description": "Look something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    }


def test_builtin_read_only_flags() -> None:
    reg = default_registry()
    flags = {n: reg.is_read_only(n, "{}") for n in reg.names}
    assert flags == {"read_file": True, "write_file": False, "edit_file": False, "list_files": True,
                     "search": True, "shell": False, "run_tests": False, "todo": False,
                     "view_image": True, "view_video": True, "finish": False}


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, float]] = []

    def add(self, kind: str, label: str) -> None:
        with self.lock:
            self.events.append((kind, label, time.monotonic()))


def test_read_only_calls_overlap_and_writes_run_alone_in_order(ctx: ToolContext) -> None:
    reg = ToolRegistry()
    rec = _Recorder()
    barrier = threading.Barrier(3, timeout=5)

    def slow_read(ctx: ToolContext, label: str) -> str:
        """Read slowly."""
        rec.add("begin", label)
        # Three reads meet here: only possible when they really run at the same time.
        if label != "r4":
            barrier.wait()
        time.sleep(0.05)
        rec.add("end", label)
        return f"read {label}"

    def write(ctx: ToolContext, label: str) -> str:
        """Write."""
        rec.add("begin", label)
        time.sleep(0.03)
        rec.add("end", label)
        return f"wrote {label}"

    reg.register(slow_read, read_only=True)
    reg.register(write)
    calls = [("slow_read", '{"label": "r1"}'), ("slow_read", '{"label": "r2"}'),
             ("slow_read", '{"label": "r3"}'), ("write", '{"label": "w1"}'),
             ("write", '{"label": "w2"}'), ("slow_read", '{"label": "r4"}')]
    main = threading.current_thread()
    callbacks: list[tuple[str, int]] = []

    def on_start(i: int) -> None:
        assert threading.current_thread() is main
        callbacks.append(("start", i))
        rec.add("start-cb", str(i))

    def on_result(i: int, result: ToolResult) -> None:
        assert threading.current_thread() is main
        callbacks.append(("result", i))
        rec.add("result-cb", str(i))

    results = reg.run_calls(calls, ctx, on_start=on_start, on_result=on_result)
    assert [r.text for r in results] == ["read r1", "read r2", "read r3", "wrote w1", "wrote w2", "read r4"]
    assert all(not r.is_error for r in results)

    times = {(k, label): t for k, label, t in rec.events}
    # The three reads overlapped: each began before any of them ended.
    assert max(times[("begin", f"r{i}")] for i in (1, 2, 3)) < min(times[("end", f"r{i}")] for i in (1, 2, 3))
    # Writes ran alone and in order, after every earlier read, before the later one.
    assert max(times[("end", f"r{i}")] for i in (1, 2, 3)) <= times[("begin", "w1")]
    assert times[("end", "w1")] <= times[("begin", "w2")]
    assert times[("end", "w2")] <= times[("begin", "r4")]
    # Every call: start callback before it begins, result callback after it ends; each once.
    labels = ["r1", "r2", "r3", "w1", "w2", "r4"]
    for i, label in enumerate(labels):
        assert times[("start-cb", str(i))] <= times[("begin", label)]
        assert times[("result-cb", str(i))] >= times[("end", label)]
    assert sorted(callbacks) == sorted([("start", i) for i in range(6)] + [("result", i) for i in range(6)])


def test_serial_reads_when_interleaved_with_writes(ctx: ToolContext) -> None:
    reg = ToolRegistry()
    order: list[str] = []

    def r(ctx: ToolContext, label: str) -> str:
        """Read."""
        order.append(label)
        return label

    def w(ctx: ToolContext, label: str) -> str:
        """Write."""
        order.append(label)
        return label

    reg.register(r, name="read_x", read_only=True)
    reg.register(w, name="write_x")
    calls = [("write_x", '{"label": "a"}'), ("read_x", '{"label": "b"}'), ("write_x", '{"label": "c"}'),
             ("bogus", "{}"), ("read_x", '{"label": "d"}')]
    results = reg.run_calls(calls, ctx)
    assert order == ["a", "b", "c", "d"]
    assert [r.is_error for r in results] == [False, False, False, True, False]
