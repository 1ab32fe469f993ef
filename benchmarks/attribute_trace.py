#!/usr/bin/env python3
"""Benchmark ``layertime attribute`` on this CPU: agreement with layertime's own attribution
of the same steps, and the time and memory to attribute a large trace.

::

    python benchmarks/attribute_trace.py            # resnet50, ViT-B/16, GPT-2 small; a
                                                    # >= 100 MB trace; ~10 minutes on 2 cores
    python benchmarks/attribute_trace.py --quick    # small sizes and a ~10 MB trace (smoke)

A benchmark, not a test: it prints each measurement beside its target with PASS or MISS
and never asserts.  Progress goes to stderr, the report to stdout.

Agreement (per model).  The model is built as ``layertime profile`` builds it (random
init, seeded, synthetic batch) and trained by one :class:`layertime.workload.Workload`.
Its steps are recorded with the stock profiler as a user records them
(``torch.profiler.profile(schedule=schedule(wait=0, warmup=1, active=N), with_stack=True,
record_shapes=True)``), while layertime's own module ranges are installed too, so one
session gives both views of the very same steps:

* **layertime**: the profile's events (``prof.events()``, the Python tracer's left out)
  charged by layertime's live attribution on its own ``layertime::module::<i>`` ranges
  (``attribute_step`` in loop mode, as ``layertime.Profiler`` charges a user's steps);
* **attribute**: the Chrome trace the profiler exported, with layertime's ranges removed
  (what the stock profiler alone writes), read by ``layertime attribute --model NAME``.

Printed: the largest difference of a kind's share of the step (target <= 3 points), of a
role's for transformers, and of a layer's; whether backward matched; the trace's size
and the time to attribute it.

Large trace.  GPT-2 small's steps are recorded (as above, without layertime's ranges)
until the trace holds at least ``--big-mb`` MB; a fresh process then attributes it with
``--model hf:gpt2`` and reports its wall time (target <= 15 s) and its peak resident
memory (target <= 2 GB), beside an import-only process's peak (what torch and layertime
take before any trace is read).  The machine's load is printed with each timing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import layertime  # noqa: E402
from layertime.kinds import KindObserver  # noqa: E402
from layertime.measure.aggregate import aggregate  # noqa: E402
from layertime.measure.attribute import attribute_step, split_steps  # noqa: E402
from layertime.measure.events import STEP, from_profiler  # noqa: E402
from layertime.measure.prepare import prepare  # noqa: E402
from layertime.measure.tracer import module_ranges  # noqa: E402
from layertime.modules import ModuleTable, training_mode  # noqa: E402
from layertime.results.run import Run  # noqa: E402
from layertime.workload import Workload, WorkloadSpec, check_input  # noqa: E402

#: The Python tracer's events as ``prof.events()`` names them: not ops.
_PYTHON = re.compile(r"^(nn\.Module: |<built-in|.*\(\d+\): )")


@dataclasses.dataclass(frozen=True)
class Config:
    key: str
    model: str
    batch_size: int
    image_size: int | None = None
    seq_len: int | None = None

    def spec(self) -> WorkloadSpec:
        return WorkloadSpec.create(self.model, batch_size=self.batch_size, device="cpu",
                                   image_size=self.image_size, seq_len=self.seq_len)


FULL = (Config("resnet50", "resnet50", 4, image_size=224),
        Config("vit_b_16", "vit_b_16", 2, image_size=224),
        Config("gpt2", "hf:gpt2", 2, seq_len=128))
QUICK = (Config("resnet50", "resnet50", 2, image_size=64),
         Config("vit_b_16", "vit_b_16", 1, image_size=224),
         Config("gpt2", "hf:gpt2", 1, seq_len=32))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} on {os.cpu_count()} cores"


def build(cfg: Config) -> tuple[Any, ModuleTable, Workload]:
    p = prepare(cfg.spec())
    with KindObserver(p.model) as watched:
        shape = check_input(p.model, p.workload, p.device, p.label)
    table = ModuleTable(p.model, watched.kinds())
    return p, table, Workload(p.model, p.workload, p.device, shape)


def record(work: Workload, out: Path, steps: int, table: ModuleTable | None) -> Run | None:
    """``steps`` recorded steps (after one warm-up) exported to ``out``; with ``table``,
    layertime's ranges recorded too and its own attribution of the steps returned."""
    own: dict[str, Any] = {}

    def ready(prof: Any) -> None:
        if table is not None:
            events = from_profiler([e for e in prof.events() if not _PYTHON.match(e.name)])
            events = [dataclasses.replace(e, name=STEP) if e.name.startswith("ProfilerStep")
                      else e for e in events]
            charges = [attribute_step(s, m, loop=True) for s, m in split_steps(events)]
            own["rows"] = aggregate(table, charges)
        prof.export_chrome_trace(str(out))

    sched = torch.profiler.schedule(wait=0, warmup=1, active=steps)
    ranges = module_ranges(table) if table is not None else _nothing()
    with ranges, torch.profiler.profile(schedule=sched, with_stack=True, record_shapes=True,
                                        on_trace_ready=ready) as prof:
        for _ in range(steps + 1):
            work.step()
            prof.step()
    if table is None:
        return None
    layers, phases, _, samples = own["rows"]
    return _run(layers, phases, samples)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def _run(layers: Any, phases: Any, samples: Any) -> Run:
    from layertime.measure.environment import describe

    return Run(model="own", device="cpu", batch_size=0, input_shape=(), dtype="float32",
               optimizer="sgd", steps=len(samples), warmup_steps=0, step_samples_s=(),
               profiled_step_samples_s=samples, layers=layers, phases=phases,
               environment=describe(torch.device("cpu")), timing="cpu-self-time")


def strip_ranges(src: Path, dst: Path) -> None:
    """The trace as the stock profiler alone writes it: layertime's ranges removed."""
    d = json.loads(src.read_text())
    d["traceEvents"] = [e for e in d["traceEvents"]
                        if not str(e.get("name", "")).startswith("layertime::")]
    dst.write_text(json.dumps(d))


def shares(run: Run, by: str) -> dict[str, float]:
    groups = run.by_kind() if by == "kind" else run.roles()
    return {k: v.share for k, v in groups.items()}


def agreement(cfg: Config, steps: int, folder: Path) -> dict[str, Any]:
    p, table, work = build(cfg)
    with training_mode(p.model):
        work.step()  # warm-up, outside any profile
        both = folder / f"{cfg.key}-with-ranges.json"
        t0 = time.perf_counter()
        own = record(work, both, steps, table)
        rec_s = time.perf_counter() - t0
    assert own is not None
    trace = folder / f"{cfg.key}.json"
    strip_ranges(both, trace)
    both.unlink()
    t0 = time.perf_counter()
    got = layertime.attribute(trace, cfg.model, image_size=cfg.image_size,
                              seq_len=cfg.seq_len).run
    attr_s = time.perf_counter() - t0
    out: dict[str, Any] = {"steps": got.steps, "trace_mb": trace.stat().st_size / 2**20,
                           "attribute_s": attr_s, "record_s": rec_s,
                           "step_ms": 1e3 * got.profiled_step_s, "load": load()}
    for by in ("kind", "role"):
        a, b = shares(got, by), shares(own, by)
        diffs = {k: 100 * (a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b)}
        worst = max(diffs, key=lambda k: abs(diffs[k]))
        out[by] = {"worst": worst, "diff_points": diffs[worst],
                   "attribute": {k: round(100 * v, 2) for k, v in a.items()},
                   "layertime": {k: round(100 * v, 2) for k, v in b.items()}}
    mine = {r.name: r for r in own.layers}
    layer_diffs = {r.name: 100 * (r.total_s / got.profiled_step_s
                                  - mine[r.name].total_s / own.profiled_step_s)
                   for r in got.layers if r.name in mine}
    worst = max(layer_diffs, key=lambda k: abs(layer_diffs[k]))
    out["layer"] = {"worst": worst or "(model)", "diff_points": layer_diffs[worst],
                    "rows": len(got.layers), "matched": len(layer_diffs)}
    bwd = sum(abs(r.backward_s - mine[r.name].backward_s) for r in got.layers if r.name in mine)
    out["backward_diff_ms"] = 1e3 * bwd / max(1, got.steps)
    out["headline"] = got.headline()
    return out


def big_trace(cfg: Config, target_mb: float, folder: Path, per_step_mb: float) -> Path:
    """Record ``cfg``'s steps until the trace holds at least ``target_mb`` MB."""
    steps = max(1, int(target_mb / max(per_step_mb, 0.1) * 1.15) + 1)
    p, _, work = build(cfg)
    path = folder / f"big-{cfg.key}.json"
    while True:
        log(f"recording {steps} steps of {cfg.key} for a >= {target_mb:g} MB trace")
        with training_mode(p.model):
            work.step()
            record(work, path, steps, None)
        mb = path.stat().st_size / 2**20
        if mb >= target_mb:
            return path
        steps = int(steps * target_mb / mb * 1.1) + 1


#: The attributing process.  Memory from /proc/self/status (VmRSS now, VmHWM the peak):
#: getrusage's ru_maxrss would keep the peak of the benchmark process it was forked from.
_CHILD = r"""
import json, sys, time
def mem(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
import layertime
from layertime.measure.traces import attribute
import transformers, torchvision  # what --model may import, counted before the trace
out = {"import_s": time.perf_counter() - t0, "imported_mb": mem("VmRSS")}
if sys.argv[1] != "-":
    t0 = time.perf_counter()
    run = attribute(sys.argv[1], sys.argv[2] or None, seq_len=int(sys.argv[3])).run
    out["attribute_s"] = time.perf_counter() - t0
    out["steps"] = run.steps
    out["rows"] = len(run.layers)
out["peak_mb"] = mem("VmHWM")
print(json.dumps(out))
"""


def child(args: list[str]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True,
                       env=env, cwd=str(ROOT))
    if p.returncode != 0:
        raise SystemExit(f"attributing the large trace failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a ~10 MB trace")
    ap.add_argument("--steps", type=int, default=None, help="recorded steps per model (3)")
    ap.add_argument("--big-mb", type=float, default=None, help="size of the large trace (100)")
    ap.add_argument("--only", default="", help="comma-separated config keys")
    ap.add_argument("--keep", metavar="DIR", help="keep the traces in DIR")
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else FULL
    if args.only:
        configs = tuple(c for c in configs if c.key in set(args.only.split(",")))
    steps = args.steps or (2 if args.quick else 3)
    big_mb = args.big_mb or (10.0 if args.quick else 100.0)
    torch.manual_seed(0)
    tmp = tempfile.TemporaryDirectory(prefix="layertime-attribute-bench-")
    folder = Path(args.keep) if args.keep else Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"layertime attribute benchmark — torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {load()} at start")
    print()
    print("Agreement: the same steps charged by layertime's live attribution (its module "
          "ranges)\nand by `layertime attribute --model` on the stock profiler's trace of them")
    per_step_mb = 0.0
    results = {}
    for cfg in configs:
        log(f"{cfg.key}: recording {steps} steps")
        r = agreement(cfg, steps, folder)
        results[cfg.key] = r
        if cfg.key == "gpt2":
            per_step_mb = r["trace_mb"] / r["steps"]
        k, ro, la = r["kind"], r["role"], r["layer"]
        print(f"\n{cfg.key} (batch {cfg.batch_size}"
              f"{f', image {cfg.image_size}' if cfg.image_size else ''}"
              f"{f', seq {cfg.seq_len}' if cfg.seq_len else ''}): {r['steps']} steps of "
              f"{r['step_ms']:.0f} ms, trace {r['trace_mb']:.1f} MB attributed in "
              f"{r['attribute_s']:.1f} s ({r['load']})")
        print(f"  kinds:  largest difference {k['diff_points']:+.2f} points ({k['worst']})"
              f"  target <= 3  {verdict(abs(k['diff_points']) <= 3)}")
        print("          attribute " + ", ".join(f"{n} {v:.1f}%" for n, v in sorted(
            k["attribute"].items(), key=lambda kv: -kv[1]) if v >= 0.5))
        print("          layertime " + ", ".join(f"{n} {v:.1f}%" for n, v in sorted(
            k["layertime"].items(), key=lambda kv: -kv[1]) if v >= 0.5))
        print(f"  roles:  largest difference {ro['diff_points']:+.2f} points ({ro['worst']})")
        print(f"  layers: largest difference {la['diff_points']:+.2f} points ({la['worst']}), "
              f"{la['matched']} of {la['rows']} rows matched by name; backward differs by "
              f"{r['backward_diff_ms']:.3f} ms per step in all")
        print(f"  headline: {r['headline']}")
    big_cfg = next((c for c in configs if c.key == "gpt2"), configs[-1])
    if not per_step_mb:
        per_step_mb = 5.0
    path = big_trace(big_cfg, big_mb, folder, per_step_mb)
    mb = path.stat().st_size / 2**20
    log(f"attributing {path.name} ({mb:.0f} MB) in a fresh process")
    loaded = load()
    got = child([str(path), big_cfg.model, str(big_cfg.seq_len or 128)])
    bare = child([str(path), "", "0"])
    print(f"\nLarge trace: {mb:.0f} MB ({got['steps']} steps of {big_cfg.key}, "
          f"{got['rows']} rows), attributed in a fresh process ({loaded})")
    print(f"  time:   {got['attribute_s']:.1f} s with --model {big_cfg.model} (building it "
          f"included), {bare['attribute_s']:.1f} s without  target <= 15 s  "
          f"{verdict(got['attribute_s'] <= 15)}")
    peak = got["peak_mb"] - got["imported_mb"]
    print(f"  memory: peak {got['peak_mb']:.0f} MB resident, {peak:.0f} MB above the "
          f"{got['imported_mb']:.0f} MB of torch, transformers and layertime imported; "
          f"without --model {bare['peak_mb'] - bare['imported_mb']:.0f} MB above  "
          f"target <= 2048 MB  {verdict(got['peak_mb'] <= 2048)}")
    print(f"  rate:   {mb / bare['attribute_s']:.1f} MB/s read and attributed")
    if args.keep:
        print(f"\ntraces kept in {folder}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
