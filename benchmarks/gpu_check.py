#!/usr/bin/env python3
"""One prepared check of layertime's CUDA path: run it whenever a GPU is at hand.

::

    python benchmarks/gpu_check.py --out DIR            # on a CUDA machine, <= 6 minutes
    python benchmarks/gpu_check.py --out DIR --smoke    # the same code on the CPU, tiny sizes

Runs from a plain checkout (``PYTHONPATH=.`` or ``pip install --no-deps -e .``)
with whatever torch the machine has (2.11 and 2.14 are both meant to work).
It prints one table, each measurement beside its target with PASS or MISS
(INFO where there is no target, ERROR where the check itself broke, SKIP
where the time budget ran out), and writes into DIR at most 8 files: the
summary (``summary.json``, rewritten after every section, so a run cut short
still leaves what it measured), run JSONs, an HTML report and a Chrome trace.
A benchmark, not a test: it never asserts; ``--smoke`` is what the test
suite runs so this script cannot rot.

What each row measures, per model configuration
-----------------------------------------------
* **overhead**: median profiled step / median unprofiled step, one
  ``layertime`` profile (``Run.overhead_ratio``).  Target <= 1.05.
* **coverage**: every row (layers, loss, zero_grad, update, and
  ``unattributed``, the GPU's idle time) adds up to the profiled step; the
  row compares that sum with the unprofiled, synchronised step.  Target
  within 3%.  The idle share is printed beside it.
* **kernels**: the kernel time layertime charged (sum over its ops'
  ``self_device_time_total``) against the device activities' own durations
  in the same session: 1.00 means no kernel was lost or counted twice.
* **conv / fc agreement**: layertime's forward+backward share of conv and
  fully connected layers against an independent ``torch.profiler`` run of
  the same step, with no layertime code in the loop, that classifies every
  kernel by the outermost op or autograd node that launched it
  (``aten::conv2d``/``ConvolutionBackward0`` -> conv; ``aten::linear``/
  ``AddmmBackward0``/``MmBackward0`` -> linear).  Target within 3 points.
* **repeatability**: conv share over 3 profiles, max - min.  Target <= 2 points.
* **second clock**: the unprofiled step timed with CUDA events against the
  host clock with a synchronisation (what layertime uses).  INFO.
* **memory**: peak CUDA memory of one step against the cost model's
  estimate (weights, gradients, optimizer state, saved activations).  INFO.
* **memory peak** (issue 20): the profile's measured peak (its memory step:
  ``Run.memory.peak_bytes``) against ``torch.cuda.max_memory_allocated`` of a
  plain step after ``reset_peak_memory_stats`` (on the CPU, ``--smoke``: torch's
  MemTracker).  Target within 1%.  **memory curve**: the highest point of the
  live line (the allocator's events, read with CPU activity only) against the
  peak, within 1%.  **memory layers**: the per-layer breakdown (INFO).
* **predict** (issue 23): every run (the image models and GPT-2 at sequence 1024)
  against the roofline prediction, three ways: on the built-in profile that matches
  the device (h100/h200), on ``calibrate`` run here alone (no model fitted: the held-out
  test of the per-shape grid), and with efficiencies fitted to the alexnet run; each row
  gives measured/predicted share per kind, the worst kind in points, the median
  per-layer error and the step's predicted/measured time.  INFO.

* **attribute trace** (issue 21): the model's steps recorded with the stock profiler
  as a user records them (CPU and CUDA activities, a schedule, ``with_stack=True``,
  ``record_shapes=True``), attributed by ``layertime.attribute(..., model)``: each kind's
  share of the busy time against the live profile above.  Target within 3 points.
  **attribute kernels**: kernel time charged to rows against the device activities the
  trace holds in its steps.  Target 0.98-1.02.

Sharded training (issue 19): FSDP2 and tensor parallelism over a 1-rank mesh under
torchrun with NCCL, profiled as ``profile --fsdp``/``--tp`` profiles (one GPU has no peer:
the hooks, ranges and charging run, the collectives need two GPUs); rows must add up.
Then Lightning's FSDPStrategy and the Hugging Face Trainer with FSDP (GPU only), one rank.

The sections that have never run on a GPU (GPT-2 at 1024, torch.compile, sharded) run
first, so a short loan still gets them.

Exercises of the CUDA fixes (issue 12): profiler event ids and their activity
types; attribution under a time limit; plain steps before and after several
profiler sessions; fp16 loss scaling; one NCCL rank under torchrun;
calibration at reduced size; an out-of-memory error followed by a normal run
in the same process; the suite's CUDA-only tests (``-m cuda``).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from layertime.cost import MathMode, estimate, predict  # noqa: E402
from layertime.cost.compare import join  # noqa: E402
from layertime.cost.devices import get_profile, profile_for_device  # noqa: E402
from layertime.errors import LayertimeError  # noqa: E402
from layertime.measure.events import busy_us, from_kineto, from_profiler  # noqa: E402
from layertime.measure.parallel.launch import free_port  # noqa: E402
from layertime.measure.prepare import prepare  # noqa: E402
from layertime.measure.runner import MeasureOptions, measure, trace_step  # noqa: E402
from layertime.measure.tracer import TraceSession  # noqa: E402
from layertime.modules import ModuleTable, training_mode  # noqa: E402
from layertime.results.run import Run  # noqa: E402
from layertime.workload import Workload, WorkloadSpec, check_input  # noqa: E402


@dataclass
class Row:
    config: str
    check: str
    value: str
    target: str
    status: str  # PASS, MISS, INFO, ERROR, SKIP
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Config:
    """One model configuration to check."""

    key: str
    model: str
    batch_size: int
    amp: str | None = None
    image_size: int | None = None
    num_classes: int = 1000
    seq_len: int | None = None

    def prepare(self, device: torch.device, amp: str | None = None) -> Any:
        """The model built and placed on ``device`` (``amp``: this config's by default)."""
        return prepare(WorkloadSpec.create(
            self.model, batch_size=self.batch_size, image_size=self.image_size,
            num_classes=self.num_classes, device=str(device), amp=amp or self.amp))

    def cost(self) -> Any:
        """The cost model's count of this configuration's step."""
        if self.seq_len is not None:
            return estimate(self.model, batch_size=self.batch_size, seq_len=self.seq_len)
        return estimate(self.model, batch_size=self.batch_size, image_size=self.image_size,
                        num_classes=self.num_classes)


FULL = (
    Config("alexnet", "alexnet", 128),
    Config("alexnet-bf16", "alexnet", 128, amp="bf16"),
    Config("resnet50", "resnet50", 64),
    Config("vgg16", "vgg16", 32),
)
#: Each traced step's kernel time per layer is divided by the unprofiled step on
#: CUDA (see layertime.measure.device_time.idle_from_plain); the independent view does
#: the same with its own unprofiled steps.
SMOKE = (Config("resnet18", "resnet18", 2, image_size=32, num_classes=10),)
#: The transformers section's run (benchmarks/transformers_bench.py's GPT-2 small at
#: sequence 1024, batch 8), predicted beside the image models.
GPT2 = Config("gpt2-1024", "hf:gpt2", 8, seq_len=1024)


class Check:
    """The whole check: its rows, its clock and its output folder."""

    def __init__(self, out: Path, smoke: bool, budget_s: float, device: torch.device) -> None:
        self.out = out
        self.smoke = smoke
        self.device = device
        self.cuda = device.type == "cuda"
        self.deadline = time.monotonic() + budget_s
        self.start = time.monotonic()
        self.rows: list[Row] = []
        self.runs: dict[str, Run] = {}
        self.facts: dict[str, Any] = {}

    # -- bookkeeping ---------------------------------------------------------
    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, config: str, check: str, value: str, target: str, status: str,
            **data: Any) -> None:
        row = Row(config, check, value, target, status, data or None)
        self.rows.append(row)
        print(f"[{time.monotonic() - self.start:6.1f}s] {status:5} {config:14} {check}: {value}"
              f" (target {target})", file=sys.stderr, flush=True)
        self.save()

    @contextmanager
    def section(self, config: str, what: str, need_s: float) -> Iterator[bool]:
        """Run a section if ``need_s`` seconds are left; any error becomes an ERROR row."""
        if self.left_s() < need_s:
            self.add(config, what, f"not run: {self.left_s():.0f} s left, needs ~{need_s:.0f}",
                     "-", "SKIP")
            yield False
            return
        t0 = time.monotonic()
        try:
            yield True
        except Exception as e:  # a broken check is reported, and the others still run
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            self.add(config, what, f"{type(e).__name__}: {first}", "-", "ERROR",
                     traceback=traceback.format_exc()[-4000:])
        finally:
            self.facts.setdefault("section_s", {})[f"{config}/{what}"] = time.monotonic() - t0

    def save(self) -> None:
        data = {
            "schema": "layertime.gpu_check/1",
            "smoke": self.smoke,
            "facts": self.facts,
            "rows": [asdict(r) for r in self.rows],
            "elapsed_s": time.monotonic() - self.start,
        }
        tmp = self.out / ".summary.json.tmp"
        tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        tmp.replace(self.out / "summary.json")

    def write(self, name: str, text: str) -> Path:
        path = self.out / name
        path.write_text(text)
        return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pass(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# -- layertime's view -----------------------------------------------------------
def fb_share(run: Run, kind: str) -> float:
    """Forward+backward time of a kind's layers over the profiled step."""
    t = sum(r.forward_s + r.backward_s for r in run.layers if r.kind == kind)
    return t / run.phases.total_s if run.phases.total_s > 0 else math.nan


def busy_share(run: Run, kind: str) -> float:
    """Forward+backward time of a kind's layers over the attributed time (on CUDA:
    the GPU's busy time), which host-side noise in the unprofiled step leaves alone."""
    t = sum(r.forward_s + r.backward_s for r in run.layers if r.kind == kind)
    busy = run.phases.total_s - run.phases.unattributed_s
    return t / busy if busy > 0 else math.nan


def profile_config(chk: Check, cfg: Config, steps: int, warmup: int) -> tuple[Any, Run]:
    prepared = cfg.prepare(chk.device)
    run = measure(prepared.model, prepared.workload, prepared.device, label=prepared.label,
                  options=MeasureOptions(steps=steps, warmup_steps=warmup))
    return prepared, run


# -- the independent view: stock torch.profiler, no layertime code --------------
_CONV_OPS = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution",
             "aten::_convolution", "aten::cudnn_convolution", "aten::mkldnn_convolution"}
_LINEAR_OPS = {"aten::linear", "aten::addmm"}
_NODE = "autograd::engine::evaluate_function: "


def _classify(e: Any) -> str:
    """The outermost op or autograd node above ``e`` decides its category."""
    found = "other"
    node = e
    while node is not None:
        name = str(node.name)
        if name.startswith(_NODE):
            b = name[len(_NODE):]
            if b.startswith("ConvolutionBackward") or b.startswith("CudnnConvolution"):
                found = "conv"
            elif b.startswith(("AddmmBackward", "MmBackward", "LinearBackward")):
                found = "linear"
            elif "ScaledDotProduct" in b or "FlashAttention" in b or "EfficientAttention" in b:
                found = "attention"
            else:
                found = "other"
        elif name in _CONV_OPS:
            found = "conv"
        elif name in _LINEAR_OPS:
            found = "linear"
        elif name == "aten::scaled_dot_product_attention":
            found = "attention"
        elif name.startswith("Optimizer.step"):
            found = "update"
        node = node.cpu_parent
    return found


def independent_shares(cfg: Config, device: torch.device, steps: int) -> dict[str, float]:
    """Kernel (CPU: self) time per category over the step, by torch.profiler alone."""
    import torchvision

    torch.manual_seed(0)
    size = cfg.image_size or 224
    model = torchvision.models.get_model(cfg.model, weights=None,
                                         num_classes=cfg.num_classes).to(device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(cfg.batch_size, 3, size, size, device=device)
    y = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp or "")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if amp is not None:
            with torch.autocast(device.type, dtype=amp):
                loss = loss_fn(model(x), y)
        else:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    _sync(device)
    plain = []
    for _ in range(max(3, steps)):
        t0 = time.perf_counter()
        step()
        _sync(device)
        plain.append(time.perf_counter() - t0)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        step()  # CUPTI's lazy start lands here, outside the measured ranges
        _sync(device)
        for _ in range(steps):
            with torch.profiler.record_function("gpu_check::step"):
                step()
                _sync(device)
    events = prof.events()
    # CPU-side ranges only: a range can have a GPU-side mirror of the same name.
    windows = [(e.time_range.start, e.time_range.end) for e in events
               if e.name == "gpu_check::step"
               and str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    per: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if str(getattr(e, "device_type", "CPU")).endswith("CPU") is False:
            continue
        if not any(a <= e.time_range.start <= b for a, b in windows):
            continue
        if device.type == "cuda":
            # Own kernels, less a range's GPU-side mirror (same name).
            t = sum(k.duration for k in e.kernels if k.name != e.name)
        else:
            t = e.self_cpu_time_total
        if t:
            per[_classify(e)] += float(t)
    # Per step: kernel time of each category over the *unprofiled* step, as
    # layertime's rows are on CUDA (on the CPU, self time over the traced step).
    traced_s = sum(b - a for a, b in windows) / len(windows) * 1e-6
    denom = statistics.median(plain) if device.type == "cuda" else traced_s
    shares = {k: v * 1e-6 / len(windows) / denom for k, v in per.items()}
    return shares | {"plain_ms": 1e3 * statistics.median(plain), "traced_ms": 1e3 * traced_s}


# -- sections --------------------------------------------------------------------
def check_config(chk: Check, cfg: Config, repeats: int, steps: int, warmup: int) -> None:
    key = cfg.key
    runs: list[Run] = []
    prepared = None
    with chk.section(key, "profile", 20 if chk.cuda else 5) as ok:
        if not ok:
            return
        prepared, first = profile_config(chk, cfg, steps, warmup)
        runs.append(first)
        chk.runs[key] = first
        if cfg.amp is None:
            chk.write(f"{key}.json", first.to_json())
        r = first.overhead_ratio
        traced = first.traced_step_samples_s or first.profiled_step_samples_s
        chk.add(key, "overhead", f"x{r:.3f} (traced {1e3 * statistics.median(traced):.2f} ms"
                f" / unprofiled {1e3 * first.step_s:.2f} ms, medians of {len(traced)} and "
                f"{len(first.step_samples_s)})", "<= 1.05", _pass(r <= 1.05),
                plain_s=list(first.step_samples_s), traced_s=list(traced),
                profiled_s=list(first.profiled_step_samples_s))
        total = first.phases.total_s
        idle = first.phases.unattributed_s
        rows_sum = rows_s(first)
        cov = rows_sum / first.step_s
        if chk.cuda:
            # Rows: each layer's kernels; unattributed: the GPU's idle time in the
            # unprofiled step (plus kernels of ops in no range).
            chk.add(key, "coverage", f"rows {1e3 * (rows_sum - idle):.2f} ms + idle "
                    f"{1e3 * idle:.2f} ms = {1e3 * rows_sum:.2f} ms vs unprofiled "
                    f"{1e3 * first.step_s:.2f} ms ({cov:.3f}); GPU idle {_pct(idle / total)}",
                    "within 3%", _pass(abs(cov - 1) <= 0.03), idle_share=idle / total,
                    rows_s=rows_sum)
        else:
            chk.add(key, "coverage", f"rows {1e3 * rows_sum:.2f} ms / unprofiled "
                    f"{1e3 * first.step_s:.2f} ms = {cov:.3f}; unattributed {_pct(idle / total)}",
                    "within 3%", _pass(abs(cov - 1) <= 0.03), idle_share=idle / total,
                    rows_s=rows_sum)
        if first.warnings:
            chk.add(key, "warnings", "; ".join(first.warnings)[:200], "-", "INFO")
    for i in range(repeats - 1):
        with chk.section(key, f"repeat {i + 2}", 15 if chk.cuda else 4) as ok:
            if not ok or prepared is None:
                break
            runs.append(measure(prepared.model, prepared.workload, prepared.device,
                                label=prepared.label,
                                options=MeasureOptions(steps=steps, warmup_steps=warmup)))
    if len(runs) > 1:
        shares = [fb_share(r, "conv") for r in runs]
        spread = max(shares) - min(shares)
        busy = [busy_share(r, "conv") for r in runs]
        steps = [1e3 * r.step_s for r in runs]
        chk.add(key, "repeatability", f"conv {' '.join(_pct(s) for s in shares)}: spread "
                f"{100 * spread:.2f} pts (unprofiled steps {' '.join(f'{s:.1f}' for s in steps)}"
                f" ms; share of busy time: spread {100 * (max(busy) - min(busy)):.2f} pts)",
                "<= 2 pts", _pass(spread <= 0.02), shares=shares, busy_shares=busy)
    if not runs:
        return
    first = runs[0]
    with chk.section(key, "agreement", 15 if chk.cuda else 4) as ok:
        if ok:
            ind = independent_shares(cfg, chk.device, 1 if chk.smoke else 3)
            # Shares of the attributed (busy) time: what attribution decides.  Shares
            # of the step also carry each side's own unprofiled step, measured a
            # minute apart (printed beside, for the reader).
            ind_busy = sum(v for k, v in ind.items() if not k.endswith("_ms"))
            for kind, label in (("conv", "conv"), ("linear", "fc")):
                ours = statistics.mean(busy_share(r, kind) for r in runs)
                theirs = ind.get(kind, 0.0) / ind_busy if ind_busy > 0 else math.nan
                diff = 100 * (ours - theirs)
                step_ours = statistics.mean(fb_share(r, kind) for r in runs)
                chk.add(key, f"{label} agreement", f"of busy time: layertime {_pct(ours)} vs "
                        f"torch.profiler {_pct(theirs)}: {diff:+.2f} pts (of the step: "
                        f"{_pct(step_ours)} vs {_pct(ind.get(kind, 0.0))})", "within 3 pts",
                        _pass(abs(diff) <= 3), independent=ind)
    if prepared is not None:
        with chk.section(key, "clocks+memory", 10 if chk.cuda else 3) as ok:
            if ok:
                second_clock_and_memory(chk, cfg, prepared, first)
        with chk.section(key, "measured memory", 10 if chk.cuda else 5) as ok:
            if ok:
                check_measured_memory(chk, cfg, prepared, first)
    with chk.section(key, "predict", 10) as ok:
        if ok:
            predict_builtin(chk, cfg, first)


def second_clock_and_memory(chk: Check, cfg: Config, prepared: Any, run: Run) -> None:
    model, config, device = prepared.model, prepared.workload, prepared.device
    shape = check_input(model, config, device, prepared.label)
    with training_mode(model):
        work = Workload(model, config, device, shape)
        for _ in range(2):
            work.step()
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        events_ms, host_ms = [], []
        for _ in range(2 if chk.smoke else 5):
            _sync(device)
            t0 = time.perf_counter()
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                work.step()
                b.record()
                _sync(device)
                events_ms.append(a.elapsed_time(b))
            else:
                work.step()
            host_ms.append(1e3 * (time.perf_counter() - t0))
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    host = statistics.median(host_ms)
    profiled = 1e3 * run.phases.total_s
    if events_ms:
        ev = statistics.median(events_ms)
        chk.add(cfg.key, "second clock", f"CUDA events {ev:.2f} ms, host clock {host:.2f} ms "
                f"(x{ev / host:.3f}), layertime plain {1e3 * run.step_s:.2f} ms, profiled "
                f"{profiled:.2f} ms", "-", "INFO", events_ms=events_ms, host_ms=host_ms)
    else:
        chk.add(cfg.key, "second clock", f"host clock {host:.2f} ms (no CUDA events on the CPU),"
                f" profiled {profiled:.2f} ms", "-", "INFO", host_ms=host_ms)
    est = cfg.cost().memory_bytes.total
    if peak is not None:
        chk.add(cfg.key, "memory", f"peak {peak / 2**30:.2f} GiB vs estimate {est / 2**30:.2f} GiB"
                f" (x{peak / est:.2f})", "-", "INFO", peak_bytes=peak, estimate_bytes=est)
    else:
        chk.add(cfg.key, "memory", f"estimate {est / 2**30:.3f} GiB (no CUDA peak on the CPU)",
                "-", "INFO", estimate_bytes=est)


def _reference_peak(chk: Check, prepared: Any) -> tuple[int, str]:
    """The peak of one plain step after two warm-up steps, measured without layertime: on
    CUDA ``torch.cuda.max_memory_allocated`` (after ``reset_peak_memory_stats``); on the CPU
    (smoke) torch's MemTracker, the only tracker of CPU tensors."""
    model, config, device = prepared.model, prepared.workload, prepared.device
    shape = check_input(model, config, device, prepared.label)
    with training_mode(model):
        work = Workload(model, config, device, shape)
        for _ in range(2):
            work.step()
        _sync(device)
        if chk.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            work.step()
            _sync(device)
            return int(torch.cuda.max_memory_allocated(device)), "torch.cuda.max_memory_allocated"
        import warnings

        from torch.distributed._tools.mem_tracker import MemTracker

        mt = MemTracker()
        mt.track_external(model, work.optimizer, *work.batch.tensors)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mt:
                work.step()
        return int(mt.get_tracker_snapshot("peak")[device]["Total"]), "MemTracker (CPU)"


def check_measured_memory(chk: Check, cfg: Config, prepared: Any, run: Run) -> None:
    """Issue 20: the profile's measured peak (its memory step) against a plain step's peak
    measured without layertime, within 1%; the live curve's top against the peak; and the
    per-layer breakdown (saved activations, what was live at the peak and when)."""
    m = run.memory
    if m is None:
        chk.add(cfg.key, "memory peak", "the run measured no memory", "measured", "MISS")
        return
    ref, how = _reference_peak(chk, prepared)
    diff = m.peak_bytes / ref - 1 if ref else math.nan
    chk.add(cfg.key, "memory peak", f"layertime {m.peak_bytes / 2**20:,.1f} MiB ({m.method}, "
            f"at {m.peak_when}) vs {how} {ref / 2**20:,.1f} MiB: {100 * diff:+.2f}%",
            "within 1%", _pass(abs(diff) <= 0.01), peak_bytes=m.peak_bytes, reference=ref,
            reserved_peak_bytes=m.reserved_peak_bytes)
    top = max((p.bytes for p in m.timeline), default=0)
    cdiff = top / m.peak_bytes - 1 if m.peak_bytes else math.nan
    chk.add(cfg.key, "memory curve", f"highest of {len(m.timeline)} points "
            f"{top / 2**20:,.1f} MiB vs peak {m.peak_bytes / 2**20:,.1f} MiB: "
            f"{100 * cdiff:+.2f}% (the allocator's events, CPU activity only)", "within 1%",
            _pass(bool(m.timeline) and abs(cdiff) <= 0.01))
    saved = sorted(run.layers, key=lambda r: -r.saved_bytes)[:4]
    cats = ", ".join(f"{k.split(' (')[0]} {v / 2**20:,.1f}" for k, v in
                     m.at_peak.categories().items())
    chk.add(cfg.key, "memory layers", f"saved {m.saved_bytes / 2**20:,.1f} MiB (most: "
            + ", ".join(f"{r.name} {r.saved_bytes / 2**20:,.1f}" for r in saved)
            + f"); at the peak: {cats} MiB", "-", "INFO",
            layers={r.name: [r.saved_bytes, r.params_bytes, r.grads_bytes,
                             r.optimizer_state_bytes] for r in run.layers},
            at_peak=m.at_peak.categories())


def _kind_errors(joined: Any) -> tuple[str, float]:
    parts, worst = [], 0.0
    for k in joined.kinds:
        if k.predicted_share is None or k.measured_share < 0.01:
            continue
        pts = 100 * (k.predicted_share - k.measured_share)
        worst = max(worst, abs(pts))
        parts.append(f"{k.kind} {100 * k.measured_share:.0f}/{100 * k.predicted_share:.0f}")
    return ", ".join(parts), worst


def builtin_prediction(cfg: Config, run: Run) -> tuple[Any, Any]:
    """The built-in profile of the device that measured (h200 when none matches) and
    the cost estimate predicted on it, with the math settings the run recorded."""
    prof = profile_for_device(run.environment.device_name) or get_profile("h200")
    return prof, predict(cfg.cost(), prof, mode=MathMode.of_run(run.environment))


def config_of(key: str) -> Config:
    return next(c for c in (*FULL, *SMOKE, GPT2) if c.key == key)


def rows_s(run: Run) -> float:
    """Every row of a run added up: layers, then the step-level rows."""
    p = run.phases
    return sum(r.total_s for r in run.layers) + (
        p.loss_s + p.zero_grad_s + p.data_s + p.clip_s + p.scheduler_s + p.logging_s
        + p.compiled_wrapper_s + p.unattributed_s)


def predict_builtin(chk: Check, cfg: Config, run: Run) -> None:
    """Measured per-kind shares beside the built-in profile's prediction."""
    prof, cost = builtin_prediction(cfg, run)
    _predicted_row(chk, cfg.key, f"predict {prof.key}", join(run, cost))


def check_fit(chk: Check) -> None:
    """calibrate at reduced size, fit to alexnet, predict resnet50 and vgg16."""
    from layertime.cost.calibrate import fit_to_run, to_profile
    from layertime.measure.calibrate import calibrate

    base = "alexnet" if "alexnet" in chk.runs else next(iter(chk.runs), None)
    if base is None:
        chk.add("fit", "calibrate --fit", "no profile to fit", "-", "SKIP")
        return
    size = 256 if chk.smoke else 4096
    mem_mb = 8 if chk.smoke else 256
    t0 = time.monotonic()
    cal = calibrate(chk.device, matmul_size=size, memory_mb=mem_mb, repeats=3)
    peaks = ", ".join(f"{k} {v:.1f}" for k, v in cal.matmul_tflops.items())
    chk.add("fit", "calibrate", f"{time.monotonic() - t0:.1f} s: TFLOP/s {peaks}; "
            f"{cal.memory_bandwidth_gb_per_s:.0f} GB/s (matmul side {size}, {mem_mb} MiB)",
            "-", "INFO", calibration=cal.to_dict())
    # Calibration alone, no model fitted: every run measured here, the held-out test of the
    # per-shape grid (the built-in profile's rows are "predict <profile>").
    calibrated = to_profile(cal, "local-gpu")
    for key, run in chk.runs.items():
        try:
            cost = predict(config_of(key).cost(), calibrated, mode=MathMode.of_run(run.environment))
            _predicted_row(chk, key, "predict calibrated", join(run, cost))
        except Exception as e:  # one model's failure is a row; the others still run
            chk.add(key, "predict calibrated", f"{type(e).__name__}: {e}"[:160], "-", "ERROR")
    base_run = chk.runs[base]
    cfg = config_of(base)
    prof, fit, warns = fit_to_run(cal, "local-gpu", base_run, model=cfg.model)
    fitted = ", ".join(f"{k.kind} {k.efficiency:.2f}" for k in fit.kinds if k.status != "default")
    chk.add("fit", f"fit to {base}", fitted or "nothing fitted", "-", "INFO")
    for key, run in chk.runs.items():
        if key == base or "bf16" in key:
            continue
        cost = predict(config_of(key).cost(), prof, mode=MathMode.of_run(run.environment))
        _predicted_row(chk, key, f"predict from {base} fit", join(run, cost))


def _predicted_row(chk: Check, key: str, what: str, joined: Any) -> None:
    """Measured/predicted share per kind, the worst kind, the median layer error and the
    step's predicted/measured time of one joined run, as one INFO row."""
    text, worst = _kind_errors(joined)
    med = joined.median_layer_error(0.01)
    ratio = joined.step_ratio if joined.step_ratio is not None else math.nan
    chk.add(key, what, f"%: {text}; worst {worst:.1f} pts; median layer error "
            f"{'-' if med is None else _pct(med)}; step x{ratio:.2f}", "-",
            "INFO", worst_pts=worst, median_layer_error=med, step_ratio=ratio)


def check_event_ids(chk: Check, cfg: Config) -> None:
    """Raw profiler ids on this device: duplicates, activity types; ours unique, no cycles."""
    prepared = cfg.prepare(chk.device)
    model, config, device = prepared.model, prepared.workload, prepared.device
    shape = check_input(model, config, device, prepared.label)
    table = ModuleTable(model)
    with training_mode(model):
        work = Workload(model, config, device, shape)
        work.step()
        session = TraceSession(table, device)
        trace_step(work, session)
        ours = session.events
    raw = list(session.profiler.events())
    types = collections.Counter(str(getattr(e, "activity_type", None)) for e in raw)
    cpu_side = [e for e in raw if str(getattr(e, "device_type", "CPU")).endswith("CPU")]
    ids = collections.Counter(int(e.id) for e in cpu_side)
    dup = sum(1 for n in ids.values() if n > 1)
    dup_types = collections.Counter(
        str(getattr(e, "activity_type", None)) for e in cpu_side if ids[int(e.id)] > 1)
    unique = len({e.id for e in ours}) == len(ours)
    by_id = {e.id: e for e in ours}
    cycles = 0
    for e in ours:
        seen, p = set(), e.parent
        while p is not None:
            if p in seen:
                cycles += 1
                break
            seen.add(p)
            p = by_id[p].parent if p in by_id else None
    chk.add(cfg.key, "event ids", f"raw: {len(cpu_side)} CPU-side events, {dup} ids shared "
            f"(types {dict(dup_types)}); kept {len(ours)}, unique {unique}, cycles {cycles}",
            "unique, no cycles", _pass(unique and cycles == 0), activity_types=dict(types))
    # Whether Kineto's events read directly (the CPU path's from_kineto) give the events
    # torch's tree gives here, device time aside: the evidence for reading them so on CUDA.
    direct = from_kineto(session.profiler.profiler.kineto_results)
    via_tree = [replace(e, device_us=0.0) for e in from_profiler(raw)]
    first = next((i for i, (a, b) in enumerate(zip(direct, via_tree)) if a != b), None)
    same = first is None and len(direct) == len(via_tree)
    chk.add(cfg.key, "kineto events", f"{len(direct)} read directly vs {len(via_tree)} via the "
            "tree" + ("" if same else f"; first difference at {first}: "
                      f"{direct[first] if first is not None else '-'}"),
            "the same, device time aside", _pass(same))
    if chk.cuda:
        step = next(e for e in ours if e.name == "layertime::step")
        union, total = busy_us(session.kernels, step.start_us, step.end_us)
        charged = sum(e.device_us for e in ours if step.start_us <= e.start_us <= step.end_us)
        chk.add(cfg.key, "kernels", f"charged {charged / 1e3:.2f} ms vs device activities "
                f"{total / 1e3:.2f} ms (x{charged / total:.3f}); busy {union / 1e3:.2f} ms",
                "x1.00 +-1%", _pass(abs(charged / total - 1) <= 0.01))


def check_sessions(chk: Check, cfg: Config, n_plain: int, n_sessions: int) -> None:
    """Plain steps before and after several profiler sessions: CUPTI's residue."""
    prepared = cfg.prepare(chk.device)
    model, config, device = prepared.model, prepared.workload, prepared.device
    shape = check_input(model, config, device, prepared.label)
    table = ModuleTable(model)

    def plain() -> list[float]:
        out = []
        for _ in range(n_plain):
            _sync(device)
            t0 = time.perf_counter()
            work.step()
            _sync(device)
            out.append(time.perf_counter() - t0)
        return out

    with training_mode(model):
        work = Workload(model, config, device, shape)
        for _ in range(3):
            work.step()
        before = plain()
        t0 = time.perf_counter()
        for _ in range(n_sessions):
            trace_step(work, TraceSession(table, device))
        per_session = (time.perf_counter() - t0) / n_sessions
        after = plain()
    r = statistics.median(after) / statistics.median(before)
    chk.add(cfg.key, "after sessions", f"plain step x{r:.3f} after {n_sessions} sessions "
            f"({1e3 * statistics.median(before):.2f} -> {1e3 * statistics.median(after):.2f} ms;"
            f" {per_session:.2f} s per session; TEARDOWN_CUPTI="
            f"{os.environ.get('TEARDOWN_CUPTI', 'unset')})", "-", "INFO",
            before_s=before, after_s=after)


def check_time_limit(chk: Check, cfg: Config) -> None:
    prepared = cfg.prepare(chk.device)
    budget = 1.0 if chk.smoke else 3.0
    run = measure(prepared.model, prepared.workload, prepared.device, label=prepared.label,
                  options=MeasureOptions(steps=3, time_budget_s=budget, max_steps=20))
    rows = rows_s(run)
    err = abs(rows - run.profiled_step_s) / run.profiled_step_s
    chk.add(cfg.key, "time limit", f"--time-budget {budget:g}: {run.steps} pairs; rows add up "
            f"to the profiled step within {100 * err:.2g}%", "within 0.1%", _pass(err <= 1e-3))


def check_fp16(chk: Check, cfg: Config) -> None:
    prepared = cfg.prepare(chk.device, amp="fp16")
    run = measure(prepared.model, prepared.workload, prepared.device, label=prepared.label,
                  options=MeasureOptions(steps=1 if chk.smoke else 3, warmup_steps=1))
    skipped = [w for w in run.warnings if "skipped" in w]
    upd = sum(r.update_s for r in run.layers)
    chk.add(cfg.key + "-fp16", "loss scaling", f"update {1e3 * upd:.3f} ms per step; "
            + (skipped[0] if skipped else "no skipped update in measured steps"),
            "update > 0, no skip", _pass(upd > 0 and not skipped) if chk.cuda else "INFO")


def check_oom(chk: Check) -> None:
    """An out-of-memory error, then a normal run in the same process."""
    if chk.cuda:
        big = Config("vgg16-oom", "vgg16", 2048)
    else:
        big = None
    t0 = time.monotonic()
    msg = ""
    try:
        if big is not None:
            prepared = big.prepare(chk.device)
            measure(prepared.model, prepared.workload, prepared.device, label=prepared.label,
                    options=MeasureOptions(steps=1, warmup_steps=1))
            del prepared
        else:
            from torch import nn

            class Oom(nn.Module):
                """Raises what the allocator raises, past batch 2 (the CPU stand-in)."""

                def __init__(self) -> None:
                    super().__init__()
                    self.fc = nn.Linear(8, 4)

                def forward(self, x: torch.Tensor) -> torch.Tensor:
                    if x.shape[0] > 2:
                        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate "
                                                     "20.00 GiB (stand-in)")
                    return self.fc(x)

            m = Oom()

            measure(m, WorkloadSpec.create("test", batch_size=64, input_shape=(8,), num_classes=4),
                    torch.device("cpu"), label="oom-stand-in", options=MeasureOptions(steps=1))
    except LayertimeError as e:
        msg = str(e)
    if chk.cuda:
        torch.cuda.empty_cache()
    one_line = bool(msg) and "\n" not in msg
    small = SMOKE[0] if chk.smoke else FULL[0]
    _, run = profile_config(chk, small, steps=1, warmup=1)
    ok = one_line and run.steps == 1 and run.phases.total_s > 0
    chk.add("oom", "oom then run", f"{msg[:110]!r} then {small.key} ran "
            f"({1e3 * run.phases.total_s:.1f} ms) in {time.monotonic() - t0:.0f} s",
            "one-line error, then a normal run", _pass(ok))


def _ran(chk: Check, argv: list[str], out: Path, key: str, what: str) -> bool:
    """Run a torchrun command from the checkout; a failure (or no ``out``) is a MISS row."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=max(30, chk.left_s() - 5),
                       env=env, cwd=str(ROOT))
    if p.returncode == 0 and out.exists():
        return True
    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1][:150]
    chk.add(key, what, f"exit {p.returncode}: {tail}", "exit 0", "MISS", stderr=p.stderr[-4000:])
    return False


def check_torchrun(chk: Check, cfg: Config) -> None:
    out = (chk.out / "ddp.json").resolve()
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "layertime", "profile", cfg.model, "--ddp", "--device", str(chk.device),
            "--batch-size", str(cfg.batch_size), "--steps", "2", "--no-store", "--quiet",
            "--num-classes", str(cfg.num_classes), "--json", str(out)]
    if cfg.image_size:
        argv += ["--image-size", str(cfg.image_size)]
    t0 = time.monotonic()
    if not _ran(chk, argv, out, cfg.key, "torchrun 1 rank"):
        return
    run = Run.load(out)
    comm = run.comm_s
    layers = sum(r.forward_s + r.backward_s + r.update_s for r in run.layers)
    chk.add(cfg.key, "torchrun 1 rank", f"{run.backend}, world {run.world_size}: unprofiled "
            f"{1e3 * run.step_s:.2f} ms; layers {1e3 * layers:.2f} ms, comm {1e3 * comm:.2f} ms, "
            f"unattributed {1e3 * run.phases.unattributed_s:.2f} ms ({time.monotonic() - t0:.0f} s)",
            "exit 0, unattributed >= 0", _pass(run.phases.unattributed_s >= -1e-6),
            warnings=list(run.warnings))


def check_cli(chk: Check, cfg: Config) -> None:
    """The command a user types, on this device: its table as printed."""
    argv = [sys.executable, "-m", "layertime", "profile", cfg.model, "--device", str(chk.device),
            "--batch-size", str(cfg.batch_size), "--steps", "3", "--no-store", "--width", "100",
            "--num-classes", str(cfg.num_classes)]
    if cfg.image_size:
        argv += ["--image-size", str(cfg.image_size)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(argv, capture_output=True, text=True, timeout=max(30, chk.left_s() - 5),
                       env=env, cwd=str(ROOT))
    first = (p.stdout.strip().splitlines() or ["(no output)"])[0][:150]
    chk.add(cfg.key, "cli profile", f"exit {p.returncode}: {first}", "exit 0",
            _pass(p.returncode == 0), stdout=p.stdout[-6000:], stderr=p.stderr[-2000:])


def check_transformers(chk: Check) -> None:
    """GPT-2 small at seq 1024 (issue 11 on a GPU): attention vs MLP, agreement, overhead."""
    import transformers_bench  # benchmarks/transformers_bench.py, beside this file

    r = transformers_bench.gpu_check_transformers(device="cuda", seq_len=1024, batch_size=8,
                                                  steps=3, warmup=2)
    lt, ind = r["layertime"], r["independent"]
    roles = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["roles"].items()
                      if isinstance(v, (int, float)) and v >= 0.01)
    key = GPT2.key
    run = r.pop("run")
    chk.runs[key] = run
    chk.add(key, "overhead", f"x{r['overhead']:.3f} (step {r['step_ms']:.1f} ms)", "<= 1.05",
            _pass(r["overhead"] <= 1.05), **{k: v for k, v in r.items() if k != "headline"})
    for what, ours, diff in (("attention core", lt["core_busy_share"], r["core_busy_diff_points"]),
                             ("matmul", lt["matmul_busy_share"], r["matmul_busy_diff_points"])):
        chk.add(key, f"{what} agreement", f"of busy time: layertime {_pct(ours)}, "
                f"{diff:+.2f} pts from torch.profiler's kernel classes", "within 3 pts",
                _pass(abs(diff) <= 3))
    chk.add(key, "roles", f"{roles}; {r['headline'][:120]}", "-", "INFO")
    predict_builtin(chk, GPT2, run)


def check_compiled(chk: Check) -> None:
    """torch.compile on this device: kernels charged back to layers (issue 13)."""
    import compiled as compiled_bench  # benchmarks/compiled.py, beside this file

    r = compiled_bench.gpu_compile_check(batch_size=128, steps=3)
    diff = 100 * (r["conv_share_layertime"] - r["conv_share_independent"])
    chk.add("alexnet-compiled", "compiled unattributed", f"{_pct(r['unattributed_share'])} of "
            f"the step (placed {_pct(r['placed_share'])}); compile {r['compile_s']:.1f} s; step "
            f"{1e3 * r['step_s']:.2f} ms", "< 3%", _pass(r["unattributed_share"] < 0.03), **r)
    chk.add("alexnet-compiled", "compiled conv agreement", f"layertime {_pct(r['conv_share_layertime'])}"
            f" vs kernel names+provenance {_pct(r['conv_share_independent'])}: {diff:+.2f} pts",
            "within 3 pts", _pass(abs(diff) <= 3))
    chk.add("alexnet-compiled", "compiled overhead", f"x{r['overhead']:.3f}", "<= 1.10",
            _pass(r["overhead"] <= 1.10))


def check_cuda_tests(chk: Check) -> None:
    argv = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
            str(ROOT / "tests" / "test_cuda.py")]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=str(ROOT),
                       timeout=max(30, chk.left_s() - 5))
    last = (p.stdout.strip().splitlines() or ["(no output)"])[-1][:150]
    if chk.cuda:
        chk.add("tests", "pytest -m cuda", last, "all pass", _pass(p.returncode == 0),
                output=p.stdout[-3000:])
    else:
        # Without CUDA the file's tests deselect themselves (exit 5: none collected).
        chk.add("tests", "pytest -m cuda", last, "collects", _pass(p.returncode in (0, 5)))


def sharded_worker(out: str, device_name: str, smoke: bool) -> None:
    """One rank (of one) under torchrun: FSDP2 over a 1-rank mesh, then a 1-rank
    tensor-parallel mesh, each profiled as ``profile --fsdp``/``--tp`` profiles (NCCL on
    CUDA, gloo on the CPU); writes both runs' JSON to ``out``."""
    import torch.distributed as dist

    from layertime.measure.parallel.shard import _apply_tp, layout_of, make_mesh
    from layertime.measure.parallel.ranks import leave_process_group
    from layertime.measure.parallel.sharded import ShardedSync
    from layertime.measure.runner import MeasureOptions, measure
    from layertime.models import ModelRef
    from layertime.workload.sharding import ShardingSpec, tp_plan

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    config = (("n_layer=2", "n_embd=64", "n_head=4", "vocab_size=256", "n_positions=64")
              if smoke else
              ("n_layer=4", "n_embd=256", "n_head=4", "vocab_size=4096", "n_positions=256"))
    results = {}
    for mode in ("fsdp", "tp"):
        spec = WorkloadSpec.create(ModelRef("hf:gpt2", config), batch_size=2 if smoke else 4,
                                   seq_len=16 if smoke else 128, device=device_name)
        p = prepare(spec)
        if mode == "fsdp":
            from layertime.measure.parallel.shard import shard_model

            layout = shard_model(p.model, ShardingSpec(fsdp=True), 1, device, p.label).layout
        else:
            # A 1-rank tensor-parallel mesh runs DTensor's code with no peer: the plan is
            # applied as on K ranks (ShardingSpec itself refuses --tp 1).
            plan = tp_plan(p.model, 1, p.label)
            mesh = make_mesh(ShardingSpec(fsdp=True), 1, device.type)
            _apply_tp(p.model, plan, mesh["dp"])
            layout = layout_of(p.model, ShardingSpec(fsdp=True), 1, (), plan)
        sync = ShardedSync(layout, device)
        run = measure(p.model, p.workload, device, label=p.label,
                      options=MeasureOptions(steps=1 if smoke else 3,
                                             warmup_steps=1 if smoke else 2), sync=sync)
        results[mode] = sync.finish(run).to_dict()
    Path(out).write_text(json.dumps(results))
    del p, sync
    leave_process_group()  # the model freed first: gloo aborts at teardown otherwise


def check_sharded(chk: Check) -> None:
    """Sharded profiling (issue 19) on this device: FSDP2 and tensor parallelism over a
    1-rank mesh under torchrun, NCCL on CUDA (no peer: the code paths, hooks and charging
    run; the collectives themselves need two GPUs)."""
    out = (chk.out / "sharded.json").resolve()
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), __file__,
            "--sharded-worker", str(out), "--out", str(chk.out),
            "--device", str(chk.device), *(["--smoke"] if chk.smoke else [])]
    t0 = time.monotonic()
    if not _ran(chk, argv, out, "sharded", "fsdp+tp 1 rank"):
        return
    runs = {k: Run.from_dict(v) for k, v in json.loads(out.read_text()).items()}
    for mode, run in runs.items():
        rows = rows_s(run)
        diff = rows / run.profiled_step_s - 1
        calls: dict[str, float] = {}
        for c in run.collectives:
            calls[c.kind] = calls.get(c.kind, 0.0) + c.count
        kinds = ", ".join(f"{k}: {n:g} calls" for k, n in calls.items())
        chk.add("sharded", f"{mode} 1 rank", f"rows {1e3 * rows:.2f} ms vs profiled "
                f"{1e3 * run.profiled_step_s:.2f} ms ({diff:+.2%}); overhead "
                f"x{run.overhead_ratio:.3f}; comm {1e3 * run.comm_s:.3f} ms "
                f"({1e3 * run.phases.comm_exposed_s:.3f} exposed); {kinds or 'no collectives'}"
                f" ({time.monotonic() - t0:.0f} s)", "rows add up (0.1%)",
                _pass(abs(diff) < 1e-3), headline=run.headline(), warnings=list(run.warnings))


def check_callbacks_fsdp(chk: Check) -> None:
    """The framework callbacks on FSDP (issue 19; CUDA only: Lightning's FSDPStrategy and
    accelerate's FSDP refuse the CPU): one rank each, rows must add up and the units'
    collectives be charged."""
    out = chk.out.resolve()
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            str(ROOT / "tests" / "sharded" / "callbacks_fsdp.py"), str(out)]
    t0 = time.monotonic()
    if not _ran(chk, argv, out / "trainer.json", "callbacks-fsdp", "lightning+trainer"):
        return
    for name in ("lightning", "trainer"):
        path = out / f"{name}.json"
        if not path.exists():
            chk.add("callbacks-fsdp", name, "no result written", "a run", "MISS")
            continue
        run = Run.load(path)
        rows = rows_s(run)
        diff = rows / run.profiled_step_s - 1
        units = len(run.sharding.units) if run.sharding is not None else 0
        chk.add("callbacks-fsdp", name, f"units {units}; comm {1e3 * run.comm_s:.3f} ms "
                f"({1e3 * run.phases.comm_exposed_s:.3f} exposed); rows {diff:+.2%} of the "
                f"profiled step ({time.monotonic() - t0:.0f} s)", "rows add up, units found",
                _pass(abs(diff) < 1e-3 and units > 0), headline=run.headline())
def _device_ms_per_step(path: Path) -> tuple[float, int]:
    """The device activities (kernels, copies, memsets) a trace file holds inside its
    ProfilerStep#N windows, ms per step, read with the standard library alone."""
    events = json.loads(path.read_text())["traceEvents"]
    steps = [(e["ts"], e["ts"] + e.get("dur", 0)) for e in events
             if str(e.get("name", "")).startswith("ProfilerStep#") and e.get("cat") ==
             "user_annotation"]
    total = 0.0
    for e in events:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and any(
                a <= e.get("ts", -1) <= b for a, b in steps):
            total += float(e.get("dur", 0))
    return (total / 1e3 / len(steps) if steps else 0.0), len(steps)


def check_attribute_trace(chk: Check, cfg: Config) -> None:
    """``layertime attribute`` (issue 21) on this device: the model's steps recorded with the
    stock profiler as a user records them (CPU and CUDA activities, a schedule,
    ``with_stack=True``, ``record_shapes=True``, the loss read every step), attributed with
    ``--model``, against the live profile of the same model (this configuration's first
    run): each kind's share of the busy time (rows less unattributed: on CUDA, the GPU's
    kernel time) within 3 points; and the kernels charged to rows against the device
    activities the trace holds in its steps (1.00: none lost or counted twice)."""
    import tempfile

    import layertime

    live = chk.runs.get(cfg.key)
    if live is None:
        live = profile_config(chk, cfg, 1 if chk.smoke else 3, 1 if chk.smoke else 2)[1]
    prepared = cfg.prepare(chk.device)
    shape = check_input(prepared.model, prepared.workload, prepared.device, prepared.label)
    work = Workload(prepared.model, prepared.workload, prepared.device, shape)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if chk.cuda:
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    active = 1 if chk.smoke else 3
    with tempfile.TemporaryDirectory(prefix="gpu-check-trace-") as tmp, \
            training_mode(prepared.model):
        path = Path(tmp) / "trace.json"
        for _ in range(2):
            work.step()
        _sync(chk.device)
        with torch.profiler.profile(
                activities=acts, schedule=torch.profiler.schedule(wait=1, warmup=1, active=active),
                with_stack=True, record_shapes=True,
                on_trace_ready=lambda p: p.export_chrome_trace(str(path))) as prof:
            for _ in range(active + 2):
                float(work.step())  # a user's loop reads its loss: the step ends synchronised
                prof.step()
        mb = path.stat().st_size / 2**20
        t0 = time.perf_counter()
        run = layertime.attribute(path, cfg.model, num_classes=cfg.num_classes,
                                  image_size=cfg.image_size).run
        attr_s = time.perf_counter() - t0
        device_ms, n_steps = _device_ms_per_step(path)
    kinds = {k for r in (run, live) for k in r.by_kind() if k not in ("step", "unattributed")}
    diffs = {k: 100 * (busy_share(run, k) - busy_share(live, k)) for k in kinds
             if max(busy_share(run, k), busy_share(live, k)) >= 0.01}
    worst = max(diffs, key=lambda k: abs(diffs[k])) if diffs else "none"
    d = diffs.get(worst, 0.0)
    detail = ", ".join(f"{k} {_pct(busy_share(run, k))} vs {_pct(busy_share(live, k))}"
                       for k in sorted(diffs, key=lambda k: -busy_share(live, k))[:4])
    chk.add(cfg.key, "attribute trace", f"{run.steps} steps of a {mb:.1f} MB "
            f"{'CUDA' if chk.cuda else 'CPU'} trace attributed in {attr_s:.1f} s; busy-time "
            f"shares, trace vs live profile: {detail}; largest diff {worst} {d:+.2f} pts",
            "within 3 pts", _pass(abs(d) <= 3), diffs=diffs, timing=run.timing,
            trace_mb=mb, attribute_s=attr_s, headline=run.headline())
    if chk.cuda:
        charged = 1e3 * (run.phases.total_s - run.phases.unattributed_s)
        ratio = charged / device_ms if device_ms else math.nan
        chk.add(cfg.key, "attribute kernels", f"charged to rows {charged:.2f} ms per step vs "
                f"the trace's device activities in its {n_steps} steps {device_ms:.2f} ms "
                f"({ratio:.3f}); GPU idle {_pct(run.phases.unattributed_s / run.phases.total_s)}"
                f" of the traced step", "0.98-1.02", _pass(abs(ratio - 1) <= 0.02),
                notes=list(run.notes))


def write_reports(chk: Check) -> None:
    from layertime.render.html import write_html
    from layertime.render.trace import write_trace

    key = next(iter(chk.runs))
    run = chk.runs[key]
    _, cost = builtin_prediction(config_of(key), run)
    write_html(run, chk.out / f"{key}.html", cost=cost.to_dict())
    write_trace(run, chk.out / f"{key}-trace.json")
    chk.add(key, "reports", f"wrote {key}.html, {key}-trace.json", "-", "INFO")


# -- the table ---------------------------------------------------------------------
def render(rows: list[Row], width: int = 200) -> str:
    head = ("config", "check", "status", "target", "value")
    w0 = max(len(head[0]), *(len(r.config) for r in rows))
    w1 = max(len(head[1]), *(len(r.check) for r in rows))
    w3 = max(len(head[3]), *(len(r.target) for r in rows))
    lines = [f"{head[0]:<{w0}}  {head[1]:<{w1}}  {head[2]:<6}  {head[3]:<{w3}}  {head[4]}"]
    lines.append("-" * min(width, len(lines[0]) + 40))
    for r in rows:
        lines.append(f"{r.config:<{w0}}  {r.check:<{w1}}  {r.status:<6}  {r.target:<{w3}}  "
                     f"{r.value}")
    counts = collections.Counter(r.status for r in rows)
    lines.append("")
    lines.append("  ".join(f"{k} {counts[k]}" for k in ("PASS", "MISS", "INFO", "ERROR", "SKIP")
                           if counts[k]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the summary, run JSONs, reports")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (what the tests run)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole check (default 330, smoke 90)")
    ap.add_argument("--only", default="", help="comma-separated config keys to check")
    ap.add_argument("--sharded-worker", metavar="JSON", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sharded_worker:
        sharded_worker(args.sharded_worker, args.device, args.smoke)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("gpu_check: no CUDA device here (use --smoke for the CPU run)", file=sys.stderr)
        return 2
    chk = Check(out, args.smoke, args.budget or (90.0 if args.smoke else 330.0), device)
    env_line = f"torch {torch.__version__}, {device}"
    if chk.cuda:
        env_line += (f" ({torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}, cuDNN "
                     f"{torch.backends.cudnn.version()})")
    chk.facts["environment"] = env_line
    print(f"gpu_check: {env_line}", file=sys.stderr, flush=True)
    configs = SMOKE if args.smoke else FULL
    if args.only:
        keep = set(args.only.split(","))
        configs = tuple(c for c in configs if c.key in keep)
    repeats, steps, warmup = (2, 1, 1) if args.smoke else (3, 3, 2)
    if chk.cuda:
        # First: the sections that have never run on a GPU (GPT-2, torch.compile, sharded).
        with chk.section("gpt2-1024", "transformers", 40) as ok:
            if ok:
                check_transformers(chk)
        with chk.section("alexnet-compiled", "torch.compile", 90) as ok:
            if ok:
                check_compiled(chk)
    with chk.section("sharded", "fsdp+tp 1 rank", 60 if chk.cuda else 30) as ok:
        if ok:
            check_sharded(chk)
    if chk.cuda:
        with chk.section("callbacks-fsdp", "lightning+trainer", 60) as ok:
            if ok:
                check_callbacks_fsdp(chk)
    for cfg in configs:
        check_config(chk, cfg, repeats, steps, warmup)
    small = configs[0] if configs else (SMOKE[0] if args.smoke else FULL[0])
    with chk.section(small.key, "event ids", 10) as ok:
        if ok:
            check_event_ids(chk, small)
    with chk.section("fit", "calibrate, predict, fit", 60 if chk.cuda else 8) as ok:
        if ok:
            check_fit(chk)
    with chk.section(small.key, "after sessions", 15 if chk.cuda else 5) as ok:
        if ok:
            check_sessions(chk, small, 2 if args.smoke else 20, 2 if args.smoke else 5)
    with chk.section(small.key, "fp16", 10 if chk.cuda else 3) as ok:
        if ok:
            check_fp16(chk, small)
    with chk.section(small.key, "time limit", 10 if chk.cuda else 3) as ok:
        if ok:
            check_time_limit(chk, small)
    with chk.section("oom", "oom then run", 25 if chk.cuda else 3) as ok:
        if ok:
            check_oom(chk)
    with chk.section(small.key, "reports", 10 if chk.cuda else 5) as ok:
        if ok and chk.runs:
            write_reports(chk)
    with chk.section(small.key, "attribute trace", 25 if chk.cuda else 10) as ok:
        if ok:
            check_attribute_trace(chk, small)
    with chk.section(small.key, "torchrun 1 rank", 40 if chk.cuda else 20) as ok:
        if ok:
            ddp_cfg = Config(small.key, small.model, 32 if chk.cuda else 2,
                             image_size=small.image_size, num_classes=small.num_classes)
            check_torchrun(chk, ddp_cfg)
    with chk.section(small.key, "cli profile", 20 if chk.cuda else 10) as ok:
        if ok:
            check_cli(chk, Config(small.key, small.model, 32 if chk.cuda else 2,
                                  image_size=small.image_size, num_classes=small.num_classes))
    with chk.section("tests", "pytest -m cuda", 60 if chk.cuda else 15) as ok:
        if ok:
            check_cuda_tests(chk)
    chk.facts["elapsed_s"] = time.monotonic() - chk.start
    chk.save()
    print(f"layertime gpu_check — {env_line} — {chk.facts['elapsed_s']:.0f} s")
    print(render(chk.rows))
    print(f"\nwrote {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))}"
          f" in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
