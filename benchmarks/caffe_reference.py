"""Predicted against published per-layer GPU times: OverFeat and GoogLeNet in Caffe on a GTX Titan X.

Run from the repository root::

    python benchmarks/caffe_reference.py                     # reads benchmarks/reference
    python benchmarks/caffe_reference.py --reference DIR     # another copy of the logs

The reference (``README.md`` and two CSVs in ``--reference``) holds Caffe's
``caffe time`` averages per layer, forward and backward, of OverFeat "fast"
and GoogLeNet at batch 128, float32, on one GTX Titan X (Maxwell), Caffe's
own kernels (im2col + gemm, no cuDNN), one synchronisation per layer.  What
the fitted ``titanx-maxwell`` profile describes is therefore Caffe-era
per-layer timing on that GPU, not PyTorch's.

What it does, in order:

1. counts both networks with the cost model (``overfeat`` and
   ``googlenet2014`` as convnet-benchmarks timed it: no LRN, no dropout) and
   maps Caffe's layers to their rows with ``CAFFE_LAYERS`` of each model file;
   Caffe's Split of an inception module's input, which sums the gradients of
   its four branches, is PyTorch's gradient accumulation: the ``aten.add`` in
   the backward of the module's branch layers, moved here to the module's row
   where the Split and the Concat are charged;
2. predicts both with the datasheet roofline (peaks of ``titanx-maxwell``,
   the uncalibrated default efficiencies, no launch term), to show what the
   model lacked;
3. fits the kernel latency and the per-kind efficiencies
   (``layertime.cost.fit.fit_layer_times``) on OverFeat alone, on GoogLeNet
   alone, and on both, and judges each fit on each network (the cross-check:
   a fit on one network judged on the other is out of sample);
4. judges the shipped ``titanx-maxwell`` profile (its numbers are the fit on
   both) against the targets: per kind, predicted share of the step within
   3 points of the logged share; per layer, median |predicted / logged - 1|
   <= 20% over the layers above 1% of the logged step.

Shares are of what both sides have: Caffe layers without a row (``input``,
GoogLeNet's ``fc6/relu``) and rows without a Caffe layer (the model's
dropout, OverFeat's ReLU between its fully connected layers, the loss, the
optimizer update) are left out of both and listed.  A benchmark, not a test:
it prints PASS or MISS beside each target and never asserts.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from layertime.cost import estimate, get_profile, predict
from layertime.cost.devices import DeviceProfile
from layertime.cost.fit import LatencyFit, LayerTimes, fit_layer_times
from layertime.models.googlenet2014 import CAFFE_LAYERS as GOOGLENET_LAYERS, GoogLeNet2014
from layertime.models.overfeat import CAFFE_LAYERS as OVERFEAT_LAYERS, OverFeatFast
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, OpWork
from layertime.taxonomy import KIND_LABELS

KIND_TARGET_POINTS = 3.0
LAYER_TARGET = 0.20
LAYER_MIN_SHARE = 0.01
BATCH = 128
PROFILE = "titanx-maxwell"
#: Kinds whose work is memory-bound in these networks (ReLU, pooling, LRN, split and concat).
MEMORY_KINDS = ("activation", "pool", "norm", "other")


@dataclass(frozen=True)
class Network:
    """One logged network: its cost (rows re-attributed as Caffe charges them) and its log."""

    label: str
    cost: CostResult
    #: Row name -> logged forward + backward seconds (Caffe layers of one row summed).
    logged_s: Mapping[str, float]
    #: Caffe layers with no row, and their logged seconds.
    unmapped: Mapping[str, float]
    #: Rows with work but no Caffe layer.
    unlogged: tuple[str, ...]

    def layer_times(self) -> LayerTimes:
        return LayerTimes(self.label, self.cost, self.logged_s)


def _read_log(path: Path) -> list[tuple[str, float]]:
    """(Caffe layer, forward + backward seconds) in the log's order."""
    with path.open(newline="") as f:
        return [(r["layer"], (float(r["forward_ms"]) + float(r["backward_ms"])) / 1e3)
                for r in csv.DictReader(f)]


def _split_adds_to_module(cost: CostResult, modules: Sequence[str]) -> CostResult:
    """Move the backward ``aten.add`` of each inception module's branch rows to the module's row.

    Autograd sums the gradients of a tensor used by several branches with ``aten.add`` while
    running the branches' backward; the cost model charges each add to the branch whose
    backward produced the gradient.  Caffe does the same sum in the module's Split layer.
    """
    moved: dict[str, list[OpWork]] = {m: [] for m in modules}
    layers: list[LayerCost] = []
    for r in cost.layers:
        parent = r.name.split(".", 1)[0]
        if "." in r.name and parent in moved:
            adds = [w for w in r.ops if w.op == "aten.add" and w.phase != "forward"
                    and w.phase != "update"]
            if adds:
                moved[parent].extend(adds)
                r = replace(r, ops=tuple(w for w in r.ops if w not in adds))
        layers.append(r)
    out = [replace(r, ops=r.ops + tuple(moved[r.name])) if moved.get(r.name) else r
           for r in layers]
    return cost.with_layers(out, cost.loss)


def load_network(label: str, cost: CostResult, log: Path, table: Mapping[str, str]) -> Network:
    """Join a cost with a Caffe log through ``table`` (Caffe layer -> row)."""
    logged: dict[str, float] = {}
    unmapped: dict[str, float] = {}
    rows = {r.name for r in cost.rows}
    for layer, seconds in _read_log(log):
        row = table.get(layer)
        if row is None or row not in rows:
            unmapped[layer] = unmapped.get(layer, 0.0) + seconds
        else:
            logged[row] = logged.get(row, 0.0) + seconds
    unlogged = tuple(r.name or "(model)" for r in cost.rows
                     if r.name not in logged and any(w.phase != "update" for w in r.ops))
    return Network(label, cost, logged, unmapped, unlogged)


def load_networks(ref: Path) -> list[Network]:
    """OverFeat and GoogLeNet as convnet-benchmarks timed them, joined with their logs in ``ref``."""
    overfeat_cost = estimate(OverFeatFast(), batch_size=BATCH, input_shape=(3, 231, 231))
    overfeat_cost = replace(overfeat_cost, model="overfeat")
    google_cost = estimate(GoogLeNet2014(lrn=False), batch_size=BATCH, input_shape=(3, 224, 224))
    modules = sorted({v.split(".", 1)[0] for v in GOOGLENET_LAYERS.values() if "." in v})
    google_cost = replace(_split_adds_to_module(google_cost, modules),
                          model="googlenet2014 (lrn=False)")
    return [
        load_network("OverFeat", overfeat_cost, ref / "caffe-titanx-overfeat.csv",
                     OVERFEAT_LAYERS),
        load_network("GoogLeNet", google_cost, ref / "caffe-titanx-googlenet.csv",
                     GOOGLENET_LAYERS),
    ]


@dataclass(frozen=True)
class Judged:
    """One profile's predictions of one network beside the log."""

    kinds: dict[str, tuple[float, float]]  # kind -> (logged share, predicted share)
    layers: list[tuple[str, float, float]]  # (row, logged s, predicted s), above the min share
    predicted_total_s: float
    logged_total_s: float

    @property
    def worst_points(self) -> float:
        return max(abs(p - m) * 100 for m, p in self.kinds.values())

    @property
    def median_error(self) -> float:
        return statistics.median(abs(p / m - 1) for _, m, p in self.layers)


def judge(net: Network, profile: DeviceProfile) -> Judged:
    """Forward + backward time per logged row on ``profile`` (no update), with shares."""
    pred = predict(net.cost, profile)
    by_name = {r.name: r for r in pred.rows}
    predicted = {}
    for name in net.logged_s:
        p = by_name[name].predicted
        assert p is not None
        predicted[name] = p.forward_s + p.backward_s
    p_total = sum(predicted.values())
    m_total = sum(net.logged_s.values())
    kinds: dict[str, list[float]] = {}
    for name, m in net.logged_s.items():
        acc = kinds.setdefault(by_name[name].kind, [0.0, 0.0])
        acc[0] += m
        acc[1] += predicted[name]
    shares = {k: (m / m_total, p / p_total) for k, (m, p) in kinds.items()}
    layers = [(name or "(model)", m, predicted[name]) for name, m in net.logged_s.items()
              if m > LAYER_MIN_SHARE * m_total]
    return Judged(shares, layers, p_total, m_total)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _kind(kind: str) -> str:
    return "split/concat" if kind == "other" else KIND_LABELS.get(kind, kind)


def _memory_share(shares: Mapping[str, tuple[float, float]], side: int) -> float:
    return sum(v[side] for k, v in shares.items() if k in MEMORY_KINDS)


def _fit_line(fit: LatencyFit) -> str:
    effs = ", ".join(f"{k.kind} {k.target[0]} {k.efficiency:.3f}" + ("*" if k.status == "capped"
                     else "" if k.status == "fitted" else " (default)") for k in fit.kinds)
    return (f"latency {fit.kernel_latency_s * 1e6:.3f} us, {effs}; rms log error "
            f"{fit.rms_log_error:.3f} over {fit.judged_rows} rows")


def print_judged(net: Network, j: Judged, title: str, per_layer: bool) -> tuple[bool, bool]:
    """Print the per-kind and (optionally) per-layer tables; return (kinds pass, layers pass)."""
    print(f"{title}: {net.label}, predicted {j.predicted_total_s * 1e3:,.1f} ms vs logged "
          f"{j.logged_total_s * 1e3:,.1f} ms forward + backward")
    print(f"  {'kind':<14} {'logged':>8} {'predicted':>9} {'diff pts':>9}")
    for kind, (m, p) in sorted(j.kinds.items(), key=lambda kv: -kv[1][0]):
        pts = (p - m) * 100
        print(f"  {_kind(kind):<14} {m:>8.1%} {p:>9.1%} {pts:>+9.2f}  "
              f"{_mark(abs(pts) <= KIND_TARGET_POINTS)}")
    kinds_ok = j.worst_points <= KIND_TARGET_POINTS
    print(f"  largest per-kind difference {j.worst_points:.2f} points (target <= "
          f"{KIND_TARGET_POINTS:g}): {_mark(kinds_ok)}")
    if per_layer:
        print(f"  per layer above {LAYER_MIN_SHARE:.0%} of the logged step:")
        for name, m, p in j.layers:
            print(f"    {name:<28} logged {m * 1e3:>7.2f} ms  predicted {p * 1e3:>7.2f} ms  "
                  f"error {p / m - 1:>+6.1%}")
    layers_ok = j.median_error <= LAYER_TARGET
    print(f"  median |error| over {len(j.layers)} layers: {j.median_error:.1%} (target <= "
          f"{LAYER_TARGET:.0%}): {_mark(layers_ok)}")
    return kinds_ok, layers_ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reference", type=Path,
                    default=Path(__file__).resolve().parent / "reference",
                    help="folder with caffe-titanx-{overfeat,googlenet}.csv "
                    "(benchmarks/reference: a copy of the published timings)")
    ap.add_argument("--quiet-layers", action="store_true",
                    help="leave out the per-layer lines of the shipped profile")
    args = ap.parse_args()
    t0 = time.perf_counter()
    ref = args.reference
    for name in ("caffe-titanx-overfeat.csv", "caffe-titanx-googlenet.csv"):
        if not (ref / name).is_file():
            print(f"no {name} in {ref} (give --reference DIR)", file=sys.stderr)
            return 2

    nets = load_networks(ref)
    print(f"Caffe per-layer times (batch {BATCH}, float32, GTX Titan X, no cuDNN) beside the "
          f"cost model on {PROFILE}; shares of forward + backward over the rows both have")
    for net in nets:
        left = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in net.unmapped.items())
        print(f"  {net.label}: {len(net.logged_s)} rows logged; Caffe layers without a row: "
              f"{left or 'none'}; rows without a Caffe layer: {', '.join(net.unlogged) or 'none'}")

    shipped = get_profile(PROFILE)
    datasheet = replace(shipped, compute_efficiency={}, memory_efficiency={},
                        kernel_latency_s=0.0, efficiency_source=None)
    start = replace(datasheet, kernels=shipped.kernels)

    print()
    print("1. datasheet roofline (default efficiencies, no launch term): memory-bound kinds "
          "(ReLU, pooling, LRN, split/concat) share of the step")
    for net in nets:
        j = judge(net, datasheet)
        print(f"  {net.label:<10} logged {_memory_share(j.kinds, 0):.1%}, predicted "
              f"{_memory_share(j.kinds, 1):.1%}; largest per-kind difference "
              f"{j.worst_points:.1f} points, median layer error {j.median_error:.0%}")

    print()
    print("2. fitted (kernel latency, then per kind: c = compute, m = memory efficiency; "
          "* capped at 1), judged on each network")
    fits = {
        "OverFeat": fit_layer_times([nets[0].layer_times()], start),
        "GoogLeNet": fit_layer_times([nets[1].layer_times()], start),
        "both": fit_layer_times([n.layer_times() for n in nets], start),
    }
    for label, fit in fits.items():
        print(f"  fit on {label}: {_fit_line(fit)}")
        for net in nets:
            j = judge(net, fit.apply(start))
            sample = "in sample" if label in (net.label, "both") else "OUT OF SAMPLE"
            print(f"    {net.label:<10} ({sample}): largest per-kind difference "
                  f"{j.worst_points:5.2f} points {_mark(j.worst_points <= KIND_TARGET_POINTS)}, "
                  f"median layer error {j.median_error:5.1%} "
                  f"{_mark(j.median_error <= LAYER_TARGET)}, total "
                  f"{j.predicted_total_s / j.logged_total_s:.2f} x logged")

    print()
    both = fits["both"]
    same = (abs(shipped.kernel_latency_s - both.kernel_latency_s) <= 5e-9
            and all(abs(shipped.compute_efficiency.get(k, -1) - v) <= 5e-4
                    for k, v in both.fitted("compute").items())
            and all(abs(shipped.memory_efficiency.get(k, -1) - v) <= 5e-4
                    for k, v in both.fitted("memory").items()))
    print(f"3. the shipped {PROFILE} profile: latency {shipped.kernel_latency_s * 1e6:.3f} us, "
          f"kernels {shipped.kernels!r}, compute {dict(shipped.compute_efficiency)}, memory "
          f"{dict(shipped.memory_efficiency)}; equals the fit on both to the digits shipped: "
          f"{'yes' if same else 'NO'}")
    results = []
    for net in nets:
        results.append(print_judged(net, judge(net, shipped), "  shipped profile",
                                    per_layer=not args.quiet_layers))
    ok = all(a and b for a, b in results)
    print(f"\nall targets met with the shipped profile: {'yes' if ok else 'no'} "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
