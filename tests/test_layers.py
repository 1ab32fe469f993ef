"""The house rules of ``layertime/``: imports run down the layers only, no cycles, no
private names across modules, and mypy is clean.

The layers, lowest first (also in ``docs/architecture.md``):

1. **base** — errors, the kind taxonomy, file writing and JSON reading helpers;
2. **results** — the immutable result models (``layertime/results/``);
3. **description** — what is trained: module kinds and the module table, model
   sources (``models/``), the workload and its training step (``workload/``);
4. **collectors** — what measures or counts: ``measure/``, ``cost/``, the store and sweeps;
5. **renderers** — what shows a result: ``render/`` (they read results only);
6. **entry points** — the public API, the command line and the framework callbacks
   (``integrations/``: they run a collector, then render and store its result).

A module may import its own layer and the layers it is allowed (``ALLOWED``);
renderers sit beside collectors, not above them: they import results only.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "layertime"

#: Layer of each module, by the longest matching dotted prefix.
LAYER_OF: dict[str, str] = {
    "layertime.errors": "base",
    "layertime.taxonomy": "base",
    "layertime.files": "base",
    "layertime.records": "base",
    "layertime.results": "results",
    "layertime.kinds": "description",
    "layertime.roles": "description",
    "layertime.modules": "description",
    "layertime.models": "description",
    "layertime.workload": "description",
    "layertime.measure": "collectors",
    "layertime.cost": "collectors",
    "layertime.store": "collectors",
    "layertime.sweep": "collectors",
    "layertime.render": "renderers",
    "layertime.api": "entry",
    "layertime.integrations": "entry",  # framework callbacks: collect, then render and store
    "layertime.cli": "entry",
    "layertime.__main__": "entry",
    "layertime": "entry",  # the package itself: the public API
}
#: The layers each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "results": {"base"},
    "description": {"base", "results"},
    "collectors": {"base", "results", "description"},
    "renderers": {"base", "results"},
    "entry": {"base", "results", "description", "collectors", "renderers"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> str:
    for prefix in sorted(LAYER_OF, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYER_OF[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYER_OF")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported layertime module, names) for every import in the file, at any depth
    (an import inside a function still runs)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("layertime"):
                    yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("layertime"):
                continue
            names = [a.name for a in node.names]
            # ``from layertime.results import run`` imports the module layertime.results.run.
            subs = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in known]
            for target in subs or [node.module]:
                yield node.lineno, target, names


def test_every_module_has_a_layer() -> None:
    for name in modules():
        layer(name)


def test_imports_run_down_the_layers() -> None:
    known = set(modules())
    wrong = []
    for name, path in modules().items():
        own = layer(name)
        for line, target, _ in imports(path, known):
            theirs = layer(target)
            if theirs != own and theirs not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} module "
                             f"{name} imports {target} ({theirs})")
    assert not wrong, "imports that run up the layers:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    known = set(modules())
    graph = {name: {t for _, t, _ in imports(path, known) if t in known and t != name}
             for name, path in modules().items()}
    # A package's __init__ re-exporting its modules is not a cycle with them.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_cross_modules() -> None:
    known = set(modules())
    wrong = []
    for name, path in modules().items():
        for line, target, names in imports(path, known):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != name:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {', '.join(private)} "
                             f"from {target}")
    assert not wrong, "private names imported from another module:\n" + "\n".join(wrong)


def test_the_layering_test_catches_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: a results module that imports a renderer is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from layertime.render.table import render\n")
    (_, target, _), = imports(bad, set(modules()))
    assert layer(target) == "renderers" and "renderers" not in ALLOWED["results"]


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    """``python -m mypy layertime`` (configured in pyproject.toml) finds no error."""
    from mypy import api

    out, err, status = api.run(["--config-file", str(PACKAGE.parent / "pyproject.toml"),
                                str(PACKAGE)])
    assert status == 0, out + err


def test_the_package_and_the_command_line_import_no_torch() -> None:
    """``import layertime``, the command line's parser and the model list (the built-in
    ``hf:`` names too) load neither torch, torchvision nor transformers (``layertime
    --help`` answers at once; tests/test_cli.py runs the commands themselves)."""
    code = ("import sys, layertime\n"
            "from layertime.cli.parser import build_parser\n"
            "from layertime.models import available\n"
            "build_parser(); available()\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'transformers')\n"
            "             if m in sys.modules))\n")
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
