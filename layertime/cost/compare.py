"""Join a measured run with a cost estimate, layer by layer: measured here, predicted there.

Pure: a :class:`~layertime.results.run.Run` and a
:class:`~layertime.results.cost.estimate.CostResult` in, a :class:`Comparison` out.  Rows
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
from collections.abc import Sequence
from dataclasses import dataclass, replace

from layertime.cost.devices import DeviceProfile, matches_device
from layertime.cost.roofline import MathMode, predict
from layertime.errors import LayertimeError
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost
from layertime.results.cost.joined import LOSS_ROW, Comparison, JoinedKind, JoinedRow
from layertime.results.run import LayerRow, Run
from layertime.taxonomy import KINDS

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


@dataclass(frozen=True)
class _Totals:
    """What shares are of: the time both sides model, the cost's FLOPs, memory, parameters."""

    measured_s: float
    predicted_s: float | None
    flops: int
    memory: int
    params: int


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
    totals = _Totals(
        measured_s=sum(measured.values()),
        predicted_s=(cost.predicted.total_s if cost.predicted is not None else 0.0)
        if predicted else None,
        flops=cost.flops.total,
        memory=cost.memory_bytes.total,
        params=cost.params or run.params or 1,
    )
    rows = [_joined_row(name, run_rows.get(name), cost_rows.get(name), measured, totals)
            for name in names]
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
        kinds=_joined_kinds(rows, totals, predicted),
        measured_total_s=totals.measured_s,
        predicted_total_s=totals.predicted_s,
        not_modelled_s={"zero_grad_s": p.zero_grad_s, "data_s": p.data_s,
                        "unattributed_s": p.unattributed_s,
                        # framework integrations' rows, when measured
                        **{k: getattr(p, k) for k in ("clip_s", "scheduler_s", "logging_s",
                                                      "compiled_wrapper_s")
                           if getattr(p, k)}},
        profiled_step_s=run.profiled_step_s if math.isfinite(run.profiled_step_s) else 0.0,
        predicted_device=pred.device if pred is not None else None,
        predicted_device_name=pred.device_name if pred is not None else None,
        efficiency_source=pred.efficiency_source if pred is not None else None,
        same_device=same,
        warnings=tuple(_mismatches(run, cost)),
        kernel_choices=tuple(cost.kernel_lines()),
    )


def _joined_row(name: str, rr: LayerRow | None, cr: LayerCost | None,
                measured: dict[str, float], totals: _Totals) -> JoinedRow:
    """One layer (or the loss) on both sides; None where a side lacks it."""
    in_run = rr is not None or name == LOSS_ROW
    m_s = measured.get(name) if in_run else None
    p_s = cr.predicted.total_s if cr is not None and cr.predicted is not None else None
    kind = cr.kind if cr is not None else rr.kind if rr is not None else "loss"
    typ = cr.type if cr is not None else rr.type if rr is not None else ""
    params = cr.params if cr is not None else rr.params if rr is not None else 0
    return JoinedRow(
        name=name,
        kind=kind,
        type=typ,
        in_run=in_run,
        in_cost=cr is not None,
        measured_s=m_s,
        measured_share=_share(m_s, totals.measured_s),
        predicted_s=p_s,
        predicted_share=_share(p_s, totals.predicted_s),
        params=params,
        params_share=params / totals.params,
        flops=cr.flops.total if cr is not None else None,
        flops_share=_share(cr.flops.total, totals.flops) if cr is not None else None,
        memory_bytes=cr.memory_bytes.total if cr is not None else None,
        memory_share=_share(cr.memory_bytes.total, totals.memory) if cr is not None else None,
    )


def _joined_kinds(rows: Sequence[JoinedRow], totals: _Totals,
                  predicted: bool) -> tuple[JoinedKind, ...]:
    """All rows of each kind, summed on each side, in report order."""
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
            measured_share=_share(m_s, totals.measured_s) or 0.0,
            predicted_s=p_s,
            predicted_share=_share(p_s, totals.predicted_s),
            params=params,
            params_share=params / totals.params,
            flops=flops,
            flops_share=_share(flops, totals.flops) or 0.0,
            memory_bytes=mem,
            memory_share=_share(mem, totals.memory) or 0.0,
        ))
    return tuple(kinds)


def _mismatches(run: Run, cost: CostResult) -> list[str]:
    """What differs between the measured configuration and the counted one."""
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
    return warnings


def with_prediction(
    run: Run, cost: CostResult, device: DeviceProfile | None = None
) -> tuple[Run, CostResult, Comparison]:
    """``run`` joined with its cost estimate, the join kept in ``run.prediction``.

    With a device profile the estimate is predicted (again) with the math
    settings the run recorded (TF32 for conv and matmul), so a prediction for
    the measuring device compares like with like.  Returns the run, the cost
    as joined, and the join.
    """
    if device is not None:
        cost = predict(cost, device, mode=MathMode.of_run(run.environment))
    joined = join(run, cost)
    return replace(run, prediction=joined.to_dict()), cost, joined
