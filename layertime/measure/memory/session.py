"""The memory step's session: the priming and the measured step in one profiler session,
and what the measured step's events say (see the package's doc)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.events import (
    BACKWARD_NODE,
    MODULE,
    OpEvent,
    from_kineto,
    from_profiler,
    kineto_readable,
)
from layertime.measure.memory.allocator import Allocation, Block, allocations, live_blocks
from layertime.measure.memory.held import Held, LayerMemory, held_tensors, layer_bytes
from layertime.measure.memory.saved import Saved, SavedRecorder
from layertime.measure.tracer import StepRange, module_ranges
from layertime.modules import ModuleTable
from layertime.results.memory import (
    AtPeak,
    LayerAtPeak,
    MemoryMark,
    MemoryPoint,
    MemorySummary,
)
from layertime.results.rows import LayerRow

#: At most this many points on the memory line of a step (each the highest of its slice).
TIMELINE_POINTS = 240
_KINETO_EVENT: Any = getattr(getattr(torch._C, "_autograd", None), "_KinetoEvent", None)


@dataclass
class _Spans:
    """Where the step's parts lie (µs on the profile's clock)."""

    start: float
    end: float
    forward: tuple[float, float] | None = None
    backward: tuple[float, float] | None = None
    rows: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: (start, end, module index, phase) of every layer charge's first-to-last span.
    layers: list[tuple[float, float, int, str]] = field(default_factory=list)


def _spans(step: OpEvent, members: Sequence[OpEvent], charges: StepCharges) -> _Spans:
    s = _Spans(step.start_us, step.end_us)
    bwd = [e for e in members if e.name.startswith(BACKWARD_NODE)]
    if bwd:
        s.backward = (min(e.start_us for e in bwd), max(e.end_us for e in bwd))
    cut = s.backward[0] if s.backward else step.end_us
    fwd = [e for e in members if e.name.startswith(MODULE) and e.start_us < cut]
    if fwd:
        s.forward = (min(e.start_us for e in fwd), max(e.end_us for e in fwd))
    for owner, (a, b) in charges.spans.items():
        a_us, b_us = step.start_us + a * 1e6, step.start_us + b * 1e6
        if owner[0] == "module":
            s.layers.append((a_us, b_us, int(owner[1]), str(owner[2])))
        elif owner[0] == "step":
            s.rows[str(owner[1])] = (a_us, b_us)
    return s


def _running(spans: _Spans, t: float) -> tuple[int | None, str]:
    """The layer running at ``t`` (the shortest layer span around it) and its phase, or
    a step row's name; (None, "") between everything."""
    best: tuple[float, int, str] | None = None
    for a, b, idx, phase in spans.layers:
        if a <= t <= b and (best is None or b - a < best[0]):
            best = (b - a, idx, phase)
    if best is not None:
        return best[1], best[2]
    for row, (a, b) in spans.rows.items():
        if a <= t <= b and row != "unattributed":
            return None, row
    return None, ""


def _when(spans: _Spans, t: float) -> tuple[str, str]:
    """(phase, when) of a moment: see :class:`MemorySummary`."""
    for row, label in (("update", "optimizer step"), ("zero_grad", "zero_grad"),
                       ("loss", "end of forward")):
        span = spans.rows.get(row)
        if span is not None and span[0] <= t <= span[1]:
            return row, label
    if spans.backward is not None and spans.backward[0] <= t <= spans.backward[1]:
        a, b = spans.backward
        return "backward", "early backward" if t <= a + (b - a) / 3 else "backward"
    if spans.forward is not None and spans.forward[0] <= t <= spans.forward[1]:
        a, b = spans.forward
        return "forward", "end of forward" if t >= a + 0.9 * (b - a) else "forward"
    if spans.forward is not None and spans.backward is not None and \
            spans.forward[1] < t < spans.backward[0]:
        return "loss", "end of forward"
    return "other", "other"


def _producers(members: Sequence[OpEvent], cut_us: float) -> list[tuple[float, float, int]]:
    """Forward module ranges (start, end, index), by start."""
    out = [(e.start_us, e.end_us, int(e.name[len(MODULE):])) for e in members
           if e.name.startswith(MODULE) and e.start_us < cut_us]
    out.sort()
    return out


def _innermost(ranges: Sequence[tuple[float, float, int]], t: float) -> int | None:
    """The module whose range, of those around ``t``, started last."""
    found = None
    for a, b, idx in ranges:
        if a > t:
            break
        if a <= t <= b:
            found = idx
    return found


# -- the session ------------------------------------------------------------------
@dataclass(frozen=True)
class SavedStorage:
    """One storage the measured step saved for backward: its address and bytes, the
    modules that saved it (None: outside any module, the loss), the module whose op
    allocated it (None: allocated before the step, or outside any module), and the one it
    is charged to."""

    ptr: int
    nbytes: int
    savers: tuple[int | None, ...]
    producer: int | None
    owner: int | None
    checkpoint: bool = False


@dataclass(frozen=True)
class MemoryMeasurement:
    """What the memory step measured: per layer (by table index) and for the step, and
    every saved storage (for comparisons that charge them another way)."""

    layers: dict[int, LayerMemory]
    summary: MemorySummary | None
    storages: tuple[SavedStorage, ...] = ()


class MemorySession:
    """The memory step: ``start()`` before a priming step, ``begin_step()`` and
    ``end_step()`` around the measured step, then ``stop()`` (or ``abort()``)."""

    def __init__(self, model: nn.Module, table: ModuleTable, device: torch.device,
                 optimizer: Any = None, inputs: Sequence[torch.Tensor] = ()) -> None:
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the library never prints
        self._model = model
        self._table = table
        self._device = device
        self._optimizer = optimizer
        self._inputs = tuple(inputs)
        self._prof = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True,
            record_shapes=False, with_stack=False,
        )
        self._ranges = ExitStack()
        self._step = StepRange()
        self._recorder = SavedRecorder(table)
        self._held_start: list[Held] = []
        self._held_end: list[Held] = []
        self._layers: dict[int, LayerMemory] = {}
        self._cuda_peak: int | None = None
        self._cuda_reserved: int | None = None
        self._t0 = 0.0
        self._wall = 0.0
        self._running = False

    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def start(self) -> None:
        self._ranges.enter_context(module_ranges(self._table))
        try:
            self._prof.__enter__()
        except BaseException:
            self._ranges.close()
            raise
        self._running = True

    def begin_step(self) -> None:
        self._held_start = held_tensors(self._model, self._table, self._optimizer, self._inputs)
        self._sync()
        if self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)
        self._t0 = time.perf_counter()
        self._step.enter()
        self._recorder.install(self._model)

    def end_step(self) -> None:
        try:
            self._recorder.remove()
        finally:
            self._sync()
            self._step.exit()
        self._wall = time.perf_counter() - self._t0
        if self._device.type == "cuda":
            self._cuda_peak = int(torch.cuda.max_memory_allocated(self._device))
            self._cuda_reserved = int(torch.cuda.max_memory_reserved(self._device))
        self._held_end = held_tensors(self._model, self._table, self._optimizer, self._inputs)
        self._layers = layer_bytes(self._model, self._table, self._optimizer)

    def abort(self) -> None:
        """Stop without measuring (an error mid-step): every hook removed."""
        try:
            self._recorder.remove()
            self._step.exit()
            if self._running:
                self._running = False
                self._prof.__exit__(None, None, None)
        finally:
            self._ranges.close()

    def stop(self) -> MemoryMeasurement:
        try:
            self._running = False
            self._prof.__exit__(None, None, None)
        finally:
            self._ranges.close()
        results = getattr(getattr(self._prof, "profiler", None), "kineto_results", None)
        if kineto_readable(results, _KINETO_EVENT):
            events = from_kineto(results)
        else:
            events = from_profiler(self._prof.events())
        groups = split_steps(events)
        allocs = allocations(results, self._device) if results is not None else None
        if len(groups) != 1:
            return MemoryMeasurement(self._charged({}), None)
        step, members = groups[0]
        return self._measure(step, members, allocs)

    # -- the measured step's numbers -------------------------------------------
    def _charged(self, owner_of: dict[int, int | None]) -> dict[int, LayerMemory]:
        """The layers' memory with each saved storage charged to its owner (by address;
        see the module doc)."""
        saved: dict[int, int] = {}
        ckpt: set[int] = set()
        for rec in self._recorder.saved.values():
            owner = owner_of.get(rec.ptr, _owner(rec, None))
            if owner is None:
                continue
            saved[owner] = saved.get(owner, 0) + rec.nbytes
            if rec.checkpoint:
                ckpt.add(owner)
        out = dict(self._layers)
        for idx, nbytes in saved.items():
            out[idx] = replace(out.get(idx, LayerMemory()), saved_bytes=nbytes,
                               checkpoint=idx in ckpt)
        return out

    def _measure(self, step: OpEvent, members: Sequence[OpEvent],
                 allocs: list[Allocation] | None) -> MemoryMeasurement:
        if allocs is None:
            return MemoryMeasurement(self._charged({}), None)
        charges = attribute_step(step, members)
        spans = _spans(step, members, charges)
        names = {e.index: e.name for e in self._table}
        cut = spans.backward[0] if spans.backward else step.end_us
        blocks, curve = live_blocks(allocs, step.start_us, step.end_us, self._held_start)
        # The block each saved storage lives in: the one at its address alive when the
        # backward begins (every saved storage is), and the layer that allocated it.
        ranges = _producers(members, cut)
        at_cut = {b.ptr: b for b in blocks if b.start_us <= cut < b.end_us}
        owner_of: dict[int, int | None] = {}
        storages = []
        for rec in self._recorder.saved.values():
            b = at_cut.get(rec.ptr)
            producer = (_innermost(ranges, b.start_us)
                        if b is not None and b.start_us >= step.start_us else None)
            owner_of[rec.ptr] = _owner(rec, producer)
            storages.append(SavedStorage(rec.ptr, rec.nbytes, tuple(rec.savers), producer,
                                         owner_of[rec.ptr], rec.checkpoint))
        layers = self._charged(owner_of)
        cuda = self._device.type == "cuda"
        notes: tuple[str, ...] = ()
        blind = False
        if cuda:
            dev = [a for a in allocs if step.start_us <= a.t_us <= step.end_us]
            if dev:
                curve = [(step.start_us, dev[0].total - dev[0].delta)] + \
                    [(a.t_us, a.total) for a in dev]
            else:
                blind = True
                notes = ("the CUDA allocator reported no events to the profiler: the peak is "
                         "torch.cuda.max_memory_allocated, but when it fell and what was live "
                         "then beyond parameters and optimizer state is not known",)
        peak_t, peak_curve = max(curve, key=lambda p: p[1])
        peak = self._cuda_peak if cuda and self._cuda_peak is not None else peak_curve
        graph_end = spans.backward[1] if spans.backward else step.end_us
        at_peak = self._at_peak(blocks, peak_t, peak, (cut, graph_end), names, owner_of)
        phase, when = _when(spans, peak_t)
        running, _ = _running(spans, peak_t)
        if blind:
            # Only what lives through the whole step is known to be live at the peak.
            at_peak = AtPeak(at_peak.parameters_bytes, 0, at_peak.optimizer_state_bytes, 0,
                             max(0, peak - at_peak.parameters_bytes
                                 - at_peak.optimizer_state_bytes))
            phase, when, running = "other", "unknown", None
        fwd_end = next((v for t, v in reversed(curve) if t <= cut), curve[0][1])
        saved_total = sum(r.nbytes for r in self._recorder.saved.values())
        in_layers = sum(m.saved_bytes for m in layers.values())
        summary = MemorySummary(
            method="cuda-allocator" if cuda else "cpu-allocator",
            peak_bytes=int(peak),
            peak_at_s=(peak_t - step.start_us) * 1e-6,
            peak_phase=phase,
            peak_when=when,
            peak_layer=names.get(running) if running is not None else None,
            at_peak=at_peak,
            base_bytes=int(curve[0][1]),
            forward_end_bytes=int(fwd_end),
            saved_bytes=saved_total,
            loss_saved_bytes=saved_total - in_layers,
            step_s=self._wall,
            timeline=() if blind else _timeline(curve, spans, names, step),
            marks=() if blind else _marks(spans, peak_t, step),
            reserved_peak_bytes=self._cuda_reserved if cuda else None,
            notes=notes,
        )
        return MemoryMeasurement(layers, summary, tuple(storages))

    def _at_peak(self, blocks: Sequence[Block], t: float, peak: int,
                 graph: tuple[float, float], names: dict[int, str],
                 owner_of: dict[int, int | None]) -> AtPeak:
        """The blocks live at ``t``, by category and layer (``other``: the rest of
        ``peak``).  A tensor named at the step's start is matched to the block live
        then, one named at its end to the block still live then, a saved storage to the
        block live when the backward began, as saved until the backward ends (autograd
        lets go of it then; a block that lives on, such as the batch, is other)."""
        cut, graph_end = graph
        start_kind = {h.ptr: (h.category, h.index) for h in self._held_start}
        end_kind = {h.ptr: (h.category, h.index) for h in self._held_end}
        named = ("parameters", "gradients", "optimizer_state")
        cats = {"saved": 0, "parameters": 0, "gradients": 0, "optimizer_state": 0}
        per: dict[int, list[int]] = {}
        for b in blocks:
            if not b.start_us <= t < b.end_us:
                continue
            what: tuple[str, int | None] | None = None
            if b.start_us < 0 and start_kind.get(b.ptr, ("",))[0] in named:
                what = start_kind[b.ptr]
            elif b.end_us == float("inf") and end_kind.get(b.ptr, ("",))[0] in named:
                what = end_kind[b.ptr]
            elif b.ptr in owner_of and b.start_us <= cut < b.end_us and t <= graph_end:
                what = ("saved", owner_of[b.ptr])
            if what is None:
                continue
            cat, idx = what
            cats[cat] += b.nbytes
            if idx is not None:
                per.setdefault(idx, [0, 0, 0, 0])[list(cats).index(cat)] += b.nbytes
        known = sum(cats.values())
        layers = tuple(LayerAtPeak(names.get(i, str(i)), *v) for i, v in sorted(per.items()))
        return AtPeak(cats["parameters"], cats["gradients"], cats["optimizer_state"],
                      cats["saved"], max(0, peak - known), layers)


def _owner(rec: Saved, producer: int | None) -> int | None:
    """Who a saved storage is charged to: a checkpoint's kept input to the module it
    checkpoints; a storage saved by several layers to its producer, when a layer
    allocated it; otherwise to its (first) saver."""
    if rec.checkpoint:
        return rec.savers[0]
    if len(rec.savers) > 1 and producer is not None:
        return producer
    return rec.savers[0]


def _timeline(curve: Sequence[tuple[float, int]], spans: _Spans,
          names: dict[int, str], step: OpEvent) -> tuple[MemoryPoint, ...]:
    """At most :data:`TIMELINE_POINTS` points: the highest of each slice of the step."""
    dur = max(step.end_us - step.start_us, 1e-9)
    best: dict[int, tuple[float, int]] = {}
    for t, v in curve:
        k = min(TIMELINE_POINTS - 1, int((t - step.start_us) / dur * TIMELINE_POINTS))
        if k not in best or v > best[k][1]:
            best[k] = (t, v)
    last = curve[-1]
    best.setdefault(TIMELINE_POINTS, (max(last[0], step.end_us), last[1]))
    out = []
    for _, (t, v) in sorted(best.items()):
        idx, phase = _running(spans, t)
        out.append(MemoryPoint((t - step.start_us) * 1e-6, int(v), phase,
                               names.get(idx) if idx is not None else None))
    return tuple(out)


def _marks(spans: _Spans, peak_t: float, step: OpEvent) -> tuple[MemoryMark, ...]:
    marks = []
    if spans.forward is not None:
        marks.append(MemoryMark("forward end", spans.forward[1]))
    if spans.backward is not None:
        marks.append(MemoryMark("backward end", spans.backward[1]))
    if "update" in spans.rows:
        marks.append(MemoryMark("optimizer step", spans.rows["update"][0]))
    marks.append(MemoryMark("peak", peak_t))
    return tuple(MemoryMark(m.label, (m.t_s - step.start_us) * 1e-6) for m in marks)


def with_memory(layers: Iterable[LayerRow], table: ModuleTable,
                measured: MemoryMeasurement) -> tuple[LayerRow, ...]:
    """The rows with their memory filled in from the memory step (by module index)."""
    by_name = {e.name: e.index for e in table}
    out = []
    for r in layers:
        m = measured.layers.get(by_name.get(r.name, -1))
        if m is None:
            out.append(r)
            continue
        out.append(replace(r, saved_bytes=m.saved_bytes, params_bytes=m.params_bytes,
                           grads_bytes=m.grads_bytes,
                           optimizer_state_bytes=m.optimizer_state_bytes,
                           checkpointed=r.checkpointed or m.checkpoint))
    return tuple(out)


def run_memory_step(session: MemorySession, prime: Any, measured: Any) -> MemoryMeasurement:
    """Run the priming and the measured step (callables) in ``session``: hooks and the
    profiler are gone afterwards, whatever happens."""
    session.start()
    try:
        prime()
        session.begin_step()
        try:
            measured()
        finally:
            session.end_step()
    except BaseException:
        session.abort()
        raise
    return session.stop()
