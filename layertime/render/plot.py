"""PNG and SVG plots of a report's charts (matplotlib, imported only when a plot is made).

The plots draw the same views as the HTML report (:mod:`layertime.render.views`):
the per-layer stacked bars and the by-kind shares of a profile or a cost
estimate, each kind's share against batch size for a sweep, runs side by
side for a comparison.  pyplot is never imported: figures are plain
``matplotlib.figure.Figure`` objects drawn by the Agg renderer, so making a
plot changes no global state and needs no display.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from layertime.errors import LayertimeError
from layertime.files import write_bytes_atomic
from layertime.render.output import PLOT_FORMATS, check_output, plot_format
from layertime.render.views import view_of

_MUTED = "#6b7280"
#: Pixels per inch of a PNG.
_DPI = 160
_INK = "#1b2330"


def _rc() -> dict[str, Any]:
    return {
        "font.size": 8.5,
        "axes.titlesize": 9.5,
        "axes.titleweight": "bold",
        "axes.labelsize": 8.5,
        "axes.edgecolor": "#b9bec6",
        "axes.labelcolor": _INK,
        "xtick.color": _MUTED,
        "ytick.color": _INK,
        "xtick.labelsize": 7.5,
        "ytick.labelsize": 7.5,
        "legend.fontsize": 7.5,
        "legend.frameon": False,
        "svg.fonttype": "none",
        "svg.hashsalt": "layertime",
    }


def _height(c: Mapping[str, Any]) -> float:
    """Inches a chart needs (with a legend row or two above it)."""
    if c["type"] == "stacked":
        return min(0.19 * len(c["rows"]), 14.0) + 1.3
    if c["type"] == "grouped":
        n = max(1, len(c["series"]))
        return min(len(c["rows"]) * (0.11 * n + 0.14), 14.0) + 1.3
    if c["type"] == "scatter":
        return 3.8
    return 3.3


def _row_font(c: Mapping[str, Any]) -> float:
    n = len(c["rows"]) * (1 if c["type"] == "stacked" else max(1, len(c["series"])) * 0.6)
    return max(4.0, min(7.5, 7.5 * 70 / max(70.0, n)))


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=2.5)


def _stacked(ax: Any, c: Mapping[str, Any]) -> None:
    rows = c["rows"]
    ys = list(range(len(rows)))
    left = [0.0] * len(rows)
    for se in c["series"]:
        vals = [float(r["values"].get(se["key"]) or 0.0) for r in rows]
        bars = ax.barh(ys, vals, left=left, height=0.72, color=se["color"], label=se["label"],
                       linewidth=0)
        for i, patch in enumerate(bars.patches):
            patch.set_gid(f"{c['id']}-bar-{i}-{se['key']}")
        left = [a + b for a, b in zip(left, vals)]
    fs = _row_font(c)
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=fs)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r.get("muted"):
            tick.set_color(_MUTED)
            tick.set_fontstyle("italic")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    top = max(left) if left else 1.0
    ax.set_xlim(0, (top or 1.0) * 1.16)
    for y, (r, x) in enumerate(zip(rows, left)):
        ax.text(x, y, " " + str(r.get("total_text", "")), va="center", ha="left",
                fontsize=max(4.0, fs - 1), color=_MUTED)
    ax.set_xlabel(c["unit"])
    ax.grid(axis="x", color="#eceef1", linewidth=0.8)
    ax.set_axisbelow(True)


def _grouped(ax: Any, c: Mapping[str, Any]) -> None:
    rows, series = c["rows"], c["series"]
    n = max(1, len(series))
    h = 0.8 / n
    top = 0.0
    fs = _row_font(c)
    for j, se in enumerate(series):
        ys, vals = [], []
        for i, r in enumerate(rows):
            v = r["values"].get(se["key"])
            if v is None:
                continue
            ys.append(i - 0.4 + h * (j + 0.5))
            vals.append(float(v))
        bars = ax.barh(ys, vals, height=h * 0.92, color=se["color"], label=se["label"],
                       linewidth=0)
        for (y, v), patch in zip(zip(ys, vals), bars.patches):
            patch.set_gid(f"{c['id']}-bar-{se['key']}-{y:.3f}")
            if v:
                ax.text(v, y, " " + _num(v, c["unit"]), va="center", ha="left",
                        fontsize=max(4.0, fs - 1.5), color=_MUTED)
        top = max([top, *vals])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=fs)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if c["unit"] == "%":
        ax.set_xlim(0, min(100.0, max(top * 1.18, 1.0)) if top < 85 else 112)
        ax.xaxis.set_major_formatter(_formatter(lambda v: f"{v:.0f}%"))
    else:
        ax.set_xlim(0, (top or 1.0) * 1.18)
        ax.set_xlabel(c["unit"])
    ax.grid(axis="x", color="#eceef1", linewidth=0.8)
    ax.set_axisbelow(True)


def _lines(ax: Any, c: Mapping[str, Any]) -> None:
    log = c.get("x_scale") == "log2"
    for se in c["series"]:
        pts = sorted(se["points"], key=lambda p: p["x"])
        line = ax.plot([p["x"] for p in pts], [p["y"] for p in pts], marker="o", markersize=4,
                       linewidth=1.6, color=se["color"], label=se["label"])[0]
        line.set_gid(f"{c['id']}-series-{se['key']}")
    if log:
        ax.set_xscale("log", base=2)
    ticks = c.get("x_ticks") or []
    if ticks:
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(_null_locator())
    for mk in c.get("markers", ()):
        ax.axvline(mk["x"], color="#c0392b", linestyle="--", linewidth=1.2,
                   gid=f"{c['id']}-marker")
        ax.annotate(mk["label"], xy=(mk["x"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(4, -2), textcoords="offset points", ha="left", va="top",
                    color="#c0392b", fontsize=7.5, fontweight="bold")
    ax.set_ylim(0, c.get("y_max") or 100)
    if c.get("unit") == "%":
        ax.yaxis.set_major_formatter(_formatter(lambda v: f"{v:.0f}%"))
    ax.set_xlabel(c["x_label"] + (" (log scale)" if log else ""))
    ax.set_ylabel(c["y_label"])
    ax.grid(color="#eceef1", linewidth=0.8)
    ax.set_axisbelow(True)


def _scatter(ax: Any, c: Mapping[str, Any]) -> None:
    colors = {se["key"]: se for se in c["series"]}
    pts = c["points"]
    for key, se in colors.items():
        mine = [p for p in pts if p["series"] == key]
        if mine:
            coll = ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], s=22,
                              color=se["color"], label=se["label"], edgecolors="white",
                              linewidths=0.5, zorder=3)
            coll.set_gid(f"{c['id']}-points-{key}")
    vals = [v for p in pts for v in (p["x"], p["y"])] or [1.0, 10.0]
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    ax.plot([lo, hi], [lo, hi], color="#9aa1ab", linestyle="--", linewidth=1, zorder=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(c["x_label"] + " (log scale)")
    ax.set_ylabel(c["y_label"] + " (log scale)")
    ax.grid(color="#eceef1", linewidth=0.8)
    ax.set_axisbelow(True)


_DRAW = {"stacked": _stacked, "grouped": _grouped, "lines": _lines, "scatter": _scatter}


def _num(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v:.1f}%"
    a = abs(v)
    if 0 < a < 0.1:
        return f"{v:.3g}"
    return f"{v:,.{1 if a >= 100 else 2 if a >= 10 else 3}f}"


def _formatter(f: Any) -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f(v))


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def figure(obj: Any, **kw: Any) -> Any:
    """A matplotlib Figure of the report's charts (headline on top)."""
    # Long on purpose: the figure's layout (legends, columns, grid, sizes) read top
    # to bottom as it is built; each chart itself is drawn by _draw.
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - a dependency, but say what to do
        raise LayertimeError("plots need matplotlib: pip install matplotlib") from e
    del matplotlib
    view = view_of(obj, **kw)
    charts = view["charts"]
    if not charts:
        raise LayertimeError("nothing to plot: the result has no chart")
    # Each chart lists its series, except sweep line charts: kinds keep their colours
    # across charts, so the first of them lists every kind once for all.
    legends: dict[int, list[dict[str, Any]]] = {}
    lines = [c for c in charts if c["type"] == "lines"]
    for c in charts:
        if c["type"] != "lines":
            legends[id(c)] = list(c.get("series") or ())
    union: dict[str, dict[str, Any]] = {}
    for c in lines:
        for se in c["series"]:
            union.setdefault(se["key"], se)
    # A sweep (every chart a line chart) lists its kinds once, across the figure's top,
    # so that no panel is narrowed by the legend and the panels line up.
    figure_legend = bool(lines) and len(lines) == len(charts)
    if lines and not figure_legend:
        legends[id(lines[0])] = list(union.values())
    halves = [c for c in charts if c.get("layout") != "full"]
    fulls = [c for c in charts if c.get("layout") == "full"]
    # Half charts: two columns, the taller chart alone where it fits.
    cols: list[list[dict[str, Any]]] = [[], []] if len(halves) > 1 else [halves] if halves else []
    if len(halves) > 1:
        heights = [0.0, 0.0]
        for c in halves:
            i = 0 if heights[0] <= heights[1] else 1
            cols[i].append(c)
            heights[i] += _height(c)
    col_h = max((sum(_height(c) for c in col) for col in cols), default=0.0)
    full_h = [_height(c) for c in fulls]
    head = textwrap.wrap(view["headline"], 120 if len(cols) > 1 else 95)
    head_h = 0.25 + 0.18 * len(head)
    width = 12.0 if len(cols) > 1 else 8.0
    legend_ncol = min(len(union), 5)
    legend_h = 0.22 * math.ceil(len(union) / legend_ncol) + 0.1 if figure_legend else 0.0
    with _rc_context(_rc()):
        # At the resolution it is saved in, so that text measured for the legends is the
        # size it is drawn.
        fig = Figure(figsize=(width, head_h + legend_h + col_h + sum(full_h)), dpi=_DPI,
                     layout="constrained")
        engine: Any = fig.get_layout_engine()
        engine.set(h_pad=0.06, w_pad=0.06)
        parts = ([legend_h] if figure_legend else []) + ([col_h] if cols else []) + full_h
        subs = fig.subfigures(len(parts), 1, height_ratios=parts, squeeze=False)[:, 0]
        fig.suptitle("\n".join(head), x=0.01, ha="left", fontsize=9.5, fontweight="bold",
                     color=_INK)
        if figure_legend:
            from matplotlib.patches import Patch

            handles = [Patch(color=se["color"], label=se["label"]) for se in union.values()]
            subs[0].legend(handles=handles, loc="center left", ncol=legend_ncol,
                           handlelength=1.0, handleheight=0.9, columnspacing=1.2,
                           borderpad=0.2)
            subs = subs[1:]
        k = 0
        drawn: dict[Any, tuple[list[Any], int]] = {}
        if cols and figure_legend:
            # A sweep: equal panels on a grid, in reading order, so rows line up.
            ncols = len(cols)
            nrows = math.ceil(len(halves) / ncols)
            grid = subs[0].subplots(nrows, ncols, squeeze=False)
            for i, ax in enumerate(grid.flat):
                if i < len(halves):
                    _draw(ax, halves[i], None, drawn)
                else:
                    ax.set_visible(False)
            cols = []
            k = 1
        if cols:
            ratio = [5, 7] if len(cols) == 2 else [1]
            colfigs = subs[0].subfigures(1, len(cols), width_ratios=ratio, squeeze=False)[0]
            for cf, col in zip(colfigs, cols):
                hs = [_height(c) for c in col]
                if sum(hs) < col_h:
                    hs.append(col_h - sum(hs))
                axes = cf.subplots(len(hs), 1, height_ratios=hs, squeeze=False)[:, 0]
                for ax, c in zip(axes, col):
                    _draw(ax, c, legends.get(id(c)), drawn)
                for ax in axes[len(col):]:
                    ax.set_visible(False)
            k = 1
        for c in fulls:
            ax = subs[k].subplots(1, 1)
            _draw(ax, c, legends.get(id(c)), drawn)
            k += 1
        _fit_legends(fig, drawn)
    return fig


def _draw(ax: Any, c: Mapping[str, Any], legend: Sequence[Mapping[str, Any]] | None,
          drawn: dict[Any, tuple[list[Any], int]]) -> None:
    """One chart; ``legend`` is the series to list above it (None: no legend), recorded in
    ``drawn`` (axes: handles, columns) for :func:`_fit_legends`."""
    from matplotlib.patches import Patch

    _style(ax)
    _DRAW[c["type"]](ax, c)
    # A sweep's charts all plot shares against one axis: the title says which configuration.
    title = c["caption"] if c["type"] == "lines" and c.get("caption") else c["title"]
    # Wrapped to the panel's width, so that two panels' titles never run into each other.
    ax.set_title("\n".join(textwrap.wrap(title, _panel_chars(ax))), loc="left")
    if legend:
        handles = [Patch(color=se["color"], label=se["label"]) for se in legend]
        drawn[ax] = (handles, min(len(legend), 4))
        _legend(ax, *drawn[ax])
    else:
        ax.set_title(ax.get_title(loc="left"), loc="left", pad=4.0)


def _legend(ax: Any, handles: Sequence[Any], ncol: int) -> None:
    """The legend above a chart, in ``ncol`` columns, and room for it under the title.

    It takes no part in the layout: :func:`_fit_legends` gives it fewer columns when it
    is wider than its panel, rather than the panel being narrowed to make room."""
    leg = ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=ncol,
                    borderaxespad=0.3, handlelength=1.0, handleheight=0.9, columnspacing=1.2,
                    borderpad=0.2)
    leg.set_in_layout(False)
    pad = 4.0 + 12.0 * math.ceil(len(handles) / ncol) + 2
    ax.set_title(ax.get_title(loc="left"), loc="left", pad=pad)


def _fit_legends(fig: Any, drawn: dict[Any, tuple[list[Any], int]]) -> None:
    """Give each legend wider than the room right of its panel's left edge (to its column's
    edge) fewer columns, so that no legend runs into the panel beside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # measures text; saving as SVG switches canvas itself
    for _ in range(4):
        fig.draw_without_rendering()
        renderer = canvas.get_renderer()
        changed = False
        for ax, (handles, ncol) in drawn.items():
            if ncol <= 1:
                continue
            # A tenth of an inch to spare: text set at the saved resolution runs a little wider.
            room = (ax.get_figure(root=False).bbox.x1 - ax.get_window_extent(renderer).x0
                    - 0.1 * fig.dpi)
            if ax.get_legend().get_window_extent(renderer).width <= room:
                continue
            drawn[ax] = (handles, ncol - 1)
            _legend(ax, *drawn[ax])
            changed = True
        if not changed:
            return


def _panel_chars(ax: Any) -> int:
    """About how many characters of legend or title text fit across a panel."""
    root = ax.figure  # a subfigure's .figure is its parent, up to the figure itself
    while not hasattr(root, "get_figwidth") and getattr(root, "figure", root) is not root:
        root = root.figure
    fig_w = root.get_figwidth() if hasattr(root, "get_figwidth") else 8.0
    return max(30, int(ax.get_position().width * fig_w * 13))


class _rc_context:
    """``matplotlib.rc_context`` without importing pyplot."""

    def __init__(self, rc: Mapping[str, Any]) -> None:
        import matplotlib

        params: Any = dict(rc)
        self._ctx = matplotlib.rc_context(params)

    def __enter__(self) -> None:
        self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


def render_plot(obj: Any, fmt: str = "png", **kw: Any) -> bytes:
    """The plot as PNG or SVG bytes."""
    if fmt not in PLOT_FORMATS.values():
        raise LayertimeError(f"unknown plot format {fmt!r}: png or svg")
    fig = figure(obj, **kw)
    buf = io.BytesIO()
    with _rc_context(_rc()):
        metadata = {"Date": None} if fmt == "svg" else {"Software": "layertime"}
        fig.savefig(buf, format=fmt, dpi=_DPI, metadata=metadata, facecolor="white")
    return buf.getvalue()


def write_plot(obj: Any, path: str | Path, **kw: Any) -> Path:
    """Write the plot to ``path`` (.png or .svg) atomically: a temporary file, then a rename."""
    p = Path(path)
    fmt = plot_format(p)
    check_output(p)  # before drawing: a bad path fails fast
    data = render_plot(obj, fmt, **kw)
    write_bytes_atomic(p, data)
    return p


__all__: Sequence[str] = ("figure", "render_plot", "write_plot")
