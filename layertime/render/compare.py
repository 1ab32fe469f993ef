"""Tables for stored runs, sweeps and side-by-side comparisons (read-only renderers)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.render.fmt import ms as _ms
from layertime.results.run import Run
from layertime.results.stored import StoredRun
from layertime.results.sweep import SweepResult
from layertime.taxonomy import KIND_LABELS, KINDS, STEP_KINDS


def runs_table(runs: Sequence[StoredRun]) -> Table:
    """Stored runs, one line each, in the order given (newest first from the store)."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "kind", "model", "batch", "device", "status", "created", "step ms", "note"):
        t.add_column(col, justify="right" if col in ("id", "batch", "step ms") else "left")
    for r in runs:
        step = r.result.get("step_s") if r.result and r.kind == "profile" else None
        note = r.error or ""
        if r.sweep_id is not None:
            note = (f"sweep {r.sweep_id}; " + note).rstrip("; ")
        t.add_row(
            str(r.id),
            r.kind,
            r.model,
            "-" if r.batch_size is None else str(r.batch_size),
            r.device or "-",
            r.status,
            r.created[:19].replace("T", " "),
            _ms(step),
            note[:60],
        )
    return t


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
          "recurrent": "rnn", "dropout": "drop", "step": "step", "unattributed": "unattr"}


def sweep_table(result: SweepResult) -> RenderableType:
    """Each configuration's share of step time per kind, then the crossover(s)."""
    runs = [p.run for p in result.points if p.run is not None]
    kinds = [k for k in KINDS + STEP_KINDS if any(k in r.by_kind() for r in runs)]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("model", "batch", "image", "device", "status", "step ms"):
        t.add_column(
            col,
            justify="right" if col in ("batch", "image", "step ms") else "left",
            overflow="fold",
        )
    for k in kinds:
        t.add_column(_SHORT.get(k, k) + " %", justify="right")
    for p in result.points:
        c = p.config
        row = [
            c["model"],
            str(c["batch_size"]),
            str(c["image_size"] or "default"),
            p.run.device if p.run else c["device"],
            p.status if p.status != "skipped" else "stored",
            _ms(p.run.step_s) if p.run else "-",
        ]
        by_kind = p.run.by_kind() if p.run else {}
        row += [f"{by_kind[k].share * 100:.1f}" if k in by_kind else "-" for k in kinds]
        t.add_row(*row)
    parts: list[RenderableType] = [t]
    for p in result.points:
        if p.status == "failed":
            parts.append(Text(f"failed: {p.config['model']} batch {p.config['batch_size']}: {p.error}"))
    if result.crossovers:
        parts.extend(Text(c.describe(), style="bold") for c in result.crossovers)
    else:
        parts.append(Text("no crossover in this range: the same kind leads at every batch size"))
    return Group(*parts)


def compare_table(runs: Sequence[Run], labels: Sequence[str]) -> RenderableType:
    """Runs side by side, aligned by layer name, with ratios to the first run."""
    if len(runs) < 2:
        raise ValueError("compare needs two runs or more")
    head = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="per kind: share of step (time)")
    head.add_column("kind")
    for lab in labels:
        head.add_column(lab, justify="right")
    kind_maps = [r.by_kind() for r in runs]
    for k in KINDS + STEP_KINDS:
        if not any(k in m for m in kind_maps):
            continue
        cells = []
        for m in kind_maps:
            kt = m.get(k)
            cells.append(f"{kt.share:.1%} ({_ms(kt.time_s)} ms)" if kt else "-")
        head.add_row(KIND_LABELS.get(k, k), *cells)
    head.add_row(
        Text("step", style="bold"),
        *[f"{_ms(r.step_s)} ms" + ("" if i == 0 else f" x{r.step_s / runs[0].step_s:.2f}")
          for i, r in enumerate(runs)],
    )

    layers = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="per layer: total ms (ratio to first)")
    layers.add_column("layer")
    layers.add_column("kind")
    for lab in labels:
        layers.add_column(lab, justify="right")
    names: list[str] = []
    kinds: dict[str, str] = {}
    for r in runs:
        for row in r.layers:
            if row.name not in kinds:
                names.append(row.name)
                kinds[row.name] = row.kind
    rows_by_name = [{row.name: row for row in r.layers} for r in runs]
    for name in names:
        base = rows_by_name[0].get(name)
        cells = []
        for i, by_name in enumerate(rows_by_name):
            lr = by_name.get(name)
            if lr is None:
                cells.append("-")
            elif i == 0 or base is None or base.total_s == 0:
                cells.append(_ms(lr.total_s))
            else:
                cells.append(f"{_ms(lr.total_s)} x{lr.total_s / base.total_s:.2f}")
        layers.add_row(name or "(model)", KIND_LABELS.get(kinds[name], kinds[name]), *cells)
    return Group(head, layers)
