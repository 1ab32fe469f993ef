"""Terminal table of a cost model: rows grouped by kind, FLOPs by phase, estimates labelled."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.render.fmt import ms as _ms, pct as _pct
from layertime.results.cost import CostResult
from layertime.results.cost_rows import LayerCost, PhaseCounts
from layertime.taxonomy import KIND_LABELS, KINDS

#: How many not-counted ops the footer names before summarising the rest.
_MAX_NOT_COUNTED = 8


def _g(flops: int) -> str:
    """GFLOP with two decimals, or three significant digits below one."""
    if not flops:
        return "-"
    v = flops / 1e9
    return f"{v:,.2f}" if v >= 1 else f"{v:.3g}"


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1e9:,.3f}" if nbytes else "-"


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f}" if nbytes else "-"


def _params(n: int) -> str:
    """Compact parameter counts (exact ones are in the JSON)."""
    if not n:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:,.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _intensity(flops: int, nbytes: int) -> str:
    return f"{flops / nbytes:,.1f}" if nbytes and flops else "-"


def _is_empty_container(r: LayerCost) -> bool:
    return r.kind == "other" and not r.ops and not r.params


def cost_table(cost: CostResult, width: int | None = None) -> Table:
    """The per-layer table, grouped by kind with a subtotal per kind.

    Given a ``width`` the table would not fit, the module type column is left out.
    """
    predicted = cost.prediction is not None
    step_flops = cost.flops.total or 1
    step_pred = cost.predicted.total_s if cost.predicted is not None else 0.0
    headers = ["layer", "type", "params", "fwd", "bwd-in", "bwd-w", "upd", "share", "GB",
               "FLOP/B", "saved MB"]
    if predicted:
        headers += ["est. ms", "est. %"]
    #: (cells, bold, section after)
    lines: list[tuple[list[str], bool, bool]] = []

    def numbers(
        params: int, f: PhaseCounts, moved: int, saved: int, pred_s: float | None
    ) -> list[str]:
        cells = [
            _params(params),
            _g(f.forward),
            _g(f.backward_input),
            _g(f.backward_weight),
            _g(f.update),
            _pct(f.total / step_flops),
            _gb(moved),
            _intensity(f.total, moved),
            _mb(saved),
        ]
        if predicted:
            share = pred_s / step_pred if pred_s is not None and step_pred else None
            cells += [_ms(pred_s), _pct(share)]
        return cells

    groups: dict[str, list[LayerCost]] = {}
    for r in cost.rows:
        if _is_empty_container(r):
            continue
        groups.setdefault(r.kind, []).append(r)
    kinds = cost.by_kind()
    order = [k for k in KINDS if k in groups] + [k for k in groups if k not in KINDS]
    for kind in order:
        rows = groups[kind]
        kc = kinds[kind]
        saved = sum(r.memory_bytes.saved_activations for r in rows)
        head = [f"{KIND_LABELS.get(kind, kind)} ({len(rows)})", ""]
        lines.append(
            (head + numbers(kc.params, kc.flops, kc.bytes_moved.total, saved, kc.predicted_s),
             True, False)
        )
        for i, r in enumerate(rows):
            pred = r.predicted.total_s if r.predicted is not None else None
            cells = [f"  {r.label}", r.type]
            cells += numbers(r.params, r.flops, r.bytes_moved.total,
                             r.memory_bytes.saved_activations, pred)
            lines.append((cells, False, i == len(rows) - 1))
    total_pred = step_pred if predicted else None
    lines.append(
        (["training step" if cost.training else "forward pass", ""]
         + numbers(cost.params, cost.flops, cost.bytes_moved.total,
                   cost.memory_bytes.saved_activations, total_pred),
         True, False)
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    widths = [max(len(h), *(len(c[i]) for c, _, _ in lines)) for i, h in enumerate(headers)]
    widths[1] = min(widths[1], 12)
    if width is not None and sum(widths) + 2 * len(widths) > width:
        headers.pop(1)
        widths.pop(1)
        lines = [([c[0], *c[2:]], bold, section) for c, bold, section in lines]
    for i, h in enumerate(headers):
        if i == 0:
            table.add_column(h, no_wrap=True, overflow="ellipsis", min_width=min(widths[0], 14))
        elif h == "type":
            table.add_column(h, no_wrap=True, overflow="ellipsis", max_width=12)
        else:
            table.add_column(h, justify="right", no_wrap=True, min_width=widths[i])
    for cells, bold, section in lines:
        table.add_row(*[Text(c, style="bold") if bold else c for c in cells])
        if section:
            table.add_section()
    return table


def summary_lines(cost: CostResult) -> list[str]:
    """Totals, memory, what was not counted, how estimates were made, and the conventions."""
    f = cost.flops
    m = cost.memory_bytes
    lines = [
        "fwd, bwd-in, bwd-w, upd: GFLOP per phase; share: of the step's FLOPs; GB moved "
        "(minimum traffic); FLOP/B: arithmetic intensity; saved MB: activations kept for "
        "backward" + ("; est.: roofline estimate, not a measurement" if cost.prediction else ""),
        f"{cost.model}, batch {cost.batch_size}, input {'x'.join(map(str, cost.input_shape))}, "
        f"{cost.dtype}, {cost.optimizer}: {f.total / 1e9:,.2f} GFLOP per step "
        f"(forward {cost.macs_forward / 1e9:,.3f} GMACs = {f.forward / 1e9:,.2f} GFLOP), "
        f"{cost.bytes_moved.total / 1e9:,.2f} GB moved; counted on "
        f"{'the meta device (no real tensors)' if cost.tensors == 'meta' else 'real CPU tensors'}",
        f"memory: weights {m.weights / 1e6:,.1f} MB, gradients {m.grads / 1e6:,.1f} MB, "
        f"optimizer state {m.optimizer_state / 1e6:,.1f} MB, saved activations "
        f"{m.saved_activations / 1e6:,.1f} MB (sum {m.total / 1e9:,.2f} GB)",
    ]
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
        "FLOPs = 2 x MACs (torchvision's 'GFLOPS' are GMACs); bytes: minimum traffic "
        "(each op reads its inputs and writes its outputs once); see docs/cost.md"
    )
    lines.extend(f"warning: {w}" for w in cost.warnings)
    return lines


def render(cost: CostResult, width: int | None = None) -> RenderableType:
    """Headline, table and summary as one rich renderable (``width``: see :func:`cost_table`)."""
    parts: list[RenderableType] = [Text(cost.headline(), style="bold"), cost_table(cost, width)]
    parts.extend(Text(line, style="dim") for line in summary_lines(cost))
    return Group(*parts)


def render_text(cost: CostResult, width: int = 140) -> str:
    """The same as plain text at a fixed width, with no colour (for tests and reports)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False)
    console.print(render(cost, width))
    return buf.getvalue()
