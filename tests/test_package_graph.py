"""The packages depend one way, agent -> tools -> sandbox: tools/ and sandbox/ import nothing from
agent/, sandbox/ nothing from tools/, and no module imports itself back through a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"agent": "kimi_code.agent", "tools": "kimi_code.tools", "sandbox": "kimi_code.sandbox"}
# What each package may import of the others.
ALLOWED = {"agent": {"agent", "tools", "sandbox"}, "tools": {"tools", "sandbox"}, "sandbox": {"sandbox"}}


def _module_name(path: Path) -> str:
    package = PACKAGES[path.relative_to(ROOT).parts[0]]
    return package if path.stem == "__init__" else f"{package}.{path.stem}"


def _imports(path: Path) -> set[str]:
    """Every kimi_code module a file imports, at any depth (function-local imports included)."""
    module = _module_name(path)
    package = module.rsplit(".", 1)[0] if path.stem != "__init__" else module
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kimi_code.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("kimi_code."):
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for name in PACKAGES for p in (ROOT / name).glob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def _layer(module: str) -> str:
    return next(name for name, package in PACKAGES.items() if module.startswith(package))


def test_tools_and_sandbox_never_import_agent_and_sandbox_never_imports_tools() -> None:
    wrong = sorted((m, i) for m, deps in _graph().items() for i in deps if _layer(i) not in ALLOWED[_layer(m)])
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


# The concrete sandbox and tool classes: only the assembly module of agent/ builds them.
CONCRETE = ("kimi_code.sandbox.local", "kimi_code.sandbox.docker", "kimi_code.tools.builtin",
            "kimi_code.tools.files", "kimi_code.tools.shell", "kimi_code.tools.search", "kimi_code.tools.image",
            "kimi_code.tools.video", "kimi_code.tools.plan", "kimi_code.tools.finish", "kimi_code.tools.walk",
            "kimi_code.tools.mcp_client", "kimi_code.tools.mcp_tools", "kimi_code.tools.mcp_results")


def test_only_the_assembly_knows_the_concrete_sandboxes_and_tools() -> None:
    graph = _graph()
    knowing = sorted(m for m, deps in graph.items()
                     if _layer(m) == "agent" and any(d.startswith(CONCRETE) for d in deps))
    assert knowing == ["kimi_code.agent.assembly"]
