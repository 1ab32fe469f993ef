"""Data-parallel profiling: every rank of a DDP run profiles its own steps.

torchrun (``torch.distributed.run``) starts the ranks; each one runs the
single-process profile (``runner.measure``) with the model wrapped in
``DistributedDataParallel`` and a
:class:`~layertime.measure.parallel.ddp_comm.CommCollector` registered as DDP's
communication hook, which times every gradient bucket's all-reduce and
charges it to the layers whose gradients it holds (``parallel/ddp_comm.py``).

After measuring, each rank times two all-reduces outside any step (the
link's latency and bandwidth in the ring model, ``link.py``), then rank 0
gathers every rank's run and merges them (``merge.py``): rows are means over
ranks, ``ranks`` keeps each rank's step, compute and exposed communication,
so a straggler (the rank the others wait for) is visible.

Failures: the process group has a bounded timeout; a heartbeat per rank
lets the rank whose collective fails name the rank that died or hung
(``parallel/health.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.parallel.ddp_comm import CommCollector
from layertime.measure.parallel.health import Heartbeat
from layertime.measure.parallel.link import measure_link
from layertime.measure.parallel.merge import merge_ranks
from layertime.measure.parallel.ranks import RankEnv, run_rank
from layertime.measure.prepare import Prepared
from layertime.measure.runner import MeasureOptions, ProgressFn, measure
from layertime.models import ModelRef
from layertime.results.run import Run
from layertime.workload import WorkloadOptions, WorkloadSpec

if TYPE_CHECKING:
    from typing import Unpack


def _measure_and_gather(
    p: Prepared,
    env: RankEnv,
    backend: str,
    options: MeasureOptions,
    on_progress: ProgressFn | None,
    heartbeat: Heartbeat | None,
) -> Run | None:
    """Measure this rank, time the link, gather every rank's run on rank 0 and merge them."""
    collector = CommCollector(env.world_size, p.device, heartbeat)
    run = measure(
        p.model,
        p.workload,
        p.device,
        label=p.label,
        options=options,
        on_progress=on_progress if env.rank == 0 else None,
        sync=collector,
    )
    run = replace(run, buckets=collector.bucket_rows())
    link = measure_link(env.world_size, p.device)
    gathered: list[Any] | None = [None] * env.world_size if env.rank == 0 else None
    dist.gather_object(run, gathered, dst=0)
    if gathered is None:
        return None
    result = merge_ranks([r for r in gathered if r is not None], backend=backend, link=link)
    if len(result.ranks) != env.world_size:
        raise LayertimeError(f"gathered {len(result.ranks)} of {env.world_size} ranks")
    return result


def profile_ddp_workload(
    workload: WorkloadSpec,
    options: MeasureOptions = MeasureOptions(),
    *,
    backend: str = "auto",
    timeout_s: float = 120.0,
    on_progress: ProgressFn | None = None,
) -> Run | None:
    """Profile this rank of a torchrun job; rank 0 returns the merged run, others None.

    ``workload.batch_size`` is per rank.  ``backend`` is gloo or nccl (auto:
    nccl on CUDA, gloo on the CPU); ``timeout_s`` bounds every collective, so
    a rank that hangs fails the run.  Raises :class:`LayertimeError` with one
    line that names the failed rank.
    """
    return run_rank(
        workload,
        lambda ctx: _measure_and_gather(ctx.prepared, ctx.env, ctx.backend, options,
                                        on_progress, ctx.heartbeat),
        backend=backend,
        timeout_s=timeout_s,
    )


def profile_ddp(
    model: str | ModelRef | nn.Module,
    *,
    steps: int = 3,
    warmup_steps: int = 1,
    time_budget_s: float | None = None,
    max_steps: int = 50,
    on_progress: ProgressFn | None = None,
    backend: str = "auto",
    timeout_s: float = 120.0,
    **workload: Unpack[WorkloadOptions],
) -> Run | None:
    """:func:`profile_ddp_workload` with ``layertime.profile``'s keyword options."""
    options = MeasureOptions(
        steps=steps, warmup_steps=warmup_steps, time_budget_s=time_budget_s, max_steps=max_steps
    )
    return profile_ddp_workload(
        WorkloadSpec.create(model, **workload),
        options,
        backend=backend,
        timeout_s=timeout_s,
        on_progress=on_progress,
    )
