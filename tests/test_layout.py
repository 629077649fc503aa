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


def _module_graph() -> dict[str, set[str]]:
    """Project module -> project modules it imports, at any depth (a lazy import inside a function counts: it
    is still a dependency, and two modules that need each other are one module badly cut)."""
    mods = {}
    for pkg in LAYERS:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for m, p in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                deps |= {known(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1 packages
                    pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                # ``from pkg import sub`` depends on the submodule, not on the package that holds it
                deps |= {known(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else known(base)
                         for a in node.names}
        graph[m] = deps - {None, m}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_circle_anywhere():
    """Catches two modules that import each other, even lazily (psml/cli_attack and cli_encoder_attack did, for
    private helpers; the report and report_encoder did). The cycle finder itself is checked on a known circle."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles(_module_graph()) == []
