"""Benchmark sharded profiling on the CPU: overhead, attribution against the stock
profiler, and the cost model's exposed communication against the measured one.

Run from the repository root::

    python benchmarks/sharded.py            # FSDP2 of GPT-2 small on 4 ranks, TP on 2 ranks
    python benchmarks/sharded.py --quick    # a 2-layer GPT-2 (smoke run, ~1 min)
    python benchmarks/sharded.py --samples 6 --seq-len 128

A benchmark, not a test: it prints each measurement beside its target with PASS or MISS
and never asserts.  Timings on a shared CPU are noisy: every ratio comes with its range.

What runs
---------
Each configuration starts its ranks with torchrun (gloo on 127.0.0.1), running this file
as a worker.  Every rank builds GPT-2 small's shape (12 blocks of 768, random init, no
dropout so that every rank draws the same), shards it as ``layertime profile --fsdp`` /
``--tp`` does (``measure/parallel/shard.py``), warms up, then takes ``--samples`` samples
of three steps in rotating order, the ranks lined up by a barrier before each:

* **plain**: the training step, timed, no profiler;
* **profiled**: the step ``layertime profile`` traces (module ranges, ``torch.profiler``
  with shapes recorded), then attributed and its collectives charged;
* **stock**: ``torch.profiler.profile(record_shapes=True)`` alone around the step.

Measurements
------------
1. **Overhead** = median profiled / median plain step (target <= 1.10), beside the stock
   profiler's own (stock / plain), per rank and over ranks.
2. **Attribution against the stock profiler**, in the profiled steps: the backend time
   layertime charges (``busy``: gloo's own events matched to the calls) against the sum
   of the stock profiler's ``gloo:*`` events of the same steps (target: within 3%), and
   the calls against the events' count; then layertime's charged communication per step
   (exposed + hidden) against the stock-profiled steps' gloo time (independent steps).
3. **Prediction**: the cost model's exposed communication for the same layout and the
   link measured here, from rank 0's measured compute (``layertime.cost.sharded.predict_run``),
   against rank 0's measured exposed communication.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- worker (one rank) ------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One rank: time and profile its steps (the model is freed before the group is left)."""
    from layertime.measure.parallel.ranks import leave_process_group

    _work(args)
    leave_process_group()


def _work(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from layertime.kinds import KindObserver
    from layertime.measure.aggregate import aggregate, collective_rows
    from layertime.measure.attribute import attribute_step, split_steps
    from layertime.measure.parallel.link import measure_link
    from layertime.measure.parallel.shard import shard_model
    from layertime.measure.parallel.sharded import ShardedSync
    from layertime.measure.prepare import prepare
    from layertime.measure.runner import _plain_step, trace_step
    from layertime.measure.tracer import TraceSession
    from layertime.models import ModelRef
    from layertime.modules import ModuleTable
    from layertime.workload import Workload, WorkloadSpec, check_input
    from layertime.workload.sharding import ShardingSpec

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = [f"n_layer={args.layers}", "resid_pdrop=0", "embd_pdrop=0", "attn_pdrop=0"]
    spec = WorkloadSpec.create(ModelRef("hf:gpt2", tuple(config)), batch_size=args.batch,
                               seq_len=args.seq_len, device="cpu")
    p = prepare(spec)
    model = p.model
    sharding = ShardingSpec(fsdp=args.mode == "fsdp", tp=world if args.mode == "tp" else 1)
    layout = shard_model(model, sharding, world, p.device, p.label).layout
    workload = p.workload.with_input(p.workload.resolved_input.for_model(model))
    with KindObserver(model) as watched:
        out_shape = check_input(model, workload, p.device, p.label)
    table = ModuleTable(model, watched.kinds())
    sync = ShardedSync(layout, p.device)
    sync.attach(model, table)
    work = Workload(model, workload, p.device, out_shape)
    for _ in range(args.warmup):
        _plain_step(work, sync)

    def stock_step() -> float:
        sync.begin_step(traced=False)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=not args.no_shapes) as prof:
            t0 = time.perf_counter()
            work.step()
            wall = time.perf_counter() - t0
        gloo = sum(e.time_range.elapsed_us() for e in prof.events()
                   if e.name.startswith("gloo:")) * 1e-6
        stock_gloo.append(gloo)
        return wall

    def profiled_step() -> float:
        session = TraceSession(table, p.device, record_shapes=not args.no_shapes)
        wall, _ = trace_step(work, session, sync)
        ((step, members),) = split_steps(session.events)
        charged = sync.charge(attribute_step(step, members), False)
        raw = [e for e in session.profiler.events()
               if step.start_us <= e.time_range.start <= step.end_us]
        same_gloo.append(sum(e.time_range.elapsed_us() for e in raw
                             if e.name.startswith("gloo:")) * 1e-6)
        same_events.append(sum(1 for e in raw if e.name.startswith("gloo:")))
        return wall

    plain: list[float] = []
    traced: list[float] = []
    stock: list[float] = []
    stock_gloo: list[float] = []
    same_gloo: list[float] = []
    same_events: list[int] = []
    kinds = (("plain", lambda: _plain_step(work, sync)[0], plain),
             ("profiled", profiled_step, traced), ("stock", stock_step, stock))
    for i in range(args.samples):
        order = [kinds[(i + j) % 3] for j in range(3)] if i % 2 == 0 else \
            [kinds[(i - j) % 3] for j in range(3)]
        for _, fn, out in order:
            out.append(fn())
        if rank == 0:
            log(f"  sample {i + 1}/{args.samples}")
    layers, phases, _, samples = aggregate(table, sync.charged)
    link = measure_link(world, p.device)
    predicted = None
    if rank == 0:
        predicted = predict(p, workload, layers, phases, samples, plain, layout, table, sync,
                            link, sharding, world)
    mine = {
        "rank": rank, "plain": plain, "traced": traced, "stock": stock,
        "stock_gloo": stock_gloo, "same_gloo": same_gloo, "same_events": same_events,
        "charged_busy": [sum(c.busy_s for c in ch.collective_charges) for ch in sync.charged],
        "charged_calls": [sum(c.count for c in ch.collective_charges) for ch in sync.charged],
        "charged_comm": [sum(c.exposed_s + c.hidden_s for c in ch.collective_charges)
                         for ch in sync.charged],
        "exposed": phases.comm_exposed_s, "profiled_step": statistics.fmean(samples),
        "layers": [{"name": r.name, "forward_s": r.forward_s, "backward_s": r.backward_s,
                    "comm_exposed_s": r.comm_exposed_s} for r in layers],
        "collectives": [vars(c) for c in collective_rows(table, sync.charged)],
        "layout": vars(layout) | {"units": list(layout.units),
                                  "tp_layers": dict(layout.tp_layers)},
        "link": vars(link) if link is not None else None,
        "predicted": predicted,
    }
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is not None:
        Path(args.out).write_text(json.dumps(gathered))


def predict(p: Any, workload: Any, layers: Any, phases: Any, samples: Any, plain: Any,
            layout: Any, table: Any, sync: Any, link: Any, sharding: Any,
            world: int) -> dict[str, Any]:
    """The cost model's what-if for this very layout, world size and measured link, from
    rank 0's measured rows (``layertime.cost.sharded.predict_run``)."""
    import datetime as _dt

    from layertime.cost.sharded import predict_run
    from layertime.measure.aggregate import collective_rows
    from layertime.measure.environment import describe
    from layertime.results.parallel.comm import Link
    from layertime.results.run import Run

    spec = workload.resolved_input
    run = Run(model=p.label, device=str(p.device), batch_size=workload.batch_size,
              input_shape=tuple(spec.sample_shape), dtype=workload.dtype,
              optimizer=workload.optimizer, steps=len(samples), warmup_steps=0,
              step_samples_s=tuple(plain), profiled_step_samples_s=tuple(samples),
              layers=layers, phases=phases, environment=describe(p.device),
              timing="cpu-self-time", seq_len=spec.sequence_length, world_size=world,
              backend="gloo", link=link, sharding=layout,
              collectives=collective_rows(table, sync.charged),
              created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    dp_link = Link(link.bandwidth_gbps, link.latency_us, "measured") if link else None
    sc = predict_run(run, sharding, world, workload=workload, dp_link=dp_link)
    return {"exposed_s": sc.exposed_s, "measured_exposed_s": sc.measured_exposed_s,
            "headline": sc.headline(),
            "link": f"{link.bandwidth_gbps:,.1f} Gbit/s, {link.latency_us:,.0f} µs" if link
            else "none"}


# -- driver ---------------------------------------------------------------------------------


def launch(mode: str, nproc: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    from layertime.measure.parallel.launch import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__,
               "--worker", "--mode", mode, "--out", str(out), "--layers", str(args.layers),
               "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--samples",
               str(args.samples), "--warmup", str(args.warmup),
               *(["--no-shapes"] if args.no_shapes else [])]
        env = dict(os.environ, GLOO_SOCKET_IFNAME="lo",
                   OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)),
                   KINETO_LOG_LEVEL="6")
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{mode} on {nproc} ranks failed:\n{proc.stderr[-3000:]}")
        return list(json.loads(out.read_text()))


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(mode: str, nproc: int, ranks: list[dict[str, Any]], args: argparse.Namespace) -> None:
    what = "FSDP2" if mode == "fsdp" else "tensor-parallel"
    print(f"\n{what} on {nproc} ranks (gloo), GPT-2 small's shape with {args.layers} blocks "
          f"of 768, batch {args.batch}, sequence {args.seq_len}, {args.samples} samples")
    ratios = [med(r["traced"]) / med(r["plain"]) for r in ranks]
    stock = [med(r["stock"]) / med(r["plain"]) for r in ranks]
    over = med(ratios)
    print(f"  1. overhead, profiled / plain (medians per rank): "
          f"{', '.join(f'x{x:.3f}' for x in ratios)}; median x{over:.3f} "
          f"(target <= 1.10: {verdict(over <= 1.10)})")
    print(f"     stock profiler alone, stock / plain: {', '.join(f'x{x:.3f}' for x in stock)}")
    for r in ranks[:1]:
        print(f"     rank 0 steps: plain {med(r['plain']) * 1e3:,.0f} ms (range "
              f"{min(r['plain']) * 1e3:,.0f}–{max(r['plain']) * 1e3:,.0f}), profiled "
              f"{med(r['traced']) * 1e3:,.0f} ms ({min(r['traced']) * 1e3:,.0f}–"
              f"{max(r['traced']) * 1e3:,.0f}), stock {med(r['stock']) * 1e3:,.0f} ms")
    busy = sum(sum(r["charged_busy"]) for r in ranks)
    gloo = sum(sum(r["same_gloo"]) for r in ranks)
    calls = sum(sum(r["charged_calls"]) for r in ranks)
    events = sum(sum(r["same_events"]) for r in ranks)
    diff = busy / gloo - 1 if gloo else float("nan")
    print(f"  2. backend time charged {busy * 1e3:,.1f} ms against the stock profiler's gloo "
          f"events in the same steps {gloo * 1e3:,.1f} ms ({diff:+.2%}; target within 3%: "
          f"{verdict(abs(diff) <= 0.03)}); calls {calls:g} against {events} events "
          f"(all ranks, all profiled steps)")
    comm = med([c for r in ranks for c in r["charged_comm"]])
    alone = med([g for r in ranks for g in r["stock_gloo"]])
    print(f"     communication charged per step (exposed + hidden, median over ranks and "
          f"steps) {comm * 1e3:,.1f} ms; gloo's own time in the stock-profiled steps "
          f"{alone * 1e3:,.1f} ms (charged / gloo x{comm / alone:.2f}: the charge is the "
          "training thread's time on collectives, FSDP's copies included, plus gloo's time "
          "beside compute; gloo's time includes waiting for the other ranks to arrive)")
    exposed = med([r["exposed"] for r in ranks])
    step = med([r["profiled_step"] for r in ranks])
    print(f"     measured exposed communication {exposed * 1e3:,.1f} ms of a "
          f"{step * 1e3:,.0f} ms step ({exposed / step:.0%}), median over ranks")
    kinds: dict[str, list[float]] = {}
    for c in ranks[0]["collectives"]:
        kinds.setdefault(c["kind"], [0.0, 0.0])
        kinds[c["kind"]][0] += c["exposed_s"]
        kinds[c["kind"]][1] += c["hidden_s"]
    print("     rank 0 by kind (exposed / hidden ms): " + ", ".join(
        f"{k} {e * 1e3:,.1f} / {h * 1e3:,.1f}" for k, (e, h) in kinds.items()))
    pred = ranks[0]["predicted"]
    measured0 = pred["measured_exposed_s"] or ranks[0]["exposed"]
    print(f"  3. cost model's exposed communication {pred['exposed_s'] * 1e3:,.1f} ms against "
          f"rank 0's measured {measured0 * 1e3:,.1f} ms (predicted / measured "
          f"x{pred['exposed_s'] / measured0:.2f}; link measured {pred['link']}; compute from "
          "rank 0's rows)")
    print(f"     {pred['headline']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 blocks, 3 samples")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--only", choices=("fsdp", "tp"))
    p.add_argument("--no-shapes", action="store_true",
                   help="both profilers without record_shapes (what recording shapes costs; "
                        "the collectives' bytes are then 0)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("fsdp", "tp"), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.samples = 2, 3
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    print(f"sharded profiling on this CPU ({os.cpu_count()} cores, load {load:.1f} at start)")
    for mode, nproc in (("fsdp", 4), ("tp", 2)):
        if args.only and mode != args.only:
            continue
        log(f"{mode} on {nproc} ranks ...")
        report(mode, nproc, launch(mode, nproc, args), args)
    print(f"\nran {time.monotonic() - t0:,.0f} s; load {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
