"""Sharded profiling: every rank of an FSDP2 / tensor-parallel run profiles its own steps.

torchrun starts the ranks; each one builds the model, shards it
(``shard.py``: the tensor-parallel plan, then FSDP2's units), and runs the
single-process profile (``runner.measure``) with a :class:`ShardedSync`, which lines the
ranks up before each step and charges each traced step's collectives to layers
(``sharded_comm.py``).  Rank 0 gathers every rank's run and merges them (``merge.py``):
rows are means over ranks, ``ranks`` keeps each rank's step, compute and exposed
communication, ``collectives`` the step's collectives by kind, phase and owner.

A model the user sharded in their own script is profiled through ``layertime.Profiler``
(``measure/loop.py``), which charges the same way.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.aggregate import collective_rows
from layertime.measure.attribute import StepCharges
from layertime.measure.parallel.health import Heartbeat
from layertime.measure.parallel.link import measure_link
from layertime.measure.parallel.merge import merge_ranks
from layertime.measure.parallel.ranks import RankContext, run_rank
from layertime.measure.parallel.shard import shard_model
from layertime.measure.parallel.sharded_comm import charge_collectives
from layertime.measure.runner import MeasureOptions, ProgressFn, measure
from layertime.modules import ModuleTable
from layertime.results.run import Run
from layertime.results.parallel.sharded import ShardLayout
from layertime.workload import WorkloadSpec
from layertime.workload.sharding import ShardingSpec, unit_of


def unit_maps(
    table: ModuleTable, units: tuple[str, ...]
) -> tuple[dict[str, dict[int, int]], dict[str, int], dict[int, str]]:
    """unit path -> {module index: trainable elements} of the unit's own layers; unit path
    -> the unit's module index; module index -> the innermost unit holding it."""
    layers: dict[str, dict[int, int]] = {u: {} for u in units}
    module: dict[str, int] = {}
    module_unit: dict[int, str] = {}
    for e in table:
        if e.name in units:
            module[e.name] = e.index
        if units:
            u = unit_of(e.name, units)
            module_unit[e.index] = u
            if u in layers and e.trainable:
                layers[u][e.index] = e.trainable
    return layers, module, module_unit


class ShardedSync:
    """The runner's ``StepSync`` for a model already sharded: a barrier before each step,
    each traced step's collectives charged to layers, agreement on step counts."""

    def __init__(self, layout: ShardLayout, device: torch.device,
                 heartbeat: Heartbeat | None = None) -> None:
        self.layout = layout
        self.device = device
        self.heartbeat = heartbeat
        self.table: ModuleTable | None = None
        self._maps: tuple[Any, Any, Any] = ({}, {}, {})
        self._step = 0
        #: Every traced step's charges, as returned by :meth:`charge`.
        self.charged: list[StepCharges] = []

    #: The bytes of collectives are read from their ops' input shapes.
    record_shapes = True

    def attach(self, model: nn.Module, table: ModuleTable) -> nn.Module:
        """Called after the validating forward, before the optimizer is made: FSDP2 keeps a
        unit that does not reshard after forward (the root) gathered until its backward,
        which that forward never ran, so every unit is resharded now; else the optimizer
        would hold the gathered parameters and never update the sharded ones."""
        from torch.distributed.fsdp import FSDPModule

        for m in model.modules():
            if isinstance(m, FSDPModule):
                m.reshard()
        self.table = table
        self._maps = unit_maps(table, self.layout.units)
        return model

    def begin_step(self, traced: bool) -> None:
        # Line the ranks up, so that one rank's profiler start is not charged to
        # another's first collective as exposed communication.
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()
        self._step += 1
        if self.heartbeat is not None:
            self.heartbeat.mark(self._step, 0)

    def end_step(self) -> None:
        pass

    def charge(self, charges: StepCharges, device_time: bool) -> StepCharges:
        out = charge_collectives(charges, *self._maps)
        self.charged.append(out)
        return out

    def agree(self, n: int) -> int:
        t = torch.tensor([n], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def finish(self, run: Run) -> Run:
        """``run`` with the layout and the step's collectives."""
        assert self.table is not None
        return replace(run, sharding=self.layout,
                       collectives=collective_rows(self.table, self.charged))


def _measure_sharded(
    ctx: RankContext,
    sharding: ShardingSpec,
    options: MeasureOptions,
    on_progress: ProgressFn | None,
) -> Run | None:
    p = ctx.prepared
    sharded = shard_model(p.model, sharding, ctx.env.world_size, p.device, p.label)
    sync = ShardedSync(sharded.layout, p.device, ctx.heartbeat)
    run = measure(p.model, p.workload, p.device, label=p.label, options=options,
                  on_progress=on_progress if ctx.env.rank == 0 else None, sync=sync)
    run = sync.finish(run)
    link = measure_link(ctx.env.world_size, p.device)
    gathered: list[Any] | None = [None] * ctx.env.world_size if ctx.env.rank == 0 else None
    dist.gather_object(run, gathered, dst=0)
    if gathered is None:
        return None
    result = merge_ranks([r for r in gathered if r is not None], backend=ctx.backend, link=link)
    if len(result.ranks) != ctx.env.world_size:
        raise LayertimeError(f"gathered {len(result.ranks)} of {ctx.env.world_size} ranks")
    return result


def profile_sharded_workload(
    workload: WorkloadSpec,
    sharding: ShardingSpec,
    options: MeasureOptions = MeasureOptions(),
    *,
    backend: str = "auto",
    timeout_s: float = 120.0,
    on_progress: ProgressFn | None = None,
) -> Run | None:
    """Profile this rank of a sharded torchrun job; rank 0 returns the merged run.

    ``workload.batch_size`` is per data-parallel rank (ranks of one tensor-parallel group
    share theirs).  Errors are one line naming the failed rank, as for DDP.
    """
    return run_rank(
        workload,
        lambda ctx: _measure_sharded(ctx, sharding, options, on_progress),
        backend=backend,
        timeout_s=timeout_s,
        how="--fsdp" if sharding.fsdp else "--tp",
    )
