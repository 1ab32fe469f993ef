"""What the views of image and token sweeps share: the summary cards, the warnings and the
page around their charts and table (:mod:`~layertime.render.views.sweep` draws kinds
against batch and image size, :mod:`~layertime.render.views.sweep_roles` roles against
sequence length)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from layertime.render.views.charts import view
from layertime.render.views.style import fmt_int
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
