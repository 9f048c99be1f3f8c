"""The import graph keeps its rules, and docs/structure.md draws the graph as it is."""

from __future__ import annotations

import sys

from tests.support import structure


def test_replay_reaches_the_core_and_never_the_worker() -> None:
    graph = structure.graph()
    workers = [m for m in graph.modules if m.startswith(f"{structure.WORKER}.")]
    assert workers, "the worker package moved: update tests/support/structure.py"
    for entry in structure.REPLAY:
        assert graph.find_shortest_chain(importer=entry, imported="paystream.ledger.core")
        for worker in workers:
            chain = graph.find_shortest_chain(importer=entry, imported=worker)
            assert chain is None, f"{entry} imports the worker: {' -> '.join(chain or ())}"


def test_the_core_imports_no_other_part_of_paystream_and_no_infrastructure() -> None:
    assert {b for a, b in structure.layer_edges() if a == "ledger"} == set()
    imported = {name.split(".")[0] for name in structure.external_imports_of(structure.CORE)}
    assert imported - sys.stdlib_module_names <= {"ulid"}, imported  # python-ulid mints ids


def test_the_structure_drawing_is_the_code_as_it_is() -> None:
    committed = structure.DRAWING.read_text(encoding="utf-8")
    assert committed == structure.render(), (
        "docs/structure.md is out of date: run .venv/bin/python -m tests.support.structure"
    )
