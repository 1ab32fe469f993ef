"""What a report shows, as plain data: the views the HTML and image renderers draw.

Each builder reads one result (a :class:`~layertime.result.Run`, a cost JSON,
a sweep summary, several runs) and returns a *view*: a JSON-ready dict with
the headline, declarative charts, a table, and sections of facts.  The HTML
report (:mod:`layertime.render.html`) and the plots
(:mod:`layertime.render.plot`) draw the same views, so a PNG shows exactly
the charts of the page.

Charts are one of four types, each with the values already in the unit shown:

* ``stacked``: one horizontal bar per row, split into ``series`` segments
  (a bar per layer in model order: forward, backward, update);
* ``grouped``: one group per row, one bar per series (a kind's time share
  beside its parameter share);
* ``lines``: a series of points per kind against a numeric x (a sweep), with
  vertical ``markers`` (crossovers);
* ``scatter``: points against two log axes with the diagonal (predicted
  against measured).

FLOP, memory and predicted columns appear only when the result has those
numbers (a cost estimate, or a run joined with one); nothing is invented.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from layertime.errors import LayertimeError
from layertime.result import KIND_LABELS, KINDS, STEP_KINDS, Run, _finite

VIEW_TYPES = ("profile", "cost", "sweep", "compare", "bench")

#: Phase colours (Tableau 10), shared by the page and the plots.
PHASE_COLORS: dict[str, str] = {
    "forward": "#4c78a8",
    "backward": "#f58518",
    "backward_input": "#f58518",
    "backward_weight": "#b5540b",
    "update": "#54a24b",
    "comm": "#b279a2",
    "step": "#9d9d9d",
}
PHASE_LABELS: dict[str, str] = {
    "forward": "forward",
    "backward": "backward",
    "backward_input": "backward (input gradient)",
    "backward_weight": "backward (weight gradient)",
    "update": "update",
    "comm": "gradient sync (exposed)",
    "step": "step-level (loss, zero_grad, data, ...)",
}
#: One colour per kind, for lines and points.
KIND_COLORS: dict[str, str] = {
    "conv": "#4c78a8",
    "linear": "#f58518",
    "norm": "#54a24b",
    "activation": "#b279a2",
    "pool": "#72b7b2",
    "dropout": "#ff9da6",
    "embedding": "#9d755d",
    "attention": "#e45756",
    "recurrent": "#eeca3b",
    "loss": "#79706e",
    "other": "#bab0ac",
    "step": "#d3d3d3",
    "unattributed": "#8c8c8c",
}
#: The metrics of the by-kind chart, in order, with their colours.
METRICS: dict[str, tuple[str, str]] = {
    "time": ("time", "#1f4e79"),
    "params": ("parameters", "#e8a33d"),
    "flops": ("FLOPs", "#8e6bbf"),
    "memory": ("memory", "#3f9c8f"),
    "predicted": ("predicted time (estimate)", "#c95d63"),
}
#: Colours of several runs side by side.
RUN_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
              "#9d755d", "#ff9da6", "#bab0ac")

STEP_ROWS: tuple[tuple[str, str, str], ...] = (
    # phase attribute, row label, kind
    ("loss_s", "(loss)", "loss"),
    ("zero_grad_s", "(zero_grad)", "step"),
    ("data_s", "(data)", "step"),
    ("clip_s", "(clip)", "step"),
    ("scheduler_s", "(scheduler)", "step"),
    ("logging_s", "(logging)", "step"),
    ("unattributed_s", "(unattributed)", "unattributed"),
)
#: Step rows shown only when measured non-zero.
_OPTIONAL_STEP_ROWS = ("data_s", "clip_s", "scheduler_s", "logging_s", "unattributed_s")

TIMING_NOTES = {
    "cpu-self-time": "Each row is the CPU self time of the ops charged to it; all rows "
    "(layers, loss, zero_grad, data, clip, scheduler, logging, unattributed) add up to the "
    "profiled step.",
    "cuda-kernel-time": "Each row is the GPU kernel time of the ops charged to it; "
    "'unattributed' is the rest of the step's wall time (GPU idle).",
}


# -- number formatting (the page shows exactly these strings) ---------------
def fmt_ms(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    ms = s * 1e3
    if abs(ms) >= 1000:
        return f"{ms:,.1f}"
    if ms == 0 or abs(ms) >= 0.1:
        return f"{ms:,.3f}"
    # Below 0.1 ms (predictions on fast devices): three significant digits, no exponent.
    return f"{ms:.{2 - math.floor(math.log10(abs(ms)))}f}"


def fmt_pct(x: float | None, digits: int | None = None) -> str:
    """A share as a percentage; by default one decimal, two below 1% (0.04%, not 0.0%)."""
    if x is None or not math.isfinite(x):
        return "–"
    if digits is None:
        digits = 2 if 0 < abs(x) < 0.01 else 1
    return f"{x * 100:.{digits}f}%"


def fmt_int(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{int(n):,}"


def fmt_count(n: float | None, unit: str = "FLOP") -> str:
    """1.234 GFLOP; plain below a thousand."""
    if n is None:
        return "–"
    if n == 0:
        return "0"
    scale, prefix = _si_scale(abs(n))
    return f"{n / scale:,.3f} {prefix}{unit}" if scale > 1 else f"{n:,.0f} {unit}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _si_scale(n: float) -> tuple[float, str]:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return scale, prefix
    return 1.0, ""


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


def _cell(value: Any, text: str | None = None) -> dict[str, Any]:
    """A table cell: a sort value and the text shown."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"v": value, "t": text if text is not None else ("–" if value is None else str(value))}


# -- cost data, read from the JSON (schema layertime.cost/1) or a layer dict -
def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if isinstance(obj, Mapping):
        return dict(obj)
    raise LayertimeError(f"cannot read {type(obj).__name__} as a result")


def _flops_parts(row: Mapping[str, Any]) -> dict[str, float] | None:
    """A row's FLOPs by phase, or None when the row has no FLOP count."""
    f = row.get("flops")
    if f is None:
        return None
    if isinstance(f, (int, float)):
        return {"total": float(f)}
    if isinstance(f, Mapping):
        parts = {k: float(f.get(k) or 0) for k in
                 ("forward", "backward_input", "backward_weight", "update")}
        parts["total"] = float(f["total"]) if f.get("total") is not None else sum(parts.values())
        return parts
    return None


def _memory_total(row: Mapping[str, Any]) -> float | None:
    """Bytes a row holds: weights, grads, optimizer state, saved activations (output apart)."""
    m = row.get("memory_bytes")
    if m is None:
        return None
    if isinstance(m, (int, float)):
        return float(m)
    if isinstance(m, Mapping):
        if m.get("total") is not None:
            return float(m["total"])
        return float(sum(m.get(k) or 0 for k in
                         ("weights", "grads", "optimizer_state", "saved_activations")))
    return None


def _predicted(row: Mapping[str, Any]) -> dict[str, float] | None:
    p = row.get("predicted")
    if not isinstance(p, Mapping):
        return None
    f, b, u = (float(p.get(k) or 0.0) for k in ("forward_s", "backward_s", "update_s"))
    total = float(p["total_s"]) if p.get("total_s") is not None else f + b + u
    return {"forward_s": f, "backward_s": b, "update_s": u, "total_s": total}


def _kind_order(kinds: Sequence[str]) -> list[str]:
    known = [k for k in KINDS + STEP_KINDS if k in kinds]
    return known + [k for k in kinds if k not in known]


def _kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


# -- profile ----------------------------------------------------------------
def profile_view(run: Run | Mapping[str, Any], cost: Any = None) -> dict[str, Any]:
    """The report of one profiled run, joined with a cost estimate when one is given.

    ``run`` is a :class:`Run` or its JSON dict (a stored run); layers that carry
    ``flops``/``memory_bytes``/``predicted`` keys themselves are used as they
    are.  ``cost`` is a ``layertime.cost/1`` result (object or dict): its
    layers join the run's rows by name.
    """
    d = run.to_dict() if isinstance(run, Run) else dict(run)
    if not isinstance(run, Run):
        Run.from_dict(d)  # validates: a malformed dict is a clear error here
    layers: list[dict[str, Any]] = [dict(r) for r in d["layers"]]
    phases: Mapping[str, float] = d["phases"]
    step = d.get("profiled_step_s") or sum(phases.values()) or 1.0
    cost_d = _as_dict(cost)
    warnings = list(d.get("warnings", ()))
    if cost_d:
        if cost_d.get("schema") != "layertime.cost/1":
            raise LayertimeError(f"not a layertime cost (schema {cost_d.get('schema')!r})")
        by_name = {r["name"]: r for r in cost_d.get("layers", ())}
        matched = 0
        for r in layers:
            c = by_name.get(r["name"])
            if c is None:
                continue
            matched += 1
            for key in ("flops", "memory_bytes", "predicted"):
                if key in c and key not in r:
                    r[key] = c[key]
        if not matched:
            raise LayertimeError("the cost estimate and the run share no layer names "
                                 "(not the same model?)")
        for key, label in (("model", "model"), ("batch_size", "batch size"),
                           ("input_shape", "input shape")):
            if cost_d.get(key) != d.get(key):
                warnings.append(f"the cost estimate is for {label} {cost_d.get(key)}, "
                                f"the measurement for {d.get(key)}")

    # Rows: the layers in model order, then the step-level rows.
    split = any("backward_input_s" in r and "backward_weight_s" in r for r in layers)
    rows: list[dict[str, Any]] = []
    for r in layers:
        values = {"forward": r["forward_s"]}
        if split and "backward_input_s" in r and "backward_weight_s" in r:
            values["backward_input"] = r["backward_input_s"]
            values["backward_weight"] = r["backward_weight_s"]
            rest = r["backward_s"] - r["backward_input_s"] - r["backward_weight_s"]
            if rest > 1e-12:
                values["backward"] = rest
        else:
            values["backward"] = r["backward_s"]
        values["update"] = r["update_s"]
        # Data-parallel runs: the exposed gradient synchronisation is part of the row's time.
        comm = float(r.get("comm_exposed_s") or 0.0)
        if comm:
            values["comm"] = comm
        rows.append({
            "name": r["name"], "label": r["name"] or "(model)", "type": r["type"],
            "kind": r["kind"], "values": values,
            "total_s": r["forward_s"] + r["backward_s"] + r["update_s"] + comm,
            "params": r["params"], "calls": r.get("calls"),
            "flops": _flops_parts(r), "memory": _memory_total(r), "predicted": _predicted(r),
        })
    loss_cost = cost_d.get("loss") if cost_d else None
    for attr, label, kind in STEP_ROWS:
        value = float(phases.get(attr) or 0.0)
        if attr in _OPTIONAL_STEP_ROWS and value == 0.0:
            continue
        extra = loss_cost if attr == "loss_s" and isinstance(loss_cost, Mapping) else {}
        rows.append({
            "name": label, "label": label, "type": "", "kind": kind, "values": {"step": value},
            "total_s": value, "params": 0, "calls": None, "step_row": True,
            "flops": _flops_parts(extra), "memory": _memory_total(extra),
            "predicted": _predicted(extra),
        })

    has_flops = any(r["flops"] is not None for r in rows)
    has_memory = any(r["memory"] is not None for r in rows)
    has_pred = any(r["predicted"] is not None for r in rows)
    flops_total = sum(r["flops"]["total"] for r in rows if r["flops"]) or 1.0
    mem_total = sum(r["memory"] for r in rows if r["memory"] is not None) or 1.0
    params_total = sum(r["params"] for r in rows) or 1
    for r in rows:
        r["share"] = r["total_s"] / step
        r["params_share"] = r["params"] / params_total
        r["flops_share"] = r["flops"]["total"] / flops_total if r["flops"] else None
        r["memory_share"] = r["memory"] / mem_total if r["memory"] is not None else None

    # By kind: time share from the run itself, the others summed over the rows.
    kinds: dict[str, dict[str, Any]] = {}
    for k, v in d["kinds"].items():
        kinds[k] = {"kind": k, "time_s": v["time_s"], "time": v["share"],
                    "params_n": v["params"], "params": v["params_share"]}
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
    pred_total = sum(k.get("predicted_s", 0.0) for k in kinds.values()) or 1.0
    for k in kinds.values():
        if "flops_n" in k:
            k["flops"] = k["flops_n"] / flops_total
        if "memory_n" in k:
            k["memory"] = k["memory_n"] / mem_total
        if "predicted_s" in k:
            k["predicted"] = k["predicted_s"] / pred_total
    metrics = ["time", "params"] + (["flops"] if has_flops else []) + (
        ["memory"] if has_memory else []) + (["predicted"] if has_pred else [])
    kind_list = [kinds[k] for k in _kind_order(list(kinds))
                 if any(kinds[k].get(m) for m in metrics)]

    charts = [_kinds_chart(kind_list, metrics, "Share by kind",
                           "Each kind's share of the profiled step beside its share of the "
                           "parameters" + (", FLOPs" if has_flops else "")
                           + (" and memory" if has_memory else "") + "."),
              _layers_chart(rows, step)]
    charts.append(_kind_phase_chart(d["kinds"], step))
    if has_pred:
        charts.append(_predicted_chart(rows, d, cost_d))

    title = f"{d['model']} · batch {d['batch_size']} · {d['device']} · " + (
        f"amp {d['amp']}" if d.get("amp") else d["dtype"])
    env = d.get("environment", {})
    summary = [
        ("step (unprofiled)", f"{fmt_ms(d.get('step_s'))} ms",
         f"median of {len(d.get('step_samples_s', ()))} plain steps"),
        ("profiled step", f"{fmt_ms(d.get('profiled_step_s'))} ms",
         f"mean of {len(d.get('profiled_step_samples_s', ()))} traced steps; the rows add up to it"),
        ("profiler overhead", "–" if d.get("overhead_ratio") is None
         else f"×{d['overhead_ratio']:.3f}", "median traced step / median plain step"),
        ("parameters", fmt_int(d.get("params")), ""),
        ("rows", fmt_int(len(layers)), "layers and containers with their own time"),
    ]
    if cost_d.get("flops"):
        f = _flops_parts(cost_d)
        if f:
            summary.append(("FLOPs per step", fmt_count(f["total"]), "counted, not measured"))
    sub = [cost_d["headline"]] if cost_d.get("headline") else []
    view = {
        "type": "profile",
        "title": title,
        "headline": d.get("headline") or Run.from_dict(d).headline(),
        "subheadlines": sub,
        "summary": [{"label": a, "value": b, "title": c} for a, b, c in summary],
        "charts": charts,
        "table": _profile_table(rows, step, has_flops, has_memory, has_pred),
        "sections": _profile_sections(d, env, cost_d),
        "notes": _profile_notes(d, cost_d),
        "warnings": warnings,
    }
    return _finite(view)


def _kinds_chart(kinds: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str,
                 caption: str) -> dict[str, Any]:
    groups = []
    for k in kinds:
        values: dict[str, float | None] = {}
        tips: dict[str, list[str]] = {}
        label = _kind_label(k["kind"])
        for m in metrics:
            v = k.get(m)
            values[m] = None if v is None else v * 100
            if v is None:
                continue
            detail = {
                "time": f"{fmt_ms(k.get('time_s'))} ms per step",
                "params": f"{fmt_int(k.get('params_n'))} parameters",
                "flops": fmt_count(k.get("flops_n")),
                "memory": fmt_bytes(k.get("memory_n")),
                "predicted": f"{fmt_ms(k.get('predicted_s'))} ms predicted",
            }.get(m, "")
            tips[m] = [label, f"{METRICS[m][0]}: {fmt_pct(v, 2)}", detail]
        groups.append({"key": k["kind"], "label": label, "values": values, "tips": tips})
    return {
        "id": "kinds", "type": "grouped", "title": title, "caption": caption,
        "unit": "%", "max": 100.0, "layout": "half",
        "series": [{"key": m, "label": METRICS[m][0], "color": METRICS[m][1]} for m in metrics],
        "rows": groups,
    }


def _layers_chart(rows: Sequence[Mapping[str, Any]], step: float) -> dict[str, Any]:
    keys = [k for k in ("forward", "backward_input", "backward_weight", "backward", "update",
                        "comm", "step") if any(r["values"].get(k) for r in rows)]
    out_rows = []
    for r in rows:
        tip = [f"{r['label']}" + (f"  ({r['type']}, {_kind_label(r['kind'])})" if r["type"]
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
        out_rows.append({
            "key": r["name"], "label": r["label"], "sublabel": r["type"],
            "values": {k: r["values"][k] * 1e3 for k in keys if k in r["values"]},
            "total": r["total_s"] * 1e3, "total_text": f"{fmt_ms(r['total_s'])}",
            "muted": bool(r.get("step_row")), "tip": tip,
        })
    return {
        "id": "layers", "type": "stacked", "title": "Time per layer, in model order",
        "caption": "Milliseconds per training step; step-level rows last.",
        "unit": "ms", "layout": "half",
        "series": [{"key": k, "label": PHASE_LABELS[k], "color": PHASE_COLORS[k]} for k in keys],
        "rows": out_rows,
    }


def _kind_phase_chart(kinds: Mapping[str, Mapping[str, Any]], step: float) -> dict[str, Any]:
    """Each kind's time split by phase: where a kind's time goes (e.g. fc: the update)."""
    keys = ("forward", "backward", "update", "comm", "step")
    rows = []
    for k in _kind_order(list(kinds)):
        v = kinds[k]
        if not v.get("time_s"):
            continue
        if k in STEP_KINDS:
            values = {"step": v["time_s"]}
        else:
            values = {p: v.get(f"{p}_s", 0.0) for p in ("forward", "backward", "update")}
            if v.get("comm_exposed_s"):
                values["comm"] = v["comm_exposed_s"]
        label = _kind_label(k)
        tip = [label] + [f"{PHASE_LABELS[p] if p != 'step' else 'time'}: {fmt_ms(x)} ms"
                         for p, x in values.items()]
        tip.append(f"total: {fmt_ms(v['time_s'])} ms · {fmt_pct(v['time_s'] / step, 2)} of step")
        rows.append({"key": k, "label": label, "sublabel": "",
                     "values": {p: x * 1e3 for p, x in values.items()},
                     "total": v["time_s"] * 1e3, "total_text": fmt_ms(v["time_s"]),
                     "muted": k in STEP_KINDS, "tip": tip})
    used = [p for p in keys if any(r["values"].get(p) for r in rows)]
    return {
        "id": "kind-phases", "type": "stacked", "title": "Time by kind and phase",
        "caption": "Milliseconds per training step.", "unit": "ms", "layout": "half",
        "series": [{"key": p, "label": PHASE_LABELS[p], "color": PHASE_COLORS[p]} for p in used],
        "rows": rows,
    }


def _predicted_chart(rows: Sequence[Mapping[str, Any]], d: Mapping[str, Any],
                     cost: Mapping[str, Any]) -> dict[str, Any]:
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
            "tip": [f"{r['label']} ({_kind_label(r['kind'])})",
                    f"measured: {fmt_ms(r['total_s'])} ms",
                    f"predicted: {fmt_ms(p['total_s'])} ms (estimate)",
                    f"predicted / measured: ×{p['total_s'] / r['total_s']:.3g}"],
        })
    kinds_seen = _kind_order(list(dict.fromkeys(pt["series"] for pt in points)))
    pred = cost.get("prediction") or {}
    where = pred.get("device_name") or pred.get("device") or "the cost model's device"
    measured_on = d.get("environment", {}).get("device_name") or d["device"]
    caption = (f"Per layer: measured on {measured_on}, predicted (roofline estimate) for "
               f"{where}. Points on the diagonal agree.")
    if left_out:
        caption += f" {left_out} row(s) with a zero time are left out of the log axes."
    return {
        "id": "predicted", "type": "scatter", "title": "Predicted against measured",
        "caption": caption, "layout": "half", "x_label": f"measured ms ({measured_on})",
        "y_label": f"predicted ms ({pred.get('device') or where}, estimate)",
        "series": [{"key": k, "label": _kind_label(k), "color": KIND_COLORS.get(k, "#888")}
                   for k in kinds_seen],
        "points": points,
    }


def _profile_table(rows: Sequence[Mapping[str, Any]], step: float, has_flops: bool,
                   has_memory: bool, has_pred: bool) -> dict[str, Any]:
    split = any("backward_input" in r["values"] for r in rows)
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False),
            ("fwd ms", True), ("bwd ms", True)]
    if split:
        cols += [("bwd input ms", True), ("bwd weight ms", True)]
    cols += [("update ms", True)]
    comm = any("comm" in r["values"] for r in rows)
    if comm:
        cols += [("sync ms", True)]
    cols += [("total ms", True), ("share", True), ("params", True), ("params %", True)]
    if has_flops:
        cols += [("FLOPs", True), ("FLOPs %", True)]
    if has_memory:
        cols += [("memory", True), ("memory %", True)]
    if has_pred:
        cols += [("predicted ms", True)]
    cols += [("calls", True)]
    body = []
    for i, r in enumerate(rows):
        v = r["values"]
        bwd = sum(v.get(k, 0.0) for k in ("backward", "backward_input", "backward_weight"))
        step_row = bool(r.get("step_row"))
        cells = [_cell(i, str(i)), _cell(r["label"]), _cell(r["type"] or "", r["type"] or ""),
                 _cell(_kind_label(r["kind"])),
                 _cell(None if step_row else v.get("forward", 0.0),
                       "" if step_row else fmt_ms(v.get("forward", 0.0))),
                 _cell(None if step_row else bwd, "" if step_row else fmt_ms(bwd))]
        if split:
            for k in ("backward_input", "backward_weight"):
                cells.append(_cell(v.get(k), fmt_ms(v[k]) if k in v else ""))
        cells += [_cell(None if step_row else v.get("update", 0.0),
                        "" if step_row else fmt_ms(v.get("update", 0.0)))]
        if comm:
            cells.append(_cell(None if step_row else v.get("comm", 0.0),
                               "" if step_row else fmt_ms(v.get("comm", 0.0))))
        cells += [_cell(r["total_s"], fmt_ms(r["total_s"])),
                  _cell(r["share"], fmt_pct(r["share"])),
                  _cell(r["params"], fmt_int(r["params"]) if r["params"] else ""),
                  _cell(r["params_share"], fmt_pct(r["params_share"]) if r["params"] else "")]
        if has_flops:
            f = r["flops"]["total"] if r["flops"] else None
            cells += [_cell(f, fmt_count(f) if f is not None else ""),
                      _cell(r["flops_share"], fmt_pct(r["flops_share"])
                            if r["flops_share"] is not None else "")]
        if has_memory:
            cells += [_cell(r["memory"], fmt_bytes(r["memory"]) if r["memory"] is not None else ""),
                      _cell(r["memory_share"], fmt_pct(r["memory_share"])
                            if r["memory_share"] is not None else "")]
        if has_pred:
            p = r["predicted"]["total_s"] if r["predicted"] else None
            cells.append(_cell(p, fmt_ms(p) if p is not None else ""))
        calls = r.get("calls")
        cells.append(_cell(calls, f"{calls:g}" if calls is not None else ""))
        body.append({"cells": cells, "muted": step_row, "kind": r["kind"]})
    total = sum(r["total_s"] for r in rows)
    foot = ["", "profiled step", "", ""] + [""] * (len(cols) - 4)
    foot[[c[0] for c in cols].index("total ms")] = fmt_ms(total)
    foot[[c[0] for c in cols].index("share")] = fmt_pct(total / step if step else None)
    foot[[c[0] for c in cols].index("params")] = fmt_int(sum(r["params"] for r in rows))
    return {"id": "rows", "columns": [{"label": c, "num": n} for c, n in cols],
            "rows": body, "foot": foot}


def _profile_sections(d: Mapping[str, Any], env: Mapping[str, Any],
                      cost: Mapping[str, Any]) -> list[dict[str, Any]]:
    samples = ", ".join(fmt_ms(s) for s in d.get("step_samples_s", ()))
    psamples = ", ".join(fmt_ms(s) for s in d.get("profiled_step_samples_s", ()))
    config = [
        ("model", d["model"]),
        ("batch size", str(d["batch_size"])),
        ("input shape", _shape(d["input_shape"])),
        ("classes", "–" if d.get("num_classes") is None else str(d["num_classes"])),
        ("dtype", d["dtype"]),
        ("mixed precision", d.get("amp") or "off"),
        ("optimizer", d["optimizer"]),
        ("device", d["device"]),
        ("measured steps", str(d["steps"])),
        ("warm-up steps", str(d["warmup_steps"])),
        ("timing", d["timing"]),
        ("update split", d.get("update_split", "")),
        ("plain steps, ms", samples or "–"),
        ("traced steps, ms", psamples or "–"),
        ("created", d.get("created") or "–"),
    ]
    environment = [
        ("device name", env.get("device_name")),
        ("threads", env.get("threads")),
        ("torch", env.get("torch")),
        ("torchvision", env.get("torchvision")),
        ("CUDA", env.get("cuda")),
        ("cuDNN", env.get("cudnn")),
        ("python", env.get("python")),
        ("platform", env.get("platform")),
        ("host", env.get("host")),
    ]
    sections = [
        {"title": "Configuration", "items": [[a, str(b)] for a, b in config]},
        {"title": "Environment", "items": [[a, str(b)] for a, b in environment if b is not None]},
    ]
    if cost:
        sections.append(_cost_section(cost))
    if isinstance(d.get("compiled"), Mapping):
        from layertime.render.compiled import compiled_section

        sections.append(compiled_section(d["compiled"]))
    return sections


def _cost_section(cost: Mapping[str, Any]) -> dict[str, Any]:
    items = [
        ("counted for", f"{cost.get('model')}, batch {cost.get('batch_size')}, input "
                        f"{_shape(cost.get('input_shape') or ())}, {cost.get('dtype')}, "
                        f"{cost.get('optimizer')}"),
        ("step", "training step" if cost.get("training", True) else "forward pass only"),
        ("tensors", str(cost.get("tensors", ""))),
    ]
    pred = cost.get("prediction")
    if isinstance(pred, Mapping):
        peaks = ", ".join(f"{k} {v:g} TFLOP/s" for k, v in (pred.get("peak_tflops") or {}).items())
        items += [
            ("predicted for", f"{pred.get('device_name') or pred.get('device')} (estimate)"),
            ("peaks", peaks or "–"),
            ("memory bandwidth", f"{pred.get('memory_bandwidth_gb_per_s', 0):g} GB/s"),
            ("efficiencies", str(pred.get("efficiency_source", ""))),
            ("source", str(pred.get("source", ""))),
        ]
    nc = cost.get("not_counted") or {}
    if nc:
        items.append(("ops without a FLOP formula",
                      ", ".join(f"{op} ×{n}" for op, n in nc.items())))
    for k, v in (cost.get("conventions") or {}).items():
        items.append((f"convention: {k}", str(v)))
    return {"title": "Cost model", "wide": True, "items": [[a, b] for a, b in items]}


def _profile_notes(d: Mapping[str, Any], cost: Mapping[str, Any]) -> list[str]:
    notes = []
    if d.get("timing") in TIMING_NOTES:
        notes.append(TIMING_NOTES[d["timing"]])
    if d.get("update_split") == "parameter-elements":
        notes.append("The optimizer update is measured as a whole and split across layers in "
                     "proportion to their trainable parameter elements.")
    if cost:
        notes.append("FLOPs and memory are counted by the cost model (not measured); "
                     "predicted times are roofline estimates.")
    return notes


# -- cost estimate -------------------------------------------------------------
def cost_view(cost: Any) -> dict[str, Any]:
    """The report of a cost estimate (``layertime.cost/1``): FLOPs, memory, predictions."""
    c = _as_dict(cost)
    if c.get("schema") != "layertime.cost/1":
        raise LayertimeError(f"not a layertime cost (schema {c.get('schema')!r})")
    try:
        rows = []
        for r in list(c["layers"]) + [c["loss"]]:
            f = _flops_parts(r) or {"total": 0.0}
            rows.append({
                "name": r["name"], "label": r["name"] or "(model)", "type": r.get("type", ""),
                "kind": r["kind"], "params": int(r.get("params", 0)), "flops": f,
                "bytes": _flops_parts({"flops": r.get("bytes_moved")}) or {"total": 0.0},
                "memory": _memory_total(r) or 0.0,
                "saved": float((r.get("memory_bytes") or {}).get("saved_activations", 0) or 0)
                if isinstance(r.get("memory_bytes"), Mapping) else None,
                "predicted": _predicted(r), "not_counted": list(r.get("not_counted") or ()),
                "loss_row": r is c["loss"],
            })
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LayertimeError(f"malformed layertime cost: {e!r}") from e
    if rows and rows[-1]["loss_row"] and not rows[-1]["name"]:
        rows[-1]["label"] = "(loss)"
    flops_total = sum(r["flops"]["total"] for r in rows) or 1.0
    mem_total = sum(r["memory"] for r in rows) or 1.0
    params_total = sum(r["params"] for r in rows) or 1
    has_pred = any(r["predicted"] for r in rows)
    pred_total = sum(r["predicted"]["total_s"] for r in rows if r["predicted"]) or 1.0
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
        k["flops"] = k["flops_n"] / flops_total
        k["memory"] = k["memory_n"] / mem_total
        if has_pred:
            k["predicted"] = k["predicted_s"] / pred_total
    metrics = ["flops", "params", "memory"] + (["predicted"] if has_pred else [])
    kind_list = [kinds[k] for k in _kind_order(list(kinds)) if any(kinds[k].get(m)
                                                                   for m in metrics)]

    scale, prefix = _si_scale(max((r["flops"]["total"] for r in rows), default=0.0))
    unit = f"{prefix}FLOP"
    phase_keys = [k for k in ("forward", "backward_input", "backward_weight", "update")
                  if any(r["flops"].get(k) for r in rows)]
    flop_rows = []
    for r in rows:
        tip = [r["label"] + (f"  ({r['type']}, {_kind_label(r['kind'])})" if r["type"] else "")]
        tip += [f"{PHASE_LABELS[k]}: {fmt_count(r['flops'].get(k, 0.0))}" for k in phase_keys]
        tip.append(f"total: {fmt_count(r['flops']['total'])} · "
                   f"{fmt_pct(r['flops']['total'] / flops_total, 2)} of FLOPs")
        tip.append(f"memory: {fmt_bytes(r['memory'])}")
        if r["params"]:
            tip.append(f"parameters: {fmt_int(r['params'])}")
        if r["not_counted"]:
            tip.append("not counted: " + ", ".join(r["not_counted"]))
        flop_rows.append({
            "key": r["name"], "label": r["label"], "sublabel": r["type"],
            "values": {k: r["flops"].get(k, 0.0) / scale for k in phase_keys},
            "total": r["flops"]["total"] / scale, "total_text": fmt_count(r["flops"]["total"]),
            "muted": r["loss_row"], "tip": tip,
        })
    charts = [
        _kinds_chart(kind_list, metrics, "Share by kind",
                     "Each kind's share of the step's FLOPs beside its share of the parameters "
                     "and memory" + (" and of the predicted time." if has_pred else ".")),
        {"id": "layers", "type": "stacked", "title": "FLOPs per layer, in model order",
         "caption": f"{unit} per training step, by phase; the loss last.", "unit": unit,
         "layout": "half",
         "series": [{"key": k, "label": PHASE_LABELS[k], "color": PHASE_COLORS[k]}
                    for k in phase_keys],
         "rows": flop_rows},
    ]
    if has_pred:
        pkeys = [k for k in ("forward", "backward", "update")
                 if any(r["predicted"] and r["predicted"][f"{k}_s"] for r in rows)]
        charts.append({
            "id": "predicted-layers", "type": "stacked",
            "title": "Predicted time per layer (estimate)",
            "caption": "Roofline estimate, milliseconds per step.", "unit": "ms",
            "layout": "full",
            "series": [{"key": k, "label": PHASE_LABELS[k], "color": PHASE_COLORS[k]}
                       for k in pkeys],
            "rows": [{
                "key": r["name"], "label": r["label"], "sublabel": r["type"],
                "values": {k: (r["predicted"] or {}).get(f"{k}_s", 0.0) * 1e3 for k in pkeys},
                "total": (r["predicted"] or {}).get("total_s", 0.0) * 1e3,
                "total_text": fmt_ms((r["predicted"] or {}).get("total_s")),
                "muted": r["loss_row"],
                "tip": [r["label"]] + [f"{k}: {fmt_ms((r['predicted'] or {}).get(k + '_s'))} ms"
                                       for k in pkeys] + [
                    f"total: {fmt_ms((r['predicted'] or {}).get('total_s'))} ms (estimate)"],
            } for r in rows],
        })

    cols = [("#", True), ("layer", False), ("type", False), ("kind", False)]
    cols += [(f"{PHASE_LABELS[k].replace('backward', 'bwd').replace(' gradient', '')}"
              .replace("(", "").replace(")", ""), True) for k in phase_keys]
    cols += [("FLOPs", True), ("FLOPs %", True), ("params", True), ("memory", True),
             ("memory %", True), ("bytes moved", True)]
    if has_pred:
        cols.append(("predicted ms", True))
    body = []
    for i, r in enumerate(rows):
        cells = [_cell(i, str(i)), _cell(r["label"]), _cell(r["type"]),
                 _cell(_kind_label(r["kind"]))]
        cells += [_cell(r["flops"].get(k, 0.0), fmt_count(r["flops"].get(k, 0.0)))
                  for k in phase_keys]
        cells += [_cell(r["flops"]["total"], fmt_count(r["flops"]["total"])),
                  _cell(r["flops"]["total"] / flops_total,
                        fmt_pct(r["flops"]["total"] / flops_total)),
                  _cell(r["params"], fmt_int(r["params"]) if r["params"] else ""),
                  _cell(r["memory"], fmt_bytes(r["memory"])),
                  _cell(r["memory"] / mem_total, fmt_pct(r["memory"] / mem_total)),
                  _cell(r["bytes"]["total"], fmt_bytes(r["bytes"]["total"]))]
        if has_pred:
            p = r["predicted"]["total_s"] if r["predicted"] else None
            cells.append(_cell(p, fmt_ms(p) if p is not None else ""))
        body.append({"cells": cells, "muted": r["loss_row"], "kind": r["kind"]})
    foot = ["", "step", "", ""] + [""] * (len(cols) - 4)
    labels = [x[0] for x in cols]
    foot[labels.index("FLOPs")] = fmt_count(sum(r["flops"]["total"] for r in rows))
    foot[labels.index("params")] = fmt_int(sum(r["params"] for r in rows))
    foot[labels.index("memory")] = fmt_bytes(sum(r["memory"] for r in rows))
    if has_pred:
        foot[labels.index("predicted ms")] = fmt_ms(pred_total)

    f = _flops_parts(c) or {"total": flops_total}
    summary = [
        {"label": "FLOPs per step", "value": fmt_count(f["total"]),
         "title": "forward, backward and update; FLOPs = 2 × multiply-accumulates"},
        {"label": "forward MACs", "value": fmt_count(c.get("macs_forward"), "MAC"), "title": ""},
        {"label": "parameters", "value": fmt_int(c.get("params")), "title": ""},
        {"label": "memory", "value": fmt_bytes(mem_total),
         "title": "weights, gradients, optimizer state and saved activations"},
    ]
    if has_pred:
        summary.append({"label": "predicted step", "value": f"{fmt_ms(pred_total)} ms",
                        "title": "roofline estimate"})
    sec = _cost_section(c)
    view = {
        "type": "cost",
        "title": f"{c.get('model')} · batch {c.get('batch_size')} · cost estimate",
        "headline": c.get("headline") or "",
        "subheadlines": [],
        "summary": summary,
        "charts": charts,
        "table": {"id": "rows", "columns": [{"label": a, "num": b} for a, b in cols],
                  "rows": body, "foot": foot},
        "sections": [sec],
        "notes": ["Counted, not measured: FLOPs, bytes and memory come from the cost model; "
                  "predicted times are roofline estimates."],
        "warnings": list(c.get("warnings") or ()),
    }
    return _finite(view)


# -- sweep -------------------------------------------------------------------
def sweep_view(summary: Mapping[str, Any], *, title: str | None = None,
               status: str | None = None) -> dict[str, Any]:
    """The report of a sweep summary (``layertime.sweep/1``): each kind's share against
    batch size (and image size), with the crossovers marked."""
    if hasattr(summary, "summary"):
        summary = summary.summary()
    if not isinstance(summary, Mapping) or summary.get("schema") != "layertime.sweep/1":
        schema = summary.get("schema") if isinstance(summary, Mapping) else None
        raise LayertimeError(f"not a layertime sweep (schema {schema!r})")
    points = list(summary.get("points") or ())
    ok = [p for p in points if p.get("kinds")]
    crossovers = list(summary.get("crossovers") or ())
    kinds_all = _kind_order(list(dict.fromkeys(k for p in ok for k in p["kinds"])))
    shown = [k for k in kinds_all if max((p["kinds"].get(k) or 0.0) for p in ok) >= 0.005]
    hidden = [k for k in kinds_all if k not in shown]

    def cfg(p: Mapping[str, Any], key: str) -> Any:
        return (p.get("config") or {}).get(key)

    def group_label(p: Mapping[str, Any], skip: str) -> str:
        parts = [str(cfg(p, "model"))]
        if skip != "batch_size":
            parts.append(f"batch {cfg(p, 'batch_size')}")
        if skip != "image_size":
            parts.append(f"image {cfg(p, 'image_size') or 'default'}")
        parts += [str(cfg(p, "device")), str(cfg(p, "dtype")), str(cfg(p, "optimizer"))]
        return " · ".join(parts)

    charts: list[dict[str, Any]] = []
    for axis, other in (("batch_size", "image_size"), ("image_size", "batch_size")):
        groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
        for p in ok:
            key = tuple(cfg(p, k) for k in ("model", other, "device", "dtype", "optimizer"))
            groups.setdefault(key, []).append(p)
        for key, pts in groups.items():
            xs = sorted({cfg(p, axis) for p in pts if cfg(p, axis) is not None})
            if axis == "image_size" and len(xs) < 2:
                continue
            if axis == "batch_size" and not xs:
                continue
            pts = sorted((p for p in pts if cfg(p, axis) is not None),
                         key=lambda p: cfg(p, axis))
            series = []
            for k in shown:
                series.append({
                    "key": k, "label": _kind_label(k), "color": KIND_COLORS.get(k, "#888"),
                    "points": [{
                        "x": cfg(p, axis), "y": (p["kinds"].get(k) or 0.0) * 100,
                        "tip": [f"{_kind_label(k)}: {fmt_pct(p['kinds'].get(k) or 0.0, 2)} of step",
                                f"{'batch' if axis == 'batch_size' else 'image'} {cfg(p, axis)}"
                                f" · step {fmt_ms(p.get('step_s'))} ms"
                                + (f" · run {p['run_id']}" if p.get("run_id") is not None else "")],
                    } for p in pts],
                })
            markers = []
            if axis == "batch_size":
                for c in crossovers:
                    g = c.get("group") or {}
                    if (g.get("model"), g.get("image_size"), g.get("dtype"),
                            g.get("optimizer")) != (key[0], key[1], key[3], key[4]):
                        continue
                    if key[2] not in ("auto", g.get("device")) and not str(
                            g.get("device", "")).startswith(str(key[2])):
                        continue
                    markers.append({"x": c["batch_size"],
                                    "label": f"crossover ≈ {c['batch_size']:.1f}",
                                    "tip": [_describe_crossover(c)]})
            name = group_label(pts[0], axis)
            charts.append({
                "id": f"sweep-{len(charts)}", "type": "lines",
                "title": ("Share by kind against batch size" if axis == "batch_size"
                          else "Share by kind against image size"),
                "caption": name + ("" if markers or axis != "batch_size"
                                   else " · no crossover in this range"),
                "x_label": "batch size" if axis == "batch_size" else "image size (H = W)",
                "x_scale": "log2" if axis == "batch_size" else "linear",
                "y_label": "share of step time", "unit": "%", "y_max": 100.0,
                "layout": "half", "series": series, "markers": markers,
                "x_ticks": xs,
            })

    cols = [("#", True), ("model", False), ("batch", True), ("image", True), ("device", False),
            ("dtype", False), ("optimizer", False), ("status", False), ("run", True),
            ("step ms", True), ("ms / sample", True)]
    cols += [(f"{_kind_label(k)} %", True) for k in kinds_all]
    body: list[dict[str, Any]] = []
    for p in points:
        b = cfg(p, "batch_size")
        step_s = p.get("step_s")
        per = step_s / b if step_s is not None and b else None
        cells = [_cell(len(body), str(len(body))), _cell(cfg(p, "model")), _cell(b),
                 _cell(cfg(p, "image_size"),
                                                       str(cfg(p, "image_size") or "default")),
                 _cell(cfg(p, "device")), _cell(cfg(p, "dtype")), _cell(cfg(p, "optimizer")),
                 _cell(p.get("status"), str(p.get("status") if p.get("status") != "skipped"
                                             else "stored") + (
                     f": {p['error']}" if p.get("error") else "")),
                 _cell(p.get("run_id")), _cell(step_s, fmt_ms(step_s)), _cell(per, fmt_ms(per))]
        kinds_p = p.get("kinds") or {}
        cells += [_cell(kinds_p.get(k), fmt_pct(kinds_p[k]) if k in kinds_p else "–")
                  for k in kinds_all]
        body.append({"cells": cells, "muted": not p.get("kinds")})

    if crossovers:
        headline = _crossover_headline(crossovers)
    elif ok:
        headline = _no_crossover(ok)
    else:
        headline = "no configuration of this sweep finished"
    failed = sum(1 for p in points if p.get("status") == "failed")
    summary_cards = [
        {"label": "configurations", "value": fmt_int(len(points)), "title": ""},
        {"label": "finished", "value": fmt_int(len(ok)), "title": ""},
        {"label": "failed", "value": fmt_int(failed), "title": "out of memory or refused"},
        {"label": "crossovers", "value": fmt_int(len(crossovers)), "title": ""},
    ]
    notes = ["Shares are of the profiled step; crossovers are interpolated linearly in "
             "log2(batch size) between the two measured batch sizes around the change."]
    notes += [_describe_crossover(c) + "." for c in crossovers]
    if hidden:
        notes.append("Kinds under 0.5% at every point are left out of the charts (see the "
                     "table): " + ", ".join(_kind_label(k) for k in hidden) + ".")
    warnings = []
    if status and status != "ok":
        warnings.append(f"this sweep is {status}: it shows the configurations stored so far")
    for p in points:
        if p.get("status") == "failed":
            warnings.append(f"failed: {cfg(p, 'model')} batch {cfg(p, 'batch_size')}: "
                            f"{p.get('error')}")
    view = {
        "type": "sweep",
        "title": title or "sweep: " + ", ".join(dict.fromkeys(str(cfg(p, "model"))
                                                           for p in points)),
        "headline": headline,
        "subheadlines": [],
        "summary": summary_cards,
        "charts": charts,
        "grid": "even",
        "table": {"id": "points", "columns": [{"label": a, "num": b} for a, b in cols],
                  "rows": body, "foot": None},
        "sections": [],
        "notes": notes,
        "warnings": warnings,
    }
    return _finite(view)


def _describe_crossover(c: Mapping[str, Any]) -> str:
    g = c.get("group") or {}
    label = ", ".join(f"{k} {v}" for k, v in g.items() if v is not None)
    return (f"crossover at batch ~{c['batch_size']:.1f} (between {c.get('below')} and "
            f"{c.get('above')}; {label}): below it fully connected layers take more time "
            "than conv layers")


def _crossover_headline(crossovers: Sequence[Mapping[str, Any]]) -> str:
    """One line: where fully connected layers stop taking more time than conv layers."""
    groups = [c.get("group") or {} for c in crossovers]
    keys = [k for k in ("model", "image_size", "device", "dtype", "optimizer")
            if len({str(g.get(k)) for g in groups}) > 1]
    if not keys and len({str(g.get("model")) for g in groups}) == 1:
        keys = ["model"]
    names = {"image_size": "image", "model": ""}

    def where(g: Mapping[str, Any]) -> str:
        return ", ".join((f"{names.get(k, k)} {g.get(k)}").strip() for k in keys
                         if g.get(k) is not None)

    parts = [f"~{c['batch_size']:.1f}" + (f" ({where(g)})" if where(g) else "")
             for c, g in zip(crossovers, groups)]
    several = len(crossovers) > 1
    return (f"crossover{'s' if several else ''} at batch {', '.join(parts)}: below "
            f"{'them' if several else 'it'}, fully connected layers take more time than "
            "conv layers; above, conv layers do")


def _no_crossover(ok: Sequence[Mapping[str, Any]]) -> str:
    def share(p: Mapping[str, Any], k: str) -> float:
        return (p["kinds"].get(k) or 0.0)

    batches = sorted(b for b in {(p.get("config") or {}).get("batch_size") for p in ok}
                     if b is not None)
    span = f"{batches[0]}–{batches[-1]}" if len(batches) > 1 else f"{batches[0]}" if batches else ""
    has = {k for p in ok for k in p["kinds"]}
    if "conv" in has and "linear" in has:
        conv_leads = [share(p, "conv") >= share(p, "linear") for p in ok]
        if all(conv_leads):
            return (f"no crossover: conv layers take more time than fully connected layers at "
                    f"every batch size measured ({span})")
        if not any(conv_leads):
            return (f"no crossover: fully connected layers take more time than conv layers at "
                    f"every batch size measured ({span})")
        return f"conv and fully connected layers trade places across the configurations ({span})"
    leaders = {max((k for k in p["kinds"] if k not in STEP_KINDS),
                   key=lambda k: share(p, k), default="other") for p in ok}
    return ("largest kind at every point: " if len(leaders) == 1 else "largest kinds: ") + \
        ", ".join(_kind_label(k) for k in _kind_order(list(leaders))) + (
            f" (batch {span})" if span else "")


# -- comparison -------------------------------------------------------------------
def compare_view(runs: Sequence[Run], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Two or more runs side by side: kinds, step time by phase, layers aligned by name."""
    if len(runs) < 2:
        raise LayertimeError("a comparison needs two runs or more")
    labels = list(labels) if labels else [
        f"{r.model} b{r.batch_size} {r.device}" for r in runs]
    if len(set(labels)) != len(labels):
        labels = [f"{i + 1}: {lab}" for i, lab in enumerate(labels)]
    series = [{"key": f"r{i}", "label": lab, "color": RUN_COLORS[i % len(RUN_COLORS)]}
              for i, lab in enumerate(labels)]
    kind_maps = [r.by_kind() for r in runs]
    kinds = _kind_order(list(dict.fromkeys(k for m in kind_maps for k in m)))
    kinds = [k for k in kinds if any(m.get(k) and m[k].time_s for m in kind_maps)]
    kind_rows = []
    for k in kinds:
        values: dict[str, float | None] = {}
        tips: dict[str, list[str]] = {}
        for i, m in enumerate(kind_maps):
            kt = m.get(k)
            values[f"r{i}"] = kt.share * 100 if kt else None
            if kt:
                tips[f"r{i}"] = [f"{_kind_label(k)} · {labels[i]}",
                                 f"{fmt_pct(kt.share, 2)} of step · {fmt_ms(kt.time_s)} ms",
                                 f"{fmt_pct(kt.params_share, 2)} of parameters"]
        kind_rows.append({"key": k, "label": _kind_label(k), "values": values, "tips": tips})

    phase_keys = ["forward", "backward", "update", "step"]
    step_rows = []
    for i, r in enumerate(runs):
        p = r.phases
        vals = {"forward": p.forward_s, "backward": p.backward_s, "update": p.update_s,
                "step": p.loss_s + p.step_level_s + p.unattributed_s}
        ratio = "" if i == 0 else f" · ×{r.profiled_step_s / runs[0].profiled_step_s:.2f} " \
                                  f"of {labels[0]}"
        step_rows.append({
            "key": f"r{i}", "label": labels[i], "sublabel": "",
            "values": {k: v * 1e3 for k, v in vals.items()},
            "total": r.profiled_step_s * 1e3, "total_text": fmt_ms(r.profiled_step_s),
            "muted": False,
            "tip": [labels[i]] + [f"{PHASE_LABELS[k] if k != 'step' else 'step-level'}: "
                                  f"{fmt_ms(v)} ms" for k, v in vals.items()]
            + [f"profiled step: {fmt_ms(r.profiled_step_s)} ms{ratio}",
               f"plain step: {fmt_ms(r.step_s)} ms"],
        })

    names: list[str] = []
    kind_of: dict[str, str] = {}
    type_of: dict[str, str] = {}
    for r in runs:
        for row in r.layers:
            if row.name not in kind_of:
                names.append(row.name)
                kind_of[row.name] = row.kind
                type_of[row.name] = row.type
    by_name = [{row.name: row for row in r.layers} for r in runs]
    layer_rows: list[dict[str, Any]] = []
    table_rows: list[dict[str, Any]] = []
    for name in names:
        values = {}
        tips = {}
        base = by_name[0].get(name)
        cells = [_cell(len(table_rows), str(len(table_rows))), _cell(name or "(model)"),
                 _cell(type_of[name]), _cell(_kind_label(kind_of[name]))]
        for i, rows_of in enumerate(by_name):
            lr = rows_of.get(name)
            values[f"r{i}"] = lr.total_s * 1e3 if lr else None
            if lr:
                ratio = (f" · ×{lr.total_s / base.total_s:.2f} of {labels[0]}"
                         if i and base and base.total_s else "")
                tips[f"r{i}"] = [f"{name or '(model)'} · {labels[i]}",
                                 f"{fmt_ms(lr.total_s)} ms (fwd {fmt_ms(lr.forward_s)}, bwd "
                                 f"{fmt_ms(lr.backward_s)}, update {fmt_ms(lr.update_s)})"
                                 + ratio]
            cells.append(_cell(lr.total_s if lr else None, fmt_ms(lr.total_s) if lr else "–"))
            if i:
                q = lr.total_s / base.total_s if lr and base and base.total_s else None
                cells.append(_cell(q, f"×{q:.2f}" if q is not None else "–"))
        layer_rows.append({"key": name, "label": name or "(model)", "sublabel": type_of[name],
                           "values": values, "tips": tips})
        table_rows.append({"cells": cells, "muted": False, "kind": kind_of[name]})
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False)]
    for i, lab in enumerate(labels):
        cols.append((f"{lab} ms", True))
        if i:
            cols.append((f"× {labels[0]}", True))
    charts = [
        {"id": "kinds", "type": "grouped", "title": "Share by kind",
         "caption": "Each kind's share of the profiled step, run by run.", "unit": "%",
         "max": 100.0, "layout": "half", "series": series, "rows": kind_rows},
        {"id": "steps", "type": "stacked", "title": "Profiled step by phase",
         "caption": "Milliseconds per training step.", "unit": "ms", "layout": "half",
         "series": [{"key": k, "label": PHASE_LABELS[k], "color": PHASE_COLORS[k]}
                    for k in phase_keys], "rows": step_rows},
        {"id": "layers", "type": "grouped", "title": "Time per layer, in model order",
         "caption": "Milliseconds per step, layers aligned by name.", "unit": "ms",
         "layout": "full", "series": series, "rows": layer_rows},
    ]
    sections = [{
        "title": "Configurations",
        "columns": labels,
        "items": [[key] + [str(v) for v in vals] for key, vals in _config_matrix(runs)],
    }]
    view = {
        "type": "compare",
        "title": "comparison: " + " vs ".join(labels),
        "headline": "profiled step: " + ", ".join(
            f"{labels[i]} {fmt_ms(r.profiled_step_s)} ms"
            + ("" if i == 0 else f" (×{r.profiled_step_s / runs[0].profiled_step_s:.2f})")
            for i, r in enumerate(runs)),
        "subheadlines": [f"{labels[i]}: {r.headline()}" for i, r in enumerate(runs)],
        "summary": [{"label": labels[i], "value": f"{fmt_ms(r.step_s)} ms",
                     "title": "median plain step"} for i, r in enumerate(runs)],
        "charts": charts,
        "table": {"id": "rows", "columns": [{"label": a, "num": b} for a, b in cols],
                  "rows": table_rows, "foot": None},
        "sections": sections,
        "notes": [TIMING_NOTES.get(runs[0].timing, "")] if runs[0].timing in TIMING_NOTES
        else [],
        "warnings": [f"{labels[i]}: {w}" for i, r in enumerate(runs) for w in r.warnings],
    }
    return _finite(view)


def _config_matrix(runs: Sequence[Run]) -> list[tuple[str, list[Any]]]:
    def row(label: str, f: Any) -> tuple[str, list[Any]]:
        return label, [f(r) for r in runs]

    return [
        row("model", lambda r: r.model),
        row("batch size", lambda r: r.batch_size),
        row("input shape", lambda r: _shape(r.input_shape)),
        row("dtype", lambda r: r.dtype if not r.amp else f"amp {r.amp}"),
        row("optimizer", lambda r: r.optimizer),
        row("device", lambda r: f"{r.device} ({r.environment.device_name})"),
        row("threads", lambda r: r.environment.threads),
        row("torch", lambda r: r.environment.torch),
        row("measured steps", lambda r: r.steps),
        row("plain step ms", lambda r: fmt_ms(r.step_s)),
        row("profiled step ms", lambda r: fmt_ms(r.profiled_step_s)),
        row("overhead", lambda r: f"×{r.overhead_ratio:.3f}"),
        row("host", lambda r: r.environment.host),
        row("created", lambda r: r.created or "–"),
    ]


# -- layers benchmarked alone (layertime.bench/1) ------------------------------------
def bench_view(bench: Mapping[str, Any]) -> dict[str, Any]:
    """Each leaf layer run alone: forward, input gradient and weight gradient measured apart.

    A stored ``bench-layers`` result carries the in-situ profile of the same
    configuration (``in_situ``); the report is then that profile's, with the
    isolated split added as its own chart (never mixed into the in-situ bars).
    """
    if bench.get("schema") != "layertime.bench/1":
        raise LayertimeError(f"not a layertime layer benchmark (schema {bench.get('schema')!r})")
    try:
        layers = [dict(r) for r in bench["layers"]]
        keys = ("forward", "backward_input", "backward_weight")
        rows = []
        for r in layers:
            vals = {k: float(r.get(f"{k}_s") or 0.0) for k in keys}
            total = sum(vals.values())
            rows.append({
                "key": r["name"], "label": r["name"] or "(model)", "sublabel": r.get("type", ""),
                "values": {k: v * 1e3 for k, v in vals.items()}, "total": total * 1e3,
                "total_text": fmt_ms(total), "muted": False,
                "tip": [f"{r['name']}  ({r.get('type', '')}, {_kind_label(r['kind'])}), alone"]
                + [f"{PHASE_LABELS[k]}: {fmt_ms(v)} ms" for k, v in vals.items()]
                + [f"total: {fmt_ms(total)} ms (× {r.get('calls', 1)} calls)"],
            })
    except (KeyError, TypeError, ValueError) as e:
        raise LayertimeError(f"malformed layertime layer benchmark: {e!r}") from e
    used = [k for k in keys if any(r["values"][k] for r in rows)]
    chart = {
        "id": "alone", "type": "stacked",
        "title": "Each layer alone: forward, input gradient, weight gradient",
        "caption": f"Isolated benchmark: each leaf layer run by itself on its recorded input, "
                   f"median of {bench.get('repeats', '?')} runs, ms per step. Not the in-situ "
                   "profile: no neighbours, no optimizer.",
        "unit": "ms", "layout": "half",
        "series": [{"key": k, "label": PHASE_LABELS[k], "color": PHASE_COLORS[k]} for k in used],
        "rows": rows,
    }
    situ = bench.get("in_situ")
    if situ:
        view = profile_view(situ)
        view["charts"].append(chart)
        view["notes"].append("The 'each layer alone' chart is a separate measurement "
                             "(layertime bench-layers); the other charts are the in-situ profile.")
        return view
    by_kind: dict[str, float] = {}
    for r in layers:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + float(r.get("total_s") or 0.0)
    total = sum(by_kind.values()) or 1.0
    top = sorted(by_kind, key=lambda k: -by_kind[k])[:2]
    headline = "layers alone: " + "; ".join(
        f"{_kind_label(k)} layers {by_kind[k] / total:.0%} of the summed time" for k in top) + (
        f" ({bench.get('model')}, batch {bench.get('batch_size')}, {bench.get('device')})")
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False), ("fwd ms", True),
            ("bwd input ms", True), ("bwd weight ms", True), ("total ms", True), ("params", True),
            ("calls", True)]
    body = []
    for i, r in enumerate(layers):
        cells = [_cell(i, str(i)), _cell(r["name"] or "(model)"), _cell(r.get("type", "")),
                 _cell(_kind_label(r["kind"]))]
        cells += [_cell(float(r.get(f"{k}_s") or 0.0), fmt_ms(float(r.get(f"{k}_s") or 0.0)))
                  for k in keys]
        t = float(r.get("total_s") or 0.0)
        cells += [_cell(t, fmt_ms(t)), _cell(r.get("params", 0), fmt_int(r.get("params", 0))),
                  _cell(r.get("calls"))]
        body.append({"cells": cells, "muted": False, "kind": r["kind"]})
    env = bench.get("environment") or {}
    return _finite({
        "type": "bench",
        "title": f"{bench.get('model')} · batch {bench.get('batch_size')} · layers alone",
        "headline": headline, "subheadlines": [],
        "summary": [{"label": "layers", "value": fmt_int(len(layers)), "title": ""},
                    {"label": "summed time", "value": f"{fmt_ms(total)} ms", "title": ""}],
        "charts": [chart],
        "table": {"id": "rows", "columns": [{"label": a, "num": b} for a, b in cols],
                  "rows": body, "foot": None},
        "sections": [{"title": "Configuration", "items": [
            [k, str(bench.get(k))] for k in ("model", "device", "batch_size", "input_shape",
                                             "dtype", "warmup", "repeats", "created")]},
                     {"title": "Environment", "items": [[k, str(v)] for k, v in env.items()
                                                        if v is not None]}],
        "notes": [], "warnings": [],
    })


def view_of(obj: Any, **kw: Any) -> dict[str, Any]:
    """A view of any result: a Run, a cost result, a sweep result or summary, or a view."""
    if isinstance(obj, Run):
        return profile_view(obj, **kw)
    if isinstance(obj, Mapping) and obj.get("type") in VIEW_TYPES and "charts" in obj:
        return dict(obj)
    if hasattr(obj, "summary") and hasattr(obj, "points"):
        return sweep_view(obj.summary(), **kw)
    d = _as_dict(obj)
    schema = d.get("schema")
    if schema == "layertime.run/1":
        return profile_view(d, **kw)
    if schema == "layertime.cost/1":
        return cost_view(d)
    if schema == "layertime.sweep/1":
        return sweep_view(d, **kw)
    if schema == "layertime.bench/1":
        return bench_view(d)
    raise LayertimeError(f"nothing to report: unknown result schema {schema!r}")
