"""hookline's import graph: rooms, their order, cycles and module sizes
(`.venv/bin/python tests/support/imports_graph.py`).

Read from the source with `ast`, nothing imported. tests/unit/test_architecture.py holds the rules below;
run this file to see the graph's depth, its cycles and the largest modules (the issue notes quote it).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Import name prefix -> folder (pyproject.toml's package-dir).
FOLDERS = {
    "hookline.sender": ROOT / "sender",
    "hookline.operator": ROOT / "operator",
    "hookline": ROOT / "hookline",
}

# Rooms from the bottom up: a module may import its own room and the rooms of a LOWER rank only.
RANKS: dict[str, int] = {
    "hookline.api": 0,
    "hookline.durations": 0,
    "hookline.headers": 0,
    "hookline.tasks": 0,
    "hookline": 0,  # the package itself: version and user agent
    "hookline.sender.model": 1,
    "hookline.sender.transport": 2,
    "hookline.sender.observe": 2,
    "hookline.sender.bus": 3,
    "hookline.operator.rules": 4,
    "hookline.operator.settings": 4,
    "hookline.operator.metrics": 4,
    "hookline.sender.delivery": 5,
    "hookline.sender.ingest": 5,
    "hookline.operator.adapters": 5,
    "hookline.operator.runtime": 6,
    "hookline.operator.loops": 7,
    "hookline.operator.handlers": 7,
    "hookline.sender.cmd": 8,
    "hookline.operator.main": 8,
    "hookline.operator": 8,
    "hookline.manifests": 8,
    "hookline.kubecli": 9,
    "hookline.demo_receiver": 9,
    "hookline.dev": 10,
    "hookline.cli": 11,
}
# What the control plane must never load: the delivery engine, ingest and the data plane's entry points.
OPERATOR_FORBIDDEN = ("hookline.sender.delivery", "hookline.sender.ingest", "hookline.sender.cmd")
MAX_LINES = 500
# Pure tables may be longer (a reader scans them, not reasons through them).
# hookline.api is the one typed home of the Webhook API: declarations (names, enums, models), no logic;
# its submodules (hookline.api.policy, hookline.api.domain, ...) hold the other kinds.
TABLES = {"hookline.api"}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    lines: int
    imports: frozenset[str]


def module_name(path: Path) -> str:
    for prefix, folder in sorted(FOLDERS.items(), key=lambda kv: -len(str(kv[1]))):
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([prefix, *parts])
    raise ValueError(f"{path} is not in a package folder")


def _imports(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for folder in FOLDERS.values():
        for path in sorted(folder.rglob("*.py")):
            name = module_name(path)
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text, str(path))
            raw = set(_imports(tree, name, path.name == "__init__.py"))
            found[name] = Module(name, path, text.count("\n"), frozenset(raw))
    for name, module in found.items():
        # An import of `pkg.attr` names the module `pkg.attr` when it exists, else the package `pkg`.
        resolved = {imp for imp in module.imports if imp in found and imp != name}
        found[name] = Module(name, module.path, module.lines, frozenset(resolved))
    return found


def room_of(name: str) -> str:
    best = max((room for room in RANKS if name == room or name.startswith(room + ".")), key=len, default=None)
    if best is None:
        raise KeyError(f"{name} is in no room: add it to tests/support/imports_graph.py RANKS")
    return best


def upward_imports() -> list[str]:
    """Imports from a lower room into a higher one ("pkg.__init__" facades count as their package's room)."""
    problems = []
    for name, module in modules().items():
        for target in sorted(module.imports):
            if RANKS[room_of(target)] > RANKS[room_of(name)]:
                problems.append(f"{name} ({room_of(name)}) imports {target} ({room_of(target)})")
    return problems


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {name: sorted(m.imports) for name, m in modules().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def depth() -> int:
    """The longest chain of imports (modules in a cycle are counted once)."""
    graph = {name: m.imports for name, m in modules().items()}

    @cache
    def longest(node: str, seen: frozenset[str] = frozenset()) -> int:
        return 1 + max((longest(n, seen | {node}) for n in graph[node] if n not in seen), default=0)

    return max(longest(name) for name in graph)


def room_depth() -> int:
    """The longest chain of imports between rooms (how many floors a change can travel through)."""
    edges: dict[str, set[str]] = {}
    for name, module in modules().items():
        edges.setdefault(room_of(name), set()).update(
            room_of(target) for target in module.imports if room_of(target) != room_of(name)
        )

    def longest(room: str, seen: frozenset[str]) -> int:
        # Rooms of one rank may import each other (operator.settings and operator.rules): count once.
        return 1 + max((longest(o, seen | {o}) for o in edges.get(room, ()) if o not in seen), default=0)

    return max(longest(room, frozenset({room})) for room in edges)


def oversized() -> list[tuple[str, int]]:
    return sorted(
        ((n, m.lines) for n, m in modules().items() if m.lines > MAX_LINES and n not in TABLES),
        key=lambda item: -item[1],
    )


def main() -> int:
    mods = modules()
    largest = sorted(mods.values(), key=lambda m: -m.lines)[:5]
    print(
        f"{len(mods)} modules; import depth {depth()} modules, {room_depth()} rooms; cycles {len(cycles())}"
    )
    for component in cycles():
        print("  cycle:", " <-> ".join(component))
    for problem in upward_imports():
        print("  upward:", problem)
    print("largest:", ", ".join(f"{m.name} {m.lines}" for m in largest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
