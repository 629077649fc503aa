"""The import direction of the layout: each package imports only packages below it (or itself), so the
foundation never depends on the command line that is built on it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first. common: errors, stats, tables, atomic writes, ports, versions; stack: Triton and router
# processes, the loopback stack, the systems under test; psml: the command line and orchestration (cli, demo,
# report, zoo validation).
LAYERS = ["common", "stack", "zoo", "router", "attacks", "loadtests", "benchmarks", "psml"]


def imports(path: Path) -> set[str]:
    """Top-level project packages a module imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(LAYERS)


def test_no_module_imports_a_package_above_it():
    """Catches the old layout (router, zoo and attacks importing psml.errors, psml.sut ...) coming back."""
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = [f"{path.relative_to(ROOT)} imports {dep}"
              for pkg in LAYERS for path in sorted((ROOT / pkg).rglob("*.py"))
              for dep in imports(path) if rank[dep] > rank[pkg]]
    assert not upward, upward


def test_every_package_of_the_layout_exists_and_nothing_is_left_out():
    """A new top-level package must take its place in LAYERS (else the check above does not see it)."""
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"}
    assert packages == set(LAYERS), packages ^ set(LAYERS)


MAX_LINES = 400  # the most one module may hold: one idea a reader can keep in mind


def test_no_library_module_over_400_lines():
    """Catches a module grown by accretion past what one reader holds at once (benchmarks/defense_tradeoff.py
    reached 610 lines: settings, measurement phases, scoring, plots and the command line in one file)."""
    long = [f"{path.relative_to(ROOT)}: {n} lines" for pkg in LAYERS for path in sorted((ROOT / pkg).rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, long
