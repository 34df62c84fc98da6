"""The tool registry: schemas from typed signatures, argument validation, dispatch, concurrency.

A tool is a plain function ``fn(ctx: ToolContext, <model-facing params>) -> ToolResult | str``.
Its JSON schema is derived once, at registration, from the type hints and the docstring (the
``Args:`` section gives parameter descriptions), so the schema is never written twice and the
``tools`` field of every request is byte-identical (prompt cache). Nothing the model sends can
crash the loop: bad JSON, unknown tools, wrong arguments and exceptions inside tools all become
``is_error`` results that say what was wrong.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import ConfigDict, TypeAdapter, ValidationError
from typing_extensions import NotRequired, Required, TypedDict, is_typeddict

from kimi_code.sandbox.base import Sandbox

from .text import clean_value, valid_text

# Kimi (and OpenAI) accept function names of this shape only.
TOOL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$")
MAX_TOOLS = 128
# How many read-only calls of one assistant message may run at the same time.
DEFAULT_MAX_WORKERS = 8


@dataclass
class ToolResult:
    text: str  # what the model sees
    is_error: bool = False
    # JSON-serialisable details for the session log and the view: {"diff": ...}, {"exit_code": ...},
    # {"todo": [...]}, {"finish": {...}}.
    metadata: dict[str, Any] = field(default_factory=dict)
    # Content parts for the next request, e.g. {"type": "image_url", "image_url": {"url": "data:..."}}.
    attachments: list[dict] = field(default_factory=list)


@dataclass
class ToolContext:
    workspace: Path  # host path of the workspace; file tools are confined to it (tools/paths.py)
    sandbox: Sandbox  # shell and run_tests go through sandbox.exec
    command_timeout: float = 120.0
    test_command: str | None = None  # from settings; else AGENTS.md; else detected
    todo: list[dict] = field(default_factory=list)  # the current plan (the loop keeps it updated)


class ToolError(Exception):
    """An expected failure a tool reports to the model as is (no traceback, no "failed" prefix)."""


Handler = Callable[[dict[str, Any], ToolContext], ToolResult]
ReadOnly = Union[bool, Callable[[dict[str, Any]], bool]]


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object
    handler: Handler  # validated arguments -> result
    read_only: ReadOnly = False
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolRegistry:
    """The tools one agent can call. No module-level state: build as many as needed."""

    def __init__(self, *, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self.max_workers = max(1, max_workers)

    # -- registration -------------------------------------------------------------------------

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        read_only: ReadOnly = False,
    ) -> Any:
        """Register a typed function as a tool; usable as ``@reg.register`` or ``@reg.register(...)``."""

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            spec = _spec_from_function(func, name=name, description=description, read_only=read_only)
            self._add(spec)
            return func

        if fn is not None:
            return decorate(fn)
        return decorate

    def register_external(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        handler: Handler,
        *,
        read_only: bool = False,
    ) -> None:
        """Register a tool whose schema comes from outside (an MCP server, a sub-agent spawner)."""
        if parameters.get("type") != "object":
            raise ValueError(f"tool {name}: parameters must be a JSON schema of type 'object'")
        params = copy.deepcopy(parameters)
        required = [r for r in params.get("required", []) if isinstance(r, str)]

        def validate(args: dict[str, Any]) -> dict[str, Any]:
            missing = [r for r in required if r not in args]
            if missing:
                raise _ArgumentError([f"- {m}: required argument is missing" for m in missing])
            return args

        self._add(ToolSpec(name, description.strip(), params, handler, read_only, validate))

    def _add(self, spec: ToolSpec) -> None:
        if not TOOL_NAME_RE.match(spec.name):
            raise ValueError(f"tool name {spec.name!r} does not match {TOOL_NAME_RE.pattern}")
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} is already registered")
        if len(self._tools) >= MAX_TOOLS:
            raise ValueError(f"at most {MAX_TOOLS} tools can be registered")
        problems = check_schema(spec.parameters)
        if problems:
            raise ValueError(f"tool {spec.name}: schema problems: {'; '.join(problems)}")
        self._tools[spec.name] = spec

    # -- introspection ------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def spec(self, name: str) -> ToolSpec:
        return self._tools[name]

    def schemas(self) -> list[dict[str, Any]]:
        """Entries of the request's ``tools`` field, in registration order (stable for caching)."""
        return [copy.deepcopy(s.schema()) for s in self._tools.values()]

    def is_read_only(self, name: str, arguments: str) -> bool:
        """Whether this call changes nothing (so it may run concurrently, or be re-run on resume).

        Arguments that are not valid JSON make a call that can only fail, which changes nothing;
        an unknown tool is not known to be harmless.
        """
        spec = self._tools.get(name)
        if spec is None:
            return False
        if isinstance(spec.read_only, bool):
            return spec.read_only
        try:
            args = _parse_arguments(arguments)
        except _ArgumentError:
            return True
        try:
            return bool(spec.read_only(args))
        except Exception:
            return False

    # -- running ------------------------------------------------------------------------------

    def run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        """Run one call. Never raises for anything the model or the tool did wrong.

        This is the one place where every tool result's text is made valid: lone surrogates (a
        file name that is not UTF-8, a ``\\udcff`` from JSON) are replaced by ``tools/text.py``'s
        rule before the result is counted, recorded or sent, so no tool needs to care.
        """
        return self.clean_result(self._run(name, arguments, ctx))

    @staticmethod
    def clean_result(result: ToolResult) -> ToolResult:
        """The result with valid text, metadata and attachments (see tools/text.py), changed in place."""
        result.text = valid_text(result.text) if isinstance(result.text, str) else str(result.text)
        if result.metadata:
            result.metadata = clean_value(result.metadata)
        if result.attachments:
            result.attachments = clean_value(result.attachments)
        return result

    def _run(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        spec = self._tools.get(name)
        if spec is None:
            available = ", ".join(self._tools) or "(none)"
            return ToolResult(f"Unknown tool {name!r}. Available tools: {available}.", is_error=True)
        try:
            args = _parse_arguments(arguments)
            if spec.validate is not None:
                args = spec.validate(args)
        except _ArgumentError as exc:
            return ToolResult(
                f"Invalid arguments for {name}:\n" + "\n".join(exc.lines)
                + f"\nParameters: {_describe_parameters(spec.parameters)}",
                is_error=True,
            )
        try:
            result = spec.handler(args, ctx)
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        except Exception as exc:  # a bug or an OS error inside a tool must not end the run
            return ToolResult(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)
        if isinstance(result, str):
            return ToolResult(result)
        if not isinstance(result, ToolResult):
            return ToolResult(f"{name} returned {type(result).__name__}, not a result", is_error=True)
        return result

    def run_calls(
        self,
        calls: Sequence[tuple[str, str]],
        ctx: ToolContext,
        *,
        on_start: Callable[[int], None] | None = None,
        on_result: Callable[[int, ToolResult], None] | None = None,
    ) -> list[ToolResult]:
        """Run the calls of one assistant message; results come back in call order.

        Consecutive read-only calls run concurrently; any call that may change something runs
        alone, after everything before it has finished. Callbacks always fire from this thread:
        ``on_start(i)`` before call ``i`` begins, ``on_result(i, result)`` as soon as it ended (so
        within a concurrent batch, results may be reported out of order).
        """
        results: list[ToolResult | None] = [None] * len(calls)
        flags = [self.is_read_only(n, a) for n, a in calls]
        i = 0
        while i < len(calls):
            j = i + 1
            if flags[i]:
                while j < len(calls) and flags[j]:
                    j += 1
            if j - i == 1:
                if on_start:
                    on_start(i)
                results[i] = self.run(calls[i][0], calls[i][1], ctx)
                if on_result:
                    on_result(i, results[i])
            else:
                with ThreadPoolExecutor(max_workers=min(self.max_workers, j - i),
                                        thread_name_prefix="tool") as pool:
                    futures = {}
                    for k in range(i, j):
                        if on_start:
                            on_start(k)
                        futures[pool.submit(self.run, calls[k][0], calls[k][1], ctx)] = k
                    for fut in as_completed(futures):
                        k = futures[fut]
                        results[k] = fut.result()
                        if on_result:
                            on_result(k, results[k])
            i = j
        return [r for r in results if r is not None]


# -- arguments ----------------------------------------------------------------------------------


class _ArgumentError(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _parse_arguments(arguments: str | dict | None) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        shown = arguments if len(arguments) <= 200 else arguments[:200] + "…"
        raise _ArgumentError([
            f"- the arguments are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{shown}",
            "- send one JSON object with the parameters",
        ]) from None
    if not isinstance(value, dict):
        raise _ArgumentError([f"- the arguments must be a JSON object, got {type(value).__name__}"])
    return value


def _format_validation_error(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(arguments)"
        kind = err["type"]
        if kind == "missing":
            lines.append(f"- {loc}: required argument is missing")
        elif kind == "extra_forbidden":
            lines.append(f"- {loc}: unknown argument")
        else:
            shown = json.dumps(err.get("input"), default=str)
            if len(shown) > 80:
                shown = shown[:80] + "…"
            lines.append(f"- {loc}: {err['msg']} (got {shown})")
    return lines


def _describe_parameters(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    parts = []
    for pname, prop in props.items():
        kind = prop.get("type", "any")
        if "enum" in prop:
            kind = "|".join(json.dumps(v) for v in prop["enum"])
        elif kind == "array" and isinstance(prop.get("items"), dict):
            kind = f"array of {prop['items'].get('type', 'any')}"
        if pname in required:
            extra = "required"
        elif "default" in prop:
            extra = f"default {json.dumps(prop['default'])}"
        else:
            extra = "optional"
        parts.append(f"{pname} ({kind}, {extra})")
    return ", ".join(parts) or "none"


# -- schema from a signature --------------------------------------------------------------------

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


def type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema of a Python type, with a ``type`` at every level (Kimi requires it)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        for meta in args[1:]:
            if isinstance(meta, str):
                schema["description"] = meta
            elif getattr(meta, "description", None):
                schema["description"] = meta.description
        return schema
    if origin in (Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) == 1:
            return type_schema(non_null[0])
        raise TypeError(f"unions other than Optional are not supported in tool schemas: {tp}")
    if origin is Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        if len(kinds) != 1:
            raise TypeError(f"Literal values must share one type: {tp}")
        return {"type": _scalar_name(kinds.pop()), "enum": values}
    if origin in (list, Sequence, tuple, set, frozenset) or tp in (list, tuple, set):
        item = args[0] if args else str
        return {"type": "array", "items": type_schema(item)}
    if origin is dict or tp is dict:
        schema: dict[str, Any] = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    if isinstance(tp, type) and is_typeddict(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        _, docs = parse_docstring(tp.__doc__)
        required_keys = getattr(tp, "__required_keys__", set(hints))
        return _object_schema(
            [(n, _strip_required(h), n in required_keys, dataclasses.MISSING) for n, h in hints.items()],
            docs,
        )
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        _, docs = parse_docstring(tp.__doc__)
        fields_ = []
        for f in dataclasses.fields(tp):
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            fields_.append((f.name, hints[f.name], not has_default, f.default))
        return _object_schema(fields_, docs)
    if tp in (str, int, float, bool):
        return {"type": _scalar_name(tp)}
    raise TypeError(f"type {tp!r} is not supported in tool schemas")


def _strip_required(tp: Any) -> Any:
    if typing.get_origin(tp) in (Required, NotRequired):
        return typing.get_args(tp)[0]
    return tp


def _scalar_name(tp: type) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp not in names:
        raise TypeError(f"unsupported scalar type {tp!r}")
    return names[tp]


def _object_schema(fields_: list[tuple[str, Any, bool, Any]], docs: dict[str, str]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for fname, hint, is_required, default in fields_:
        prop = type_schema(hint)
        if fname in docs and docs[fname]:
            prop = {**prop, "description": docs[fname]}
        if default is not dataclasses.MISSING and default is not None and _json_ok(default):
            prop["default"] = default
        props[fname] = prop
        if is_required:
            required.append(fname)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _spec_from_function(
    fn: Callable[..., Any], *, name: str | None, description: str | None, read_only: ReadOnly
) -> ToolSpec:
    tool_name = name or fn.__name__
    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(sig.parameters.values())
    if not params or params[0].name != "ctx":
        raise TypeError(f"tool {tool_name}: the first parameter must be `ctx: ToolContext`")
    doc_description, docs = parse_docstring(fn.__doc__)
    fields_ = []
    td_fields: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name}: *args/**kwargs are not allowed")
        if p.name not in hints:
            raise TypeError(f"tool {tool_name}: parameter {p.name} has no type hint")
        hint = hints[p.name]
        is_required = p.default is inspect.Parameter.empty
        fields_.append((p.name, hint, is_required, dataclasses.MISSING if is_required else p.default))
        td_fields[p.name] = Required[hint] if is_required else NotRequired[hint]
        if not is_required:
            defaults[p.name] = p.default
    parameters = _object_schema(fields_, docs)
    parameters.setdefault("required", [])
    if not parameters["required"]:
        del parameters["required"]

    args_type = TypedDict(f"{tool_name}_arguments", td_fields)  # type: ignore[operator]
    args_type.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]
    adapter = TypeAdapter(args_type)  # validators are thread-safe: concurrent calls share it

    def validate(args: dict[str, Any]) -> dict[str, Any]:
        try:
            value = adapter.validate_python(args)
        except ValidationError as exc:
            raise _ArgumentError(_format_validation_error(exc)) from None
        return {**defaults, **value}

    def handler(args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return fn(ctx, **args)

    desc = (description or doc_description).strip()
    if not desc:
        raise TypeError(f"tool {tool_name}: a description (docstring) is required")
    return ToolSpec(tool_name, desc, parameters, handler, read_only, validate)


# -- schema checks ------------------------------------------------------------------------------


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
