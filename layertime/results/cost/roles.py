"""A cost estimate grouped by role and by transformer block (the counts of
:class:`~layertime.results.cost.estimate.CostResult` that answer attention against the MLP).

Each layer's ``role`` and ``block`` were placed when it was counted
(``layertime.roles``); a layer without one (files written before roles)
counts as ``other`` and in no block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layertime.results.cost.rows import LayerCost, PhaseCounts
from layertime.results.rows import CORES
from layertime.taxonomy import ROLE_LABELS, ROLES


@dataclass(frozen=True)
class RoleCost:
    """Counts of all layers of one role (or the loss row, role ``loss``), shares of the
    step; ``core_flops``: the attention role's ``attention``-kind layers (its score/softmax
    core, without the projections), the sequence-mixing role's ``scan``-kind layers (its
    selective scan)."""

    role: str
    layers: int
    params: int
    params_share: float
    flops: PhaseCounts
    flops_share: float
    core_flops: int = 0
    saved_activations: int = 0
    predicted_s: float | None = None
    predicted_share: float | None = None

    @property
    def label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


@dataclass(frozen=True)
class BlockCost:
    """One transformer block's FLOPs (whole step), saved activations (bytes) and parameters."""

    block: str
    flops: int
    saved_activations: int
    params: int


def role_costs(
    layers: Sequence[LayerCost], loss: LayerCost, *, predicted_total_s: float | None
) -> dict[str, RoleCost]:
    """Totals per role, in report order, then the loss row as ``loss`` (when it did work).

    ``predicted_total_s``: the predicted step (None without a prediction)."""
    params_total = sum(r.params for r in layers) or 1
    flops_total = (sum((r.flops for r in layers), PhaseCounts()) + loss.flops).total or 1
    groups: dict[str, list[LayerCost]] = {}
    for r in layers:
        groups.setdefault(r.role or "other", []).append(r)
    if loss.calls or loss.flops.total:
        groups["loss"] = [loss]
    out: dict[str, RoleCost] = {}
    # Known roles in report order, then any a newer version wrote, then the loss.
    known = [k for k in ROLES if k in groups]
    for role in known + [k for k in groups if k not in known and k != "loss"] + (
            ["loss"] if "loss" in groups else []):
        rows = groups[role]
        flops = sum((r.flops for r in rows), PhaseCounts())
        core = sum(r.flops.total for r in rows if CORES.get(role) == r.kind)
        p_s: float | None = None
        p_share: float | None = None
        if predicted_total_s is not None:
            p_s = sum(r.predicted.total_s for r in rows if r.predicted is not None)
            p_share = p_s / predicted_total_s if predicted_total_s else 0.0
        params = sum(r.params for r in rows)
        out[role] = RoleCost(
            role=role,
            layers=len(rows),
            params=params,
            params_share=params / params_total,
            flops=flops,
            flops_share=flops.total / flops_total,
            core_flops=core,
            saved_activations=sum(r.memory_bytes.saved_activations for r in rows),
            predicted_s=p_s,
            predicted_share=p_share,
        )
    return out


def block_costs(layers: Sequence[LayerCost]) -> dict[str, BlockCost]:
    """Per block, in model order: FLOPs, the activations saved for backward, parameters."""
    acc: dict[str, list[int]] = {}
    for r in layers:
        if r.block is None:
            continue
        a = acc.setdefault(r.block, [0, 0, 0])
        a[0] += r.flops.total
        a[1] += r.memory_bytes.saved_activations
        a[2] += r.params
    return {b: BlockCost(b, f, m, p) for b, (f, m, p) in acc.items()}


def transformer_headline(
    roles: dict[str, RoleCost], *, training: bool, flops_total: int, where: str
) -> str:
    """Each role of the blocks (shares of FLOPs, predicted time and parameters):
    attention with its score/softmax core, sequence mixing with its selective scan, the
    MLP, MoE experts with their router; then the embeddings and head together; ``where``
    closes it ("(hf:gpt2, batch 8, seq 1024)")."""
    what = "training FLOPs" if training else "forward FLOPs"
    parts: list[str] = []

    def part(noun: str, rcs: list[RoleCost], note: str = "") -> None:
        share = sum(r.flops_share for r in rcs)
        text = f"{noun}: {share:.0%} of {'FLOPs' if parts else what}{note}"
        if all(r.predicted_share is not None for r in rcs):
            text += f", {sum(r.predicted_share or 0.0 for r in rcs):.0%} of predicted time"
        parts.append(text + f", {sum(r.params_share for r in rcs):.0%} of parameters")

    for role in ("attention", "mixing", "mlp", "experts"):
        rc = roles.get(role)
        if rc is None:
            continue
        note = ""
        if role == "attention" and rc.core_flops:
            note = f" (its score/softmax core: {rc.core_flops / (flops_total or 1):.0%})"
        elif role == "mixing" and rc.core_flops:
            note = f" (its selective scan: {rc.core_flops / (flops_total or 1):.0%})"
        elif role == "experts" and "router" in roles:
            note = f" (router {roles['router'].flops_share:.0%})"
        part(rc.label, [rc], note)
    ends = [roles[k] for k in ("embedding", "head") if k in roles]
    if ends:
        part(" and ".join(r.label for r in ends), ends)
    return "; ".join(parts) + f" ({where})"
