"""The house's layout enforces itself: every stage imports only from the stages below it.

The order is written once, in the package docstring (``drtrt/__init__.py``); this test reads it
from there, walks every module's imports (function-level ones included: a lazy import is still a
dependency) and fails on an import that points up, naming the file, the line and both stages.
The PyTorch runner is the one thing ``runtime`` reaches above itself, by an import path in a
string (``drtrt.runtime.registry.RUNNERS``), which is the plug-in point, not an import. Inside a
stage, modules form no circle either (same walk, module by module).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import drtrt

PACKAGE = Path(drtrt.__file__).parent


def stages() -> list[str]:
    """The stages top to bottom, as the package docstring's diagram lists them."""
    block = drtrt.__doc__.split("::", 1)[1]
    names = re.findall(r"^\s{4}(\w+)\s{2,}", block, re.M)
    assert names and names[-1] == "core", names
    return names


def stage_of(module: str, names: list[str]) -> str:
    """``drtrt.runtime.backends.trt`` → runtime; the top-level modules (errors, task, preprocess, …) are core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in names else "core"


def imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every drtrt import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "drtrt":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "drtrt"]
    return found


def violations(sources: dict[str, str]) -> list[str]:
    """Every upward import among ``sources`` (module name → source), one line each."""
    names = stages()
    rank = {name: len(names) - i for i, name in enumerate(names)}      # core lowest
    found = []
    for module, source in sorted(sources.items()):
        own = stage_of(module, names)
        for line, target in imports(source):
            if rank[stage_of(target, names)] > rank[own]:
                found.append(f"{module}:{line} ({own}) imports {target} ({stage_of(target, names)}), a stage above")
    return found


def package_sources() -> dict[str, str]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[module] = path.read_text()
    return out


def test_every_stage_is_a_folder_the_diagram_names_and_every_folder_a_stage():
    names = stages()
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"preprocess"}
    assert folders == set(names) - {"core"}, (folders, names)


def test_no_stage_imports_upward():
    assert violations(package_sources()) == []


def test_an_upward_import_is_caught_and_named():
    """What the test does when someone adds one: the runtime reaching into training, lazily."""
    sources = package_sources()
    sources["drtrt.runtime.backends.ort"] += "\n\ndef _sneaky():\n    from drtrt.train.model import build_model\n"
    sources["drtrt.data.idrid"] += "\nimport drtrt.verify.metrics\n"
    found = violations(sources)
    assert len(found) == 2
    assert found[0].startswith("drtrt.data.idrid:") and "(data) imports drtrt.verify.metrics (verify)" in found[0]
    assert found[1].startswith("drtrt.runtime.backends.ort:") and "(runtime) imports drtrt.train.model (train)" in found[1]


def test_stages_form_no_cycle():
    """With the order above no cycle between stages is possible; checked directly all the same."""
    names = stages()
    edges = {(stage_of(m, names), stage_of(t, names)) for m, s in package_sources().items() for _, t in imports(s)}
    graph = {a: {b for x, b in edges if x == a and b != a} for a in names}
    seen, done = set(), set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in seen - done, f"cycle between stages: {' -> '.join((*path, node))}"
        if node in done:
            return
        seen.add(node)
        for nxt in graph[node]:
            visit(nxt, (*path, node))
        done.add(node)

    for name in names:
        visit(name, ())


def module_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module → the drtrt modules it imports, at any level (a function's lazy import and a
    ``TYPE_CHECKING`` one count: a circle hidden in a function is still a circle). ``from drtrt.a
    import b`` points at ``drtrt.a.b`` when that is a module."""
    graph: dict[str, set[str]] = {module: set() for module in sources}
    for module, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "drtrt":
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in sources else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "drtrt"]
            else:
                continue
            graph[module].update(t for t in targets if t in sources and t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_imports_itself_back_through_others():
    """No circle among modules anywhere in the package, inside a stage included."""
    assert cycles(module_graph(package_sources())) == []


def test_a_circle_hidden_in_a_function_is_caught():
    sources = package_sources()
    sources["drtrt.clinic.store"] += "\n\ndef _late():\n    from drtrt.clinic.visits import VisitBook\n"
    assert any({"drtrt.clinic.store", "drtrt.clinic.visits"} <= set(c) for c in cycles(module_graph(sources)))


MAX_LINES = 400


def test_no_module_is_over_400_lines():
    """A module past 400 lines is split along its seams (docs/architecture.md) before it grows more."""
    long = {m: n for m, s in package_sources().items() if (n := len(s.splitlines())) > MAX_LINES}
    assert long == {}
