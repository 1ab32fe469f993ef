"""Terminal tables of the sharded-training what-if: the step's collectives by kind, and the
layers (grouped across blocks) whose communication is exposed."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import ms, num, pct
from layertime.render.layout import Column, Laid, Row, lay_out
from layertime.results.cost.sharded import (
    COUNTED_KINDS,
    COUNTED_LABELS,
    ShardedCost,
    pattern_of,
)

#: Layer groups shown; the rest are summed on one line.
TOP_GROUPS = 12
_PHASE = {"forward": "fwd", "backward": "bwd"}


def _mib(n: int | float) -> str:
    return num(n / 2**20)


def collective_table(sc: ShardedCost, width: int | None = None) -> Laid:
    """One row per collective kind and phase: how many, bytes, time, exposed, hidden."""
    cols = [Column("collective", align="left", name=True), Column("ranks", drop=3),
            Column("count", drop=1), Column("MiB", drop=2), Column("sent MiB"),
            Column("ms"), Column("exposed ms"), Column("hidden ms")]
    rows: list[Row] = []
    for kind in COUNTED_KINDS:
        for phase in ("forward", "backward"):
            cs = [c for c in sc.collectives if c.kind == kind and c.phase == phase]
            if not cs:
                continue
            timed = all(c.seconds is not None for c in cs)
            sim = all(c.exposed_s is not None for c in cs)
            secs = sum(c.seconds or 0.0 for c in cs) if timed else None
            exp = sum(c.exposed_s or 0.0 for c in cs) if sim else None
            hid = sum(c.hidden_s or 0.0 for c in cs) if sim and timed else None
            rows.append(Row((f"{COUNTED_LABELS[kind]} {_PHASE[phase]}",
                             f"{cs[0].group} x{cs[0].ranks}", str(len(cs)),
                             _mib(sum(c.bytes for c in cs)), _mib(sum(c.wire_bytes for c in cs)),
                             ms(secs), ms(exp), ms(hid))))
    rows.append(Row(("per step", "", str(len(sc.collectives)), _mib(sc.comm_bytes),
                     _mib(sc.wire_bytes), ms(sc.comm_s), ms(sc.exposed_s), ms(sc.hidden_s)),
                    bold=True, gap_before=True))
    return lay_out(cols, rows, width)


def layer_table(sc: ShardedCost, width: int | None = None) -> Laid:
    """Layer groups (block numbers as ``*``), most exposed communication first."""
    groups = sc.groups()
    measured = any(r.measured_comm_s is not None for r in sc.layers)
    cols = [Column("layer", align="left", name=True), Column("n", drop=2),
            Column("TP", align="left", drop=4), Column("MiB", drop=1), Column("ms"),
            Column("exposed ms"), Column("hidden ms", drop=3), Column("share")]
    if measured:
        cols += [Column("measured ms", drop=5), Column("meas. exposed", drop=5)]
    exposed = sc.exposed_s
    comm = sc.comm_s

    def share(g_exposed: float | None, g_comm: float | None, g_bytes: int) -> str:
        if exposed:
            return pct((g_exposed or 0.0) / exposed)
        if comm:
            return pct((g_comm or 0.0) / comm)
        return pct(g_bytes / sc.wire_bytes) if sc.wire_bytes else "-"

    meas: dict[str, tuple[float, float]] = {}
    if measured:
        for r in sc.layers:
            if r.measured_comm_s is not None:
                m = meas.setdefault(pattern_of(r.name), (0.0, 0.0))
                meas[pattern_of(r.name)] = (m[0] + r.measured_comm_s,
                                            m[1] + (r.measured_exposed_s or 0.0))
    rows: list[Row] = []
    for g in groups[:TOP_GROUPS]:
        cells = [g.pattern or "(model)", str(g.layers), g.tp_style or "", _mib(g.comm_bytes),
                 ms(g.comm_s), ms(g.exposed_s), ms(g.hidden_s),
                 share(g.exposed_s, g.comm_s, g.wire_bytes)]
        if measured:
            got = meas.get(g.pattern)
            cells += [ms(got[0]) if got else "-", ms(got[1]) if got else "-"]
        rows.append(Row(tuple(cells)))
    rest = groups[TOP_GROUPS:]
    if rest:
        n = sum(g.layers for g in rest)
        c = None if any(g.comm_s is None for g in rest) else sum(g.comm_s or 0.0 for g in rest)
        e = (None if any(g.exposed_s is None for g in rest)
             else sum(g.exposed_s or 0.0 for g in rest))
        h = None if c is None or e is None else max(0.0, c - e)
        b = sum(g.wire_bytes for g in rest)
        cells = [f"({len(rest)} more groups)", str(n), "",
                 _mib(sum(g.comm_bytes for g in rest)), ms(c), ms(e), ms(h), share(e, c, b)]
        if measured:
            cells += ["", ""]
        rows.append(Row(tuple(cells)))
    return lay_out(cols, rows, width)


def summary_lines(sc: ShardedCost) -> list[str]:
    """How the numbers were made: mesh, units, plan, links, compute, notes."""
    lines = [
        f"{sc.description}: {sc.world_size} ranks = dp {sc.dp} x tp {sc.tp}; batch "
        f"{sc.batch_size} per data-parallel rank"
        + (f", seq {sc.seq_len}" if sc.seq_len is not None else "")
        + f", {sc.dtype}"
    ]
    if sc.fsdp:
        lines.append(f"FSDP units: {len(sc.units)} (the root last); prefetch one unit ahead, "
                     "reduce-scatter after each unit's backward, one collective at a time")
    if sc.tp_plan_source:
        lines.append(f"tensor-parallel plan: {sc.tp_plan_source}; its all-reduces are on the "
                     "critical path (exposed)")
    for what, link in (("data-parallel", sc.dp_link), ("tensor-parallel", sc.tp_link)):
        if link is not None:
            lines.append(f"{what} link: {link.bandwidth_gbps:,.4g} Gbit/s, "
                         f"{link.latency_us:,.3g} µs per message ({link.source})")
    lines.append("ring: (n-1)/n x bytes / bandwidth + (n-1) x latency per all-gather or "
                 "reduce-scatter, twice that per all-reduce; MiB: the full tensors, sent MiB: "
                 "what each rank sends")
    if sc.compute_s is not None:
        lines.append(f"compute per rank {ms(sc.compute_s)} ms ({sc.compute_source}); "
                     f"step {ms(sc.step_s)} ms = compute + exposed")
    if sc.measured_step_s is not None:
        lines.append(f"measured: step {ms(sc.measured_step_s)} ms, communication "
                     f"{ms(sc.measured_comm_s)} ms ({ms(sc.measured_exposed_s)} exposed)")
    lines.extend(sc.notes)
    return lines


def render(sc: ShardedCost, width: int | None = None) -> RenderableType:
    parts: list[RenderableType] = [Text(sc.headline(), style="bold"),
                                   collective_table(sc, width).renderable(),
                                   Text(""), layer_table(sc, width).renderable()]
    parts.extend(Text(line, style="dim") for line in summary_lines(sc))
    return Group(*parts)
