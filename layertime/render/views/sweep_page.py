"""What the views of image and token sweeps share: the summary cards, the warnings and the
page around their charts and table (:mod:`~layertime.render.views.sweep` draws kinds
against batch and image size, :mod:`~layertime.render.views.sweep_roles` roles against
sequence length)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from layertime.render.views.charts import table, view
from layertime.render.views.style import cell, fmt_int, fmt_ms, fmt_pct
from layertime.results.sweep import SummaryPoint

#: A kind or role under this share at every point is left out of the charts (it stays in
#: the table).
MIN_SHOWN_SHARE = 0.005


def cfg(p: SummaryPoint, key: str) -> Any:
    """One value of a point's configuration (None when the sweep did not set it)."""
    return p.config.get(key)


def group_label(p: SummaryPoint, axis: str, size: str, size_label: str) -> str:
    """A chart's title: what its points share, all of the configuration but ``axis``
    (``size`` is the other axis: ``image_size`` or ``seq_len``, named ``size_label``)."""
    parts = [str(cfg(p, "model"))]
    if axis != "batch_size":
        parts.append(f"batch {cfg(p, 'batch_size')}")
    if axis != size:
        parts.append(f"{size_label} {cfg(p, size) or 'default'}")
    parts += [str(cfg(p, "device")), str(cfg(p, "dtype")), str(cfg(p, "optimizer"))]
    return " · ".join(parts)


def points_table(
    points: Sequence[SummaryPoint],
    shares: Callable[[SummaryPoint], Mapping[str, float] | None],
    columns: Sequence[tuple[str, str]],
    *,
    size: str,
    size_label: str,
    size_missing: str,
    per_label: str,
) -> dict[str, Any]:
    """Every point of the sweep, one row each: its configuration (``size`` is
    ``image_size`` or ``seq_len``, shown as ``size_missing`` when unset), status and
    step time, then its share of each (key, label) of ``columns`` from ``shares``."""
    cols = [("#", True), ("model", False), ("batch", True), (size_label, True),
            ("device", False), ("dtype", False), ("optimizer", False), ("status", False),
            ("run", True), ("step ms", True), (per_label, True)]
    cols += [(f"{label} %", True) for _, label in columns]
    body: list[dict[str, Any]] = []
    for p in points:
        b = cfg(p, "batch_size")
        per = p.step_s / b if p.step_s is not None and b else None
        status = str(p.status if p.status != "skipped" else "stored") + (
            f": {p.error}" if p.error else "")
        x = cfg(p, size)
        cells = [cell(len(body), str(len(body))), cell(cfg(p, "model")), cell(b),
                 cell(x, str(x) if x is not None else size_missing),
                 cell(cfg(p, "device")), cell(cfg(p, "dtype")), cell(cfg(p, "optimizer")),
                 cell(p.status, status), cell(p.run_id), cell(p.step_s, fmt_ms(p.step_s)),
                 cell(per, fmt_ms(per))]
        own = shares(p) or {}
        cells += [cell(own.get(k), fmt_pct(own[k]) if k in own else "–") for k, _ in columns]
        body.append({"cells": cells, "muted": not shares(p)})
    return table(cols, body, None, id="points")


def sweep_page(
    points: Sequence[SummaryPoint],
    ok: Sequence[SummaryPoint],
    *,
    title: str | None,
    status: str | None,
    headline: str,
    crossovers: int,
    crossover_title: str,
    notes: list[str],
    charts: list[dict[str, Any]],
    table: dict[str, Any],
    failed_as: Callable[[SummaryPoint], str],
) -> dict[str, Any]:
    """The sweep's page: cards counting its configurations, one warning per failed point
    (``failed_as`` names its configuration) and one when the sweep did not finish."""
    failed = [p for p in points if p.status == "failed"]
    cards = [
        {"label": "configurations", "value": fmt_int(len(points)), "title": ""},
        {"label": "finished", "value": fmt_int(len(ok)), "title": ""},
        {"label": "failed", "value": fmt_int(len(failed)), "title": "out of memory or refused"},
        {"label": "crossovers", "value": fmt_int(crossovers), "title": crossover_title},
    ]
    warnings = []
    if status and status != "ok":
        warnings.append(f"this sweep is {status}: it shows the configurations stored so far")
    warnings += [f"failed: {failed_as(p)}: {p.error}" for p in failed]
    return view(
        "sweep",
        title or "sweep: " + ", ".join(dict.fromkeys(str(cfg(p, "model")) for p in points)),
        headline,
        summary=cards,
        charts=charts,
        grid="even",
        table=table,
        sections=[],
        notes=notes,
        warnings=warnings,
    )
