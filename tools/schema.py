"""Argument models: one pydantic model per tool is both its validator and its JSON schema.

A tool's typed signature (or, for a tool from elsewhere, the JSON schema it came with) becomes
one pydantic model, once, at registration. The model validates every call, and the schema sent to
the model is generated from that same model, so the two cannot disagree. Parameters are fields
aliased to their model-facing names (so a parameter may be called ``json`` or ``schema``), and
the docstring's ``Args:`` lines become their descriptions (``Attributes:`` lines for the fields of
a nested TypedDict or dataclass).

Pydantic's schema is then put in the shape Kimi accepts and the model has always been sent
(``kimi_schema``): every node has a ``type``; ``$ref``/``$defs`` are inlined; ``Optional[X]``
is plain ``X`` without a ``null`` default; a one-value ``Literal`` is an ``enum``; no ``title``
keys, no class docstrings as descriptions, no ``additionalProperties: true/false`` (unknown
arguments are still refused, by the model); keys come in one fixed order (the ``tools`` field
is part of the prompt-cache prefix). Anything it cannot express that way (unions, recursive
types, ``Any``) is refused at registration with a TypeError.
"""

from __future__ import annotations

import copy
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, WrapValidator, create_model
from pydantic.json_schema import GenerateJsonSchema

from .arguments import ArgumentError, validation_error_lines

# -- docstrings ---------------------------------------------------------------------------------

_SECTION_RE = re.compile(
    r"^(Args|Arguments|Parameters|Attributes|Returns|Raises|Yields|Examples?|Notes?):\s*$"
)
_PARAM_SECTIONS = {"Args", "Arguments", "Parameters", "Attributes"}


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description without the Args block, {param: text})."""
    text = inspect.cleandoc(doc or "")
    kept: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    indent: int | None = None
    for line in text.splitlines():
        header = _SECTION_RE.match(line)
        if header:
            section = header.group(1)
            current, indent = None, None
            if section not in _PARAM_SECTIONS:
                kept.append(line)
            continue
        if section in _PARAM_SECTIONS:
            if not line.strip():
                current = None
                continue
            if line[:1] not in (" ", "\t"):  # the section ended
                section = None
                kept.append(line)
                continue
            this_indent = len(line) - len(line.lstrip())
            m = re.match(r"^\s*(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*:\s*(.*)$", line)
            if m and (indent is None or this_indent <= indent):
                indent = this_indent
                current = m.group(1).lstrip("*")
                params[current] = m.group(2).strip()
            elif current is not None:
                params[current] = (params[current] + " " + line.strip()).strip()
            continue
        kept.append(line)
    description = "\n".join(kept).strip()
    description = re.sub(r"\n{3,}", "\n\n", description)
    # Unwrap paragraphs (fewer tokens, no hard line breaks); keep list items and indented lines.
    description = re.sub(r"(?<=\S)\n(?=[^\n\s\-*])", " ", description)
    return description, params


# -- the argument model -------------------------------------------------------------------------


@dataclass(frozen=True)
class ArgumentModel:
    """One tool's arguments: the pydantic model that checks them and the JSON schema of it.

    ``validate`` returns the arguments by their model-facing names. With ``fill_defaults`` (a
    Python tool) every parameter is there, defaults filled and values as the signature types them
    (a nested dataclass arrives as an instance); without it (a tool from a JSON schema) only what
    the model sent is passed on, checked and coerced, in the order it was sent.
    """

    model: type[BaseModel]
    parameters: dict[str, Any]  # JSON schema of the arguments object, as sent to the model
    fill_defaults: bool = True

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            value = self.model.model_validate(args)  # validators are thread-safe: calls share it
        except ValidationError as exc:
            raise ArgumentError(validation_error_lines(exc)) from None
        out: dict[str, Any] = {}
        for fname, info in type(value).model_fields.items():
            if self.fill_defaults or fname in value.model_fields_set:
                out[info.alias or fname] = getattr(value, fname)
        if value.model_extra:
            out.update(value.model_extra)
        if self.fill_defaults:
            return out
        return {k: out[k] for k in args if k in out}


def signature_model(fn: Callable[..., Any], tool_name: str) -> tuple[ArgumentModel, str]:
    """The argument model of ``fn(ctx, ...)`` and the description from its docstring."""
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(sig.parameters.values())
    if not params or params[0].name != "ctx":
        raise TypeError(f"tool {tool_name}: the first parameter must be `ctx: ToolContext`")
    description, docs = parse_docstring(fn.__doc__)
    fields: dict[str, Any] = {}
    for i, p in enumerate(params[1:]):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name}: *args/**kwargs are not allowed")
        if p.name not in hints:
            raise TypeError(f"tool {tool_name}: parameter {p.name} has no type hint")
        hint, meta_description = _annotated_description(hints[p.name])
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[f"p{i}"] = (hint, Field(default, alias=p.name,
                                       description=docs.get(p.name) or meta_description))
    try:
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        parameters = model_schema(model)
    except TypeError as exc:  # pydantic's schema errors are TypeErrors too
        raise TypeError(f"tool {tool_name}: {exc}") from None
    return ArgumentModel(model, parameters), description


def json_schema_model(parameters: dict[str, Any], tool_name: str) -> ArgumentModel:
    """An argument model for a tool whose JSON schema comes from elsewhere (an MCP server).

    The schema given is the schema sent, as is. Validation is light: required properties must be
    present, top-level properties must have their JSON type (or be one of their ``enum``), and
    unknown arguments are refused only when the schema says ``additionalProperties: false``;
    nested values are passed on unchecked.
    """
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ValueError(f"tool {tool_name}: parameters must be a JSON schema of type 'object'")
    params = copy.deepcopy(parameters)
    props = params.get("properties")
    props = props if isinstance(props, dict) else {}
    required = [r for r in params.get("required", []) if isinstance(r, str)]
    fields: dict[str, Any] = {}
    for pname, prop in props.items():
        default = ... if pname in required else None
        fields[f"p{len(fields)}"] = (_python_type(prop), Field(default, alias=pname))
    for pname in required:
        if pname not in props:
            fields[f"p{len(fields)}"] = (Any, Field(..., alias=pname))
    extra = "forbid" if params.get("additionalProperties") is False else "allow"
    model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra=extra), **fields)
    return ArgumentModel(model, params, fill_defaults=False)


def _annotated_description(hint: Any) -> tuple[Any, str | None]:
    """``Annotated[X, "text"]``: X and the text (pydantic ignores plain strings as metadata)."""
    if typing.get_origin(hint) is not Annotated:
        return hint, None
    base, *meta = typing.get_args(hint)
    texts = [m for m in meta if isinstance(m, str)]
    if not texts:
        return hint, None
    rest = [m for m in meta if not isinstance(m, str)]
    return (Annotated[(base, *rest)] if rest else base), texts[-1]


def _keep_ints(value: Any, handler: Callable[[Any], Any]) -> Any:
    return value if type(value) is int else handler(value)


# A JSON "number": an integer stays an integer (3 is not sent on as 3.0).
_Number = Annotated[float, WrapValidator(_keep_ints)]
_JSON_TYPES: dict[str, Any] = {
    "string": str, "integer": int, "number": _Number, "boolean": bool,
    "array": list[Any], "object": dict[str, Any], "null": None,
}


def _python_type(prop: Any) -> Any:
    """The Python type a top-level JSON-schema property is validated as (``Any`` if unknown)."""
    if not isinstance(prop, dict):
        return Any
    enum = prop.get("enum")
    if isinstance(enum, list) and enum and all(v is None or isinstance(v, (str, int, float)) for v in enum):
        return Literal[tuple(enum)]  # type: ignore[valid-type]
    kind = prop.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    found = [_JSON_TYPES[k] for k in kinds if isinstance(k, str) and k in _JSON_TYPES]
    if not found or len(found) != len(kinds):
        return Any
    return Union[tuple(found)] if len(found) > 1 else found[0]  # type: ignore[return-value]


# -- the schema ---------------------------------------------------------------------------------


class _KimiJsonSchema(GenerateJsonSchema):
    """Pydantic's generator, minus titles, with ``Attributes:`` docs for nested classes."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def emit_warning(self, kind: Any, detail: str) -> None:
        if kind != "non-serializable-default":  # such a default is simply not shown
            super().emit_warning(kind, detail)

    def typed_dict_schema(self, schema: Any) -> Any:
        return _with_attribute_docs(super().typed_dict_schema(schema), schema.get("cls"))

    def dataclass_schema(self, schema: Any) -> Any:
        return _with_attribute_docs(super().dataclass_schema(schema), schema.get("cls"))


def _with_attribute_docs(json_schema: dict[str, Any], cls: Any) -> dict[str, Any]:
    json_schema.pop("description", None)  # the class docstring; its Attributes lines are kept
    _, docs = parse_docstring(getattr(cls, "__doc__", None))
    for name, prop in (json_schema.get("properties") or {}).items():
        if docs.get(name) and isinstance(prop, dict):
            prop["description"] = docs[name]
    return json_schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of an argument model, as sent to Kimi."""
    return kimi_schema(model.model_json_schema(by_alias=True, schema_generator=_KimiJsonSchema))


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of one Python type, as sent to Kimi (a ``type`` at every level)."""
    return kimi_schema(TypeAdapter(tp).json_schema(schema_generator=_KimiJsonSchema), where="type")


# Keys in this order first, then any others pydantic emits (constraints), then these two last.
_FIRST = ("type", "enum", "items", "prefixItems", "properties", "required", "additionalProperties")
_LAST = ("description", "default")


def kimi_schema(schema: dict[str, Any], where: str = "parameters") -> dict[str, Any]:
    """Pydantic's JSON schema normalised for Kimi (see the module docstring)."""
    schema = dict(schema)
    defs = schema.pop("$defs", {})
    return _normalise(schema, defs, where, frozenset())


def _normalise(node: Any, defs: dict[str, Any], where: str, seen: frozenset[str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise TypeError(f"{where}: not supported in tool schemas")
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in seen or name not in defs:
            raise TypeError(f"{where}: recursive types are not supported in tool schemas")
        # The siblings of a $ref (a field's description or default) win over the definition's.
        return _normalise({**defs[name], **node}, defs, where, seen | {name})
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [o for o in node.pop(key) if key == "allOf" or o != {"type": "null"}]
            if len(options) != 1:
                raise TypeError(f"{where}: unions other than Optional are not supported in tool schemas")
            return _normalise({**options[0], **node}, defs, where, seen)
    node.pop("title", None)
    if "const" in node and "enum" not in node:
        node["enum"] = [node.pop("const")]
    if "default" in node and node["default"] is None:
        del node["default"]
    if isinstance(node.get("additionalProperties"), bool):
        del node["additionalProperties"]
    if "type" not in node:
        raise TypeError(f"{where}: this type is not supported in tool schemas (it has no JSON type)")
    if isinstance(node.get("properties"), dict):
        node["properties"] = {k: _normalise(v, defs, f"{where}.{k}", seen)
                              for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _normalise(node["items"], defs, f"{where}[]", seen)
    if isinstance(node.get("prefixItems"), list):
        node["prefixItems"] = [_normalise(v, defs, f"{where}[{i}]", seen)
                               for i, v in enumerate(node["prefixItems"])]
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _normalise(node["additionalProperties"], defs, f"{where}{{}}", seen)
    first = [k for k in _FIRST if k in node]
    last = [k for k in _LAST if k in node]
    middle = [k for k in node if k not in first and k not in last]
    return {k: node[k] for k in first + middle + last}


def check_schema(schema: Any, where: str = "parameters") -> list[str]:
    """Problems Kimi would reject: a schema node without ``type``, non-object parameters."""
    problems: list[str] = []
    if not isinstance(schema, dict):
        return [f"{where}: not an object"]
    if "type" not in schema and not any(k in schema for k in ("anyOf", "oneOf", "allOf", "$ref")):
        problems.append(f"{where}: no 'type'")
    elif "type" not in schema:
        problems.append(f"{where}: uses anyOf/oneOf/allOf/$ref without a 'type'")
    for pname, prop in (schema.get("properties") or {}).items():
        problems += check_schema(prop, f"{where}.{pname}")
    items = schema.get("items")
    if isinstance(items, dict):
        problems += check_schema(items, f"{where}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        problems += check_schema(extra, f"{where}{{}}")
    return problems


# -- schemas from elsewhere (MCP servers) ---------------------------------------------------------

# JSON-schema keywords with no meaning for a tool call, or that Kimi's checks do not know; dropped.
_DROPPED = frozenset({
    "$schema", "$id", "$anchor", "$comment", "$vocabulary", "$dynamicRef", "$dynamicAnchor", "title", "examples",
    "readOnly", "writeOnly", "deprecated", "contentMediaType", "contentEncoding", "contentSchema", "if", "then",
    "else", "not", "dependentSchemas", "dependentRequired", "dependencies", "patternProperties",
    "unevaluatedProperties", "unevaluatedItems", "propertyNames", "additionalItems", "contains", "minContains",
    "maxContains", "discriminator", "nullable", "x-mcp-header",
})
_ANY_TYPE = ["string", "number", "integer", "boolean", "object", "array"]
_MAX_DEPTH = 24


def external_schema(schema: Any) -> dict[str, Any]:
    """A tool's input schema from elsewhere (an MCP server), in the shape :func:`kimi_schema` gives.

    Never raises: every node gets a ``type`` (inferred from ``properties``/``items``/``enum``, or
    the list of JSON types for "anything"); local ``$ref``s are inlined (a recursive one becomes a
    plain object); ``allOf`` is merged; ``anyOf``/``oneOf`` lose their ``null`` option and, when
    several remain, become one node whose ``type`` lists theirs; keywords without meaning for a
    call are dropped. The result is what the model is sent and what calls are checked against.
    """
    root = schema if isinstance(schema, dict) else {}
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(root.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in root[key].items()})
    loose = _loosen(root, defs, frozenset(), 0)
    if loose.get("type") != "object":
        loose = {"type": "object", "properties": {}}
    loose.setdefault("properties", {})
    try:
        return kimi_schema(loose)
    except TypeError:  # cannot happen for a loosened schema; the safe answer all the same
        return {"type": "object", "properties": {}}


def _loosen(node: Any, defs: dict[str, Any], seen: frozenset[str], depth: int) -> dict[str, Any]:
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return {"type": list(_ANY_TYPE)}
    node = {k: v for k, v in node.items() if k not in _DROPPED and k not in ("$defs", "definitions")}
    ref = node.pop("$ref", None)
    if isinstance(ref, str):
        if ref in seen or ref not in defs:
            node.setdefault("type", "object")  # recursive or not local: an object, unchecked
            return _loosen(node, defs, seen, depth + 1)
        return _loosen({**defs[ref], **node}, defs, seen | {ref}, depth + 1)
    all_of = node.pop("allOf", None)
    if isinstance(all_of, list):
        merged: dict[str, Any] = {}
        for part in [p for p in all_of if isinstance(p, dict)] + [node]:
            part = _loosen(part, defs, seen, depth + 1) if part is not node else part
            props = {**merged.get("properties", {}), **(part.get("properties") or {})}
            required = list(dict.fromkeys([*merged.get("required", []), *(part.get("required") or [])]))
            merged.update(part)
            if props:
                merged["properties"] = props
            if required:
                merged["required"] = required
        node = merged
    for key in ("anyOf", "oneOf"):
        options = node.pop(key, None)
        if not isinstance(options, list):
            continue
        kept = [_loosen(o, defs, seen, depth + 1) for o in options if o != {"type": "null"}]
        if len(kept) == 1:
            node = {**kept[0], **node}
        elif kept:
            node = {**_union(kept), **node}
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in dict.fromkeys(kind) if isinstance(k, str) and k != "null"]
        node["type"] = kinds[0] if len(kinds) == 1 else (kinds or list(_ANY_TYPE))
    elif not isinstance(kind, str):
        node["type"] = _inferred_type(node)
    if isinstance(node.get("properties"), dict):
        node["properties"] = {str(k): _loosen(v, defs, seen, depth + 1) for k, v in node["properties"].items()}
    elif "properties" in node:
        del node["properties"]
    if isinstance(node.get("required"), list):
        node["required"] = [r for r in node["required"] if isinstance(r, str)]
    items = node.get("items")
    if isinstance(items, list):  # draft-4 tuples
        node["prefixItems"] = items
        node.pop("items")
    elif items is not None:
        node["items"] = _loosen(items, defs, seen, depth + 1)
    if isinstance(node.get("prefixItems"), list):
        node["prefixItems"] = [_loosen(v, defs, seen, depth + 1) for v in node["prefixItems"]]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        node["additionalProperties"] = _loosen(extra, defs, seen, depth + 1)
    return node


def _union(options: list[dict[str, Any]]) -> dict[str, Any]:
    """One node standing for several alternatives: their types, merged properties, joined enums."""
    kinds: list[str] = []
    for o in options:
        kind = o.get("type")
        kinds += kind if isinstance(kind, list) else [kind]
    kinds = [k for k in dict.fromkeys(kinds) if isinstance(k, str)]
    out: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 else kinds}
    if all(isinstance(o.get("enum"), list) for o in options):
        out["enum"] = [v for o in options for v in o["enum"]]
    props = {k: v for o in options for k, v in (o.get("properties") or {}).items()}
    if props:
        out["properties"] = props
    items = [o["items"] for o in options if isinstance(o.get("items"), dict)]
    if len(items) == 1:
        out["items"] = items[0]
    descriptions = [o["description"] for o in options if isinstance(o.get("description"), str)]
    if descriptions:
        out["description"] = " | ".join(descriptions)
    return out


def _inferred_type(node: dict[str, Any]) -> str | list[str]:
    if "properties" in node or "additionalProperties" in node or "required" in node:
        return "object"
    if "items" in node or "prefixItems" in node:
        return "array"
    enum = node.get("enum")
    if "const" in node:
        enum = [node["const"]]
    if isinstance(enum, list) and enum:
        names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
        kinds = [k for k in dict.fromkeys(names.get(type(v), "string") for v in enum) if k != "null"]
        if kinds:
            return kinds[0] if len(kinds) == 1 else kinds
    return list(_ANY_TYPE)
