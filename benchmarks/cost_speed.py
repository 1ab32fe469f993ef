"""Benchmark ``layertime cost``: wall time and peak memory of the issue's command.

Run from the repository root::

    python benchmarks/cost_speed.py                  # vgg16, batch 1024, 3 runs
    python benchmarks/cost_speed.py --model resnet152 --batch-size 256 --runs 5

Each run is a fresh ``python -m layertime cost MODEL --batch-size N --quiet``
process, so the time includes starting Python and importing torch and
torchvision, as a user pays it; its peak memory is the child's maximum
resident set size (``os.wait4`` rusage ``ru_maxrss``).  One more process
splits a run into imports, the count and the roofline prediction.  Targets
from the issue: <= 10 s and <= 1 GB.  This is a benchmark, not a test: it
prints PASS or MISS beside each target and never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGET_S = 10.0
TARGET_BYTES = 1 * 2**30

_BREAKDOWN = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import torchvision
t2 = time.perf_counter()
from layertime.cost import estimate, get_profile, predict
t3 = time.perf_counter()
cost = estimate(sys.argv[1], batch_size=int(sys.argv[2]))
t4 = time.perf_counter()
pred = predict(cost, get_profile("a100"))
t5 = time.perf_counter()
print(json.dumps({
    "import_torch_s": t1 - t0, "import_torchvision_s": t2 - t1, "import_layertime_s": t3 - t2,
    "estimate_s": t4 - t3, "predict_s": t5 - t4,
    "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "layers": len(cost.layers), "gflop": cost.flops.total / 1e9, "tensors": cost.tensors,
}))
"""


def _run(cmd: list[str]) -> tuple[float, int, int, str]:
    """Wall seconds, exit status, peak RSS in bytes (Linux reports KiB) and stdout of one child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(err, file=sys.stderr)
    return wall, proc.returncode, usage.ru_maxrss * 1024, out.strip()


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    cmd = [sys.executable, "-m", "layertime", "cost", args.model,
           "--batch-size", str(args.batch_size), "--quiet"]
    print(f"command: layertime cost {args.model} --batch-size {args.batch_size} --quiet")
    print(f"machine: {os.cpu_count()} CPUs visible, python {sys.version.split()[0]}")
    walls: list[float] = []
    rss: list[int] = []
    for i in range(args.runs):
        wall, rc, peak, out = _run(cmd)
        print(f"  run {i + 1}: {wall:6.2f} s, peak RSS {peak / 2**20:7.1f} MiB, exit {rc}")
        if rc != 0:
            print("the command failed; nothing to report")
            return 1
        walls.append(wall)
        rss.append(peak)
    print(f"  headline: {out}")
    med = statistics.median(walls)
    print(f"wall time: median {med:.2f} s (min {min(walls):.2f}, max {max(walls):.2f}) "
          f"target <= {TARGET_S:g} s: {_mark(med <= TARGET_S)}")
    print(f"peak memory: max {max(rss) / 2**20:.1f} MiB  target <= {TARGET_BYTES / 2**20:.0f} MiB: "
          f"{_mark(max(rss) <= TARGET_BYTES)}")

    wall, rc, peak, out = _run(
        [sys.executable, "-c", _BREAKDOWN, args.model, str(args.batch_size)]
    )
    if rc == 0:
        d = json.loads(out.splitlines()[-1])
        print("breakdown of one run (in-process):")
        for key in ("import_torch_s", "import_torchvision_s", "import_layertime_s",
                    "estimate_s", "predict_s"):
            print(f"  {key[:-2]:22s} {d[key]:6.2f} s")
        print(f"  counted on {d['tensors']}: {d['layers']} modules, "
              f"{d['gflop']:,.0f} GFLOP per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
