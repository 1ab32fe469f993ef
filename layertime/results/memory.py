"""What one training step held in memory, measured (``Run.memory``).

A step's memory is measured in a step of its own (``layertime/measure/memory/``),
never in a timed one: the bytes each layer's ops saved for backward, its
parameters, gradients and optimizer state (those are on the layer rows), the
step's peak, what was live at that moment by category and by layer, and the
live bytes over the step.  Torch-free, like the rest of the result model; JSON
in ``docs/schema.md`` (``memory``).

Counting conventions (stated once, here and in ``docs/schema.md``): bytes are
storage bytes, each storage counted once; parameters, buffers and their views
are never saved activations (they are held anyway); a storage saved by one
layer is charged to that layer, one saved by several layers to the layer whose
op allocated it (an in-place op allocates nothing: a ReLU(inplace=True)'s saved
output is its producer's), and to the first saver when no layer allocated it
(the batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from layertime.records import build, build_all, number

#: The categories of what is live at the peak, in report order, with their labels.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("parameters_bytes", "parameters"),
    ("gradients_bytes", "gradients"),
    ("optimizer_state_bytes", "optimizer state"),
    ("saved_bytes", "saved activations"),
    ("other_bytes", "other (temporaries, buffers, outputs, the batch)"),
)
#: How the peak was measured, keyed by ``MemorySummary.method``.
METHODS = {
    "cuda-allocator": (
        "CUDA caching allocator: the peak is torch.cuda.max_memory_allocated over the "
        "measured step (block sizes, rounded up to 512 bytes; reserved memory is larger), "
        "the live bytes over the step are the allocator's own total at each allocation "
        "and free"
    ),
    "cpu-allocator": (
        "CPU allocator's allocation and free events (torch.profiler's memory events, with "
        "their addresses): exact storage bytes of every tensor allocated and freed in the "
        "measured step, on top of the tensors live at its start (parameters, buffers, "
        "gradients, optimizer state, the batch, and what the step before it left); "
        "malloc's own overhead and memory outside tensors are not counted"
    ),
}


@dataclass(frozen=True)
class MemoryPoint:
    """The live bytes at one moment of the measured step (the highest in its slice of the
    step), and the layer and phase running then."""

    t_s: float
    bytes: int
    phase: str = ""
    layer: str | None = None


@dataclass(frozen=True)
class MemoryMark:
    """A moment of the measured step worth marking on its memory line: ``forward end``,
    ``backward end``, ``optimizer step``, ``peak``."""

    label: str
    t_s: float


@dataclass(frozen=True)
class LayerAtPeak:
    """What one layer held at the peak: its saved activations still live, its parameters,
    its gradients already made, its optimizer state."""

    name: str
    saved_bytes: int = 0
    params_bytes: int = 0
    grads_bytes: int = 0
    optimizer_state_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.saved_bytes + self.params_bytes + self.grads_bytes + \
            self.optimizer_state_bytes


@dataclass(frozen=True)
class AtPeak:
    """What was live at the peak, by category (they add up to the peak) and by layer."""

    parameters_bytes: int = 0
    gradients_bytes: int = 0
    optimizer_state_bytes: int = 0
    saved_bytes: int = 0
    other_bytes: int = 0
    #: Layers that held anything then, in model order.
    layers: tuple[LayerAtPeak, ...] = ()

    @property
    def total_bytes(self) -> int:
        return sum(int(getattr(self, key)) for key, _ in CATEGORIES)

    def categories(self) -> dict[str, int]:
        """Category label -> bytes, in report order."""
        return {label: int(getattr(self, key)) for key, label in CATEGORIES}


@dataclass(frozen=True)
class MemorySummary:
    """The measured step's memory: its peak, what was live then, and the line over time.

    ``method`` says how it was measured (:data:`METHODS`); ``peak_when`` says where in
    the step the peak fell: ``forward``, ``end of forward`` (the last tenth of the
    forward, or the loss), ``early backward`` (its first third), ``backward``,
    ``optimizer step``, ``zero_grad`` or ``other``; ``peak_layer`` the layer running
    then (None between layers).
    """

    method: str
    peak_bytes: int
    peak_at_s: float
    peak_phase: str
    peak_when: str
    peak_layer: str | None
    at_peak: AtPeak
    #: Live bytes at the measured step's start, and at the end of its forward (the first
    #: backward node), when every saved activation is live.
    base_bytes: int = 0
    forward_end_bytes: int = 0
    #: Every storage saved for backward in the step (the layers' ``saved_bytes`` plus
    #: ``loss_saved_bytes``: what was saved outside any layer, by the loss).
    saved_bytes: int = 0
    loss_saved_bytes: int = 0
    #: The measured step's wall time (the profiler's memory recording on).
    step_s: float = 0.0
    timeline: tuple[MemoryPoint, ...] = ()
    marks: tuple[MemoryMark, ...] = ()
    #: CUDA: the caching allocator's peak reserved bytes (what the process holds).
    reserved_peak_bytes: int | None = None
    #: Data-parallel and sharded runs: the rank this summary is of (the one with the
    #: highest peak); None for a single process.
    rank: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def method_text(self) -> str:
        return METHODS.get(self.method, self.method)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["at_peak"] = {**asdict(self.at_peak), "total_bytes": self.at_peak.total_bytes}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemorySummary:
        return build(
            cls, d,
            peak_bytes=int, peak_at_s=number, base_bytes=int, forward_end_bytes=int,
            saved_bytes=int, loss_saved_bytes=int, step_s=number,
            at_peak=lambda v: build(AtPeak, v, layers=lambda x: build_all(LayerAtPeak, x)),
            timeline=lambda v: build_all(MemoryPoint, v, t_s=number, bytes=int),
            marks=lambda v: build_all(MemoryMark, v, t_s=number),
            reserved_peak_bytes=lambda v: None if v is None else int(v),
            rank=lambda v: None if v is None else int(v),
            notes=tuple,
        )


class _MemoryRow(Protocol):
    """What a row needs for the totals below (``LayerRow`` has it)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def role(self) -> str | None: ...
    @property
    def saved_bytes(self) -> int: ...
    @property
    def params_bytes(self) -> int: ...
    @property
    def grads_bytes(self) -> int: ...
    @property
    def optimizer_state_bytes(self) -> int: ...


@dataclass(frozen=True)
class MemoryTotal:
    """The memory of a group of rows (a kind, a role): bytes and shares of the run's."""

    saved_bytes: int = 0
    saved_share: float = 0.0
    params_bytes: int = 0
    grads_bytes: int = 0
    optimizer_state_bytes: int = 0


def memory_totals(rows: Iterable[_MemoryRow], by: str = "kind") -> dict[str, MemoryTotal]:
    """Saved activations, parameter, gradient and optimizer-state bytes per kind (or per
    ``role``: a row without one is ``other``), with each group's share of the saved
    activations of all the rows."""
    rows = list(rows)
    total = sum(r.saved_bytes for r in rows)
    sums: dict[str, list[int]] = {}
    for r in rows:
        key = r.kind if by == "kind" else (r.role or "other")
        acc = sums.setdefault(key, [0, 0, 0, 0])
        for i, v in enumerate((r.saved_bytes, r.params_bytes, r.grads_bytes,
                               r.optimizer_state_bytes)):
            acc[i] += v
    return {k: MemoryTotal(v[0], v[0] / total if total else 0.0, v[1], v[2], v[3])
            for k, v in sums.items()}


def per_sample_bytes(summary: MemorySummary, batch_size: int,
                     fixed_bytes: int) -> int | None:
    """Measured bytes per sample: the peak less what does not grow with the batch
    (``fixed_bytes``: parameters, gradients, optimizer state), over the batch.  None
    when nothing is left to divide."""
    if batch_size < 1:
        return None
    per = (summary.peak_bytes - fixed_bytes) // batch_size
    return per if per > 0 else None


def mb(nbytes: float) -> float:
    """Bytes in MB (10^6 bytes: what every memory column and line shows)."""
    return nbytes / 1e6


def fmt_mb(nbytes: float | None, places: int = 1) -> str:
    """Bytes as MB (10^6) with thousands separators, or '' for None."""
    if nbytes is None:
        return ""
    return f"{mb(nbytes):,.{places}f}"


def describe_peak(summary: MemorySummary) -> str:
    """One line: the peak, when, and what held it (largest categories first)."""
    parts = sorted(summary.at_peak.categories().items(), key=lambda kv: -kv[1])
    held = ", ".join(f"{label.split(' (')[0]} {fmt_mb(b)} MB" for label, b in parts if b > 0)
    where = f" ({summary.peak_layer})" if summary.peak_layer else ""
    return (f"peak {fmt_mb(summary.peak_bytes)} MB at {summary.peak_when}{where}, "
            f"{summary.peak_at_s * 1e3:,.1f} ms into the step: {held}")


def top_layers(layers: Sequence[LayerAtPeak], n: int = 3) -> list[LayerAtPeak]:
    """The ``n`` layers that held the most at the peak."""
    return sorted(layers, key=lambda r: -r.total_bytes)[:n]


@dataclass(frozen=True)
class MemoryBeside:
    """One layer's memory measured (a run) beside the cost model's count of it: saved
    activations, parameters, gradients and optimizer state, bytes (None: the side lacks
    the layer)."""

    name: str
    kind: str
    measured_saved: int | None
    counted_saved: int | None
    measured_params: int | None = None
    counted_params: int | None = None
    measured_grads: int | None = None
    counted_grads: int | None = None
    measured_optimizer: int | None = None
    counted_optimizer: int | None = None

    @property
    def saved_ratio(self) -> float | None:
        """Counted / measured saved activations (None when either is absent or zero)."""
        if not self.measured_saved or self.counted_saved is None:
            return None
        return self.counted_saved / self.measured_saved


class _CountedRow(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def memory_bytes(self) -> Any: ...


#: Counted and measured saved activations differing by more than this are a miss of the
#: cost model (fixed, or explained in docs/cost.md).
SAVED_TOLERANCE = 0.10


def beside(layers: Sequence[_MemoryRow], counted: Sequence[_CountedRow],
           loss_saved: tuple[int | None, int | None] = (None, None)) -> list[MemoryBeside]:
    """Measured rows (``LayerRow``) beside counted ones (``LayerCost``) by name, in the
    run's order, then the counted rows it lacks, then the loss (``loss_saved``: measured,
    counted); rows with nothing on either side are left out."""
    by_name = {c.name: c for c in counted}
    out: list[MemoryBeside] = []
    seen = set()
    for r in layers:
        name = r.name
        c = by_name.get(name)
        seen.add(name)
        m = c.memory_bytes if c is not None else None
        row = MemoryBeside(
            name, r.kind, r.saved_bytes, m.saved_activations if m is not None else None,
            r.params_bytes, m.weights if m is not None else None,
            r.grads_bytes, m.grads if m is not None else None,
            r.optimizer_state_bytes, m.optimizer_state if m is not None else None)
        if row.measured_saved or row.counted_saved or row.measured_params or row.counted_params:
            out.append(row)
    for c in counted:
        if c.name in seen:
            continue
        m = c.memory_bytes
        if m.saved_activations or m.weights:
            out.append(MemoryBeside(c.name, c.kind, None, m.saved_activations, None, m.weights,
                                    None, m.grads, None, m.optimizer_state))
    if loss_saved[0] is not None or loss_saved[1] is not None:
        out.append(MemoryBeside("(loss)", "loss", loss_saved[0], loss_saved[1]))
    return out
