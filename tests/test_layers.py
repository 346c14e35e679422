"""The package's import graph, computed from the code itself: no cycles, and no layer imports a higher one.

Every `import` counts, also those inside functions (they still tie the modules together). A package's
`__init__` re-exporting its own submodules is not an edge of its submodules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import sapiens2

ROOT = Path(sapiens2.__file__).parent

#: Layer of each top-level module or package of sapiens2: an import may only go to a lower layer or stay
#: inside its own package. Equal layers of different packages may not import each other.
LAYERS = {
    "__init__": 0,  # the package's lazy facade: it imports nothing until a name is asked for
    "task_table": 0, "zoo": 0.5, "body_parts": 0, "checkpoint": 0, "data": 0, "option_types": 0,
    "safe_pickle": 1, "nn": 1, "io": 1, "keypoints": 1, "track": 1,
    "models": 2, "vis": 2, "metrics": 2, "weights": 2, "fetch": 2, "training": 2,
    "hub": 3, "detect": 3,
    "export": 3.5,  # loads what it exports through hub/detect; tasks load exported files through it
    "tasks": 4, "train": 4,
    "pretrain": 5,
    "runner": 6,
    "serve": 7,  # the HTTP server: the predictors, and the runner's option parsing and demo photo
    "curate": 7,  # data curation: decoding, the detector and a backbone's features; never the runner
    "cli": 8, "__main__": 9, "cli_reference": 9,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The sapiens2 modules `name` imports (submodules when `from package import submodule`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t.startswith("sapiens2") and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        deps = _imports(name, path, known)
        if path.name == "__init__.py":  # re-exports of its own submodules
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    return graph


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "__init__"
    return top, LAYERS[top]


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert tops - set(LAYERS) == set()


def test_no_module_imports_a_higher_layer():
    bad = []
    for module, deps in _graph().items():
        top, level = _layer(module)
        for dep in deps:
            dep_top, dep_level = _layer(dep)
            if dep_top != top and dep_level >= level:
                bad.append(f"{module} -> {dep}")
    assert bad == []


def test_the_import_graph_has_no_cycles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_layer_test_sees_function_local_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from sapiens2.tasks import pose\n")
    assert _imports("sapiens2.models.m", path, set(_modules())) == {"sapiens2.tasks.pose"}


def test_help_and_version_do_not_import_torch():
    for flag in ("--help", "--version"):
        code = ("import sys\nfrom sapiens2.cli import main\ntry:\n    main([%r])\nexcept SystemExit:\n    pass\n"
                "print('torch' in sys.modules)") % flag
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "False", flag
