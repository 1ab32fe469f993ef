"""Attribute trace files: the same :class:`~layertime.results.run.Run` as ``profile`` gives,
from steps recorded elsewhere with the stock profiler.

For each rank's files: read them (``stream.py``, ``records.py``), turn their events into
op events with module ranges (``convert.py``; Lightning's ranges by ``lightning.py``), find
the steps (:func:`~layertime.measure.attribute.split_steps`), charge each step as a live
user loop's step is charged (:func:`~layertime.measure.attribute.attribute_step` in loop
mode: work before the model's forward is ``data``, between its forward and backward
``loss``), charge its collectives (``parallel/sharded_comm.py``), and add the steps up into
rows (``aggregate.py``) over the trace's table (``table.py``, or the model's with
``--model``, ``mapping.py``).  Several ranks' runs are merged as a data-parallel run's are
(``parallel/merge.py``): rows are means over ranks, ``ranks`` each rank's step and
communication, each layer's ``rank_spread_s`` the spread of its total.

What a trace gives that a live run measures otherwise:

* **No unprofiled step.**  Every step in a trace was profiled, so ``step_samples_s`` is
  empty and there is no overhead ratio; the rows add up to the trace's steps.
* **The update** is split across layers by parameter elements when their sizes are known
  (``--model``, or ``record_shapes=True``: each parameter's gradient shape as it is
  accumulated), else it is one ``update`` step row (``Phases.update_step_s``), said so.
* **CUDA**: rows are each layer's kernel time (kernels linked to ops by correlation id);
  ``unattributed`` is the step's wall time (its CPU range, or the last of its kernels
  when they end later) less that: the GPU's idle time in the traced step, where a live run
  takes it from an unprofiled step.
* **Data-parallel (DDP)**: the live run's comm hook is not in a file.  Each bucket's
  all-reduce is charged to the layer whose backward launched it (the bucket's last
  gradient), its training-thread time exposed, the backend's time beside compute hidden
  (gloo's worker-thread events); DDP's own bucket copies and its wait for the last bucket
  after backward (on the training thread, in no range) stay ``unattributed``.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from layertime.errors import BadValue
from layertime.measure.aggregate import aggregate, collective_rows, timeline
from layertime.measure.attribute import Owner, StepCharges, attribute_step, split_steps
from layertime.measure.events import DDP_REDUCER, busy_us
from layertime.measure.parallel.merge import merge_ranks
from layertime.measure.parallel.sharded_comm import charge_collectives
from layertime.measure.traces import lightning
from layertime.measure.traces.convert import Converted, convert, parse
from layertime.measure.traces.facts import environment, input_facts, recorded
from layertime.measure.traces.mapping import ModelTable, match_modules, model_table, module_table
from layertime.measure.traces.records import TraceEvent, keep
from layertime.measure.traces.sources import RankFiles, group_ranks, trace_files
from layertime.measure.traces.stream import read_trace
from layertime.measure.traces.op_kinds import kind_from_ops
from layertime.measure.traces.table import TraceEntry, TraceTable, trace_table
from layertime.results.run import Run
from layertime.results.trace import TraceSource
from layertime.models import ModelRef
from layertime.workload import WorkloadSpec
from layertime.workload.sharding import unit_of

#: How to record a trace layertime can attribute (said when modules or steps are missing).
HOW_TO_RECORD = (
    "record it with torch.profiler.profile(with_stack=True, schedule=..., "
    "on_trace_ready=tensorboard_trace_handler(DIR)) and prof.step() once per training "
    "step (add record_shapes=True to split the update by parameter sizes), or with "
    "Lightning's PyTorchProfiler (its module ranges are on by default)"
)
_ACCUMULATE = "torch::autograd::AccumulateGrad"
#: What a file gives of DDP's gradient all-reduce, where a live run has its comm hook.
DDP_NOTE = (
    "DDP from a trace: each bucket's all-reduce is charged to the layer whose backward "
    "launched it (the bucket's last gradient), not split by bytes over the bucket's layers "
    "(that needs layertime's comm hook: profile --ddp); DDP's bucket copies and its wait "
    "for the last bucket after backward are unattributed"
)


@dataclass(frozen=True)
class TraceAttribution:
    """What ``layertime attribute`` found: the run (merged over ranks when there are
    several) and each rank's own run (one entry for a single process)."""

    run: Run
    ranks: tuple[Run, ...]


def attribute(
    traces: str | Path | Sequence[str | Path],
    model: str | ModelRef | nn.Module | None = None,
    *,
    config: Sequence[str] = (),
    num_classes: int = 1000,
    seq_len: int | None = None,
    image_size: int | None = None,
) -> TraceAttribution:
    """Attribute trace files recorded with the stock profiler (files, ``.json.gz``, or
    ``tensorboard_trace_handler`` folders): ``.run`` is the same :class:`Run` as
    ``layertime.profile`` gives, merged over ranks when there are several, ``.ranks`` each
    rank's.  ``model`` (a name layertime can build, with ``config`` overrides for an
    ``hf:`` model, ``num_classes``, ``seq_len``/``image_size``; or the ``nn.Module``
    itself) names the layers by its dotted paths; without it they are the trace's
    ``Class_N`` tree.  Raises :class:`~layertime.errors.LayertimeError` on bad input."""
    paths = [traces] if isinstance(traces, (str, Path)) else list(traces)
    build: Callable[[], ModelTable] | None = None
    if isinstance(model, nn.Module):
        module = model
        build = lambda: module_table(module)  # noqa: E731
    elif model is not None:
        ref = model if isinstance(model, ModelRef) else ModelRef(str(model), tuple(config))
        spec = WorkloadSpec.create(ref, batch_size=2, device="cpu", num_classes=num_classes,
                                   seq_len=seq_len, image_size=image_size)
        build = lambda: model_table(spec)  # noqa: E731
    return attribute_traces(paths, model=build)


@dataclass
class _Rank:
    """One rank's trace, read and converted, with its steps charged."""

    files: RankFiles
    conv: Converted
    lightning: bool
    steps: list[StepCharges]
    step_names: list[str]
    trainable: dict[int, int]
    cuda: bool
    #: The model's name when no model names it: its root class (a LightningModule's).
    label: str
    #: DistributedDataParallel's reducer ran in the steps.
    ddp: bool = False
    #: Trace module key -> its row's index (the model's table's, with ``--model``).
    index: dict[str, int] = field(default_factory=dict)


def attribute_traces(
    paths: Sequence[str | Path],
    *,
    model: Callable[[], ModelTable] | None = None,
) -> TraceAttribution:
    """Attribute the trace files (or folders of them) in ``paths`` (see the module doc).

    ``model`` builds the model whose module tree names the layers (``--model``; called
    once, after the traces are read, so a bad file fails first).  Raises
    :class:`~layertime.errors.BadValue` (one line) for a
    file that is missing, truncated or garbled, or holds no module events or no steps."""
    files = trace_files(paths)
    per_file: list[tuple[dict[str, Any], list[TraceEvent]]] = []
    for f in files:
        per_file.append(read_trace(f, keep))
    groups = group_ranks(files, [m for m, _ in per_file])
    events_of = {f: ev for f, (_, ev) in zip(files, per_file)}
    del per_file
    built = model() if model is not None else None
    ranks = []
    for g in groups:
        events = [e for f in g.files for e in events_of.pop(f)]
        ranks.append(_charge_rank(g, events, built))
    runs = [_run(r, built) for r in ranks]
    if len(runs) == 1:
        return TraceAttribution(runs[0], tuple(runs))
    backend = next((g.backend for g in groups if g.backend), None)
    merged = merge_ranks(runs, backend=backend)
    files_all = tuple(str(f) for g in groups for f in g.files)
    src = runs[0].trace
    assert src is not None
    merged = replace(merged, trace=replace(src, files=files_all, rank=None))
    if not any(g.rank is not None for g in groups):
        merged = replace(merged, notes=merged.notes + (
            f"{len(runs)} traces without distributedInfo, taken as one rank each (in file "
            "name order)",))
    return TraceAttribution(merged, tuple(runs))


def _charge_rank(g: RankFiles, events: list[TraceEvent], built: ModelTable | None) -> _Rank:
    """One rank: nest its events, choose the modules that are rows (the model's, by
    ``built``'s tree when given), convert, find the steps, charge each."""
    where = ", ".join(str(f) for f in g.files[:3]) + (" ..." if len(g.files) > 3 else "")
    is_pl = lightning.is_lightning(events)
    label = ""
    if is_pl:
        label = lightning.root_class(events)
        events = lightning.rewrite(events)
    parsed = parse(events)
    del events
    if not parsed.modules:
        raise BadValue(f"{where}: the trace has no module events (nn.Module calls): it was "
                       f"recorded without with_stack=True; {HOW_TO_RECORD}")
    if built is not None:
        index = match_modules(parsed.modules, built)
        rows = [m for m in parsed.modules if m.key in index]
    else:
        rows = parsed.modules if is_pl else parsed.model_modules()
        index = {m.key: i for i, m in enumerate(rows)}
    conv = convert(parsed, rows, index)
    groups = split_steps(conv.events)
    if not groups:
        raise BadValue(f"{where}: no steps found: {_saw(conv)}; {HOW_TO_RECORD}")
    cuda = bool(conv.launches)
    ddp = any(e.name.startswith(DDP_REDUCER) for e in conv.events)
    names = [n for _, n in sorted(conv.step_names)]
    steps: list[StepCharges] = []
    trainable: dict[int, int] = {}
    for step, members in groups:
        owners: dict[int, Owner] = {}
        if cuda:
            wall, busy = _device_window(conv, step.start_us, step.end_us)
            charges = attribute_step(step, members, device_time=True, step_wall_s=wall,
                                     device_busy_s=busy, loop=True, root_module=0,
                                     owners=owners)
        else:
            charges = attribute_step(step, members, loop=True, root_module=0, owners=owners)
        steps.append(charges)
        sizes = _accumulated(conv, owners)
        if sum(sizes.values()) > sum(trainable.values()):
            trainable = sizes
    return _Rank(g, conv, is_pl, steps, names[: len(steps)] if len(names) >= len(steps)
                 else [f"step {i + 1}" for i in range(len(steps))], trainable, cuda,
                 label or parsed.modules[0].cls, ddp, index)


def _saw(conv: Converted) -> str:
    """What the trace holds, for the message when no step is found."""
    common = ", ".join(f"{n} x{c}" for n, c in conv.range_names.most_common(5))
    ranges = sum(conv.range_names.values())
    return (f"it holds {conv.ops:,} ops, {len(conv.modules)} modules and {ranges:,} ranges"
            + (f" (most common: {common})" if common else "")
            + ", but no ProfilerStep#N range (torch.profiler's prof.step()) nor Lightning's "
            "run_training_batch")


def _device_window(conv: Converted, start_us: float, end_us: float) -> tuple[float, float]:
    """A CUDA step's wall time (its CPU range, or its last kernel's end when later) and the
    device's busy time in it, in seconds, from the kernels launched in its CPU range."""
    spans = [ln.span for ln in conv.launches if start_us <= ln.launch_us <= end_us]
    if not spans:
        return (end_us - start_us) * 1e-6, 0.0
    last = max(s.end_us for s in spans)
    first = min(s.start_us for s in spans)
    busy, _ = busy_us(spans, first, last)
    return (max(end_us, last) - start_us) * 1e-6, busy * 1e-6


def _accumulated(conv: Converted, owners: dict[int, Owner]) -> dict[int, int]:
    """Module index -> elements of the gradients accumulated into its parameters in this
    step (``AccumulateGrad``'s input shapes, charged to the layer whose backward made them)."""
    out: dict[int, int] = {}
    for eid, owner in owners.items():
        if owner[0] != "module":
            continue
        shape = conv.shapes.get(eid)
        if shape is None or conv.events[eid].name != _ACCUMULATE:
            continue
        dims = shape[0]
        if not dims or not isinstance(dims[0], list):
            continue
        n = math.prod(int(d) for d in dims[0])
        out[owner[1]] = out.get(owner[1], 0) + n
    return out


def _model_entries(rank: _Rank, built: ModelTable) -> tuple[list[TraceEntry], list[str]]:
    """The model's table as rows (the kinds of a module of the user's decided by its ops in
    the trace where they can), and the layers whose parameters differ from the gradients
    the trace accumulated."""
    traced = {rank.index[m.key]: m for m in rank.conv.modules}
    parents = {m.parent for m in rank.conv.modules}
    entries = []
    mismatch: list[str] = []
    for e in built.table:
        entry = TraceEntry(e.index, e.name, e.kind, e.type, e.params, e.trainable)
        m = traced.get(e.index)
        if m is not None and not built.watched:
            kind = kind_from_ops(rank.conv.own_ops.get(e.index, {}), m.cls,
                                 leaf=m.key not in parents)
            entry = replace(entry, kind=e.kind if kind == "other" else kind)
        seen = rank.trainable.get(e.index)
        if seen and e.trainable and seen != e.trainable:
            mismatch.append(f"{e.name or '(model)'}: {seen:,} in the trace, {e.trainable:,} in "
                            f"{built.label}")
        entries.append(entry)
    return entries, mismatch


def _unit_maps(entries: Sequence[TraceEntry], steps: Sequence[StepCharges]
               ) -> tuple[dict[str, dict[int, int]], dict[str, int]]:
    """FSDP units (from their ranges' names) -> their own layers' parameter elements, and
    each unit's module, when the layers have dotted names."""
    units = sorted({str(k[1]) for c in steps for k in c.collectives if k[0] == "unit"}
                   | {str(cc.key[1]) for c in steps for cc in c.collective_calls
                      if cc.key[0] == "unit"})
    layers: dict[str, dict[int, int]] = {u: {} for u in units}
    module: dict[str, int] = {}
    for e in entries:
        if e.name in units:
            module[e.name] = e.index
        u = unit_of(e.name, units)
        if u in layers and e.trainable:
            layers[u][e.index] = e.trainable
    return layers, module


def _run(rank: _Rank, built: ModelTable | None) -> Run:
    """One rank's run."""
    conv = rank.conv
    steps = rank.steps
    notes: list[str] = []
    notes_warn: list[str] = []
    if built is not None:
        entries, mismatch = _model_entries(rank, built)
        if mismatch:
            notes_warn.append(
                f"the trace's gradients do not match {built.label}'s parameters in "
                f"{len(mismatch)} layer(s) ({'; '.join(mismatch[:2])}): was it recorded with "
                "another config or --num-classes?")
        table = TraceTable(entries)
        naming, label = "model", built.label
        placements = None
    else:
        table = trace_table(conv.modules, conv.own_ops, rank.trainable, dotted=rank.lightning)
        naming = "lightning" if rank.lightning else "class-index"
        label = rank.label
        placements = table.placements()
    units, unit_module = _unit_maps(table.entries, steps)
    if units and not any(units.values()):
        notes.append("FSDP units' collectives are charged to the model's root: the trace's "
                     "layer names are not the units' paths (give --model to share each unit's "
                     "collectives among its layers by parameter elements)")
    steps = [charge_collectives(c, units, unit_module) for c in steps]
    unsplit = not any(e.trainable for e in table) and any(c.step.get("update") for c in steps)
    layers, phases, spread, samples = aggregate(table, steps, placements=placements,
                                                unsplit_update=unsplit)
    if unsplit:
        notes.append("the optimizer's update is one step row, not split across layers: the "
                     "trace has no parameter sizes (record it with record_shapes=True, or give "
                     "--model to take them from the model)")
    if rank.ddp:
        notes.append(DDP_NOTE)
    if conv.unlinked_device_us:
        per = conv.unlinked_device_us * 1e-6 / max(1, len(steps))
        notes.append(f"{per * 1e3:.3g} ms of device activity per step was launched outside "
                     "the trace's ops (counted as unattributed)")
    meta = rank.files.meta[0] if rank.files.meta else {}
    env = environment(meta, rank.cuda)
    batch, shape, seq, dtype = input_facts(conv)
    overlap = sum(c.overlap_s for c in steps) / len(steps)
    warnings = list(notes_warn)
    if rank.cuda and overlap > 0.01 * (sum(samples) / len(samples)):
        warnings.append(f"kernels overlapped on several streams for {overlap * 1e3:.3g} ms per "
                        "step; rows are scaled to the device's busy time")
    source = TraceSource(
        files=tuple(str(f) for f in rank.files.files), steps=tuple(rank.step_names),
        naming=naming, model=built.label if built is not None else None,
        with_stack=recorded(meta, "with_stack"), record_shapes=recorded(meta, "record_shapes"),
        rank=rank.files.rank,
    )
    run = Run(
        model=label,
        device="cuda" if rank.cuda else "cpu",
        batch_size=batch,
        input_shape=shape,
        dtype=dtype,
        optimizer=(conv.optimizer or "none").lower(),
        steps=len(steps),
        warmup_steps=0,
        step_samples_s=(),
        profiled_step_samples_s=samples,
        layers=layers,
        phases=phases,
        environment=env,
        timing="cuda-kernel-time" if rank.cuda else "cpu-self-time",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        warnings=tuple(warnings),
        update_split="none" if unsplit else "parameter-elements",
        phase_spread_s=spread,
        timeline=timeline(table, steps),
        seq_len=seq,
        notes=tuple(notes),
        trace=source,
        world_size=rank.files.world_size or 1,
        backend=rank.files.backend,
    )
    if any(c.collective_charges for c in steps):
        run = replace(run, collectives=collective_rows(table, steps))
    return run
