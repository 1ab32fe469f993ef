"""Where tracing's own cost goes: per module call, and per traced step after it ends.

Run from the repository root::

    python benchmarks/hook_cost.py            # ~1 min on 2 cores
    python benchmarks/hook_cost.py --quick    # smoke run

A benchmark, not a test: it prints measurements side by side, from one run.

1. **Per module call.**  A chain of ``--modules`` ``nn.Identity`` modules
   (forward only, no grad) is called with each way of opening a range around
   every module, with the profiler off and on; the best of ``--reps`` calls of
   the chain, divided by the number of modules, is the cost of one module
   call.  The ways:

   * no hooks (the floor: ``Module.__call__`` alone);
   * empty pre- and post-hooks (the cost of any hook at all);
   * the ``record_function`` ops (``torch.ops.profiler._record_function_enter_new``
     and ``_exit``), layertime's ranges before this benchmark existed;
   * torch's lightweight range (``torch._C._profiler._RecordFunctionFast``, what
     Dynamo uses), a new one per call: layertime's ranges now;
   * the lightweight range, one per module entered again at each call (no
     allocation per call);
   * one global pair of module hooks (``register_module_forward_pre_hook``) with a
     lookup of the module's label, instead of a pair per module.

2. **After the step.**  One traced training step of ``--model`` (batch 1, small
   input); the time to turn the stopped profile into layertime's events, read
   through torch's ``FunctionEvent`` tree (``prof.events()``, as before) and
   straight from Kineto's results (``events.from_kineto``, as now), best of
   ``--reps`` reads of the same profile, and the attribution itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402
import torch.nn.modules.module as module_hooks  # noqa: E402
from torch import nn  # noqa: E402

from layertime.measure.attribute import attribute_step, split_steps  # noqa: E402
from layertime.measure.events import from_kineto, from_profiler  # noqa: E402
from layertime.measure.prepare import prepare  # noqa: E402
from layertime.measure.runner import trace_step  # noqa: E402
from layertime.measure.tracer import TraceSession, _RangeHooks  # noqa: E402
from layertime.modules import ModuleTable, training_mode  # noqa: E402
from layertime.workload import Workload, WorkloadSpec, check_input  # noqa: E402

FAST: Any = getattr(torch._C._profiler, "_RecordFunctionFast", None)
#: Undoes one way of opening ranges.
Remove = Callable[[], None]


def per_module(model: nn.Sequential, make: Callable[[str], tuple[Any, Any]]) -> Remove:
    handles = []
    for i, m in enumerate(model):
        pre, post = make(f"layertime::module::{i}")
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post, always_call=True))
    return lambda: [h.remove() for h in handles] and None


def close_innermost(stack: list[Any]) -> None:
    if stack:
        stack.pop().__exit__(None, None, None)


def empty(model: nn.Sequential) -> Remove:
    def make(_label: str) -> tuple[Any, Any]:
        return (lambda _m, _a: None), (lambda _m, _a, _o: None)

    return per_module(model, make)


def layertime_ranges(fast: bool) -> Callable[[nn.Sequential], Remove]:
    """layertime's own hooks (``tracer._RangeHooks``): the record_function ops
    (``fast=False``, as before) or the lightweight range, new per call (now)."""

    def install(model: nn.Sequential) -> Remove:
        hooks = _RangeHooks(ModuleTable(model), fast=fast)
        hooks.install()
        return hooks.remove

    return install


def fast_reused(model: nn.Sequential) -> Remove:
    stack: list[Any] = []  # one thread here

    def make(label: str) -> tuple[Any, Any]:
        mine = FAST(label)

        def pre(_m: nn.Module, _a: Any) -> None:
            try:
                mine.__enter__()
                rf = mine
            except RuntimeError:  # already open: the module called inside itself
                rf = FAST(label)
                rf.__enter__()
            stack.append(rf)

        return pre, lambda _m, _a, _o: close_innermost(stack)

    return per_module(model, make)


def global_fast(model: nn.Sequential) -> Remove:
    labels = {id(m): f"layertime::module::{i}" for i, m in enumerate(model)}
    stack: list[Any] = []

    def pre(m: nn.Module, _a: Any) -> None:
        label = labels.get(id(m))
        if label is not None:
            rf = FAST(label)
            rf.__enter__()
            stack.append(rf)

    def post(m: nn.Module, _a: Any, _o: Any) -> None:
        if id(m) in labels:
            close_innermost(stack)

    handles = [module_hooks.register_module_forward_pre_hook(pre),
               module_hooks.register_module_forward_hook(post, always_call=True)]
    return lambda: [h.remove() for h in handles] and None


WAYS: dict[str, Callable[[nn.Sequential], Remove] | None] = {
    "no hooks": None,
    "empty hooks": empty,
    "record_function ops (before)": layertime_ranges(fast=False),
    "lightweight range, new per call (now)": layertime_ranges(fast=True),
    "lightweight range, one per module": fast_reused,
    "global hooks + lightweight range": global_fast,
}
NEEDS_FAST = ("lightweight range, new per call (now)", "lightweight range, one per module",
              "global hooks + lightweight range")


def best_us_per_call(model: nn.Sequential, x: torch.Tensor, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - t)
    return best / len(model) * 1e6


def module_calls(n: int, reps: int) -> list[str]:
    model = nn.Sequential(*[nn.Identity() for _ in range(n)])
    x = torch.zeros(1)
    rows = []
    with torch.no_grad():
        for label, way in WAYS.items():
            if FAST is None and label in NEEDS_FAST:
                rows.append((label, float("nan"), float("nan")))
                continue
            remove = way(model) if way is not None else (lambda: None)
            try:
                off = best_us_per_call(model, x, reps)
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                with prof:
                    on = best_us_per_call(model, x, max(3, reps // 4))
            finally:
                remove()
            rows.append((label, off, on))
    floor = rows[0][2]
    out = [f"1. per module call, best of {reps} calls of a chain of {n} nn.Identity "
           "(µs; + = beyond no hooks, profiler on)",
           f"   {'ranges':<40} {'profiler off':>12} {'profiler on':>12} {'+ on':>8}"]
    for label, off, on in rows:
        out.append(f"   {label:<40} {off:12.2f} {on:12.2f} {on - floor:+8.2f}")
    now = dict((r[0], r[2]) for r in rows)
    before, after = now["record_function ops (before)"], now["lightweight range, new per call (now)"]
    out.append(f"   ranges now cost {after - floor:.2f} µs a module call beyond none, before "
               f"{before - floor:.2f} µs: x{(after - floor) / (before - floor):.2f}")
    return out


def after_the_step(model_name: str, reps: int) -> list[str]:
    shape: dict[str, int] = (
        {"seq_len": 128} if model_name.startswith("hf:")
        else {} if model_name.startswith("vit") else {"image_size": 64}  # ViTs take 224 only
    )
    p = prepare(WorkloadSpec.create(model_name, batch_size=1, device="cpu", **shape))
    out_shape = check_input(p.model, p.workload, p.device, p.label)
    table = ModuleTable(p.model)
    with training_mode(p.model):
        work = Workload(p.model, p.workload, p.device, out_shape)
        work.step()
        session = TraceSession(table, p.device)
        step_s, _ = trace_step(work, session)
    prof = session.profiler
    results = prof.profiler.kineto_results

    def best(fn: Callable[[], Any]) -> float:
        b = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            b = min(b, time.perf_counter() - t0)
        return b

    def via_tree() -> Any:
        prof.profiler._function_events = None  # read afresh, as a new profile would be
        prof.profiler._needs_processing = True
        return from_profiler(prof.events())

    tree_s = best(via_tree)
    direct_s = best(lambda: from_kineto(results))
    events = from_kineto(results)
    [(step, members)] = split_steps(events)
    attr_s = best(lambda: attribute_step(step, members, device_time=False))
    return [
        f"2. after one traced step of {p.label} (batch 1, {p.workload.resolved_input.describe()}; "
        f"step {step_s * 1e3:.0f} ms, {len(events)} events), best of {reps}:",
        f"   events via torch's FunctionEvent tree (before)  {tree_s * 1e3:8.1f} ms",
        f"   events straight from Kineto (now)               {direct_s * 1e3:8.1f} ms"
        f"   x{direct_s / tree_s:.2f}",
        f"   attribution of those events                     {attr_s * 1e3:8.1f} ms",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Where tracing's own cost goes.")
    ap.add_argument("--modules", type=int, default=2000, help="modules in the chain (2000)")
    ap.add_argument("--reps", type=int, default=20, help="repetitions; the best counts (20)")
    ap.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16", "hf:gpt2"],
                    help="models for part 2 (resnet50 vit_b_16 hf:gpt2)")
    ap.add_argument("--quick", action="store_true", help="200 modules, 3 reps, resnet18")
    args = ap.parse_args(argv)
    if args.quick:
        args.modules, args.reps, args.models = 200, 3, ["resnet18"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"lightweight range {'available' if FAST is not None else 'absent'}")
    print("\n".join(module_calls(args.modules, args.reps)))
    for name in args.models:
        print("\n".join(after_the_step(name, max(3, args.reps // 4))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
