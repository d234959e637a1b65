"""The station's modules import one another in one direction only: no cycle, function-level imports
included (a lazy import is still a dependency, and a cycle makes the import order matter)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import drtrt.station

STATION = Path(drtrt.station.__file__).parent


def station_imports(source: str) -> set[str]:
    """The station modules ``source`` imports anywhere in it, by name (``i18n``, ``worker``, …)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "drtrt.station":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drtrt.station."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[2] for alias in node.names if alias.name.startswith("drtrt.station.")}
    return found


def import_graph() -> dict[str, set[str]]:
    """Each station module → the station modules it imports."""
    return {path.stem: station_imports(path.read_text()) for path in STATION.glob("*.py")}


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle in ``graph``, as the modules along it; [] when there is none."""
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        return exc.args[1]
    return []


def test_the_station_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert graph["app"] >= {"handlers", "middleware", "state"}           # the walk sees the imports at all
    assert import_cycle(graph) == []


def test_a_lazy_import_back_up_is_caught():
    """What the test does when someone adds one: the handlers reaching back into the app, lazily."""
    graph = import_graph()
    graph["handlers"] |= station_imports("def routes():\n    from drtrt.station.app import ROUTES\n")
    cycle = import_cycle(graph)
    assert {"app", "handlers"} <= set(cycle), cycle
