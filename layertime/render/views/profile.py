"""The view of one profiled run, joined with a cost estimate when one is given.

Rows are the run's layers in model order, then the step-level rows (loss,
zero_grad, data, the framework rows clip, scheduler and logging when measured,
unattributed); a compiled run adds its "Compiled model" section.  FLOP, memory and predicted columns appear
only when a cost estimate is joined (its layers join the run's rows by
name); nothing is invented.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from layertime.errors import LayertimeError
from layertime.render.compiled import compiled_section
from layertime.render.views.charts import (
    bar,
    chart,
    kind_series,
    kinds_chart,
    phase_series,
    summary,
    table,
    view,
)
from layertime.render.views.cost import cost_section, flops_parts
from layertime.render.views.memory import (
    has_memory,
    memory_cards,
    memory_charts,
    memory_section,
)
from layertime.render.views.sharded import collectives_section, comm_chart, ranks_chart
from layertime.render.views.roles import (
    ROLES_NOTE,
    blocks_chart,
    role_groups,
    role_label,
    roles_chart,
    shows_roles,
)
from layertime.render.views.style import (
    PHASE_LABELS,
    TIMING_NOTES,
    cell,
    fmt_bytes,
    fmt_count,
    fmt_int,
    fmt_ms,
    fmt_pct,
    fmt_shape,
)
from layertime.results.cost.estimate import CostResult
from layertime.results.memory import fmt_mb, memory_totals
from layertime.results.cost.rows import LayerCost
from layertime.results.run import KindTotal, Run
from layertime.taxonomy import STEP_KINDS, kind_label, kind_order

STEP_ROWS: tuple[tuple[str, str, str], ...] = (
    # phase attribute, row label, kind
    ("loss_s", "(loss)", "loss"),
    ("zero_grad_s", "(zero_grad)", "step"),
    ("data_s", "(data)", "step"),
    ("clip_s", "(clip)", "step"),
    ("scheduler_s", "(scheduler)", "step"),
    ("logging_s", "(logging)", "step"),
    ("compiled_wrapper_s", "(compiled wrapper)", "step"),
    ("update_step_s", "(update)", "step"),
    ("unattributed_s", "(unattributed)", "unattributed"),
)
#: Step rows shown only when measured non-zero.
OPTIONAL_STEP_ROWS = ("data_s", "clip_s", "scheduler_s", "logging_s", "compiled_wrapper_s",
                      "update_step_s",
                      "unattributed_s")


def profile_view(run: Run, cost: CostResult | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report of one profiled run, joined with ``cost`` (a ``layertime.cost/1`` result,
    or its JSON) when given: its layers join the run's rows by name."""
    cost = CostResult.from_dict(cost) if isinstance(cost, Mapping) else cost
    step = _step_s(run)
    warnings = list(run.warnings) + (_mismatches(run, cost) if cost is not None else [])
    rows = _rows(run, cost)
    has = {key: any(r[key] is not None for r in rows) for key in ("flops", "memory", "predicted")}
    kinds, metrics = _kinds(run, rows, has)
    has["saved"] = has_memory(run)
    if has["saved"]:
        saved = memory_totals(run.layers)
        for k in kinds:
            if k["kind"] in saved:
                k["saved"], k["saved_n"] = saved[k["kind"]].saved_share, saved[k["kind"]].saved_bytes
        metrics.append("saved")
    of = ("parameters" + (", FLOPs" if has["flops"] else "")
          + (" and memory" if has["memory"] else "")
          + (" and saved activations (measured)" if has["saved"] else "") + ".")
    charts = [
        kinds_chart(kinds, metrics, "Share by kind",
                    "Each kind's share of the profiled step beside its share of the " + of),
        _layers_chart(rows, step),
        _kind_phase_chart(run.by_kind(), step),
    ]
    roles = run.roles()
    transformer = shows_roles(roles)
    if transformer:
        # The answer first (attention against the MLP), then the layers, then the blocks.
        blocks = blocks_chart(rows, step)
        charts = [roles_chart(role_groups(rows, metrics, roles), metrics,
                              "Each role's share of the profiled step beside its share of "
                              "the " + of), charts[1]] + ([blocks] if blocks else []) + \
            [charts[0], charts[2]]
    charts += [c for c in (comm_chart(run), ranks_chart(run)) if c is not None]
    if has["predicted"] and cost is not None:
        charts.append(_predicted_chart(rows, run, cost))
    charts += memory_charts(run, cost)
    title = f"{run.model} · batch {run.batch_size} · {run.device} · " + (
        f"amp {run.amp}" if run.amp else run.dtype)
    return view(
        "profile", title, run.headline(),
        subheadlines=[cost.headline()] if cost is not None else [],
        summary=_summary(run, cost) + (_blocks_card(run) if transformer else [])
        + memory_cards(run),
        charts=charts,
        table=_table(rows, step, has, transformer),
        sections=_sections(run, cost),
        notes=_notes(run, cost) + ([ROLES_NOTE] if transformer else []) + list(run.notes),
        warnings=warnings,
    )


def _step_s(run: Run) -> float:
    """What shares are of: the profiled step (the phases' sum for a run without samples)."""
    step = run.profiled_step_s
    if math.isfinite(step) and step:
        return step
    return sum(asdict(run.phases).values()) or 1.0


def _mismatches(run: Run, cost: CostResult) -> list[str]:
    out = []
    for label, theirs, ours in (("model", cost.model, run.model),
                                ("batch size", cost.batch_size, run.batch_size),
                                ("input shape", list(cost.input_shape), list(run.input_shape))):
        if theirs != ours:
            out.append(f"the cost estimate is for {label} {theirs}, the measurement for {ours}")
    return out


def _counts(c: LayerCost | None) -> dict[str, Any]:
    """A row's counted FLOPs (by phase), memory and predicted time, when a cost has them."""
    if c is None:
        return {"flops": None, "memory": None, "predicted": None}
    p = c.predicted
    return {
        "flops": flops_parts(c.flops),
        "memory": float(c.memory_bytes.total),
        "predicted": None if p is None else {"forward_s": p.forward_s, "backward_s": p.backward_s,
                                             "update_s": p.update_s, "total_s": p.total_s},
    }


def _rows(run: Run, cost: CostResult | None) -> list[dict[str, Any]]:
    """The layers in model order, then the step-level rows, with their shares."""
    by_name = {r.name: r for r in cost.layers} if cost is not None else {}
    if cost is not None and not any(r.name in by_name for r in run.layers):
        raise LayertimeError("the cost estimate and the run share no layer names "
                             "(not the same model?)")
    rows: list[dict[str, Any]] = []
    for layer in run.layers:
        values = {"forward": layer.forward_s, "backward": layer.backward_s,
                  "update": layer.update_s}
        # Data-parallel runs: the exposed gradient synchronisation is part of the row's time.
        if layer.comm_exposed_s:
            values["comm"] = layer.comm_exposed_s
        rows.append({
            "name": layer.name, "label": layer.label, "type": layer.type, "kind": layer.kind,
            "role": layer.role or "other", "block": layer.block, "values": values,
            "total_s": layer.forward_s + layer.backward_s + layer.update_s + layer.comm_exposed_s,
            "params": layer.params, "calls": layer.calls, **_counts(by_name.get(layer.name)),
            "saved": layer.saved_bytes,
        })
    phases = asdict(run.phases)
    for attr, label, kind in STEP_ROWS:
        value = float(phases.get(attr) or 0.0)
        if attr in OPTIONAL_STEP_ROWS and value == 0.0:
            continue
        loss = cost.loss if attr == "loss_s" and cost is not None else None
        rows.append({
            "name": label, "label": label, "type": "", "kind": kind, "role": kind, "block": None,
            "values": {"step": value},
            "total_s": value, "params": 0, "calls": None, "step_row": True, **_counts(loss),
            "saved": (run.memory.loss_saved_bytes
                      if attr == "loss_s" and run.memory is not None else None),
        })
    step = _step_s(run)
    flops_total = sum(r["flops"]["total"] for r in rows if r["flops"]) or 1.0
    mem_total = sum(r["memory"] for r in rows if r["memory"] is not None) or 1.0
    params_total = sum(r["params"] for r in rows) or 1
    for r in rows:
        r["share"] = r["total_s"] / step
        r["params_share"] = r["params"] / params_total
        r["flops_share"] = r["flops"]["total"] / flops_total if r["flops"] else None
        r["memory_share"] = r["memory"] / mem_total if r["memory"] is not None else None
    return rows


def _kinds(
    run: Run, rows: Sequence[Mapping[str, Any]], has: Mapping[str, bool]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per kind: the time share from the run itself, the others summed over the rows."""
    kinds: dict[str, dict[str, Any]] = {}
    for name, v in run.by_kind().items():
        kinds[name] = {"kind": name, "time_s": v.time_s, "time": v.share,
                       "params_n": v.params, "params": v.params_share}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"kind": r["kind"], "time_s": 0.0, "time": 0.0,
                                         "params_n": 0, "params": 0.0})
        # A kind none of whose rows has a count gets no bar (absent, not zero).
        if r["flops"] is not None:
            k["flops_n"] = k.get("flops_n", 0.0) + r["flops"]["total"]
        if r["memory"] is not None:
            k["memory_n"] = k.get("memory_n", 0.0) + r["memory"]
        if r["predicted"] is not None:
            k["predicted_s"] = k.get("predicted_s", 0.0) + r["predicted"]["total_s"]
    flops_total = sum(r["flops"]["total"] for r in rows if r["flops"]) or 1.0
    mem_total = sum(r["memory"] for r in rows if r["memory"] is not None) or 1.0
    pred_total = sum(k.get("predicted_s", 0.0) for k in kinds.values()) or 1.0
    for k in kinds.values():
        if "flops_n" in k:
            k["flops"] = k["flops_n"] / flops_total
        if "memory_n" in k:
            k["memory"] = k["memory_n"] / mem_total
        if "predicted_s" in k:
            k["predicted"] = k["predicted_s"] / pred_total
    metrics = ["time", "params"] + [m for m in ("flops", "memory", "predicted") if has[m]]
    shown = [kinds[k] for k in kind_order(kinds) if any(kinds[k].get(m) for m in metrics)]
    return shown, metrics


def _layers_chart(rows: Sequence[Mapping[str, Any]], step: float) -> dict[str, Any]:
    keys = [k for k in ("forward", "backward", "update", "comm", "step")
            if any(r["values"].get(k) for r in rows)]
    bars = []
    for r in rows:
        tip = [f"{r['label']}" + (f"  ({r['type']}, {kind_label(r['kind'])})" if r["type"]
                                  else "")]
        for k in keys:
            if k in r["values"]:
                tip.append(f"{PHASE_LABELS[k] if k != 'step' else 'time'}: "
                           f"{fmt_ms(r['values'][k])} ms")
        tip.append(f"total: {fmt_ms(r['total_s'])} ms · {fmt_pct(r['total_s'] / step, 2)} of step")
        if r["params"]:
            tip.append(f"parameters: {fmt_int(r['params'])}")
        if r.get("flops"):
            tip.append(f"FLOPs: {fmt_count(r['flops']['total'])}")
        if r.get("memory") is not None:
            tip.append(f"memory: {fmt_bytes(r['memory'])}")
        if r.get("predicted"):
            tip.append(f"predicted: {fmt_ms(r['predicted']['total_s'])} ms (estimate)")
        bars.append(bar(r["name"], r["label"], r["type"],
                        {k: r["values"][k] * 1e3 for k in keys if k in r["values"]},
                        r["total_s"] * 1e3, f"{fmt_ms(r['total_s'])}", bool(r.get("step_row")),
                        tip))
    return chart("layers", "stacked", "Time per layer, in model order",
                 "Milliseconds per training step; step-level rows last.",
                 unit="ms", layout="half", series=phase_series(keys), rows=bars)


def _kind_phase_chart(kinds: Mapping[str, KindTotal], step: float) -> dict[str, Any]:
    """Each kind's time split by phase: where a kind's time goes (e.g. fc: the update)."""
    bars = []
    for k in kind_order(kinds):
        v = kinds[k]
        if not v.time_s:
            continue
        if k in STEP_KINDS:
            values = {"step": v.time_s}
        else:
            values = {"forward": v.forward_s, "backward": v.backward_s, "update": v.update_s}
            if v.comm_exposed_s:
                values["comm"] = v.comm_exposed_s
        label = kind_label(k)
        tip = [label] + [f"{PHASE_LABELS[p] if p != 'step' else 'time'}: {fmt_ms(x)} ms"
                         for p, x in values.items()]
        tip.append(f"total: {fmt_ms(v.time_s)} ms · {fmt_pct(v.time_s / step, 2)} of step")
        bars.append(bar(k, label, "", {p: x * 1e3 for p, x in values.items()}, v.time_s * 1e3,
                        fmt_ms(v.time_s), k in STEP_KINDS, tip))
    used = [p for p in ("forward", "backward", "update", "comm", "step")
            if any(b["values"].get(p) for b in bars)]
    return chart("kind-phases", "stacked", "Time by kind and phase",
                 "Milliseconds per training step.", unit="ms", layout="half",
                 series=phase_series(used), rows=bars)


def _predicted_chart(rows: Sequence[Mapping[str, Any]], run: Run,
                     cost: CostResult) -> dict[str, Any]:
    points = []
    left_out = 0
    for r in rows:
        p = r.get("predicted")
        if p is None:
            continue
        if not (r["total_s"] > 0 and p["total_s"] > 0):
            left_out += 1
            continue
        points.append({
            "x": r["total_s"] * 1e3, "y": p["total_s"] * 1e3, "series": r["kind"],
            "label": r["label"],
            "tip": [f"{r['label']} ({kind_label(r['kind'])})",
                    f"measured: {fmt_ms(r['total_s'])} ms",
                    f"predicted: {fmt_ms(p['total_s'])} ms (estimate)",
                    f"predicted / measured: ×{p['total_s'] / r['total_s']:.3g}"],
        })
    pred = cost.prediction
    device = pred.device if pred is not None else None
    where = (pred.device_name or pred.device if pred is not None else None) \
        or "the cost model's device"
    measured_on = run.environment.device_name or run.device
    caption = (f"Per layer: measured on {measured_on}, predicted (roofline estimate) for "
               f"{where}. Points on the diagonal agree.")
    if left_out:
        caption += f" {left_out} row(s) with a zero time are left out of the log axes."
    return chart("predicted", "scatter", "Predicted against measured", caption,
                 layout="half", x_label=f"measured ms ({measured_on})",
                 y_label=f"predicted ms ({device or where}, estimate)",
                 series=kind_series(kind_order(pt["series"] for pt in points)), points=points)


def _table(rows: Sequence[Mapping[str, Any]], step: float, has: Mapping[str, bool],
           roles: bool = False) -> dict[str, Any]:
    """The sortable table: one row per layer and step-level row; ``roles``: a role column
    beside the kind (a transformer)."""
    comm = any("comm" in r["values"] for r in rows)
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False)]
    cols += [("role", False)] if roles else []
    cols += [("fwd ms", True), ("bwd ms", True), ("update ms", True)]
    cols += [("comm ms", True)] if comm else []
    cols += [("total ms", True), ("share", True), ("params", True), ("params %", True)]
    cols += [("FLOPs", True), ("FLOPs %", True)] if has["flops"] else []
    cols += [("memory", True), ("memory %", True)] if has["memory"] else []
    cols += [("predicted ms", True)] if has["predicted"] else []
    cols += [("saved MB", True)] if has.get("saved") else []
    cols += [("calls", True)]
    body = [{"cells": _cells(i, r, comm, has, roles), "muted": bool(r.get("step_row")),
             "kind": r["kind"]} for i, r in enumerate(rows)]
    total = sum(r["total_s"] for r in rows)
    labels = [c[0] for c in cols]
    foot = ["", "profiled step", "", ""] + [""] * (len(cols) - 4)
    foot[labels.index("total ms")] = fmt_ms(total)
    foot[labels.index("share")] = fmt_pct(total / step if step else None)
    foot[labels.index("params")] = fmt_int(sum(r["params"] for r in rows))
    return table(cols, body, foot)


def _cells(i: int, r: Mapping[str, Any], comm: bool, has: Mapping[str, bool],
           roles: bool) -> list[dict[str, Any]]:
    """One row of the table (the step-level rows have no phases)."""
    v = r["values"]
    step_row = bool(r.get("step_row"))

    def phase(key: str) -> dict[str, Any]:
        if step_row:
            return cell(None, "")
        return cell(v.get(key, 0.0), fmt_ms(v.get(key, 0.0)))

    cells = [cell(i, str(i)), cell(r["label"]), cell(r["type"] or "", r["type"] or ""),
             cell(kind_label(r["kind"]))]
    if roles:
        cells.append(cell("", "") if step_row else cell(role_label(r["role"])))
    cells += [phase("forward"), phase("backward"), phase("update")]
    if comm:
        cells.append(phase("comm"))
    cells += [cell(r["total_s"], fmt_ms(r["total_s"])), cell(r["share"], fmt_pct(r["share"])),
              cell(r["params"], fmt_int(r["params"]) if r["params"] else ""),
              cell(r["params_share"], fmt_pct(r["params_share"]) if r["params"] else "")]
    if has["flops"]:
        f = r["flops"]["total"] if r["flops"] else None
        cells += [cell(f, fmt_count(f) if f is not None else ""),
                  cell(r["flops_share"], fmt_pct(r["flops_share"])
                       if r["flops_share"] is not None else "")]
    if has["memory"]:
        m = r["memory"]
        cells += [cell(m, fmt_bytes(m) if m is not None else ""),
                  cell(r["memory_share"], fmt_pct(r["memory_share"])
                       if r["memory_share"] is not None else "")]
    if has["predicted"]:
        p = r["predicted"]["total_s"] if r["predicted"] else None
        cells.append(cell(p, fmt_ms(p) if p is not None else ""))
    if has.get("saved"):
        sb = r.get("saved")
        cells.append(cell(sb, fmt_mb(sb) if sb else ""))
    calls = r.get("calls")
    cells.append(cell(calls, f"{calls:g}" if calls is not None else ""))
    return cells


def _summary(run: Run, cost: CostResult | None) -> list[dict[str, str]]:
    ratio = run.overhead_ratio
    traced = run.traced_step_samples_s
    if traced:  # CUDA: the rows are kernels plus the GPU's idle time in the plain step
        rows_card = ("rows add up to", f"{fmt_ms(run.profiled_step_s)} ms",
                     "each layer's GPU kernel time, plus the GPU's idle time in the "
                     "unprofiled step (unattributed)")
        traced_card = ("traced step", f"{fmt_ms(statistics.median(traced))} ms",
                       f"median of {len(traced)} traced steps (wall, profiler included)")
        items_steps = [rows_card, traced_card]
    else:
        items_steps = [("profiled step", f"{fmt_ms(run.profiled_step_s)} ms",
                        f"mean of {len(run.profiled_step_samples_s)} traced steps; the rows "
                        "add up to it")]
    items = [
        ("step (unprofiled)", f"{fmt_ms(run.step_s)} ms",
         f"median of {len(run.step_samples_s)} plain steps"),
        *items_steps,
        ("profiler overhead", f"×{ratio:.3f}" if math.isfinite(ratio) else "–",
         "median traced step / median plain step"),
        ("parameters", fmt_int(run.params), ""),
        ("rows", fmt_int(len(run.layers)), "layers and containers with their own time"),
    ]
    if cost is not None:
        items.append(("FLOPs per step", fmt_count(flops_parts(cost.flops)["total"]),
                      "counted, not measured"))
    return summary(items)


def _blocks_card(run: Run) -> list[dict[str, str]]:
    """How many blocks the rows sit in (a transformer), first and last named on hover."""
    names = list(dict.fromkeys(r.block for r in run.layers if r.block is not None))
    if not names:
        return []
    span = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
    return summary([("blocks", fmt_int(len(names)), span)])


def _sections(run: Run, cost: CostResult | None) -> list[dict[str, Any]]:
    samples = ", ".join(fmt_ms(s) for s in run.step_samples_s)
    psamples = ", ".join(fmt_ms(s) for s in run.profiled_step_samples_s)
    config = [
        ("model", run.model),
        ("batch size", str(run.batch_size)),
        ("input shape", fmt_shape(run.input_shape)),
        ("classes", "–" if run.num_classes is None else str(run.num_classes)),
        ("dtype", run.dtype),
        ("mixed precision", run.amp or "off"),
        ("optimizer", run.optimizer),
        ("device", run.device),
        ("measured steps", str(run.steps)),
        ("warm-up steps", str(run.warmup_steps)),
        ("timing", run.timing),
        ("update split", run.update_split),
        ("plain steps, ms", samples or "–"),
        ("traced steps, ms", psamples or "–"),
        ("created", run.created or "–"),
    ]
    if run.trace is not None:
        config.insert(0, ("attributed from", run.trace.describe()))
        config.append(("trace files", ", ".join(run.trace.files)))
    env = run.environment
    environment = [
        ("device name", env.device_name),
        ("threads", env.threads),
        ("torch", env.torch),
        ("torchvision", env.torchvision),
        ("CUDA", env.cuda),
        ("cuDNN", env.cudnn),
        ("python", env.python),
        ("platform", env.platform),
        ("host", env.host),
    ]
    sections = [
        {"title": "Configuration", "items": [[a, str(b)] for a, b in config]},
        {"title": "Environment", "items": [[a, str(b)] for a, b in environment if b is not None]},
    ]
    if cost is not None:
        sections.append(cost_section(cost))
    if run.compiled is not None:
        sections.append(compiled_section(run.compiled))
    collectives = collectives_section(run)
    if collectives is not None:
        sections.append(collectives)
    memory = memory_section(run, cost)
    if memory is not None:
        sections.append(memory)
    return sections


def _notes(run: Run, cost: CostResult | None) -> list[str]:
    notes = []
    if run.timing in TIMING_NOTES:
        notes.append(TIMING_NOTES[run.timing])
    if run.update_split == "parameter-elements":
        notes.append("The optimizer update is measured as a whole and split across layers in "
                     "proportion to their trainable parameter elements.")
    if cost is not None:
        notes.append("FLOPs and memory are counted by the cost model (not measured); "
                     "predicted times are roofline estimates.")
    return notes
