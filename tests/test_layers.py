"""The layering of docs/architecture.md, read from the source with `ast` (nothing is imported):

- each module imports only its own layer or lower ones, low to high: kernels; worldmodel's base
  (actions.py, device.py), data/ and games/; model/; runtime/; train/; eval/ and profiling/; app/
  (a function's lazy import too, save the few exceptions below, each with its reason);
- worldmodel and kernels never import app, kernels never imports worldmodel;
- no import circle among the imports that run when a module loads (top level, class bodies; not
  inside functions, not under `if TYPE_CHECKING:`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "worldmodel", "app")

# package prefix -> layer (the longest matching prefix wins)
LAYERS = {
    "kernels": 0,
    "worldmodel.actions": 1,
    "worldmodel.device": 1,
    "worldmodel.data": 1,
    "worldmodel.games": 1,
    "worldmodel.model": 2,
    "worldmodel.runtime": 3,
    "worldmodel.train": 4,
    "worldmodel.eval": 5,
    "worldmodel.profiling": 5,
    "app": 6,
}
LAYER_NAMES = ["kernels", "base/data/games", "model", "runtime", "train", "eval/profiling", "app"]

# (importer, imported): lazy imports (inside a function) that go up a layer on purpose
ALLOWED_UP = {
    ("worldmodel", "worldmodel.runtime.session"): "the package's `WorldSession`, loaded on first use",
    ("worldmodel.train.all_stages", "worldmodel.eval.ladder"): "`train all` ends by measuring every stage",
    ("worldmodel.train.decoder", "worldmodel.eval.metrics"): "the decoder stage reports PSNR and sharpness "
    "as `eval` measures them",
}


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def project_modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name, is_pkg = module_name(path)
            out[name] = (path, is_pkg)
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module, name: str, is_pkg: bool, known) -> list[tuple[str, bool, int]]:
    """(imported project module, at module level, line) for every import in `tree`."""
    package = name if is_pkg else name.rpartition(".")[0]
    found = []

    def add(target: str, top: bool, line: int) -> None:
        while target and target not in known:  # `import a.b.c` of a name, or a package attribute
            target = target.rpartition(".")[0]
        if target:
            found.append((target, top, line))

    def visit(node, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, False)
            elif isinstance(child, ast.If) and _type_checking(child):
                # its body never runs: neither a circle nor a layer's import
                for n in child.orelse:
                    visit(n, top)
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] in PACKAGES:
                        add(a.name, top, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod.split(".")[0] not in PACKAGES:
                    continue
                for a in child.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{mod}.{a.name}"
                    add(sub if sub in known else mod, top, child.lineno)
            else:
                visit(child, top)

    visit(tree, True)
    return found


def import_graph() -> list[tuple[str, str, bool, int]]:
    """Every import edge between the project's modules: (importer, imported, module level, line)."""
    known = project_modules()
    edges = []
    for name, (path, is_pkg) in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for target, top, line in imports(tree, name, is_pkg, known):
            if target != name:
                edges.append((name, target, top, line))
    return edges


def layer(module: str) -> int | None:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def layer_violations(edges, allowed=ALLOWED_UP) -> list[str]:
    bad = []
    for a, b, _, line in edges:
        la, lb = layer(a), layer(b)
        if a == "worldmodel":  # the package root: its own imports are the base layer's
            la = 1
        if b == "worldmodel":
            lb = 1
        if la is None or lb is None:
            continue  # unplaced modules are reported by test_every_module_has_a_layer
        if lb > la and (a, b) not in allowed:
            bad.append(f"{a}:{line} imports {b} ({LAYER_NAMES[la]} -> {LAYER_NAMES[lb]})")
    return bad


def cycles(edges) -> list[list[str]]:
    """The import circles among module-level imports: strongly connected components of more than one
    module, or a module importing itself (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b, top, _ in edges:
        if top:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


# -- the project ------------------------------------------------------------------------------


def test_every_module_has_a_layer():
    """A new top-level module or package in worldmodel/ must be given its place (here and in
    docs/architecture.md) before it can be imported."""
    unplaced = [m for m in project_modules() if m != "worldmodel" and layer(m) is None]
    assert not unplaced, f"modules without a layer: {unplaced}"


def test_no_layer_imports_a_higher_one():
    assert layer_violations(import_graph()) == []


def test_the_exceptions_are_still_needed():
    """An allowed upward import that is gone is struck from the list, so that it cannot come back
    unnoticed."""
    edges = {(a, b) for a, b, _, _ in import_graph()}
    assert [pair for pair in ALLOWED_UP if pair not in edges] == []


def test_worldmodel_and_kernels_never_import_app():
    bad = [(a, b) for a, b, _, _ in import_graph() if b.startswith("app") and not a.startswith("app")]
    bad += [(a, b) for a, b, _, _ in import_graph() if a.startswith("kernels") and b.startswith("worldmodel")]
    assert bad == []


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_command_line_loads_no_pytorch():
    """`worldmodel data ...` and --help start fast: what app/cli.py imports (at its top and while it
    builds the parser), and what those modules import when they load, with their packages, holds no
    module that imports PyTorch, pygame, Gradio or OpenCV at its top level; and in a fresh process,
    building the parser leaves them unloaded."""
    known = project_modules()
    edges = import_graph()
    top = {}
    for a, b, t, _ in edges:
        if t:
            top.setdefault(a, []).append(b)
    todo = ["app.cli"] + [b for a, b, _, _ in edges if a == "app.cli"]
    reach = set()
    while todo:
        m = todo.pop()
        if m in reach:
            continue
        reach.add(m)
        todo += top.get(m, [])
        parent = m.rpartition(".")[0]
        if parent:
            todo.append(parent)  # importing a.b runs a/__init__.py
    assert "worldmodel.data.cli" in reach and "app.play.cli" in reach
    heavy = []
    for m in sorted(reach):
        for node in ast.parse(known[m][0].read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0] in ("torch", "pygame", "gradio", "fastapi", "cv2") for n in names):
                heavy.append(f"{m}: {', '.join(names)}")
    assert heavy == []

    code = (
        "import sys; from app.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'pygame', 'gradio', 'cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the checks themselves can fail -----------------------------------------------------------


def test_a_wrong_way_import_is_found():
    edges = [
        ("worldmodel.data.format", "worldmodel.model.dit", False, 3),  # data -> model, even lazily
        ("worldmodel.model.dit", "worldmodel.data.format", True, 4),  # model -> data: fine
        ("worldmodel.runtime.session", "app.play.player", False, 5),  # worldmodel -> app
        ("worldmodel.train.all_stages", "worldmodel.eval.ladder", False, 6),  # allowed
    ]
    assert layer_violations(edges) == [
        "worldmodel.data.format:3 imports worldmodel.model.dit (base/data/games -> model)",
        "worldmodel.runtime.session:5 imports app.play.player (runtime -> app)",
    ]


def test_a_circle_is_found_and_a_lazy_import_breaks_it():
    edges = [("a", "b", True, 1), ("b", "c", True, 1), ("c", "a", True, 1), ("c", "d", True, 1)]
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles([*edges[:2], ("c", "a", False, 1), edges[3]]) == []
    assert cycles([("a", "a", True, 1)]) == [["a"]]


def test_imports_are_resolved_as_python_does():
    known = {
        "worldmodel.data",
        "worldmodel.data.format",
        "worldmodel.model.dit",
        "worldmodel.model",
        "kernels",
    }
    src = (
        "from typing import TYPE_CHECKING\n"
        "from . import format as fmt\n"
        "from ..model.dit import CausalDiT\n"
        "import kernels.reference\n"
        "if TYPE_CHECKING:\n"
        "    from worldmodel.app import Nothing\n"
        "def f():\n"
        "    from ..model import dit\n"
    )
    got = imports(ast.parse(src), "worldmodel.data.importer", False, known)
    assert got == [
        ("worldmodel.data.format", True, 2),
        ("worldmodel.model.dit", True, 3),
        ("kernels", True, 4),
        ("worldmodel.model.dit", False, 8),
    ]


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("kernels.reference", 0),
        ("worldmodel.games.overworld", 1),
        ("worldmodel.profiling.cli", 5),
        ("app", 6),
    ],
)
def test_layers_of_modules(module, expected):
    assert layer(module) == expected
