"""The package's shape: no import cycle (imports inside functions and lazy imports by name
included), imports point down the stages, no module over 400 lines, and docs/design.md has a
row for every folder.

The import graph is read from the source (``ast``), not from ``sys.modules``: a cycle closed
only by an import inside a function is still a cycle. An edge goes from a module to the deepest
module it names (``from ..evaluation import game`` names ``layerfast.evaluation.game``); a string
``"layerfast.x.y"`` or ``"layerfast.x.y:attr"`` that names a module (the lazy tables of
``layerfast/__init__.py`` and of ``tasks/__init__.py``) is an edge too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "layerfast"
MAX_LINES = 400

# The stage order: a folder may import only from folders on its own row or above it, and from the
# top-level helper modules (errors, coalitions, players, paths, progress, threads, assets).
STAGES = [
    ("models",),
    ("tasks",),
    ("evaluation",),
    ("estimators",),
    ("report",),
]
SIDE_PATHS = {  # folder -> the folders it may import from, besides the top-level helpers
    "kernels": set(),
    "activations": {"models", "tasks", "kernels"},
    "hallucination": {"models", "tasks", "evaluation", "activations"},
    "pruning": {"models", "tasks", "evaluation", "estimators"},
    "bench": {"models", "tasks", "evaluation", "estimators", "activations", "report"},
    "bridges": {"models", "tasks", "evaluation", "estimators"},
    "cli": {
        "models",
        "tasks",
        "evaluation",
        "estimators",
        "report",
        "activations",
        "hallucination",
        "pruning",
        "bench",
        "bridges",
    },
}
HELPERS = {"errors", "coalitions", "players", "paths", "progress", "threads", "assets"}
# Entry points import whatever they expose: the package (its lazy ``lf.*`` names) and the public
# name of the harness bridge.
ENTRY_POINTS = {"layerfast", "layerfast.harness"}
# The one edge against the stage order, by name only: tasks.load reaches the lm_eval task kind,
# whose home is bridges/ with the other third-party bridges.
BY_NAME = {("layerfast.tasks", "layerfast.bridges.lm_eval_load")}
MODULE_STRING = re.compile(r"^layerfast(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _deepest(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _is_extension(module: str) -> bool:
    """A compiled extension module (``layerfast._block_stats_cpp``): no Python source."""
    folder = ROOT.joinpath(*module.split(".")[:-1])
    return any(folder.glob(module.rsplit(".", 1)[-1] + ".*.so")) or module.endswith("_cpp")


def imports(module: str, path: Path, known: dict[str, Path]) -> set[tuple[str, bool]]:
    """(imported module, by name only) for every import in ``module``'s source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[tuple[str, bool]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        by_name = False
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:  # a submodule, a compiled extension, or a name of ``base``
                full = f"{base}.{a.name}"
                if full in known:
                    names.append(full)
                elif not _is_extension(full):
                    names.append(base)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":")[0]
            if MODULE_STRING.match(node.value) and name in known:
                names, by_name = [name], True
        for name in names:
            if name.startswith("layerfast"):
                target = _deepest(name, known)
                if target is not None and target != module:
                    found.add((target, by_name))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[tuple[str, bool]]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_no_import_cycle(graph):
    edges = {m: {t for t, _ in targets} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def _folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_imports_point_down_the_stages(graph):
    rank = {folder: i for i, row in enumerate(STAGES) for folder in row}
    wrong = []
    for module, targets in graph.items():
        src = _folder(module)
        if module in ENTRY_POINTS or src in HELPERS:
            continue
        for target, by_name in targets:
            dst = _folder(target)
            if not dst or dst == src or dst in HELPERS:
                continue
            if (module, target) in BY_NAME and by_name:
                continue
            if src in rank:
                ok = dst in rank and rank[dst] <= rank[src]
            else:
                ok = dst in SIDE_PATHS.get(src, set())
            if not ok:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the stage order:\n" + "\n".join(sorted(wrong))


def test_top_level_helpers_import_no_stage(graph):
    wrong = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _folder(m) in HELPERS
        for t, _ in targets
        if _folder(t) not in HELPERS
    ]
    assert not wrong, wrong


def test_no_module_over_the_limit():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_design_doc_has_a_row_for_every_folder():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    inits = [p for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE]
    folders = sorted(str(p.parent.relative_to(PACKAGE)) for p in inits)
    missing = [f for f in folders if f"| `{f}/` |" not in text]
    assert not missing, f"docs/design.md's module table lacks a row for: {missing}"


def test_every_stage_init_states_the_stage_order():
    missing = [
        folder
        for row in STAGES
        for folder in row
        if "models -> tasks -> evaluation -> estimators -> report"
        not in (PACKAGE / folder / "__init__.py").read_text(encoding="utf-8")
    ]
    assert not missing, f"stage __init__ docstrings without the stage order: {missing}"
