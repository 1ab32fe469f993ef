"""Forward-compatible JSON: within a schema version fields may be added, so every reader
ignores keys it does not know, in every object of every schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from torch import nn

import factories
from layertime.cost import estimate, get_profile, predict
from layertime.cost.compare import join
from layertime.results.bench import BenchResult, LayerBench, RecordedInput
from layertime.results.compiled import (
    Compilation,
    CompiledSummary,
    FusedGroup,
    GraphBreak,
    GraphTotal,
)
from layertime.results.cost.estimate import CostResult
from layertime.results.parallel.comm import Link
from layertime.results.cost.sharded import ShardedCost
from layertime.results.cost.joined import Comparison
from layertime.results.parallel.data_parallel import BucketRow, LinkEstimate, RankRow
from layertime.results.run import Run, Slice
from layertime.results.parallel.sharded import CollectiveRow, ShardLayout
from layertime.results.trace import TraceSource
from layertime.results.memory import AtPeak, LayerAtPeak, MemoryMark, MemoryPoint, MemorySummary
from layertime.models import ModelRef
from layertime.results.sweep import Crossover, SeqCrossover, SummaryPoint, SweepSummary
from layertime.workload import ImageInput, InputSpec, TokenInput, WorkloadSpec
from layertime.cost.sharded.collectives import LayerLayout, ParamLayout
from layertime.cost.sharded.predict import LayerCompute, StepCompute
from layertime.cost.sharded.predict import predict as predict_sharded

UNKNOWN = "field_of_a_later_version"
#: Keys whose value is a free-form map (names to numbers, a configuration), not a record:
#: a key added inside one would be data, not a new field.
MAPS = frozenset({
    "layers_of_bucket", "phase_spread_s", "kinds", "prediction", "not_modelled_s",
    "conventions", "peak_tflops", "compute_efficiency", "memory_efficiency", "math_peaks",
    "config", "group", "not_counted", "arithmetic_intensity", "split_s", "unplaced_kernels",
    "roles", "blocks", "tp_layers", "matmul_tflops", "matmul_sizes", "skipped",
    "kernel_choices",
})


def augmented(obj: Any, key: str | None = None) -> Any:
    """``obj`` with an unknown key added to every record (JSON object) in it."""
    if isinstance(obj, dict):
        if key in MAPS:
            return obj
        out = {k: augmented(v, "layers_of_bucket" if key == "buckets" and k == "layers" else k)
               for k, v in obj.items()}
        out[UNKNOWN] = {"nested": [1, 2]}
        return out
    if isinstance(obj, list):
        return [augmented(v, key if key != "buckets" else "buckets") for v in obj]
    return obj


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: Any) -> Any:
        return self.fc(self.conv(x).flatten(1))


@pytest.fixture(scope="module")
def cost() -> CostResult:
    return predict(estimate(Net(), batch_size=2, input_shape=(3, 8, 8), num_classes=10),
                   get_profile("a100"))


@pytest.fixture(scope="module")
def run(cost: CostResult) -> Run:
    base = factories.run(
        [factories.layer("", "other", 0.001),
         factories.layer("conv", "conv", 0.01, 0.02, 0.001, 112, saved_bytes=2048,
                         params_bytes=448, grads_bytes=448, optimizer_state_bytes=448,
                         recompute_s=0.001, checkpointed=True),
         factories.layer("fc", "linear", 0.004, 0.008, 0.004, 2570, comm_s=0.002,
                         comm_exposed_s=0.001, comm_bytes=10280, role="mlp", block="h.0")],
        loss_s=0.002, zero_grad_s=0.001, compiled_wrapper_s=0.0004, update_step_s=0.0005,
        model="Net", batch_size=2, amp="bf16",
        phase_spread_s={"forward_s": 0.001},
        timeline=(Slice(0, "conv", "forward", 0.0, 0.01, 0.01),),
        world_size=2, backend="gloo", seq_len=8, notes=("fc shares 10 parameters",),
        ranks=(RankRow(0, "a", 0.05, 0.05, 0.04, 0.002, 0.001, 0.0, peak_bytes=9000,
                       saved_bytes=2048, params_bytes=448, grads_bytes=448,
                       optimizer_state_bytes=448),),
        memory=MemorySummary(
            "cpu-allocator", 9000, 0.01, "backward", "early backward", "conv",
            AtPeak(448, 448, 448, 2048, 5608, (LayerAtPeak("conv", 2048, 448, 448, 448),)),
            base_bytes=1500, forward_end_bytes=4000, saved_bytes=2100, loss_saved_bytes=52,
            step_s=0.05, timeline=(MemoryPoint(0.01, 9000, "backward", "conv"),),
            marks=(MemoryMark("peak", 0.01),), reserved_peak_bytes=None, rank=0,
            notes=("a note",)),
        buckets=(BucketRow(0, 10280, {"fc": 10280}, 0.003, 0.002, 0.001),),
        link=LinkEstimate(10.0, 5.0, "measured"),
        compiled=CompiledSummary(
            "inductor", None, True, compile_s=1.5, compile_steps=2,
            compilations=(Compilation("0/0", 1.2),), graph_breaks=(GraphBreak("print", "x.py:3"),),
            graphs=(GraphTotal("0/0 forward", "forward", 0.01, 0.009),),
            fused_groups=(FusedGroup("triton_poi_0", "0/0", "forward", ("conv", "fc"), 0.002,
                                     {"conv": 0.0015, "fc": 0.0005}),),
            unplaced_kernels={"k": 0.0001},
        ),
    )
    sharded = replace(
        base,
        sharding=ShardLayout("fsdp+tp", 4, 2, 2, True, ("h.0", ""), {"h.*.fc": "colwise"},
                             "test plan"),
        collectives=(CollectiveRow("all_gather", "forward", "unit", "h.0", 1.0, 4096, 0.001,
                                   0.0005, 0.0012),),
        trace=TraceSource(("a.pt.trace.json", "b.pt.trace.json.gz"), ("ProfilerStep#2",),
                          "model", "hf:gpt2", True, False, 1),
    )
    return replace(sharded, prediction=join(base, cost).to_dict())


def _round_trip(obj: Any, read: Callable[[dict[str, Any]], Any]) -> None:
    plain = json.loads(json.dumps(obj.to_dict()))
    assert read(augmented(plain)) == read(plain)


def test_run_reads_past_unknown_keys(run: Run) -> None:
    _round_trip(run, Run.from_dict)
    back = Run.from_dict(augmented(json.loads(run.to_json())))
    assert back.timeline and back.ranks and back.buckets and back.link and back.prediction
    assert back.compiled is not None and back.compiled.fused_groups[0].members == ("conv", "fc")
    assert back.sharding is not None and back.sharding.units == ("h.0", "")
    assert back.collectives == run.collectives
    assert back.memory == run.memory and back.memory is not None
    assert back.layers[1].saved_bytes == 2048 and back.layers[1].checkpointed
    assert back.ranks[0].peak_bytes == 9000


def test_cost_reads_past_unknown_keys(cost: CostResult) -> None:
    _round_trip(cost, CostResult.from_dict)
    back = CostResult.from_dict(augmented(json.loads(cost.to_json())))
    assert back.prediction is not None and back.layers[1].ops and back.loss.predicted


def test_prediction_reads_past_unknown_keys(run: Run, cost: CostResult) -> None:
    _round_trip(join(run, cost), Comparison.from_dict)


def test_calibration_with_a_grid_reads_past_unknown_keys() -> None:
    from layertime.results.cost.calibration import Calibration
    from layertime.results.cost.shape_grid import ConvPoint, GridPoint, Noise, OpCurve, ShapeGrid

    def gp(shape: tuple[int, ...], work: float, t: float) -> GridPoint:
        return GridPoint(shape, work, t, t * 1.1, 0.1, 2)

    axes = (8, 32)
    grid = ShapeGrid(
        "fp32", gp((1,), 12, 1e-6), axes, axes, axes,
        tuple(gp((m, n, k), 2.0 * m * n * k, 1e-5 * m * n * k / 512)
              for m in axes for n in axes for k in axes),
        (ConvPoint(gp((1, 3, 8, 8, 4, 3, 1, 1), 1728.0, 1e-5), (64, 4, 27), "backward_input"),),
        {"add": (gp((256,), 3072.0, 2e-6), gp((1024,), 12288.0, 4e-6))},
        Noise(0.2, 3, 45.0, 12, 1, 2, True, 2), elapsed_s=1.5, source="measured",
        op_curves=(OpCurve("aten.native_batch_norm", ("aten.native_batch_norm",),
                           (gp((1, 64, 16, 16), 197_376.0, 3e-5),)),
                   OpCurve("aten.bernoulli_", ("aten.bernoulli_",), (gp((1024,), 1024.0, 5e-6),),
                           "elements")))
    cal = Calibration("cpu", "CPU", "h", 2, "2.x", {"fp32": 0.2}, {"fp32": 2048}, 10.0, 12.0,
                      2**28, 5, "now", memory_gb=8.0, skipped={"fp16": "no"}, grid=grid,
                      load_before=1.0, load_after=1.2)
    _round_trip(cal, Calibration.from_dict)
    assert Calibration.from_dict(augmented(json.loads(json.dumps(cal.to_dict())))) == cal


def test_bench_reads_past_unknown_keys(run: Run) -> None:
    bench = BenchResult(
        model="Net", device="cpu", batch_size=2, input_shape=(3, 8, 8), dtype="float32",
        warmup=1, repeats=3, environment=run.environment, created="now", in_situ=run,
        layers=(LayerBench("conv", "conv", "Conv2d", 1, (RecordedInput((2, 3, 8, 8), "float32",
                                                                      False),),
                           0.001, 0.0, 0.002, 112),),
    )
    _round_trip(bench, BenchResult.from_dict)


def test_sweep_reads_past_unknown_keys() -> None:
    summary = SweepSummary(
        points=(SummaryPoint({"model": "m", "batch_size": 1}, "ok", 2, None, 0.1,
                             {"conv": 0.4, "linear": 0.6}, saved_bytes=100, peak_bytes=900),
                SummaryPoint({"model": "m", "batch_size": 8}, "failed", 3, "out of memory")),
        crossovers=(Crossover({"model": "m"}, 2.5, 1, 8),),
    )
    _round_trip(summary, SweepSummary.from_dict)
    tokens = SweepSummary(
        points=(SummaryPoint({"model": "hf:m", "batch_size": 1, "seq_len": 64}, "ok", 4, None,
                             0.1, {"linear": 0.6}, {"attention": 0.3, "mlp": 0.5}),),
        seq_crossovers=(SeqCrossover({"model": "hf:m"}, 181.0, 128, 256),),
    )
    _round_trip(tokens, SweepSummary.from_dict)
    assert SweepSummary.from_dict(augmented(tokens.to_dict())) == tokens


def test_sharded_reads_past_unknown_keys() -> None:
    layers = [LayerLayout("", "other", "Net", ""),
              LayerLayout("fc", "linear", "Linear", "fc", (ParamLayout((8, 4), 0),),
                          tp_style="colwise", features=(4, 8), tp_region=True, role="mlp",
                          block="h.0")]
    sc = predict_sharded(
        "Net", layers, ("fc", ""), world_size=4, dp=2, tp=2, fsdp=True,
        reshard_after_forward=True, batch_size=2, seq_len=8, dtype="float32", elem_bytes=4,
        dp_link=Link(10.0), tp_link=Link(100.0, 1.0, "nvlink"),
        compute=StepCompute({"fc": LayerCompute(0.001, 0.002, 0.0001)}, source="hand"),
        tp_plan_source="hand", measured={"fc": (0.001, 0.0005)}, measured_step_s=0.01,
        notes=("a note",))
    _round_trip(sc, ShardedCost.from_dict)
    back = ShardedCost.from_dict(augmented(json.loads(sc.to_json())))
    assert back == sc and back.tp_link is not None and back.layers[1].measured_comm_s == 0.001


@pytest.mark.parametrize("spec", [
    WorkloadSpec.create("alexnet", batch_size=8, image_size=64, amp="bf16"),
    WorkloadSpec("gpt", TokenInput(128), batch_size=2),
    WorkloadSpec(ModelRef("hf:gpt2", ("n_layer=2",)), TokenInput(64, 50257, "causal-lm")),
    WorkloadSpec("m"),
])
def test_workload_reads_past_unknown_keys(spec: WorkloadSpec) -> None:
    plain = json.loads(json.dumps(spec.to_dict()))
    assert WorkloadSpec.from_dict(augmented(plain)) == WorkloadSpec.from_dict(plain) == spec


def test_input_kinds_round_trip() -> None:
    for spec in (ImageInput((3, 32, 32)), TokenInput(64, vocab_size=100),
                 TokenInput(64, 100, "masked-lm")):
        assert InputSpec.from_dict(augmented(spec.to_dict())) == spec


def test_kinds_and_roles_a_newer_version_adds_still_add_up(run: Run) -> None:
    # Issue 22 added the kind "scan" and the roles "mixing", "experts", "router": a reader
    # must count rows of a kind or role it does not know, not drop them.
    d = json.loads(run.to_json())
    d["layers"][1]["kind"], d["layers"][1]["role"] = "future-kind", "future-role"
    back = Run.from_dict(d)
    kinds, roles = back.by_kind(), back.roles()
    assert "future-kind" in kinds and "future-role" in roles
    # Every row still counted: the shares add up as the run's own do.
    assert sum(k.share for k in kinds.values()) == pytest.approx(
        sum(k.share for k in run.by_kind().values()))
    assert sum(r.share for r in roles.values()) == pytest.approx(
        sum(r.share for r in run.roles().values()))
    # The new values themselves round-trip.
    for kind, role in (("scan", "mixing"), ("linear", "experts"), ("linear", "router")):
        d["layers"][1]["kind"], d["layers"][1]["role"] = kind, role
        assert role in Run.from_dict(json.loads(json.dumps(d))).roles()
