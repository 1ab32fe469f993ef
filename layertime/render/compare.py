"""Tables for stored runs, sweeps and side-by-side comparisons (read-only renderers)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import ms, pct
from layertime.render.layout import Column, Row, lay_out
from layertime.render.memory import compare_memory_rows, scaling_lines
from layertime.results.memory import fmt_mb
from layertime.results.run import Run
from layertime.results.parallel.sharded import COLLECTIVE_LABELS
from layertime.results.stored import StoredRun
from layertime.results.sweep import SweepResult
from layertime.taxonomy import KIND_LABELS, KINDS, ROLES, STEP_KINDS


def runs_table(runs: Sequence[StoredRun], width: int | None = None) -> RenderableType:
    """Stored runs, one line each, in the order given (newest first from the store)."""
    cols = [Column("id"), Column("kind", align="left"), Column("model", align="left", name=True),
            Column("batch"), Column("device", align="left", drop=3),
            Column("status", align="left", drop=2), Column("created", align="left", drop=4),
            Column("step ms"), Column("note", align="left", shrink=5, min_width=10)]
    rows = []
    for r in runs:
        step = r.result.get("step_s") if r.result and r.kind == "profile" else None
        note = r.error or ""
        if r.sweep_id is not None:
            note = (f"sweep {r.sweep_id}; " + note).rstrip("; ")
        rows.append(Row((
            str(r.id), r.kind, r.model, "-" if r.batch_size is None else str(r.batch_size),
            r.device or "-", r.status, r.created[:19].replace("T", " "), ms(step), note[:60],
        )))
    return lay_out(cols, rows, width).renderable()


def runs_csv(runs: Sequence[StoredRun]) -> str:
    """Stored runs as CSV: one row per run, with the step time and each kind's share."""
    buf = io.StringIO()
    kinds = KINDS + STEP_KINDS
    w = csv.writer(buf)
    w.writerow(
        ["id", "kind", "model", "batch_size", "device", "status", "created", "sweep_id", "step_s"]
        + [f"share_{k}" for k in kinds]
        + ["error"]
    )
    for r in runs:
        shares: dict[str, float] = {}
        step = None
        if r.kind == "profile" and r.result:
            step = r.result.get("step_s")
            shares = {k: v.get("share") for k, v in (r.result.get("kinds") or {}).items()}
        w.writerow(
            [r.id, r.kind, r.model, r.batch_size, r.device, r.status, r.created, r.sweep_id, step]
            + [shares.get(k, "") for k in kinds]
            + [r.error or ""]
        )
    return buf.getvalue()


#: Column headers narrow enough for a sweep table.
_SHORT = {"linear": "fc", "activation": "act", "embedding": "embed", "attention": "attn",
          "recurrent": "rnn", "dropout": "drop", "step": "step", "unattributed": "unattr",
          "mixing": "mix", "experts": "moe", "router": "router"}
#: Role columns of a token sweep (issue 11), in order.
_ROLE_COLUMNS = (*ROLES, "loss", "step", "unattributed")


def sweep_table(result: SweepResult, width: int | None = None) -> RenderableType:
    """Each configuration's share of step time per kind, then the crossover(s)."""
    runs = [p.run for p in result.points if p.run is not None]
    # Token sweeps (issue 11): a seq column, and shares by role instead of kind.
    tokens = any(p.config.get("seq_len") is not None for p in result.points)

    def shares_of(run: Run) -> dict[str, float]:
        parts = run.roles() if tokens else run.by_kind()
        return {k: v.share for k, v in parts.items()}

    if tokens:
        kinds = [k for k in _ROLE_COLUMNS if any(k in r.roles() for r in runs)]
    else:
        kinds = [k for k in KINDS + STEP_KINDS if any(k in r.by_kind() for r in runs)]
    cols = [Column("model", align="left", name=True), Column("batch"),
            Column("seq" if tokens else "image", drop=3),
            Column("device", align="left", drop=4), Column("status", align="left", drop=2),
            Column("step ms")]
    memory = any(p.run is not None and p.run.memory is not None for p in result.points)
    if memory:
        cols.append(Column("saved MB", drop=1))
    # conv and fc (attention and MLP) always; the others give way smallest first when narrow.
    lead = ("attention", "mlp") if tokens else ("conv", "linear")
    peak = {k: max((shares_of(r).get(k, 0.0) for r in runs), default=0.0) for k in kinds}
    order = sorted((k for k in kinds if k not in lead), key=lambda k: peak[k])
    drop = {k: 10 + len(order) - i for i, k in enumerate(order)}
    cols += [Column(_SHORT.get(k, k) + " %", drop=drop.get(k, 0)) for k in kinds]
    rows = []
    for p in result.points:
        c = p.config
        shares = shares_of(p.run) if p.run else {}
        rows.append(Row((
            c["model"], str(c["batch_size"]),
            str(c.get("seq_len")) if tokens else str(c["image_size"] or "default"),
            p.run.device if p.run else c["device"],
            p.status if p.status != "skipped" else "stored",
            ms(p.run.step_s) if p.run else "-",
            *((fmt_mb(p.run.memory.saved_bytes) if p.run and p.run.memory else "-",)
              if memory else ()),
            *[f"{shares[k] * 100:.1f}" if k in shares else "-" for k in kinds],
        )))
    parts: list[RenderableType] = [lay_out(cols, rows, width).renderable()]
    parts.extend(Text(line) for line in scaling_lines(
        [(p.config, p.run.memory.saved_bytes) for p in result.points
         if p.run is not None and p.run.memory is not None]))
    for p in result.points:
        if p.status == "failed":
            parts.append(Text(f"failed: {p.config['model']} batch {p.config['batch_size']}: {p.error}"))
    if tokens:
        if result.seq_crossovers:
            parts.extend(Text(c.describe(), style="bold") for c in result.seq_crossovers)
        else:
            parts.append(Text("no attention/MLP crossover in this range: the same one leads at "
                              "every sequence length"))
        return Group(*parts)
    if result.crossovers:
        parts.extend(Text(c.describe(), style="bold") for c in result.crossovers)
    else:
        parts.append(Text("no crossover in this range: the same kind leads at every batch size"))
    return Group(*parts)


def _comm_rows(runs: Sequence[Run]) -> list[Row]:
    """Runs across ranks: exposed communication (in the kinds' time above, by collective
    kind for sharded runs) and the hidden part, each with its ratio to run 1."""
    if not any(r.comm_s for r in runs):
        return []

    def cell(i: int, value: float, base: float, step: float | None) -> str:
        share = f"{pct(value / step)} " if step else ""
        ratio = f" x{value / base:.2f}" if i and base > 0 else ""
        return f"{share}({ms(value)} ms{ratio})" if step else f"{ms(value)} ms{ratio}"

    def row(label: str, values: list[float], shares: bool, gap: bool = False) -> Row:
        return Row((label, *[cell(i, v, values[0], r.profiled_step_s if shares else None)
                             for i, (v, r) in enumerate(zip(values, runs))]), gap_before=gap)

    rows = [row("comm exposed", [r.phases.comm_exposed_s for r in runs], True, gap=True)]
    kinds = list(dict.fromkeys(k for r in runs for k in r.comm_by_kind()))
    for k in kinds:
        rows.append(row(f"  {COLLECTIVE_LABELS.get(k, k)}",
                        [r.comm_by_kind().get(k, (0.0, 0.0))[0] for r in runs], True))
    rows.append(row("comm hidden", [r.comm_s - r.phases.comm_exposed_s for r in runs], False))
    return rows


def compare_table(runs: Sequence[Run], labels: Sequence[str],
                  width: int | None = None) -> RenderableType:
    """Runs side by side, aligned by layer name, with ratios to the first run.

    Each run's column is headed by its number in the legend above the tables
    (run labels are long: model, batch, device).
    """
    if len(runs) < 2:
        raise ValueError("compare needs two runs or more")
    heads = [f"run {i + 1}" for i in range(len(runs))]
    legend = [Text(f"run {i + 1}: {lab}") for i, lab in enumerate(labels)]
    kind_rows = []
    kind_maps = [r.by_kind() for r in runs]
    for k in KINDS + STEP_KINDS:
        if not any(k in m for m in kind_maps):
            continue
        cells = []
        base_kt = kind_maps[0].get(k)
        for i, m in enumerate(kind_maps):
            kt = m.get(k)
            # Time ratio to the first run (e.g. compiled / eager: below 1 is faster).
            ratio = (
                f" x{kt.time_s / base_kt.time_s:.2f}"
                if i and kt and base_kt and base_kt.time_s > 0
                else ""
            )
            cells.append(f"{pct(kt.share)} ({ms(kt.time_s)} ms{ratio})" if kt else "-")
        kind_rows.append(Row((KIND_LABELS.get(k, k), *cells)))
    kind_rows.extend(_comm_rows(runs))
    kind_rows.extend(compare_memory_rows(runs))
    kind_rows.append(Row(
        ("step", *[f"{ms(r.step_s)} ms" + ("" if i == 0 else f" x{r.step_s / runs[0].step_s:.2f}")
                   for i, r in enumerate(runs)]), bold=True, gap_before=True))
    kind_cols = [Column("kind", align="left", name=True)] + [Column(h) for h in heads]

    names: list[str] = []
    kinds: dict[str, str] = {}
    for r in runs:
        for row in r.layers:
            if row.name not in kinds:
                names.append(row.name)
                kinds[row.name] = row.kind
    rows_by_name = [{row.name: row for row in r.layers} for r in runs]
    layer_rows = []
    for name in names:
        base = rows_by_name[0].get(name)
        cells = []
        for i, by_name in enumerate(rows_by_name):
            lr = by_name.get(name)
            if lr is None:
                cells.append("-")
            elif i == 0 or base is None or base.total_s == 0:
                cells.append(ms(lr.total_s))
            else:
                cells.append(f"{ms(lr.total_s)} x{lr.total_s / base.total_s:.2f}")
        layer_rows.append(Row((name or "(model)", KIND_LABELS.get(kinds[name], kinds[name]),
                               *cells)))
    layer_cols = ([Column("layer", align="left", name=True),
                   Column("kind", align="left", drop=2, shrink=3, min_width=6)]
                  + [Column(h) for h in heads])
    return Group(
        *legend,
        Text("per kind: share of step (time, ratio to run 1)", style="bold"),
        lay_out(kind_cols, kind_rows, width).renderable(),
        Text(""),
        Text("per layer: total ms (ratio to run 1)", style="bold"),
        lay_out(layer_cols, layer_rows, width).renderable(),
    )
