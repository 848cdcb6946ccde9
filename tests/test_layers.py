"""The package's layers: imports point down only, no import cycle, light top-level imports.

Layers, lowest first: search_spaces < hpsearch.core < hpsearch.search < hpsearch.cluster <
ensembles < hpsearch.pipeline < hpsearch.cli (docs/architecture.md).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = (
    "search_spaces",
    "hpsearch.core",
    "hpsearch.search",
    "hpsearch.cluster",
    "ensembles",
    "hpsearch.pipeline",
    "hpsearch.cli",
)
# hpsearch/__init__.py maps public names to modules of every layer, imported on first use
FACADES = {"hpsearch"}


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("search_spaces", "hpsearch", "ensembles"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int | None:
    """The index in LAYERS of ``module`` (the longest matching prefix), None for a facade."""
    if module in FACADES:
        return None
    best = None
    for i, name in enumerate(LAYERS):
        inside = module == name or module.startswith(name + ".")
        if inside and (best is None or len(name) > len(LAYERS[best])):
            best = i
    return best


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) for every import statement anywhere in the file but under
    ``if TYPE_CHECKING:``, relative ones made absolute; ``from pkg import name`` counts
    ``pkg.name`` when that is a module."""
    modules = _modules()
    tree = ast.parse(path.read_text())
    typing_only = {  # `if TYPE_CHECKING:` imports never run
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((node.lineno, full if full in modules else base))
    return [
        (line, m)
        for line, m in out
        if m.split(".")[0] in ("search_spaces", "hpsearch", "ensembles")
    ]


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def test_every_module_belongs_to_a_layer():
    loose = [m for m in _modules() if m not in FACADES and layer_of(m) is None]
    assert loose == [], f"modules outside every layer: {loose}"


def test_imports_point_down_only():
    """Every import statement, including those inside functions, names a module of the same
    layer or one below it."""
    bad = []
    for module, path in _modules().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for line, target in _imports(path, _package(module, path)):
            theirs = layer_of(target)
            if target in FACADES or target == "hpsearch":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports the facade {target}")
            elif theirs is not None and theirs > mine:
                bad.append(
                    f"{path.relative_to(ROOT)}:{line} ({LAYERS[mine]}) imports {target} "
                    f"({LAYERS[theirs]})"
                )
    assert bad == [], "imports pointing up:\n" + "\n".join(bad)


def test_no_import_cycle():
    modules = _modules()
    graph = {
        m: {t for _, t in _imports(p, _package(m, p)) if t in modules and t != m}
        for m, p in modules.items()
    }
    # packages import their children implicitly; an __init__ importing its child is no cycle
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=LAYERS)
def test_a_layer_imported_alone_pulls_in_nothing_above_it(layer):
    """Import every module of one layer in a fresh interpreter; no module of a higher layer
    may end up loaded."""
    own = [m for m in _modules() if layer_of(m) == layer]
    above = LAYERS[layer + 1 :]
    code = (
        "import importlib, sys\n"
        f"for m in {own!r}: importlib.import_module(m)\n"
        f"above = {above!r}\n"
        "print('\\n'.join(sorted(m for m in sys.modules "
        "if any(m == a or m.startswith(a + '.') for a in above))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [], f"{LAYERS[layer]} pulled in: {out.stdout.split()}"


def test_import_hpsearch_and_ensembles_stays_light():
    code = (
        "import sys, hpsearch, ensembles, search_spaces\n"
        "heavy = ('tensorflow', 'keras', 'ray', 'optuna', 'hyperopt', 'sklearn', 'scipy')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == []
