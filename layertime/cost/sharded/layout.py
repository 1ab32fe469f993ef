"""A model's layers as a sharded step holds them: FSDP units, tensor-parallel styles,
parameter shapes and the dimension TP splits (from ``workload.sharding``, the description
the measuring side applies, so a prediction and a measurement mean one layout)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from layertime.cost.sharded.collectives import LayerLayout, ParamLayout
from layertime.results.cost.rows import LayerCost
from layertime.workload.sharding import (
    ShardingSpec,
    fsdp_units,
    linear_features,
    tp_plan,
    tp_split_dim,
    unit_of,
)


def tp_regions(names: Sequence[str], plan: Mapping[str, str]) -> set[str]:
    """Modules whose compute is split over the tensor-parallel ranks: the parallel layers,
    and everything inside the smallest modules holding both a column-wise and a row-wise
    layer (Llama's ``self_attn`` with its attention core, ``mlp`` with its activation).

    The modules inside such a module are taken as working on sharded activations; one
    that runs after the row-wise layer's all-reduce (GPT-2's residual dropout) does not,
    and is counted as split too.
    """
    col: set[str] = set()
    row: set[str] = set()
    for name, style in plan.items():
        into = row if style == "rowwise" else col
        segs = name.split(".")
        into.update(".".join(segs[:i]) for i in range(len(segs) + 1))
    both = col & row
    lowest = [m for m in both
              if not any(o != m and (m == "" or o.startswith(m + ".")) for o in both)]
    out = set(plan)
    for n in names:
        if any(n == m or m == "" or n.startswith(m + ".") for m in lowest):
            out.add(n)
    return out


def layout(
    model: nn.Module,
    rows: Sequence[LayerCost],
    sharding: ShardingSpec,
    world_size: int,
    label: str = "",
) -> tuple[tuple[LayerLayout, ...], tuple[str, ...], str | None]:
    """(layers in ``named_modules`` order, FSDP units, where the TP plan comes from).

    ``rows`` are the cost count of the same model (names, kinds, types, roles, calls);
    parameters are charged to their first owner, as the count does.  Refusals (a ``tp``
    that does not divide the ranks, the heads or a layer's features; a model with no
    tensor-parallel plan) are :mod:`workload.sharding`'s one-line errors.
    """
    _, tp = sharding.mesh(world_size)
    plan = tp_plan(model, tp, label) if tp > 1 else None
    styles: Mapping[str, str] = plan.layers if plan is not None else {}
    units = (fsdp_units([(r.name, r.kind, r.type, r.params) for r in rows])
             if sharding.fsdp else ("",))
    modules = dict(model.named_modules())
    regions = tp_regions([r.name for r in rows], styles) if styles else set()
    seen: set[int] = set()
    out: list[LayerLayout] = []
    for r in rows:
        mod = modules.get(r.name)
        params: list[ParamLayout] = []
        style = styles.get(r.name)
        if mod is not None:
            for pname, p in mod.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                dim = tp_split_dim(mod, pname, style) if style is not None else None
                params.append(ParamLayout(tuple(int(d) for d in p.shape), dim, p.requires_grad))
        out.append(LayerLayout(
            name=r.name, kind=r.kind, type=r.type, unit=unit_of(r.name, units),
            params=tuple(params), tp_style=style,
            features=linear_features(mod) if style is not None and mod is not None else None,
            calls=max(1, r.calls), tp_region=r.name in regions, role=r.role, block=r.block,
        ))
    return tuple(out), tuple(units), plan.source if plan is not None else None
