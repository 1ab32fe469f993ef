"""The kernel launch term and per-kind GPU efficiencies: worked by hand on made-up profiles.

A toy GPU of 10 TFLOP/s FP32 and 100 GB/s with 1 ms per kernel launched makes
every launch visible in the arithmetic (real latencies are microseconds).
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import factories
from factories import environment, layer
from layertime.cost import predict
from layertime.cost.devices import (
    GPU_KERNEL_LATENCY_S,
    TITANX_CAFFE_COMPUTE_EFFICIENCY,
    TITANX_CAFFE_KERNEL_LATENCY_S,
    TITANX_CAFFE_MEMORY_EFFICIENCY,
    DeviceProfile,
    builtin_profiles,
    get_profile,
    parse_profiles,
)
from layertime.cost.fit import LayerTimes, fit_efficiency, fit_layer_times
from layertime.cost.roofline import kernels_launched
from layertime.errors import LayertimeError
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts

MS = 1e-3
TOY = DeviceProfile("toy", "Toy GPU", {"fp32": 10.0}, 100.0, "test", kernel_latency_s=MS)


def _row(name: str, kind: str, ops: tuple[OpWork, ...]) -> LayerCost:
    phases = ("forward", "backward_input", "backward_weight", "update")
    flops = PhaseCounts(**{p: sum(w.flops for w in ops if w.phase == p) for p in phases})
    moved = PhaseCounts(**{p: sum(w.bytes_moved for w in ops if w.phase == p) for p in phases})
    return LayerCost(name, kind, kind, 0, 0, 1, flops, moved, MemoryBytes(), ops)


def _cost(layers: tuple[LayerCost, ...], batch: int = 8) -> CostResult:
    return CostResult("toy", batch, (3, 8, 8), 10, "float32", "sgd", layers,
                      _row("(loss)", "loss", ()))


CONV = _row("conv", "conv", (
    # 1.2e12 FLOPs: 1.2e12 / (10e12 x 0.6) = 0.2 s (memory 1e9 / 80e9 = 0.0125 s, smaller)
    OpWork("aten.convolution", "forward", 1, 1_200_000_000_000, 1_000_000_000, "formula", "conv"),
    OpWork("aten.convolution_backward", "backward_input", 1, 1_200_000_000_000, 1_000_000_000,
           "formula", "conv"),
    OpWork("aten.convolution_backward", "backward_weight", 1, 1_200_000_000_000,
           1_000_000_000, "formula", "conv"),
))
POOL = _row("pool", "pool", (
    # 8e9 B / (100e9 x 0.8) = 0.1 s; backward 16e9 B: 0.2 s
    OpWork("aten.max_pool2d_with_indices", "forward", 1, 0, 8_000_000_000, "none"),
    OpWork("aten.max_pool2d_with_indices_backward", "backward_input", 1, 0, 16_000_000_000,
           "none"),
))
DROP = _row("drop", "dropout", (
    # 1e9, 1e9 and 1.5e9 B at 80 GB/s: 0.0125 + 0.0125 + 0.01875 = 0.04375 s
    OpWork("aten.bernoulli_", "forward", 1, 0, 1_000_000_000, "not_counted"),
    OpWork("aten.div_", "forward", 1, 0, 1_000_000_000, "not_counted"),
    OpWork("aten.mul", "forward", 1, 0, 1_500_000_000, "not_counted"),
    OpWork("aten.mul", "backward_input", 1, 0, 1_500_000_000, "not_counted"),
))
RELU = _row("relu", "activation", (
    # three calls of one op: 3 kernels
    OpWork("aten.relu_", "forward", 3, 0, 4_000_000_000, "not_counted"),
))


def test_kernels_each_op_launches() -> None:
    pool_bw, conv_fw = POOL.ops[1], CONV.ops[0]
    # max-pool backward: the fill of grad_input, then the gather (ATen and Caffe alike)
    assert kernels_launched("pool", pool_bw, "cuda", 8) == 2
    assert kernels_launched("pool", pool_bw, "caffe", 8) == 2
    # one cuDNN convolution for the whole batch; Caffe: im2col, gemm, bias gemm per sample
    assert kernels_launched("conv", conv_fw, "cuda", 8) == 1
    assert kernels_launched("conv", conv_fw, "caffe", 8) == 3 * 8
    assert kernels_launched("conv", CONV.ops[1], "caffe", 8) == 2 * 8  # gemm, col2im
    assert kernels_launched("conv", CONV.ops[2], "caffe", 8) == 3 * 8  # bias, im2col, gemm
    # dropout as counted (bernoulli_, div_, mul): CUDA's one fused kernel, Caffe's rng + kernel
    fwd = [w for w in DROP.ops if w.phase == "forward"]
    assert sum(kernels_launched("dropout", w, "cuda", 8) for w in fwd) == 1
    assert sum(kernels_launched("dropout", w, "caffe", 8) for w in fwd) == 2
    # the same mul outside a dropout row is a kernel of its own
    assert kernels_launched("other", DROP.ops[2], "cuda", 8) == 1
    assert kernels_launched("activation", RELU.ops[0], "cuda", 8) == 3  # one per call
    with pytest.raises(LayertimeError, match="unknown kernel set"):
        kernels_launched("conv", conv_fw, "tpu", 8)


def test_launch_term_by_hand_cuda() -> None:
    p = predict(_cost((CONV, POOL, DROP, RELU)), TOY)
    conv, pool, drop, relu = (r.predicted for r in p.layers)
    assert conv is not None and pool is not None and drop is not None and relu is not None
    # roofline + kernels x 1 ms
    assert conv.forward_s == pytest.approx(0.2 + 1 * MS)
    assert conv.backward_s == pytest.approx(0.4 + 2 * MS)
    assert pool.forward_s == pytest.approx(0.1 + 1 * MS)
    assert pool.backward_s == pytest.approx(0.2 + 2 * MS)
    assert drop.forward_s == pytest.approx(0.04375 + 1 * MS)
    assert drop.backward_s == pytest.approx(0.01875 + 1 * MS)
    assert relu.forward_s == pytest.approx(4e9 / 80e9 + 3 * MS)
    assert p.prediction is not None
    assert p.prediction.kernel_latency_s == MS and p.prediction.kernels == "cuda"
    d = p.to_dict()["prediction"]
    assert d["kernel_latency_s"] == MS and d["kernels"] == "cuda"
    back = CostResult.from_json(p.to_json())
    assert back.prediction is not None and back.prediction.kernel_latency_s == MS


def test_launch_term_by_hand_caffe_per_sample() -> None:
    caffe = replace(TOY, kernels="caffe")
    p = predict(_cost((CONV, POOL), batch=8), caffe)
    conv = p.layers[0].predicted
    assert conv is not None
    # forward 3 kernels x 8 samples; backward (2 + 3) x 8
    assert conv.forward_s == pytest.approx(0.2 + 24 * MS)
    assert conv.backward_s == pytest.approx(0.4 + 40 * MS)
    # batch 2: a quarter of the launches
    conv2 = predict(_cost((CONV,), batch=2), caffe).layers[0].predicted
    assert conv2 is not None and conv2.forward_s == pytest.approx(0.2 + 6 * MS)


def test_no_latency_no_launch_term() -> None:
    plain = replace(TOY, kernel_latency_s=0.0)
    conv = predict(_cost((CONV,)), plain).layers[0].predicted
    assert conv is not None and conv.forward_s == pytest.approx(0.2)


def test_profile_efficiencies_and_latency_together() -> None:
    dev = replace(TOY, compute_efficiency={"conv": 0.3}, memory_efficiency={"pool": 0.4})
    p = predict(_cost((CONV, POOL)), dev)
    conv, pool = (r.predicted for r in p.layers)
    assert conv is not None and pool is not None
    # 1.2e12 / (10e12 x 0.3) = 0.4 s; 8e9 / (100e9 x 0.4) = 0.2 s
    assert conv.forward_s == pytest.approx(0.4 + MS)
    assert pool.forward_s == pytest.approx(0.2 + MS)
    assert pool.backward_s == pytest.approx(0.4 + 2 * MS)


# -- fitting the latency and the efficiencies ------------------------------------------
def _small_and_large() -> CostResult:
    large = _row("large", "conv", (
        OpWork("aten.convolution", "forward", 1, 1_000_000_000_000, 1000, "formula", "conv"),))
    small = _row("small", "conv", (
        OpWork("aten.convolution", "forward", 100, 10_000_000_000, 1000, "formula", "conv"),))
    relu = _row("relu", "activation", (
        OpWork("aten.relu_", "forward", 1, 0, 8_000_000_000, "not_counted"),))
    return _cost((large, small, relu))


def test_fit_layer_times_recovers_latency_and_efficiencies() -> None:
    # Made with latency 0.1 ms, conv efficiency 0.5, memory efficiency 0.8:
    #   large: 1e12 / (10e12 x 0.5) + 1 kernel   = 0.2 + 0.0001  = 0.2001 s
    #   small: 1e10 / (10e12 x 0.5) + 100 kernels = 0.002 + 0.01 = 0.012 s
    #   relu:  8e9 / (100e9 x 0.8) + 1 kernel    = 0.1 + 0.0001  = 0.1001 s
    measured = {"large": 0.2001, "small": 0.012, "relu": 0.1001}
    start = replace(TOY, kernel_latency_s=0.0)
    fit = fit_layer_times([LayerTimes("toy", _small_and_large(), measured)], start,
                          latencies_s=(0.0, 1e-4, 1e-3))
    assert fit.kernel_latency_s == 1e-4
    # conv: (0.1 + 0.001) / c = 0.2121 - 0.0101 (launches)  ->  c = 0.101 / 0.202 = 0.5
    assert fit.fitted("compute") == {"conv": pytest.approx(0.5, rel=1e-12)}
    assert fit.fitted("memory") == {"activation": pytest.approx(0.8, rel=1e-12)}
    assert fit.rms_log_error == pytest.approx(0.0, abs=1e-9) and fit.judged_rows == 3
    # Without a launch term one efficiency cannot explain both convolutions:
    # 0.101 / c = 0.2121 -> c = 0.4762, the large one predicted 0.21 s, the small 0.0021 s.
    no_launch = fit_layer_times([LayerTimes("toy", _small_and_large(), measured)], start,
                                latencies_s=(0.0,))
    assert no_launch.fitted("compute")["conv"] == pytest.approx(0.101 / 0.2121, rel=1e-12)
    assert no_launch.rms_log_error > 1.0
    # The fitted profile reproduces every row.
    fitted = fit.apply(start)
    assert fitted.kernel_latency_s == 1e-4 and "kernel latency 100 us" in str(
        fitted.efficiency_source)
    for r in predict(_small_and_large(), fitted).layers:
        assert r.predicted is not None
        assert r.predicted.forward_s == pytest.approx(measured[r.name], rel=1e-12)


def test_fit_layer_times_over_two_models_and_its_checks() -> None:
    one = {"large": 0.2001, "small": 0.012}
    two = {"relu": 0.1001, "small": 0.012}
    fit = fit_layer_times([LayerTimes("a", _small_and_large(), one),
                           LayerTimes("b", _small_and_large(), two)], replace(TOY),
                          latencies_s=(0.0, 1e-4))
    assert fit.kernel_latency_s == 1e-4 and fit.labels == ("a", "b")
    assert fit.fitted("compute")["conv"] == pytest.approx(0.5, rel=1e-12)
    assert fit.to_dict()["kernel_latency_s"] == 1e-4
    with pytest.raises(LayertimeError, match="no row named 'nope'"):
        fit_layer_times([LayerTimes("a", _small_and_large(), {"nope": 1.0})], TOY)
    with pytest.raises(LayertimeError, match="nothing to fit"):
        fit_layer_times([], TOY)
    with pytest.raises(LayertimeError, match="latencies"):
        fit_layer_times([LayerTimes("a", _small_and_large(), one)], TOY, latencies_s=(-1.0,))


def test_fit_efficiency_leaves_the_launches_out_of_the_efficiency() -> None:
    """calibrate --fit on a profile with a kernel latency: the roofline makes up the rest."""
    cost = _small_and_large()
    run = factories.run(
        [layer("large", "conv", 0.2001, type="Conv"), layer("small", "conv", 0.012, type="Conv"),
         layer("relu", "activation", 0.1001, type="ReLU")],
        model="toy", device="cuda", batch_size=8, environment=environment(device="cuda",
                                                                          device_name="Toy GPU"))
    fit = fit_efficiency(run, cost, replace(TOY, kernel_latency_s=1e-4))
    by_kind = {k.kind: k for k in fit.kinds}
    assert by_kind["conv"].efficiency == pytest.approx(0.5, rel=1e-12)
    assert by_kind["activation"].efficiency == pytest.approx(0.8, rel=1e-12)
    assert by_kind["conv"].predicted_s == pytest.approx(0.2121, rel=1e-12)
    # More launches than the measured time: capped, and the reason says why.
    slow = replace(TOY, kernel_latency_s=1e-3)  # 101 kernels x 1 ms = 0.101 s of 0.2121 s
    assert {k.kind: k.status for k in fit_efficiency(run, cost, slow).kinds}["conv"] == "fitted"
    slower = replace(TOY, kernel_latency_s=3e-3)  # 0.303 s of launches > 0.2121 s measured
    conv = {k.kind: k for k in fit_efficiency(run, cost, slower).kinds}["conv"]
    assert conv.status == "capped" and "kernel launches" in conv.reason


# -- profiles ------------------------------------------------------------------------
def test_toml_kernel_latency_and_kernels() -> None:
    text = """
[devices.lab]
fp32_tflops = 10
memory_bandwidth_gb_per_s = 100
kernel_latency_us = 2.5
kernels = "caffe"
"""
    lab = parse_profiles(text, "lab.toml")["lab"]
    assert lab.kernel_latency_s == pytest.approx(2.5e-6) and lab.kernels == "caffe"
    plain = parse_profiles(text.replace('kernels = "caffe"\n', "").replace(
        "kernel_latency_us = 2.5\n", ""))["lab"]
    assert plain.kernel_latency_s == 0.0 and plain.kernels == "cuda"
    with pytest.raises(LayertimeError, match=r"lab.toml:6 \[devices.lab\]: kernels must be one"):
        parse_profiles(text.replace('"caffe"', '"tpu"'), "lab.toml")
    with pytest.raises(LayertimeError, match=r"lab.toml:5 .*kernel_latency_us must be a number"):
        parse_profiles(text.replace("2.5", "-1"), "lab.toml")
    with pytest.raises(LayertimeError, match="kernels must be one of"):
        DeviceProfile("x", "x", {"fp32": 1.0}, 1.0, "t", kernels="tpu")
    with pytest.raises(LayertimeError, match="kernel latency must be >= 0"):
        DeviceProfile("x", "x", {"fp32": 1.0}, 1.0, "t", kernel_latency_s=-1.0)


def test_titanx_profile_is_the_caffe_fit_with_its_source() -> None:
    t = get_profile("titanx-maxwell")
    assert t.kernels == "caffe" and t.kernel_latency_s == TITANX_CAFFE_KERNEL_LATENCY_S
    assert 1e-6 < t.kernel_latency_s < 1e-5  # microseconds, as a launch takes
    assert dict(t.compute_efficiency) == dict(TITANX_CAFFE_COMPUTE_EFFICIENCY)
    assert dict(t.memory_efficiency) == dict(TITANX_CAFFE_MEMORY_EFFICIENCY)
    assert t.efficiency_source is not None and "Caffe" in t.efficiency_source
    assert "Caffe-era per-layer timing" in t.efficiency_source
    for v in (*t.compute_efficiency.values(), *t.memory_efficiency.values()):
        assert 0 < v <= 1
    p = predict(_cost((POOL,)), t)
    assert p.prediction is not None and p.prediction.efficiency_source == t.efficiency_source
    assert p.prediction.memory_efficiency["pool"] == TITANX_CAFFE_MEMORY_EFFICIENCY["pool"]


def test_other_gpu_profiles_carry_the_latency_and_say_so() -> None:
    for key, prof in builtin_profiles().items():
        if key == "titanx-maxwell":
            continue
        assert prof.kernels == "cuda" and prof.kernel_latency_s == GPU_KERNEL_LATENCY_S, key
        assert not prof.compute_efficiency and not prof.memory_efficiency, key
        assert prof.efficiency_source is not None
        assert "uncalibrated" in prof.efficiency_source and "titanx" in prof.efficiency_source


# -- the shipped numbers are the fit's (needs the reference logs) ----------------------
#: The published Caffe timings (a copy of ../shared/reference, kept with the benchmark).
REFERENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "reference"


@pytest.mark.slow
def test_shipped_titanx_numbers_are_the_fit_on_both_logs() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "caffe_reference.py"
    spec = importlib.util.spec_from_file_location("caffe_reference", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    try:
        spec.loader.exec_module(bench)
        nets = bench.load_networks(REFERENCE)
    finally:
        del sys.modules[spec.name]
    shipped = get_profile("titanx-maxwell")
    start = replace(shipped, compute_efficiency={}, memory_efficiency={}, kernel_latency_s=0.0)
    fit = fit_layer_times([n.layer_times() for n in nets], start)
    assert fit.kernel_latency_s == pytest.approx(shipped.kernel_latency_s, abs=5e-9)
    for k, v in fit.fitted("compute").items():
        assert shipped.compute_efficiency[k] == pytest.approx(v, abs=5e-4), k
    for k, v in fit.fitted("memory").items():
        assert shipped.memory_efficiency[k] == pytest.approx(v, abs=5e-4), k
    # and the logs are what the reference README says they are
    with (REFERENCE / "caffe-titanx-overfeat.csv").open() as f:
        total_ms = sum(float(r["forward_ms"]) + float(r["backward_ms"]) for r in csv.DictReader(f))
    assert math.isclose(total_ms, 429.76, abs_tol=0.01)
