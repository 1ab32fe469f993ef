"""Terminal tables of a run joined with a cost estimate, and of an efficiency fit.

Per kind and per layer: measured time and its share beside the predicted
time and share (labelled as estimates), and beside the share of FLOPs,
parameters and memory: the table that shows why "most parameters" is not
"most time".  Errors of predicted time are shown only when the prediction is
for the device that measured (a calibrated local profile).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import ms, pct
from layertime.render.layout import Column, Laid, Row, lay_out, to_text
from layertime.results.cost.calibration import Calibration, EfficiencyFit
from layertime.results.cost.joined import Comparison, JoinedKind, JoinedRow
from layertime.taxonomy import KIND_LABELS


def _pct_nz(x: float | None) -> str:
    """A share, or '-' for none or zero (a layer with no counted FLOPs, no parameters)."""
    return "-" if not x else f"{x:.1%}"


def _points(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


def _err(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


def _headers(cmp: Comparison) -> list[str]:
    cols = ["measured ms", "time %"]
    if cmp.predicted:
        cols += ["est. ms", "est. %", "est.-meas. pts"]
        if cmp.same_device:
            cols.append("est. error")
    return cols + ["FLOPs %", "params %", "memory %"]


def _cells(cmp: Comparison, x: JoinedRow | JoinedKind) -> list[str]:
    cells = [ms(x.measured_s), pct(x.measured_share)]
    if cmp.predicted:
        pts = (None if x.predicted_share is None or x.measured_share is None
               else 100.0 * (x.predicted_share - x.measured_share))
        cells += [ms(x.predicted_s), pct(x.predicted_share), _points(pts)]
        if cmp.same_device:
            cells.append(_err(x.error))
    return cells + [_pct_nz(x.flops_share), _pct_nz(x.params_share), _pct_nz(x.memory_share)]


def _columns(first: str, cmp: Comparison) -> list[Column]:
    cols = [Column(first, align="left", name=True)]
    if first == "layer":
        cols.append(Column("type", align="left", drop=3, shrink=6, min_width=10))
    drops = {"FLOPs %": 4, "params %": 5, "memory %": 7, "est. ms": 2, "measured ms": 0}
    for h in _headers(cmp):
        cols.append(Column(h, drop=drops.get(h, 0)))
    return cols


def kind_table(cmp: Comparison, width: int | None = None) -> Laid:
    """One row per kind: time share beside predicted, FLOP, parameter and memory shares."""
    rows = [Row((f"{KIND_LABELS.get(k.kind, k.kind)} ({k.rows})", *_cells(cmp, k)))
            for k in cmp.kinds]
    return lay_out(_columns("kind", cmp), rows, width)


def layer_table(cmp: Comparison, width: int | None = None) -> Laid:
    """One row per layer (and the loss), in model order; a side's missing row shows '-'."""
    rows = []
    for r in cmp.rows:
        mark = "" if r.in_run and r.in_cost else " (run only)" if r.in_run else " (cost only)"
        rows.append(Row((f"{r.label}{mark}", r.type, *_cells(cmp, r))))
    return lay_out(_columns("layer", cmp), rows, width)


def notes(cmp: Comparison) -> list[str]:
    """What the columns are, what is left out, and how the estimate was made."""
    left = sum(cmp.not_modelled_s.values())
    step = cmp.profiled_step_s or 1.0
    lines = [
        "time %: measured share of the layers and the loss "
        f"({ms(cmp.measured_total_s)} ms; zero_grad, data and unattributed, "
        f"{ms(left)} ms = {left / step:.1%} of the profiled step, are not modelled and left out); "
        "FLOPs, params, memory %: counted by the cost model, '-' for none (ops without a FLOP "
        "formula, such as ReLU or pooling, count no FLOPs; memory: weights, gradients, "
        "optimizer state, saved activations)",
    ]
    if cmp.predicted:
        where = cmp.predicted_device_name or cmp.predicted_device
        lines.append(
            f"est.: ESTIMATES, not measurements: roofline on {where} "
            f"[{cmp.predicted_device}; efficiencies: {cmp.efficiency_source}]; "
            f"est. total {ms(cmp.predicted_total_s)} ms; est.-meas. pts: predicted share "
            "minus measured share, percentage points"
        )
        worst = cmp.worst_kind()
        if worst is not None:
            lines.append(
                f"largest kind difference: {worst.label} {worst.share_points:+.1f} pts "
                f"(est. {worst.predicted_share or 0.0:.1%} vs measured {worst.measured_share:.1%})"
            )
        if cmp.same_device:
            med = cmp.median_layer_error(0.02)
            ratio = cmp.step_ratio
            lines.append(
                "est. error: predicted / measured time - 1 (the profile is of the device that "
                "measured)" + (f"; median |error| over layers above 2% of the time: {med:.0%}"
                               if med is not None else "")
                + (f"; step: est. {ms(cmp.predicted_total_s)} ms / measured "
                   f"{ms(cmp.measured_total_s)} ms = x{ratio:.2f}" if ratio is not None else "")
            )
        else:
            lines.append(
                f"measured on {cmp.measured_device_name} ({cmp.measured_device}), predicted "
                f"for another device: compare shares, not times"
            )
    if cmp.kernel_choices:
        lines.append("counted as: " + "; ".join(cmp.kernel_choices))
    if cmp.only_in_run or cmp.only_in_cost:
        lines.append(
            "joined by layer name; "
            + (f"only measured: {', '.join(cmp.only_in_run)}" if cmp.only_in_run else "")
            + ("; " if cmp.only_in_run and cmp.only_in_cost else "")
            + (f"only counted: {', '.join(cmp.only_in_cost)}" if cmp.only_in_cost else "")
        )
    lines.extend(f"warning: {w}" for w in cmp.warnings)
    return lines


def render(cmp: Comparison, width: int | None = None) -> RenderableType:
    """Headline, the kind table, the layer table and the notes, fitted to ``width``."""
    parts: list[RenderableType] = [Text(cmp.headline(), style="bold"),
                                   kind_table(cmp, width).renderable(), Text(""),
                                   layer_table(cmp, width).renderable()]
    parts.extend(Text(line, style="dim") for line in notes(cmp))
    return Group(*parts)


def render_text(cmp: Comparison, width: int | None = 160) -> str:
    """The same as plain text (tests, benchmarks); None: nothing wraps."""
    return to_text(render(cmp, width), width)


def fit_table(fit: EfficiencyFit, width: int | None = None) -> RenderableType:
    """Per kind: measured time, which efficiency was fitted, its value and how it was obtained."""
    cols = [Column("kind", align="left", name=True), Column("measured ms"), Column("of step"),
            Column("efficiency", align="left"), Column("before", drop=2), Column("after"),
            Column("status", align="left", shrink=3, min_width=12)]
    rows = []
    for k in fit.kinds:
        status = k.status if not k.reason else f"{k.status}: {k.reason}"
        rows.append(Row((
            KIND_LABELS.get(k.kind, k.kind) if k.kind != "update" else "update (optimizer)",
            ms(k.measured_s), pct(k.step_share), k.target, f"{k.default:.3g}",
            f"{k.efficiency:.3g}", status,
        )))
    return Group(
        Text(f"efficiencies fitted to {fit.run_label} (before: the default; a kind under "
             f"{fit.min_share:.0%} of the step keeps it)", style="bold"),
        lay_out(cols, rows, width).renderable(),
    )


def calibration_report(cal: Calibration, fit: EfficiencyFit | None, warnings: Sequence[str],
                       name: str, path: Path, width: int | None = None,
                       default_file: bool = True) -> RenderableType:
    """What ``layertime calibrate`` measured, fitted and saved."""
    peaks = ", ".join(f"{p} {v * 1e3:,.4g} GFLOP/s (side {cal.matmul_sizes[p]})"
                      for p, v in cal.matmul_tflops.items())
    parts: list[RenderableType] = [Text(
        f"measured {cal.device_name} ({cal.device}, {cal.threads} threads): matmul {peaks}; "
        f"memory {cal.memory_bandwidth_gb_per_s:,.3g} GB/s (copy {cal.copy_gb_per_s:,.3g}, "
        f"add {cal.add_gb_per_s:,.3g}; {cal.memory_bytes / 2**20:g} MiB buffers); best of up "
        f"to {cal.repeats} runs each")]
    parts += [Text(f"not measured: {prec}: {why}") for prec, why in cal.skipped.items()]
    if cal.load_before is not None and cal.load_after is not None:
        parts.append(Text(f"load average {cal.load_before:.2f} before, {cal.load_after:.2f} after"))
    if cal.grid is not None:
        parts.append(Text("\n".join(cal.grid.summary_lines())))
    if fit is not None:
        parts.append(fit_table(fit, width))
    parts += [Text(f"warning: {w}") for w in warnings]
    # A profile outside the user's file is found only when the file is named too.
    extra = "" if default_file else f" --profiles {path}"
    parts.append(Text(f"saved device profile {name} in {path}; use it with --device-profile "
                      f"{name}{extra} (cost) or --predict {name}{extra} (profile)"))
    return Group(*parts)
