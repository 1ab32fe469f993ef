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

import datetime as _dt
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from layertime.errors import LayertimeError, first_line
from layertime.measure.parallel.ddp_comm import CommCollector
from layertime.measure.parallel.health import Heartbeat, StatusFile, explain_failure, is_comm_failure
from layertime.measure.parallel.link import measure_link
from layertime.measure.parallel.merge import merge_ranks
from layertime.measure.prepare import Prepared, prepare
from layertime.measure.runner import MeasureOptions, ProgressFn, measure
from layertime.models import ModelRef
from layertime.results.run import Run
from layertime.workload import WorkloadOptions, WorkloadSpec

if TYPE_CHECKING:
    from typing import Unpack


@dataclass(frozen=True)
class RankEnv:
    """What torchrun tells a worker."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> RankEnv:
        required = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        if any(k not in os.environ for k in required):
            raise LayertimeError(
                "--ddp runs under torchrun (torchrun --nproc-per-node 2 -m layertime profile "
                "MODEL --ddp), or use --nproc N to start the ranks on this machine"
            )
        try:
            return cls(
                int(os.environ["RANK"]),
                int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", "0")),
            )
        except ValueError as e:
            raise LayertimeError(f"bad torchrun environment: {e}") from e


def rank_device(device: str, local_rank: int) -> str:
    """The device of this rank: ``auto`` and ``cuda`` mean the local rank's GPU."""
    if device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{local_rank}"
    return device


def _backend(backend: str, device: torch.device) -> str:
    name = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if name not in ("gloo", "nccl"):
        raise LayertimeError(f"unknown backend {backend!r} (choose gloo or nccl)")
    if name == "nccl" and device.type != "cuda":
        raise LayertimeError("the nccl backend needs --device cuda")
    return name


def _start_heartbeat(env: RankEnv, status: StatusFile | None) -> Heartbeat | None:
    """This rank's heartbeat in torchrun's store (None when the store cannot be reached)."""
    try:
        store = dist.distributed_c10d._get_default_store()
    except Exception:  # no default store: failures are then explained without heartbeats
        return None
    heartbeat = Heartbeat(store, env.rank, env.world_size, status)
    heartbeat.start()
    return heartbeat


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
    env = RankEnv.from_env()
    if not timeout_s > 0:
        raise LayertimeError(f"--ddp-timeout must be > 0 seconds, not {timeout_s}")
    status = StatusFile.from_env(env.rank)
    if status is not None:
        status.write(state="running")
    heartbeat: Heartbeat | None = None
    try:
        p = prepare(replace(workload, device=rank_device(workload.device, env.local_rank)))
        name = _backend(backend, p.device)
        if p.device.type == "cuda":
            torch.cuda.set_device(p.device)
        dist.init_process_group(name, timeout=_dt.timedelta(seconds=timeout_s))
        heartbeat = _start_heartbeat(env, status)
        result = _measure_and_gather(p, env, name, options, on_progress, heartbeat)
    except LayertimeError as e:
        if status is not None:
            status.write(state="error", comm=False, message=str(e))
        raise LayertimeError(f"rank {env.rank}: {e}") from e
    except Exception as e:
        if not is_comm_failure(e):
            if status is not None:
                status.write(state="error", comm=False,
                             message=f"{type(e).__name__}: {first_line(e, 300)}")
            raise
        message = explain_failure(e, heartbeat, env.rank, timeout_s)
        if status is not None:
            status.write(state="error", comm=True, message=message)
        raise LayertimeError(message) from e
    finally:
        if heartbeat is not None:
            heartbeat.stop()
    if status is not None:
        status.write(state="ok")
    dist.destroy_process_group()
    return result


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
