"""The data-parallel what-if (``layertime cost --workers``): predicted gradient
all-reduce per bucket and layer for N workers, beside measured values.

:mod:`layertime.cost.comm` makes it (the ring model and DDP's buckets are
documented there); renderers and ``--comm-json`` read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from layertime.errors import LayertimeError

#: A link latency to assume when none is given, per message (typical of RDMA networks).
DEFAULT_LATENCY_US = 5.0


@dataclass(frozen=True)
class Link:
    """A network link: bandwidth in Gbit/s (10^9 bits), latency per message in microseconds."""

    bandwidth_gbps: float
    latency_us: float = DEFAULT_LATENCY_US
    source: str = "given"

    def __post_init__(self) -> None:
        if not (self.bandwidth_gbps > 0 and math.isfinite(self.bandwidth_gbps)):
            raise LayertimeError(f"link bandwidth must be > 0 Gbit/s, not {self.bandwidth_gbps}")
        if not (self.latency_us >= 0 and math.isfinite(self.latency_us)):
            raise LayertimeError(f"link latency must be >= 0 µs, not {self.latency_us}")

    @property
    def bytes_per_s(self) -> float:
        return self.bandwidth_gbps * 1e9 / 8


@dataclass(frozen=True)
class Bucket:
    """One gradient bucket: layer name -> bytes of its gradients in it, in ready order."""

    index: int
    layers: Mapping[str, int]

    @property
    def bytes(self) -> int:
        return sum(self.layers.values())


@dataclass(frozen=True)
class LayerComm:
    name: str
    kind: str
    grad_bytes: int
    #: Buckets holding its gradients.
    buckets: tuple[int, ...]
    predicted_s: float
    measured_s: float | None = None
    measured_exposed_s: float | None = None


@dataclass(frozen=True)
class KindComm:
    kind: str
    grad_bytes: int
    predicted_s: float
    predicted_share: float
    measured_s: float | None
    measured_share: float | None


@dataclass(frozen=True)
class CommPrediction:
    """Predicted all-reduce per bucket and layer for N workers, beside measured values."""

    model: str
    workers: int
    link: Link
    buckets: tuple[Bucket, ...]
    #: Predicted seconds per bucket, same order.
    bucket_s: tuple[float, ...]
    #: Measured all-reduce wall time per bucket (launch to completion), when measured.
    measured_bucket_s: tuple[float, ...] | None
    #: Where the buckets come from: "measured (DDP)" or "DDP's rule".
    bucket_source: str
    layers: tuple[LayerComm, ...]
    #: Predicted step: compute plus exposed communication; None without compute times.
    compute_s: float | None = None
    exposed_s: float | None = None
    #: Where compute times come from ("measured run", "roofline: <device>").
    compute_source: str | None = None
    measured_step_s: float | None = None
    measured_world_size: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def comm_s(self) -> float:
        return sum(self.bucket_s)

    @property
    def grad_bytes(self) -> int:
        return sum(b.bytes for b in self.buckets)

    @property
    def step_s(self) -> float | None:
        if self.compute_s is None or self.exposed_s is None:
            return None
        return self.compute_s + self.exposed_s

    @property
    def measured_comm_s(self) -> float | None:
        vals = [r.measured_s for r in self.layers if r.measured_s is not None]
        return sum(vals) if vals else None

    def by_kind(self) -> dict[str, KindComm]:
        total_p = self.comm_s or 1.0
        total_m = self.measured_comm_s
        groups: dict[str, list[LayerComm]] = {}
        for r in self.layers:
            groups.setdefault(r.kind, []).append(r)
        out = {}
        for k, rows in groups.items():
            predicted = sum(r.predicted_s for r in rows)
            measured_rows = [r.measured_s for r in rows if r.measured_s is not None]
            measured = sum(measured_rows) if measured_rows else None
            out[k] = KindComm(
                kind=k,
                grad_bytes=sum(r.grad_bytes for r in rows),
                predicted_s=predicted,
                predicted_share=predicted / total_p,
                measured_s=measured,
                measured_share=measured / total_m if measured is not None and total_m else None,
            )
        return out

    def headline(self) -> str:
        kinds = self.by_kind()
        split = ", ".join(
            f"{kinds[k].predicted_share:.0%} {'fully connected' if k == 'linear' else k}"
            for k in ("conv", "linear")
            if k in kinds
        )
        step = (
            f"; step {self.step_s * 1e3:,.1f} ms ({self.exposed_s * 1e3:,.1f} ms exposed)"
            if self.step_s is not None and self.exposed_s is not None
            else ""
        )
        return (
            f"{self.model} on {self.workers} workers at {self.link.bandwidth_gbps:g} Gbit/s: "
            f"all-reduce {self.comm_s * 1e3:,.1f} ms per step"
            f"{' (' + split + ')' if split else ''}{step}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "workers": self.workers,
            "link": {
                "bandwidth_gbps": self.link.bandwidth_gbps,
                "latency_us": self.link.latency_us,
                "source": self.link.source,
            },
            "bucket_source": self.bucket_source,
            "buckets": [
                {
                    "index": b.index,
                    "bytes": b.bytes,
                    "layers": dict(b.layers),
                    "predicted_s": s,
                    "measured_s": (
                        self.measured_bucket_s[i] if self.measured_bucket_s is not None else None
                    ),
                }
                for i, (b, s) in enumerate(zip(self.buckets, self.bucket_s))
            ],
            "layers": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "grad_bytes": r.grad_bytes,
                    "buckets": list(r.buckets),
                    "predicted_s": r.predicted_s,
                    "measured_s": r.measured_s,
                    "measured_exposed_s": r.measured_exposed_s,
                }
                for r in self.layers
            ],
            "kinds": {
                k: {
                    "grad_bytes": v.grad_bytes,
                    "predicted_s": v.predicted_s,
                    "predicted_share": v.predicted_share,
                    "measured_s": v.measured_s,
                    "measured_share": v.measured_share,
                }
                for k, v in self.by_kind().items()
            },
            "comm_s": self.comm_s,
            "measured_comm_s": self.measured_comm_s,
            "compute_s": self.compute_s,
            "exposed_s": self.exposed_s,
            "step_s": self.step_s,
            "compute_source": self.compute_source,
            "measured_step_s": self.measured_step_s,
            "measured_world_size": self.measured_world_size,
            "notes": list(self.notes),
            "headline": self.headline(),
        }
