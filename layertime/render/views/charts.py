"""The building blocks of a view: charts, bars, tables and the view itself, as plain data.

Charts are one of four types, each with the values already in the unit shown:

* ``stacked``: one horizontal bar per row, split into ``series`` segments
  (a bar per layer in model order: forward, backward, update);
* ``grouped``: one group per row, one bar per series (a kind's time share
  beside its parameter share);
* ``lines``: a series of points per kind against a numeric x (a sweep), with
  vertical ``markers`` (crossovers);
* ``scatter``: points against two log axes with the diagonal (predicted
  against measured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from layertime.records import finite
from layertime.render.views.style import (
    KIND_COLORS,
    METRICS,
    PHASE_COLORS,
    PHASE_LABELS,
    fmt_bytes,
    fmt_count,
    fmt_int,
    fmt_ms,
    fmt_pct,
)
from layertime.taxonomy import kind_label

#: The report types a view can be (its ``type``).
VIEW_TYPES = ("profile", "cost", "sweep", "compare", "bench")


def phase_series(keys: Iterable[str]) -> list[dict[str, Any]]:
    """The legend of a chart split by phase."""
    return [{"key": k, "label": PHASE_LABELS[k], "color": PHASE_COLORS[k]} for k in keys]


def kind_series(kinds: Iterable[str]) -> list[dict[str, Any]]:
    """The legend of a chart with one series per kind."""
    return [{"key": k, "label": kind_label(k), "color": KIND_COLORS.get(k, "#888")}
            for k in kinds]


def chart(id: str, type: str, title: str, caption: str, **fields: Any) -> dict[str, Any]:
    """A chart: its id, type, title and caption, then its type's own fields in order."""
    return {"id": id, "type": type, "title": title, "caption": caption, **fields}


def bar(key: str, label: str, sublabel: str, values: Mapping[str, float], total: float,
        total_text: str, muted: bool, tip: list[str]) -> dict[str, Any]:
    """One bar of a stacked chart: its segments (``values``), total, and hover lines."""
    return {"key": key, "label": label, "sublabel": sublabel, "values": dict(values),
            "total": total, "total_text": total_text, "muted": muted, "tip": tip}


def kinds_chart(kinds: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str,
                caption: str) -> dict[str, Any]:
    """Each kind's share of each metric (time, parameters, FLOPs, ...), grouped by kind.

    A kind is a dict with the share of each metric under its name (a
    fraction; None: no bar) and the absolute number under ``time_s``,
    ``params_n``, ``flops_n``, ``memory_n``, ``predicted_s``.
    """
    groups = [{**k, "key": k["kind"], "label": kind_label(k["kind"])} for k in kinds]
    return shares_chart("kinds", groups, metrics, title, caption)


def shares_chart(id: str, groups: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                 title: str, caption: str) -> dict[str, Any]:
    """A grouped chart of shares: one group per ``key`` (shown as ``label``), one bar per
    metric, as :func:`kinds_chart` describes; ``note`` (optional) is a last hover line."""
    rows = []
    for k in groups:
        values: dict[str, float | None] = {}
        tips: dict[str, list[str]] = {}
        label = k["label"]
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
                "saved": f"{fmt_bytes(k.get('saved_n'))} saved for backward",
            }.get(m, "")
            tips[m] = [label, f"{METRICS[m][0]}: {fmt_pct(v, 2)}", detail]
            if k.get("note"):
                tips[m].append(k["note"])
        rows.append({"key": k["key"], "label": label, "values": values, "tips": tips})
    return chart(
        id, "grouped", title, caption, unit="%", max=100.0, layout="half",
        series=[{"key": m, "label": METRICS[m][0], "color": METRICS[m][1]} for m in metrics],
        rows=rows,
    )


def table(columns: Sequence[tuple[str, bool]], rows: list[dict[str, Any]],
          foot: list[str] | None, id: str = "rows") -> dict[str, Any]:
    """A sortable table: (label, numeric) columns, rows of cells, an optional footer."""
    return {"id": id, "columns": [{"label": c, "num": n} for c, n in columns],
            "rows": rows, "foot": foot}


def summary(items: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    """The headline numbers under the title: (label, value, hover title)."""
    return [{"label": a, "value": b, "title": c} for a, b, c in items]


def view(type: str, title: str, headline: str, *, summary: list[dict[str, str]],
         charts: list[dict[str, Any]], table: dict[str, Any], sections: list[dict[str, Any]],
         notes: list[str], warnings: list[str], subheadlines: Sequence[str] = (),
         grid: str | None = None) -> dict[str, Any]:
    """A whole view, JSON-ready (non-finite numbers become null)."""
    out: dict[str, Any] = {"type": type, "title": title, "headline": headline,
                           "subheadlines": list(subheadlines), "summary": summary,
                           "charts": charts}
    if grid is not None:
        out["grid"] = grid
    out.update(table=table, sections=sections, notes=notes, warnings=warnings)
    return finite(out)  # type: ignore[no-any-return]
