"""Table of an isolated layer benchmark, beside the in-situ profile when given."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.render.fmt import ms as _ms
from layertime.results.bench import BenchResult
from layertime.results.run import Run
from layertime.taxonomy import KIND_LABELS


def bench_table(bench: BenchResult, situ: Run | None = None) -> RenderableType:
    """Per layer: forward, input-gradient and weight-gradient time alone; in situ beside it."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("layer", "kind", "fwd ms", "bwd input ms", "bwd weight ms", "alone ms"):
        t.add_column(col, justify="left" if col in ("layer", "kind") else "right")
    rows = {r.name: r for r in situ.layers} if situ else {}
    if situ:
        t.add_column("in situ ms", justify="right")
        t.add_column("alone / in situ", justify="right")
    for b in bench.layers:
        cells: list[RenderableType] = [
            b.name or "(model)",
            KIND_LABELS.get(b.kind, b.kind),
            _ms(b.forward_s),
            _ms(b.backward_input_s) if b.inputs and any(i.requires_grad for i in b.inputs)
            else "not run",
            _ms(b.backward_weight_s) if b.params else "-",
            _ms(b.total_s),
        ]
        if situ:
            r = rows.get(b.name)
            s = r.forward_s + r.backward_s if r else 0.0
            cells += [_ms(s), f"{b.total_s / s:.2f}" if s else "-"]
        t.add_row(*cells)
    t.add_section()
    total: list[RenderableType] = [Text("sum", style="bold"), "", _ms(sum(b.forward_s for b in bench.layers)),
             _ms(sum(b.backward_input_s for b in bench.layers)),
             _ms(sum(b.backward_weight_s for b in bench.layers)), _ms(bench.total_s)]
    parts: list[RenderableType] = []
    if situ:
        situ_sum = sum(rows[b.name].forward_s + rows[b.name].backward_s
                       for b in bench.layers if b.name in rows)
        total += [_ms(situ_sum), f"{bench.total_s / situ_sum:.2f}" if situ_sum else "-"]
        t.add_row(*total)
        diff = bench.total_s - situ_sum
        parts.append(Text(
            f"layers alone: {_ms(bench.total_s)} ms of forward + backward; the same layers in "
            f"the model: {_ms(situ_sum)} ms ({diff / situ_sum:+.1%}); the whole in-situ step: "
            f"{_ms(situ.profiled_step_s)} ms (loss, optimizer update and containers are only "
            "in the step)", style="bold"))
    else:
        t.add_row(*total)
    parts.insert(0, Text(
        f"each layer alone: {bench.model}, batch {bench.batch_size}, {bench.device}, "
        f"{bench.dtype}; median of {bench.repeats} after {bench.warmup} warm-up, x calls per step",
        style="bold"))
    parts.insert(1, t)
    return Group(*parts)
