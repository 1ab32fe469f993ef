"""Measure this machine's peaks for a device profile (``layertime calibrate``).

Two measurements, each the best of a few timed repeats after one untimed run
(best, not median: a peak is what the device can reach, as STREAM reports
its best time), each synchronised on CUDA:

* **matmul FLOP/s** per precision: ``n x n @ n x n`` is ``2 n^3`` FLOPs.  On the
  CPU float32, float64 and bfloat16 (where torch runs it); on CUDA also TF32
  (float32 with ``torch.backends.cuda.matmul.allow_tf32``) and float16.
* **memory bandwidth**: a large copy (reads and writes each byte: 2 x size)
  and a large add (``c = a + b``: 3 x size), each buffer far beyond the
  caches; the profile takes the faster of the two.
* the **shape grid** (:mod:`layertime.measure.calibrate_grid`): GEMMs by M, N, K,
  convolutions, memory-bound op classes by size, the ops that dominate a step's
  memory-bound time each timed alone by size, and the per-op fixed cost, each point
  re-measured while the machine is noisy; predictions interpolate it by op shape.

The result is a :class:`~layertime.results.cost.calibration.Calibration`;
:mod:`layertime.cost.calibrate` turns it into a device profile.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from contextlib import AbstractContextManager, nullcontext

import torch

from layertime.cost.devices import PRECISIONS
from layertime.errors import LayertimeError, first_line
from layertime.measure.calibrate_grid import (
    CONV_BATCH_SCALE,
    CONV_SHAPES,
    DEFAULT_POLICY,
    GEMM_AXES,
    MEMORY_ELEMENTS,
    NoisePolicy,
    measure_grid,
)
from layertime.measure.calibrate_ops import OP_ELEMENTS
from layertime.measure.environment import describe, matmul_tf32_set
from layertime.results.cost.calibration import Calibration

#: Matmul side and bytes per buffer of the bandwidth test, by device type.
DEFAULT_MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
DEFAULT_MEMORY_MB = {"cpu": 256, "cuda": 1024}
DEFAULT_REPEATS = 5
#: A measurement stops repeating after this long (it keeps at least two samples).
_BUDGET_S = 3.0
#: Matmul sides double from this one; a side is tried while one product of it
#: takes at most _MAX_RUN_S at the rate measured so far.
_FIRST_SIZE = 256
_MAX_RUN_S = 0.5
#: Bandwidth operations per timed run on CUDA (see measure_bandwidth_gb_per_s).
_CUDA_BACK_TO_BACK = 10

_TORCH_DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}


def _best_s(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``fn`` over up to ``repeats`` timed runs, after one untimed run."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    best = math.inf
    start = time.perf_counter()
    for i in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - start > _BUDGET_S:
            break
    return best


def _precisions(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The precisions to measure on ``device``, and those skipped with why."""
    if device.type != "cuda":
        return ["fp32", "bf16", "fp64"], {}
    skipped: dict[str, str] = {}
    todo = ["fp32", "tf32"]
    if torch.cuda.is_bf16_supported():
        todo.append("bf16")
    else:
        skipped["bf16"] = "torch.cuda.is_bf16_supported() is False"
    todo += ["fp16", "fp64"]
    return todo, skipped


def _matmul_s(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    # Made on the device itself: an 8192² matrix built on the host and copied
    # over would spend the device's time on the host's random numbers.
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=gen, device=device).to(dtype)
    b = torch.randn(size, size, generator=gen, device=device).to(dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return _best_s(lambda: torch.mm(a, b, out=out), device, repeats)


def measure_matmul_tflops(
    device: torch.device, precision: str, size: int, repeats: int = DEFAULT_REPEATS
) -> tuple[float, int]:
    """Best square matmul rate at ``precision`` on ``device``: (TFLOP/s, the side that gave it).

    Sides double from :data:`_FIRST_SIZE` up to ``size`` (small products do not
    reach the peak), each timed as best of ``repeats``; the next side is
    skipped when one product of it would take more than :data:`_MAX_RUN_S` at
    the rate seen so far (a precision the device only emulates, such as
    bfloat16 on a CPU without bf16 instructions).
    """
    dtype = _TORCH_DTYPES[precision]
    best_rate, best_size = 0.0, 0
    tf32: AbstractContextManager[None] = (
        matmul_tf32_set(precision == "tf32") if device.type == "cuda" else nullcontext()
    )
    with tf32:
        side = min(size, _FIRST_SIZE)
        while True:
            rate = 2.0 * side**3 / _matmul_s(device, dtype, side, repeats)
            if rate > best_rate:
                best_rate, best_size = rate, side
            nxt = min(2 * side, size)
            if nxt == side or 2.0 * nxt**3 / rate > _MAX_RUN_S:
                break
            side = nxt
    return best_rate / 1e12, best_size


def measure_bandwidth_gb_per_s(
    device: torch.device, nbytes: int, repeats: int = DEFAULT_REPEATS
) -> tuple[float, float]:
    """Best (copy, add) rates over float32 buffers of ``nbytes`` each, GB/s.

    A copy reads and writes each element (2 x ``nbytes``); ``c = a + b`` reads
    two and writes one (3 x ``nbytes``).  On CUDA each timed run is
    :data:`_CUDA_BACK_TO_BACK` operations between two synchronisations: one
    operation on a fast device takes well under a millisecond, and the host's
    synchronisation and launch would be counted as memory time.
    """
    n = max(1, nbytes // 4)
    a = torch.ones(n, device=device)
    b = torch.ones(n, device=device)
    c = torch.empty(n, device=device)
    moved = 4 * n
    k = _CUDA_BACK_TO_BACK if device.type == "cuda" else 1

    def copies() -> None:
        for _ in range(k):
            c.copy_(a)

    def adds() -> None:
        for _ in range(k):
            torch.add(a, b, out=c)

    copy_s = _best_s(copies, device, repeats) / k
    add_s = _best_s(adds, device, repeats) / k
    return 2 * moved / copy_s / 1e9, 3 * moved / add_s / 1e9


def _memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 1e9
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return None


def calibrate(
    device: torch.device,
    *,
    matmul_size: int | None = None,
    memory_mb: float | None = None,
    repeats: int = DEFAULT_REPEATS,
    on_progress: Callable[[str], None] | None = None,
    grid: bool = True,
    policy: NoisePolicy | None = None,
) -> Calibration:
    """Measure matmul FLOP/s per precision and memory bandwidth on ``device``, and (with
    ``grid``) the shape grid, re-measuring its noisy points as ``policy`` says."""
    if repeats < 1:
        raise LayertimeError(f"repeats must be at least 1, not {repeats}")
    kind = "cuda" if device.type == "cuda" else "cpu"
    size = matmul_size or DEFAULT_MATMUL_SIZE[kind]
    nbytes = int((memory_mb if memory_mb is not None else DEFAULT_MEMORY_MB[kind]) * 2**20)
    if size < 1 or nbytes < 4:
        raise LayertimeError("the matmul size and the memory buffer must be positive")
    progress = on_progress or (lambda what: None)
    load_before = _load()
    todo, skipped = _precisions(device)
    rates: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for prec in todo:
        progress(f"matmul {prec}")
        try:
            rates[prec], sizes[prec] = measure_matmul_tflops(device, prec, size, repeats)
        except (RuntimeError, TypeError, NotImplementedError) as e:
            if prec == "fp32":
                raise LayertimeError(f"cannot run a float32 matmul on {device}: {e}") from e
            skipped[prec] = f"not supported here ({first_line(e, 120)})"
    progress("memory bandwidth")
    copy, add = measure_bandwidth_gb_per_s(device, nbytes, repeats)
    shapes = None
    if grid:
        # The grid stays within the sizes asked for: GEMM sides up to the matmul side,
        # buffers up to the bandwidth test's, convolutions of at most the largest GEMM's work.
        axes = tuple(a for a in GEMM_AXES[kind] if a <= 4 * size) or (size,)
        elements = tuple(e for e in MEMORY_ELEMENTS[kind] if 4 * e <= nbytes) or (nbytes // 4,)
        op_elements = tuple(e for e in OP_ELEMENTS[kind] if 4 * e <= nbytes)
        scale = CONV_BATCH_SCALE[kind]
        convs = tuple(c for c in CONV_SHAPES if _conv_flops(c, scale) <= 2.0 * size**3)
        pol = policy or replace(DEFAULT_POLICY[kind], samples=max(2, min(repeats, 3)))
        shapes = measure_grid(device, pol, gemm_axes=axes, memory_elements=elements,
                              conv_shapes=convs, max_mnk=float(size) ** 3 / 4,
                              op_elements=op_elements,
                              on_progress=progress)
    env = describe(device)
    return Calibration(
        device=str(device),
        device_name=env.device_name,
        host=socket.gethostname(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        matmul_tflops={p: rates[p] for p in PRECISIONS if p in rates},
        copy_gb_per_s=copy,
        add_gb_per_s=add,
        matmul_sizes={p: sizes[p] for p in PRECISIONS if p in sizes},
        memory_bytes=4 * max(1, nbytes // 4),
        repeats=repeats,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        memory_gb=_memory_gb(device),
        skipped=skipped,
        grid=shapes,
        load_before=load_before,
        load_after=_load(),
    )


def _conv_flops(c: tuple[int, ...], scale: int) -> float:
    bs, cin, hw, cout, k, stride, pad, *rest = c
    groups = rest[0] if rest else 1
    ho = (hw + 2 * pad - k) // stride + 1
    return 2.0 * bs * scale * ho * ho * cout * (cin // groups) * k * k


def _load() -> float | None:
    """The 1-minute load average, where the system has one."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def default_name(device: torch.device) -> str:
    """``local-cpu``, or ``local-<gpu name>`` in lower case with dashes."""
    if device.type != "cuda":
        return "local-cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")
    return f"local-{slug or 'gpu'}"
