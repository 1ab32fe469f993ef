#!/usr/bin/env python3
"""Memory per layer, measured by layertime, against torch's MemTracker and the cost model.

::

    PYTHONPATH=. python benchmarks/memory.py                 # alexnet, resnet50, GPT-2 small
    PYTHONPATH=. python benchmarks/memory.py --quick         # small sizes (a minute)

For each model, one training step (SGD, float32, CPU) is measured three ways:

* **layertime**: the memory step of ``layertime/measure/memory/`` (what
  ``profile`` runs after its timed steps): each layer's ``saved_bytes`` (its
  convention: a storage saved by one layer is that layer's; one saved by several
  is its producer's), the same storages charged to the layer that allocated them
  (``by producer``), and the step's peak;
* **MemTracker** (``torch.distributed._tools.mem_tracker``): a TorchDispatchMode
  that tracks every storage; per module, the activation bytes its forward left
  alive (``Post-Forward`` minus ``Pre-Forward`` of its ``Activation`` category),
  and the step's peak;
* **the cost model** (``layertime cost``): each layer's counted
  ``saved_activations``, by layertime's convention, on the meta device.

What agrees and what differs in kind: the peak is the same quantity on both sides
(every tensor storage live at the step's highest moment) and must agree within 5%.
Per leaf module, MemTracker's forward delta and layertime's ``by producer`` both
charge a storage to the module that allocated it; they differ in kind where a
module's output is alive at its end but never saved for backward (MemTracker counts
it, layertime does not: a residual add's output, a dropout's mask copies) and where
the module allocates nothing it keeps (an in-place ReLU: both 0).  The cost model
counts what the meta device saves, by layertime's convention; per layer it must
agree within 10% with the measured ``saved_bytes``.

Then the profile's overhead with memory on and off: two ``layertime.profile`` runs of
the same workload side by side (memory measured in two extra untimed steps, so the
traced/plain ratio should not move), their overhead ratios and their wall times.
A benchmark, not a test: it prints, never asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from layertime.cost import estimate_workload  # noqa: E402
from layertime.measure.prepare import prepare  # noqa: E402
from layertime.measure.runner import MeasureOptions, memory_step, profile_workload  # noqa: E402
from layertime.modules import ModuleTable, training_mode  # noqa: E402
from layertime.workload import Workload, WorkloadSpec, check_input  # noqa: E402

MB = 1e6
#: Agreement targets: the peak and per-leaf producer bytes against MemTracker; the count.
PEAK_TOLERANCE = 0.05
COUNT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Config:
    key: str
    spec: dict[str, Any]


FULL = (
    Config("alexnet b8", {"model": "alexnet", "batch_size": 8}),
    Config("resnet50 b4", {"model": "resnet50", "batch_size": 4}),
    Config("gpt2-small b2 s128", {"model": "hf:gpt2", "batch_size": 2, "seq_len": 128}),
)
QUICK = (
    Config("alexnet b2 @96", {"model": "alexnet", "batch_size": 2, "image_size": 96}),
    Config("resnet18 b2 @64", {"model": "resnet18", "batch_size": 2, "image_size": 64}),
    Config("gpt2 2 layers b2 s32", {"model": "hf:gpt2", "batch_size": 2, "seq_len": 32,
                                    "config": ("n_layer=2",)}),
)


def _workload(cfg: Config) -> WorkloadSpec:
    from layertime.models import ModelRef

    kw = dict(cfg.spec)
    model = ModelRef(kw.pop("model"), tuple(kw.pop("config", ())))
    return WorkloadSpec.create(model, device="cpu", **kw)


def _ready(cfg: Config) -> tuple[Any, Workload, ModuleTable]:
    p = prepare(_workload(cfg))
    shape = check_input(p.model, p.workload, p.device, p.label)
    work = Workload(p.model, p.workload, p.device, shape)
    return p, work, ModuleTable(p.model)


def layertime_side(cfg: Config) -> tuple[Any, ModuleTable, float]:
    """layertime's memory step after one warm-up step; (measurement, table, seconds)."""
    p, work, table = _ready(cfg)
    with training_mode(p.model):
        work.step()
        t0 = time.perf_counter()
        m = memory_step(work, p.model, table)
        return m, table, time.perf_counter() - t0


def memtracker_side(cfg: Config) -> tuple[int, dict[str, int], float]:
    """MemTracker around one step after a warm-up: (peak bytes, module -> forward
    activation delta, seconds)."""
    from torch.distributed._tools.mem_tracker import MemTracker, _ModState

    p, work, _ = _ready(cfg)
    with training_mode(p.model):
        work.step()
        mt = MemTracker()
        targets = work.targets if isinstance(work.targets, torch.Tensor) else None
        mt.track_external(p.model, work.optimizer, *work.batch.tensors,
                          *([targets] if targets is not None else []))
        t0 = time.perf_counter()
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Module is None. Skipping PRE_BW hook."
            with mt:
                work.step()
        dt = time.perf_counter() - t0
    dev = torch.device("cpu")
    peak = int(mt.get_tracker_snapshot("peak")[dev]["Total"])
    names = {id(m): n for n, m in p.model.named_modules()}
    deltas: dict[str, int] = {}
    for mod, st in mt.memory_tracking.items():
        pre = st.snapshots.get(_ModState.PRE_FW)
        post = st.snapshots.get(_ModState.POST_FW)
        if not pre or not post or id(mod) not in names:
            continue
        act = "Activation"
        deltas[names[id(mod)]] = int(post[0][dev].get(act, 0) - pre[0][dev].get(act, 0))
    return peak, deltas, dt


def _pct(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.1f}%" if b else "-"


def compare(cfg: Config) -> dict[str, Any]:
    m, table, lt_s = layertime_side(cfg)
    mt_peak, deltas, mt_s = memtracker_side(cfg)
    cost = estimate_workload(_workload(cfg))
    counted = {r.name: r.memory_bytes.saved_activations for r in cost.layers}
    names = {e.index: e.name for e in table}
    leaves = {e.name for e in table if not any(True for _ in e.module.children())}
    # By producer: storages allocated by a module's ops in the step (not the batch, which
    # MemTracker tracks as external, not as an activation).
    by_producer: dict[str, int] = {}
    for s in m.storages:
        if s.producer is not None:
            by_producer[names[s.producer]] = by_producer.get(names[s.producer], 0) + s.nbytes
    saved = {names[i]: lm.saved_bytes for i, lm in m.layers.items()}
    assert m.summary is not None
    peak = m.summary.peak_bytes
    print(f"\n== {cfg.key} ==  (layertime's memory step {lt_s:.1f} s, MemTracker's step "
          f"{mt_s:.1f} s)")
    print(f"peak: layertime {peak / MB:,.2f} MB ({m.summary.method}, at "
          f"{m.summary.peak_when}) vs MemTracker {mt_peak / MB:,.2f} MB: "
          f"{_pct(peak, mt_peak)}  [{'PASS' if abs(peak / mt_peak - 1) <= PEAK_TOLERANCE else 'MISS'}"
          f" within {PEAK_TOLERANCE:.0%}]")
    at = m.summary.at_peak
    print("  live at the peak: " + ", ".join(f"{k} {v / MB:,.1f}" for k, v in
                                             at.categories().items()) + " MB")
    # Per leaf: the same quantity (bytes its forward allocated and kept) on both sides.
    rows = []
    agree = differ = 0
    in_kind: list[str] = []
    for name in sorted(leaves, key=lambda n: -max(deltas.get(n, 0), by_producer.get(n, 0))):
        ours, theirs = by_producer.get(name, 0), deltas.get(name)
        if theirs is None or (ours == 0 and theirs == 0):
            continue
        ok = abs(ours - theirs) <= PEAK_TOLERANCE * max(ours, theirs)
        if ok:
            agree += 1
        else:
            differ += 1
            in_kind.append(name)
        rows.append((name, ours, theirs, ok))
    total_ours = sum(by_producer.get(n, 0) for n, *_ in rows)
    total_mt = sum(t for _, _, t, _ in rows)
    print(f"per leaf module, bytes its forward allocated and kept: {agree} agree within "
          f"{PEAK_TOLERANCE:.0%}, {differ} differ; over those leaves layertime (by producer) "
          f"{total_ours / MB:,.2f} MB vs MemTracker {total_mt / MB:,.2f} MB "
          f"({_pct(total_ours, total_mt)})")
    # The cost model against layertime's saved_bytes, layer by layer.
    misses = []
    for name, nbytes in saved.items():
        c = counted.get(name, 0)
        if max(nbytes, c) and abs(c - nbytes) > COUNT_TOLERANCE * max(nbytes, c):
            misses.append((name, nbytes, c))
    total_saved = sum(saved.values())
    total_counted = sum(counted.values())
    print(f"cost model: saved {total_counted / MB:,.2f} MB counted vs {total_saved / MB:,.2f} "
          f"MB measured in the layers ({_pct(total_counted, total_saved)}); "
          f"{len(misses)} layer(s) off by more than {COUNT_TOLERANCE:.0%}"
          + (": " + ", ".join(f"{n} {c / MB:.3f} vs {s / MB:.3f} MB" for n, s, c in misses[:6])
             if misses else ""))
    print(f"{'layer':<34} {'saved MB':>9} {'by prod.':>9} {'MemTracker':>10} "
          f"{'counted':>9}  note")
    shown = sorted(leaves | set(saved), key=lambda n: -max(saved.get(n, 0),
                                                           by_producer.get(n, 0),
                                                           deltas.get(n, 0) or 0))[:14]
    for name in shown:
        mt = deltas.get(name)
        note = ""
        if name in in_kind:
            bp, t = by_producer.get(name, 0), mt or 0
            note = ("output alive at its end, not saved" if t > bp else
                    "keeps what it did not allocate in forward" if bp > t else "")
        print(f"{(name or '(model)')[:34]:<34} {saved.get(name, 0) / MB:>9.3f} "
              f"{by_producer.get(name, 0) / MB:>9.3f} "
              f"{'-' if mt is None else f'{mt / MB:.3f}':>10} {counted.get(name, 0) / MB:>9.3f}"
              f"  {note}")
    return {"peak": peak, "mt_peak": mt_peak, "misses": len(misses), "agree": agree,
            "differ": differ}


def overhead(cfg: Config, steps: int, rounds: int) -> None:
    """Profiles of one workload with memory on and off, side by side: one discarded first
    (the process's own warm-up), then ``rounds`` pairs in ABBA order, so neither side
    always runs first.  The overhead is each profile's traced/plain ratio; "within noise"
    when the two sides' ranges overlap (as the table's footer judges a ratio)."""
    def one(memory: bool) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        run = profile_workload(_workload(cfg), MeasureOptions(steps=steps, warmup_steps=1,
                                                              memory=memory))
        return run.overhead_ratio, time.perf_counter() - t0, run.step_s

    one(False)
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    for i in range(rounds):
        for memory in ((True, False) if i % 2 == 0 else (False, True)):
            results[memory].append(one(memory))
    on = [r for r, _, _ in results[True]]
    off = [r for r, _, _ in results[False]]
    won = statistics.median(w for _, w, _ in results[True])
    woff = statistics.median(w for _, w, _ in results[False])
    plain = statistics.median(p for side in results.values() for _, _, p in side)
    overlap = min(on) <= max(off) and min(off) <= max(on)
    print(f"\noverhead ({cfg.key}, {steps} traced steps per profile, {rounds} profiles per side "
          f"in ABBA order after one discarded): traced/plain with memory on "
          f"{', '.join(f'x{r:.3f}' for r in on)}; off {', '.join(f'x{r:.3f}' for r in off)}; "
          f"median on / off = {statistics.median(on) / statistics.median(off):.3f}, "
          f"{'within noise (the ranges overlap)' if overlap else 'the ranges do not overlap'}; "
          f"whole profile (median) {won:.1f} s on vs {woff:.1f} s off (x{won / woff:.2f}: the "
          f"two untimed memory steps; median plain step {plain:.2f} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--only", default="", help="comma-separated config keys")
    ap.add_argument("--overhead-steps", type=int, default=3)
    ap.add_argument("--overhead-rounds", type=int, default=4)
    ap.add_argument("--overhead-only", action="store_true", help="only the overhead")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    configs = QUICK if args.quick else FULL
    if args.only:
        configs = tuple(c for c in configs if c.key in set(args.only.split(",")))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"layertime memory benchmark: torch {torch.__version__}, CPU, "
          f"{torch.get_num_threads()} threads, load average {load:.1f} at start")
    for cfg in configs if not args.overhead_only else ():
        compare(cfg)
    overhead(configs[0], args.overhead_steps, args.overhead_rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average {load:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
