"""Benchmark the cost model's accuracy on this machine, after calibration.

Run from the repository root::

    python benchmarks/cost_accuracy.py                   # alexnet, batch 64, this CPU
    python benchmarks/cost_accuracy.py --skip-bench      # without the bench-layers part

What it does, in order (all on the same device, one process):

1. ``calibrate``: measures matmul FLOP/s and memory bandwidth of this machine;
2. profiles the model once (run A) and fits each kind's efficiency to it
   (``layertime calibrate --fit``); the profile is written to a temporary
   TOML file and read back, as ``--device-profile`` would;
   (each profile: ``--warmup`` 2 steps, then ``--steps`` 3 plain and 3 traced);
3. profiles the model again (run B, an independent measurement) and predicts
   it with the calibrated profile (``layertime profile --predict``);
4. prints, for run B, predicted against measured share per kind (target:
   within 5 percentage points) and per layer the error of predicted time
   (target: median |predicted / measured - 1| <= 25% over the layers above 2%
   of the step); run A's in-sample numbers and the A-to-B change of measured
   shares (the noise floor) are printed beside them;
5. benchmarks every layer alone (``bench-layers``) and compares the sum with
   the same layers in run B.

The fit is made on run A and judged on run B, so per-kind agreement is not
true by construction: it measures how well one efficiency per kind carries
over to a fresh measurement, and the per-layer error how well one efficiency
per kind fits the layers within it.  This is a benchmark, not a test: it
prints PASS or MISS beside each target and never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from layertime.cost import estimate, predict
from layertime.cost.calibrate import fit_to_run
from layertime.cost.compare import join
from layertime.cost.devices import load_profiles
from layertime.cost.profile_file import save_profile
from layertime.measure.calibrate import calibrate
from layertime.measure.runner import profile
from layertime.results.joined import Comparison
from layertime.results.run import Run
from layertime.taxonomy import KIND_LABELS

KIND_TARGET_POINTS = 5.0
LAYER_TARGET = 0.25
LAYER_MIN_SHARE = 0.02


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def _layer_errors(cmp: Comparison, run: Run) -> list[tuple[str, float, float, float]]:
    """(layer, measured s, predicted s, error) for layers above LAYER_MIN_SHARE of the step."""
    out = []
    for r in cmp.rows:
        if r.measured_s is None or r.predicted_s is None or r.error is None:
            continue
        if r.measured_s / run.profiled_step_s > LAYER_MIN_SHARE:
            out.append((r.label, r.measured_s, r.predicted_s, r.error))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="warm-up steps of each profile (2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5, help="bench-layers repeats")
    ap.add_argument("--skip-bench", action="store_true", help="skip the bench-layers part")
    args = ap.parse_args()

    t_start = time.perf_counter()
    device = torch.device(args.device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.model}, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; load average at start {load:.2f}")

    # 1. calibrate
    t0 = time.perf_counter()
    cal = calibrate(device)
    peaks = ", ".join(f"{p} {v * 1e3:,.4g} GFLOP/s (side {cal.matmul_sizes[p]})"
                      for p, v in cal.matmul_tflops.items())
    print(f"calibrate ({time.perf_counter() - t0:.0f} s): matmul {peaks}; memory "
          f"{cal.memory_bandwidth_gb_per_s:.3g} GB/s (copy {cal.copy_gb_per_s:.3g}, add "
          f"{cal.add_gb_per_s:.3g})")

    # 2. fit on run A, through a TOML file
    opts = dict(batch_size=args.batch_size, device=args.device, steps=args.steps,
                warmup_steps=args.warmup)
    t0 = time.perf_counter()
    run_a = profile(args.model, **opts)  # type: ignore[arg-type]
    print(f"run A (fit): step {run_a.step_s * 1e3:,.0f} ms, profiled "
          f"{run_a.profiled_step_s * 1e3:,.0f} ms ({time.perf_counter() - t0:.0f} s)")
    prof, fit, warnings = fit_to_run(cal, "local-bench", run_a)
    for w in warnings:
        print(f"warning: {w}")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_profile(prof, Path(tmp) / "devices.toml", fit)
        loaded = load_profiles(path)["local-bench"]
    print("fitted efficiencies (compute: conv, linear; memory: kinds without counted FLOPs "
          "and the update):")
    for k in fit.kinds:
        why = f" ({k.reason})" if k.reason else ""
        print(f"  {_label(k.kind):<16} {k.target:<7} {k.default:.3g} -> {k.efficiency:.4g}  "
              f"{k.status}{why}")

    # 3. evaluate on run B
    t0 = time.perf_counter()
    run_b = profile(args.model, **opts)  # type: ignore[arg-type]
    print(f"run B (judged): step {run_b.step_s * 1e3:,.0f} ms, profiled "
          f"{run_b.profiled_step_s * 1e3:,.0f} ms ({time.perf_counter() - t0:.0f} s)")
    cost = estimate(args.model, batch_size=args.batch_size)
    pred = predict(cost, loaded)
    cmp_b = join(run_b, pred)
    cmp_a = join(run_a, pred)
    assert cmp_b.same_device

    # 4a. per kind
    print()
    print("per kind: share of the modelled step (layers + loss), run B; "
          f"target |predicted - measured| <= {KIND_TARGET_POINTS:g} points")
    print(f"  {'kind':<16} {'measured':>9} {'predicted':>9} {'diff pts':>9} {'run A':>7} "
          f"{'A->B pts':>9}  result")
    worst = 0.0
    a_kinds = {k.kind: k for k in cmp_a.kinds}
    for k in cmp_b.kinds:
        pts = k.share_points or 0.0
        worst = max(worst, abs(pts))
        a = a_kinds.get(k.kind)
        noise = 100 * (k.measured_share - a.measured_share) if a else float("nan")
        print(f"  {_label(k.kind):<16} {k.measured_share:>9.1%} {k.predicted_share or 0:>9.1%} "
              f"{pts:>+9.2f} {a.measured_share if a else 0:>7.1%} {noise:>+9.2f}  "
              f"{_mark(abs(pts) <= KIND_TARGET_POINTS)}")
    print(f"  largest per-kind difference: {worst:.2f} points (target <= "
          f"{KIND_TARGET_POINTS:g}): {_mark(worst <= KIND_TARGET_POINTS)}")

    # 4b. per layer
    print()
    print(f"per layer above {LAYER_MIN_SHARE:.0%} of the step, run B: predicted vs measured "
          "time (one efficiency per kind)")
    errs_b = _layer_errors(cmp_b, run_b)
    for name, m, p, e in errs_b:
        print(f"  {name:<14} measured {m * 1e3:>9,.1f} ms  predicted {p * 1e3:>9,.1f} ms  "
              f"error {e:>+6.1%}")
    med_b = statistics.median(abs(e) for *_, e in errs_b) if errs_b else float("nan")
    errs_a = _layer_errors(cmp_a, run_a)
    med_a = statistics.median(abs(e) for *_, e in errs_a) if errs_a else float("nan")
    print(f"  median |error| over {len(errs_b)} layers: {med_b:.1%} (target <= "
          f"{LAYER_TARGET:.0%}): {_mark(med_b <= LAYER_TARGET)}; in-sample on run A: {med_a:.1%}")

    # 5. bench-layers
    if not args.skip_bench:
        from layertime.measure.isolated import bench

        print()
        t0 = time.perf_counter()
        b = bench(args.model, batch_size=args.batch_size, device=args.device,
                  repeats=args.repeats)
        situ = {r.name: r for r in run_b.layers}
        alone = sum(x.total_s for x in b.layers)
        inside = sum(situ[x.name].forward_s + situ[x.name].backward_s
                     for x in b.layers if x.name in situ)
        print(f"bench-layers ({time.perf_counter() - t0:.0f} s, median of {args.repeats}): each "
              "layer alone, forward + backward, beside the same layers in run B")
        kinds: dict[str, list[float]] = {}
        for x in b.layers:
            r = situ.get(x.name)
            acc = kinds.setdefault(x.kind, [0.0, 0.0])
            acc[0] += x.total_s
            acc[1] += (r.forward_s + r.backward_s) if r else 0.0
        for kind, (al, ins) in kinds.items():
            ratio = f"{al / ins:.2f}" if ins else "-"
            print(f"  {_label(kind):<16} alone {al * 1e3:>9,.1f} ms  in situ {ins * 1e3:>9,.1f} ms"
                  f"  alone/in situ {ratio}")
        print(f"  sum: alone {alone * 1e3:,.1f} ms, in situ {inside * 1e3:,.1f} ms, "
              f"alone/in situ {alone / inside:.3f}; whole in-situ step "
              f"{run_b.profiled_step_s * 1e3:,.1f} ms (loss, update, zero_grad only there)")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
