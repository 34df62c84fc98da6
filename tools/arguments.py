"""The arguments of one call, as the model sent them: parsing, and the errors the model is shown.

The model sends a JSON string. It is parsed here (``parse_arguments``); a tool's argument model
(tools/schema.py) then validates it. Anything wrong is an ``ArgumentError`` whose lines say what,
one problem a line, and the registry adds a one-line summary of the parameters
(``describe_parameters``) so the model can send a corrected call straight away.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError


class ArgumentError(Exception):
    """The arguments of a call are unusable; ``lines`` are shown to the model, one problem each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def parse_arguments(arguments: str | dict | None) -> dict[str, Any]:
    """The arguments object of a call (empty arguments mean ``{}``)."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        shown = arguments if len(arguments) <= 200 else arguments[:200] + "…"
        raise ArgumentError([
            f"- the arguments are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{shown}",
            "- send one JSON object with the parameters",
        ]) from None
    if not isinstance(value, dict):
        raise ArgumentError([f"- the arguments must be a JSON object, got {type(value).__name__}"])
    return value


def validation_error_lines(exc: ValidationError) -> list[str]:
    """One line per problem pydantic found: ``- <where>: <what> (got <value>)``."""
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


def describe_parameters(schema: dict[str, Any]) -> str:
    """The parameters of a JSON schema in one line: ``path (string, required), depth (integer, default 2)``."""
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    parts = []
    for pname, prop in props.items():
        kind = prop.get("type", "any")
        if isinstance(kind, list):  # a JSON schema from elsewhere may allow several types
            kind = "|".join(str(k) for k in kind)
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
