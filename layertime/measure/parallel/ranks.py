"""One rank of a torchrun job: what torchrun tells it, its device and backend, and the
lifecycle every multi-rank profile shares (status file, process group with a bounded
timeout, heartbeat, one-line errors naming the failed rank; ``health.py``)."""

from __future__ import annotations

import datetime as _dt
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
import torch.distributed as dist

from layertime.errors import LayertimeError, first_line
from layertime.measure.parallel.health import Heartbeat, StatusFile, explain_failure, is_comm_failure
from layertime.measure.prepare import Prepared, prepare
from layertime.workload import WorkloadSpec

T = TypeVar("T")


@dataclass(frozen=True)
class RankEnv:
    """What torchrun tells a worker."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls, how: str = "--ddp") -> RankEnv:
        required = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
        if any(k not in os.environ for k in required):
            raise LayertimeError(
                f"{how} runs under torchrun (torchrun --nproc-per-node 2 -m layertime profile "
                f"MODEL {how}), or use --nproc N to start the ranks on this machine"
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


def backend_for(backend: str, device: torch.device) -> str:
    """gloo or nccl; ``auto`` is nccl on CUDA, gloo on the CPU."""
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


@dataclass(frozen=True)
class RankContext:
    """What a rank's body gets: its environment, prepared workload, backend, heartbeat."""

    env: RankEnv
    prepared: Prepared
    backend: str
    heartbeat: Heartbeat | None


def run_rank(
    workload: WorkloadSpec,
    body: Callable[[RankContext], T],
    *,
    backend: str = "auto",
    timeout_s: float = 120.0,
    how: str = "--ddp",
) -> T:
    """Prepare ``workload`` on this rank's device, join the process group (every
    collective bounded by ``timeout_s``), run ``body`` and leave the group.

    A failure is one :class:`LayertimeError` line: this rank's own error, or for a
    failed collective the rank that died or hung (from the heartbeats).
    """
    env = RankEnv.from_env(how)
    if not timeout_s > 0:
        raise LayertimeError(f"--ddp-timeout must be > 0 seconds, not {timeout_s}")
    status = StatusFile.from_env(env.rank)
    if status is not None:
        status.write(state="running")
    heartbeat: Heartbeat | None = None
    try:
        p = prepare(replace(workload, device=rank_device(workload.device, env.local_rank)))
        name = backend_for(backend, p.device)
        if p.device.type == "cuda":
            torch.cuda.set_device(p.device)
        dist.init_process_group(name, timeout=_dt.timedelta(seconds=timeout_s))
        heartbeat = _start_heartbeat(env, status)
        result = body(RankContext(env, p, name, heartbeat))
        del p  # the model goes before the process group: see leave_process_group
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
    leave_process_group()
    return result


def leave_process_group() -> None:
    """Free what the step left (a sharded or DDP model is held by reference cycles), then
    destroy the process group, while the interpreter is fully alive.

    Left to the interpreter's teardown, FSDP2's state is freed after Python has begun to
    finalize, and a torch thread that then needs the GIL aborts the process
    (``terminate called without an active exception``): 8 of 20 four-rank gloo runs of a
    two-layer FSDP2 model here, none of 40 with the model freed first.
    """
    gc.collect()
    dist.destroy_process_group()
