"""Terminal table of the data-parallel what-if: predicted all-reduce per layer beside measured."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import ms, num, pct
from layertime.render.layout import Column, Laid, Row, lay_out
from layertime.results.parallel.comm import CommPrediction
from layertime.taxonomy import KIND_LABELS, KINDS


def _mib(n: int) -> str:
    return num(n / 2**20)


def _err(pred: float, meas: float | None) -> str:
    if meas is None or meas <= 0:
        return "-"
    return f"{(pred - meas) / meas:+.0%}"


def comm_table(pred: CommPrediction, width: int | None = None) -> Laid:
    measured = pred.measured_comm_s is not None
    cols = [Column("layer", align="left", name=True), Column("grad MiB", drop=3),
            Column("bucket", drop=2), Column("predicted ms"), Column("share")]
    if measured:
        cols += [Column("measured ms"), Column("share"), Column("error", drop=1)]
    kinds = pred.by_kind()
    total_p = pred.comm_s or 1.0
    total_m = pred.measured_comm_s
    rows: list[Row] = []
    for kind in KINDS:
        members = [r for r in pred.layers if r.kind == kind]
        if not members:
            continue
        k = kinds[kind]
        cells = [f"{KIND_LABELS[kind]} ({len(members)})", _mib(k.grad_bytes), "",
                 ms(k.predicted_s), pct(k.predicted_share)]
        if measured:
            cells += [ms(k.measured_s), pct(k.measured_share), _err(k.predicted_s, k.measured_s)]
        rows.append(Row(tuple(cells), bold=True, gap_before=bool(rows)))
        for r in members:
            cells = [f"  {r.name or '(model)'}", _mib(r.grad_bytes),
                     ",".join(str(i) for i in r.buckets), ms(r.predicted_s),
                     pct(r.predicted_s / total_p)]
            if measured:
                share = r.measured_s / total_m if (r.measured_s is not None and total_m) else None
                cells += [ms(r.measured_s), pct(share), _err(r.predicted_s, r.measured_s)]
            rows.append(Row(tuple(cells)))
    cells = ["all-reduce per step", _mib(pred.grad_bytes), str(len(pred.buckets)),
             ms(pred.comm_s), "100.0%"]
    if measured:
        cells += [ms(total_m), "100.0%", _err(pred.comm_s, total_m)]
    rows.append(Row(tuple(cells), bold=True, gap_before=True))
    return lay_out(cols, rows, width)


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
            f"#{b.index} {_mib(b.bytes)} MiB {ms(p)} vs {ms(m)} ms ({_err(p, m)})"
            for b, p, m in zip(pred.buckets, pred.bucket_s, pred.measured_bucket_s)
        ]
        lines.append("buckets predicted vs measured all-reduce: " + "; ".join(parts))
    if pred.step_s is not None:
        line = (
            f"step: compute {ms(pred.compute_s)} ms ({pred.compute_source}) + exposed "
            f"{ms(pred.exposed_s)} ms = {ms(pred.step_s)} ms predicted"
        )
        if pred.measured_step_s is not None:
            line += (
                f"; measured {ms(pred.measured_step_s)} ms "
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


def render(pred: CommPrediction, width: int | None = None) -> RenderableType:
    parts: list[RenderableType] = [Text(pred.headline(), style="bold"),
                                   comm_table(pred, width).renderable()]
    parts.extend(Text(line, style="dim") for line in summary_lines(pred))
    return Group(*parts)
