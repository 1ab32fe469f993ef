"""The view of a sweep (``layertime.sweep/1``): each kind's share against batch size (and
image size), with the conv/fully connected crossovers marked; for a token sweep
(``--seq-lens``), each role's share against sequence length (and batch size), with the
points where attention overtakes the MLP marked (:mod:`~layertime.render.views.sweep_roles`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layertime.render.views.charts import chart, kind_series
from layertime.render.views.memory import sweep_memory_charts
from layertime.render.views.sweep_page import (
    MIN_SHOWN_SHARE,
    cfg,
    group_label,
    points_table,
    sweep_page,
)
from layertime.render.views.sweep_roles import token_sweep_view
from layertime.render.views.style import fmt_ms, fmt_pct
from layertime.results.sweep import Crossover, SummaryPoint, SweepResult, SweepSummary
from layertime.taxonomy import STEP_KINDS, kind_label, kind_order



def sweep_view(summary: SweepSummary | SweepResult, *, title: str | None = None,
               status: str | None = None) -> dict[str, Any]:
    """The report of a sweep: a chart of each kind's share per group of configurations,
    a table of every point, the crossovers in the headline."""
    if isinstance(summary, SweepResult):
        summary = summary.summarised()
    if any(p.config.get("seq_len") is not None for p in summary.points):
        tokens = token_sweep_view(summary, title=title, status=status)
        tokens["charts"] += sweep_memory_charts(summary.points, "seq_len") + \
            sweep_memory_charts(summary.points, "batch_size")
        return tokens
    points = list(summary.points)
    ok = [p for p in points if p.kinds]
    crossovers = list(summary.crossovers)
    kinds_all = kind_order(k for p in ok for k in (p.kinds or {}))
    shown = [k for k in kinds_all
             if max(((p.kinds or {}).get(k) or 0.0) for p in ok) >= MIN_SHOWN_SHARE]
    hidden = [k for k in kinds_all if k not in shown]
    if crossovers:
        headline = _crossover_headline(crossovers)
    elif ok:
        headline = _no_crossover(ok)
    else:
        headline = "no configuration of this sweep finished"
    notes = ["Shares are of the profiled step; crossovers are interpolated linearly in "
             "log2(batch size) between the two measured batch sizes around the change."]
    notes += [_describe_crossover(c) + "." for c in crossovers]
    if hidden:
        notes.append("Kinds under 0.5% at every point are left out of the charts (see the "
                     "table): " + ", ".join(kind_label(k) for k in hidden) + ".")
    return sweep_page(
        points, ok, title=title, status=status, headline=headline,
        crossovers=len(crossovers), crossover_title="", notes=notes,
        charts=_charts(ok, shown, crossovers) + sweep_memory_charts(ok, "batch_size"),
        table=points_table(
            points, lambda p: p.kinds, [(k, kind_label(k)) for k in kinds_all],
            size="image_size", size_label="image", size_missing="default",
            per_label="ms / sample"),
        failed_as=lambda p: f"{cfg(p, 'model')} batch {cfg(p, 'batch_size')}",
    )


def _charts(ok: Sequence[SummaryPoint], shown: Sequence[str],
            crossovers: Sequence[Crossover]) -> list[dict[str, Any]]:
    """Against batch size, one chart per image size; against image size (when it varies),
    one per batch size."""
    charts: list[dict[str, Any]] = []
    for axis, other in (("batch_size", "image_size"), ("image_size", "batch_size")):
        groups: dict[tuple[Any, ...], list[SummaryPoint]] = {}
        for p in ok:
            key = tuple(cfg(p, k) for k in ("model", other, "device", "dtype", "optimizer"))
            groups.setdefault(key, []).append(p)
        for key, pts in groups.items():
            xs = sorted({cfg(p, axis) for p in pts if cfg(p, axis) is not None})
            if len(xs) < (2 if axis == "image_size" else 1):
                continue
            pts = sorted((p for p in pts if cfg(p, axis) is not None),
                         key=lambda p: cfg(p, axis))
            markers = _markers(key, crossovers) if axis == "batch_size" else []
            charts.append(chart(
                f"sweep-{len(charts)}", "lines",
                ("Share by kind against batch size" if axis == "batch_size"
                 else "Share by kind against image size"),
                group_label(pts[0], axis, "image_size", "image")
                + ("" if markers or axis != "batch_size" else " · no crossover in this range"),
                x_label="batch size" if axis == "batch_size" else "image size (H = W)",
                x_scale="log2" if axis == "batch_size" else "linear",
                y_label="share of step time", unit="%", y_max=100.0,
                layout="half", series=_series(pts, shown, axis), markers=markers,
                x_ticks=xs,
            ))
    return charts


def _series(pts: Sequence[SummaryPoint], shown: Sequence[str], axis: str) -> list[dict[str, Any]]:
    """One line per kind: its share at each point of the group."""
    out = []
    for k, legend in zip(shown, kind_series(shown)):
        out.append({**legend, "points": [{
            "x": cfg(p, axis), "y": ((p.kinds or {}).get(k) or 0.0) * 100,
            "tip": [f"{kind_label(k)}: {fmt_pct((p.kinds or {}).get(k) or 0.0, 2)} of step",
                    f"{'batch' if axis == 'batch_size' else 'image'} {cfg(p, axis)}"
                    f" · step {fmt_ms(p.step_s)} ms"
                    + (f" · run {p.run_id}" if p.run_id is not None else "")],
        } for p in pts]})
    return out


def _markers(key: tuple[Any, ...], crossovers: Sequence[Crossover]) -> list[dict[str, Any]]:
    """The crossovers of one group (model, image size, device, dtype, optimizer)."""
    out = []
    for c in crossovers:
        g = c.group
        if (g.get("model"), g.get("image_size"), g.get("dtype"),
                g.get("optimizer")) != (key[0], key[1], key[3], key[4]):
            continue
        if key[2] not in ("auto", g.get("device")) and not str(
                g.get("device", "")).startswith(str(key[2])):
            continue
        out.append({"x": c.batch_size, "label": f"crossover ≈ {c.batch_size:.1f}",
                    "tip": [_describe_crossover(c)]})
    return out


def _describe_crossover(c: Crossover) -> str:
    label = ", ".join(f"{k} {v}" for k, v in c.group.items() if v is not None)
    return (f"crossover at batch ~{c.batch_size:.1f} (between {c.below} and "
            f"{c.above}; {label}): below it fully connected layers take more time "
            "than conv layers")


def _crossover_headline(crossovers: Sequence[Crossover]) -> str:
    """One line: where fully connected layers stop taking more time than conv layers."""
    groups = [c.group for c in crossovers]
    keys = [k for k in ("model", "image_size", "device", "dtype", "optimizer")
            if len({str(g.get(k)) for g in groups}) > 1]
    if not keys and len({str(g.get("model")) for g in groups}) == 1:
        keys = ["model"]
    names = {"image_size": "image", "model": ""}

    def where(g: dict[str, Any]) -> str:
        return ", ".join((f"{names.get(k, k)} {g.get(k)}").strip() for k in keys
                         if g.get(k) is not None)

    parts = [f"~{c.batch_size:.1f}" + (f" ({where(g)})" if where(g) else "")
             for c, g in zip(crossovers, groups)]
    several = len(crossovers) > 1
    return (f"crossover{'s' if several else ''} at batch {', '.join(parts)}: below "
            f"{'them' if several else 'it'}, fully connected layers take more time than "
            "conv layers; above, conv layers do")


def _no_crossover(ok: Sequence[SummaryPoint]) -> str:
    def share(p: SummaryPoint, k: str) -> float:
        return (p.kinds or {}).get(k) or 0.0

    batches = sorted(b for b in {cfg(p, "batch_size") for p in ok} if b is not None)
    span = f"{batches[0]}–{batches[-1]}" if len(batches) > 1 else f"{batches[0]}" if batches else ""
    has = {k for p in ok for k in (p.kinds or {})}
    if "conv" in has and "linear" in has:
        conv_leads = [share(p, "conv") >= share(p, "linear") for p in ok]
        if all(conv_leads):
            return (f"no crossover: conv layers take more time than fully connected layers at "
                    f"every batch size measured ({span})")
        if not any(conv_leads):
            return (f"no crossover: fully connected layers take more time than conv layers at "
                    f"every batch size measured ({span})")
        return f"conv and fully connected layers trade places across the configurations ({span})"
    leaders = {max((k for k in (p.kinds or {}) if k not in STEP_KINDS),
                   key=lambda k: share(p, k), default="other") for p in ok}
    return ("largest kind at every point: " if len(leaders) == 1 else "largest kinds: ") + \
        ", ".join(kind_label(k) for k in kind_order(leaders)) + (
            f" (batch {span})" if span else "")
