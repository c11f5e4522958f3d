"""The package's import structure: no import cycles, and imports point down the layers only.

Issue 7 asks for "no import cycle in sim/", for metrics/ and sim/ not to import each other (what
both need lives below them, in results/), and for a test that "walks the package's imports and fails
on a cycle or an upward import between the layers". Every module is parsed with `ast`, nothing is
imported, and every import counts: top-level, inside functions, and under `TYPE_CHECKING`, since
each is a dependency of the design even when Python would tolerate the cycle at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("registry",),
    ("catalog",),
    ("perf", "workload"),
    ("seam",),
    ("governors", "control", "routing"),
    ("schema",),
    ("results",),
    ("sim", "metrics", "runtime", "loadgen"),
    ("experiments",),
    ("config",),
    ("progress",),
    ("cli",),
    ("__main__", "__init__"),
)
"""Bottom to top. A unit (a top-level module or subpackage of `wattserve`) may import units on lower
layers only; units on one layer are peers and import nothing of each other (the simulator, the
runtime, the load generator and the metrics each stand on their own). `schema` sits above
`control` and `governors` because it validates their names against their registries."""


@dataclass(frozen=True)
class ImportEdge:
    src: str
    dst: str
    line: int


def modules(root: Path, package: str = "wattserve") -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under `root`."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            mod = ".".join([*base, node.module] if node.module else base)
        else:
            mod = node.module or ""
        yield from (f"{mod}.{a.name}" for a in node.names)


def import_edges(root: Path, package: str = "wattserve") -> list[ImportEdge]:
    """Module -> module imports inside the package; `from a.b import c` counts as an import of the
    module a.b.c when that is a module, else of a.b (whose `__init__` defines c)."""
    mods = modules(root, package)
    edges: set[ImportEdge] = set()
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for target in _targets(node, name, path.name == "__init__.py"):
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target.startswith(package) and target != name:
                    edges.add(ImportEdge(name, target, getattr(node, "lineno", 0)))
    return sorted(edges, key=lambda e: (e.src, e.dst, e.line))


def unit(module: str) -> str:
    """The layer unit of a module: `wattserve.sim.cluster` -> `sim`; the package itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def graph_of(edges: Sequence[ImportEdge], by_unit: bool = False) -> dict[str, list[str]]:
    g: dict[str, set[str]] = {}
    for e in edges:
        a, b = (unit(e.src), unit(e.dst)) if by_unit else (e.src, e.dst)
        if a != b:
            g.setdefault(a, set()).add(b)
    return {k: sorted(v) for k, v in g.items()}


def layer_of() -> dict[str, int]:
    return {u: i for i, layer in enumerate(LAYERS) for u in layer}


def unplaced_units(root: Path) -> list[str]:
    known = layer_of()
    return sorted({unit(m) for m in modules(root)} - set(known))


def layer_violations(edges: Sequence[ImportEdge]) -> list[str]:
    """Imports that point up a layer or sideways to a peer, as 'src -> dst (line)'."""
    rank = layer_of()
    bad = []
    for e in edges:
        a, b = unit(e.src), unit(e.dst)
        if a != b and a in rank and b in rank and rank[b] >= rank[a]:
            kind = "peer" if rank[b] == rank[a] else "upward"
            bad.append(f"{e.src} -> {e.dst} (line {e.line}, {kind}: {a} on layer {rank[a]}, {b} on {rank[b]})")
    return bad


@pytest.fixture(scope="module")
def edges() -> list[ImportEdge]:
    return import_edges(SRC)


def test_the_walk_sees_the_package(edges: list[ImportEdge]) -> None:
    """Guards the other tests against passing on an empty graph."""
    mods = modules(SRC)
    assert "wattserve.sim.cluster" in mods and "wattserve.runtime.engine.engine" in mods
    pairs = {(e.src, e.dst) for e in edges}
    assert ("wattserve.sim.cluster", "wattserve.schema.cluster") in pairs
    assert ("wattserve.runtime.power.local", "wattserve.runtime.power.nvml") in pairs, "imports inside functions count"


def test_every_unit_has_a_layer() -> None:
    assert unplaced_units(SRC) == [], "add the new module or subpackage to LAYERS"


def test_no_import_cycle_between_simulator_modules(edges: list[ImportEdge]) -> None:
    sim = [e for e in edges if e.src.startswith("wattserve.sim.") and e.dst.startswith("wattserve.sim.")]
    assert cycles(graph_of(sim)) == []


def test_no_import_cycle_between_units(edges: list[ImportEdge]) -> None:
    assert cycles(graph_of(edges, by_unit=True)) == []


def test_no_import_cycle_between_modules_anywhere(edges: list[ImportEdge]) -> None:
    assert cycles(graph_of(edges)) == []


def test_metrics_and_simulator_do_not_import_each_other(edges: list[ImportEdge]) -> None:
    crossing = [e for e in edges if {unit(e.src), unit(e.dst)} == {"metrics", "sim"}]
    assert crossing == []


def test_imports_point_down_the_layers(edges: list[ImportEdge]) -> None:
    assert layer_violations(edges) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The same functions on a two-unit package: catalog importing sim is upward, and a pair of
    simulator modules importing each other is a cycle."""
    pkg = tmp_path / "wattserve"
    for rel, text in {
        "__init__.py": "",
        "catalog/__init__.py": "",
        "catalog/gpus.py": "def f():\n    from wattserve.sim import cluster\n",
        "sim/__init__.py": "",
        "sim/cluster.py": "from wattserve.sim.instance import Instance\n",
        "sim/instance.py": "from . import cluster\nfrom ..catalog.gpus import f\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    edges = import_edges(tmp_path)
    assert [v.split(" (")[0] for v in layer_violations(edges)] == ["wattserve.catalog.gpus -> wattserve.sim.cluster"]
    sim = [e for e in edges if e.src.startswith("wattserve.sim.") and e.dst.startswith("wattserve.sim.")]
    assert cycles(graph_of(sim)) == [["wattserve.sim.cluster", "wattserve.sim.instance"]]
    assert cycles(graph_of(edges, by_unit=True)) == [["catalog", "sim"]]


def _doc_layers() -> list[set[str]]:
    """The units named at the start of each line of docs/architecture.md's layer diagram (before the
    first run of two spaces), top first."""
    import re

    text = (SRC.parent / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    layers = []
    for line in block.splitlines():
        if not line or line[0].isspace():
            continue
        head = re.split(r"\s{2,}", line.strip())[0]
        names = [re.fullmatch(r"(\w+)(?:/|\.py),?", token) for token in head.split()]
        if names and all(names):
            layers.append({m.group(1) for m in names if m})
    return layers


def test_the_layers_are_the_ones_the_architecture_document_names() -> None:
    documented = list(reversed(_doc_layers()))
    tested = [set(layer) - {"__main__", "__init__"} for layer in LAYERS]
    assert documented == [layer for layer in tested if layer]


def test_the_router_starts_without_importing_torch() -> None:
    """The server process builds specs, validates inputs and routes; torch is the workers'. Importing
    it in the router would add seconds to every `serve` start."""
    import subprocess
    import sys

    code = ("import sys\nfrom wattserve.runtime.server import check_inputs, serve\n"
            "from wattserve.runtime.launcher import ProcessLauncher\nfrom wattserve.runtime.api import Api\n"
            "from wattserve.runtime.backend import RuntimeBackend\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
