"""The training code's imports, read from the source, beyond the package-wide rules of tests/test_layers.py (no
cycles, no upward import): `sapiens2.training` (shared) imports neither `sapiens2.train` nor `sapiens2.pretrain`;
pretraining does not import fine-tuning; none of the three imports the predictor layer (`sapiens2.tasks`), the
runner or the CLI; and no module imports another inside a function except the CLIs (lazy loading).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sapiens2"
AREAS = ("train", "pretrain", "training")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(sapiens2 modules imported at module level, (line, module) of imports inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top, local = set(), []
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        names = [n for n in names if n.startswith("sapiens2.")]
        if id(node) in inner:
            local += [(node.lineno, n) for n in names]
        else:
            top.update(names)
    return top, local


def test_layers_point_one_way():
    for area in AREAS:
        for path in (PACKAGE / area).rglob("*.py"):
            top, _ = _imports(path)
            for dep in top:
                assert not dep.startswith(("sapiens2.tasks", "sapiens2.runner", "sapiens2.cli")), (path, dep)
                if area == "training":
                    assert not dep.startswith(("sapiens2.train.", "sapiens2.pretrain")), (path, dep)
                if area == "pretrain":
                    assert not dep.startswith("sapiens2.train."), (path, dep)


def test_no_imports_inside_functions_but_the_clis():
    for area in AREAS:
        for path in (PACKAGE / area).rglob("*.py"):
            _, local = _imports(path)
            if path.name == "cli.py":
                continue  # `sapiens2 --help` registers the sub-commands without loading torch
            assert not local, (path, local)
