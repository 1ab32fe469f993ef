"""A measured run joined with a cost estimate, layer by layer (schema ``layertime.prediction/1``).

Made by :func:`layertime.cost.compare.join`, which documents the shares;
``profile --predict`` stores it inside the run (``Run.prediction``).
Predicted numbers are roofline estimates, never measurements.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from layertime.records import build, check_schema, reading
from layertime.taxonomy import KIND_LABELS

SCHEMA = "layertime.prediction/1"
#: The loss row's name on both sides.
LOSS_ROW = "(loss)"


@dataclass(frozen=True)
class JoinedRow:
    """One layer (or the loss) measured and predicted; None where a side lacks it."""

    name: str
    kind: str
    type: str
    in_run: bool
    in_cost: bool
    measured_s: float | None
    measured_share: float | None
    predicted_s: float | None
    predicted_share: float | None
    params: int
    params_share: float
    flops: int | None = None
    flops_share: float | None = None
    memory_bytes: int | None = None
    memory_share: float | None = None

    @property
    def label(self) -> str:
        return self.name or "(model)"

    @property
    def error(self) -> float | None:
        """predicted / measured - 1 (None unless both sides have a positive time)."""
        return relative_error(self.predicted_s, self.measured_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JoinedRow:
        return build(cls, d)


@dataclass(frozen=True)
class JoinedKind:
    """All rows of one kind, summed on each side, with shares."""

    kind: str
    rows: int
    measured_s: float
    measured_share: float
    predicted_s: float | None
    predicted_share: float | None
    params: int
    params_share: float
    flops: int
    flops_share: float
    memory_bytes: int
    memory_share: float

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def error(self) -> float | None:
        return relative_error(self.predicted_s, self.measured_s)

    @property
    def share_points(self) -> float | None:
        """Predicted share minus measured share, in percentage points."""
        if self.predicted_share is None:
            return None
        return 100.0 * (self.predicted_share - self.measured_share)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JoinedKind:
        return build(cls, d)


@dataclass(frozen=True)
class Comparison:
    """A run joined with a cost estimate (with or without a device prediction)."""

    model: str
    batch_size: int
    measured_device: str
    measured_device_name: str
    rows: tuple[JoinedRow, ...]
    kinds: tuple[JoinedKind, ...]
    measured_total_s: float
    #: The roofline's total over the rows (None: the cost has no prediction).
    predicted_total_s: float | None
    #: Measured but not predicted: zero_grad, data, unattributed (seconds per step).
    not_modelled_s: Mapping[str, float]
    profiled_step_s: float
    #: The device profile predicted for (None: counts only).
    predicted_device: str | None = None
    predicted_device_name: str | None = None
    efficiency_source: str | None = None
    #: True when the prediction is for the device that measured (its profile has the
    #: same device name, as ``layertime calibrate`` writes it): errors are then meaningful.
    same_device: bool = False
    warnings: tuple[str, ...] = ()
    label: str = field(default="estimate")
    #: The cost model's kernel choices for ops with several kernels, one line each
    #: (``CostResult.kernel_lines``: ``attention: math path (dropout 0.1 on cpu)``).
    kernel_choices: tuple[str, ...] = ()

    @property
    def predicted(self) -> bool:
        return self.predicted_total_s is not None

    @property
    def only_in_run(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.rows if r.in_run and not r.in_cost)

    @property
    def only_in_cost(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.rows if r.in_cost and not r.in_run)

    def kind(self, kind: str) -> JoinedKind | None:
        return next((k for k in self.kinds if k.kind == kind), None)

    def layer_errors(self, min_share: float = 0.0) -> list[tuple[str, float]]:
        """(layer, |predicted / measured - 1|) for rows measured above ``min_share``."""
        out = []
        for r in self.rows:
            err = r.error
            if err is not None and (r.measured_share or 0.0) > min_share:
                out.append((r.label, abs(err)))
        return out

    def median_layer_error(self, min_share: float = 0.0) -> float | None:
        errs = [e for _, e in self.layer_errors(min_share)]
        return statistics.median(errs) if errs else None

    @property
    def step_ratio(self) -> float | None:
        """Predicted over measured time of the modelled rows (layers and the loss): the
        step's prediction, x1.00 when exact; None without a prediction."""
        if self.predicted_total_s is None or not self.measured_total_s > 0:
            return None
        return self.predicted_total_s / self.measured_total_s

    def worst_kind(self, min_share: float = 0.0) -> JoinedKind | None:
        """The kind whose predicted share is furthest from its measured share, in points,
        among kinds measured above ``min_share`` of the modelled time (None: no prediction)."""
        kinds = [k for k in self.kinds
                 if k.share_points is not None and k.measured_share > min_share]
        return max(kinds, key=lambda k: abs(k.share_points or 0.0), default=None)

    def headline(self) -> str:
        """Predicted against measured share of conv and fully connected (or the two largest)."""
        by = {k.kind: k for k in self.kinds}
        if "conv" in by and "linear" in by:
            chosen = ["conv", "linear"]
        else:
            chosen = sorted(by, key=lambda k: -by[k].measured_s)[:2]
        if not self.predicted:
            parts = [
                f"{by[k].label}: {by[k].measured_share:.0%} of time, {by[k].flops_share:.0%} of "
                f"FLOPs, {by[k].params_share:.0%} of parameters"
                for k in chosen
            ]
            return "; ".join(parts) + f" ({self.model}, batch {self.batch_size}, measured on " \
                f"{self.measured_device})"
        parts = []
        for k in chosen:
            jk = by[k]
            parts.append(
                f"{jk.label} {jk.predicted_share or 0.0:.0%} of predicted time "
                f"(measured here {jk.measured_share:.0%})"
            )
        where = self.predicted_device_name or self.predicted_device
        return f"estimated on {where}: " + "; ".join(parts) + \
            f" ({self.model}, batch {self.batch_size}; ESTIMATES, measured on " \
            f"{self.measured_device})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "label": self.label,
            "model": self.model,
            "batch_size": self.batch_size,
            "measured_device": self.measured_device,
            "measured_device_name": self.measured_device_name,
            "predicted_device": self.predicted_device,
            "predicted_device_name": self.predicted_device_name,
            "efficiency_source": self.efficiency_source,
            "same_device": self.same_device,
            "measured_total_s": self.measured_total_s,
            "predicted_total_s": self.predicted_total_s,
            "profiled_step_s": self.profiled_step_s,
            "not_modelled_s": dict(self.not_modelled_s),
            "headline": self.headline(),
            "only_in_run": list(self.only_in_run),
            "only_in_cost": list(self.only_in_cost),
            "kinds": [k.to_dict() for k in self.kinds],
            "rows": [r.to_dict() for r in self.rows],
            "warnings": list(self.warnings),
            "kernel_choices": list(self.kernel_choices),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        """A comparison from its JSON object; keys this version does not know are ignored."""
        check_schema(d, SCHEMA, "layertime prediction")
        with reading("layertime prediction"):
            return build(
                cls,
                d,
                model=str,
                batch_size=int,
                measured_device=str,
                measured_device_name=str,
                rows=lambda v: tuple(JoinedRow.from_dict(r) for r in v),
                kinds=lambda v: tuple(JoinedKind.from_dict(k) for k in v),
                measured_total_s=float,
                predicted_total_s=lambda v: float(v) if v is not None else None,
                not_modelled_s=lambda v: {k: float(x) for k, x in v.items()},
                profiled_step_s=float,
                same_device=bool,
                warnings=lambda v: tuple(str(w) for w in v),
                kernel_choices=lambda v: tuple(str(c) for c in v),
            )


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or not measured > 0:
        return None
    return predicted / measured - 1.0
