"""The view of a cost estimate (``layertime.cost/1``): FLOPs, memory and predicted time,
per kind and per layer.  Counted, never measured; predictions are estimates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from layertime.render.views.charts import bar, chart, kinds_chart, phase_series, table, view
from layertime.render.views.roles import (
    ROLES_NOTE,
    flops_blocks_chart,
    role_groups,
    role_label,
    roles_chart,
    shows_roles,
)
from layertime.render.views.style import (
    PHASE_LABELS,
    cell,
    fmt_bytes,
    fmt_count,
    fmt_int,
    fmt_ms,
    fmt_pct,
    fmt_shape,
    si_scale,
)
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import PHASES, LayerCost, PhaseCounts
from layertime.taxonomy import kind_label, kind_order


def flops_parts(counts: PhaseCounts) -> dict[str, float]:
    """FLOPs (or bytes) by phase, and their total, as floats."""
    parts = {p: float(getattr(counts, p)) for p in PHASES}
    parts["total"] = sum(parts.values())
    return parts


def _row(r: LayerCost, loss: bool) -> dict[str, Any]:
    p = r.predicted
    return {
        "name": r.name, "label": r.label, "type": r.type, "kind": r.kind, "params": r.params,
        "role": "loss" if loss else r.role or "other", "block": None if loss else r.block,
        "flops": flops_parts(r.flops), "bytes": flops_parts(r.bytes_moved),
        "memory": float(r.memory_bytes.total),
        "predicted": None if p is None else {"forward_s": p.forward_s, "backward_s": p.backward_s,
                                             "update_s": p.update_s, "total_s": p.total_s},
        "not_counted": list(r.not_counted), "loss_row": loss,
    }


def cost_view(cost: CostResult) -> dict[str, Any]:
    """The report of a cost estimate: FLOPs, memory, predictions."""
    rows = [_row(r, False) for r in cost.layers] + [_row(cost.loss, True)]
    totals = {
        "flops": sum(r["flops"]["total"] for r in rows) or 1.0,
        "memory": sum(r["memory"] for r in rows) or 1.0,
        "predicted": sum(r["predicted"]["total_s"] for r in rows if r["predicted"]) or 1.0,
    }
    has_pred = any(r["predicted"] for r in rows)
    kinds, metrics = _kinds(rows, totals, has_pred)
    charts = [
        kinds_chart(kinds, metrics, "Share by kind",
                    "Each kind's share of the step's FLOPs beside its share of the parameters "
                    "and memory" + (" and of the predicted time." if has_pred else ".")),
        _flops_chart(rows, totals["flops"]),
    ]
    transformer = shows_roles(cost.by_role())
    if transformer:
        # The answer first (attention against the MLP), then the layers, then the blocks.
        blocks = flops_blocks_chart(rows, _phase_keys(rows))
        charts = [roles_chart(role_groups(rows, metrics), metrics,
                              "Each role's share of the step's FLOPs beside its share of the "
                              "parameters and memory" + (" and of the predicted time."
                                                         if has_pred else ".")),
                  charts[1]] + ([blocks] if blocks else []) + [charts[0]]
    if has_pred:
        charts.append(_predicted_chart(rows))
    f = flops_parts(cost.flops)
    summary = [
        {"label": "FLOPs per step", "value": fmt_count(f["total"]),
         "title": "forward, backward and update; FLOPs = 2 × multiply-accumulates"},
        {"label": "forward MACs", "value": fmt_count(cost.macs_forward, "MAC"), "title": ""},
        {"label": "parameters", "value": fmt_int(cost.params), "title": ""},
        {"label": "memory", "value": fmt_bytes(totals["memory"]),
         "title": "weights, gradients, optimizer state and saved activations"},
    ]
    if has_pred:
        summary.append({"label": "predicted step", "value": f"{fmt_ms(totals['predicted'])} ms",
                        "title": "roofline estimate"})
    return view(
        "cost", f"{cost.model} · batch {cost.batch_size} · cost estimate", cost.headline(),
        summary=summary,
        charts=charts,
        table=_table(rows, totals, has_pred, transformer),
        sections=[cost_section(cost)],
        notes=["Counted, not measured: FLOPs, bytes and memory come from the cost model; "
               "predicted times are roofline estimates."] + ([ROLES_NOTE] if transformer else []),
        warnings=list(cost.warnings),
    )


def _kinds(rows: Sequence[Mapping[str, Any]], totals: Mapping[str, float],
           has_pred: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Per kind: parameters, FLOPs, memory and predicted time, and their shares."""
    params_total = sum(r["params"] for r in rows) or 1
    kinds: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"kind": r["kind"], "params_n": 0, "flops_n": 0.0,
                                         "memory_n": 0.0, "predicted_s": 0.0})
        k["params_n"] += r["params"]
        k["flops_n"] += r["flops"]["total"]
        k["memory_n"] += r["memory"]
        if r["predicted"]:
            k["predicted_s"] += r["predicted"]["total_s"]
    for k in kinds.values():
        k["params"] = k["params_n"] / params_total
        k["flops"] = k["flops_n"] / totals["flops"]
        k["memory"] = k["memory_n"] / totals["memory"]
        if has_pred:
            k["predicted"] = k["predicted_s"] / totals["predicted"]
    metrics = ["flops", "params", "memory"] + (["predicted"] if has_pred else [])
    shown = [kinds[k] for k in kind_order(kinds) if any(kinds[k].get(m) for m in metrics)]
    return shown, metrics


def _phase_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [k for k in PHASES if any(r["flops"].get(k) for r in rows)]


def _flops_chart(rows: Sequence[Mapping[str, Any]], flops_total: float) -> dict[str, Any]:
    scale, prefix = si_scale(max((r["flops"]["total"] for r in rows), default=0.0))
    keys = _phase_keys(rows)
    bars = []
    for r in rows:
        tip = [r["label"] + (f"  ({r['type']}, {kind_label(r['kind'])})" if r["type"] else "")]
        tip += [f"{PHASE_LABELS[k]}: {fmt_count(r['flops'].get(k, 0.0))}" for k in keys]
        tip.append(f"total: {fmt_count(r['flops']['total'])} · "
                   f"{fmt_pct(r['flops']['total'] / flops_total, 2)} of FLOPs")
        tip.append(f"memory: {fmt_bytes(r['memory'])}")
        if r["params"]:
            tip.append(f"parameters: {fmt_int(r['params'])}")
        if r["not_counted"]:
            tip.append("not counted: " + ", ".join(r["not_counted"]))
        bars.append(bar(r["name"], r["label"], r["type"],
                        {k: r["flops"].get(k, 0.0) / scale for k in keys},
                        r["flops"]["total"] / scale, fmt_count(r["flops"]["total"]),
                        r["loss_row"], tip))
    unit = f"{prefix}FLOP"
    return chart("layers", "stacked", "FLOPs per layer, in model order",
                 f"{unit} per training step, by phase; the loss last.", unit=unit,
                 layout="half", series=phase_series(keys), rows=bars)


def _predicted_chart(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = [k for k in ("forward", "backward", "update")
            if any(r["predicted"] and r["predicted"][f"{k}_s"] for r in rows)]
    bars = []
    for r in rows:
        p = r["predicted"] or {}
        tip = [r["label"]] + [f"{k}: {fmt_ms(p.get(k + '_s'))} ms" for k in keys] + [
            f"total: {fmt_ms(p.get('total_s'))} ms (estimate)"]
        bars.append(bar(r["name"], r["label"], r["type"],
                        {k: p.get(f"{k}_s", 0.0) * 1e3 for k in keys},
                        p.get("total_s", 0.0) * 1e3, fmt_ms(p.get("total_s")), r["loss_row"],
                        tip))
    return chart("predicted-layers", "stacked", "Predicted time per layer (estimate)",
                 "Roofline estimate, milliseconds per step.", unit="ms", layout="full",
                 series=phase_series(keys), rows=bars)


def _table(rows: Sequence[Mapping[str, Any]], totals: Mapping[str, float],
           has_pred: bool, roles: bool = False) -> dict[str, Any]:
    """The sortable table of the layers and the loss; ``roles``: a role column beside the kind
    (a transformer)."""
    keys = _phase_keys(rows)
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False)]
    cols += [("role", False)] if roles else []
    cols += [(f"{PHASE_LABELS[k].replace('backward', 'bwd').replace(' gradient', '')}"
              .replace("(", "").replace(")", ""), True) for k in keys]
    cols += [("FLOPs", True), ("FLOPs %", True), ("params", True), ("memory", True),
             ("memory %", True), ("bytes moved", True)]
    if has_pred:
        cols.append(("predicted ms", True))
    body = []
    for i, r in enumerate(rows):
        f, m = r["flops"]["total"], r["memory"]
        cells = [cell(i, str(i)), cell(r["label"]), cell(r["type"]), cell(kind_label(r["kind"]))]
        if roles:
            cells.append(cell("", "") if r["loss_row"] else cell(role_label(r["role"])))
        cells += [cell(r["flops"].get(k, 0.0), fmt_count(r["flops"].get(k, 0.0))) for k in keys]
        cells += [cell(f, fmt_count(f)),
                  cell(f / totals["flops"], fmt_pct(f / totals["flops"])),
                  cell(r["params"], fmt_int(r["params"]) if r["params"] else ""),
                  cell(m, fmt_bytes(m)),
                  cell(m / totals["memory"], fmt_pct(m / totals["memory"])),
                  cell(r["bytes"]["total"], fmt_bytes(r["bytes"]["total"]))]
        if has_pred:
            p = r["predicted"]["total_s"] if r["predicted"] else None
            cells.append(cell(p, fmt_ms(p) if p is not None else ""))
        body.append({"cells": cells, "muted": r["loss_row"], "kind": r["kind"]})
    labels = [x[0] for x in cols]
    foot = ["", "step", "", ""] + [""] * (len(cols) - 4)
    foot[labels.index("FLOPs")] = fmt_count(sum(r["flops"]["total"] for r in rows))
    foot[labels.index("params")] = fmt_int(sum(r["params"] for r in rows))
    foot[labels.index("memory")] = fmt_bytes(sum(r["memory"] for r in rows))
    if has_pred:
        foot[labels.index("predicted ms")] = fmt_ms(totals["predicted"])
    return table(cols, body, foot)


def cost_section(cost: CostResult) -> dict[str, Any]:
    """The cost model's settings, prediction device and conventions, as a report section."""
    items = [
        ("counted for", f"{cost.model}, batch {cost.batch_size}, input "
                        f"{fmt_shape(cost.input_shape)}, {cost.dtype}, {cost.optimizer}"),
        ("step", "training step" if cost.training else "forward pass only"),
        ("tensors", cost.tensors),
    ]
    pred = cost.prediction
    if pred is not None:
        peaks = ", ".join(f"{k} {v:g} TFLOP/s" for k, v in pred.peak_tflops.items())
        items += [
            ("predicted for", f"{pred.device_name or pred.device} (estimate)"),
            ("peaks", peaks or "–"),
            ("memory bandwidth", f"{pred.memory_bandwidth_gb_per_s:g} GB/s"),
            ("efficiencies", pred.efficiency_source),
            ("source", pred.source),
        ]
    nc = cost.not_counted()
    if nc:
        items.append(("ops without a FLOP formula",
                      ", ".join(f"{op} ×{n}" for op, n in nc.items())))
    for k, v in cost.conventions.items():
        items.append((f"convention: {k}", str(v)))
    return {"title": "Cost model", "wide": True, "items": [[a, b] for a, b in items]}
