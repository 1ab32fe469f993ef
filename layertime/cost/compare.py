"""Join a measured run with a cost estimate, layer by layer: measured here, predicted there.

Pure: a :class:`~layertime.result.Run` and a
:class:`~layertime.cost.result.CostResult` in, a :class:`Comparison` out.  Rows
join on the dotted module ``name`` (both sides name and kind modules the same
way); the loss is the row ``(loss)`` on both sides (the run's ``loss`` phase).
A layer on only one side keeps its numbers there and has ``None`` on the other.

Shares.  Time shares are of the time both sides model: the layer rows
(forward, backward, update, and exposed communication on the measured side)
plus the loss.  ``zero_grad``, ``data`` and ``unattributed`` are measured but
not predicted, so they are left out of both totals and reported apart
(``not_modelled_s``).  FLOP, parameter and memory shares are of the cost's
totals.  Predicted numbers are roofline estimates, never measurements.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from layertime.cost.devices import matches_device
from layertime.cost.result import CostResult, LayerCost
from layertime.errors import LayertimeError
from layertime.result import KIND_LABELS, KINDS, Run

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
        return _rel_error(self.predicted_s, self.measured_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JoinedRow:
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in fields})


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
        return _rel_error(self.predicted_s, self.measured_s)

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
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in fields})


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
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        if d.get("schema") != SCHEMA:
            raise LayertimeError(f"not a layertime prediction (schema {d.get('schema')!r})")
        try:
            return cls(
                model=str(d["model"]),
                batch_size=int(d["batch_size"]),
                measured_device=str(d["measured_device"]),
                measured_device_name=str(d.get("measured_device_name", "")),
                rows=tuple(JoinedRow.from_dict(r) for r in d["rows"]),
                kinds=tuple(JoinedKind.from_dict(k) for k in d["kinds"]),
                measured_total_s=float(d["measured_total_s"]),
                predicted_total_s=(
                    float(d["predicted_total_s"]) if d.get("predicted_total_s") is not None
                    else None
                ),
                not_modelled_s={k: float(v) for k, v in d.get("not_modelled_s", {}).items()},
                profiled_step_s=float(d["profiled_step_s"]),
                predicted_device=d.get("predicted_device"),
                predicted_device_name=d.get("predicted_device_name"),
                efficiency_source=d.get("efficiency_source"),
                same_device=bool(d.get("same_device", False)),
                warnings=tuple(str(w) for w in d.get("warnings", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LayertimeError(f"malformed layertime prediction: {e!r}") from e


def _rel_error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or not measured > 0:
        return None
    return predicted / measured - 1.0


def _share(x: float | None, total: float | None) -> float | None:
    if x is None or total is None:
        return None
    return x / total if total else 0.0


def _order(run_names: Sequence[str], cost_names: Sequence[str]) -> list[str]:
    """Run order, with names only the cost has placed after their predecessor in the cost."""
    out = list(dict.fromkeys(run_names))
    seen = set(out)
    prev: str | None = None
    for name in cost_names:
        if name not in seen:
            at = out.index(prev) + 1 if prev is not None else 0
            out.insert(at, name)
            seen.add(name)
        prev = name
    return out


def _is_empty_container(r: LayerCost) -> bool:
    return not r.ops and not r.params


def join(run: Run, cost: CostResult) -> Comparison:
    """Join ``run``'s rows with ``cost``'s by name (module doc for the shares)."""
    measured: dict[str, float] = {r.name: r.total_s for r in run.layers}
    measured[LOSS_ROW] = run.phases.loss_s
    run_rows = {r.name: r for r in run.layers}
    cost_rows = {r.name: r for r in cost.rows}
    if not set(run_rows) & set(cost_rows):
        raise LayertimeError("the cost estimate and the run share no layer names (not the "
                             "same model?)")
    names = _order(
        [*run_rows, LOSS_ROW],
        [r.name for r in cost.rows if r.name in run_rows or not _is_empty_container(r)],
    )
    predicted = cost.prediction is not None
    measured_total = sum(measured.values())
    pred_total = (cost.predicted.total_s if cost.predicted is not None else 0.0) \
        if predicted else None
    flops_total = cost.flops.total
    mem_total = cost.memory_bytes.total
    params_total = cost.params or run.params or 1

    rows: list[JoinedRow] = []
    for name in names:
        rr = run_rows.get(name)
        cr = cost_rows.get(name)
        in_run = rr is not None or name == LOSS_ROW
        m_s = measured.get(name) if in_run else None
        p_s = cr.predicted.total_s if cr is not None and cr.predicted is not None else None
        kind = cr.kind if cr is not None else rr.kind if rr is not None else "loss"
        typ = cr.type if cr is not None else rr.type if rr is not None else ""
        params = cr.params if cr is not None else rr.params if rr is not None else 0
        rows.append(JoinedRow(
            name=name,
            kind=kind,
            type=typ,
            in_run=in_run,
            in_cost=cr is not None,
            measured_s=m_s,
            measured_share=_share(m_s, measured_total),
            predicted_s=p_s,
            predicted_share=_share(p_s, pred_total),
            params=params,
            params_share=params / params_total,
            flops=cr.flops.total if cr is not None else None,
            flops_share=_share(cr.flops.total, flops_total) if cr is not None else None,
            memory_bytes=cr.memory_bytes.total if cr is not None else None,
            memory_share=_share(cr.memory_bytes.total, mem_total) if cr is not None else None,
        ))

    groups: dict[str, list[JoinedRow]] = {}
    for r in rows:
        groups.setdefault(r.kind, []).append(r)
    kinds: list[JoinedKind] = []
    for k in [k for k in KINDS if k in groups] + sorted(set(groups) - set(KINDS)):
        g = groups[k]
        m_s = sum(r.measured_s or 0.0 for r in g)
        p_s = sum(r.predicted_s or 0.0 for r in g) if predicted else None
        params = sum(r.params for r in g)
        flops = sum(r.flops or 0 for r in g)
        mem = sum(r.memory_bytes or 0 for r in g)
        kinds.append(JoinedKind(
            kind=k,
            rows=len(g),
            measured_s=m_s,
            measured_share=_share(m_s, measured_total) or 0.0,
            predicted_s=p_s,
            predicted_share=_share(p_s, pred_total),
            params=params,
            params_share=params / params_total,
            flops=flops,
            flops_share=_share(flops, flops_total) or 0.0,
            memory_bytes=mem,
            memory_share=_share(mem, mem_total) or 0.0,
        ))

    warnings: list[str] = []
    for what, m, c in (
        ("model", run.model, cost.model),
        ("batch size", run.batch_size, cost.batch_size),
        ("input shape", tuple(run.input_shape), tuple(cost.input_shape)),
        ("dtype", run.dtype, cost.dtype),
        ("optimizer", run.optimizer, cost.optimizer),
    ):
        if m != c:
            warnings.append(f"the cost estimate is for {what} {c}, the measurement for {m}")
    if run.amp:
        warnings.append(f"the run used --amp {run.amp}; the cost counts {cost.dtype} throughout")
    p = run.phases
    pred = cost.prediction
    same = pred is not None and matches_device(
        pred.device, pred.device_name, run.environment.device_name
    )
    return Comparison(
        model=run.model,
        batch_size=run.batch_size,
        measured_device=run.device,
        measured_device_name=run.environment.device_name,
        rows=tuple(rows),
        kinds=tuple(kinds),
        measured_total_s=measured_total,
        predicted_total_s=pred_total,
        not_modelled_s={"zero_grad_s": p.zero_grad_s, "data_s": p.data_s,
                        "unattributed_s": p.unattributed_s,
                        # framework integrations' rows, when measured
                        **{k: getattr(p, k) for k in ("clip_s", "scheduler_s", "logging_s")
                           if getattr(p, k)}},
        profiled_step_s=run.profiled_step_s if math.isfinite(run.profiled_step_s) else 0.0,
        predicted_device=pred.device if pred is not None else None,
        predicted_device_name=pred.device_name if pred is not None else None,
        efficiency_source=pred.efficiency_source if pred is not None else None,
        same_device=same,
        warnings=tuple(warnings),
    )
