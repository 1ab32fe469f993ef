"""CUDA-only tests: the GPU path end to end.  Deselected where there is no GPU
(conftest says how many); ``benchmarks/gpu_check.py`` runs them with ``-m cuda``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.events import busy_us, from_profiler
from layertime.measure.runner import MeasureOptions, measure, trace_step
from layertime.measure.tracer import TraceSession
from layertime.modules import ModuleTable, training_mode
from layertime.workload import Workload, WorkloadSpec, check_input

pytestmark = pytest.mark.cuda

DEV = torch.device("cuda")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(64 * 16, 256), nn.ReLU(), nn.Linear(256, 10),
    ).to(DEV)


def _config(**kw: object) -> WorkloadSpec:
    return WorkloadSpec.create("test", batch_size=32, input_shape=(3, 32, 32), num_classes=10, **kw)  # type: ignore[arg-type]


def test_rows_add_up_to_the_profiled_step_on_cuda() -> None:
    run = measure(_net(), _config(), DEV, label="net", options=MeasureOptions(steps=3))
    assert run.timing == "cuda-kernel-time"
    # At least 10 unprofiled steps on CUDA: their median is the rows' reference.
    assert run.steps == 3 and len(run.step_samples_s) == 10
    assert len(run.traced_step_samples_s) == 3
    rows = sum(r.total_s for r in run.layers) + run.phases.loss_s + run.phases.zero_grad_s \
        + run.phases.data_s + run.phases.unattributed_s
    assert rows == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert run.phases.unattributed_s >= -0.01 * run.profiled_step_s
    conv = sum(r.forward_s + r.backward_s for r in run.layers if r.kind == "conv")
    assert conv > 0
    assert run.environment.matmul_tf32 is not None


def _one_traced_step() -> tuple[TraceSession, list]:  # type: ignore[type-arg]
    model, cfg = _net(), _config()
    shape = check_input(model, cfg, DEV, "net")
    table = ModuleTable(model)
    with training_mode(model):
        work = Workload(model, cfg, DEV, shape)
        work.step()
        s = TraceSession(table, DEV)
        trace_step(work, s)
        events = s.events
    return s, events


def test_profiler_ids_are_unique_and_runtime_calls_dropped() -> None:
    session, events = _one_traced_step()
    assert len({e.id for e in events}) == len(events)
    assert not any(e.name.startswith(("cudaLaunchKernel", "cuLaunchKernel")) for e in events)
    by_id = {e.id: e for e in events}
    for e in events:
        seen = set()
        p = e.parent
        while p is not None:
            assert p not in seen
            seen.add(p)
            p = by_id[p].parent
    # Converting again from the raw events gives the same (deterministic).
    again = from_profiler(session.profiler.events())
    assert [(e.name, e.parent) for e in again] == [(e.name, e.parent) for e in events]


def test_kernel_time_charged_equals_the_device_activities() -> None:
    session, events = _one_traced_step()
    step = next(e for e in events if e.name == "layertime::step")
    union, total = busy_us(session.kernels, step.start_us, step.end_us)
    charged = sum(e.device_us for e in events if step.start_us <= e.start_us <= step.end_us)
    assert total > 0
    assert charged == pytest.approx(total, rel=0.01)
    assert union <= total + 1e-6


def test_fp16_loss_scaling_settles_before_the_measured_steps() -> None:
    run = measure(_net(), _config(amp="fp16"), DEV, label="net",
                  options=MeasureOptions(steps=3))
    assert sum(r.update_s for r in run.layers) > 0
    assert not any("skipped" in w for w in run.warnings)


def test_calibration_at_small_size_after_the_new_tf32_api() -> None:
    from layertime.measure.calibrate import calibrate

    m = torch.backends.cuda.matmul
    old = getattr(m, "fp32_precision", None)
    try:
        if old is not None:
            m.fp32_precision = "tf32"  # after this, reading allow_tf32 raises on new torch
        cal = calibrate(DEV, matmul_size=1024, memory_mb=64, repeats=2)
    finally:
        if old is not None:
            m.fp32_precision = old
    assert cal.matmul_tflops["fp32"] > 0 and cal.matmul_tflops.get("tf32", 0) > 0
    assert cal.memory_bandwidth_gb_per_s > 0


def test_out_of_memory_then_a_normal_run() -> None:
    free, _ = torch.cuda.mem_get_info()
    # Leave about 256 MiB free, then ask for a batch whose activations need more.
    blocker = torch.empty(max(0, free - 2**28), dtype=torch.uint8, device=DEV)
    big = WorkloadSpec.create("test", batch_size=4096, input_shape=(3, 32, 32), num_classes=10)
    try:
        with pytest.raises(LayertimeError) as err:
            measure(_net(), big, DEV, label="net", options=MeasureOptions(steps=1))
    finally:
        del blocker
        torch.cuda.empty_cache()
    assert "\n" not in str(err.value)
    assert "memory" in str(err.value)
    run = measure(_net(), _config(), DEV, label="net", options=MeasureOptions(steps=1))
    assert math.isfinite(run.profiled_step_s)
