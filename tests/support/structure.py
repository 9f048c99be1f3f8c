"""The structure drawing: paystream's import graph (grimp), as Mermaid in docs/structure.md.

    .venv/bin/python -m tests.support.structure   # rewrites docs/structure.md

A test fails when the committed drawing is not what the code imports, and checks the rules
the drawing shows: the core imports no other part of paystream and no infrastructure, and
replay reaches the core without ever importing the worker (``paystream.agents``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

import grimp

PACKAGE: Final = "paystream"
DRAWING: Final = Path(__file__).resolve().parents[2] / "docs" / "structure.md"
REPLAY: Final = ("paystream.audit.replay", "paystream.cli.replay")
WORKER: Final = "paystream.agents"
CORE: Final = "paystream.ledger"


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, include_external_packages=True)


def layer(module: str) -> str:
    """``paystream.audit.replay`` -> ``audit``; top-level modules keep their name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_edges() -> list[tuple[str, str]]:
    found = graph()
    edges: set[tuple[str, str]] = set()
    for module in found.modules:
        if not module.startswith(f"{PACKAGE}."):
            continue
        for imported in found.find_modules_directly_imported_by(module):
            if imported.startswith(f"{PACKAGE}.") and layer(imported) != layer(module):
                edges.add((layer(module), layer(imported)))
    return sorted(edges)


def replay_closure() -> list[tuple[str, str]]:
    """Module-level edges from replay's entry points down to everything of paystream they
    import, transitively."""
    found = graph()
    seen: set[str] = set()
    stack = list(REPLAY)
    edges: set[tuple[str, str]] = set()
    while stack:
        module = stack.pop()
        if module in seen:
            continue
        seen.add(module)
        for imported in found.find_modules_directly_imported_by(module):
            if imported.startswith(f"{PACKAGE}."):
                edges.add((module, imported))
                stack.append(imported)
    return sorted(edges)


def external_imports_of(prefix: str) -> set[str]:
    found = graph()
    return {
        imported
        for module in found.modules
        if module == prefix or module.startswith(f"{prefix}.")
        for imported in found.find_modules_directly_imported_by(module)
        if not imported.startswith(f"{PACKAGE}.") and imported != PACKAGE
    }


def render() -> str:
    def node(name: str) -> str:
        return name.replace(".", "_")

    lines = [
        "# Structure",
        "",
        "Generated from the code by `.venv/bin/python -m tests.support.structure` (grimp's",
        "import graph); `tests/unit/test_structure.py` fails when it is out of date and checks",
        "the rules it shows: `ledger/` (the pure core) imports no other part of paystream and no",
        "infrastructure; replay reaches the core through the shared shell",
        "(`topology/shell.py`) and never imports `agents/` (the worker).",
        "",
        "## Packages (an arrow: imports)",
        "",
        "```mermaid",
        "flowchart LR",
    ]
    lines += [f"  {node(a)} --> {node(b)}" for a, b in layer_edges()]
    lines += [
        "```",
        "",
        "## What `paystream replay` imports (modules of paystream, transitively)",
        "",
        "```mermaid",
        "flowchart LR",
    ]
    closure = replay_closure()
    lines += [f"  {node(a)}[{a}] --> {node(b)}[{b}]" for a, b in closure]
    lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    DRAWING.write_text(render(), encoding="utf-8")
    print(f"written {DRAWING}")
