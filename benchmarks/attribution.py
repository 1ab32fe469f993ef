"""Benchmark layertime's attribution on the CPU: overhead, coverage, agreement, repeatability.

Run from the repository root::

    python benchmarks/attribution.py          # alexnet b64, resnet50 b16, vit_b_16 b8,
                                              # GPT-2 small b1 at sequence 512; ~5 min
    python benchmarks/attribution.py --quick  # smoke run: batch 2 at 64x64 (sequence 32)
    python benchmarks/attribution.py --models vgg11 --batch-sizes 8 --steps 3 --repeats 2
    python benchmarks/attribution.py --fixed-cost 10   # also: tracing's fixed per-step cost

A benchmark, not a test: it prints each measurement beside its target with
PASS or MISS and never asserts.  The report goes to stdout, progress to
stderr.  Wall-clock timings on a shared CPU are noisy, so every number comes
with the range behind it.

What runs, per model
--------------------
The model is built once as ``layertime.profile`` builds it (random init,
seeded; images for vision models, ``--seq-len`` token ids for ``hf:``
models) and one :class:`layertime.workload.Workload` (the model, SGD, one
synthetic batch) serves every step, so all steps train the same network on
the same batch.  After warm-up (``--warmup`` plain steps, one profiled and
one stock-profiled step, none kept) come ``--repeats`` rounds; each round
is one *repeated profile* and runs ``--steps`` samples of three steps:

* a **plain** step: ``layertime.measure.runner._plain_step``, i.e.
  ``Workload.step()`` timed by ``perf_counter``: no profiler, no
  hooks, no ranges;
* a **profiled** step: ``layertime.measure.runner._traced_step``, the very
  step ``layertime.profile`` takes (module hooks + ``torch.profiler`` +
  attribution), unchanged -- the benchmark only swaps in a ``TraceSession``
  subclass that keeps the events list ``stop()`` builds anyway;
* a **stock-profiled** (independent) step, below: the stock profiler alone.

The order of a sample's three steps cycles through all six permutations, so
that a drift in the machine's load hits all three alike.  A round's profiled
steps are aggregated into a :class:`layertime.Run` with
``layertime.measure.aggregate.aggregate``, as ``runner.measure`` does; all
rounds pooled make one more Run.  ``gc.collect()`` runs before every step,
outside its timing.  ``--budget-min`` (default 12) caps the whole run:
each model gets an equal part of what is left, and once the next sample would
overrun it no more samples are taken (the first round always completes);
the report says so when that happens.

The measurements
----------------
1. **Overhead** = median profiled step / median plain step over all samples
   (``Run.overhead_ratio``'s definition on the pooled Run; the profiled
   step is the ``layertime::step`` range, which is what the rows add up to).
   Beside it, the **stock profiler's own overhead** on the same samples
   (stock-profiled / plain), and **layertime - stock**: per sample, the
   profiled step's process CPU time less the stock step's, over the plain
   step's, then the median (target <= +0.02: layertime's module ranges and
   hooks cost at most 2% of the step beyond the profiler itself).  And the
   **post-processing** time: from the end of the profiled step to its
   attributed result (profiler stop, events read, attribution), which the
   user waits for, over the plain step (target <= 20%).
   Details: every per-sample ratio, the best-of ratio (min / min, the least
   disturbed estimate on a loaded machine), the same ratios in process CPU
   time (see below), and the profiled step's
   wall time from profiler start to events parsed, which the step range
   leaves out but a user waits for.
2. **Coverage** = the sum of all attributed rows (layers, loss, zero_grad;
   update split over layers), i.e. the profiled step less its
   ``unattributed`` row, over the unprofiled step: median over profiled
   steps / median plain step, the estimator of ``Run.overhead_ratio``; the
   median of per-pair ratios is printed beside it.  Coverage is the
   overhead ratio times (1 - unattributed share), so noise in the one is
   noise in the other.  The unattributed share of the profiled step is
   given too.
3. **Agreement** with an independent measurement.  The independent step is
   ``Workload.step()`` under a stock ``torch.profiler.profile``
   (CPU activity; no shapes, stacks or memory): no layertime hooks and no
   layertime ranges; one ``bench::step`` range around it marks the step's
   extent in the profiler's clock.  Every event under it (all on the step's
   thread: CPU autograd runs on the caller's thread) contributes its *self*
   CPU time (``self_cpu_time_total``: duration minus children) to a class
   decided by the name of its *outermost* recognised ancestor, itself
   included -- so what an op calls inside it stays with it:

   * conv: a name containing ``conv`` (not ``convert``): ``aten::conv2d``,
     ``aten::convolution``, ``aten::_convolution``,
     ``aten::mkldnn_convolution``, ``aten::convolution_backward``,
     ``ConvolutionBackward0`` with its ``autograd::engine::evaluate_function:``
     wrapper, the slow/thnn/depthwise variants;
   * linear: ``aten::linear``, ``aten::addmm``, ``aten::mm``,
     ``aten::matmul``, ``aten::_addmm_activation``, ``aten::mkldnn_linear``
     and the nodes ``AddmmBackward0``, ``MmBackward0``, ``LinearBackward0``,
     ``MkldnnLinearBackward0``, ``TBackward0`` (``aten::linear`` is ``t`` +
     ``addmm``; the transpose's backward is a view, microseconds);
   * attention: a name containing ``scaled_dot_product``, ``multi_head_attention``
     or ``_attention`` (SDPA and its backends with their backward nodes).  Where
     the model has layertime's attention kind, conv and linear are compared as
     before, but linear alone only for information: an attention module that
     computes its projections itself (``nn.MultiheadAttention`` in ViT) has them
     charged to attention by layertime and to linear by op name, so *linear +
     attention* is the compared share (update apportioned by the parameter
     elements of linear and attention modules).  Where the projections are linear
     modules (GPT-2's ``Conv1D``), linear alone is compared, and linear +
     attention is shown for information: layertime's attention also holds the
     module's reshapes and copies, which op names leave in "other";
   * update: ``Optimizer.step#...`` (torch's own range) and all under it;
     zero_grad: ``Optimizer.zero_grad#...``;
   * AccumulateGrad nodes: layertime charges each to the layer whose
     gradient it stores, but by name it has no layer, so it stays out of
     conv/linear here; its share is printed (tiny with
     ``zero_grad(set_to_none=True)``, where the gradient is stored, not added);
   * everything else (ReLU, norm, pooling, loss, view ops, the step's Python
     gaps) is "other".

   Comparability: on the CPU a conv's bias is added inside the convolution
   op, so both sides count it; ReLU, BatchNorm and pooling are separate ops
   *and* separate modules in torchvision models, so neither side counts them
   as conv.  layertime's conv range also holds the Python of
   ``Conv2d.forward`` around ``aten::conv2d`` (microseconds per call),
   which the independent side sees as an unclassified gap.

   Shares are each side's time over its own profiled step, taken per step
   and then the median over steps on each side (robust to a step slowed by
   a neighbour).  layertime's per-step share is ``Run.by_kind()`` of a Run
   of that one step; the pooled ``Run.by_kind()`` is printed beside it.
   Both forms are compared with the 3-point target:

   * **fwd+bwd**: forward and backward only (layertime's
     ``KindTotal.forward_s + backward_s``; the independent conv/linear ops);
   * **total**: with the optimizer's share, which the independent side
     apportions to conv / linear by their modules' trainable parameter
     elements (counted from ``nn.Conv*`` / ``nn.Linear`` directly), the
     rule layertime uses to split its ``update`` row.  This is the share
     layertime reports.

   Because the two sides necessarily run different steps, their difference
   mixes any method difference with step-to-step noise.  The *same events*
   column separates the two: the op-name classifier applied to the very
   events of layertime's profiled steps (layertime's ranges ignored) --
   the method difference alone, no noise.
4. **Repeatability**: ``Run.by_kind()[kind].share`` of each round's Run, for
   conv or linear, whichever is larger; max - min over the rounds, in
   percentage points.

``--fixed-cost N`` adds a diagnostic: tracing's cost that does not grow with
the batch (per-op profiler records, per-module hooks, profiler start/stop),
measured at batch 1 on small images over N interleaved rounds of plain /
profiled / profiler-only / hooks-only steps, in milliseconds.

Targets: overhead <= 1.05 (alexnet), <= 1.15 (resnet50; others 1.15 or
``--overhead-target``); layertime - stock <= +0.02 in process CPU time;
post-processing <= 20% of the step; coverage within 0.95..1.05; conv and
linear shares each within 3 points of the independent measurement; the
larger of the conv and linear shares spread <= 3 points over the profiles.

OpenMP on a shared machine
--------------------------
Unless ``OMP_WAIT_POLICY`` is already set or ``--omp-default`` is given, the
script sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads, for plain and
profiled steps alike.  With OpenMP's default, idle worker threads spin; on a
CPU that other jobs also use, a descheduled thread then leaves its partner
spinning and a 2-thread step can take 3-10x longer at random (seen here: the
same resnet50 step took 1.2 s and 8.4 s minutes apart), which swamps a 5%
overhead.  Passive waiting keeps process CPU time far steadier than wall time; the
report gives that CPU-time ratio beside the wall-clock one, as a
load-independent view of the overhead (it counts all threads' work, so it
includes any profiler thread, but not time spent waiting for a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The stock profiler logs at every start/stop unless told not to.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")
# Idle OpenMP threads sleep instead of spinning (see the docstring); must be
# set before torch loads.  --omp-default (or OMP_WAIT_POLICY set) leaves it.
if "--omp-default" not in sys.argv[1:]:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import layertime.measure.runner as runner
from layertime.errors import LayertimeError  # noqa: E402
from layertime.kinds import KindObserver  # noqa: E402
from layertime.measure.aggregate import aggregate  # noqa: E402
from layertime.measure.attribute import StepCharges  # noqa: E402
from layertime.measure.environment import describe  # noqa: E402
from layertime.measure.events import STEP, OpEvent  # noqa: E402
from layertime.measure.runner import _plain_step, _traced_step  # noqa: E402
from layertime.measure.tracer import TraceSession, module_ranges  # noqa: E402
from layertime.measure.prepare import prepare  # noqa: E402
from layertime.modules import ModuleTable, training_mode  # noqa: E402
from layertime.results.environment import Environment  # noqa: E402
from layertime.results.run import Run  # noqa: E402
from layertime.workload import Workload, WorkloadSpec, check_input  # noqa: E402

OVERHEAD_TARGETS = {"alexnet": 1.05, "resnet50": 1.15}
DEFAULT_OVERHEAD_TARGET = 1.15
COVERAGE_RANGE = (0.95, 1.05)
AGREEMENT_POINTS = 3.0
#: layertime's overhead over the stock profiler's own, in process CPU time
STOCK_MARGIN = 0.02
#: the time from the end of a traced step to its attributed result, over the step
POST_SHARE = 0.20
SPREAD_POINTS = 3.0

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Classifying ops by their own names (the independent side).

BENCH_STEP = "bench::step"
EVAL_PREFIX = "autograd::engine::evaluate_function: "
_CONV = re.compile(r"conv(?!ert)", re.IGNORECASE)
_LINEAR = re.compile(
    r"^(aten::(linear|addmm|mm|matmul|_addmm_activation|mkldnn_linear)"
    r"|(Addmm|Mm|Linear|MkldnnLinear|T)Backward\d*)$"
)
#: Attention's own ops (SDPA and its backends, the fused multi-head kernel): what
#: layertime's attention kind holds beside the projections.
_ATTENTION = re.compile(r"scaled_dot_product|multi_head_attention|_attention", re.IGNORECASE)
CLASSES = ("conv", "linear", "attention", "update", "zero_grad", "accumulate_grad", "other")


def classify(name: str) -> str | None:
    """The class an op's own name puts it in, or None (it then inherits its parent's)."""
    if name.startswith("Optimizer.step#"):
        return "update"
    if name.startswith("Optimizer.zero_grad#"):
        return "zero_grad"
    n = name[len(EVAL_PREFIX) :] if name.startswith(EVAL_PREFIX) else name
    if "AccumulateGrad" in n:
        return "accumulate_grad"
    if _ATTENTION.search(n):
        return "attention"
    if _CONV.search(n):
        return "conv"
    if _LINEAR.match(n):
        return "linear"
    return None


@dataclass
class Classified:
    """Self CPU time of one step's ops, by class (microseconds)."""

    step_us: float
    by_class: dict[str, float] = field(default_factory=dict)
    #: self time under ``evaluate_function`` nodes (the backward pass)
    backward_us: float = 0.0

    def share(self, cls: str) -> float:
        return self.by_class.get(cls, 0.0) / self.step_us if self.step_us else 0.0


def classify_tree(
    root: Any,
    name: Callable[[Any], str],
    kids: Callable[[Any], Iterable[Any]],
    self_us: Callable[[Any], float],
    step_us: float,
) -> Classified:
    """Walk one step's event tree; the outermost recognised name decides an event's class."""
    out = Classified(step_us=step_us, by_class={c: 0.0 for c in CLASSES})
    stack = [(root, "other", False)]
    while stack:
        e, inherited, in_bwd = stack.pop()
        n = name(e)
        label = inherited if inherited != "other" else (classify(n) or "other")
        in_bwd = in_bwd or n.startswith(EVAL_PREFIX)
        t = self_us(e)
        out.by_class[label] += t
        if in_bwd:
            out.backward_us += t
        for k in kids(e):
            stack.append((k, label, in_bwd))
    return out


def classify_function_events(events: Sequence[Any], root_name: str) -> Classified:
    """Classify ``torch.profiler`` FunctionEvents under the one range named ``root_name``."""
    roots = [e for e in events if e.name == root_name]
    if len(roots) != 1:
        raise RuntimeError(f"expected one {root_name} range, found {len(roots)}")
    root = roots[0]
    return classify_tree(
        root,
        name=lambda e: e.name,
        kids=lambda e: e.cpu_children,
        self_us=lambda e: float(e.self_cpu_time_total),
        step_us=float(root.time_range.end - root.time_range.start),
    )


def classify_op_events(events: Sequence[OpEvent]) -> Classified:
    """The same classification of a layertime-traced step's events (its ranges are ignored:
    their own self time is unclassified, their contents are classified by op name)."""
    children: dict[int | None, list[OpEvent]] = {}
    for e in events:
        children.setdefault(e.parent, []).append(e)
    roots = [e for e in events if e.name == STEP]
    if len(roots) != 1:
        raise RuntimeError(f"expected one {STEP} range, found {len(roots)}")
    root = roots[0]

    def self_us(e: OpEvent) -> float:
        kids = [k for k in children.get(e.id, ()) if k.thread == e.thread]
        return max(0.0, e.duration_us - sum(k.duration_us for k in kids))

    return classify_tree(
        root,
        name=lambda e: e.name,
        kids=lambda e: [k for k in children.get(e.id, ()) if k.thread == root.thread],
        self_us=self_us,
        step_us=root.duration_us,
    )


def param_elements(model: nn.Module) -> dict[str, int]:
    """Trainable parameter elements of conv, linear and attention modules (by class;
    an attention module's own, such as ``nn.MultiheadAttention``'s in-projection) and
    in all."""
    counts = {"conv": 0, "linear": 0, "attention": 0, "total": 0}
    seen: set[int] = set()
    for m in model.modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in own)
        n = sum(p.numel() for p in own)
        counts["total"] += n
        if isinstance(m, nn.modules.conv._ConvNd):
            counts["conv"] += n
        elif isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":  # transformers' GPT-2
            counts["linear"] += n
        elif "Attention" in type(m).__name__:
            counts["attention"] += n
    return counts


def name_shares(c: Classified, elements: dict[str, int]) -> dict[str, float]:
    """Shares of a step by op name, forward+backward and total (with the update apportioned
    by parameter elements), for conv, linear, and linear with attention."""
    total = elements["total"] or 1
    out = {}
    for kind in ("conv", "linear", "attention"):
        fb = c.share(kind)
        out[f"{kind} fwd+bwd"] = fb
        out[f"{kind} total"] = fb + c.share("update") * elements[kind] / total
    for part in ("total", "fwd+bwd"):
        out[f"linear+attention {part}"] = out[f"linear {part}"] + out.pop(f"attention {part}")
    return out


def layertime_shares(run: Run) -> dict[str, float]:
    """The same shares as layertime reports them (``Run.by_kind``)."""
    kinds = run.by_kind()
    out = {}
    for kind in ("conv", "linear", "attention"):
        kt = kinds.get(kind)
        out[f"{kind} total"] = kt.share if kt else 0.0
        out[f"{kind} fwd+bwd"] = (
            (kt.forward_s + kt.backward_s) / run.profiled_step_s if kt else 0.0
        )
    for part in ("total", "fwd+bwd"):
        out[f"linear+attention {part}"] = out[f"linear {part}"] + out.pop(f"attention {part}")
    return out


SHARE_KEYS = ("conv total", "conv fwd+bwd", "linear total", "linear fwd+bwd")
#: With an attention kind: op names count the projections an attention module computes
#: itself (``nn.MultiheadAttention``'s) as linear, layertime charges them to attention;
#: then linear and attention together compare like with like (see ``report``).
ATTENTION_KEYS = ("linear+attention total", "linear+attention fwd+bwd")


def share_keys(run: Run) -> tuple[str, ...]:
    return SHARE_KEYS + (ATTENTION_KEYS if "attention" in run.by_kind() else ())


# --------------------------------------------------------------------------
# The three kinds of step.


class _CapturingSession(TraceSession):
    """layertime's TraceSession, keeping its events for the same-events check.

    Installed as ``runner.TraceSession`` so that ``runner._traced_step`` runs
    unchanged; collecting the list costs nothing extra (``stop`` builds it anyway).
    """

    captured: list[OpEvent] = []
    #: process CPU time (all threads) from enter_step to exit_step
    step_cpu_s: float = 0.0
    #: perf_counter at the end of the traced step (the start of post-processing)
    step_end: float = 0.0

    def enter_step(self) -> None:
        super().enter_step()
        self._cpu0 = time.process_time()

    def exit_step(self) -> None:
        if self._step_range.open:  # stop() closes it again: only the first close counts
            _CapturingSession.step_cpu_s = time.process_time() - self._cpu0
            super().exit_step()
            _CapturingSession.step_end = time.perf_counter()

    def stop(self) -> list[OpEvent]:
        events = super().stop()
        _CapturingSession.captured = events
        return events


def independent_step(work: Workload) -> tuple[Classified, float, float]:
    """One step under a stock ``torch.profiler`` (no layertime hooks or ranges).

    Returns its classification, the wall time from profiler start to events
    parsed and the process CPU time of the step itself.
    """
    t0 = time.perf_counter()
    prof = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU],
        record_shapes=False,
        with_stack=False,
        profile_memory=False,
    )
    with prof:
        cpu0 = time.process_time()
        with torch.profiler.record_function(BENCH_STEP):
            work.step()
        cpu = time.process_time() - cpu0
    c = classify_function_events(prof.events(), BENCH_STEP)
    return c, time.perf_counter() - t0, cpu


def make_run(
    label: str,
    config: WorkloadSpec,
    env: Environment,
    table: ModuleTable,
    plain: Sequence[float],
    traced: Sequence[StepCharges],
    warmup: int,
    num_classes: int,
) -> Run:
    """A Run of these steps, rows and phases from the same ``aggregate`` call as
    ``runner.measure`` (its timeline is left out: ``by_kind`` does not read it)."""
    layers, phases, spread, samples = aggregate(table, traced)
    return Run(
        model=label,
        device="cpu",
        batch_size=config.batch_size,
        input_shape=tuple(config.resolved_input.sample_shape),
        dtype=config.dtype,
        optimizer=config.optimizer,
        steps=len(traced),
        warmup_steps=warmup,
        step_samples_s=tuple(plain),
        profiled_step_samples_s=samples,
        layers=layers,
        phases=phases,
        environment=env,
        timing="cpu-self-time",
        num_classes=num_classes,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        phase_spread_s=spread,
    )


@dataclass
class Pair:
    """One round-robin sample: a plain, a layertime-profiled and a stock-profiled step."""

    plain_s: float
    plain_cpu_s: float
    traced: StepCharges
    traced_cpu_s: float
    traced_wall_s: float  # session start -> events converted and attributed
    post_s: float  # end of the step -> attributed result (profiler stop, events, attribution)
    same_events: Classified  # this traced step's own events, classified by op name
    shares: dict[str, float]  # layertime's shares for this one step
    stock: Indep  # the stock profiler's step of the same sample


@dataclass
class Indep:
    plain_s: float  # the plain step of the same sample
    plain_cpu_s: float
    classified: Classified
    wall_s: float
    cpu_s: float


@dataclass
class FixedCost:
    """Milliseconds per step at batch 1, per variant: min and median over rounds."""

    size: int
    rounds: int
    times: dict[str, list[float]]


@dataclass
class ModelResult:
    label: str
    batch: int
    input_desc: str
    pooled: Run
    rounds: list[Run]
    pairs: list[Pair]
    elements: dict[str, int]
    elapsed_s: float
    planned: tuple[int, int]  # rounds, samples per round
    cut: str = ""
    fixed: FixedCost | None = None

    @property
    def indep(self) -> list[Indep]:
        """The stock-profiled step of every sample."""
        return [p.stock for p in self.pairs]


def fixed_cost(
    model: nn.Module, name: str, table: ModuleTable, rounds: int, size: int, own: WorkloadSpec
) -> FixedCost:
    """The per-step cost of tracing that does not grow with the batch: batch 1, small
    images (the model's own input where it takes no other, as ViTs), many interleaved
    rounds of plain / traced / profiler-only / hooks-only steps."""
    config = WorkloadSpec.create("test", batch_size=1, input_shape=(3, size, size))
    try:
        out_shape = check_input(model, config, torch.device("cpu"), name)
    except LayertimeError:
        config = dataclasses.replace(own, batch_size=1)
        out_shape = check_input(model, config, torch.device("cpu"), name)
        size = config.resolved_input.sample_shape[-1]
    work = Workload(model, config, torch.device("cpu"), out_shape)
    times: dict[str, list[float]] = {
        k: [] for k in ("plain", "traced (step range)", "traced (start..parsed)",
                        "profiler only (no hooks)", "module hooks only (no profiler)")
    }

    def hooks_only() -> None:
        with module_ranges(table):
            work.step()

    for i in range(rounds + 1):
        gc.collect()
        p = _plain_step(work)[0]
        gc.collect()
        t = time.perf_counter()
        c = _traced_step(work, table)[0]
        tw = time.perf_counter() - t
        gc.collect()
        ind = independent_step(work)[0]
        gc.collect()
        t = time.perf_counter()
        hooks_only()
        h = time.perf_counter() - t
        if i == 0:
            continue  # warm-up
        for k, v in zip(times, (p, c.step_s, tw, ind.step_us * 1e-6, h)):
            times[k].append(v * 1e3)
    return FixedCost(size=size, rounds=rounds, times=times)


#: The order of a sample's three steps cycles through every permutation, so that a
#: drift in the machine's load favours none of them.
ORDERS = ("PLS", "LSP", "SPL", "PSL", "LPS", "SLP")


def build(name: str, batch: int, args: argparse.Namespace) -> tuple[nn.Module, WorkloadSpec, str]:
    """The model as ``layertime.profile`` builds it (random init, seeded) and its workload:
    images for vision models, ``--seq-len`` token ids for ``hf:`` models."""
    size = {} if args.image_size is None else {"image_size": args.image_size}
    shape = {"seq_len": args.seq_len} if name.startswith("hf:") else size
    p = prepare(WorkloadSpec.create(name, batch_size=batch, device="cpu", seed=args.seed, **shape))
    return p.model, p.workload, p.label


def bench_model(
    name: str, batch: int, args: argparse.Namespace, env: Environment, deadline: float
) -> ModelResult:
    t_start = time.perf_counter()
    device = torch.device("cpu")
    model, config, label = build(name, batch, args)
    # Kinds follow what each layer computes, watched in the validating forward, as
    # runner.measure does (GPT-2's Conv1D is a linear layer).
    with KindObserver(model) as watched:
        output_shape = check_input(model, config, device, label)
    classes = config.resolved_input.classes(output_shape)
    table = ModuleTable(model, watched.kinds())
    elements = param_elements(model)
    pairs: list[Pair] = []
    rounds: list[Run] = []
    cut = ""
    tag = f"{label} b{batch}"

    def plain() -> tuple[float, float]:
        gc.collect()
        cpu0 = time.process_time()
        dt = _plain_step(work)[0]
        return dt, time.process_time() - cpu0

    def traced() -> tuple[StepCharges, float, float, float, Classified]:
        gc.collect()
        t = time.perf_counter()
        charges, _ = _traced_step(work, table)
        end = time.perf_counter()
        same = classify_op_events(_CapturingSession.captured)
        return (charges, end - t, end - _CapturingSession.step_end, _CapturingSession.step_cpu_s,
                same)

    def stock() -> tuple[Classified, float, float]:
        gc.collect()
        return independent_step(work)

    last = {"plain": 0.0, "traced": 0.0, "indep": 0.0}

    def fits() -> bool:
        return time.perf_counter() + sum(last.values()) <= deadline

    with training_mode(model):
        work = Workload(model, config, device, output_shape)
        for i in range(args.warmup):
            last["plain"] = plain()[0]
            log(f"{tag}: warm-up plain step {i + 1}/{args.warmup}: {last['plain']:.2f}s")
        c, last["traced"], _, _, _ = traced()
        log(f"{tag}: warm-up traced step: {c.step_s:.2f}s ({last['traced']:.2f}s with start/stop)")
        ic, last["indep"], _ = stock()
        log(f"{tag}: warm-up stock-profiled step: {ic.step_us * 1e-6:.2f}s")
        k = 0
        for r in range(args.repeats):
            round_pairs: list[Pair] = []
            for i in range(args.steps):
                if r > 0 and not fits():
                    cut = f"time budget reached in round {r + 1}, sample {i + 1}"
                    break
                got: dict[str, Any] = {}
                for step in ORDERS[k % len(ORDERS)]:
                    got[step] = {"P": plain, "L": traced, "S": stock}[step]()
                k += 1
                p, pc = got["P"]
                c, w, post, tc, same = got["L"]
                ic, iw, icpu = got["S"]
                last.update(plain=p, traced=w, indep=iw)
                one = make_run(label, config, env, table, [p], [c], args.warmup, classes)
                round_pairs.append(Pair(p, pc, c, tc, w, post, same, layertime_shares(one),
                                        Indep(p, pc, ic, iw, icpu)))
                log(
                    f"{tag}: round {r + 1}/{args.repeats} sample {i + 1}/{args.steps}: "
                    f"plain {p:.2f}s layertime {c.step_s:.2f}s (x{c.step_s / p:.3f}, +{post:.2f}s "
                    f"after) stock {ic.step_us * 1e-6:.2f}s (x{ic.step_us * 1e-6 / p:.3f})"
                )
            if round_pairs:
                pairs.extend(round_pairs)
                rounds.append(
                    make_run(
                        label,
                        config,
                        env,
                        table,
                        [q.plain_s for q in round_pairs],
                        [q.traced for q in round_pairs],
                        args.warmup,
                        classes,
                    )
                )
            if cut:
                log(f"{tag}: {cut}; stopping early")
                break
        fixed = None
        if args.fixed_cost and not name.startswith("hf:"):
            log(f"{tag}: fixed cost, batch 1 at {args.fixed_cost_size}px, {args.fixed_cost} rounds")
            fixed = fixed_cost(model, label, table, args.fixed_cost, args.fixed_cost_size, config)
    pooled = make_run(
        label,
        config,
        env,
        table,
        [q.plain_s for q in pairs],
        [q.traced for q in pairs],
        args.warmup,
        classes,
    )
    return ModelResult(
        label=label,
        batch=batch,
        input_desc=describe_input(config),
        pooled=pooled,
        rounds=rounds,
        pairs=pairs,
        elements=elements,
        elapsed_s=time.perf_counter() - t_start,
        planned=(args.repeats, args.steps),
        cut=cut,
        fixed=fixed,
    )


def describe_input(config: WorkloadSpec) -> str:
    spec = config.resolved_input
    if spec.sequence_length is not None:
        return f"sequence {spec.sequence_length}"
    return "x".join(str(d) for d in spec.sample_shape)


# --------------------------------------------------------------------------
# The report.


def spread_kind(run: Run) -> str:
    """conv or linear, whichever takes more of the pooled step: the share whose spread
    over repeated profiles is reported (linear for transformers)."""
    kinds = run.by_kind()
    return max(("conv", "linear"), key=lambda k: kinds[k].share if k in kinds else 0.0)


def kind_shares(runs: Sequence[Run], kind: str) -> list[float]:
    return [r.by_kind()[kind].share if kind in r.by_kind() else 0.0 for r in runs]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def med(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def rng(xs: Sequence[float], fmt: str = "{:.3f}") -> str:
    if not xs:
        return "-"
    return f"{fmt.format(min(xs))}..{fmt.format(max(xs))}"


def report(res: ModelResult, args: argparse.Namespace) -> list[str]:
    run = res.pooled
    L: list[str] = []
    rows: list[tuple[str, str, str, str]] = []  # metric, measured, target, verdict
    n_r, n_p = res.planned
    L.append("=" * 96)
    L.append(
        f"{res.label}, batch {res.batch}, {res.input_desc}, cpu, "
        f"{torch.get_num_threads()} threads, sgd: {len(res.pairs)} samples of a plain, a "
        f"layertime-profiled and a stock-profiled step in {len(res.rounds)} rounds (planned "
        f"{n_r}x{n_p}), {res.elapsed_s:.0f}s"
    )
    if res.cut:
        L.append(f"NOTE: stopped early ({res.cut}); fewer samples than planned.")

    # 1. overhead, and the stock profiler's own in the same samples
    target = args.overhead_target or OVERHEAD_TARGETS.get(res.label, DEFAULT_OVERHEAD_TARGET)
    ratio = run.overhead_ratio
    pair_wall = med([p.traced.step_s / p.plain_s for p in res.pairs])
    pair_cpu = med([p.traced_cpu_s / p.plain_cpu_s for p in res.pairs])
    stock_wall = med([p.stock.classified.step_us * 1e-6 / p.plain_s for p in res.pairs])
    stock_cpu = med([p.stock.cpu_s / p.plain_cpu_s for p in res.pairs])
    rows.append(("overhead: median profiled / median plain step",
                 f"{ratio:.3f} (per sample {pair_wall:.3f}, CPU time {pair_cpu:.3f})",
                 f"<= {target:.2f}", verdict(ratio <= target)))
    rows.append(("stock torch.profiler alone, same samples",
                 f"{stock_wall:.3f} (CPU time {stock_cpu:.3f})", "(info)", ""))
    # The difference per sample (the same plain step divides both), then the median.
    diffs = [(p.traced_cpu_s - p.stock.cpu_s) / p.plain_cpu_s for p in res.pairs]
    diff = med(diffs)
    rows.append(("layertime - stock, CPU time / plain CPU time",
                 f"{diff:+.3f} (per sample {rng(diffs, '{:+.3f}')}; wall "
                 f"{pair_wall - stock_wall:+.3f})",
                 f"<= +{STOCK_MARGIN:.2f}", verdict(diff <= STOCK_MARGIN)))
    post = med([p.post_s for p in res.pairs])
    rows.append(("post-processing: step end -> attributed, / plain",
                 f"{post:.3f}s = {pct(post / run.step_s)}",
                 f"<= {pct(POST_SHARE)}", verdict(post / run.step_s <= POST_SHARE)))
    # 2. coverage
    attributed = [p.traced.step_s - p.traced.step.get("unattributed", 0.0) for p in res.pairs]
    cov_pairs = [a / p.plain_s for a, p in zip(attributed, res.pairs)]
    cov = med(attributed) / run.step_s  # the same estimator as Run.overhead_ratio
    lo, hi = COVERAGE_RANGE
    rows.append(("coverage: median attributed rows / median plain step",
                 f"{cov:.3f} (per pair {med(cov_pairs):.3f})",
                 f"{lo:.2f}..{hi:.2f}", verdict(lo <= cov <= hi)))
    unattr = run.phases.unattributed_s / run.profiled_step_s
    rows.append(("unattributed share of the profiled step", pct(unattr), "(info)", ""))
    # 3. agreement: median over steps of each step's share, on both sides
    keys = share_keys(run)
    lt = {k: med([p.shares[k] for p in res.pairs]) for k in keys}
    ind_steps = [name_shares(i.classified, res.elements) for i in res.indep]
    ind = {k: med([s[k] for s in ind_steps]) for k in keys}
    for k in keys:
        if not ind_steps:
            rows.append((f"{k} share vs independent", "no independent steps", "", "MISS"))
            continue
        d = 100 * (lt[k] - ind[k])
        measured = f"{pct(lt[k])} vs {pct(ind[k])} ({d:+.1f} pt)"
        # An attention module with weights of its own (nn.MultiheadAttention's in-projection)
        # computes its projections itself: linear by op name, attention in layertime, so
        # linear and attention together are compared.  Otherwise (GPT-2: the projections
        # are linear modules) linear alone is, and linear+attention is shown: layertime's
        # attention also holds the module's reshapes and copies, "other" by op name.
        own_projections = res.elements["attention"] > 0
        if (k.startswith("linear ") and own_projections) or (
                k.startswith("linear+attention") and not own_projections):
            see = "linear+attention" if own_projections else "linear"
            rows.append((f"{k} share: layertime vs independent", measured,
                         f"(info: see {see})", ""))
            continue
        rows.append((f"{k} share: layertime vs independent", measured,
                     f"|diff| <= {AGREEMENT_POINTS:.0f} pt", verdict(abs(d) <= AGREEMENT_POINTS)))
    # 4. repeatability
    big = spread_kind(run)
    conv = kind_shares(res.rounds, big)
    if len(conv) >= 2:
        sp = 100 * (max(conv) - min(conv))
        rows.append((f"{big} share spread over {len(conv)} profiles", f"{sp:.1f} pt",
                     f"<= {SPREAD_POINTS:.0f} pt", verdict(sp <= SPREAD_POINTS)))
    else:
        rows.append((f"{big} share spread over profiles", f"only {len(conv)} profile",
                     f"<= {SPREAD_POINTS:.0f} pt", "MISS"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    L.append(f"{'metric':<{w[0]}}  {'measured':<{w[1]}}  {'target':<{w[2]}}  result")
    L.append("-" * (sum(w) + 12))
    for metric, measured, tgt, result in rows:
        L.append(f"{metric:<{w[0]}}  {measured:<{w[1]}}  {tgt:<{w[2]}}  {result}".rstrip())

    # Details: the spread behind each number.
    plain_all = [p.plain_s for p in res.pairs]
    traced_all = [p.traced.step_s for p in res.pairs]
    per_pair = [t / p for t, p in zip(traced_all, plain_all)]
    L.append("")
    L.append("overhead detail:")
    L.append(f"  per-pair profiled/plain: median {med(per_pair):.3f}, range {rng(per_pair)}"
             f"  [{' '.join(f'{x:.3f}' for x in per_pair)}]")
    L.append(f"  best-of (min profiled / min plain): {min(traced_all) / min(plain_all):.3f}")
    pc = [p.plain_cpu_s for p in res.pairs]
    tc = [p.traced_cpu_s for p in res.pairs]
    cr = [t / p for t, p in zip(tc, pc)]
    L.append(
        f"  process CPU time (all threads; steadier than wall under load): plain {med(pc):.3f}s,"
        f" profiled {med(tc):.3f}s, median/median x{med(tc) / med(pc):.3f}, per pair median "
        f"x{med(cr):.3f} range {rng(cr)}"
    )
    if res.indep:
        icr = [i.cpu_s / i.plain_cpu_s for i in res.indep]
        L.append(f"  process CPU time, stock profiler alone / its plain step: median x{med(icr):.3f}"
                 f" range {rng(icr)}")
    L.append(f"  {'step times, s':<40} {'median':>8}  {'range':>15}  x plain median")
    ref = med(plain_all)

    def tline(label: str, xs: Sequence[float], base: float | None) -> None:
        rel = f"  x{med(xs) / base:.3f}" if base else ""
        L.append(f"  {label:<40} {med(xs):8.3f}  {rng(xs):>15}{rel}")

    tline("plain (no profiler, no hooks)", plain_all, None)
    tline("profiled: layertime::step range", traced_all, ref)
    tline("profiled: profiler start..events parsed", [p.traced_wall_s for p in res.pairs], ref)
    if res.indep:
        # The stock step's plain step is the sample's: the "plain" line above.
        tline("independent: stock profiler, no hooks",
              [i.classified.step_us * 1e-6 for i in res.indep], ref)
        ir = [i.classified.step_us * 1e-6 / i.plain_s for i in res.indep]
        L.append(f"  independent/plain per step: median {med(ir):.3f}, range {rng(ir)}")
    L.append(f"coverage detail: per pair median {med(cov_pairs):.3f}, range {rng(cov_pairs)}; "
             f"median attributed / median plain {cov:.3f}; unattributed per "
             f"step {rng([p.traced.step.get('unattributed', 0.0) / p.traced.step_s for p in res.pairs], '{:.2%}')}")

    L.append("agreement detail (shares of each side's own profiled step; median over steps, range):")
    same = [name_shares(p.same_events, res.elements) for p in res.pairs]
    L.append(f"  {'':16} {'layertime':>22}  {'independent (op names)':>24}  {'same events, op names':>24}")
    for k in keys:
        xa = [p.shares[k] for p in res.pairs]
        xb = [s[k] for s in ind_steps]
        xc = [s[k] for s in same]
        fmt = "{:.1%}"
        L.append(f"  {k:<16} {pct(med(xa)):>6} ({rng(xa, fmt):>13})  "
                 f"{pct(med(xb)) if xb else '-':>6} ({rng(xb, fmt):>15})  "
                 f"{pct(med(xc)):>6} ({rng(xc, fmt):>15})")
    L.append(f"  pooled Run.by_kind(): conv {pct(layertime_shares(run)['conv total'])}, "
             f"linear {pct(layertime_shares(run)['linear total'])}")
    if res.indep:
        acc = med([i.classified.share("accumulate_grad") for i in res.indep])
        oth = med([i.classified.share("other") for i in res.indep])
        L.append(f"  independent step, not conv/linear/update/zero_grad: AccumulateGrad {acc:.2%}, "
                 f"other ops and gaps {oth:.1%}")
    L.append(f"spread detail: {big} share per profile {', '.join(pct(s) for s in conv)}; "
             f"per step {rng([p.shares[big + ' total'] for p in res.pairs], '{:.1%}')}")

    p = run.phases
    L.append(
        "phases, mean s: layertime   forward {:.3f}  backward {:.3f}  update {:.3f}  loss {:.3f}"
        "  zero_grad {:.3f}  unattributed {:.3f}".format(
            p.forward_s, p.backward_s, p.update_s, p.loss_s, p.zero_grad_s, p.unattributed_s)
    )
    if res.indep:
        n = len(res.indep)
        bwd = sum(i.classified.backward_us for i in res.indep) / n * 1e-6
        upd = sum(i.classified.by_class["update"] for i in res.indep) / n * 1e-6
        zg = sum(i.classified.by_class["zero_grad"] for i in res.indep) / n * 1e-6
        step = sum(i.classified.step_us for i in res.indep) / n * 1e-6
        L.append(
            f"                independent forward+loss {step - bwd - upd - zg:.3f}  backward "
            f"{bwd:.3f}  update {upd:.3f}  zero_grad {zg:.3f}  (step {step:.3f})"
        )
    kinds = sorted(run.by_kind().values(), key=lambda k: -k.time_s)
    L.append("layertime kinds (pooled): "
             + ", ".join(f"{k.kind} {pct(k.share)}" for k in kinds if k.share >= 0.001))
    if res.fixed:
        f = res.fixed
        L.append(f"fixed cost of tracing, batch 1 at {f.size}px, {f.rounds} rounds (ms; + vs plain):")
        base_min, base_med = min(f.times["plain"]), med(f.times["plain"])
        for k, v in f.times.items():
            L.append(f"  {k:<34} min {min(v):8.1f} ({min(v) - base_min:+7.1f})   "
                     f"median {med(v):8.1f} ({med(v) - base_med:+7.1f})")
    return L


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark layertime's attribution on the CPU "
        "(overhead, coverage, agreement, repeatability).",
    )
    ap.add_argument("--models", nargs="+", default=None,
                    help="default: alexnet resnet50 vit_b_16 hf:gpt2")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                    help="one per model, or one for all; default 64 16 8 1 (--quick: 2)")
    ap.add_argument("--steps", type=int, default=None,
                    help="samples (plain, layertime, stock) per round (default 2; --quick 1)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds = repeated profiles (3)")
    ap.add_argument("--warmup", type=int, default=1, help="plain warm-up steps (1)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="H=W of the input (default: the model's own; --quick: 64)")
    ap.add_argument("--seq-len", type=int, default=None,
                    help="token ids per sample for hf: models (default 512; --quick: 32)")
    ap.add_argument("--overhead-target", type=float, default=None,
                    help="override the overhead target (default 1.05 alexnet, 1.15 otherwise)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--budget-min", type=float, default=12.0,
                    help="stop taking more samples once this many minutes are used (12); the "
                    "first round of every model always completes")
    ap.add_argument("--fixed-cost", type=int, default=0, metavar="ROUNDS",
                    help="also measure tracing's fixed per-step cost at batch 1 (0: off; "
                    "image models only)")
    ap.add_argument("--fixed-cost-size", type=int, default=64, help="image size for --fixed-cost")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--omp-default", action="store_true",
                    help="do not set OMP_WAIT_POLICY=PASSIVE (keep OpenMP's spinning default)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: batch 2 at 64px (sequence 32), 1 sample per round, 3 rounds")
    args = ap.parse_args(argv)
    if args.models is None:
        # vit_b_16 takes 224x224 only, too slow for a smoke run
        args.models = ["alexnet", "resnet50", "hf:gpt2"] if args.quick else [
            "alexnet", "resnet50", "vit_b_16", "hf:gpt2"]
    if args.batch_sizes is None:
        defaults = {"alexnet": 64, "resnet50": 16, "vit_b_16": 8, "hf:gpt2": 1}
        args.batch_sizes = [2 if args.quick else defaults.get(m, 16) for m in args.models]
    if len(args.batch_sizes) == 1 and len(args.models) > 1:
        args.batch_sizes = args.batch_sizes * len(args.models)
    if len(args.batch_sizes) != len(args.models):
        ap.error("give one batch size per model, or one for all")
    if args.steps is None:
        args.steps = 1 if args.quick else 2
    if args.quick and args.image_size is None:
        args.image_size = 64
    if args.seq_len is None:
        args.seq_len = 32 if args.quick else 512
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--steps and --repeats must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runner.TraceSession = _CapturingSession  # type: ignore[misc]
    env = describe(torch.device("cpu"))
    load0 = os.getloadavg()
    print(
        f"layertime attribution benchmark{' --quick' if args.quick else ''}: torch {env.torch}, "
        f"{env.device_name}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(
        f"load average (1/5/15 min) at start {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}.  "
        "Wall-clock timings on a shared CPU: other jobs ran beside this one, so read the "
        "ranges, not single numbers.", flush=True
    )
    end = T0 + 60 * args.budget_min
    for i, (name, batch) in enumerate(zip(args.models, args.batch_sizes)):
        # Each model may use an equal part of what is left of the budget.
        deadline = time.perf_counter() + (end - time.perf_counter()) / (len(args.models) - i)
        log(f"{name} batch {batch}: building (sample budget until t={deadline - T0:.0f}s)")
        # Each model's report as soon as it is measured: a later failure loses nothing.
        print("\n".join(report(bench_model(name, batch, args, env, deadline), args)), flush=True)
    load1 = os.getloadavg()
    print("=" * 96)
    print(f"{len(args.models)} configuration(s), {time.perf_counter() - T0:.0f}s in all; load "
          f"average at end {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
