"""The per-layer records of a cost estimate: FLOPs and bytes per phase, memory by what it
is, each op's work, and predicted time per phase (:class:`LayerCost` gathers them).
Part of ``layertime.cost/1`` (:mod:`layertime.results.cost.estimate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The phases work is charged to, in order.
PHASES: tuple[str, ...] = ("forward", "backward_input", "backward_weight", "update")


@dataclass(frozen=True)
class PhaseCounts:
    """An integer quantity (FLOPs or bytes) for each phase of a step."""

    forward: int = 0
    backward_input: int = 0
    backward_weight: int = 0
    update: int = 0

    @property
    def backward(self) -> int:
        return self.backward_input + self.backward_weight

    @property
    def total(self) -> int:
        return self.forward + self.backward + self.update

    def __add__(self, other: PhaseCounts) -> PhaseCounts:
        return PhaseCounts(
            self.forward + other.forward,
            self.backward_input + other.backward_input,
            self.backward_weight + other.backward_weight,
            self.update + other.update,
        )

    def to_dict(self) -> dict[str, int]:
        return {p: getattr(self, p) for p in PHASES}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhaseCounts:
        return cls(**{p: int(d.get(p, 0)) for p in PHASES})


@dataclass(frozen=True)
class MemoryBytes:
    """Bytes one layer holds during a step, by what they are."""

    weights: int = 0
    grads: int = 0
    optimizer_state: int = 0
    saved_activations: int = 0
    output: int = 0

    @property
    def total(self) -> int:
        """Weights, gradients, optimizer state and saved activations (output is not added)."""
        return self.weights + self.grads + self.optimizer_state + self.saved_activations

    def __add__(self, other: MemoryBytes) -> MemoryBytes:
        return MemoryBytes(
            self.weights + other.weights,
            self.grads + other.grads,
            self.optimizer_state + other.optimizer_state,
            self.saved_activations + other.saved_activations,
            self.output + other.output,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "grads": self.grads,
            "optimizer_state": self.optimizer_state,
            "saved_activations": self.saved_activations,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryBytes:
        return cls(**{k: int(d.get(k, 0)) for k in cls().to_dict()})


@dataclass(frozen=True)
class OpWork:
    """All calls of one op in one layer and phase: FLOPs and bytes moved, summed."""

    op: str
    phase: str
    calls: int
    flops: int
    bytes_moved: int
    #: How its FLOPs were obtained: "formula" (counted), "none" (no arithmetic by
    #: nature: views, copies, allocation) or "not_counted" (no formula).
    flop_status: str = "formula"
    #: What the op is treated as for peak selection: "conv", "matmul" or "other".
    math: str = "other"
    #: The GEMM shape (M, N, K) of its call with the most FLOPs, for a matrix product or a
    #: convolution (its implicit GEMM; ``layertime.cost.count.op_shapes``); None for other ops
    #: and in files written before shapes were kept.
    gemm: tuple[int, int, int] | None = None
    #: A convolution's family of that call (``"dense 1x1 s1"``, ``"depthwise kxk strided"``;
    #: ``layertime.results.cost.shape_grid.conv_family``), whose calibrated points its rate
    #: is looked up among; None for other ops and in older files (absent from the JSON then).
    conv_family: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "op": self.op,
            "phase": self.phase,
            "calls": self.calls,
            "flops": self.flops,
            "bytes": self.bytes_moved,
            "flop_status": self.flop_status,
            "math": self.math,
            "gemm": list(self.gemm) if self.gemm is not None else None,
        }
        if self.conv_family is not None:
            d["conv_family"] = self.conv_family
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpWork:
        g = d.get("gemm")
        return cls(
            op=str(d["op"]),
            phase=str(d["phase"]),
            calls=int(d["calls"]),
            flops=int(d["flops"]),
            bytes_moved=int(d["bytes"]),
            flop_status=str(d.get("flop_status", "formula")),
            math=str(d.get("math", "other")),
            gemm=(int(g[0]), int(g[1]), int(g[2])) if g is not None else None,
            conv_family=str(d["conv_family"]) if d.get("conv_family") is not None else None,
        )


@dataclass(frozen=True)
class PhaseTimes:
    """Predicted seconds per phase of one layer (an estimate, never a measurement)."""

    forward_s: float = 0.0
    backward_s: float = 0.0
    update_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s + self.update_s

    def __add__(self, other: PhaseTimes) -> PhaseTimes:
        return PhaseTimes(
            self.forward_s + other.forward_s,
            self.backward_s + other.backward_s,
            self.update_s + other.update_s,
        )

    def to_dict(self) -> dict[str, float]:
        return {
            "forward_s": self.forward_s,
            "backward_s": self.backward_s,
            "update_s": self.update_s,
            "total_s": self.total_s,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PhaseTimes:
        return cls(float(d["forward_s"]), float(d["backward_s"]), float(d["update_s"]))


@dataclass(frozen=True)
class LayerCost:
    """The cost of one module in one training step; its *self* work, as in the profile.

    ``name`` and ``kind`` are those of :class:`layertime.results.run.LayerRow`, so the
    two join on ``name``.  A container's row holds only the ops its own
    ``forward`` runs outside its children.
    """

    name: str
    kind: str
    type: str
    params: int
    trainable_params: int
    calls: int
    flops: PhaseCounts
    bytes_moved: PhaseCounts
    memory_bytes: MemoryBytes
    ops: tuple[OpWork, ...] = ()
    predicted: PhaseTimes | None = None
    #: The layer's role and block (``layertime.roles``), as in ``LayerRow``; None in
    #: files written before roles (the row counts as ``other``).
    role: str | None = None
    block: str | None = None

    @property
    def label(self) -> str:
        return self.name or "(model)"

    @property
    def macs_forward(self) -> int:
        """Forward multiply-accumulates: counted forward FLOPs / 2."""
        return self.flops.forward // 2

    def intensity(self, phase: str) -> float | None:
        """FLOPs per byte in ``forward``, ``backward``, ``update`` or ``total`` (None: no bytes)."""
        f = getattr(self.flops, phase)
        b = getattr(self.bytes_moved, phase)
        return f / b if b else None

    @property
    def not_counted(self) -> tuple[str, ...]:
        """Ops of this layer whose arithmetic has no formula, sorted."""
        return tuple(sorted({w.op for w in self.ops if w.flop_status == "not_counted"}))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "calls": self.calls,
            "macs_forward": self.macs_forward,
            "flops": self.flops.to_dict(),
            "bytes_moved": self.bytes_moved.to_dict(),
            "arithmetic_intensity": {
                p: self.intensity(p) for p in ("forward", "backward", "update", "total")
            },
            "memory_bytes": self.memory_bytes.to_dict(),
            "not_counted": list(self.not_counted),
            "ops": [w.to_dict() for w in self.ops],
            "role": self.role,
            "block": self.block,
        }
        if self.predicted is not None:
            d["predicted"] = self.predicted.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerCost:
        pred = d.get("predicted")
        return cls(
            name=str(d["name"]),
            kind=str(d["kind"]),
            type=str(d["type"]),
            params=int(d["params"]),
            trainable_params=int(d.get("trainable_params", d["params"])),
            calls=int(d.get("calls", 0)),
            flops=PhaseCounts.from_dict(d["flops"]),
            bytes_moved=PhaseCounts.from_dict(d["bytes_moved"]),
            memory_bytes=MemoryBytes.from_dict(d["memory_bytes"]),
            ops=tuple(OpWork.from_dict(w) for w in d.get("ops", ())),
            predicted=PhaseTimes.from_dict(pred) if pred is not None else None,
            role=None if d.get("role") is None else str(d["role"]),
            block=None if d.get("block") is None else str(d["block"]),
        )
