"""Hand-made Chrome/Kineto traces for ``layertime attribute``'s tests: events written as
torch.profiler writes them (categories, ``args`` keys, a ``traceEvents`` array), so each
test knows exactly what every row must hold."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

NODE = "autograd::engine::evaluate_function: "
#: The training thread's system id and the profiler's id of it (``Fwd thread id``).
TID = 4242
PID = 77


class TraceBuilder:
    """Events added one call each; ``write`` saves them as a trace file."""

    def __init__(self, **meta: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {"schemaVersion": 1, "with_stack": 1, "record_shapes": 1,
                                     "host_name": "tracehost", **meta}

    def x(self, cat: str, name: str, ts: float, dur: float, *, tid: Any = TID, pid: Any = PID,
          **args: Any) -> TraceBuilder:
        e: dict[str, Any] = {"ph": "X", "cat": cat, "name": name, "pid": pid, "tid": tid,
                             "ts": ts, "dur": dur}
        if args:
            e["args"] = args
        self.events.append(e)
        return self

    def module(self, name: str, ts: float, dur: float) -> TraceBuilder:
        return self.x("python_function", f"nn.Module: {name}", ts, dur,
                      **{"Python id": len(self.events), "Python parent id": 0})

    def op(self, name: str, ts: float, dur: float, seq: int | None = None, fwd: int = 0,
           dims: Any = None, types: Any = None, **extra: Any) -> TraceBuilder:
        args: dict[str, Any] = {"External id": len(self.events), **extra}
        if seq is not None:
            args["Sequence number"] = seq
            args["Fwd thread id"] = fwd
        if dims is not None:
            args["Input Dims"] = dims
            args["Input type"] = types or ["float"] * len(dims)
        return self.x("cpu_op", name, ts, dur, **args)

    def node(self, name: str, ts: float, dur: float, seq: int | None = None) -> TraceBuilder:
        """A backward node: its forward op's sequence number, the forward thread's id 1."""
        return self.op(NODE + name, ts, dur, seq=seq, fwd=1 if seq is not None else 0)

    def annotation(self, name: str, ts: float, dur: float, **kw: Any) -> TraceBuilder:
        return self.x("user_annotation", name, ts, dur, **kw)

    def python(self, name: str, ts: float, dur: float) -> TraceBuilder:
        """A Python call that is not a module (with_stack records every call)."""
        return self.x("python_function", name, ts, dur)

    def text(self) -> str:
        return json.dumps({**self.meta, "traceEvents": self.events}, indent=1)

    def write(self, path: Path, gz: bool = False) -> Path:
        if gz:
            with gzip.open(path, "wt") as f:
                f.write(self.text())
        else:
            path.write_text(self.text())
        return path


def training_step(b: TraceBuilder, n: int, t0: float, *, shapes: bool = True) -> TraceBuilder:
    """One step of ``Net_0`` (holding ``Linear_0``) and a loss, at ``t0`` µs, 100 µs long.

    What its rows must be (µs): Linear_0 forward 20, backward 15, update 10 (36 elements,
    the only parameters); the model's own forward 10, backward 4; loss 20 (its op, its
    backward node and the gaps between the forward and the backward); zero_grad 2; data 3;
    unattributed 16 (gaps inside and after backward).
    """
    s = 100 * n  # sequence numbers of this step
    acc = (lambda d: {"dims": [d]}) if shapes else (lambda d: {})
    b.annotation(f"ProfilerStep#{n}", t0, 100)
    b.annotation("Optimizer.zero_grad#SGD.zero_grad", t0 + 1, 2)
    b.module("Net_0", t0 + 5, 30)
    b.python("net.py(10): forward", t0 + 5.5, 29)
    b.module("Linear_0", t0 + 6, 20)
    b.op("aten::linear", t0 + 7, 18, seq=s, dims=[[4, 8], [4, 8], [4]])
    b.op("aten::t", t0 + 8, 1, seq=s)
    b.op("aten::addmm", t0 + 10, 14, seq=s + 1, dims=[[4], [4, 8], [8, 4]])
    b.op("aten::add", t0 + 27, 3, seq=s + 2)
    b.op("aten::mse_loss", t0 + 40, 5, seq=s + 3)
    b.node("MseLossBackward0", t0 + 50, 5, seq=s + 3)
    b.node("AddBackward0", t0 + 56, 4, seq=s + 2)
    b.node("AddmmBackward0", t0 + 61, 10, seq=s + 1)
    b.op("aten::mm", t0 + 62, 8)
    b.node("torch::autograd::AccumulateGrad", t0 + 72, 2)
    b.op("torch::autograd::AccumulateGrad", t0 + 72.5, 1, **acc([4]))
    b.node("TBackward0", t0 + 75, 2, seq=s)
    b.node("torch::autograd::AccumulateGrad", t0 + 78, 1)
    b.op("torch::autograd::AccumulateGrad", t0 + 78.2, 0.5, **acc([4, 8]))
    b.annotation("Optimizer.step#SGD.step", t0 + 85, 10)
    return b


def two_steps(shapes: bool = True, **meta: Any) -> TraceBuilder:
    b = TraceBuilder(**meta)
    training_step(b, 1, 1000.0, shapes=shapes)
    training_step(b, 2, 1200.0, shapes=shapes)
    return b
