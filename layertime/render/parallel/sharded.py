"""Terminal view of a sharded run's communication: what was sharded, a table of the
step's collectives by kind and phase, and the reading of its columns.

The per-layer table (``table.py``) already shows each layer's share (``comm ms`` exposed,
``hidden ms``); this says where that comes from, so its sums can be checked: the
table's ``exposed ms`` column adds up to the ``comm`` the phases hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from layertime.render.fmt import ms, num
from layertime.render.layout import Column, Laid, Row, lay_out
from layertime.results.run import Run
from layertime.results.parallel.sharded import COLLECTIVE_KINDS, COLLECTIVE_LABELS, CollectiveRow

_PHASES = ("forward", "backward")


def _group(rows: Sequence[CollectiveRow], label: str, phase: str, bold: bool = False,
           gap: bool = False) -> Row:
    calls = sum(r.count for r in rows)
    nbytes = sum(r.bytes for r in rows)
    return Row((
        label, phase, (f"{calls:g}" if calls == int(calls) else num(calls)) if calls else "-", num(nbytes / 2**20) if nbytes else "-",
        ms(sum(r.exposed_s for r in rows)), ms(sum(r.hidden_s for r in rows)),
        ms(sum(r.busy_s for r in rows)) if calls else "-",
    ), bold=bold, gap_before=gap)


def collectives_table(run: Run, width: int | None = None) -> Laid:
    """The step's collectives by kind and phase (means per step over ranks), then a total."""
    cols = [
        Column("collective", align="left", name=True),
        Column("phase", align="left"),
        Column("calls"),
        Column("MiB"),
        Column("exposed ms"),
        Column("hidden ms"),
        Column("backend ms", drop=1),
    ]
    rows: list[Row] = []
    layer_rows = [c for c in run.collectives if c.scope != "step"]
    for kind in COLLECTIVE_KINDS:
        for phase in _PHASES:
            mine = [c for c in layer_rows if c.kind == kind and c.phase == phase]
            if mine:
                rows.append(_group(mine, COLLECTIVE_LABELS[kind], phase))
    steps = [c for c in run.collectives if c.scope == "step"]
    if steps:
        rows.append(_group(steps, "in step rows", "-"))
    rows.append(_group(layer_rows, "charged to layers", "", bold=True, gap=True))
    return lay_out(cols, rows, width)


def _units(run: Run) -> str:
    s = run.sharding
    if s is None or not s.units:
        return ""
    inner = [u for u in s.units if u]
    span = f"{inner[0]} .. {inner[-1]}, " if len(inner) > 1 else f"{inner[0]}, " if inner else ""
    return f"; FSDP units: {len(s.units)} ({span}root)"


def sharded_lines(run: Run) -> list[str]:
    """What was sharded and how, and how to read the collectives table."""
    s = run.sharding
    if s is None:
        return []
    link = (f"; link measured {run.link.bandwidth_gbps:,.1f} Gbit/s, "
            f"{run.link.latency_us:,.0f} µs latency" if run.link is not None else "")
    hidden = run.comm_s - run.phases.comm_exposed_s
    lines = [
        f"sharded: {s.describe()}, {run.backend or '?'}{_units(run)}; comm "
        f"{ms(run.comm_s)} ms per step, {ms(run.phases.comm_exposed_s)} ms exposed, "
        f"{ms(hidden)} ms hidden{link}",
    ]
    if s.tp_layers:
        styles = ", ".join(f"{k} {v}" for k, v in list(s.tp_layers.items())[:4])
        more = f" (+{len(s.tp_layers) - 4})" if len(s.tp_layers) > 4 else ""
        lines.append(f"  tensor-parallel: {styles}{more}; plan: {s.tp_plan or '?'}")
    lines += [
        "  a unit's collectives are charged to its own layers by parameter elements; a "
        "tensor-parallel layer's to itself",
        "  exposed: the training thread launched, copied or waited (in total ms); hidden: "
        "the backend ran beside compute; backend: gloo's or NCCL's own time; MiB: full "
        "buffers",
    ]
    return lines
