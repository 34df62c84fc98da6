"""The tool registry: registration and dispatch, including the concurrency of read-only calls.

A tool is registered from a typed function (``register``) or from a JSON schema that came from
elsewhere, such as an MCP server (``register_external``). Either way it becomes one ``ToolSpec``:
a name, a description, an argument model (tools/schema.py: the validator and the JSON schema sent
to the model, from one source) and a handler; dispatch treats every spec the same. Nothing the
model sends can crash the loop: bad JSON, unknown tools, wrong arguments and exceptions inside
tools all become ``is_error`` results that say what was wrong (tools/arguments.py words them).

The shared types live in tools/types.py and the schema derivation in tools/schema.py; their
public names are re-exported here, so ``from kimi_code.tools.registry import ...`` keeps working.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from .arguments import ArgumentError, describe_parameters, parse_arguments
from .schema import (
    ArgumentModel,
    check_schema,
    json_schema_model,
    kimi_schema,
    model_schema,
    parse_docstring,
    signature_model,
    type_schema,
)
from .text import clean_value, valid_text
from .types import Handler, ReadOnly, ToolContext, ToolError, ToolResult

__all__ = [
    "DEFAULT_MAX_WORKERS", "MAX_TOOLS", "TOOL_NAME_RE", "ArgumentError", "ArgumentModel", "Handler",
    "ReadOnly", "ToolContext", "ToolError", "ToolRegistry", "ToolResult", "ToolSpec", "check_schema",
    "describe_parameters", "kimi_schema", "model_schema", "parse_arguments", "parse_docstring",
    "type_schema",
]

# Kimi (and OpenAI) accept function names of this shape only.
TOOL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9-_]{2,63}$")
MAX_TOOLS = 128
# How many read-only calls of one assistant message may run at the same time.
DEFAULT_MAX_WORKERS = 8


# Tools that work through the sandbox's commands, which bring the sandbox's changes back themselves.
COMMAND_TOOLS = frozenset({"shell", "run_tests"})


@dataclass
class ToolSpec:
    name: str
    description: str
    arguments: ArgumentModel  # validates a call's arguments; its JSON schema is sent to the model
    handler: Handler  # validated arguments -> result
    read_only: ReadOnly = False

    @property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments object."""
        return self.arguments.parameters

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
            tool_name = name or func.__name__
            self._check_name(tool_name)
            arguments, doc_description = signature_model(func, tool_name)
            desc = (description or doc_description).strip()
            if not desc:
                raise TypeError(f"tool {tool_name}: a description (docstring) is required")

            def handler(args: dict[str, Any], ctx: ToolContext) -> Any:
                return func(ctx, **args)

            self._add(ToolSpec(tool_name, desc, arguments, handler, read_only))
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
        read_only: ReadOnly = False,
    ) -> None:
        """Register a tool from a JSON schema that comes from elsewhere (an MCP server, a sub-agent).

        ``parameters`` (a JSON schema of type object) is sent to the model as given; calls are
        checked against it lightly (tools/schema.json_schema_model) and ``handler(args, ctx)``
        gets the arguments the model sent. From here on it is a tool like any other.
        """
        self._check_name(name)
        arguments = json_schema_model(parameters, name)
        self._add(ToolSpec(name, (description or "").strip(), arguments, handler, read_only))

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
            raise ValueError(f"tool name {name!r} does not match {TOOL_NAME_RE.pattern}")

    def _add(self, spec: ToolSpec) -> None:
        self._check_name(spec.name)
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

    def subset(self, keep: Callable[[ToolSpec], bool],
               handler: Callable[[ToolSpec], Handler] | None = None) -> ToolRegistry:
        """A new registry with the tools ``keep`` accepts, in the same order (a read-only agent's);
        ``handler`` may give a tool a new handler (same name and schema: the model sees no change)."""
        reg = ToolRegistry(max_workers=self.max_workers)
        reg._tools = {name: spec if handler is None else dataclasses.replace(spec, handler=handler(spec))
                      for name, spec in self._tools.items() if keep(spec)}
        return reg

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
            args = parse_arguments(arguments)
        except ArgumentError:
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
            args = parse_arguments(arguments)
            args = spec.arguments.validate(args)
        except ArgumentError as exc:
            return ToolResult(
                f"Invalid arguments for {name}:\n" + "\n".join(exc.lines)
                + f"\nParameters: {describe_parameters(spec.parameters)}",
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
        on_start: Callable[[int], ToolResult | None] | None = None,
        on_result: Callable[[int, ToolResult], None] | None = None,
    ) -> list[ToolResult]:
        """Run the calls of one assistant message; results come back in call order.

        Consecutive read-only calls run concurrently; any call that may change something runs
        alone, after everything before it has finished. Callbacks always fire from this thread:
        ``on_start(i)`` before call ``i`` begins, ``on_result(i, result)`` as soon as it ended (so
        within a concurrent batch, results may be reported out of order). When ``on_start``
        returns a result (the user refused the call), the call does not run and that is its result.
        """
        results: list[ToolResult | None] = [None] * len(calls)
        if any(n not in COMMAND_TOOLS for n, _ in calls):
            ctx.refresh()  # a sandbox with its own copy: what its background processes wrote, first
        flags = [self.is_read_only(n, a) for n, a in calls]
        i = 0
        while i < len(calls):
            j = i + 1
            if flags[i]:
                while j < len(calls) and flags[j]:
                    j += 1
            if j - i == 1:
                instead = on_start(i) if on_start else None
                if instead is not None:
                    results[i] = self.clean_result(instead)
                else:
                    results[i] = self.run(calls[i][0], calls[i][1], ctx)
                if on_result:
                    on_result(i, results[i])
            else:
                with ThreadPoolExecutor(max_workers=min(self.max_workers, j - i),
                                        thread_name_prefix="tool") as pool:
                    futures = {}
                    for k in range(i, j):
                        instead = on_start(k) if on_start else None
                        if instead is not None:
                            results[k] = self.clean_result(instead)
                            if on_result:
                                on_result(k, results[k])
                            continue
                        futures[pool.submit(self.run, calls[k][0], calls[k][1], ctx)] = k
                    for fut in as_completed(futures):
                        k = futures[fut]
                        results[k] = fut.result()
                        if on_result:
                            on_result(k, results[k])
            i = j
        return [r for r in results if r is not None]
