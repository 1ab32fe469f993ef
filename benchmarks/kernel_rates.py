#!/usr/bin/env python3
"""What the count cannot say on this CPU: three kernel rates, measured side by side.

::

    python benchmarks/kernel_rates.py            # about 20 s on 2 cores

The cost model counts each op's FLOPs and the bytes its kernel moves
(``layertime/cost/count/op_bytes.py``) and times them at a calibrated peak and bandwidth.
Three kinds of kernel on a CPU run at rates neither gives, and this prints each beside
the rate the model would use, as ratios measured in one run (best of ``--repeats``):

* **random numbers**: ``bernoulli_`` (dropout's mask) on a float tensor is torch's
  default CPU kernel, one mt19937 draw per element under the generator's lock, on one
  thread whatever ``torch.get_num_threads()`` says (MKL's parallel generator is used on
  Intel CPUs only).  Printed: elements/s on 1 thread and on all, and the bandwidth its
  bytes (the mask written once) would need at that rate;
* **fresh pages**: an op writing a new output larger than glibc's largest mmap threshold
  (32 MiB) gets pages the kernel has to fault in and zero on first touch.  Printed: a
  multiply into a new output and into a reused one, at 8 MiB and 64 MiB;
* **GEMM shapes**: GPT-2 small's block matmuls at seq 512 beside the square matmul
  ``layertime calibrate`` times (side 2048).

A benchmark, not a test: it asserts nothing.  Say how loaded the machine was.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch


def best_s(fn: Callable[[], object], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"kernel rates on this CPU: {threads} threads, torch {torch.__version__}, "
          f"load average {load:.2f}, best of {args.repeats}")

    # -- random numbers --------------------------------------------------------------------
    n = 12 * 512 * 512  # GPT-2 small's attention probabilities at seq 512, batch 1
    mask = torch.empty(n)
    rates = {}
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        rates[t] = n / best_s(lambda: mask.bernoulli_(0.9), args.repeats)
    torch.set_num_threads(threads)
    for t, r in rates.items():
        print(f"  bernoulli_ {n:,} float32 elements, {t} thread(s): {r / 1e6:8.1f} M elements/s "
              f"= {4 * r / 1e9:.2f} GB/s of mask written")
    if len(rates) > 1:
        print(f"  all threads / one thread: x{rates[threads] / rates[1]:.2f}")

    # -- fresh pages -----------------------------------------------------------------------
    for mib in (8, 64):
        m = mib * 2**20 // 4
        x, out = torch.randn(m), torch.empty(m)
        fresh = best_s(lambda: torch.mul(x, 2.0), args.repeats)
        reused = best_s(lambda: torch.mul(x, 2.0, out=out), args.repeats)
        print(f"  mul of {mib} MiB: new output {8 * m / fresh / 1e9:7.1f} GB/s, reused output "
              f"{8 * m / reused / 1e9:7.1f} GB/s (new / reused time x{fresh / reused:.2f})")

    # -- GEMM shapes ------------------------------------------------------------------------
    def gemm_rate(m: int, k: int, nn: int) -> float:
        a, b = torch.randn(m, k), torch.randn(k, nn)
        return 2 * m * k * nn / best_s(lambda: a @ b, args.repeats)

    square = gemm_rate(2048, 2048, 2048)
    print(f"  matmul 2048^3 (what calibrate times): {square / 1e9:7.1f} GFLOP/s")
    for m, k, nn, what in ((512, 768, 2304, "c_attn"), (512, 768, 3072, "c_fc"),
                           (512, 3072, 768, "mlp c_proj")):
        r = gemm_rate(m, k, nn)
        print(f"  matmul {m}x{k}x{nn} (GPT-2 {what}, seq 512): {r / 1e9:7.1f} GFLOP/s "
              f"= x{r / square:.2f} the square one")
    q, kt = torch.randn(12, 512, 64), torch.randn(12, 64, 512)
    r = 2 * 12 * 512 * 64 * 512 / best_s(lambda: torch.bmm(q, kt), args.repeats)
    print(f"  bmm 12x512x64x512 (Q K^T, seq 512): {r / 1e9:7.1f} GFLOP/s = x{r / square:.2f} "
          "the square one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
