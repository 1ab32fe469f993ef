"""A small, torch-free view of profiler events, and the names of our ranges.

The tracer turns ``torch.profiler`` output into :class:`OpEvent` records so
that attribution (``attribute.py``) is a pure function that tests can feed
with hand-made events.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: The range around one whole training step.
STEP = "layertime::step"
#: Prefix of the range around one module call; the suffix is its table index.
MODULE = "layertime::module::"
#: Prefix of a step-level phase range: loss, zero_grad, update, backward, data,
#: clip, scheduler, logging (the last three from the framework integrations).
PHASE = "layertime::phase::"
#: torch's own ranges (``torch.optim.Optimizer`` wraps these in record_function).
OPTIMIZER_STEP = "Optimizer.step#"
OPTIMIZER_ZERO_GRAD = "Optimizer.zero_grad#"
#: torch's own range around one ``next()`` of a DataLoader's iterator (the fetch,
#: collation, and waiting for workers): the ``data`` row wherever it appears.
DATALOADER_NEXT = "enumerate(DataLoader)#"
#: The autograd engine's range around one backward node; it carries the
#: sequence number and forward thread of the op that created the node.
BACKWARD_NODE = "autograd::engine::evaluate_function: "
ACCUMULATE_GRAD = "AccumulateGrad"
#: Data-parallel gradient synchronisation on the training thread: our DDP comm
#: hook's range (divide and launch one bucket's all-reduce) and DDP's own
#: ranges around its gradient-bucket copies.
COMM = "layertime::comm"
DDP_REDUCER = ("torch::distributed::reducer::", "torch.distributed.ddp.reducer::")


@dataclass(frozen=True, slots=True)
class OpEvent:
    """One profiled CPU range: an aten op, an autograd node or one of our ranges.

    ``device_us`` is the GPU kernel time launched directly by this op (its
    own kernels, not its children's); zero on the CPU.
    """

    id: int
    name: str
    thread: int
    start_us: float
    end_us: float
    parent: int | None = None
    seq: int = -1
    fwd_thread: int = 0
    device_us: float = 0.0

    @property
    def duration_us(self) -> float:
        return self.end_us - self.start_us


#: Kineto activity types that are not ops: the CUDA runtime and driver calls an
#: op makes (``cudaLaunchKernel``, ...) and the profiler's own overhead.  They
#: carry CUPTI's correlation counter as their id, which overlaps op ids.
_NOT_OPS = frozenset(
    {"cuda_runtime", "cuda_driver", "overhead", "cuda_sync", "privateuse1_runtime",
     "privateuse1_driver", "xpu_runtime", "xpu_driver", "hip_runtime", "mtia_runtime"}
)
#: By name, for torch versions whose events carry no activity type.
_RUNTIME_NAME = re.compile(r"^(cuda[A-Z]|cu[A-Z]|hip[A-Z]|nccl[A-Z]|cupti|CUPTI |Activity Buffer)")


def _is_op(e: Any) -> bool:
    """Whether a CPU-side profiler event is an op or a range (not a runtime call)."""
    activity = getattr(e, "activity_type", None)
    if activity is not None:
        return str(activity).lower() not in _NOT_OPS
    if int(getattr(e, "linked_correlation_id", 0) or 0) > 0:
        return False
    return not _RUNTIME_NAME.match(str(e.name))


@dataclass(frozen=True, slots=True)
class KernelSpan:
    """One device activity (kernel, memcpy, memset) on the profiler's timeline."""

    start_us: float
    end_us: float
    stream: int


def from_profiler(function_events: Iterable[Any]) -> list[OpEvent]:
    """Convert ``torch.profiler.profile().events()`` into :class:`OpEvent` records
    (see :func:`from_profiler_indexed`)."""
    return from_profiler_indexed(function_events)[0]


def from_profiler_indexed(function_events: Iterable[Any]) -> tuple[list[OpEvent], dict[int, int]]:
    """``torch.profiler.profile().events()`` as :class:`OpEvent` records, and the
    id each kept profiler event got (keyed by ``id()`` of the profiler's event).

    Only CPU-side ops and ranges are kept; kernels are folded into the op
    that launched them (``self_device_time_total``).  Runtime and driver
    calls and profiler overhead are dropped.  Ids are made here, one per
    event, and parents are linked by object identity: profiler ids are not
    unique on CUDA (runtime events carry CUPTI's counter, and older torch
    copies an op's id onto its overhead events), so linking by id could
    count a kernel twice or make an event its own ancestor.
    """
    kept: list[Any] = []
    for e in function_events:
        if getattr(e, "is_async", False):
            continue
        device_type = str(getattr(e, "device_type", "CPU"))
        if not device_type.endswith("CPU") or not _is_op(e):
            continue
        kept.append(e)
    index = {id(e): i for i, e in enumerate(kept)}
    out: list[OpEvent] = []
    for i, e in enumerate(kept):
        # The nearest kept ancestor (a dropped runtime event is never a parent of
        # an op, but be safe).
        parent_obj = e.cpu_parent
        while parent_obj is not None and id(parent_obj) not in index:
            parent_obj = parent_obj.cpu_parent
        out.append(
            OpEvent(
                id=i,
                name=str(e.name),
                thread=int(e.thread),
                start_us=float(e.time_range.start),
                end_us=float(e.time_range.end),
                parent=index[id(parent_obj)] if parent_obj is not None else None,
                seq=int(e.sequence_nr),
                fwd_thread=int(e.fwd_thread or 0),
                device_us=_own_device_us(e),
            )
        )
    return out, index


def _own_device_us(e: Any) -> float:
    """Device time of the kernels ``e`` launched itself (not its children's).

    A range (``record_function``) can have a GPU-side mirror of the same name
    (Kineto's GPU user annotation), linked to it like a kernel; it spans the
    range's kernels, which are already charged to the ops that launched them.
    """
    if getattr(e, "kernels", None) is None:
        return float(getattr(e, "self_device_time_total", 0.0) or 0.0)
    return float(sum(us for _, us in own_kernels(e)))


def own_kernels(e: Any) -> list[tuple[str, float]]:
    """The device kernels a profiler event launched itself, as (name, µs), less a
    range's GPU-side mirror (Kineto's annotation of the same name)."""
    return [
        (str(getattr(k, "name", "")), float(getattr(k, "duration", 0.0) or 0.0))
        for k in getattr(e, "kernels", None) or ()
        if str(getattr(k, "name", "")) != str(e.name)
    ]


def device_spans(function_events: Iterable[Any]) -> list[KernelSpan]:
    """Every device-side activity (kernels, copies, memsets) of a profile.

    GPU-side mirrors of CPU ranges (annotations: same name as a CPU-side
    event, or a non-kernel activity type) are not activities of their own.
    """
    events = list(function_events)
    cpu_names = {
        str(e.name) for e in events if str(getattr(e, "device_type", "CPU")).endswith("CPU")
    }
    out = []
    for e in events:
        device_type = str(getattr(e, "device_type", "CPU"))
        if device_type.endswith("CPU") or getattr(e, "is_async", False):
            continue
        activity = str(getattr(e, "activity_type", None) or "").lower()
        if "annotation" in activity or str(e.name) in cpu_names:
            continue
        out.append(
            KernelSpan(
                float(e.time_range.start),
                float(e.time_range.end),
                int(getattr(e, "device_resource_id", 0) or 0),
            )
        )
    return out


def busy_us(spans: Iterable[KernelSpan], start_us: float, end_us: float) -> tuple[float, float]:
    """(union, sum) of the spans' time inside ``[start_us, end_us]``, in µs.

    The union is the time the device was busy; the sum exceeds it when
    kernels overlapped (several streams, communication beside compute).
    """
    parts = sorted(
        (max(s.start_us, start_us), min(s.end_us, end_us))
        for s in spans
        if s.end_us > start_us and s.start_us < end_us
    )
    union = total = 0.0
    cur_a = cur_b = None
    for a, b in parts:
        total += b - a
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                union += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None and cur_a is not None:
        union += cur_b - cur_a
    return union, total
