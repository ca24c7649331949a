"""The layout's import rules, read from the source (every import, the lazy ones in functions
and under ``TYPE_CHECKING`` included), so a rule breaks here and not in production:

- ``impasto.engine`` imports neither ``impasto.service`` nor ``impasto.cli``;
- ``impasto.service.core`` imports neither ``impasto.service.shop`` nor ``impasto.service.farm``;
- ``impasto.service.farm`` never imports ``impasto.service.shop``;
- a test module never imports another test module (shared helpers live in ``tests/support``,
  fixtures in conftest.py files);
- no import cycle among the engine's modules: a lazy import does not hide one, since it
  counts too (a cycle worked around that way is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent

RULES = [  # (importer, forbidden)
    ("impasto.engine", "impasto.service"),
    ("impasto.engine", "impasto.cli"),
    ("impasto.service.core", "impasto.service.shop"),
    ("impasto.service.core", "impasto.service.farm"),
    ("impasto.service.farm", "impasto.service.shop"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports anywhere in its body: ``from a import b`` names a and a.b."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


MODULES = {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def test_impasto_engine_render_is_the_function_and_no_module_hides_behind_it():
    import importlib.util
    import inspect

    import impasto.engine

    assert inspect.isfunction(impasto.engine.render)
    assert importlib.util.find_spec("impasto.engine.render") is None   # the one-scale loop is engine.scale


def test_the_walk_sees_the_whole_package_and_its_lazy_imports():
    assert {"impasto.engine.scale", "impasto.service.core.render_job", "impasto.service.shop.app",
            "impasto.service.farm.worker", "impasto.cli.serve"} <= set(MODULES)
    # a lazy import inside a function counts: the shop's app reaches the farm only that way
    assert "impasto.service.farm.dispatcher" in imported(MODULES["impasto.service.shop.app"],
                                                         "impasto.service.shop.app")


@pytest.mark.parametrize(("importer", "forbidden"), RULES, ids=[f"{a} -/-> {b}" for a, b in RULES])
def test_import_rules(importer, forbidden):
    broken = sorted(f"{name} imports {target}" for name, path in MODULES.items() if within(name, importer)
                    for target in imported(path, name) if within(target, forbidden))
    assert broken == []


def test_no_test_module_imports_another():
    broken = []
    for path in sorted(TESTS.rglob("*.py")):
        for target in imported(path, path.stem):
            leaf = target.rpartition(".")[2]
            if leaf.startswith("test_") or leaf == "conftest":
                broken.append(f"{path.relative_to(TESTS)} imports {target}")
    assert broken == []


ACYCLIC = ["impasto.engine"]   # packages whose modules import one another without a cycle


def _module_graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports (a module's import of its own parent
    packages is Python's, not the module's, and left out)."""
    graph = {}
    for name, path in MODULES.items():
        if not within(name, package):
            continue
        targets = {target for target in imported(path, name)
                   if target in MODULES and target != name and within(target, package)}
        graph[name] = {target for target in targets if not within(name, target)}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (its modules in order), or [] when there is none."""
    state: dict[str, str] = {}   # "open" while on the path, "done" after

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":   # on the path: the path from it back to it
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return []


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("package", ACYCLIC)
def test_no_import_cycle(package):
    graph = _module_graph(package)
    assert {"impasto.engine.memory", "impasto.engine.params", "impasto.engine.tiling.budget"} <= set(graph)
    assert " -> ".join(_cycle(graph)) == ""
