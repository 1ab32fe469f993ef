"""The link between ranks, measured with two all-reduces outside any step and fitted to
the ring model (``Run.link``)."""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from layertime.results.parallel.data_parallel import LinkEstimate

#: Tensor sizes of the link measurement: one element, and DDP's bucket cap (25 MiB).
LINK_SMALL_BYTES = 4
LINK_LARGE_BYTES = 25 * 1024 * 1024


def _time_allreduce(t: torch.Tensor, reps: int) -> float:
    times = []
    for _ in range(reps):
        dist.barrier()
        if t.is_cuda:
            torch.cuda.synchronize(t.device)
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if t.is_cuda:
            torch.cuda.synchronize(t.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_link(world_size: int, device: torch.device, reps: int = 5) -> LinkEstimate | None:
    """Latency and bandwidth of an all-reduce, fitted to the ring model from two sizes.

    ``t(B) = 2(N-1)/N x B / bandwidth + 2(N-1) x latency``: a one-element
    all-reduce gives the latency, a 25 MiB one (DDP's bucket cap) the bandwidth.
    """
    if world_size < 2:
        return None
    small = torch.zeros(LINK_SMALL_BYTES // 4, dtype=torch.float32, device=device)
    large = torch.zeros(LINK_LARGE_BYTES // 4, dtype=torch.float32, device=device)
    _time_allreduce(small, 2)
    _time_allreduce(large, 1)
    t_small = _time_allreduce(small, reps)
    t_large = _time_allreduce(large, max(2, reps // 2))
    n = world_size
    latency = t_small / (2 * (n - 1))
    moved = 2 * (n - 1) / n * (LINK_LARGE_BYTES - LINK_SMALL_BYTES)
    bw_bytes = moved / max(t_large - t_small, 1e-9)
    return LinkEstimate(
        bandwidth_gbps=bw_bytes * 8 / 1e9,
        latency_us=latency * 1e6,
        method=(
            f"all-reduce of {LINK_SMALL_BYTES} B and {LINK_LARGE_BYTES // 2**20} MiB "
            f"outside any step, median of {reps}, fitted to the ring model"
        ),
    )
