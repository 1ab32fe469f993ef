"""Roofline predictions: worked by hand on made-up profiles, and always labelled as estimates."""

from __future__ import annotations

import pytest

from layertime.cost.devices import DeviceProfile, get_profile
from layertime.cost.roofline import Efficiency, MathMode, math_peaks, predict
from layertime.errors import LayertimeError
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts

#: 10 TFLOP/s FP32, 40 TF32, 80 BF16; 100 GB/s.
DEV = DeviceProfile(
    key="toy",
    name="Toy GPU",
    peak_tflops={"fp32": 10.0, "tf32": 40.0, "bf16": 80.0},
    memory_bandwidth_gb_per_s=100.0,
    source="test",
    memory_gb=1.0,
)


def _row(name: str, kind: str, ops: tuple[OpWork, ...]) -> LayerCost:
    f: dict[str, int] = {}
    b: dict[str, int] = {}
    for w in ops:
        f[w.phase] = f.get(w.phase, 0) + w.flops
        b[w.phase] = b.get(w.phase, 0) + w.bytes_moved
    return LayerCost(name, kind, kind, 0, 0, 1, PhaseCounts(**f), PhaseCounts(**b), MemoryBytes(), ops)


def _cost(dtype: str = "float32", saved: int = 0) -> CostResult:
    conv = _row(
        "conv",
        "conv",
        (
            # 1.2e12 FLOPs, 1e9 bytes: compute-bound on every peak here
            OpWork("aten.convolution", "forward", 1, 1_200_000_000_000, 1_000_000_000, "formula", "conv"),
            OpWork(
                "aten.convolution_backward", "backward_input", 1, 1_200_000_000_000,
                1_000_000_000, "formula", "conv",
            ),
            OpWork(
                "aten.convolution_backward", "backward_weight", 1, 1_200_000_000_000,
                1_000_000_000, "formula", "conv",
            ),
            # 8e9 bytes, 48e6 FLOPs: memory-bound
            OpWork("update.sgd", "update", 2, 48_000_000, 8_000_000_000, "formula", "other"),
        ),
    )
    fc = _row(
        "fc",
        "linear",
        (OpWork("aten.addmm", "forward", 1, 700_000_000_000, 1_000_000_000, "formula", "matmul"),),
    )
    relu = _row(
        "relu",
        "activation",
        (OpWork("aten.relu_", "forward", 1, 0, 4_000_000_000, "not_counted", "other"),),
    )
    relu = LayerCost(
        relu.name, relu.kind, relu.type, 0, 0, 1, relu.flops, relu.bytes_moved,
        MemoryBytes(saved_activations=saved), relu.ops,
    )
    loss = _row("(loss)", "loss", ())
    return CostResult("toy", 8, (3, 8, 8), 10, dtype, "sgd", (conv, fc, relu), loss)


def test_compute_bound_memory_bound_and_phases_by_hand() -> None:
    p = predict(_cost(), DEV)
    conv, fc, relu = p.layers
    assert conv.predicted is not None and fc.predicted is not None and relu.predicted is not None
    # conv, float32 with torch's default TF32 for convolutions: 1.2e12 / (40e12 * 0.6) = 0.05 s
    # (memory: 1e9 / (100e9 * 0.8) = 0.0125 s, smaller)
    assert conv.predicted.forward_s == pytest.approx(0.05)
    assert conv.predicted.backward_s == pytest.approx(0.10)
    # update: 8e9 / (100e9 * 0.8) = 0.1 s (compute 48e6 / (10e12 * 0.5), tiny)
    assert conv.predicted.update_s == pytest.approx(0.1)
    # fc, matmul in FP32 (torch's default): 7e11 / (10e12 * 0.7) = 0.1 s
    assert fc.predicted.forward_s == pytest.approx(0.1)
    # relu: no counted FLOPs, 4e9 / 80e9 = 0.05 s
    assert relu.predicted.forward_s == pytest.approx(0.05)
    assert p.predicted is not None and p.predicted.total_s == pytest.approx(0.4)
    kinds = p.by_kind()
    assert kinds["conv"].predicted_share == pytest.approx(0.25 / 0.4)


def test_math_modes_choose_the_peaks() -> None:
    assert math_peaks(DEV, "float32") == {"conv": "tf32", "matmul": "fp32", "other": "fp32"}
    assert math_peaks(DEV, "float32", MathMode(False, False))["conv"] == "fp32"
    assert math_peaks(DEV, "float32", MathMode(True, True))["matmul"] == "tf32"
    assert math_peaks(DEV, "bfloat16") == {"conv": "bf16", "matmul": "bf16", "other": "fp32"}
    v100 = get_profile("v100")  # no TF32 and no BF16: FP32 rate
    assert math_peaks(v100, "float32") == {"conv": "fp32", "matmul": "fp32", "other": "fp32"}
    assert math_peaks(v100, "bfloat16")["conv"] == "fp32"
    with pytest.raises(LayertimeError, match="no fp64_tflops"):
        math_peaks(DEV, "float64")
    p = predict(_cost(), DEV, mode=MathMode(False, False))
    # conv at FP32: 1.2e12 / (10e12 * 0.6) = 0.2 s
    assert p.layers[0].predicted is not None
    assert p.layers[0].predicted.forward_s == pytest.approx(0.2)
    bf16 = predict(_cost("bfloat16"), DEV)
    # conv at BF16: 1.2e12 / (80e12 * 0.6) = 0.025 s (its memory time is 0.0125 s)
    assert bf16.layers[0].predicted is not None
    assert bf16.layers[0].predicted.forward_s == pytest.approx(0.025)


def test_efficiencies_from_profile_then_argument() -> None:
    dev = DeviceProfile(
        "toy2", "Toy 2", {"fp32": 10.0, "tf32": 40.0}, 100.0, "test",
        compute_efficiency={"conv": 0.3}, memory_efficiency={"default": 0.5},
    )
    p = predict(_cost(), dev)
    assert p.prediction is not None
    assert p.prediction.compute_efficiency["conv"] == 0.3
    assert p.prediction.compute_efficiency["linear"] == 0.7  # default kept
    assert p.prediction.efficiency_source == "device profile toy2"
    # 1.2e12 / (40e12 * 0.3) = 0.1 s
    assert p.layers[0].predicted is not None
    assert p.layers[0].predicted.forward_s == pytest.approx(0.1)
    # relu: 4e9 / (100e9 * 0.5) = 0.08 s
    assert p.layers[2].predicted is not None
    assert p.layers[2].predicted.forward_s == pytest.approx(0.08)
    calib = Efficiency({"default": 0.5, "conv": 1.0}, {"default": 1.0}, "calibration 2024-01-01")
    q = predict(_cost(), dev, calib)
    assert q.prediction is not None and q.prediction.efficiency_source == "calibration 2024-01-01"
    assert q.layers[0].predicted is not None
    assert q.layers[0].predicted.forward_s == pytest.approx(1.2e12 / 40e12)


def test_efficiency_must_be_a_fraction_with_a_default() -> None:
    with pytest.raises(LayertimeError, match="'default'"):
        Efficiency({"conv": 0.5}, {"default": 0.8})
    with pytest.raises(LayertimeError, match=r"in \(0, 1\]"):
        Efficiency({"default": 1.5}, {"default": 0.8})


def test_prediction_is_labelled_and_warns_about_memory() -> None:
    p = predict(_cost(saved=2_000_000_000), DEV)
    d = p.to_dict()
    assert d["prediction"]["label"] == "estimate"
    assert d["prediction"]["efficiency_source"].startswith("defaults")
    assert any("more than the 1 GB of Toy GPU" in w for w in p.warnings)
    assert not predict(_cost(), DEV).warnings


def test_prediction_does_not_change_the_counts() -> None:
    c = _cost()
    p = predict(c, DEV)
    assert [r.flops for r in p.rows] == [r.flops for r in c.rows]
    assert c.prediction is None and all(r.predicted is None for r in c.rows)
