"""Name a trace's modules by a model's dotted paths (``layertime attribute --model NAME``).

The Python tracer names modules ``Class_N``; a model layertime can build (any ``--model``
name: torchvision, ``timm:``, ``hf:`` with ``--config`` overrides, ``file.py:fn``) has the
same modules under dotted paths.  The two trees are matched from the root down: each
traced module's calls, in the order of their first call, are matched to the model's
children of the same class, taken in definition order (``ModuleList``/``ModuleDict``,
which are never called, are looked through; a module the trace never called is skipped).
When the trace's outermost module is not the model (``DistributedDataParallel``, a
LightningModule, a wrapper of the user's) the match starts at the traced module of the
model's class, and modules outside the model keep their trace names.

The model is built on the CPU and watched through one tiny forward (``kinds.py``), so its
rows get the kinds, parameters and names a live ``profile`` of it gives.  A traced module
that no module of the model matches (another model, another config) is an error that
names it and where it was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from layertime.errors import BadValue
from layertime.kinds import KindObserver
from layertime.measure.prepare import prepare
from layertime.measure.traces.convert import TraceModule
from layertime.modules import ModuleTable, class_name
from layertime.workload import WorkloadSpec, check_input

#: Containers that are never called: their children are matched in their place.
_TRANSPARENT = (nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class ModelTable:
    """A model that names a trace's modules: its table and label; ``watched``: its kinds
    come from a watched forward (a model layertime built), else from its classes (the
    user's own module: the trace's ops decide where they can)."""

    table: ModuleTable
    label: str
    watched: bool = True


def model_table(workload: WorkloadSpec) -> ModelTable:
    """Build ``workload``'s model on the CPU and watch one tiny forward for its kinds."""
    p = prepare(workload)
    with KindObserver(p.model) as watched:
        check_input(p.model, p.workload, p.device, p.label)
    return ModelTable(ModuleTable(p.model, watched.kinds()), p.label)


def module_table(model: nn.Module, label: str | None = None) -> ModelTable:
    """The user's own module (``trace_handler(model=...)``): its table, nothing run."""
    return ModelTable(ModuleTable(model), label or class_name(model), watched=False)


def _children(module: nn.Module) -> list[nn.Module]:
    """A module's children as calls see them: ModuleList/ModuleDict looked through."""
    out: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, _TRANSPARENT):
            out.extend(_children(child))
        else:
            out.append(child)
    return out


def match_modules(modules: Sequence[TraceModule], table: ModuleTable, label: str) -> dict[str, int]:
    """Trace module key -> the model's module index, for every traced module in the model
    (see the module doc); raises :class:`BadValue` when the trees do not match."""
    if not modules:
        return {}
    index = {id(e.module): e.index for e in table}
    names = {e.index: e.name for e in table}
    model = table.entries[0].module
    children: dict[str | None, list[TraceModule]] = {}
    for m in modules:
        children.setdefault(m.parent, []).append(m)
    cls = type(model).__name__
    start = next((m for m in _breadth_first(modules, children) if m.cls == cls), None)
    target: nn.Module = model
    if start is None:
        root = modules[0]
        found = [e.module for e in table if type(e.module).__name__ == root.cls]
        if len(found) != 1:
            raise BadValue(
                f"cannot map the trace's modules onto {label}: the trace's model is "
                f"{root.cls} ({root.key}) and {label} is {cls}; neither holds the other "
                "(give the --model the trace recorded, with its --config)")
        start, target = root, found[0]
    out: dict[str, int] = {}

    def walk(t: TraceModule, m: nn.Module) -> None:
        out[t.key] = index[id(m)]
        cands = _children(m)
        used: set[int] = set()
        pos = 0
        for tc in children.get(t.key, []):
            j = next((k for k in range(pos, len(cands))
                      if k not in used and type(cands[k]).__name__ == tc.cls), None)
            if j is None:  # called out of definition order
                j = next((k for k in range(len(cands))
                          if k not in used and type(cands[k]).__name__ == tc.cls), None)
            if j is None:
                have = sum(type(c).__name__ == tc.cls for c in cands)
                where = names[index[id(m)]] or "the model's root"
                raise BadValue(
                    f"cannot map the trace's modules onto {label}: {tc.key} (called from "
                    f"{t.key}) has no {tc.cls} left under {where} ({label} has {have} there); "
                    "was the trace recorded with another model or config?")
            used.add(j)
            pos = j + 1
            walk(tc, cands[j])

    walk(start, target)
    return out


def _breadth_first(modules: Sequence[TraceModule],
                   children: dict[str | None, list[TraceModule]]) -> list[TraceModule]:
    out = [modules[0]]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i].key, []))
        i += 1
    return out
