"""The cost model on this machine after ``calibrate`` alone (no fit to any model): per-kind
efficiencies (before the shape grid) against the shape grid, side by side on one run.

Run from the repository root::

    python benchmarks/grid_accuracy.py                          # alexnet, batch 64, this CPU
    python benchmarks/grid_accuracy.py --model resnet50 --batch-size 16
    python benchmarks/grid_accuracy.py --profiles cal.toml --profile local-cpu  # reuse one

What it does, in one process: calibrates (peaks and the shape grid; its time is printed),
profiles the model once, counts it once, and predicts it twice on the same calibration:

* **per kind** — the calibration's peaks with the default per-kind efficiencies and no
  per-op fixed cost (what ``calibrate`` gave before the grid);
* **grid** — the same calibration's shape grid: each matrix product and convolution at its
  (M, N, K), each memory-bound op at its size, plus the fixed cost per op.

Per prediction: the median |predicted / measured - 1| over the layers above 2% of the step
(target <= 25%), the worst kind in points of the modelled step's share (target <= 5), and the
predicted / measured step (target 0.8-1.25).  No model informed the grid: it is measured on
synthetic shapes only.  A benchmark: it prints, it never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch

from layertime.cost import estimate, predict
from layertime.cost.calibrate import to_profile
from layertime.cost.compare import join
from layertime.cost.devices import DeviceProfile, load_profiles
from layertime.measure.calibrate import calibrate
from layertime.measure.runner import profile
from layertime.results.cost.joined import Comparison
from layertime.taxonomy import KIND_LABELS

LAYER_MIN_SHARE = 0.02


def _summary(cmp: Comparison) -> tuple[float, str, float, float]:
    errs = [abs(e) for _, e in cmp.layer_errors(LAYER_MIN_SHARE)]
    worst = max((k for k in cmp.kinds if k.share_points is not None),
                key=lambda k: abs(k.share_points or 0.0))
    ratio = (cmp.predicted_total_s or 0.0) / cmp.measured_total_s
    return (statistics.median(errs) if errs else float("nan"), worst.kind,
            worst.share_points or 0.0, ratio)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profiles", help="a TOML file with a calibrated profile (skip calibrate)")
    ap.add_argument("--profile", default="local-cpu", help="its name (with --profiles)")
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model}, batch {args.batch_size}, cpu, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; load average at start {load:.2f}")
    if args.profiles:
        grid_prof: DeviceProfile = load_profiles(args.profiles)[args.profile]
        print(f"profile {args.profile} from {args.profiles}")
    else:
        t0 = time.perf_counter()
        cal = calibrate(torch.device("cpu"))
        print(f"calibrate: {time.perf_counter() - t0:.1f} s (grid {cal.grid.elapsed_s:.1f} s)"
              if cal.grid else "calibrate: no grid")
        grid_prof = to_profile(cal, "local-cpu")
    if grid_prof.grid is None:
        print("the profile has no shape grid")
        return 2
    for line in grid_prof.grid.summary_lines():
        print(line)
    kind_prof = replace(grid_prof, grid=None, kernel_latency_s=0.0)

    t0 = time.perf_counter()
    run = profile(args.model, batch_size=args.batch_size, device="cpu", steps=args.steps,
                  warmup_steps=args.warmup)
    print(f"profiled: step {run.step_s * 1e3:,.0f} ms ({time.perf_counter() - t0:.0f} s); "
          f"load average now {os.getloadavg()[0]:.2f}")
    cost = estimate(args.model, batch_size=args.batch_size)
    cmps = {"per kind": join(run, predict(cost, kind_prof)),
            "grid": join(run, predict(cost, grid_prof))}
    pred = predict(cost, grid_prof).prediction
    assert pred is not None
    print(f"grid lookups {pred.grid_lookups}, outside the grid (clamped) {pred.grid_clamped}")

    print()
    print(f"{'':<10} {'median |layer err|':>19} {'worst kind (pts)':>26} {'pred/meas':>10}")
    for name, cmp in cmps.items():
        med, kind, pts, ratio = _summary(cmp)
        print(f"{name:<10} {med:>18.1%} {KIND_LABELS.get(kind, kind):>18} {pts:>+7.1f} "
              f"{ratio:>10.2f}")
    print()
    print("per kind, share of the modelled step (points: predicted - measured)")
    a, b = cmps["per kind"], cmps["grid"]
    print(f"  {'kind':<16} {'measured':>9} {'per kind':>9} {'grid':>9}")
    for k in a.kinds:
        kb = b.kind(k.kind)
        print(f"  {KIND_LABELS.get(k.kind, k.kind):<16} {k.measured_share:>9.1%} "
              f"{k.share_points or 0:>+9.1f} {(kb.share_points if kb else 0) or 0:>+9.1f}")
    print()
    print("per layer above 2% of the step: measured ms, error per kind, error grid")
    eb = {r.label: r.error for r in b.rows if r.error is not None}
    for r in a.rows:
        if r.measured_s is None or r.error is None:
            continue
        if r.measured_s / run.profiled_step_s <= LAYER_MIN_SHARE:
            continue
        print(f"  {r.label:<22} {r.measured_s * 1e3:>9.2f} {r.error:>+9.1%} "
              f"{eb.get(r.label, float('nan')):>+9.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
