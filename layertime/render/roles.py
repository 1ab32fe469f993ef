"""The roles summary printed after a transformer's table: attention, MLP, embeddings, ...

Kept apart from the per-layer table (``table.py``) so that either can change
alone; at most 80 columns wide.
"""

from __future__ import annotations

import statistics

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from layertime.cost.result import CostResult
from layertime.render.fmt import ms as _ms, pct as _pct
from layertime.result import Run
from layertime.roles import ROLE_LABELS, ROLES

_STEP_LABELS = {"loss": "loss (step)", "step": "zero_grad, data (step)",
                "unattributed": "unattributed (step)"}


def has_roles(run: Run) -> bool:
    """Whether a run has attention or MLP rows (a transformer, text or image)."""
    roles = run.roles()
    return "attention" in roles or "mlp" in roles


def roles_table(run: Run) -> Table:
    """Time and parameters per role; shares of the profiled step, adding up to 100%."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for col in ("role", "fwd+bwd ms", "total ms", "share", "params", "params %"):
        t.add_column(col, justify="left" if col == "role" else "right")
    roles = run.roles()
    for role in ROLES:
        rt = roles.get(role)
        if rt is None:
            continue
        t.add_row(f"{ROLE_LABELS[role]} ({rt.rows})", _ms(rt.forward_s + rt.backward_s),
                  Text(_ms(rt.time_s), style="bold"), Text(_pct(rt.share), style="bold"),
                  f"{rt.params:,}" if rt.params else "-", _pct(rt.params_share))
        if role == "attention" and rt.core_s:
            t.add_row("  score/softmax core", "", _ms(rt.core_s), _pct(rt.core_share),
                      "", "")
    t.add_section()
    for role, label in _STEP_LABELS.items():
        rt = roles.get(role)
        if rt is not None:
            t.add_row(label, "", _ms(rt.time_s), _pct(rt.share), "", "")
    return t


def block_line(run: Run) -> str | None:
    """How many blocks, and the spread of their times (rows grouped by ``block``)."""
    placed = run.placements()
    per: dict[str, float] = {}
    for r in run.layers:
        block = placed[r.name][1]
        if block is not None:
            per[block] = per.get(block, 0.0) + r.total_s
    if not per:
        return None
    times = list(per.values())
    first, last = next(iter(per)), list(per)[-1]
    span = f"{first} .. {last}" if len(per) > 1 else first
    return (f"{len(per)} block(s) ({span}): {_ms(min(times))} to {_ms(max(times))} ms each, "
            f"median {_ms(statistics.median(times))} ms")


def render_roles(run: Run) -> RenderableType:
    """The roles table and the blocks line, with how roles are decided."""
    parts: list[RenderableType] = [Text("by role (layertime.roles: attention = its projections "
                                        "and core; MLP = feed-forward and activation)",
                                        style="bold"), roles_table(run)]
    line = block_line(run)
    if line:
        parts.append(Text(line, style="dim"))
    return Group(*parts)


def cost_roles(cost: CostResult) -> RenderableType:
    """A cost estimate by role (FLOPs, saved activations, parameters, predicted time)
    and the per-block line (FLOPs and activations saved for backward)."""
    roles = cost.by_role()
    pred = cost.prediction is not None
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ["role", "GFLOP", "share", "saved MB", "params %"] + (["est. share"] if pred else [])
    for col in cols:
        t.add_column(col, justify="left" if col == "role" else "right")
    total = cost.flops.total or 1
    for role in (*ROLES, "loss"):
        rc = roles.get(role)
        if rc is None:
            continue
        label = f"{ROLE_LABELS.get(role, role)} ({rc.layers})" if role != "loss" else "loss"
        cells = [label, f"{rc.flops.total / 1e9:,.2f}", _pct(rc.flops_share),
                 f"{rc.saved_activations / 1e6:,.1f}", _pct(rc.params_share)]
        if pred:
            cells.append(_pct(rc.predicted_share))
        t.add_row(*cells)
        if role == "attention" and rc.core_flops:
            t.add_row("  score/softmax core", f"{rc.core_flops / 1e9:,.2f}",
                      _pct(rc.core_flops / total), "", "", *([""] if pred else []))
    parts: list[RenderableType] = [
        Text("by role (layertime.roles; FLOPs of the whole step)", style="bold"), t]
    blocks = cost.blocks()
    if blocks:
        flops = [b.flops for b in blocks.values()]
        saved = [b.saved_activations for b in blocks.values()]
        names = list(blocks)
        span = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
        parts.append(Text(
            f"{len(blocks)} block(s) ({span}): {min(flops) / 1e9:,.2f} to {max(flops) / 1e9:,.2f} "
            f"GFLOP and {min(saved) / 1e6:,.1f} to {max(saved) / 1e6:,.1f} MB of saved "
            "activations each", style="dim"))
    return Group(*parts)
