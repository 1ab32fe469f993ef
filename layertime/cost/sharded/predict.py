"""From a layout, compute times and links to a :class:`ShardedCost` (pure).

The step's compute, one rank's (``docs/cost.md``, "Sharded training"): the layers in
``named_modules`` order, cut into runs of consecutive layers of one FSDP unit (the root's
layers before the first block run before it, those after it after it), then the loss,
then the runs again in reverse for backward, then the optimizer update, then the step's
other work (a measured run's zero_grad, data, unattributed...).  FSDP2's schedule on that:

* forward: the root's all-gather first, then each unit's, issued as the unit before it
  (in the order units first run) starts computing: prefetch one unit ahead; a unit's
  first run waits for its all-gather;
* backward (reshard after forward): each unit's all-gather issued as the unit before it
  in backward order starts its backward (the root, which stays gathered, prefetches the
  last block); its reduce-scatter issued as its last backward run ends;
* the update waits for every reduce-scatter.

Tensor-parallel all-reduces lengthen the run of the layer that issues them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layertime.cost.comm import ring_allreduce_s, ring_gather_s
from layertime.cost.sharded.collectives import LayerLayout, Planned, plan_collectives
from layertime.cost.sharded.overlap import Segment, simulate
from layertime.results.parallel.comm import Link
from layertime.results.cost.sharded import Collective, ShardedCost, ShardedLayer

#: Stated in every result's ``conventions``.
CONVENTIONS: Mapping[str, str] = {
    "bytes": "a collective's full tensor: a unit's gathered (TP-local, FSDP-padded) "
             "parameters, its unreduced gradients, an all-reduced activation; wire_bytes: what "
             "one rank sends in a ring, (n-1)/n of it (all-gather, reduce-scatter) or 2(n-1)/n "
             "(all-reduce)",
    "time": "ring model: (n-1)/n x bytes / bandwidth + (n-1) x latency for an all-gather or "
            "reduce-scatter, 2(n-1)/n x bytes / bandwidth + 2(n-1) x latency for an all-reduce",
    "charging": "an FSDP unit's collectives to its layers by the bytes each contributes "
                "(their parameters' padded elements); a tensor-parallel all-reduce to its layer",
    "overlap": "FSDP2's prefetch one unit ahead in forward and backward, reduce-scatter after "
               "each unit's backward, collectives one at a time on one stream; tensor-parallel "
               "all-reduces on the critical path (exposed)",
    "compute": "one rank's: tensor-parallel layers (and the modules between a column-wise and "
               "a row-wise layer) divided by tp, the update by the share of parameters a rank "
               "holds",
}


@dataclass(frozen=True)
class LayerCompute:
    """One rank's compute seconds of a layer in this layout."""

    forward_s: float = 0.0
    backward_s: float = 0.0
    update_s: float = 0.0


@dataclass(frozen=True)
class StepCompute:
    """One rank's compute of a step: per layer, the loss, the step's other work."""

    layers: Mapping[str, LayerCompute]
    loss_s: float = 0.0
    other_s: float = 0.0
    source: str = ""

    @property
    def total_s(self) -> float:
        return (sum(c.forward_s + c.backward_s + c.update_s for c in self.layers.values())
                + self.loss_s + self.other_s)


def _seconds(p: Planned, dp_link: Link | None, tp_link: Link | None) -> float | None:
    c = p.collective
    link = dp_link if c.group == "dp" else tp_link
    if link is None:
        return None
    if c.kind == "all_reduce":
        return ring_allreduce_s(c.bytes, c.ranks, link)
    return ring_gather_s(c.bytes, c.ranks, link)


def _runs(layers: Sequence[LayerLayout]) -> list[tuple[str, list[str]]]:
    """Consecutive layers of one unit: (unit, layer names), in forward order."""
    out: list[tuple[str, list[str]]] = []
    for r in layers:
        if out and out[-1][0] == r.unit:
            out[-1][1].append(r.name)
        else:
            out.append((r.unit, [r.name]))
    return out


def _first_by_unit(units_of_segments: Sequence[str]) -> dict[str, int]:
    first: dict[str, int] = {}
    for i, u in enumerate(units_of_segments):
        first.setdefault(u, i)
    return first


def build_segments(
    layers: Sequence[LayerLayout],
    planned: Sequence[Planned],
    compute: StepCompute,
    tp_seconds: Mapping[tuple[str, str], float],
) -> tuple[list[Segment], list[int]]:
    """The step's segments, and the indices in ``planned`` of the collectives they issue on
    the communication stream (the FSDP ones), in the order ``simulate`` numbers them."""
    dp_ops = [i for i, p in enumerate(planned) if p.collective.group == "dp"]
    index = {(planned[i].collective.kind, planned[i].collective.phase,
              planned[i].collective.owner): k for k, i in enumerate(dp_ops)}
    runs = _runs(layers)

    def length(names: Sequence[str], phase: str) -> float:
        s = 0.0
        for n in names:
            c = compute.layers.get(n, LayerCompute())
            s += c.forward_s if phase == "forward" else c.backward_s
            s += tp_seconds.get((n, phase), 0.0)
        return s

    segs: list[Segment] = []
    # Forward.
    first = _first_by_unit([u for u, _ in runs])
    order = sorted(first, key=lambda u: (u != "", first[u]))  # the root gathers first
    gathered = [u for u in order if ("all_gather", "forward", u) in index]
    starts: dict[int, list[int]] = {}
    for j, u in enumerate(gathered):
        at = 0 if j == 0 else min(first[gathered[j - 1]], first[u])
        starts.setdefault(at, []).append(index[("all_gather", "forward", u)])
    for i, (u, names) in enumerate(runs):
        op = index.get(("all_gather", "forward", u))
        waits = (op,) if op is not None and first[u] == i else ()
        segs.append(Segment(f"forward {u or '(root)'}", length(names, "forward"), waits,
                            tuple(starts.get(i, ()))))
    segs.append(Segment("(loss)", compute.loss_s))
    # Backward.
    bruns = list(reversed(runs))
    bunits = [u for u, _ in bruns]
    bfirst = _first_by_unit(bunits)
    blast = {u: i for i, u in enumerate(bunits)}
    border = sorted(bfirst, key=lambda u: bfirst[u])
    bstarts: dict[int, list[int]] = {}
    for k, u in enumerate(border):
        op = index.get(("all_gather", "backward", u))
        if op is not None:
            at = bfirst[border[k - 1]] if k > 0 else bfirst[u]
            bstarts.setdefault(at, []).append(op)
    rs_ops: list[int] = []
    for i, (u, names) in enumerate(bruns):
        op = index.get(("all_gather", "backward", u))
        waits = (op,) if op is not None and bfirst[u] == i else ()
        rs = index.get(("reduce_scatter", "backward", u))
        ends = (rs,) if rs is not None and blast[u] == i else ()
        rs_ops.extend(ends)
        segs.append(Segment(f"backward {u or '(root)'}", length(names, "backward"), waits,
                            tuple(bstarts.get(i, ())), ends))
    update = sum(c.update_s for c in compute.layers.values())
    segs.append(Segment("(update)", update, tuple(rs_ops)))
    if compute.other_s:
        segs.append(Segment("(other)", compute.other_s))
    return segs, dp_ops


def predict(
    model: str,
    layers: Sequence[LayerLayout],
    units: Sequence[str],
    *,
    world_size: int,
    dp: int,
    tp: int,
    fsdp: bool,
    reshard_after_forward: bool,
    batch_size: int,
    seq_len: int | None,
    dtype: str,
    elem_bytes: int,
    dp_link: Link | None,
    tp_link: Link | None,
    compute: StepCompute | None = None,
    tp_plan_source: str | None = None,
    measured: Mapping[str, tuple[float, float]] | None = None,
    measured_step_s: float | None = None,
    notes: Sequence[str] = (),
    overlap: bool = True,
) -> ShardedCost:
    """Count the step's collectives, time them on the links, lay them against the compute
    (when given) and charge them to layers.  ``overlap=False``: every collective blocks the
    training thread (FSDP2 on the CPU, where its prefetching has no streams to run on)."""
    tokens = batch_size * (seq_len or 1)
    planned = plan_collectives(layers, units, dp=dp, tp=tp, fsdp=fsdp,
                               reshard_after_forward=reshard_after_forward,
                               elem_bytes=elem_bytes, tokens=tokens)
    seconds = [_seconds(p, dp_link, tp_link) for p in planned]
    exposed: list[float | None] = [None] * len(planned)
    starts: list[float | None] = [None] * len(planned)
    compute_s = None
    if compute is not None and all(s is not None for s in seconds):
        tp_seconds: dict[tuple[str, str], float] = {}
        for p, s in zip(planned, seconds):
            if p.collective.group == "tp":
                key = (p.collective.owner, p.collective.phase)
                tp_seconds[key] = tp_seconds.get(key, 0.0) + float(s or 0.0)
        segments, dp_ops = build_segments(layers, planned, compute, tp_seconds)
        timeline = simulate(segments, [float(seconds[i] or 0.0) for i in dp_ops])
        for k, i in enumerate(dp_ops):
            exposed[i] = timeline.exposed_s[k] if overlap else seconds[i]
            starts[i] = timeline.comm_start_s[k]
        for i, p in enumerate(planned):
            if p.collective.group == "tp":
                exposed[i] = seconds[i]
        compute_s = compute.total_s
    collectives = tuple(
        Collective(p.collective.kind, p.collective.phase, p.collective.group,
                   p.collective.ranks, p.collective.owner, p.collective.bytes,
                   p.collective.wire_bytes, seconds[i], exposed[i], starts[i])
        for i, p in enumerate(planned)
    )
    per: dict[str, list[float]] = {}
    timed = all(s is not None for s in seconds)
    for p, c in zip(planned, collectives):
        for name, b in p.shares.items():
            f = b / c.bytes if c.bytes else 0.0
            acc = per.setdefault(name, [0, 0.0, 0.0, 0.0])
            acc[0] += b
            acc[1] += c.wire_bytes * f
            acc[2] += (c.seconds or 0.0) * f
            acc[3] += (c.exposed_s or 0.0) * f
    simulated = compute_s is not None
    out_layers = []
    for r in layers:
        acc = per.get(r.name, [0, 0.0, 0.0, 0.0])
        lc = compute.layers.get(r.name) if compute is not None else None
        m = measured.get(r.name) if measured is not None else None
        out_layers.append(ShardedLayer(
            name=r.name, kind=r.kind, type=r.type, unit=r.unit,
            params=r.elements,
            local_params=sum(p.local(dp if fsdp else 1, tp) for p in r.params),
            tp_style=r.tp_style, role=r.role, block=r.block,
            comm_bytes=int(acc[0]), wire_bytes=round(acc[1]),
            comm_s=acc[2] if timed else None,
            exposed_s=acc[3] if simulated else None,
            forward_s=lc.forward_s if lc is not None else None,
            backward_s=lc.backward_s if lc is not None else None,
            update_s=lc.update_s if lc is not None else None,
            measured_comm_s=m[0] if m is not None else None,
            measured_exposed_s=m[1] if m is not None else None,
        ))
    return ShardedCost(
        model=model, batch_size=batch_size, seq_len=seq_len, dtype=dtype,
        world_size=world_size, dp=dp, tp=tp, fsdp=fsdp,
        reshard_after_forward=reshard_after_forward, units=tuple(units) if fsdp else (),
        collectives=collectives, layers=tuple(out_layers),
        dp_link=dp_link if fsdp and dp > 1 else None,
        tp_link=tp_link if tp > 1 else None,
        tp_plan_source=tp_plan_source,
        compute_s=compute_s,
        compute_source=compute.source if compute is not None and simulated else None,
        measured_step_s=measured_step_s,
        measured_comm_s=(sum(v[0] for v in measured.values()) if measured else None),
        measured_exposed_s=(sum(v[1] for v in measured.values()) if measured else None),
        notes=tuple(notes),
        conventions=dict(CONVENTIONS),
    )
