"""The rooms hold (hack/imports.py reads the import graph from the source): no room imports a higher one,
no import cycles, no module over ~500 lines but pure tables, and the operator never loads the delivery
engine, ingest or the data plane's entry points (it would carry their memory and their bugs)."""

from __future__ import annotations

import subprocess
import sys

import imports_graph as graph


def test_no_room_imports_a_higher_room():
    assert graph.upward_imports() == []


def test_the_import_graph_has_no_cycles():
    assert graph.cycles() == []


def test_no_module_is_over_the_size_limit_but_pure_tables():
    assert graph.oversized() == []


def test_every_module_is_in_a_room():
    for name in graph.modules():
        graph.room_of(name)


def test_the_operator_process_does_not_load_the_data_plane_engine():
    probe = (
        "import sys, hookline.operator.main; "
        f"print(sorted(m for m in sys.modules if m.startswith({graph.OPERATOR_FORBIDDEN!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]"
