"""The roles summary printed after a transformer's table: attention, MLP, embeddings, ...

Kept apart from the per-layer table (``table.py``) so that either can change
alone; at most 80 columns wide.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

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
            t.add_row("  its core (score/softmax)", "", _ms(rt.core_s), _pct(rt.core_share),
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


def cost_role_rows(layers: Sequence[object]) -> Mapping[str, tuple[int, int, int]]:
    """Role -> (FLOPs, saved-activation bytes, parameters) of cost rows (``LayerCost``)."""
    from layertime.roles import roles_of

    placed = roles_of(layers)
    out: dict[str, tuple[int, int, int]] = {}
    for r in layers:
        role = placed[r.name].role  # type: ignore[attr-defined]
        f, m, p = out.get(role, (0, 0, 0))
        out[role] = (f + r.flops.total, m + r.memory_bytes.saved_activations,  # type: ignore[attr-defined]
                     p + r.params)  # type: ignore[attr-defined]
    return out
