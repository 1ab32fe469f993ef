"""Terminal table of a run: rows grouped by kind, phases as columns, headline on top."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.render.fmt import ms as _ms, pct as _pct
from layertime.results.run import LayerRow, Run
from layertime.taxonomy import KIND_LABELS, KINDS


def _params(n: int) -> str:
    return f"{n:,}" if n else "-"


def run_table(run: Run) -> Table:
    """The per-layer table, grouped by kind with a subtotal per kind.

    A data-parallel run adds communication columns after ``update ms``: the
    exposed part (in ``total ms``), the hidden part, and each kind's share of
    the run's communication.
    """
    step = run.profiled_step_s or 1.0
    comm = run.comm_s > 0
    table = _CommTable(comm, box=box.SIMPLE_HEAD, show_footer=False, pad_edge=False)
    table.add_column("layer", overflow="fold")
    table.add_column("type")
    table.add_column("fwd ms", justify="right")
    table.add_column("bwd ms", justify="right")
    table.add_column("update ms", justify="right")
    if comm:
        table.add_column("comm ms", justify="right")
        table.add_column("hidden ms", justify="right")
        table.add_column("comm share", justify="right")
    table.add_column("total ms", justify="right")
    table.add_column("share", justify="right")
    table.add_column("params", justify="right")
    table.add_column("calls", justify="right")

    groups: dict[str, list[LayerRow]] = {}
    for r in run.layers:
        groups.setdefault(r.kind, []).append(r)
    kinds = run.by_kind()
    for kind in KINDS:
        rows = groups.get(kind)
        if not rows:
            continue
        kt = kinds[kind]
        table.add_row(
            Text(f"{KIND_LABELS[kind]} ({len(rows)})", style="bold"),
            "",
            _ms(kt.forward_s),
            _ms(kt.backward_s),
            _ms(kt.update_s),
            *table.comm(kt.comm_exposed_s, kt.comm_s, Text(_pct(kt.comm_share), style="bold")),
            Text(_ms(kt.time_s), style="bold"),
            Text(_pct(kt.share), style="bold"),
            _params(kt.params),
            "",
        )
        for r in rows:
            table.add_row(
                f"  {r.label}",
                r.type,
                _ms(r.forward_s),
                _ms(r.backward_s),
                _ms(r.update_s),
                *(
                    table.comm(r.comm_exposed_s, r.comm_s, _pct(r.comm_s / run.comm_s))
                    if r.comm_bytes
                    else table.blank()
                ),
                _ms(r.total_s),
                _pct(r.total_s / step),
                _params(r.params),
                f"{r.calls:g}",
            )
        table.add_section()
    p = run.phases
    for label, value in (
        ("loss (step)", p.loss_s),
        ("zero_grad (step)", p.zero_grad_s),
        ("data (step)", p.data_s),
        ("unattributed (step)", p.unattributed_s),
    ):
        if label.startswith("data") and value == 0.0:
            continue
        table.add_row(label, "", "", "", "", *table.blank(), _ms(value), _pct(value / step), "", "")
    table.add_section()
    table.add_row(
        Text("profiled step", style="bold"),
        "",
        _ms(p.forward_s),
        _ms(p.backward_s),
        _ms(p.update_s),
        *table.comm(p.comm_exposed_s, run.comm_s, "100.0%" if comm else ""),
        Text(_ms(run.profiled_step_s), style="bold"),
        "100.0%",
        _params(run.params),
        "",
    )
    return table


class _CommTable(Table):
    """A table that knows whether it has the communication columns."""

    def __init__(self, comm: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.has_comm = comm

    def comm(self, exposed_s: float, comm_s: float, share: str | Text) -> list[str | Text]:
        if not self.has_comm:
            return []
        return [_ms(exposed_s), _ms(comm_s - exposed_s), share]

    def blank(self) -> list[str]:
        return ["", "", ""] if self.has_comm else []


def comm_lines(run: Run) -> list[str]:
    """Data-parallel runs: backend, link, buckets and one line per rank (a straggler shows)."""
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
        f"per step; comm {_ms(run.comm_s)} ms per step, {_ms(run.phases.comm_exposed_s)} ms "
        f"exposed{link}",
        "  comm ms: exposed (the training thread waited or copied; in total ms); hidden ms: "
        "overlapped backward compute; comm share: of all communication",
    ]
    for r in run.ranks:
        lines.append(
            f"  rank {r.rank} ({r.host}): step {_ms(r.step_s)} ms, profiled "
            f"{_ms(r.profiled_step_s)} ms = compute {_ms(r.compute_s)} + exposed comm "
            f"{_ms(r.comm_exposed_s)} ms (of which ~{_ms(r.wait_s)} ms waiting for the "
            "slowest rank)"
        )
    return lines


def summary_lines(run: Run) -> list[str]:
    env = run.environment
    lines = [
        f"unprofiled step {_ms(run.step_s)} ms (median of {len(run.step_samples_s)}, "
        f"sd {_ms(run.step_spread_s)} ms); profiled step {_ms(run.profiled_step_s)} ms "
        f"(mean of {len(run.profiled_step_samples_s)}); overhead x{run.overhead_ratio:.3f}",
        f"{env.device_name} · {env.threads} threads · torch {env.torch} · "
        f"{run.optimizer} · timing: {run.timing} · update split by {run.update_split}",
    ]
    lines.extend(comm_lines(run))
    lines.extend(f"warning: {w}" for w in run.warnings)
    return lines


def render(run: Run) -> RenderableType:
    """Headline, table and summary as one rich renderable."""
    parts: list[RenderableType] = [Text(run.headline(), style="bold"), run_table(run)]
    parts.extend(Text(line, style="dim") for line in summary_lines(run))
    return Group(*parts)


def render_text(run: Run, width: int = 120) -> str:
    """The same as plain text at a fixed width, with no colour (for tests and reports)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, force_terminal=False)
    console.print(render(run))
    return buf.getvalue()
