"""The memory part of a run's report: per-layer bars of what each layer holds, the live
bytes over the measured step with its parts marked, what was live at the peak, and the
section that explains it; beside the cost model's estimate when one is joined.

Everything here is measured (``Run.memory``, the rows' memory fields) except the
``counted`` numbers of a joined cost estimate, which are labelled so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from layertime.render.views.charts import bar, chart
from layertime.render.views.style import fmt_ms
from layertime.results.cost.estimate import CostResult
from layertime.results.memory import CATEGORIES, fmt_mb, mb, memory_totals
from layertime.results.run import LayerRow, Run
from layertime.results.sweep import SummaryPoint
from layertime.taxonomy import kind_label, kind_order

#: The parts of a layer's memory, with their labels and colours.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("saved", "saved activations", "#3f9c8f"),
    ("params", "parameters", "#e8a33d"),
    ("grads", "gradients", "#e45756"),
    ("optimizer", "optimizer state", "#8e6bbf"),
)
_CATEGORY_COLORS = ("#e8a33d", "#e45756", "#8e6bbf", "#3f9c8f", "#9d9d9d")


def _series() -> list[dict[str, str]]:
    return [{"key": k, "label": label, "color": color} for k, label, color in PARTS]


def _parts(r: LayerRow) -> dict[str, float]:
    return {"saved": mb(r.saved_bytes), "params": mb(r.params_bytes),
            "grads": mb(r.grads_bytes), "optimizer": mb(r.optimizer_state_bytes)}


def has_memory(run: Run) -> bool:
    return run.memory is not None or any(r.saved_bytes for r in run.layers)


def layers_chart(run: Run, cost: CostResult | None = None) -> dict[str, Any]:
    """One bar per layer that holds anything: saved activations, parameters, gradients
    and optimizer state, in MB; the cost model's count in the hover when joined."""
    counted = {r.name: r.memory_bytes for r in cost.layers} if cost is not None else {}
    bars = []
    for r in run.layers:
        parts = _parts(r)
        total = sum(parts.values())
        if not total:
            continue
        tip = [f"{r.label}  ({r.type}, {kind_label(r.kind)})"]
        tip += [f"{label}: {fmt_mb(parts[k] * 1e6)} MB" for k, label, _ in PARTS if parts[k]]
        c = counted.get(r.name)
        if c is not None:
            tip.append(f"counted by the cost model: saved {fmt_mb(c.saved_activations)} MB, "
                       f"parameters {fmt_mb(c.weights)} MB (estimate)")
        if r.checkpointed:
            tip.append(f"checkpointed: keeps its inputs, recompute {fmt_ms(r.recompute_s)} ms "
                       "in backward")
        bars.append(bar(r.name, r.label + (" (checkpointed)" if r.checkpointed else ""),
                        r.type, parts, total, f"{total:,.1f}", False, tip))
    return chart("memory-layers", "stacked", "Memory per layer, in model order",
                 "MB (10^6 bytes) each layer holds in a step: what its ops save for backward "
                 "(each storage once; one saved by two layers is its producer's), its "
                 "parameters, their gradients and optimizer state. Measured.",
                 unit="MB", layout="half", series=_series(), rows=bars)


def step_chart(run: Run) -> dict[str, Any] | None:
    """The live bytes over the measured step, its forward end, backward end, optimizer
    step and peak marked; each point names the layer running then."""
    m = run.memory
    if m is None or not m.timeline:
        return None
    points: list[dict[str, Any]] = []
    xs: list[float] = []
    ys: list[float] = []
    for p in m.timeline:
        where = p.layer if p.layer is not None else (f"({p.phase})" if p.phase else "")
        phase = f" {p.phase}" if p.layer is not None and p.phase else ""
        xs.append(p.t_s * 1e3)
        ys.append(mb(p.bytes))
        points.append({"x": xs[-1], "y": ys[-1],
                       "tip": [f"{fmt_ms(p.t_s)} ms: {fmt_mb(p.bytes)} MB live",
                               f"{where}{phase}".strip() or "between layers"]})
    end_ms = max(xs + [mk.t_s * 1e3 for mk in m.marks] + [1e-3])
    markers: list[dict[str, Any]] = []
    last_x = -math.inf
    for mk in sorted(m.marks, key=lambda mk: mk.t_s):
        label = f"peak {fmt_mb(m.peak_bytes)} MB" if mk.label == "peak" else mk.label
        tip = f"{mk.label}: {fmt_ms(mk.t_s)} ms into the step"
        if markers and mk.t_s * 1e3 - last_x < 0.12 * end_ms:
            # Marks this close would print over each other: one mark, both named.
            markers[-1]["label"] += " · " + label
            markers[-1]["tip"].append(tip)
            continue
        last_x = mk.t_s * 1e3
        markers.append({"x": last_x, "label": label, "tip": [tip]})
    top = max([mb(m.peak_bytes)] + ys)
    how = "CUDA allocator" if m.method == "cuda-allocator" else "CPU allocator's events"
    return chart("memory-step", "lines", "Memory over the step",
                 "Live MB during the measured step (the highest of each slice of it), "
                 f"measured by the {how}; hover a point for the layer running then.",
                 x_label="ms into the step", x_scale="linear", y_label="MB live", unit="",
                 y_max=top * 1.05 if top else 1.0, layout="half",
                 series=[{"key": "live", "label": "live MB", "color": "#3f9c8f",
                          "points": points}],
                 markers=markers, x_ticks=_ticks(end_ms))


def _ticks(end: float, n: int = 5) -> list[float]:
    """About ``n`` round ticks from 0 to ``end``."""
    raw = end / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(k * mag for k in (1, 2, 2.5, 5, 10) if k * mag >= raw)
    return [round(i * step, 6) for i in range(int(end / step) + 1)]


def peak_chart(run: Run) -> dict[str, Any] | None:
    """What was live at the peak: by category, then the layers that held the most."""
    m = run.memory
    if m is None:
        return None
    keys = [key for key, _ in CATEGORIES]
    series = [{"key": key, "label": label, "color": color}
              for (key, label), color in zip(CATEGORIES, _CATEGORY_COLORS)]
    cats = {key: mb(getattr(m.at_peak, key)) for key in keys}
    total = sum(cats.values())
    rows = [bar("peak", "at the peak", m.peak_when, cats, total, f"{total:,.1f}", False,
                [f"peak {fmt_mb(m.peak_bytes)} MB at {m.peak_when}"
                 + (f" ({m.peak_layer})" if m.peak_layer else "")]
                + [f"{label}: {fmt_mb(getattr(m.at_peak, key))} MB" for key, label in CATEGORIES])]
    held = sorted(m.at_peak.layers, key=lambda r: -r.total_bytes)[:12]
    for r in held:
        values = {"saved_bytes": mb(r.saved_bytes), "parameters_bytes": mb(r.params_bytes),
                  "gradients_bytes": mb(r.grads_bytes),
                  "optimizer_state_bytes": mb(r.optimizer_state_bytes)}
        rows.append(bar(r.name, r.name or "(model)", "", values, mb(r.total_bytes),
                        f"{mb(r.total_bytes):,.1f}", True,
                        [r.name or "(model)"] + [f"{label}: {fmt_mb(values[k] * 1e6)} MB"
                                                 for k, label in CATEGORIES if values.get(k)]))
    return chart("memory-peak", "stacked", "What was live at the peak",
                 f"MB at the step's peak ({m.peak_when}), by category, then the layers that "
                 "held the most then.", unit="MB", layout="half", series=series, rows=rows)


def memory_charts(run: Run, cost: CostResult | None = None) -> list[dict[str, Any]]:
    """The report's memory charts (none when the run did not measure memory)."""
    if not has_memory(run):
        return []
    charts = [layers_chart(run, cost)]
    charts += [c for c in (step_chart(run), peak_chart(run)) if c is not None]
    return charts


def memory_section(run: Run, cost: CostResult | None = None) -> dict[str, Any] | None:
    """The peak explained, how it was measured, and the totals beside the cost model's."""
    m = run.memory
    if m is None:
        return None
    items: list[list[str]] = [
        ["peak", f"{fmt_mb(m.peak_bytes)} MB at {m.peak_when}"
         + (f" ({m.peak_layer})" if m.peak_layer else "")
         + f", {fmt_ms(m.peak_at_s)} ms into the measured step"],
    ]
    items += [[f"live at the peak: {label}", f"{fmt_mb(getattr(m.at_peak, key))} MB"]
              for key, label in CATEGORIES]
    items += [
        ["live at the step's start", f"{fmt_mb(m.base_bytes)} MB"],
        ["live at the end of forward", f"{fmt_mb(m.forward_end_bytes)} MB"],
        ["saved for backward", f"{fmt_mb(m.saved_bytes)} MB ({fmt_mb(m.loss_saved_bytes)} MB "
         "by the loss, outside any layer)"],
        ["saved per sample", f"{fmt_mb(m.saved_bytes / run.batch_size if run.batch_size else 0, 2)}"
         f" MB (batch {run.batch_size})"],
    ]
    if m.reserved_peak_bytes is not None:
        items.append(["reserved peak (allocator cache)", f"{fmt_mb(m.reserved_peak_bytes)} MB"])
    if m.rank is not None:
        items.append(["rank", f"{m.rank} (the highest peak of the ranks)"])
    if cost is not None:
        counted = sum(r.memory_bytes.saved_activations for r in cost.layers) + \
            cost.loss.memory_bytes.saved_activations
        items.append(["saved, counted by the cost model",
                      f"{fmt_mb(counted)} MB (estimate; measured ×"
                      f"{m.saved_bytes / counted if counted else float('nan'):.2f})"])
    for r in run.layers:
        if r.checkpointed:
            items.append([f"checkpointed: {r.label}",
                          f"keeps {fmt_mb(r.saved_bytes)} MB (its inputs); recompute "
                          f"{fmt_ms(r.recompute_s)} ms in backward"])
    items += [["note", n] for n in m.notes]
    items.append(["how", f"in a step apart from the timed ones ({fmt_ms(m.step_s)} ms "
                  f"with recording on): {m.method_text}"])
    return {"title": "Memory", "items": items}


def saved_column(rows: Sequence[LayerRow]) -> dict[str, int]:
    """Layer name -> saved bytes, for the table's column."""
    return {r.name: r.saved_bytes for r in rows}


def compare_memory_chart(runs: Sequence[Run], labels: Sequence[str],
                         series: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Saved activations per kind and the peak, run by run (MB): how memory scales with
    the batch and the sequence between the runs."""
    if not any(has_memory(r) for r in runs):
        return None
    totals = [memory_totals(r.layers) for r in runs]
    kinds = kind_order(k for t in totals for k, v in t.items() if v.saved_bytes)
    rows = []
    for k in kinds:
        per_run = {s["key"]: mb(t[k].saved_bytes) if k in t else 0.0
                   for s, t in zip(series, totals)}
        rows.append({"key": k, "label": kind_label(k), "values": per_run, "tips": {
            s["key"]: [f"{kind_label(k)} · {lab}", f"saved {per_run[s['key']]:,.2f} MB"]
            for s, lab in zip(series, labels)}})
    for key, label in (("saved", "saved, all"), ("peak", "peak")):
        values: dict[str, float | None] = {}
        for s, r in zip(series, runs):
            v = None if r.memory is None else getattr(r.memory, f"{key}_bytes")
            values[s["key"]] = None if v is None else mb(v)
        rows.append({"key": key, "label": label, "values": values, "tips": {
            s["key"]: [f"{label} · {lab}", f"{values[s['key']]:,.2f} MB",
                       f"batch {r.batch_size}" + (f", seq {r.seq_len}" if r.seq_len else "")]
            for s, lab, r in zip(series, labels, runs) if values[s["key"]] is not None}})
    b0 = runs[0].batch_size or 1
    ratios = "; ".join(
        f"{lab}: batch x{r.batch_size / b0:.2f}"
        + (f", seq x{r.seq_len / runs[0].seq_len:.2f}" if r.seq_len and runs[0].seq_len else "")
        for lab, r in list(zip(labels, runs))[1:])
    return chart("memory-runs", "grouped", "Saved activations and the peak, run by run",
                 f"MB, measured. Against the first run: {ratios}.", unit="MB", layout="half",
                 series=list(series), rows=rows)


def sweep_memory_charts(points: Sequence[SummaryPoint], axis: str) -> list[dict[str, Any]]:
    """Saved activations and the peak against batch size (or sequence length), one chart
    per group of configurations that differ only along ``axis``."""
    groups: dict[tuple[tuple[str, str], ...], list[SummaryPoint]] = {}
    for p in points:
        if p.saved_bytes is None or not isinstance(p.config.get(axis), int):
            continue
        key = tuple(sorted((k, str(v)) for k, v in p.config.items() if k != axis))
        groups.setdefault(key, []).append(p)
    charts: list[dict[str, Any]] = []
    label = "batch size" if axis == "batch_size" else "sequence length"
    for key, pts in groups.items():
        pts = sorted(pts, key=lambda p: p.config[axis])
        if len(pts) < 2:
            continue
        xs = [p.config[axis] for p in pts]
        series = []
        for name, color, get in (("saved", "#2a9d8f", lambda p: p.saved_bytes),
                                 ("peak", "#e45756", lambda p: p.peak_bytes)):
            series.append({"key": name, "label": f"{name} MB", "color": color, "points": [
                {"x": p.config[axis], "y": mb(get(p) or 0),
                 "tip": [f"{name}: {fmt_mb(get(p))} MB", f"{label} {p.config[axis]}"
                         + (f" · run {p.run_id}" if p.run_id is not None else "")]}
                for p in pts]})
        top = max(mb(p.peak_bytes or p.saved_bytes or 0) for p in pts)
        s0, s1 = pts[0].saved_bytes or 0, pts[-1].saved_bytes or 0
        what = ", ".join(f"{k} {v}" for k, v in key if k in ("model", "image_size", "seq_len",
                                                             "batch_size", "device"))
        caption = (f"{what}. Saved activations x{s1 / s0:.2f} from {xs[0]} to {xs[-1]} "
                   f"(x{xs[-1] / xs[0]:.2f} the {label})." if s0 else what)
        charts.append(chart(f"memory-sweep-{len(charts)}", "lines",
                            f"Saved activations and the peak against {label}", caption,
                            x_label=label, x_scale="log2", y_label="MB", unit="",
                            y_max=top * 1.05 if top else 1.0, layout="half", series=series,
                            markers=[], x_ticks=xs))
    return charts


def memory_cards(run: Run) -> list[dict[str, str]]:
    """The summary card of the peak (none without memory)."""
    m = run.memory
    if m is None:
        return []
    return [{"label": "memory peak", "value": f"{fmt_mb(m.peak_bytes)} MB",
             "title": f"at {m.peak_when}" + (f" ({m.peak_layer})" if m.peak_layer else "")
             + f"; saved for backward {fmt_mb(m.saved_bytes)} MB; measured, "
             + ("CUDA allocator" if m.method == "cuda-allocator" else "CPU allocator")}]
