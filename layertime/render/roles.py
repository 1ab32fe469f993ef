"""The roles summary printed after a transformer's table: attention, MLP, embeddings, ...

It reads the roles and blocks the collectors placed in the result
(``Run.roles()``, ``LayerRow.block``; ``CostResult.by_role()``, ``blocks()``).
Kept apart from the per-layer tables (``table.py``, ``cost_table.py``) so
that either can change alone; laid out by ``layout.lay_out`` like every
terminal table (about 60 columns wide, so it fits 80).
"""

from __future__ import annotations

import statistics

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import count, ms, num, pct
from layertime.render.layout import Column, Row, lay_out
from layertime.render.views.roles import shows_roles
from layertime.results.cost.estimate import CostResult
from layertime.results.rows import CORES
from layertime.results.run import Run
from layertime.taxonomy import KIND_LABELS, ROLE_LABELS, ROLES

_STEP_LABELS = {"loss": "loss (step)", "step": "zero_grad, data",
                "unattributed": "unattributed"}
_TITLE = "by role (layertime.roles): attention = projections + core, MLP = feed-forward"
#: Under the table when a run has experts: what the two MoE roles hold.
MOE_NOTE = "MoE experts: the experts (shared too), dispatch, combine; router: gate, top-k"
#: The roles printed bold: what mixes the sequence and the feed-forward layers.
_LEAD = ("attention", "mixing", "mlp", "experts")


def core_label(role: str) -> str:
    """The line under a role for its core: attention's score/softmax core, sequence
    mixing's selective scan."""
    return "score/softmax core" if role == "attention" else KIND_LABELS[CORES[role]]


def has_roles(run: Run) -> bool:
    """Whether a run has attention or MLP rows (a transformer, text or image): the rule
    the HTML report and the plots follow too."""
    return shows_roles(run.roles())


def block_line(run: Run) -> str | None:
    """How many blocks, and the spread of their times (rows grouped by ``block``)."""
    per: dict[str, float] = {}
    for r in run.layers:
        if r.block is not None:
            per[r.block] = per.get(r.block, 0.0) + r.total_s
    if not per:
        return None
    times = list(per.values())
    names = list(per)
    span = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
    return (f"{len(per)} block(s) ({span}): {ms(min(times))} to {ms(max(times))} ms each, "
            f"median {ms(statistics.median(times))} ms")


def render_roles(run: Run, width: int | None = None) -> RenderableType:
    """Time and parameters per role (shares of the profiled step, adding up to 100%),
    the attention core on its own line, and the blocks line."""
    cols = [Column("role", align="left", name=True), Column("fwd+bwd ms", drop=1),
            Column("total ms"), Column("share"), Column("params"), Column("params %")]
    roles = run.roles()
    rows: list[Row] = []
    for role in ROLES:
        rt = roles.get(role)
        if rt is None:
            continue
        rows.append(Row((f"{ROLE_LABELS[role]} ({rt.rows})", ms(rt.forward_s + rt.backward_s),
                         ms(rt.time_s), pct(rt.share), count(rt.params),
                         pct(rt.params_share)), bold=role in _LEAD))
        if role in CORES and rt.core_s:
            rows.append(Row((f"  {core_label(role)}", "", ms(rt.core_s), pct(rt.core_share),
                             "", "")))
    first = True
    p = run.phases
    step_parts = [name for name, t in (("zero_grad", p.zero_grad_s), ("data", p.data_s),
                                       ("clip", p.clip_s), ("scheduler", p.scheduler_s),
                                       ("logging", p.logging_s),
                                       ("compiled wrapper", p.compiled_wrapper_s),
                                       ("update", p.update_step_s)) if t]
    labels = {**_STEP_LABELS, "step": ", ".join(step_parts) or _STEP_LABELS["step"]}
    for role, label in labels.items():
        rt = roles.get(role)
        if rt is not None:
            rows.append(Row((label, "", ms(rt.time_s), pct(rt.share), "", ""), gap_before=first))
            first = False
    parts: list[RenderableType] = [Text(_TITLE, style="bold"),
                                   lay_out(cols, rows, width).renderable()]
    line = block_line(run)
    if line:
        parts.append(Text(line, style="dim"))
    if "experts" in roles:
        parts.append(Text(MOE_NOTE, style="dim"))
    return Group(*parts)


def cost_roles(cost: CostResult, width: int | None = None) -> RenderableType:
    """A cost estimate by role (FLOPs, saved activations, parameters, predicted time)
    and the per-block line (FLOPs and activations saved for backward)."""
    roles = cost.by_role()
    pred = cost.prediction is not None
    cols = [Column("role", align="left", name=True), Column("GFLOP"), Column("share"),
            Column("saved MB", drop=2), Column("params %", drop=1)]
    if pred:
        cols.append(Column("est. share"))
    total = cost.flops.total or 1
    rows: list[Row] = []
    for role in (*ROLES, "loss"):
        rc = roles.get(role)
        if rc is None:
            continue
        label = f"{ROLE_LABELS.get(role, role)} ({rc.layers})" if role != "loss" else "loss"
        cells = [label, num(rc.flops.total / 1e9), pct(rc.flops_share),
                 num(rc.saved_activations / 1e6), pct(rc.params_share)]
        if pred:
            cells.append(pct(rc.predicted_share))
        rows.append(Row(tuple(cells), bold=role in _LEAD))
        if role in CORES and rc.core_flops:
            rows.append(Row((f"  {core_label(role)}", num(rc.core_flops / 1e9),
                             pct(rc.core_flops / total), "", "", *([""] if pred else []))))
    parts: list[RenderableType] = [
        Text("by role (layertime.roles; FLOPs of the whole step)", style="bold"),
        lay_out(cols, rows, width).renderable()]
    blocks = cost.blocks()
    if blocks:
        flops = [b.flops for b in blocks.values()]
        saved = [b.saved_activations for b in blocks.values()]
        names = list(blocks)
        span = f"{names[0]} .. {names[-1]}" if len(names) > 1 else names[0]
        parts.append(Text(
            f"{len(blocks)} block(s) ({span}): {num(min(flops) / 1e9)} to "
            f"{num(max(flops) / 1e9)} GFLOP and {num(min(saved) / 1e6)} to "
            f"{num(max(saved) / 1e6)} MB of saved activations each", style="dim"))
    if "experts" in roles:
        parts.append(Text(MOE_NOTE, style="dim"))
    return Group(*parts)
