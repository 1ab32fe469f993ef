"""Table of an isolated layer benchmark, beside the in-situ profile when given."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import ms
from layertime.render.layout import Column, Row, lay_out
from layertime.results.bench import BenchResult
from layertime.results.run import Run
from layertime.taxonomy import KIND_LABELS


def bench_table(bench: BenchResult, situ: Run | None = None,
                width: int | None = None) -> RenderableType:
    """Per layer: forward, input-gradient and weight-gradient time alone; in situ beside it."""
    cols = [Column("layer", align="left", name=True),
            Column("kind", align="left", drop=3, shrink=4, min_width=6),
            Column("fwd ms"), Column("bwd-in ms"), Column("bwd-w ms"), Column("alone ms")]
    rows_by_name = {r.name: r for r in situ.layers} if situ else {}
    if situ:
        cols += [Column("in situ ms", drop=1), Column("alone/situ", drop=2)]
    rows: list[Row] = []
    for b in bench.layers:
        cells = [
            b.name or "(model)",
            KIND_LABELS.get(b.kind, b.kind),
            ms(b.forward_s),
            ms(b.backward_input_s) if b.inputs and any(i.requires_grad for i in b.inputs)
            else "not run",
            ms(b.backward_weight_s) if b.params else "-",
            ms(b.total_s),
        ]
        if situ:
            r = rows_by_name.get(b.name)
            s = r.forward_s + r.backward_s if r else 0.0
            cells += [ms(s), f"{b.total_s / s:.2f}" if s else "-"]
        rows.append(Row(tuple(cells)))
    total = ["sum", "", ms(sum(b.forward_s for b in bench.layers)),
             ms(sum(b.backward_input_s for b in bench.layers)),
             ms(sum(b.backward_weight_s for b in bench.layers)), ms(bench.total_s)]
    parts: list[RenderableType] = [Text(
        f"each layer alone: {bench.model}, batch {bench.batch_size}, {bench.device}, "
        f"{bench.dtype}; median of {bench.repeats} after {bench.warmup} warm-up, x calls per step"
        "; bwd-in, bwd-w: input and weight gradient; alone/situ: alone ms over in situ ms",
        style="bold")]
    if situ:
        situ_sum = sum(rows_by_name[b.name].forward_s + rows_by_name[b.name].backward_s
                       for b in bench.layers if b.name in rows_by_name)
        total += [ms(situ_sum), f"{bench.total_s / situ_sum:.2f}" if situ_sum else "-"]
        rows.append(Row(tuple(total), bold=True, gap_before=True))
        parts.append(lay_out(cols, rows, width).renderable())
        diff = bench.total_s - situ_sum
        parts.append(Text(
            f"layers alone: {ms(bench.total_s)} ms of forward + backward; the same layers in "
            f"the model: {ms(situ_sum)} ms ({diff / situ_sum:+.1%}); the whole in-situ step: "
            f"{ms(situ.profiled_step_s)} ms (loss, optimizer update and containers are only "
            "in the step)", style="bold"))
    else:
        rows.append(Row(tuple(total), bold=True, gap_before=True))
        parts.append(lay_out(cols, rows, width).renderable())
    return Group(*parts)
