"""Argument models: one pydantic model per tool gives both the validation and the schema sent.

The schemas of the built-in tools are pinned by tests/fixtures/tool_schemas.json (a dump of
``default_registry().schemas()``, key order as sent): they are part of every request's cached
prefix and what the model has learnt to call, so a change to them must be deliberate. To change
them on purpose, regenerate the file with
``json.dumps(default_registry().schemas(), indent=2, ensure_ascii=False) + "\\n"``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from kimi_code.tools import registry as registry_mod
from kimi_code.tools import schema as schema_mod
from kimi_code.tools import types as types_mod
from kimi_code.tools.builtin import default_registry
from kimi_code.tools.registry import ToolContext, ToolRegistry, ToolResult
from kimi_code.tools.schema import json_schema_model, model_schema, signature_model

FIXTURE = Path(__file__).parent / "fixtures" / "tool_schemas.json"


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path, sandbox=None)  # type: ignore[arg-type]


# -- the built-in schemas do not change ---------------------------------------------------------


def test_builtin_schemas_equal_the_committed_dump() -> None:
    committed = json.loads(FIXTURE.read_text(encoding="utf-8"))
    schemas = default_registry().schemas()
    assert json.dumps(schemas, sort_keys=True) == json.dumps(committed, sort_keys=True)
    # Key order too: the tools field is sent as generated, and it is part of the cached prefix.
    assert json.dumps(schemas) == json.dumps(committed)
    assert json.dumps(schemas, indent=2, ensure_ascii=False) + "\n" == FIXTURE.read_text(encoding="utf-8")


def test_each_builtin_schema_is_generated_from_the_model_that_validates() -> None:
    reg = default_registry()
    for name in reg.names:
        spec = reg.spec(name)
        model = spec.arguments.model
        assert issubclass(model, BaseModel), name
        assert model_schema(model) == spec.parameters, name
        # What the schema calls required is what the model requires, and defaults agree.
        props = spec.parameters["properties"]
        fields = {f.alias: f for f in model.model_fields.values()}
        assert list(fields) == list(props), name
        assert [a for a, f in fields.items() if f.is_required()] == spec.parameters.get("required", []), name
        for alias, prop in props.items():
            if "default" in prop:
                assert fields[alias].default == prop["default"], (name, alias)


def test_every_enum_value_validates_and_others_do_not(ctx: ToolContext) -> None:
    reg = default_registry()
    status = reg.spec("finish").parameters["properties"]["status"]
    for value in status["enum"]:
        assert reg.spec("finish").arguments.validate({"summary": "s", "status": value})["status"] == value
    res = reg.run("finish", json.dumps({"summary": "s", "status": "maybe"}), ctx)
    assert res.is_error
    assert res.text.splitlines() == [
        "Invalid arguments for finish:",
        "- status: Input should be 'success' or 'failure' (got \"maybe\")",
        'Parameters: summary (string, required), status ("success"|"failure", default "success")',
    ]
    item_status = reg.spec("todo").parameters["properties"]["items"]["items"]["properties"]["status"]
    for value in item_status["enum"]:
        res = reg.run("todo", json.dumps({"items": [{"id": 1, "content": "c", "status": value}]}), ctx)
        assert not res.is_error, res.text
    res = reg.run("todo", json.dumps({"items": [{"id": "1", "content": "c", "status": "later"}]}), ctx)
    assert res.is_error and "- items.0.status: Input should be 'pending', 'in_progress' or 'done'" in res.text


def test_argument_errors_of_a_builtin_tool(ctx: ToolContext) -> None:
    res = default_registry().run("read_file", '{"offset": "x", "bogus": 1}', ctx)
    assert res.is_error
    assert res.text.splitlines() == [
        "Invalid arguments for read_file:",
        "- path: required argument is missing",
        '- offset: Input should be a valid integer, unable to parse string as an integer (got "x")',
        "- bogus: unknown argument",
        "Parameters: path (string, required), offset (integer, default 1), limit (integer, default 2000)",
    ]


# -- models from signatures ---------------------------------------------------------------------


@dataclass
class Box:
    """A box.

    Attributes:
        w: width.
        h: height.
    """

    w: int
    h: int = 1


class Tag(TypedDict):
    """A tag.

    Attributes:
        key: the name.
    """

    key: str


def test_signature_model_gives_schema_and_validation_from_one_source() -> None:
    def pack(ctx: ToolContext, boxes: list[Box], count: Annotated[int, Field(ge=1, le=9)] = 2,
             label: Annotated[str, "a label"] = "x", mode: Literal["tight"] = "tight",
             tags: Optional[list[Tag]] = None, weights: dict[str, float] | None = None) -> str:
        """Pack boxes.

        Args:
            boxes: what to pack.
            count: how many times.
        """
        return ""

    arguments, description = signature_model(pack, "pack")
    assert description == "Pack boxes."
    assert arguments.parameters == {
        "type": "object",
        "properties": {
            "boxes": {"type": "array",
                      "items": {"type": "object",
                                "properties": {"w": {"type": "integer", "description": "width."},
                                               "h": {"type": "integer", "description": "height.",
                                                     "default": 1}},
                                "required": ["w"]},
                      "description": "what to pack."},
            # A constraint is in the schema because the model that checks it made the schema.
            "count": {"type": "integer", "maximum": 9, "minimum": 1, "description": "how many times.",
                      "default": 2},
            "label": {"type": "string", "description": "a label", "default": "x"},
            "mode": {"type": "string", "enum": ["tight"], "default": "tight"},
            "tags": {"type": "array", "items": {"type": "object",
                                                 "properties": {"key": {"type": "string",
                                                                        "description": "the name."}},
                                                 "required": ["key"]}},
            "weights": {"type": "object", "additionalProperties": {"type": "number"}},
        },
        "required": ["boxes"],
    }
    assert "title" not in json.dumps(arguments.parameters)
    value = arguments.validate({"boxes": [{"w": "3"}], "weights": {"a": 1}})
    assert value == {"boxes": [Box(3, 1)], "count": 2, "label": "x", "mode": "tight", "tags": None,
                     "weights": {"a": 1.0}}
    assert isinstance(value["boxes"][0], Box)
    with pytest.raises(schema_mod.ArgumentError) as info:
        arguments.validate({"boxes": [], "count": 10})
    assert info.value.lines == ["- count: Input should be less than or equal to 9 (got 10)"]


def test_parameter_names_may_shadow_pydantic_attributes(ctx: ToolContext) -> None:
    reg = ToolRegistry()

    def shadow(ctx: ToolContext, json: bool = False, schema: str = "s", copy: int = 1,
               model_config: str = "m") -> str:
        """Names that BaseModel itself uses."""
        return repr((json, schema, copy, model_config))

    reg.register(shadow)
    assert list(reg.spec("shadow").parameters["properties"]) == ["json", "schema", "copy", "model_config"]
    assert reg.run("shadow", '{"json": true, "schema": "x", "model_config": "y"}', ctx).text == \
        "(True, 'x', 1, 'y')"
    # The model's internal field names are not arguments.
    res = reg.run("shadow", '{"p0": true}', ctx)
    assert res.is_error and "- p0: unknown argument" in res.text


class _Node(TypedDict):
    name: str
    children: list[_Node]


@pytest.mark.parametrize("hint, message", [
    (Union[int, str], "unions other than Optional"),
    (Any, "no JSON type"),
    (list, "no JSON type"),
    (Literal[1, "a"], "no JSON type"),
    (_Node, "recursive types"),
])
def test_types_the_schema_cannot_express_are_refused_at_registration(hint: Any, message: str) -> None:
    def tool(ctx: ToolContext, x: int) -> str:
        """Doc."""
        return ""

    tool.__annotations__ = {"ctx": ToolContext, "x": hint, "return": str}
    reg = ToolRegistry()
    with pytest.raises(TypeError, match=message):
        reg.register(tool, name="bad_tool")
    assert reg.names == []


# -- tools from a JSON schema -------------------------------------------------------------------


LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "what to look up"},
        "limit": {"type": "integer"},
        "score": {"type": "number"},
        "kind": {"type": "string", "enum": ["issue", "pr"]},
        "labels": {"type": "array", "items": {"type": "string"}},
        "filters": {"type": "object", "properties": {"state": {"type": "string"}}},
        "cursor": {"type": ["string", "null"]},
    },
    "required": ["query"],
}


def test_a_tool_from_a_json_schema_runs_through_the_same_dispatch(ctx: ToolContext) -> None:
    reg = default_registry()
    seen: list[dict] = []
    lock = threading.Lock()

    def lookup(args: dict[str, Any], c: ToolContext) -> ToolResult:
        with lock:
            seen.append(args)
        return ToolResult(json.dumps(args), metadata={"server": "demo"})

    given = json.loads(json.dumps(LOOKUP_SCHEMA))
    reg.register_external("mcp_lookup", "  Look things up.  ", given, lookup, read_only=True)
    given["properties"]["query"]["type"] = "integer"  # the registry kept its own copy

    entry = reg.schemas()[-1]
    assert entry == {"type": "function",
                     "function": {"name": "mcp_lookup", "description": "Look things up.",
                                  "parameters": LOOKUP_SCHEMA}}
    assert reg.is_read_only("mcp_lookup", "{}")

    # Through run: values checked and coerced, only what was sent passed on, in the order sent.
    res = reg.run("mcp_lookup", '{"limit": "5", "query": "bug", "score": 2, "kind": "pr", '
                                '"filters": {"state": "open", "x": [1]}, "cursor": null, "extra": 1}', ctx)
    assert not res.is_error, res.text
    assert list(json.loads(res.text).items()) == [
        ("limit", 5), ("query", "bug"), ("score", 2), ("kind", "pr"),
        ("filters", {"state": "open", "x": [1]}), ("cursor", None), ("extra", 1)]
    assert isinstance(seen[0]["score"], int)  # a JSON number that is an integer stays one
    assert res.metadata == {"server": "demo"}

    # Through run_calls, side by side with built-in read-only tools.
    (ctx.workspace / "f.txt").write_text("one\n")
    results = reg.run_calls([("read_file", '{"path": "f.txt"}'), ("mcp_lookup", '{"query": "a"}'),
                             ("mcp_lookup", '{"query": "b", "score": 0.5}')], ctx)
    assert [r.is_error for r in results] == [False, False, False]
    assert json.loads(results[1].text) == {"query": "a"} and json.loads(results[2].text)["score"] == 0.5


def test_a_json_schema_tool_gives_the_same_kind_of_argument_errors(ctx: ToolContext) -> None:
    reg = ToolRegistry()
    reg.register_external("mcp_lookup", "Look things up.", LOOKUP_SCHEMA,
                          lambda args, c: ToolResult("ok"))
    res = reg.run("mcp_lookup", '{"limit": 1.5, "kind": "commit", "labels": "a", "cursor": 3}', ctx)
    assert res.is_error
    assert res.text.splitlines() == [
        "Invalid arguments for mcp_lookup:",
        "- query: required argument is missing",
        "- limit: Input should be a valid integer, got a number with a fractional part (got 1.5)",
        "- kind: Input should be 'issue' or 'pr' (got \"commit\")",
        '- labels: Input should be a valid list (got "a")',
        "- cursor: Input should be a valid string (got 3)",
        "Parameters: query (string, required), limit (integer, optional), score (number, optional), "
        'kind ("issue"|"pr", optional), labels (array of string, optional), filters (object, optional), '
        "cursor (string|null, optional)",
    ]
    res = reg.run("mcp_lookup", '{"query": "x",', ctx)
    assert res.is_error and "not valid JSON" in res.text and "Parameters: query (string, required)" in res.text
    res = reg.run("mcp_lookup", '{"query": null}', ctx)
    assert res.is_error and "- query: Input should be a valid string (got null)" in res.text


def test_a_json_schema_tool_refuses_unknown_arguments_only_when_its_schema_does(ctx: ToolContext) -> None:
    reg = ToolRegistry()
    strict = {"type": "object", "properties": {"q": {"type": "string"}}, "additionalProperties": False}
    reg.register_external("strict_tool", "Strict.", strict, lambda args, c: json.dumps(args))
    res = reg.run("strict_tool", '{"q": "a", "other": 1}', ctx)
    assert res.is_error and "- other: unknown argument" in res.text
    assert reg.run("strict_tool", '{"q": "a"}', ctx).text == '{"q": "a"}'
    # Required names the properties do not describe are still required; anything goes for them.
    loose = {"type": "object", "required": ["anything"]}
    reg.register_external("loose_tool", "Loose.", loose, lambda args, c: json.dumps(args))
    assert reg.run("loose_tool", '{"anything": [1, {"a": null}], "more": true}', ctx).text == \
        '{"anything": [1, {"a": null}], "more": true}'
    res = reg.run("loose_tool", "{}", ctx)
    assert res.is_error and "- anything: required argument is missing" in res.text


def test_json_schema_tools_are_checked_at_registration() -> None:
    reg = ToolRegistry()
    with pytest.raises(ValueError, match="type 'object'"):
        reg.register_external("bad_tool", "d", {"type": "string"}, lambda a, c: "x")
    with pytest.raises(ValueError, match="no 'type'"):
        reg.register_external("bad_tool", "d", {"type": "object", "properties": {"q": {}}}, lambda a, c: "x")
    with pytest.raises(ValueError, match="does not match"):
        reg.register_external("bad tool", "d", {"type": "object"}, lambda a, c: "x")
    reg.register_external("good_tool", "d", {"type": "object"}, lambda a, c: "x")
    with pytest.raises(ValueError, match="already registered"):
        reg.register_external("good_tool", "d", {"type": "object"}, lambda a, c: "x")
    model = json_schema_model({"type": "object", "properties": {"n": {"type": "integer"}}}, "t_tool")
    assert model.validate({"n": "4"}) == {"n": 4} and model.validate({}) == {}


# -- where things live --------------------------------------------------------------------------


def test_public_names_stay_importable_from_the_registry() -> None:
    for name in ("ToolContext", "ToolResult", "ToolError", "Handler", "ReadOnly"):
        assert getattr(registry_mod, name) is getattr(types_mod, name)
    for name in ("check_schema", "parse_docstring", "type_schema", "kimi_schema", "model_schema"):
        assert getattr(registry_mod, name) is getattr(schema_mod, name)
    for name in registry_mod.__all__:
        assert hasattr(registry_mod, name), name
    assert registry_mod.type_schema(Box)["required"] == ["w"]


def test_listing_and_ignore_rules_live_outside_search() -> None:
    from kimi_code.tools import files, ignore, search, walk

    assert search.list_tree is walk.list_tree and files.list_tree is walk.list_tree
    assert search.glob_matcher is ignore.glob_matcher and walk.IgnoreRules is ignore.IgnoreRules
    assert not hasattr(search, "IgnoreRules") and not hasattr(search, "_walk_listing")
