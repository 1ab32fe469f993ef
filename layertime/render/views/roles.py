"""Roles and blocks in the views of a transformer: "Share by role" and "Time per block".

The profile and cost views (:mod:`~layertime.render.views.profile`,
:mod:`~layertime.render.views.cost`) add these charts, and a role column to
their tables, when the result's rows were placed as attention or MLP
(:func:`shows_roles`, the rule the terminal's roles table follows too).  The
roles and blocks are read from the rows, where the collectors stored them
(``LayerRow.role``, ``LayerCost.role``); nothing here places a layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from layertime.render.views.charts import bar, chart, phase_series, shares_chart
from layertime.render.views.style import (
    PHASE_LABELS,
    fmt_count,
    fmt_int,
    fmt_ms,
    fmt_pct,
    si_scale,
)
from layertime.results.rows import CORES, RoleTotal
from layertime.taxonomy import ROLE_LABELS, ROLES, kind_label

#: Roles in report order, then the step-level rows (a profile's loss, zero_grad and data,
#: unattributed time; a cost estimate's loss).
ROLE_ORDER: tuple[str, ...] = (*ROLES, "loss", "step", "unattributed")
#: The attention core's own bar: part of attention's, not beside it.
CORE_LABEL = "score/softmax core (in attention)"
CORE_NOTE = "part of attention: included in attention's bar, not added to it"
#: The selective scan's own bar: part of sequence mixing's.
SCAN_LABEL = "selective scan (in sequence mixing)"
SCAN_NOTE = "part of sequence mixing: included in its bar, not added to it"
#: Each core's group key, label and note, by its role (results.rows.CORES).
_CORE_GROUPS = {"attention": ("attention-core", CORE_LABEL, CORE_NOTE),
                "mixing": ("mixing-core", SCAN_LABEL, SCAN_NOTE)}
#: What each role holds, for the charts' captions.
ROLES_NOTE = ("Roles (layertime.roles): attention is its projections and its score/softmax "
              "core; sequence mixing a state-space mixer (its selective scan, projections "
              "and convolution); MLP the feed-forward projections and their activation; "
              "MoE experts every expert (shared ones too) and the MoE layer's dispatch, "
              "MoE router its gate and top-k; embeddings, norms, head (LM head, pooler, "
              "classifier); other is what cannot be placed (containers' own time, such as "
              "residual adds).")
#: Roles that make a result a transformer-like model's (blocks that mix the sequence
#: or feed forward), for which reports show roles.
_BLOCK_ROLES = ("attention", "mixing", "mlp", "experts")


def shows_roles(roles: Mapping[str, Any]) -> bool:
    """Whether a result's roles (``Run.roles()``, ``CostResult.by_role()``) have attention,
    sequence-mixing, MLP or expert layers: a transformer (text or image), a mixture of
    experts, a state-space model.  Reports show roles only then."""
    return any(k in roles for k in _BLOCK_ROLES)


def role_label(role: str) -> str:
    """What people read for a role ("MLP", "embeddings"), or a step-level row's kind label."""
    return ROLE_LABELS.get(role) or kind_label(role)


def role_groups(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                time: Mapping[str, RoleTotal] | None = None) -> list[dict[str, Any]]:
    """Each role's share of each metric, a role's core after it (attention's score/softmax
    core, sequence mixing's selective scan), for :func:`roles_chart`.

    ``rows`` are a view's rows, each with its ``role`` (step-level rows: their
    kind), ``kind``, ``params`` and, where counted, ``flops`` (by phase, with
    ``total``), ``memory`` and ``predicted`` (``total_s``); shares are of the
    rows' totals, as in the by-kind chart.  ``time``: a run's role totals
    (``Run.roles()``), whose shares of the profiled step give the time bars.
    """
    def sums(mine: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"params_n": sum(r["params"] for r in mine)}
        if any(r.get("flops") for r in mine):
            out["flops_n"] = sum(r["flops"]["total"] for r in mine if r.get("flops"))
        if any(r.get("memory") is not None for r in mine):
            out["memory_n"] = sum(r["memory"] for r in mine if r.get("memory") is not None)
        if any(r.get("predicted") for r in mine):
            out["predicted_s"] = sum(r["predicted"]["total_s"] for r in mine
                                     if r.get("predicted"))
        return out

    by_role: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_role.setdefault(r["role"], []).append(r)
    totals = sums(rows)
    params_total = totals["params_n"] or 1
    groups: list[dict[str, Any]] = []
    for role in [k for k in ROLE_ORDER if k in by_role] + [k for k in by_role
                                                           if k not in ROLE_ORDER]:
        core_rows = [r for r in by_role[role] if CORES.get(role) == r["kind"]]
        parts = [(role, role_label(role), by_role[role])]
        core_key, core_label, core_note = _CORE_GROUPS.get(role, ("", "", ""))
        if core_rows:
            parts.append((core_key, core_label, core_rows))
        for key, label, mine in parts:
            g: dict[str, Any] = {"key": key, "label": label, **sums(mine)}
            if key == core_key:
                g["note"] = core_note
            g["params"] = g["params_n"] / params_total
            for m, n in (("flops", "flops_n"), ("memory", "memory_n"),
                         ("predicted", "predicted_s")):
                if n in g:
                    g[m] = g[n] / (totals.get(n) or 1.0)
            if time is not None:
                rt = time.get(role)
                core = key == core_key
                g["time_s"] = (rt.core_s if core else rt.time_s) if rt is not None else 0.0
                g["time"] = (rt.core_share if core else rt.share) if rt is not None else 0.0
            groups.append(g)
    # A role with no share of anything shown gets no group (as a kind gets none).
    return [g for g in groups if any(g.get(m) for m in metrics)]


def roles_chart(groups: Sequence[Mapping[str, Any]], metrics: Sequence[str],
                caption: str) -> dict[str, Any]:
    """"Share by role": each role's share of each metric beside the others."""
    return shares_chart("roles", groups, metrics, "Share by role",
                        caption + " The score/softmax core is part of attention (the selective "
                        "scan of sequence mixing): its bar is included in that role's, not "
                        "added to it.")


def _block_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows grouped by block, blocks in model order (their first row's)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("block") is not None:
            out.setdefault(r["block"], []).append(r)
    return out


def _outside(rows: Sequence[Mapping[str, Any]], value: Callable[[Mapping[str, Any]], float],
             total: float, fmt: Callable[[float], str]) -> str:
    """What lies outside the blocks: the layers (a cost estimate's loss too), by role, then a
    profile's step-level rows, each with its total ``value`` and share of ``total``."""
    def part(mine: Sequence[Mapping[str, Any]], what: str) -> str:
        v = sum(value(r) for r in mine)
        return f"{what}: {fmt(v)}, {fmt_pct(v / total if total else None)}"

    out = [r for r in rows if r.get("block") is None and not r.get("step_row")]
    steps = [r for r in rows if r.get("step_row")]
    roles = ", ".join(role_label(k) for k in ROLE_ORDER if any(r["role"] == k for r in out))
    parts = ([part(out, f"outside the blocks ({roles})")] if out else []) + (
        [part(steps, "step-level rows")] if steps else [])
    return "; ".join(parts)


def _sublabel(rows: Sequence[Mapping[str, Any]], block: str) -> str:
    """The block's own class (``GPT2Block``), when the block module has a row."""
    return next((r["type"] for r in rows if r["name"] == block), "")


def _block_head(rows: Sequence[Mapping[str, Any]], block: str, n: int) -> str:
    """A block's first hover line: its name, class and number of rows."""
    return f"{block}  ({', '.join(filter(None, (_sublabel(rows, block), f'{n} rows')))})"


def _role_split(mine: Sequence[Mapping[str, Any]], value: Any, fmt: Any) -> str:
    per: dict[str, float] = {}
    for r in mine:
        per[r["role"]] = per.get(r["role"], 0.0) + value(r)
    return " · ".join(f"{role_label(k)} {fmt(per[k])}" for k in ROLE_ORDER if per.get(k))


def blocks_chart(rows: Sequence[Mapping[str, Any]], step_s: float) -> dict[str, Any] | None:
    """"Time per block": each block's rows added up, forward, backward and update stacked
    (and the exposed gradient sync of a data-parallel run); None without blocks."""
    blocks = _block_of(rows)
    if not blocks:
        return None
    keys = [k for k in ("forward", "backward", "update", "comm")
            if any(r["values"].get(k) for mine in blocks.values() for r in mine)]
    bars = []
    for name, mine in blocks.items():
        values = {k: sum(r["values"].get(k, 0.0) for r in mine) for k in keys}
        total = sum(values.values())
        params = sum(r["params"] for r in mine)
        tip = [_block_head(rows, name, len(mine))]
        tip += [f"{PHASE_LABELS[k]}: {fmt_ms(values[k])} ms" for k in keys]
        tip.append(f"total: {fmt_ms(total)} ms · {fmt_pct(total / step_s if step_s else None, 2)}"
                   " of step")
        tip.append("by role: " + _role_split(mine, lambda r: r["total_s"],
                                             lambda t: f"{fmt_ms(t)} ms"))
        if params:
            tip.append(f"parameters: {fmt_int(params)}")
        bars.append(bar(name, name, _sublabel(rows, name), {k: v * 1e3 for k, v in values.items()},
                        total * 1e3, fmt_ms(total), False, tip))
    caption = ("Milliseconds per training step: each block's rows added up, in model order; "
               + _outside(rows, lambda r: r["total_s"], step_s, lambda t: f"{fmt_ms(t)} ms")
               + " (shares of the step).")
    return chart("blocks", "stacked", "Time per block", caption, unit="ms", layout="half",
                 series=phase_series(keys), rows=bars)


def flops_blocks_chart(rows: Sequence[Mapping[str, Any]],
                       phases: Sequence[str]) -> dict[str, Any] | None:
    """"FLOPs per block": each block's counted FLOPs by phase (a cost estimate's rows);
    None without blocks."""
    blocks = _block_of(rows)
    if not blocks:
        return None
    sums = {name: {k: sum(r["flops"].get(k, 0.0) for r in mine) for k in phases}
            for name, mine in blocks.items()}
    scale, prefix = si_scale(max((sum(v.values()) for v in sums.values()), default=0.0))
    flops_total = sum(r["flops"]["total"] for r in rows) or 1.0
    bars = []
    for name, mine in blocks.items():
        values = sums[name]
        total = sum(values.values())
        tip = [_block_head(rows, name, len(mine))]
        tip += [f"{PHASE_LABELS[k]}: {fmt_count(values[k])}" for k in phases]
        tip.append(f"total: {fmt_count(total)} · {fmt_pct(total / flops_total, 2)} of FLOPs")
        tip.append("by role: " + _role_split(mine, lambda r: r["flops"]["total"], fmt_count))
        params = sum(r["params"] for r in mine)
        if params:
            tip.append(f"parameters: {fmt_int(params)}")
        bars.append(bar(name, name, _sublabel(rows, name),
                        {k: v / scale for k, v in values.items()}, total / scale,
                        fmt_count(total), False, tip))
    unit = f"{prefix}FLOP"
    caption = (f"{unit} per training step, by phase: each block's layers added up, in model "
               "order; " + _outside(rows, lambda r: r["flops"]["total"], flops_total, fmt_count)
               + " (shares of the FLOPs).")
    return chart("blocks", "stacked", "FLOPs per block", caption, unit=unit, layout="half",
                 series=phase_series(phases), rows=bars)
