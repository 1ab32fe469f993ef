"""Terminal table of a cost model: rows grouped by kind, FLOPs by phase, estimates labelled."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import count, ms, num, pct
from layertime.render.roles import cost_roles
from layertime.render.layout import Column, Laid, Row, lay_out, to_text
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, PhaseCounts
from layertime.taxonomy import KIND_LABELS, KINDS

#: How many not-counted ops the footer names before summarising the rest.
_MAX_NOT_COUNTED = 8


def _g(flops: int) -> str:
    """GFLOP, three significant digits; '-' for none."""
    return num(flops / 1e9) if flops else "-"


def _gb(nbytes: int) -> str:
    return num(nbytes / 1e9) if nbytes else "-"


def _mb(nbytes: int) -> str:
    return num(nbytes / 1e6) if nbytes else "-"


def _intensity(flops: int, nbytes: int) -> str:
    return num(flops / nbytes) if nbytes and flops else "-"


def _is_empty_container(r: LayerCost) -> bool:
    return r.kind == "other" and not r.ops and not r.params


def _columns(predicted: bool) -> list[Column]:
    cols = [
        Column("layer", align="left", name=True),
        Column("type", align="left", drop=3, shrink=6, min_width=10),
        Column("params", drop=4),
        Column("fwd"), Column("bwd-in"), Column("bwd-w"), Column("upd", drop=2), Column("share", drop=1),
        Column("GB", drop=5), Column("FLOP/B", drop=7), Column("saved MB", drop=8),
    ]
    if predicted:
        cols += [Column("est. ms"), Column("est. %")]
    return cols


def cost_table(cost: CostResult, width: int | None = None) -> Laid:
    """The per-layer table, grouped by kind with a subtotal per kind, fitted to ``width``."""
    predicted = cost.prediction is not None
    step_flops = cost.flops.total or 1
    step_pred = cost.predicted.total_s if cost.predicted is not None else 0.0

    def numbers(
        params: int, f: PhaseCounts, moved: int, saved: int, pred_s: float | None
    ) -> tuple[str, ...]:
        cells = [
            count(params), _g(f.forward), _g(f.backward_input), _g(f.backward_weight),
            _g(f.update), pct(f.total / step_flops), _gb(moved), _intensity(f.total, moved),
            _mb(saved),
        ]
        if predicted:
            share = pred_s / step_pred if pred_s is not None and step_pred else None
            cells += [ms(pred_s), pct(share)]
        return tuple(cells)

    groups: dict[str, list[LayerCost]] = {}
    for r in cost.rows:
        if _is_empty_container(r):
            continue
        groups.setdefault(r.kind, []).append(r)
    kinds = cost.by_kind()
    order = [k for k in KINDS if k in groups] + [k for k in groups if k not in KINDS]
    rows: list[Row] = []
    for n, kind in enumerate(order):
        members = groups[kind]
        kc = kinds[kind]
        saved = sum(r.memory_bytes.saved_activations for r in members)
        rows.append(Row(
            (f"{KIND_LABELS.get(kind, kind)} ({len(members)})", "")
            + numbers(kc.params, kc.flops, kc.bytes_moved.total, saved, kc.predicted_s),
            bold=True, gap_before=n > 0))
        for r in members:
            pred = r.predicted.total_s if r.predicted is not None else None
            rows.append(Row((f"  {r.label}", r.type) + numbers(
                r.params, r.flops, r.bytes_moved.total, r.memory_bytes.saved_activations, pred)))
    total_pred = step_pred if predicted else None
    rows.append(Row(
        ("training step" if cost.training else "forward pass", "")
        + numbers(cost.params, cost.flops, cost.bytes_moved.total,
                  cost.memory_bytes.saved_activations, total_pred),
        bold=True, gap_before=True))
    return lay_out(_columns(predicted), rows, width)


def _input_label(cost: CostResult) -> str:
    if cost.seq_len is not None:
        return f"seq {cost.seq_len}"
    return f"input {'x'.join(map(str, cost.input_shape))}"


def summary_lines(cost: CostResult) -> list[str]:
    """Totals, memory, what was not counted, how estimates were made, and the conventions."""
    f = cost.flops
    m = cost.memory_bytes
    lines = [
        "fwd, bwd-in, bwd-w, upd: GFLOP per phase; share: of the step's FLOPs; GB moved "
        "(what each op's kernel moves); FLOP/B: arithmetic intensity; saved MB: activations kept for "
        "backward" + ("; est.: roofline estimate, not a measurement" if cost.prediction else ""),
        f"{cost.model}, batch {cost.batch_size}, {_input_label(cost)}, "
        f"{cost.dtype}, {cost.optimizer}: {f.total / 1e9:,.2f} GFLOP per step "
        f"(forward {cost.macs_forward / 1e9:,.3f} GMACs = {f.forward / 1e9:,.2f} GFLOP), "
        f"{cost.bytes_moved.total / 1e9:,.2f} GB moved; counted on "
        f"{'the meta device (no real tensors)' if cost.tensors == 'meta' else 'real CPU tensors'}",
        f"memory: weights {m.weights / 1e6:,.1f} MB, gradients {m.grads / 1e6:,.1f} MB, "
        f"optimizer state {m.optimizer_state / 1e6:,.1f} MB, saved activations "
        f"{m.saved_activations / 1e6:,.1f} MB (sum {m.total / 1e9:,.2f} GB)",
    ]
    if cost.kernel_choices:
        target = f" for {cost.kernel_target}" if cost.kernel_target else ""
        lines.append(f"kernels counted{target}: " + "; ".join(cost.kernel_lines()))
    nc = cost.not_counted()
    if nc:
        first = list(nc.items())[:_MAX_NOT_COUNTED]
        shown = [f"{op.removeprefix('aten.')} ({n})" for op, n in first]
        more = len(nc) - len(shown)
        lines.append(
            "not counted (no FLOP formula; bytes are counted): "
            + ", ".join(shown)
            + (f" and {more} more (see --json)" if more > 0 else "")
        )
    p = cost.prediction
    if p is not None:
        peaks = ", ".join(
            f"{cls} {prec} {p.peak_tflops[prec]:g} TFLOP/s" for cls, prec in p.math_peaks.items()
        )
        eff = ", ".join(
            f"{k} {v:g}"
            for k, v in p.compute_efficiency.items()
            if k in ("conv", "linear", "default")
        )
        lines.append(
            f"ESTIMATES, not measurements: roofline on {p.device_name} ({peaks}; "
            f"{p.memory_bandwidth_gb_per_s:g} GB/s; source: {p.source}); compute efficiency "
            f"{eff}; memory efficiency {p.memory_efficiency.get('default', 0):g} "
            f"[{p.efficiency_source}]"
        )
    lines.append(
        "FLOPs = 2 x MACs (torchvision's 'GFLOPS' are GMACs); bytes: what each op's kernel "
        "reads and writes, one formula per op (nothing cached between ops); see docs/cost.md"
    )
    lines.extend(f"warning: {w}" for w in cost.warnings)
    return lines


def render(cost: CostResult, width: int | None = None) -> RenderableType:
    """Headline, table and summary as one rich renderable, the table fitted to ``width``."""
    parts: list[RenderableType] = [Text(cost.headline(), style="bold"),
                                   cost_table(cost, width).renderable()]
    if cost.is_transformer():
        parts.append(cost_roles(cost, width))
    parts.extend(Text(line, style="dim") for line in summary_lines(cost))
    return Group(*parts)


def render_text(cost: CostResult, width: int | None = 140) -> str:
    """The same as plain text, with no colour (tests, reports); None: nothing wraps."""
    return to_text(render(cost, width), width)
