"""The package's layout, as DESIGN.md draws it: packages by stage, imports only downwards.

Every import of every module is read (at module level, inside functions, under TYPE_CHECKING
alike) and checked against the layering table below; the test fails on a cycle between modules,
an import the table does not allow, `aiohttp.web` outside `server/`, a command module importing
the CLI's entry module, or a module over 800 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pirouter_py"
MAX_LINES = 800

# Imported from anywhere: the version, the exception tree, neutral values, what a request leaves
# behind, and the logger factory (every module takes its logger from it).
EVERYWHERE = frozenset(("pirouter_py", "errors", "types", "record", "observe.log"))

# What each unit may import besides itself and EVERYWHERE (DESIGN.md's table). A unit is a
# top-level module or package of pirouter_py; "ledger.pricing" names one module of a package.
# Where this differs from DESIGN.md it says why.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "types": frozenset(),
    "record": frozenset(),
    "service": frozenset(),  # writes the user service's files; only cli/ uses it
    "config": frozenset(),
    "wire": frozenset(),
    "routing": frozenset(("config", "live")),
    "live": frozenset(("config", "ledger.pricing")),
    # key resting after a 401/403 reuses live.health's cooldown clock
    "providers": frozenset(("wire", "config", "live.health")),
    "checks": frozenset(("config",)),  # answer checks: pure functions of an answer
    "cascade": frozenset(("config", "routing", "providers", "live", "checks")),
    "ledger": frozenset(("config",)),
    "observe": frozenset(("config", "ledger.pricing")),
    # the page of a long window sums the ledger's hourly rollups, in their buckets
    "reports": frozenset(("config", "ledger.read", "ledger.pricing", "ledger.rollups")),
    # labelled examples, training (the optional extra) and eval; never imported by the daemon
    "learning": frozenset(("config", "wire", "routing", "ledger")),
    "server": frozenset(
        (
            *("config", "wire", "routing", "live", "cascade", "checks", "providers"),
            *("ledger", "observe", "reports"),  # the dashboard's panels are reports
        )
    ),
    "cli": frozenset(
        (
            *("config", "wire", "routing", "live", "cascade", "checks", "providers", "ledger"),
            *("observe", "reports", "server", "service", "learning"),
        )
    ),
    "__main__": frozenset(("cli",)),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "pirouter_py"


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The pirouter_py modules a file imports (names relative to the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pirouter_py.x import y`: y may be a module of x (then x itself is not used)
            subs = [f"{node.module}.{a.name}" for a in node.names]
            relative = [s.removeprefix("pirouter_py.") for s in subs]
            names = subs if all(r in MODULES for r in relative) else [node.module, *subs]
        else:
            continue
        for name in names:
            if name == "pirouter_py":
                found.add("pirouter_py")
            elif name.startswith("pirouter_py."):
                relative = name.removeprefix("pirouter_py.")
                if relative in MODULES:
                    found.add(relative)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _unit(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def _allowed(importer: str, imported: str) -> bool:
    if imported == importer or imported in EVERYWHERE:
        return True
    if _unit(importer) == _unit(imported) and _unit(importer) != "pirouter_py":
        return True  # within a package
    allowed = ALLOWED.get(_unit(importer), frozenset())
    return any(imported == a or imported.startswith(a + ".") for a in allowed)


def test_every_module_has_a_place_in_the_table() -> None:
    units = {_unit(m) for m in MODULES} - {"pirouter_py"}
    assert units <= set(ALLOWED), (
        f"modules with no row in the layering table: {units - ALLOWED.keys()}"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layering_table(module: str) -> None:
    breaches = sorted(m for m in GRAPH[module] if m != "pirouter_py" and not _allowed(module, m))
    assert not breaches, f"{module} may not import {breaches} (tests/test_layout.py, DESIGN.md)"


def _cycle() -> list[str] | None:
    """One import cycle between modules, if there is any (package __init__s that only describe
    their package import nothing, so a cycle through a package means through its modules)."""
    graph = {m: {d for d in deps if d not in (m, "pirouter_py")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_no_import_cycles() -> None:
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a made-up cycle is found."""
    GRAPH["errors"].add("types")
    GRAPH["types"].add("errors")
    try:
        assert _cycle() in (["errors", "types", "errors"], ["types", "errors", "types"])
    finally:
        GRAPH["errors"].discard("types")
        GRAPH["types"].discard("errors")


def test_the_table_refuses_an_import_upwards() -> None:
    assert not _allowed("routing.decide", "server.app")
    assert not _allowed("ledger.rows", "live.budgets")
    assert _allowed("cli.ledger", "cli.common") and _allowed("server.app", "ledger.writer")
    assert _allowed("live.traffic", "ledger.pricing")
    assert not _allowed("live.traffic", "ledger.read")


def test_only_the_server_imports_aiohttp_web() -> None:
    importers = set()
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.ImportFrom) and node.module == "aiohttp") and any(
                a.name == "web" for a in node.names
            ):
                importers.add(name)
            if isinstance(node, ast.Import) and any(a.name == "aiohttp.web" for a in node.names):
                importers.add(name)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiohttp.web"):
                importers.add(name)
    assert importers and all(_unit(m) == "server" for m in importers), sorted(importers)


def test_command_modules_never_import_the_entry_module() -> None:
    commands = [m for m in MODULES if m.startswith("cli.")]
    assert commands
    assert all("cli" not in GRAPH[m] for m in commands), {m: GRAPH[m] for m in commands}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_800_lines(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it by sub-concept"
