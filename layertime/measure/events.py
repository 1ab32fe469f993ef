"""A small, torch-free view of profiler events, and the names of our ranges.

The tracer turns ``torch.profiler`` output into :class:`OpEvent` records so
that attribution (``attribute.py``) is a pure function that tests can feed
with hand-made events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: The range around one whole training step.
STEP = "layertime::step"
#: Prefix of the range around one module call; the suffix is its table index.
MODULE = "layertime::module::"
#: Prefix of a step-level phase range: loss, zero_grad, update, backward, data.
PHASE = "layertime::phase::"
#: torch's own ranges (``torch.optim.Optimizer`` wraps these in record_function).
OPTIMIZER_STEP = "Optimizer.step#"
OPTIMIZER_ZERO_GRAD = "Optimizer.zero_grad#"
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


def from_profiler(function_events: Iterable[Any]) -> list[OpEvent]:
    """Convert ``torch.profiler.profile().events()`` into :class:`OpEvent` records.

    Only CPU-side events are kept; kernels are folded into the op that
    launched them (``self_device_time_total``).
    """
    out: list[OpEvent] = []
    for e in function_events:
        if getattr(e, "is_async", False):
            continue
        device_type = str(getattr(e, "device_type", "CPU"))
        if not device_type.endswith("CPU"):
            continue
        parent = e.cpu_parent.id if e.cpu_parent is not None else None
        out.append(
            OpEvent(
                id=int(e.id),
                name=str(e.name),
                thread=int(e.thread),
                start_us=float(e.time_range.start),
                end_us=float(e.time_range.end),
                parent=parent,
                seq=int(e.sequence_nr),
                fwd_thread=int(e.fwd_thread or 0),
                device_us=float(getattr(e, "self_device_time_total", 0.0) or 0.0),
            )
        )
    return out
