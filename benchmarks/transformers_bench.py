#!/usr/bin/env python3
"""Benchmark layertime on a transformer: GPT-2 small, attention against the MLP, on this CPU.

::

    python benchmarks/transformers_bench.py                 # seq 128, 512, 1024 at batch 1 (minutes)
    python benchmarks/transformers_bench.py --quick         # a 2-layer GPT-2, seq 32 and 64 (smoke run)
    python benchmarks/transformers_bench.py --seq-lens 128,256 --steps 2

A benchmark, not a test: it prints each measurement beside its target with
PASS or MISS and never asserts.  For each sequence length (batch 1):

Each length runs ``--steps`` rounds (5) of three steps, in rotating order so
that the machine's changing load hits all alike: a plain step and a traced step
of ``layertime.profile`` (its own functions: ``runner._plain_step``, a
``TraceSession`` run by ``runner.trace_step``, ``runner._charge``,
``aggregate``), and a stock step profiled by ``torch.profiler`` alone.
The model is ``hf:gpt2`` with its config overrides in the workload's model
reference (``layertime.ModelRef``).

* **overhead**: ``Run.overhead_ratio`` of the traced steps (median traced
  step / median plain step).  Target <= 1.10.
* **agreement**: layertime's forward+backward share of the profiled step of
  its ``attention`` kind rows (the attention core: scores, softmax, weighted
  sum, in the attention module's own forward) and of its ``linear`` rows
  (matrix multiplies with a weight, GPT-2's ``Conv1D`` included), against an
  independent ``torch.profiler`` run of a stock transformers training step
  (``model(input_ids, labels=input_ids).loss``, SGD) with no layertime code
  in the loop.  There every op's self time is classified by the outermost
  aten op above it: ``aten::scaled_dot_product_attention`` -> attention
  core; ``aten::linear``/``addmm``/``mm``/``matmul`` -> matmul; a backward
  node takes the class of the forward op that created it (its sequence
  number).  Target: within 3 points each.  Beside it, the same op classes
  applied to the raw events of layertime's own traced steps: the difference
  there is the classification alone (module self time against op classes),
  without two separate measurements' noise.
* **role shares**: attention (projections + core), MLP, embeddings, norms,
  head, other, loss, as layertime reports them.

Shares are medians over steps (each step's share of its own wall time), with
their range: on a shared machine one step slowed by another job would
otherwise move every share.
* **crossover**: the sequence length where attention's share of the step
  overtakes the MLP's, interpolated in log2(seq) between the measured
  lengths (or "not in range"), beside the one the cost model predicts: a
  roofline on a profile of this CPU measured here (``layertime.cost.calibrate``),
  from counted FLOPs and bytes at seq 128 .. 8192 (``n_positions`` raised to
  fit), and the FLOP-only crossover.  The cost model counts SDPA as the
  kernel the profile's device runs: on this CPU, GPT-2's SDPA takes the math
  path (dropout 0.1 in training), counted op by op with its full S^2 work and
  traffic (``layertime.cost.count.kernel_choice``).

``gpu_check_transformers(device)`` is the same comparison on a CUDA
machine (GPT-2 small, seq 1024, batch 8), for ``benchmarks/gpu_check.py``
(``from transformers_bench import gpu_check_transformers``): independent
shares there are kernel time classified by the op that launched each kernel.

(Not ``benchmarks/transformers.py``: a script's folder is first on
``sys.path``, so that name would hide the ``transformers`` package from
every script in ``benchmarks/``.)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # the profiler logs to stderr otherwise

import torch  # noqa: E402

OVERHEAD_TARGET = 1.10
AGREEMENT_POINTS = 3.0
_SDPA = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product")
_MATMUL = {"aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::bmm"}
_NODE = "autograd::engine::evaluate_function: "
_STEP = "bench::step"
QUICK_CONFIG = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": 512}


# -- the independent view: stock transformers + torch.profiler, no layertime code --------
def _gpt2(config: dict[str, Any] | None) -> torch.nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    # use_cache=False: transformers' Trainer trains so (and so does layertime).
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(**{"use_cache": False, **(config or {})}))


def _ancestors(e: Any) -> list[Any]:
    out = []
    node = e
    while node is not None:
        out.append(node)
        node = node.cpu_parent
    return out


def _forward_class(chain: Sequence[Any]) -> str:
    """attention / matmul / other for a forward op, by the ops above it (``chain``: self first)."""
    names = [str(x.name) for x in chain]
    if any(n.startswith(_SDPA) for n in names):
        return "attention"
    ops = [n for n in names if n.startswith("aten::")]
    if ops and ops[-1] in _MATMUL:  # the outermost aten op
        return "matmul"
    return "other"


def classify_events(
    events: Sequence[Any], device: torch.device, step_name: str = _STEP
) -> dict[str, float]:
    """Seconds per class (attention, matmul, update, other) per ``step_name`` range.

    CPU: each op's self time; CUDA: the kernels it launched itself.  Ranges
    that are not aten ops (module or phase ranges) are classified like any
    event, by the ops above them, so nothing is lost.
    """
    cpu = [e for e in events if str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    steps = [e for e in cpu if e.name == step_name]
    seq_class: dict[tuple[int, int], str] = {}
    for e in sorted(cpu, key=lambda x: x.time_range.start):
        seq = int(getattr(e, "sequence_nr", -1))
        if seq < 0 or str(e.name).startswith(_NODE):
            continue
        chain = [x for x in _ancestors(e) if x.name != step_name]
        if any(str(x.name).startswith(_NODE) for x in chain):
            continue  # ops run inside backward create no forward nodes
        seq_class[(int(e.thread), seq)] = _forward_class(chain)
    out: dict[str, float] = defaultdict(float)
    windows = [(s.time_range.start, s.time_range.end) for s in steps]
    for e in cpu:
        if e.name == step_name or not any(a <= e.time_range.start <= b for a, b in windows):
            continue
        if device.type == "cuda":
            t = sum(k.duration for k in e.kernels if k.name != e.name)
        else:
            t = float(e.self_cpu_time_total)
        if not t:
            continue
        chain = _ancestors(e)
        names = [str(x.name) for x in chain]
        if any(n.startswith("Optimizer.step") for n in names):
            cls = "update"
        else:
            node = next((x for x in chain if str(x.name).startswith(_NODE)), None)
            if node is None:
                cls = _forward_class([x for x in chain if x.name != step_name])
            elif "AccumulateGrad" in str(node.name):
                cls = "other"
            else:
                key = (int(getattr(node, "fwd_thread", 0) or node.thread), int(node.sequence_nr))
                cls = seq_class.get(key, "other")
        out[cls] += t * 1e-6
    n = max(1, len(steps))
    return {k: v / n for k, v in out.items()}


def independent_shares(
    seq_len: int, batch_size: int, device: torch.device, steps: int = 2,
    config: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Shares of the step by op class, from torch.profiler alone (no layertime code)."""
    torch.manual_seed(0)
    model = _gpt2(config).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=gen).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()

    step()
    sync()
    plain = []
    for _ in range(max(2, steps)):
        t0 = time.perf_counter()
        step()
        sync()
        plain.append(time.perf_counter() - t0)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        step()  # the profiler's lazy start lands here, outside the measured ranges
        sync()
        for _ in range(steps):
            with torch.profiler.record_function(_STEP):
                step()
                sync()
    events = prof.events()
    per = classify_events(events, device)
    ranges = [e.time_range for e in events if e.name == _STEP
              and str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    traced_s = statistics.mean((r.end - r.start) * 1e-6 for r in ranges)
    # On CUDA, kernel time over the unprofiled step (as layertime's rows are); on
    # the CPU, self time over the traced step.
    denom = statistics.median(plain) if device.type == "cuda" else traced_s
    busy = sum(per.values())
    return {
        **{f"{k}_share": v / denom for k, v in per.items()},
        **{f"{k}_busy_share": v / busy for k, v in per.items() if busy},
        "plain_ms": 1e3 * statistics.median(plain),
        "traced_ms": 1e3 * traced_s,
    }


class StockStep:
    """A stock transformers GPT-2 training step, profiled by torch.profiler alone."""

    def __init__(self, seq_len: int, batch_size: int, device: torch.device,
                 config: dict[str, Any] | None) -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = _gpt2(config).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9,
                                   weight_decay=5e-4)
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, self.model.config.vocab_size, (batch_size, seq_len),
                                 generator=gen).to(device)

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.model(input_ids=self.ids, labels=self.ids).loss.backward()
        self.opt.step()

    def profiled(self) -> tuple[dict[str, float], float]:
        """One step in a profiler session of its own: (seconds per class, step seconds)."""
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            with torch.profiler.record_function(_STEP):
                self.step()
        events = prof.events()
        (r,) = [e.time_range for e in events if e.name == _STEP]
        return classify_events(events, self.device), (r.end - r.start) * 1e-6


def interleaved(seq_len: int, batch_size: int, steps: int, warmup: int,
                config: dict[str, Any] | None) -> dict[str, Any]:
    """layertime's plain and traced steps and the stock profiled step, taken in turn.

    On a shared CPU the load changes from minute to minute; taking the three
    kinds of step in rotation puts them under the same conditions.  The
    traced steps are ``layertime.profile``'s own (``runner.trace_step``
    in a ``TraceSession``, charged by ``runner._charge``), aggregated into a
    Run as ``runner.measure`` does; the session's raw events are kept for
    the same-step classification.
    """
    import datetime as _dt

    from layertime.kinds import KindObserver
    from layertime.measure.aggregate import aggregate, shared_notes
    from layertime.measure.environment import describe
    from layertime.measure.prepare import prepare
    from layertime.measure.runner import _charge, _plain_step, trace_step
    from layertime.measure.tracer import TraceSession
    from layertime.modules import ModuleTable, training_mode
    from layertime.results.run import Run
    from layertime.workload import Workload, WorkloadSpec, check_input

    p = prepare(WorkloadSpec.create(gpt2_ref(config), seq_len=seq_len, batch_size=batch_size,
                                    device="cpu"))
    with KindObserver(p.model) as watched:
        shape = check_input(p.model, p.workload, p.device, p.label)
    table = ModuleTable(p.model, watched.kinds())
    stock = StockStep(seq_len, batch_size, p.device, config)
    plain: list[float] = []
    charges: list[Any] = []
    same_step: list[dict[str, float]] = []
    indep: list[dict[str, float]] = []
    indep_steps: list[float] = []
    with training_mode(p.model):
        work = Workload(p.model, p.workload, p.device, shape)
        for _ in range(warmup):
            _plain_step(work)
            stock.step()
        idle = TraceSession(table, p.device)
        idle.start()
        idle.abort()
        stock.profiled()  # the stock profiler's own first start
        for i in range(steps):
            for turn in range(3):
                which = (i + turn) % 3
                if which == 0:
                    plain.append(_plain_step(work)[0])
                elif which == 1:
                    session = TraceSession(table, p.device)
                    wall, _ = trace_step(work, session)
                    charges.append(_charge(work, session, [wall], None)[0])
                    per = classify_events(session.profiler.events(), p.device,
                                          "layertime::step")
                    same_step.append({**per, "_step": wall})
                else:
                    per, step_s = stock.profiled()
                    indep.append({**per, "_step": step_s})
                    indep_steps.append(step_s)
    layers, phases, spread, samples = aggregate(table, charges)
    run = Run(
        model=p.label, device="cpu", batch_size=batch_size, input_shape=(seq_len,),
        dtype="float32", optimizer="sgd", steps=len(charges), warmup_steps=warmup,
        step_samples_s=tuple(plain), profiled_step_samples_s=samples, layers=layers,
        phases=phases, environment=describe(p.device), timing="cpu-self-time",
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        phase_spread_s=spread, seq_len=seq_len, notes=shared_notes(table),
    )

    # One Run per traced step, for per-step shares: on a shared machine one step
    # slowed by another job would otherwise weigh on every share; medians over
    # steps do not let it.
    per_step = []
    for c in charges:
        ls, ph, sp, sm = aggregate(table, [c])
        per_step.append(replace(run, layers=ls, phases=ph, phase_spread_s=sp,
                                profiled_step_samples_s=sm, steps=1))

    def shares(rows: list[dict[str, float]], k: str) -> list[float]:
        return [r.get(k, 0.0) / r["_step"] for r in rows]

    classes = ("attention", "matmul", "update", "other")
    return {
        "run": run,
        "per_step": per_step,
        "indep": {f"{k}_share": shares(indep, k) for k in classes}
        | {"steps_ms": [1e3 * x for x in indep_steps]},
        "same_step": {f"{k}_share": shares(same_step, k) for k in classes},
    }


# -- layertime's view ---------------------------------------------------------------
def gpt2_ref(config: dict[str, Any] | None, *extra: str) -> Any:
    """``hf:gpt2`` with ``config`` (and ``extra`` KEY=VALUE) as its config overrides."""
    from layertime.models import ModelRef

    return ModelRef("hf:gpt2", (*(f"{k}={v}" for k, v in (config or {}).items()), *extra))


def layertime_run(seq_len: int, batch_size: int, device: str, steps: int, warmup: int,
                  config: dict[str, Any] | None) -> Any:
    from layertime.measure.runner import profile

    return profile(gpt2_ref(config), seq_len=seq_len, batch_size=batch_size, device=device,
                   steps=steps, warmup_steps=warmup)


def kind_share(run: Any, kind: str, busy: bool = False) -> float:
    """Forward+backward time of a kind's rows over the profiled step (or the attributed time)."""
    t = sum(r.forward_s + r.backward_s for r in run.layers if r.kind == kind)
    denom = run.phases.total_s - (run.phases.unattributed_s if busy else 0.0)
    return t / denom if denom > 0 else math.nan


def role_shares(run: Any) -> dict[str, float]:
    return {k: v.share for k, v in run.roles().items()}


# -- the cost model's prediction ------------------------------------------------------------
def log_crossing(series: Sequence[tuple[int, float]]) -> float | None:
    from layertime.sweep import log_crossing as lc

    found = lc(sorted(series))
    return found[0] if found else None


def predicted_crossover(seq_lens: Sequence[int], device_profile: Any,
                        config: dict[str, Any] | None) -> dict[str, Any]:
    """Attention minus MLP, predicted (roofline) and by FLOPs, per sequence length."""
    from layertime.cost import estimate, predict, target_of_profile

    rows = []
    for s in seq_lens:
        extra = (f"n_positions={s}",) if s > 1024 and "n_positions" not in (config or {}) else ()
        cost = predict(estimate(gpt2_ref(config, *extra), seq_len=s, batch_size=1,
                                kernel_target=target_of_profile(device_profile)),
                       device_profile)
        roles = cost.by_role()
        att, mlp = roles["attention"], roles["mlp"]
        rows.append({"seq_len": s, "attention_pred_s": att.predicted_s,
                     "mlp_pred_s": mlp.predicted_s, "attention_flops": att.flops.total,
                     "mlp_flops": mlp.flops.total,
                     "attention_pred_share": att.predicted_share,
                     "mlp_pred_share": mlp.predicted_share})
    pred = log_crossing([(r["seq_len"], (r["attention_pred_s"] or 0) - (r["mlp_pred_s"] or 0))
                         for r in rows])
    flops = log_crossing([(r["seq_len"], r["attention_flops"] - r["mlp_flops"]) for r in rows])
    return {"rows": rows, "predicted_crossover": pred, "flops_crossover": flops}


# -- for benchmarks/gpu_check.py ---------------------------------------------------------------
def gpu_check_transformers(
    device: str = "cuda", seq_len: int = 1024, batch_size: int = 8, steps: int = 5,
    warmup: int = 2, config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """GPT-2 small on a CUDA device: layertime's shares against torch.profiler's kernel classes.

    Returns overhead, layertime's attention-core and matmul shares (of the
    profiled step and of the attributed busy time), its role shares, and the
    independent shares: kernel time per class (``attention``: kernels
    launched under ``aten::scaled_dot_product_attention`` or by its backward
    node; ``matmul``: under ``aten::linear``/``addmm``/``mm``/``matmul`` or
    their backward nodes) over the unprofiled step and over the busy time;
    plus the differences in points.  Roughly 10 s of GPU time on an H100-class device.
    """
    dev = torch.device(device)
    run = layertime_run(seq_len, batch_size, device, steps, warmup, config)
    indep = independent_shares(seq_len, batch_size, dev, steps=steps, config=config)
    lt = {
        "core_share": kind_share(run, "attention"),
        "matmul_share": kind_share(run, "linear"),
        "core_busy_share": kind_share(run, "attention", busy=True),
        "matmul_busy_share": kind_share(run, "linear", busy=True),
    }
    return {
        "model": "gpt2 (hf:gpt2)",
        "seq_len": seq_len,
        "batch_size": batch_size,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "overhead": run.overhead_ratio,
        "step_ms": 1e3 * run.step_s,
        "layertime": lt,
        "roles": role_shares(run),
        "headline": run.headline(),
        "run": run,  # the Run itself, for gpu_check's predictions (not JSON)
        "independent": indep,
        "core_diff_points": 100 * (lt["core_share"] - indep.get("attention_share", 0.0)),
        "matmul_diff_points": 100 * (lt["matmul_share"] - indep.get("matmul_share", 0.0)),
        "core_busy_diff_points": 100 * (lt["core_busy_share"]
                                        - indep.get("attention_busy_share", 0.0)),
        "matmul_busy_diff_points": 100 * (lt["matmul_busy_share"]
                                          - indep.get("matmul_busy_share", 0.0)),
    }


# -- the report ------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:5.1f}%"


def _span(xs: Sequence[float]) -> str:
    return f"[{100 * min(xs):.1f}-{100 * max(xs):.1f}]" if xs else ""


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    ap.add_argument("--seq-lens", default="128,512,1024")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5,
                    help="rounds of (plain, traced, stock profiled) steps, rotated (5)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a 2-layer GPT-2 at seq 32 and 64")
    ap.add_argument("--no-predict", action="store_true", help="skip calibration and prediction")
    args = ap.parse_args(argv)
    config = dict(QUICK_CONFIG) if args.quick else None
    seqs = [32, 64] if args.quick else [int(s) for s in args.seq_lens.split(",")]
    if args.quick:
        args.steps, args.warmup = 1, 1
    device = torch.device("cpu")
    print(f"layertime transformers benchmark: GPT-2 {'(2-layer, quick) ' if args.quick else 'small '}"
          f"batch {args.batch_size}, seq {', '.join(map(str, seqs))}, cpu, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    results = []
    for s in seqs:
        t0 = time.perf_counter()
        got = interleaved(s, args.batch_size, args.steps, args.warmup, config)
        run, indep, same, steps = got["run"], got["indep"], got["same_step"], got["per_step"]
        med = statistics.median
        roles = {k: med([role_shares(r).get(k, 0.0) for r in steps])
                 for k in role_shares(run)}
        res = {"seq": s, "run": run, "roles": roles, "wall_s": time.perf_counter() - t0}
        results.append(res)
        lt = {"attention": [kind_share(r, "attention") for r in steps],
              "matmul": [kind_share(r, "linear") for r in steps]}
        ov = run.overhead_ratio
        print(f"\n== seq {s}: step {1e3 * run.step_s:,.1f} ms (median of "
              f"{len(run.step_samples_s)} plain), {res['wall_s']:.0f} s for this length")
        print(f"  {'overhead':34s} x{ov:.3f}   target <= {OVERHEAD_TARGET:.2f}  "
              f"{'PASS' if ov <= OVERHEAD_TARGET else 'MISS'}   "
              f"(traced {', '.join(f'{1e3 * x:,.0f}' for x in run.profiled_step_samples_s)}"
              f" ms; plain {', '.join(f'{1e3 * x:,.0f}' for x in run.step_samples_s)} ms; "
              f"stock {', '.join(f'{x:,.0f}' for x in indep['steps_ms'])} ms)")
        print(f"  shares: medians over the {len(steps)} steps of each kind "
              "(range in brackets)")
        for label, key in (("attention core share (fwd+bwd)", "attention"),
                           ("matmul share (fwd+bwd)", "matmul")):
            a, b, c = med(lt[key]), med(indep[f"{key}_share"]), med(same[f"{key}_share"])
            d = 100 * (a - b)
            print(f"  {label:34s} layertime {_pct(a)} {_span(lt[key])}  torch.profiler "
                  f"{_pct(b)} {_span(indep[f'{key}_share'])}  diff {d:+.1f} pt  "
                  f"target +-{AGREEMENT_POINTS:.0f}  {'PASS' if abs(d) <= AGREEMENT_POINTS else 'MISS'}")
            print(f"  {'  same traced steps, op classes':34s} {_pct(c)} {_span(same[f'{key}_share'])}"
                  f"  (classification alone: {100 * (a - c):+.1f} pt)")
        print("  roles (share of step, median):  " + ", ".join(
            f"{k} {_pct(v).strip()}" for k, v in roles.items()))
        print(f"  headline (all traced steps): {run.headline()}")
    measured = log_crossing([(r["seq"], r["roles"].get("attention", 0.0)
                              - r["roles"].get("mlp", 0.0)) for r in results])
    diffs = ", ".join(
        f"seq {r['seq']}: {100 * (r['roles'].get('attention', 0) - r['roles'].get('mlp', 0)):+.1f} pt"
        for r in results)
    print("\n== crossover: where attention's share of the step overtakes the MLP's")
    print(f"  measured (attention - MLP: {diffs}): "
          + (f"seq ~{measured:.0f} (interpolated in log2 seq)" if measured else
             f"not within seq {seqs[0]}..{seqs[-1]}"))
    if not args.no_predict:
        from layertime.cost.calibrate import to_profile
        from layertime.measure.calibrate import calibrate

        t0 = time.perf_counter()
        cal = calibrate(device, matmul_size=256 if args.quick else 1024,
                        memory_mb=32 if args.quick else 128, repeats=3)
        prof = to_profile(cal, "local-cpu (this benchmark)")
        pseqs = [32, 64, 128, 256] if args.quick else [128, 256, 512, 1024, 2048, 4096, 8192]
        pred = predicted_crossover(pseqs, prof, config)
        print(f"  predicted (roofline on this CPU, calibrated here in "
              f"{time.perf_counter() - t0:.0f} s): "
              + (f"seq ~{pred['predicted_crossover']:.0f}" if pred["predicted_crossover"]
                 else f"not within seq {pseqs[0]}..{pseqs[-1]}")
              + "; by FLOPs alone: "
              + (f"seq ~{pred['flops_crossover']:.0f}" if pred["flops_crossover"]
                 else f"not within seq {pseqs[0]}..{pseqs[-1]}"))
        for r in pred["rows"]:
            print(f"    seq {r['seq_len']:5d}: predicted attention {_pct(r['attention_pred_share'])}"
                  f" MLP {_pct(r['mlp_pred_share'])} of the step; FLOPs attention "
                  f"{r['attention_flops'] / 1e9:,.1f} G, MLP {r['mlp_flops'] / 1e9:,.1f} G")
    return 0


if __name__ == "__main__":
    sys.exit(main())
