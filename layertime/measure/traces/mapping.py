"""Name a trace's modules by a model's dotted paths (``layertime attribute --model NAME``).

The Python tracer names modules ``Class_N``; a model layertime can build (any ``--model``
name: torchvision, ``timm:``, ``hf:`` with ``--config`` overrides, ``file.py:fn``) has the
same modules under dotted paths.  The two trees are matched from the root down: each
traced module's children, in the order of their first call, are matched to the model's
children of the same class, taken in the order the model's own forward first calls them
(watched once, below), then in definition order (``ModuleList``/``ModuleDict``, which are
never called, are looked through; a module the trace never called is skipped).  So of
GPT-2's two dropouts in its attention, the one its forward calls is the one matched.
When the trace's outermost module is not the model (``DistributedDataParallel``, a
LightningModule, a wrapper of the user's) the match starts at the traced module of the
model's class; modules outside the model are no rows, as in a live run.

The model is built on the meta device (no weights) and watched through one tiny forward of
meta tensors (``kinds.py``; on the CPU when it cannot run on meta tensors), so its rows get
the kinds, parameters and names a live ``profile`` of it gives.  A traced module that no
module of the model matches (another model, another config) is an error that names it and
where it was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from layertime.errors import BadValue, LayertimeError
from layertime.kinds import KindObserver
from layertime.measure.prepare import prepare
from layertime.measure.traces.convert import TraceModule
from layertime.models import target
from layertime.modules import ModuleTable, class_name
from layertime.workload import WorkloadSpec, check_input

#: Containers that are never called: their children are matched in their place.
_TRANSPARENT = (nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True)
class ModelTable:
    """A model that names a trace's modules: its table and label; ``watched``: its kinds
    come from a watched forward (a model layertime built), else from its classes (the
    user's own module: the trace's ops decide where they can).  ``call_order``:
    ``id(module)`` -> when it was first called in the watched forward (children are
    matched in that order; without it, in definition order)."""

    table: ModuleTable
    label: str
    watched: bool = True
    call_order: dict[int, int] = field(default_factory=dict)


def model_table(workload: WorkloadSpec) -> ModelTable:
    """``workload``'s model, built on the meta device (no weights: no memory, no
    initialisation, which for a large model takes longer than reading its trace) and
    watched through one forward of meta tensors for its kinds and its modules' call order.
    A model whose build or forward cannot run on meta tensors is built on the CPU instead."""
    tgt = target(workload.model, workload.input)  # a bad name fails here, once
    try:
        with torch.device("meta"):
            net = tgt.build(workload.num_classes)
        assert isinstance(net, nn.Module)
        return _watched(net, workload.with_input(tgt.input.for_model(net)),
                        torch.device("meta"), tgt.label)
    except (LayertimeError, RuntimeError, NotImplementedError, TypeError, ValueError):
        p = prepare(workload)
        return _watched(p.model, p.workload, p.device, p.label)


def _watched(model: nn.Module, workload: WorkloadSpec, device: torch.device,
             label: str) -> ModelTable:
    """One tiny forward of ``model`` watched for kinds and call order (hooks removed after)."""
    order: dict[int, int] = {}

    def first_call(module: nn.Module, _args: object) -> None:
        order.setdefault(id(module), len(order))

    handles = []
    try:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(first_call))
        with KindObserver(model) as watched:
            check_input(model, workload, device, label)
    finally:
        for h in handles:
            h.remove()
    return ModelTable(ModuleTable(model, watched.kinds()), label, call_order=order)


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


def match_modules(modules: Sequence[TraceModule], built: ModelTable) -> dict[str, int]:
    """Trace module key -> the model's module index, for every traced module in the model
    (see the module doc); raises :class:`BadValue` when the trees do not match."""
    if not modules:
        return {}
    table, label, order = built.table, built.label, built.call_order
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
        # Called children in the order the watched forward called them, then the others.
        cands = sorted(_children(m), key=lambda c: order.get(id(c), len(order)))
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
