"""Terminal table of the data-parallel what-if: predicted all-reduce per layer beside measured."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.render.fmt import ms as _ms, pct as _pct
from layertime.results.comm import CommPrediction
from layertime.taxonomy import KIND_LABELS, KINDS


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def _err(pred: float, meas: float | None) -> str:
    if meas is None or meas <= 0:
        return "-"
    return f"{(pred - meas) / meas:+.0%}"


def comm_table(pred: CommPrediction) -> Table:
    measured = pred.measured_comm_s is not None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("layer", overflow="fold")
    table.add_column("grad MiB", justify="right")
    table.add_column("bucket", justify="right")
    table.add_column("predicted ms", justify="right")
    table.add_column("share", justify="right")
    if measured:
        table.add_column("measured ms", justify="right")
        table.add_column("share", justify="right")
        table.add_column("error", justify="right")
    kinds = pred.by_kind()
    total_p = pred.comm_s or 1.0
    total_m = pred.measured_comm_s
    for kind in KINDS:
        rows = [r for r in pred.layers if r.kind == kind]
        if not rows:
            continue
        k = kinds[kind]
        cells: list[str | Text] = [
            Text(f"{KIND_LABELS[kind]} ({len(rows)})", style="bold"),
            _mib(k.grad_bytes),
            "",
            Text(_ms(k.predicted_s), style="bold"),
            Text(_pct(k.predicted_share), style="bold"),
        ]
        if measured:
            cells += [_ms(k.measured_s), _pct(k.measured_share), _err(k.predicted_s, k.measured_s)]
        table.add_row(*cells)
        for r in rows:
            cells = [
                f"  {r.name or '(model)'}",
                _mib(r.grad_bytes),
                ",".join(str(i) for i in r.buckets),
                _ms(r.predicted_s),
                _pct(r.predicted_s / total_p),
            ]
            if measured:
                share = r.measured_s / total_m if (r.measured_s is not None and total_m) else None
                cells += [_ms(r.measured_s), _pct(share), _err(r.predicted_s, r.measured_s)]
            table.add_row(*cells)
        table.add_section()
    cells = [Text("all-reduce per step", style="bold"), _mib(pred.grad_bytes),
             str(len(pred.buckets)), Text(_ms(pred.comm_s), style="bold"), "100.0%"]
    if measured:
        cells += [_ms(total_m), "100.0%", _err(pred.comm_s, total_m)]
    table.add_row(*cells)
    return table


def summary_lines(pred: CommPrediction) -> list[str]:
    link = pred.link
    n = pred.workers
    lines = [
        f"ring all-reduce: 2(N-1)/N x bytes / bandwidth + 2(N-1) x latency per bucket; "
        f"N={n}, {link.bandwidth_gbps:,.2f} Gbit/s, {link.latency_us:,.1f} µs ({link.source}); "
        f"buckets: {pred.bucket_source}"
    ]
    if pred.measured_bucket_s is not None:
        parts = [
            f"#{b.index} {_mib(b.bytes)} MiB {_ms(p)} vs {_ms(m)} ms ({_err(p, m)})"
            for b, p, m in zip(pred.buckets, pred.bucket_s, pred.measured_bucket_s)
        ]
        lines.append("buckets predicted vs measured all-reduce: " + "; ".join(parts))
    if pred.step_s is not None:
        line = (
            f"step: compute {_ms(pred.compute_s)} ms ({pred.compute_source}) + exposed "
            f"{_ms(pred.exposed_s)} ms = {_ms(pred.step_s)} ms predicted"
        )
        if pred.measured_step_s is not None:
            line += (
                f"; measured {_ms(pred.measured_step_s)} ms "
                f"({_err(pred.step_s, pred.measured_step_s)})"
            )
        lines.append(line)
    if pred.measured_comm_s is not None:
        lines.append(
            "measured = DDP's whole gradient synchronisation per layer (all-reduce, bucket "
            "copies, waiting for slower ranks); predicted = the ring all-reduce alone"
        )
    lines.extend(pred.notes)
    return lines


def render(pred: CommPrediction) -> RenderableType:
    parts: list[RenderableType] = [Text(pred.headline(), style="bold"), comm_table(pred)]
    parts.extend(Text(line, style="dim") for line in summary_lines(pred))
    return Group(*parts)
