"""The view of a token sweep (``--seq-lens``): each role's share against sequence length,
with the points where attention and the MLP trade places marked (interpolated).

A token sweep's stored points hold each role's share of the profiled step
(``SummaryPoint.roles``) and the sweep its crossovers along the sequence axis
(``SweepSummary.seq_crossovers``); this view draws them as the image sweep's
view (:mod:`~layertime.render.views.sweep`) draws kinds against batch size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from layertime.render.views.charts import chart
from layertime.render.views.roles import ROLE_ORDER, role_label
from layertime.render.views.style import ROLE_COLORS, fmt_ms, fmt_pct
from layertime.render.views.sweep_page import (
    MIN_SHOWN_SHARE,
    cfg,
    group_label,
    points_table,
    sweep_page,
)
from layertime.results.sweep import SeqCrossover, SummaryPoint, SweepSummary

_GROUP = ("model", "batch_size", "device", "dtype", "optimizer")


def token_sweep_view(summary: SweepSummary, *, title: str | None = None,
                     status: str | None = None) -> dict[str, Any]:
    """The report of a token sweep: each role's share against sequence length (and batch
    size, when several were measured), a table of every point, the crossovers in the
    headline."""
    points = list(summary.points)
    ok = [p for p in points if p.roles]
    crossovers = list(summary.seq_crossovers)
    present = {k for p in ok for k in (p.roles or {})}
    roles_all = [k for k in ROLE_ORDER if k in present] + sorted(present - set(ROLE_ORDER))
    shown = [k for k in roles_all if max(_share(p, k) for p in ok) >= MIN_SHOWN_SHARE]
    hidden = [k for k in roles_all if k not in shown]
    said = [_describe(c, ok) for c in crossovers]
    if crossovers:
        headline = _crossover_headline(crossovers, ok)
    elif ok:
        headline = _no_crossover(ok)
    else:
        headline = "no configuration of this sweep finished"
    notes = ["Shares are of the profiled step, by role (layertime.roles: attention is its "
             "projections and its score/softmax core, MLP the feed-forward layers); "
             "crossovers are interpolated linearly in log2(sequence length) between the two "
             "measured lengths around the change, not measured there."]
    notes += [d + "." for d in said]
    if hidden:
        notes.append("Roles under 0.5% at every point are left out of the charts (see the "
                     "table): " + ", ".join(role_label(k) for k in hidden) + ".")
    return sweep_page(
        points, ok, title=title, status=status, headline=headline,
        crossovers=len(crossovers),
        crossover_title="where attention and the MLP trade places (interpolated)",
        notes=notes, charts=_charts(ok, shown, crossovers), table=points_table(
            points, lambda p: p.roles, [(k, role_label(k)) for k in roles_all],
            size="seq_len", size_label="seq", size_missing="–", per_label="ms / sequence"),
        failed_as=lambda p: (f"{cfg(p, 'model')} batch {cfg(p, 'batch_size')} seq "
                             f"{cfg(p, 'seq_len')}"),
    )


def _share(p: SummaryPoint, role: str) -> float:
    return (p.roles or {}).get(role) or 0.0


def _charts(ok: Sequence[SummaryPoint], shown: Sequence[str],
            crossovers: Sequence[SeqCrossover]) -> list[dict[str, Any]]:
    """Against sequence length, one chart per batch size; against batch size (when it
    varies), one per sequence length.  A sweep of one configuration gets its one point."""
    charts: list[dict[str, Any]] = []
    for least in (2, 1):
        for axis in ("seq_len", "batch_size") if least == 2 else ("seq_len",):
            group_by = [k if k != axis else "seq_len" for k in _GROUP]
            groups: dict[tuple[Any, ...], list[SummaryPoint]] = {}
            for p in ok:
                if cfg(p, axis) is not None:
                    groups.setdefault(tuple(cfg(p, k) for k in group_by), []).append(p)
            for pts in groups.values():
                xs = sorted({cfg(p, axis) for p in pts})
                if len(xs) < least:
                    continue
                pts = sorted(pts, key=lambda p: cfg(p, axis))
                markers = _markers(pts[0], crossovers, ok) if axis == "seq_len" else []
                seq = axis == "seq_len"
                charts.append(chart(
                    f"sweep-{len(charts)}", "lines",
                    "Share by role against " + ("sequence length" if seq else "batch size"),
                    group_label(pts[0], axis, "seq_len", "seq")
                    + ("" if markers or not seq else " · no crossover in this range"),
                    x_label="sequence length (tokens)" if seq else "batch size",
                    x_scale="log2", y_label="share of step time", unit="%", y_max=100.0,
                    layout="half", series=_series(pts, shown, axis), markers=markers,
                    x_ticks=xs,
                ))
        if charts:
            break
    return charts


def _series(pts: Sequence[SummaryPoint], shown: Sequence[str], axis: str) -> list[dict[str, Any]]:
    """One line per role: its share at each point of the group."""
    return [{"key": k, "label": role_label(k), "color": ROLE_COLORS.get(k, "#888"), "points": [{
        "x": cfg(p, axis), "y": _share(p, k) * 100,
        "tip": [f"{role_label(k)}: {fmt_pct(_share(p, k), 2)} of step",
                f"seq {cfg(p, 'seq_len')} · batch {cfg(p, 'batch_size')}"
                f" · step {fmt_ms(p.step_s)} ms"
                + (f" · run {p.run_id}" if p.run_id is not None else "")],
    } for p in pts]} for k in shown]


def _same_group(p: SummaryPoint, c: SeqCrossover) -> bool:
    """Whether a point belongs to a crossover's group; the group names the device the run
    resolved (``cpu``) where the point's configuration may say ``auto``."""
    g = c.group
    if (g.get("model"), g.get("batch"), g.get("dtype"), g.get("optimizer")) != (
            cfg(p, "model"), cfg(p, "batch_size"), cfg(p, "dtype"), cfg(p, "optimizer")):
        return False
    device = str(cfg(p, "device"))
    return device in ("auto", str(g.get("device"))) or str(g.get("device", "")).startswith(device)


def _attention_leads_above(c: SeqCrossover, ok: Sequence[SummaryPoint]) -> bool:
    """Which way the crossover goes: attention ahead of the MLP at the measured length
    above it (the usual way: attention's work grows with the square of the length)."""
    for p in ok:
        if _same_group(p, c) and cfg(p, "seq_len") == c.above:
            return _share(p, "attention") > _share(p, "mlp")
    return True


def _who(c: SeqCrossover, ok: Sequence[SummaryPoint]) -> tuple[str, str]:
    return ("attention", "the MLP") if _attention_leads_above(c, ok) else ("the MLP", "attention")


def _describe(c: SeqCrossover, ok: Sequence[SummaryPoint]) -> str:
    first, second = _who(c, ok)
    label = ", ".join(f"{k} {v}" for k, v in c.group.items() if v is not None)
    return (f"{first} overtakes {second} at seq ~{c.seq_len:.0f} (interpolated between "
            f"{c.below} and {c.above}; {label}): above it {first} takes more time than "
            f"{second}")


def _markers(p: SummaryPoint, crossovers: Sequence[SeqCrossover],
             ok: Sequence[SummaryPoint]) -> list[dict[str, Any]]:
    """The crossovers of ``p``'s group (model, batch size, device, dtype, optimizer)."""
    return [{"x": c.seq_len, "label": f"crossover ≈ {c.seq_len:.0f} (interpolated)",
             "tip": [_describe(c, ok)]} for c in crossovers if _same_group(p, c)]


def _crossover_headline(crossovers: Sequence[SeqCrossover], ok: Sequence[SummaryPoint]) -> str:
    """One line: where attention and the MLP trade places, per group when there are several."""
    groups = [c.group for c in crossovers]
    keys = [k for k in ("model", "batch", "device", "dtype", "optimizer")
            if len({str(g.get(k)) for g in groups}) > 1]

    def where(g: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {g.get(k)}".replace("model ", "") for k in keys
                         if g.get(k) is not None)

    ways = {_who(c, ok) for c in crossovers}
    if len(ways) == 1:
        first, second = next(iter(ways))
        parts = [f"~{c.seq_len:.0f}" + (f" ({where(g)})" if where(g) else "")
                 for c, g in zip(crossovers, groups)]
        return (f"{first} overtakes {second} at sequence length {', '.join(parts)} "
                f"(interpolated): above {'them' if len(parts) > 1 else 'it'}, {first} takes "
                f"more time than {second}")
    return "; ".join(_describe(c, ok) for c in crossovers)


def _no_crossover(ok: Sequence[SummaryPoint]) -> str:
    seqs = sorted({cfg(p, "seq_len") for p in ok})
    span = f"{seqs[0]}–{seqs[-1]}" if len(seqs) > 1 else f"{seqs[0]}"
    leads = [_share(p, "attention") >= _share(p, "mlp") for p in ok]
    if all(leads):
        return (f"no crossover: attention takes more time than the MLP at every sequence "
                f"length measured ({span})")
    if not any(leads):
        return (f"no crossover: the MLP takes more time than attention at every sequence "
                f"length measured ({span})")
    return f"attention and the MLP trade places across the configurations ({span})"
