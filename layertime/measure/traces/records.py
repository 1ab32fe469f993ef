"""The events of a trace file that attribution needs, kept small.

:func:`keep` turns one Chrome trace event (a JSON object) into a :class:`TraceEvent`, or
None for what attribution never reads: the Python tracer's calls other than module calls
(with ``with_stack=True`` they are most of the file), flow arrows, metadata, instant
events, the GPU-side mirrors of CPU ranges.  Input shapes are kept only for the few ops
that need them (gradient accumulation, collectives, the matrix multiplies a kind is
decided by, the model's first layers), so a large trace costs little memory once read.

Categories, as Kineto writes them (torch 1.x's capitalised names too): ``cpu_op`` ops,
``user_annotation`` ranges (``record_function``: ``ProfilerStep#N``,
``Optimizer.step#...``, Lightning's ``[pl][...]``), ``python_function`` calls (module
calls are named ``nn.Module: Class_N``), ``cuda_runtime``/``cuda_driver`` launches,
``kernel``/``gpu_memcpy``/``gpu_memset`` device activities (linked to their launch by
``correlation``).  The CPU backend's collectives (``gloo:*``) are kept whatever their
category.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: What an event is to attribution.
OP, RANGE, MODULE, RUNTIME, DEVICE, BACKEND = range(6)
#: The Python tracer's name of a module call: ``nn.Module: Linear_3``.
MODULE_CALL = "nn.Module: "
_CATEGORIES = {
    "cpu_op": OP, "operator": OP,
    "user_annotation": RANGE, "user annotation": RANGE,
    "cuda_runtime": RUNTIME, "cuda_driver": RUNTIME, "runtime": RUNTIME, "driver": RUNTIME,
    "hip_runtime": RUNTIME, "hip_driver": RUNTIME, "privateuse1_runtime": RUNTIME,
    "privateuse1_driver": RUNTIME, "xpu_runtime": RUNTIME, "xpu_driver": RUNTIME,
    "mtia_runtime": RUNTIME,
    "kernel": DEVICE, "gpu_memcpy": DEVICE, "gpu_memset": DEVICE, "memcpy": DEVICE,
    "memset": DEVICE, "mtia_ccp_events": DEVICE,
}
#: Ops whose input shapes are kept (the rest are dropped to save memory).
_SHAPED = re.compile(r"AccumulateGrad|c10d|record_param_comms|mm|linear|matmul|conv|embedding")


@dataclass(slots=True)
class TraceEvent:
    """One kept event: what it is, its thread (``pid``, ``tid``) and span in µs."""

    what: int
    name: str
    pid: Any
    tid: Any
    ts: float
    end: float
    #: Ops: the autograd sequence number (-1 if none) and, for a backward node, the
    #: profiler's id of the thread that ran its forward op (0 if none).
    seq: int = -1
    fwd: int = 0
    #: Launches and device activities: the correlation id that links them.
    corr: int = -1
    #: Kept ops: their inputs' shapes and types (``record_shapes=True``), and
    #: ``record_param_comms``'s element counts and dtype.
    dims: Any = None
    types: Any = None
    comms: tuple[int, int, str] | None = None
    #: Module calls named by path (Lightning's ranges): the module's class.
    cls: str | None = None


def _number(v: Any, default: float = 0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def keep(e: dict[str, Any]) -> TraceEvent | None:
    """The event as attribution needs it, or None (see the module doc)."""
    cat = e.get("cat")
    if cat == "python_function":  # most of a with_stack trace: settled first
        name = e.get("name")
        if not (isinstance(name, str) and name.startswith(MODULE_CALL)) or e.get("ph") != "X":
            return None
    if e.get("ph") != "X":
        return None
    name = e.get("name")
    if not isinstance(name, str):
        return None
    cat = str(cat or "").lower()
    if cat == "python_function":
        if not name.startswith(MODULE_CALL):
            return None
        what = MODULE
        name = name[len(MODULE_CALL):]
    elif name.startswith("gloo:"):
        what = BACKEND
    else:
        found = _CATEGORIES.get(cat)
        if found is None:
            return None
        what = found
    ts, dur = e.get("ts"), e.get("dur", 0.0)
    if type(ts) is not float:  # Kineto writes floats; anything else is checked
        ts = _number(ts, float("nan"))
        if ts != ts:  # no start: not an event on a timeline
            return None
    if type(dur) is not float:
        dur = _number(dur)
    out = TraceEvent(what, name, e.get("pid", 0), e.get("tid", 0), ts, ts + dur)
    args = e.get("args")
    if not isinstance(args, dict):
        return out
    if what == OP:
        seq = args.get("Sequence number")
        if seq is not None:
            out.seq = seq if type(seq) is int else int(_number(seq, -1))
        fwd = args.get("Fwd thread id")
        if fwd is not None:
            out.fwd = fwd if type(fwd) is int else int(_number(fwd, 0))
        if _SHAPED.search(name):
            out.dims = args.get("Input Dims")
            out.types = args.get("Input type")
            if name == "record_param_comms":
                out.comms = (int(_number(args.get("In msg nelems"))),
                             int(_number(args.get("Out msg nelems"))), str(args.get("dtype", "")))
    elif what == BACKEND:
        out.dims = args.get("Input Dims")
        out.types = args.get("Input type")
    elif what in (RUNTIME, DEVICE):
        out.corr = int(_number(args.get("correlation"), -1))
        if what == DEVICE:
            stream = args.get("stream")
            if stream is not None:
                out.tid = stream
    return out
