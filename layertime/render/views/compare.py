"""The view of two or more profiled runs side by side: kinds, the step by phase, and
layers aligned by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layertime.errors import LayertimeError
from layertime.render.views.charts import bar, chart, phase_series, table, view
from layertime.render.views.memory import compare_memory_chart
from layertime.render.views.style import (
    PHASE_LABELS,
    RUN_COLORS,
    TIMING_NOTES,
    cell,
    fmt_ms,
    fmt_pct,
    fmt_shape,
)
from layertime.results.run import LayerRow, Run
from layertime.taxonomy import kind_label, kind_order


def compare_view(runs: Sequence[Run], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Two or more runs side by side: kinds, step time by phase, layers aligned by name."""
    if len(runs) < 2:
        raise LayertimeError("a comparison needs two runs or more")
    labels = list(labels) if labels else [f"{r.model} b{r.batch_size} {r.device}" for r in runs]
    if len(set(labels)) != len(labels):
        labels = [f"{i + 1}: {lab}" for i, lab in enumerate(labels)]
    series = [{"key": f"r{i}", "label": lab, "color": RUN_COLORS[i % len(RUN_COLORS)]}
              for i, lab in enumerate(labels)]
    layer_rows, table_rows = _layers(runs, labels)
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False)]
    for i, lab in enumerate(labels):
        cols.append((f"{lab} ms", True))
        if i:
            cols.append((f"× {labels[0]}", True))
    charts = [
        chart("kinds", "grouped", "Share by kind",
              "Each kind's share of the profiled step, run by run.", unit="%", max=100.0,
              layout="half", series=series, rows=_kinds(runs, labels)),
        chart("steps", "stacked", "Profiled step by phase", "Milliseconds per training step.",
              unit="ms", layout="half",
              series=phase_series(("forward", "backward", "update", "step")
                                  + (("comm",) if any(r.phases.comm_exposed_s for r in runs)
                                     else ())),
              rows=_steps(runs, labels)),
        chart("layers", "grouped", "Time per layer, in model order",
              "Milliseconds per step, layers aligned by name.", unit="ms", layout="full",
              series=series, rows=layer_rows),
    ]
    memory = compare_memory_chart(runs, labels, series)
    if memory is not None:
        charts.append(memory)
    base = runs[0].profiled_step_s
    return view(
        "compare",
        "comparison: " + " vs ".join(labels),
        "profiled step: " + ", ".join(
            f"{labels[i]} {fmt_ms(r.profiled_step_s)} ms"
            + ("" if i == 0 else f" (×{r.profiled_step_s / base:.2f})")
            for i, r in enumerate(runs)),
        subheadlines=[f"{labels[i]}: {r.headline()}" for i, r in enumerate(runs)],
        summary=[{"label": labels[i], "value": f"{fmt_ms(r.step_s)} ms",
                  "title": "median plain step"} for i, r in enumerate(runs)],
        charts=charts,
        table=table(cols, table_rows, None),
        sections=[{
            "title": "Configurations",
            "columns": labels,
            "items": [[key] + [str(v) for v in vals] for key, vals in _config_matrix(runs)],
        }],
        notes=[TIMING_NOTES[runs[0].timing]] if runs[0].timing in TIMING_NOTES else [],
        warnings=[f"{labels[i]}: {w}" for i, r in enumerate(runs) for w in r.warnings],
    )


def _kinds(runs: Sequence[Run], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Each kind's share of the step, one bar per run."""
    kind_maps = [r.by_kind() for r in runs]
    kinds = [k for k in kind_order(k for m in kind_maps for k in m)
             if any(m.get(k) and m[k].time_s for m in kind_maps)]
    rows = []
    for k in kinds:
        values: dict[str, float | None] = {}
        tips: dict[str, list[str]] = {}
        for i, m in enumerate(kind_maps):
            kt = m.get(k)
            values[f"r{i}"] = kt.share * 100 if kt else None
            if kt:
                tips[f"r{i}"] = [f"{kind_label(k)} · {labels[i]}",
                                 f"{fmt_pct(kt.share, 2)} of step · {fmt_ms(kt.time_s)} ms",
                                 f"{fmt_pct(kt.params_share, 2)} of parameters"]
        rows.append({"key": k, "label": kind_label(k), "values": values, "tips": tips})
    return rows


def _steps(runs: Sequence[Run], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Each run's profiled step split by phase."""
    bars = []
    for i, r in enumerate(runs):
        p = r.phases
        vals = {"forward": p.forward_s, "backward": p.backward_s, "update": p.update_s,
                "step": p.loss_s + p.step_level_s + p.unattributed_s}
        if any(x.phases.comm_exposed_s for x in runs):
            vals["comm"] = p.comm_exposed_s
        ratio = "" if i == 0 else f" · ×{r.profiled_step_s / runs[0].profiled_step_s:.2f} " \
                                  f"of {labels[0]}"
        tip = [labels[i]] + [f"{PHASE_LABELS[k] if k != 'step' else 'step-level'}: "
                             f"{fmt_ms(v)} ms" for k, v in vals.items()]
        tip += [f"profiled step: {fmt_ms(r.profiled_step_s)} ms{ratio}",
                f"plain step: {fmt_ms(r.step_s)} ms"]
        bars.append(bar(f"r{i}", labels[i], "", {k: v * 1e3 for k, v in vals.items()},
                        r.profiled_step_s * 1e3, fmt_ms(r.profiled_step_s), False, tip))
    return bars


def _layers(runs: Sequence[Run],
            labels: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Layers aligned by name (in first-seen order): the chart's groups and the table's rows."""
    first: dict[str, LayerRow] = {}
    for r in runs:
        for row in r.layers:
            first.setdefault(row.name, row)
    by_name = [{row.name: row for row in r.layers} for r in runs]
    chart_rows: list[dict[str, Any]] = []
    table_rows: list[dict[str, Any]] = []
    for name, ref in first.items():
        values: dict[str, float | None] = {}
        tips: dict[str, list[str]] = {}
        base = by_name[0].get(name)
        cells = [cell(len(table_rows), str(len(table_rows))), cell(ref.label),
                 cell(ref.type), cell(kind_label(ref.kind))]
        for i, rows_of in enumerate(by_name):
            lr = rows_of.get(name)
            values[f"r{i}"] = lr.total_s * 1e3 if lr else None
            if lr:
                ratio = (f" · ×{lr.total_s / base.total_s:.2f} of {labels[0]}"
                         if i and base and base.total_s else "")
                tips[f"r{i}"] = [f"{ref.label} · {labels[i]}",
                                 f"{fmt_ms(lr.total_s)} ms (fwd {fmt_ms(lr.forward_s)}, bwd "
                                 f"{fmt_ms(lr.backward_s)}, update {fmt_ms(lr.update_s)})"
                                 + ratio]
            cells.append(cell(lr.total_s if lr else None, fmt_ms(lr.total_s) if lr else "–"))
            if i:
                q = lr.total_s / base.total_s if lr and base and base.total_s else None
                cells.append(cell(q, f"×{q:.2f}" if q is not None else "–"))
        chart_rows.append({"key": name, "label": ref.label, "sublabel": ref.type,
                           "values": values, "tips": tips})
        table_rows.append({"cells": cells, "muted": False, "kind": ref.kind})
    return chart_rows, table_rows


def _config_matrix(runs: Sequence[Run]) -> list[tuple[str, list[Any]]]:
    def row(label: str, f: Any) -> tuple[str, list[Any]]:
        return label, [f(r) for r in runs]

    return [
        row("model", lambda r: r.model),
        row("batch size", lambda r: r.batch_size),
        row("input shape", lambda r: fmt_shape(r.input_shape)),
        row("dtype", lambda r: r.dtype if not r.amp else f"amp {r.amp}"),
        row("optimizer", lambda r: r.optimizer),
        row("device", lambda r: f"{r.device} ({r.environment.device_name})"),
        row("threads", lambda r: r.environment.threads),
        row("torch", lambda r: r.environment.torch),
        row("measured steps", lambda r: r.steps),
        row("plain step ms", lambda r: fmt_ms(r.step_s)),
        row("profiled step ms", lambda r: fmt_ms(r.profiled_step_s)),
        row("overhead", lambda r: f"×{r.overhead_ratio:.3f}"),
        row("ranks", lambda r: (r.sharding.describe() if r.sharding is not None else
                                f"{r.world_size} (DDP)" if r.world_size > 1 else "1")),
        row("communication ms", lambda r: f"{fmt_ms(r.phases.comm_exposed_s)} exposed, "
            f"{fmt_ms(r.comm_s - r.phases.comm_exposed_s)} hidden" if r.comm_s else "–"),
        row("host", lambda r: r.environment.host),
        row("created", lambda r: r.created or "–"),
    ]
