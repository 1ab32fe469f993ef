"""The cost model of sharded training (FSDP2, tensor parallelism, both): each layer's
collective bytes, their time on a link, and which of them hide behind compute.

Public API::

    from layertime.cost.sharded import estimate_sharded, predict_run
    cost, sharded = estimate_sharded(workload, ShardingSpec(fsdp=True, tp=8), 64,
                                     dp_link=Link(400), device=get_profile("h100"))
    sharded = predict_run(run, ShardingSpec(fsdp=True), 4, dp_link=Link(10))  # a what-if

The layout is ``workload.sharding``'s (the one the measuring side applies); the count of
the model is the cost model's (``layertime.cost``), on the meta device: one count of the
unsharded model at the per-rank batch, whose compute is divided as tensor parallelism
divides it.  Modules: ``layout`` (the model's units, styles, shapes), ``collectives``
(what is sent, pure), ``overlap`` (the timeline, pure), ``predict`` (putting them
together, pure).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from layertime.cost import MathMode, estimate_with_model, predict as roofline
from layertime.cost.comm import DTYPE_BYTES
from layertime.cost.devices import DeviceProfile
from layertime.cost.sharded.collectives import LayerLayout
from layertime.cost.sharded.layout import layout
from layertime.cost.sharded.predict import LayerCompute, StepCompute, predict
from layertime.errors import LayertimeError
from layertime.results.parallel.comm import Link
from layertime.results.cost.estimate import CostResult
from layertime.results.parallel.sharded import ShardLayout
from layertime.results.cost.sharded import ShardedCost
from layertime.workload import WorkloadSpec
from layertime.workload.sharding import ShardingSpec

__all__ = [
    "compute_from_cost",
    "compute_from_run",
    "estimate_sharded",
    "from_cost",
    "from_run_model",
    "links",
    "predict_run",
    "sharding_of_run",
]


def _local_fraction(r: LayerLayout, dp: int, tp: int, fsdp: bool) -> float:
    """The share of the layer's parameter elements one rank updates."""
    full = r.elements
    if not full:
        return 0.0
    return sum(p.local(dp if fsdp else 1, tp) for p in r.params) / full


def compute_from_cost(
    cost: CostResult, layers: Sequence[LayerLayout], *, dp: int, tp: int, fsdp: bool
) -> StepCompute | None:
    """One rank's compute from the cost model's roofline prediction (None without one):
    the count is of the unsharded model at the per-rank batch, so tensor-parallel work is
    divided by ``tp`` and the update scaled to the parameters a rank holds."""
    if cost.prediction is None:
        return None
    rows = {r.name: r for r in cost.layers}
    out: dict[str, LayerCompute] = {}
    for lay in layers:
        r = rows.get(lay.name)
        if r is None or r.predicted is None:
            continue
        split = tp if lay.tp_region else 1
        out[lay.name] = LayerCompute(r.predicted.forward_s / split,
                                     r.predicted.backward_s / split,
                                     r.predicted.update_s * _local_fraction(lay, dp, tp, fsdp))
    loss = cost.loss.predicted
    return StepCompute(out, loss_s=loss.total_s if loss is not None else 0.0,
                       source=f"roofline: {cost.prediction.device}")


def sharding_of_run(run: Any) -> ShardingSpec | None:
    """The layout a measured run was sharded with (its ``sharding``: the measured run's
    :class:`ShardLayout`, a ShardingSpec or its dict), or None for an unsharded or DDP run
    (a run without one)."""
    value = getattr(run, "sharding", None)
    if value is None or isinstance(value, ShardingSpec):
        return value
    if isinstance(value, ShardLayout):  # a measured run's (results/parallel/sharded.py)
        return ShardingSpec(fsdp="fsdp" in value.mode, tp=value.tp,
                            reshard_after_forward=value.reshard_after_forward is not False)
    if isinstance(value, Mapping):
        return ShardingSpec.from_dict(value)
    raise LayertimeError(f"a run's sharding must be a ShardingSpec or its dict, not {value!r}")


def compute_from_run(
    run: Any,
    layers: Sequence[LayerLayout],
    *,
    dp: int,
    tp: int,
    fsdp: bool,
    measured: ShardingSpec | None = None,
) -> StepCompute:
    """One rank's compute from a measured :class:`~layertime.results.run.Run`'s rows,
    scaled to its unprofiled step (the profiler's overhead taken out) and from the layout
    it measured (``measured``: its sharding, None for an unsharded or DDP run) to this one:
    tensor-parallel work by ``measured tp / tp``, the update by the parameters a rank
    holds.  The loss, and the step's other work (zero_grad, data, unattributed, ...), are
    kept as measured."""
    profiled = run.profiled_step_s
    scale = run.step_s / profiled if profiled > 0 and math.isfinite(run.step_s) else 1.0
    if measured is not None:
        mdp, mtp = measured.mesh(run.world_size)
        mfsdp = measured.fsdp
    else:
        mdp, mtp, mfsdp = 1, 1, False
    by_name = {lay.name: lay for lay in layers}
    out: dict[str, LayerCompute] = {}
    for r in run.layers:
        lay = by_name.get(r.name)
        split = tp / mtp if lay is not None and lay.tp_region else 1.0
        upd = 1.0
        if lay is not None and lay.elements:
            was = _local_fraction(lay, mdp, mtp, mfsdp)
            upd = _local_fraction(lay, dp, tp, fsdp) / was if was else 1.0
        out[r.name] = LayerCompute(r.forward_s * scale / split, r.backward_s * scale / split,
                                   r.update_s * scale * upd)
    ph = run.phases
    return StepCompute(out, loss_s=ph.loss_s * scale,
                       other_s=(ph.step_level_s + ph.unattributed_s) * scale,
                       source="measured run")


def links(
    dp_link: Link | None = None,
    tp_link: Link | None = None,
    *,
    device: DeviceProfile | None = None,
    run: Any = None,
    fsdp: bool = True,
    tp: int = 1,
) -> tuple[Link | None, Link | None, list[str]]:
    """(data-parallel link, tensor-parallel link, notes): the data-parallel group on
    ``dp_link``, else the link measured in ``run``, else ``device``'s inter-node link; the
    tensor-parallel group on ``tp_link``, else ``device``'s intra-node link (NVLink), else
    the data-parallel one (one link for both, said in the notes)."""
    notes: list[str] = []
    if dp_link is None and run is not None and run.link is not None:
        dp_link = Link(run.link.bandwidth_gbps, run.link.latency_us, "measured in the run")
    if dp_link is None and device is not None:
        dp_link = device.inter_node_link
    if tp_link is None and device is not None:
        tp_link = device.intra_node_link
    if tp_link is None:
        tp_link = dp_link
        if dp_link is not None and fsdp and tp > 1:
            notes.append("one link for both groups: no intra-node link for the tensor-parallel "
                         "group (a device profile with one gives it)")
    elif dp_link is None and fsdp and device is not None:
        notes.append(f"the tensor-parallel group on {device.key}'s intra-node link; the "
                     "data-parallel group needs --link-gbps G")
    return dp_link, tp_link, notes


def _elem(dtype: str) -> int:
    return DTYPE_BYTES.get(dtype, 4)


def from_cost(
    cost: CostResult,
    model: Any,
    sharding: ShardingSpec,
    world_size: int,
    *,
    dp_link: Link | None = None,
    tp_link: Link | None = None,
    notes: Sequence[str] = (),
) -> ShardedCost:
    """The sharded step of a counted model (``model``: the module the count ran, for its
    parameters' shapes and its tensor-parallel plan), compute from the cost's roofline."""
    dp, tp = sharding.mesh(world_size)
    layers, units, source = layout(model, cost.layers, sharding, world_size, cost.model)
    compute = compute_from_cost(cost, layers, dp=dp, tp=tp, fsdp=sharding.fsdp)
    return predict(
        cost.model, layers, units, world_size=world_size, dp=dp, tp=tp, fsdp=sharding.fsdp,
        reshard_after_forward=sharding.reshard_after_forward, batch_size=cost.batch_size,
        seq_len=cost.seq_len, dtype=cost.dtype, elem_bytes=_elem(cost.dtype),
        dp_link=dp_link, tp_link=tp_link, compute=compute, tp_plan_source=source,
        notes=notes,
    )


def estimate_sharded(
    workload: WorkloadSpec,
    sharding: ShardingSpec,
    world_size: int,
    *,
    dp_link: Link | None = None,
    tp_link: Link | None = None,
    device: DeviceProfile | None = None,
    mode: MathMode | None = None,
    frozen: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> tuple[CostResult, ShardedCost]:
    """Count ``workload`` (batch per data-parallel rank) on the meta device and predict its
    sharded step over ``world_size`` ranks: the cost estimate (with its roofline on
    ``device``) and the sharded what-if.  Links as :func:`links` chooses them."""
    _, tp = sharding.mesh(world_size)  # a bad mesh fails before anything is counted
    dp_link, tp_link, said = links(dp_link, tp_link, device=device, fsdp=sharding.fsdp, tp=tp)
    cost, model = estimate_with_model(workload, frozen=frozen)
    if device is not None:
        cost = roofline(cost, device, mode=mode or MathMode())
    return cost, from_cost(cost, model, sharding, world_size, dp_link=dp_link,
                           tp_link=tp_link, notes=[*said, *notes])


def from_run_model(
    run: Any,
    cost: CostResult,
    model: Any,
    sharding: ShardingSpec,
    world_size: int,
    *,
    dp_link: Link | None = None,
    tp_link: Link | None = None,
    measured: ShardingSpec | None = None,
    notes: Sequence[str] = (),
) -> ShardedCost:
    """The what-if of a measured run, the layout from ``model`` and its count ``cost`` (see
    :func:`predict_run`, which counts the model itself)."""
    if measured is None:
        measured = sharding_of_run(run)
    dp, tp = sharding.mesh(world_size)
    dp_link, tp_link, said = links(dp_link, tp_link, run=run, fsdp=sharding.fsdp, tp=tp)
    notes = [*said, *notes]
    layers, units, source = layout(model, cost.layers, sharding, world_size, cost.model)
    compute = compute_from_run(run, layers, dp=dp, tp=tp, fsdp=sharding.fsdp,
                               measured=measured)
    same = measured == sharding and run.world_size == world_size
    measured_rows = ({r.name: (r.comm_s, r.comm_exposed_s) for r in run.layers}
                     if same and run.comm_s > 0 else None)
    what = "" if measured == sharding else ", tensor-parallel work and the update to this layout"
    out = [f"compute {compute.total_s * 1e3:,.1f} ms per step: the run's rows scaled to its "
           f"unprofiled step{what}", *notes]
    if run.model != cost.model or run.batch_size != cost.batch_size:
        out.append(f"the run measured {run.model} at batch {run.batch_size}; the layout is "
                   f"{cost.model}'s at batch {cost.batch_size}")
    # FSDP2's collectives block the training thread on the CPU (its prefetching runs on
    # streams, which the CPU has not): a run measured there hides none of them.
    overlap = not str(run.device).startswith("cpu")
    if not overlap and sharding.fsdp:
        out.append("measured on the CPU, where FSDP2's collectives block the training thread: "
                   "none is predicted to hide behind compute")
    return predict(
        run.model, layers, units, world_size=world_size, dp=dp, tp=tp, fsdp=sharding.fsdp,
        reshard_after_forward=sharding.reshard_after_forward, batch_size=run.batch_size,
        seq_len=run.seq_len, dtype=run.dtype, elem_bytes=_elem(run.dtype),
        dp_link=dp_link, tp_link=tp_link, compute=compute, tp_plan_source=source,
        measured=measured_rows, measured_step_s=run.step_s if same else None, notes=out,
        overlap=overlap,
    )


def predict_run(
    run: Any,
    sharding: ShardingSpec,
    world_size: int,
    *,
    workload: WorkloadSpec | None = None,
    dp_link: Link | None = None,
    tp_link: Link | None = None,
    measured: ShardingSpec | None = None,
    frozen: Sequence[str] = (),
) -> ShardedCost:
    """The what-if of a measured run: its layers' compute (:func:`compute_from_run`) under
    ``sharding`` over ``world_size`` ranks, on ``dp_link`` (default: the link measured in
    the run) and ``tp_link`` (default: ``dp_link``).

    ``workload`` is the one the run measured (default: rebuilt from the run's model name,
    batch size, sequence length or input shape, dtype and optimizer: give it for an
    ``hf:`` model with ``--config`` overrides, which a run does not keep).  ``measured`` is
    the run's own sharding (default: the run's ``sharding`` when it has one, else none).
    When the what-if is for the layout and world size the run measured, each layer carries
    the run's measured ``comm_s`` and ``comm_exposed_s`` beside the prediction.
    """
    if workload is None:
        shape = tuple(run.input_shape)
        workload = WorkloadSpec.create(
            run.model, batch_size=run.batch_size, seq_len=run.seq_len,
            input_shape=shape if run.seq_len is None and shape else None,
            num_classes=run.num_classes or 1000, dtype=run.dtype, optimizer=run.optimizer)
    sharding.mesh(world_size)
    cost, model = estimate_with_model(workload, frozen=frozen)
    return from_run_model(run, cost, model, sharding, world_size, dp_link=dp_link,
                          tp_link=tp_link, measured=measured)
