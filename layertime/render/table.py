"""Terminal table of a run: rows grouped by kind, phases as columns, headline on top."""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.result import KIND_LABELS, KINDS, LayerRow, Run


def _ms(s: float) -> str:
    return f"{s * 1e3:,.2f}"


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _params(n: int) -> str:
    return f"{n:,}" if n else "-"


def run_table(run: Run) -> Table:
    """The per-layer table, grouped by kind with a subtotal per kind."""
    step = run.profiled_step_s or 1.0
    table = Table(box=box.SIMPLE_HEAD, show_footer=False, pad_edge=False)
    table.add_column("layer", overflow="fold")
    table.add_column("type")
    table.add_column("fwd ms", justify="right")
    table.add_column("bwd ms", justify="right")
    table.add_column("update ms", justify="right")
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
        table.add_row(label, "", "", "", "", _ms(value), _pct(value / step), "", "")
    table.add_section()
    table.add_row(
        Text("profiled step", style="bold"),
        "",
        _ms(p.forward_s),
        _ms(p.backward_s),
        _ms(p.update_s),
        Text(_ms(run.profiled_step_s), style="bold"),
        "100.0%",
        _params(run.params),
        "",
    )
    return table


def summary_lines(run: Run) -> list[str]:
    env = run.environment
    lines = [
        f"unprofiled step {_ms(run.step_s)} ms (median of {len(run.step_samples_s)}, "
        f"sd {_ms(run.step_spread_s)} ms); profiled step {_ms(run.profiled_step_s)} ms "
        f"(mean of {len(run.profiled_step_samples_s)}); overhead x{run.overhead_ratio:.3f}",
        f"{env.device_name} · {env.threads} threads · torch {env.torch} · "
        f"{run.optimizer} · timing: {run.timing} · update split by {run.update_split}",
    ]
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
