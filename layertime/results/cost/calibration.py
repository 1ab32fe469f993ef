"""What ``layertime calibrate`` measured on a device, and efficiencies fitted to a run.

A :class:`Calibration` holds measured peaks (``layertime.measure.calibrate``
measures them); an :class:`EfficiencyFit` the per-kind efficiencies that
make the roofline reproduce a measured run (``layertime.cost.fit``), each
with how it was obtained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from layertime.results.cost.shape_grid import ShapeGrid

#: What a kind's entry ends as: fitted to the measurement, capped at 1, or left at the default.
FIT_STATUSES: tuple[str, ...] = ("fitted", "capped", "default")


@dataclass(frozen=True)
class Calibration:
    """What ``layertime calibrate`` measured on one device."""

    device: str
    device_name: str
    host: str
    threads: int
    torch: str
    #: Best measured matmul rate per precision (fp32, tf32, bf16, fp16, fp64), TFLOP/s.
    matmul_tflops: Mapping[str, float]
    #: The matmul side each precision was measured at.
    matmul_sizes: Mapping[str, int]
    #: Best copy and add rates, GB/s (10^9 bytes); the profile takes the larger.
    copy_gb_per_s: float
    add_gb_per_s: float
    memory_bytes: int
    repeats: int
    created: str
    #: Device memory in GB (RAM on the CPU), when known.
    memory_gb: float | None = None
    #: Precisions not measured, with the reason.
    skipped: Mapping[str, str] = field(default_factory=dict)
    #: Times by op shape (GEMM, convolution, memory-bound by size, the fixed cost per op);
    #: None in calibrations made before the grid (added within the format).
    grid: ShapeGrid | None = None
    #: The 1-minute load average when the calibration started and ended (None: unknown).
    load_before: float | None = None
    load_after: float | None = None

    @property
    def memory_bandwidth_gb_per_s(self) -> float:
        return max(self.copy_gb_per_s, self.add_gb_per_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "host": self.host,
            "threads": self.threads,
            "torch": self.torch,
            "matmul_tflops": dict(self.matmul_tflops),
            "copy_gb_per_s": self.copy_gb_per_s,
            "add_gb_per_s": self.add_gb_per_s,
            "memory_bandwidth_gb_per_s": self.memory_bandwidth_gb_per_s,
            "matmul_sizes": dict(self.matmul_sizes),
            "memory_bytes": self.memory_bytes,
            "repeats": self.repeats,
            "created": self.created,
            "memory_gb": self.memory_gb,
            "skipped": dict(self.skipped),
            "grid": self.grid.to_dict() if self.grid is not None else None,
            "load_before": self.load_before,
            "load_after": self.load_after,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """Read back :meth:`to_dict`'s JSON; a calibration written before the grid has none."""
        grid = d.get("grid")
        mem = d.get("memory_gb")

        def opt(key: str) -> float | None:
            v = d.get(key)
            return None if v is None else float(v)

        return cls(
            device=str(d["device"]),
            device_name=str(d["device_name"]),
            host=str(d.get("host", "")),
            threads=int(d.get("threads", 0)),
            torch=str(d.get("torch", "")),
            matmul_tflops={str(k): float(v) for k, v in d["matmul_tflops"].items()},
            matmul_sizes={str(k): int(v) for k, v in d.get("matmul_sizes", {}).items()},
            copy_gb_per_s=float(d["copy_gb_per_s"]),
            add_gb_per_s=float(d["add_gb_per_s"]),
            memory_bytes=int(d.get("memory_bytes", 0)),
            repeats=int(d.get("repeats", 0)),
            created=str(d.get("created", "")),
            memory_gb=None if mem is None else float(mem),
            skipped={str(k): str(v) for k, v in d.get("skipped", {}).items()},
            grid=ShapeGrid.from_dict(grid) if grid is not None else None,
            load_before=opt("load_before"),
            load_after=opt("load_after"),
        )


@dataclass(frozen=True)
class KindFit:
    """The fit of one kind: what was measured, which efficiency, and what became of it."""

    kind: str
    #: "compute" or "memory": the efficiency of this kind the fit sets.
    target: str
    measured_s: float
    #: measured_s over the run's profiled step.
    step_share: float
    #: The efficiency before the fit (the default, or the profile's own).
    default: float
    #: The efficiency after: fitted, capped at 1, or equal to ``default``.
    efficiency: float
    #: One of FIT_STATUSES.
    status: str
    #: Why a kind kept its default or was capped ("" when fitted).
    reason: str
    #: Roofline time of the kind's ops before and after the fit.
    predicted_before_s: float
    predicted_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "measured_s": self.measured_s,
            "step_share": self.step_share,
            "default": self.default,
            "efficiency": self.efficiency,
            "status": self.status,
            "reason": self.reason,
            "predicted_before_s": self.predicted_before_s,
            "predicted_s": self.predicted_s,
        }


@dataclass(frozen=True)
class EfficiencyFit:
    """Efficiencies fitted to one measured run, per kind, with how each was obtained."""

    profile: str
    #: The run fitted to, e.g. "alexnet, batch 64, cpu, float32".
    run_label: str
    min_share: float
    kinds: tuple[KindFit, ...]

    def fitted(self, target: str) -> dict[str, float]:
        """The efficiencies the fit set (fitted or capped) for ``target`` (compute or memory)."""
        return {
            k.kind: k.efficiency
            for k in self.kinds
            if k.target == target and k.status != "default"
        }

    @property
    def source(self) -> str:
        """How the efficiencies were made, for ``Prediction.efficiency_source``."""
        done = [k.kind for k in self.kinds if k.status != "default"]
        kept = [k.kind for k in self.kinds if k.status == "default"]
        text = f"fitted to a measured run ({self.run_label}): " + (", ".join(done) or "no kind")
        if kept:
            text += f"; defaults (uncalibrated) for {', '.join(kept)} and any other kind"
        else:
            text += "; defaults (uncalibrated) for any other kind"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "run": self.run_label,
            "min_share": self.min_share,
            "source": self.source,
            "compute_efficiency": self.fitted("compute"),
            "memory_efficiency": self.fitted("memory"),
            "kinds": [k.to_dict() for k in self.kinds],
        }
