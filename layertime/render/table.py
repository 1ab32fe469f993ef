"""Terminal table of a run: rows grouped by kind, phases as columns, headline on top.

The table fits the width it is given (see :mod:`layertime.render.layout`):
``calls``, then the communication detail, ``params`` and ``type`` give way
first; layer names and numbers are never cut.  The footer gives the step
times behind the overhead ratio, so the ratio can be recomputed by hand.
"""

from __future__ import annotations

import statistics

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.compiled import compiled_lines
from layertime.render.fmt import count, ms, pct
from layertime.render.memory import SAVED_HEADER, has_memory, memory_lines, saved_cell
from layertime.render.roles import has_roles, render_roles
from layertime.render.parallel.sharded import collectives_table, sharded_lines
from layertime.render.trace_source import trace_comm_lines, trace_lines
from layertime.render.layout import Column, Laid, Row, lay_out, to_text
from layertime.results.run import LayerRow, Run
from layertime.taxonomy import KIND_LABELS, KINDS


#: Step rows shown only when measured non-zero (a user loop or a framework has them).
_OPTIONAL_ROWS = ("data", "clip", "scheduler", "logging", "compiled", "update")


def _columns(comm: bool, memory: bool = False) -> list[Column]:
    cols = [
        Column("layer", align="left", name=True),
        Column("type", align="left", drop=2, shrink=5, min_width=10),
        Column("fwd ms"),
        Column("bwd ms"),
        Column("upd ms"),
    ]
    if comm:
        cols += [Column("comm ms"), Column("hidden ms", drop=4), Column("comm %", drop=5)]
    cols += [Column("total ms"), Column("share"), Column("params", drop=3)]
    if memory:  # hidden first when the table is too wide
        cols.append(Column(SAVED_HEADER, drop=7))
    cols.append(Column("calls", drop=6))
    return cols


def _rows(run: Run) -> list[Row]:
    step = run.profiled_step_s or 1.0
    has_comm = run.comm_s > 0

    def comm(exposed_s: float, comm_s: float, share: str) -> tuple[str, ...]:
        return (ms(exposed_s), ms(comm_s - exposed_s), share) if has_comm else ()

    blank = ("", "", "") if has_comm else ()
    memory = has_memory(run)

    def saved(nbytes: int) -> tuple[str, ...]:
        return (saved_cell(nbytes),) if memory else ()

    groups: dict[str, list[LayerRow]] = {}
    for r in run.layers:
        groups.setdefault(r.kind, []).append(r)
    kinds = run.by_kind()
    rows: list[Row] = []
    first = True
    for kind in [k for k in KINDS if k in groups] + [k for k in groups if k not in KINDS]:
        members = groups[kind]
        kt = kinds[kind]
        rows.append(Row((
            f"{KIND_LABELS.get(kind, kind)} ({len(members)})", "", ms(kt.forward_s),
            ms(kt.backward_s), ms(kt.update_s),
            *comm(kt.comm_exposed_s, kt.comm_s, pct(kt.comm_share)),
            ms(kt.time_s), pct(kt.share), count(kt.params),
            *saved(sum(r.saved_bytes for r in members)), "",
        ), bold=True, gap_before=not first))
        first = False
        for r in members:
            rows.append(Row((
                f"  {r.label}", r.type, ms(r.forward_s), ms(r.backward_s), ms(r.update_s),
                *(comm(r.comm_exposed_s, r.comm_s, pct(r.comm_s / run.comm_s))
                  if r.comm_bytes else blank),
                ms(r.total_s), pct(r.total_s / step), count(r.params), *saved(r.saved_bytes),
                f"{r.calls:g}",
            )))
    p = run.phases
    step_rows = [("loss (step)", p.loss_s), ("zero_grad (step)", p.zero_grad_s),
                 ("data (step)", p.data_s), ("clip (step)", p.clip_s),
                 ("scheduler (step)", p.scheduler_s), ("logging (step)", p.logging_s),
                 ("compiled wrapper (step)", p.compiled_wrapper_s),
                 ("update (step)", p.update_step_s), ("unattributed (step)", p.unattributed_s)]
    for i, (label, value) in enumerate(step_rows):
        if label.split()[0] in _OPTIONAL_ROWS and value == 0.0:
            continue
        loss_saved = run.memory.loss_saved_bytes if run.memory is not None and i == 0 else 0
        rows.append(Row((label, "", "", "", "", *blank, ms(value), pct(value / step), "",
                         *((saved_cell(loss_saved) if loss_saved else "",) if memory else ()),
                         ""), gap_before=i == 0))
    rows.append(Row((
        "profiled step", "", ms(p.forward_s), ms(p.backward_s), ms(p.update_s),
        *comm(p.comm_exposed_s, run.comm_s, "100.0%" if has_comm else ""),
        ms(run.profiled_step_s), "100.0%", count(run.params),
        *saved(run.memory.saved_bytes if run.memory is not None
               else sum(r.saved_bytes for r in run.layers)), "",
    ), bold=True, gap_before=True))
    return rows


def run_table(run: Run, width: int | None = None) -> Laid:
    """The per-layer table, grouped by kind with a subtotal per kind.

    A data-parallel run adds communication columns after ``upd ms``: the
    exposed part (in ``total ms``), the hidden part, and each kind's share of
    the run's communication.
    """
    return lay_out(_columns(run.comm_s > 0, has_memory(run)), _rows(run), width)


def _rank_lines(run: Run) -> list[str]:
    return [
        f"  rank {r.rank} ({r.host}): step {ms(r.step_s)} ms, profiled "
        f"{ms(r.profiled_step_s)} ms = compute {ms(r.compute_s)} + exposed comm "
        f"{ms(r.comm_exposed_s)} ms (of which ~{ms(r.wait_s)} ms waiting for the "
        "slowest rank)"
        for r in run.ranks
    ]


def comm_lines(run: Run) -> list[str]:
    """Data-parallel runs: backend, link, buckets and one line per rank (a straggler shows);
    sharded runs: the layout and how to read the collectives (``render/parallel/sharded.py``)."""
    if run.sharding is not None:
        return sharded_lines(run) + _rank_lines(run)
    if run.trace is not None:
        return trace_comm_lines(run)
    if run.world_size <= 1 and not run.ranks:
        return []
    link = (
        f"; link measured {run.link.bandwidth_gbps:,.1f} Gbit/s, "
        f"{run.link.latency_us:,.0f} µs latency"
        if run.link is not None
        else ""
    )
    lines = [
        f"data-parallel: {run.world_size} ranks, {run.backend or '?'}, "
        f"{len(run.buckets)} gradient bucket(s), {run.comm_bytes / 2**20:,.1f} MiB all-reduced "
        f"per step; comm {ms(run.comm_s)} ms per step, {ms(run.phases.comm_exposed_s)} ms "
        f"exposed{link}",
        "  comm ms: exposed (the training thread waited or copied; in total ms); hidden ms: "
        "overlapped backward compute; comm %: of all communication",
    ]
    return lines + _rank_lines(run)


def _samples(label: str, xs: tuple[float, ...]) -> str:
    if len(xs) == 1:
        return f"{label} {ms(xs[0])} ms (1 step)"
    return (f"{label} {ms(statistics.median(xs))} ms (median of {len(xs)}, range "
            f"{ms(min(xs))}–{ms(max(xs))})")


def step_lines(run: Run) -> list[str]:
    """The steps behind the overhead ratio, and why fewer steps than asked were taken.

    The ratio is traced / unprofiled, both medians, as printed; it is "within
    noise" when the ratios of the ranges' ends (slowest traced over fastest
    unprofiled, and fastest traced over slowest unprofiled) enclose 1.
    """
    plain = run.step_samples_s
    traced = run.traced_step_samples_s or run.profiled_step_samples_s
    if not plain or not traced:
        return []
    pm, tm = statistics.median(plain), statistics.median(traced)
    lo, hi = min(traced) / max(plain), max(traced) / min(plain)
    if len(plain) == 1 or len(traced) == 1:
        noise = "; one sample on a side: too few to tell overhead from noise"
    elif lo <= 1.0 <= hi:
        noise = "; within noise (the ranges overlap)"
    else:
        noise = ""
    lines = [
        f"{_samples('unprofiled step', plain)}; {_samples('traced', traced)}; overhead "
        f"{ms(tm)} / {ms(pm)} = x{tm / pm:.2f}{noise}"
    ]
    if run.timing == "cuda-kernel-time":
        lines.append(
            f"rows: each layer's GPU kernel time in the traced steps; unattributed: the GPU's "
            f"idle time in the unprofiled step (and kernels outside any layer); they add up to "
            f"{ms(run.profiled_step_s)} ms"
        )
    else:
        lines.append(f"rows: CPU self time of each layer's ops; they add up to the traced step "
                     f"({ms(run.profiled_step_s)} ms, mean)")
    asked = run.steps_requested
    if asked is not None and run.steps < asked:
        if run.time_budget_s is not None and run.warmup_step_s is not None:
            n = run.steps
            lines.append(
                f"{n} traced step{'s' if n > 1 else ''}, not {asked}: the time budget of "
                f"{run.time_budget_s:g} s allowed {n} plain/traced pair{'s' if n > 1 else ''} "
                f"of about {2 * run.warmup_step_s:.2g} s (judged by the warm-up step); "
                f"--steps {asked} forces {asked}"
            )
        else:
            lines.append(f"{run.steps} traced steps, not {asked} (the ranks agreed on the fewest)")
    return lines


def summary_lines(run: Run) -> list[str]:
    env = run.environment
    lines = step_lines(run)
    if run.trace is not None:
        lines.extend(trace_lines(run))
    else:
        lines.append(
            f"{env.device_name} · {env.threads} threads · torch {env.torch} · "
            f"{run.optimizer} · timing: {run.timing} · update split by {run.update_split}"
        )
    lines.extend(comm_lines(run))
    lines.extend(memory_lines(run))
    lines.extend(compiled_lines(run))
    lines.extend(f"note: {n}" for n in run.notes)
    lines.extend(f"warning: {w}" for w in run.warnings)
    return lines


def render(run: Run, width: int | None = None) -> RenderableType:
    """Headline, table and summary as one rich renderable, the table fitted to ``width``."""
    laid = run_table(run, width)
    parts: list[RenderableType] = [Text(run.headline(), style="bold"), laid.renderable()]
    if has_roles(run):
        parts.append(render_roles(run, width))
    if run.collectives:
        parts.append(collectives_table(run, width).renderable())
    parts.extend(Text(line, style="dim") for line in summary_lines(run))
    return Group(*parts)


def render_text(run: Run, width: int | None = 120) -> str:
    """The same as plain text, with no colour (tests, reports): the table fitted to
    ``width``; prose lines wrap at that width (None: nothing wraps)."""
    return to_text(render(run, width), width)
