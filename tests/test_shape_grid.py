"""The shape grid of ``layertime calibrate``: interpolation by hand, the noisy-repeat logic
with an injected timer, round trips through JSON and TOML, old calibrations without a grid,
predictions that look rates up by shape, and the CLI's summary at 80 columns.  No test
asserts how fast anything runs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from layertime.cli import main
from layertime.cost import estimate, predict
from layertime.cost.calibrate import to_profile
from layertime.cost.devices import DeviceProfile, load_profiles, parse_profiles
from layertime.cost.profile_file import save_profile
from layertime.measure.calibrate_grid import NoisePolicy, PointTiming, measure_points, time_point
from layertime.results.cost.calibration import Calibration
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts
from layertime.results.cost.shape_grid import (
    ConvPoint,
    GridPoint,
    Noise,
    ShapeGrid,
    conv_family,
    narrow_conv,
)

AXES = (8, 32)
#: GFLOP/s of each GEMM point, by (M, N, K): larger sides run faster (less than 4x faster:
#: more work never takes less time).
RATES = {(m, n, k): 1e9 * (1 + 0.5 * (m == 32)) * (1 + (n == 32)) * (1 + 2 * (k == 32))
         for m in AXES for n in AXES for k in AXES}
FIXED_S = 1e-6


def _gp(shape: tuple[int, ...], work: float, net_s: float, spread: float = 0.0,
        rounds: int = 1) -> GridPoint:
    """A point whose time is the fixed cost plus ``net_s``."""
    t = FIXED_S + net_s
    return GridPoint(shape, work, t, t * (1 + spread), spread, rounds)


def _grid(conv: tuple[ConvPoint, ...] = ()) -> ShapeGrid:
    gemm = tuple(_gp((m, n, k), 2.0 * m * n * k, 2.0 * m * n * k / RATES[(m, n, k)])
                 for m in AXES for n in AXES for k in AXES)
    sizes = (1000.0, 100_000.0)
    memory = {op: tuple(_gp((int(b / 4),), b, b / r) for b, r in zip(sizes, (1e9, 1e10)))
              for op in ("copy", "add", "reduce")}
    return ShapeGrid("fp32", _gp((1,), 12, 0.0), AXES, AXES, AXES, gemm, conv, memory,
                     Noise(0.2, 3, 10.0, 1 + len(gemm) + 6, 0, 0), elapsed_s=1.0,
                     source="hand-made")


# -- interpolation ------------------------------------------------------------------
def test_a_grid_point_returns_its_own_rate() -> None:
    g = _grid()
    for shape, rate in RATES.items():
        look = g.gemm_flops_per_s(*shape)
        assert look.per_s == pytest.approx(rate, rel=1e-9) and not look.clamped


def test_between_points_the_rate_is_log_linear_and_monotone() -> None:
    g = _grid()
    # M = 16 is the geometric midpoint of 8 and 32: the rate is the geometric mean.
    mid = g.gemm_flops_per_s(16, 8, 8).per_s
    assert mid == pytest.approx(math.sqrt(RATES[(8, 8, 8)] * RATES[(32, 8, 8)]), rel=1e-9)
    ks = [8, 10, 13, 16, 20, 25, 32]
    rates = [g.gemm_flops_per_s(8, 8, k).per_s for k in ks]
    assert rates == sorted(rates) and rates[0] < rates[-1]
    # Log-linear in log K: a quarter of the way in log K is a quarter of the way in log rate.
    k = 8 * 4 ** 0.25
    want = math.exp(0.75 * math.log(RATES[(8, 8, 8)]) + 0.25 * math.log(RATES[(8, 8, 32)]))
    assert g.gemm_flops_per_s(8, 8, k).per_s == pytest.approx(want, rel=1e-9)  # type: ignore[arg-type]


def test_outside_the_grid_it_clamps_and_says_so() -> None:
    g = _grid()
    big = g.gemm_flops_per_s(4096, 32, 32)
    assert big.clamped and big.per_s == pytest.approx(RATES[(32, 32, 32)])
    small = g.gemm_flops_per_s(1, 8, 8)
    assert small.clamped and small.per_s == pytest.approx(RATES[(8, 8, 8)])
    mem = g.memory_bytes_per_s("add", 1e9)
    assert mem.clamped and mem.per_s == pytest.approx(1e10)
    inside = g.memory_bytes_per_s("add", 10_000.0)  # log-midpoint of 1e3 and 1e5
    assert not inside.clamped and inside.per_s == pytest.approx(math.sqrt(1e9 * 1e10))


def test_a_point_slower_than_a_larger_one_takes_the_larger_ones_time() -> None:
    g = _grid()
    gemm = list(g.gemm)
    # (8, 8, 8) held up by load: slower than (8, 8, 32), which has four times the work.
    gemm[0] = replace(gemm[0], best_s=1.0)
    stalled = replace(g, gemm=tuple(gemm))
    assert stalled.capped == 1
    assert stalled.gemm_point_flops_per_s(0) == pytest.approx(
        gemm[0].work / (gemm[1].best_s - FIXED_S))


def test_a_convolution_runs_as_its_implicit_gemm_times_the_nearest_measured_ratio() -> None:
    # Two measured convolutions: one at half its implicit GEMM's rate, one at the same rate.
    half = ConvPoint(_gp((1, 1, 8, 8, 8, 1, 1, 0), 1024.0, 1024.0 / (RATES[(8, 8, 8)] / 2)),
                     (8, 8, 8))
    same = ConvPoint(_gp((1, 1, 32, 32, 32, 1, 1, 0), 65536.0, 65536.0 / RATES[(32, 32, 32)]),
                     (32, 32, 32))
    g = _grid((half, same))
    assert g.conv_vs_gemm == pytest.approx((0.5, 1.0))
    assert g.conv_flops_per_s(9, 8, 8).per_s == pytest.approx(
        0.5 * g.gemm_flops_per_s(9, 8, 8).per_s)
    assert g.conv_flops_per_s(30, 32, 32).per_s == pytest.approx(
        g.gemm_flops_per_s(30, 32, 32).per_s)


def test_a_dense_convolution_never_takes_a_depthwise_ones_ratio() -> None:
    """A dense 1x1 convolution's weight gradient (256, 64, 25088) lies nearer, in log
    (M, N, K), to a depthwise 5x5's (240, 25, 12544) than to a dense 1x1's (1024, 256,
    3136): it must still take the dense ratio, and a depthwise one the depthwise ratio."""
    dw = ConvPoint(_gp((16, 240, 28, 28, 240, 5, 1, 2, 240), 1.0, 1.0), (240, 25, 12544),
                   "backward_weight")
    dense = ConvPoint(_gp((16, 256, 14, 14, 1024, 1, 1, 0), 1.0, 1.0), (1024, 256, 3136),
                      "backward_weight")
    g = _grid((dw, dense))
    ratio_dw, ratio_dense = g.conv_vs_gemm
    assert ratio_dw != ratio_dense
    assert g.conv_factor_at(256, 64, 25088, "backward_weight") == ratio_dense
    assert g.conv_factor_at(96, 9, 50176, "backward_weight") == ratio_dw
    # Forward: a depthwise 3x3's implicit GEMM per group is (B*H*W*C, 1, 9).
    assert narrow_conv(1, 9, "forward") and not narrow_conv(64, 27, "forward")
    assert not narrow_conv(64, 256, "backward_weight")


def test_a_convolutions_family_is_depthwise_or_dense_1x1_or_larger_s1_or_strided() -> None:
    assert conv_family((64, 256, 1, 1), (1, 1), 1) == "dense 1x1 s1"
    assert conv_family((128, 128, 3, 3), (2, 2), 1) == "dense kxk strided"
    assert conv_family((64, 1, 3, 3), (2,), 64) == "depthwise kxk strided"
    assert conv_family((96, 1, 5, 5), (1, 1), 96) == "depthwise kxk s1"
    # ResNeXt's grouped 3x3 (4 channels a group) is dense; a 1-group 1-channel conv too.
    assert conv_family((128, 4, 3, 3), (1, 1), 32) == "dense kxk s1"
    assert conv_family((8, 1, 3, 3), (1, 1), 1) == "dense kxk s1"
    # A grid point's family comes from its measured shape (N, C_in, H, W, C_out, k, s, p[, g]).
    dw = ConvPoint(_gp((16, 64, 112, 112, 64, 3, 2, 1, 64), 1.0, 1.0), (1, 1, 9))
    dense = ConvPoint(_gp((16, 256, 14, 14, 1024, 1, 1, 0), 1.0, 1.0), (1, 1, 1))
    assert (dw.family, dense.family) == ("depthwise kxk strided", "dense 1x1 s1")
    assert ConvPoint(_gp((8, 8, 8), 1.0, 1.0), (8, 8, 8)).family is None


def test_a_convolution_takes_the_ratio_of_its_own_familys_nearest_point() -> None:
    """A strided 3x3 convolution's implicit GEMM can equal a stride-1 one's exactly, yet it
    runs at a different rate: with a family given, the nearest point of that family is
    taken, however far; a family the grid did not measure falls back to the nearest point
    (dense or depthwise-like, as before)."""
    s1 = ConvPoint(_gp((1, 1, 8, 8, 8, 3, 1, 1), 1024.0, 1024.0 / RATES[(8, 8, 8)]), (8, 8, 8))
    strided = ConvPoint(_gp((1, 1, 64, 64, 32, 3, 2, 1), 65536.0,
                            65536.0 / (RATES[(32, 32, 32)] / 4)), (32, 32, 32))
    g = _grid((s1, strided))
    assert g.conv_vs_gemm == pytest.approx((1.0, 0.25))
    assert g.conv_factor_at(8, 8, 8, "forward", "dense kxk strided") == pytest.approx(0.25)
    assert g.conv_factor_at(8, 8, 8, "forward", "dense kxk s1") == pytest.approx(1.0)
    assert g.conv_factor_at(8, 8, 8, "forward", "dense 1x1 s1") == pytest.approx(1.0)
    assert g.conv_factor_at(8, 8, 8, "forward") == pytest.approx(1.0)
    assert g.conv_flops_per_s(8, 8, 8, family="dense kxk strided").per_s == pytest.approx(
        0.25 * g.gemm_flops_per_s(8, 8, 8).per_s)


def test_counted_convolutions_carry_their_family_through_json() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1,
                        groups=8), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(64, 10))
    cost = estimate(net, batch_size=2, input_shape=(3, 8, 8), num_classes=10)
    fam = {(r.name, w.phase): w.conv_family for r in cost.layers for w in r.ops
           if w.op.startswith("aten.convolution")}
    assert fam == {("0", "forward"): "dense kxk strided",
                   ("0", "backward_weight"): "dense kxk strided",
                   ("1", "forward"): "depthwise kxk s1",
                   ("1", "backward_input"): "depthwise kxk s1",
                   ("1", "backward_weight"): "depthwise kxk s1",
                   ("2", "forward"): "dense 1x1 s1",
                   ("2", "backward_input"): "dense 1x1 s1",
                   ("2", "backward_weight"): "dense 1x1 s1"}
    linear = [w for r in cost.layers if r.name == "4" for w in r.ops]
    assert linear and all(w.conv_family is None for w in linear)
    for r in cost.layers:
        for w in r.ops:
            d = w.to_dict()
            assert ("conv_family" in d) == (w.conv_family is not None)
            assert OpWork.from_dict(d) == w
    old = {k: v for k, v in next(w for r in cost.layers for w in r.ops
                                 if w.conv_family).to_dict().items() if k != "conv_family"}
    assert OpWork.from_dict(old).conv_family is None  # a file written before families


# -- noisy repeats, with an injected timer --------------------------------------------
def _scripted(times: list[float]) -> tuple[list[int], object]:
    """A ``run(n)`` returning n x the next scripted time per op; records each n."""
    calls: list[int] = []
    it = iter(times)

    def run(n: int) -> float:
        calls.append(n)
        return n * next(it)

    return calls, run


POLICY = NoisePolicy(threshold=0.2, min_rounds=1, max_rounds=3, samples=3, min_sample_s=1e-3,
                     budget_s=1.0)


def test_a_quiet_point_is_measured_once() -> None:
    calls, run = _scripted([1e-4] + [1e-4, 1.05e-4, 1.1e-4])
    p = time_point(run, 10.0, (1,), POLICY, lambda: False)  # type: ignore[arg-type]
    assert calls == [1, 10, 10, 10]  # the first call picks n = 1 ms / 0.1 ms
    assert p.rounds == 1 and p.best_s == pytest.approx(1e-4)
    assert p.median_s == pytest.approx(1.05e-4) and p.spread == pytest.approx(0.05)


def test_a_noisy_point_is_measured_again_and_keeps_its_best() -> None:
    noisy = [1e-4, 2e-4, 3e-4]  # spread 100%
    calls, run = _scripted([1e-4] + noisy + [0.9e-4, 0.95e-4, 1e-4])
    p = time_point(run, 10.0, (1,), POLICY, lambda: False)  # type: ignore[arg-type]
    assert p.rounds == 2 and p.best_s == pytest.approx(0.9e-4)
    assert p.spread == pytest.approx(0.95 / 0.9 - 1)


def test_noise_that_does_not_settle_stops_at_max_rounds_and_stays_noisy() -> None:
    calls, run = _scripted([1e-4] + [1e-4, 2e-4, 3e-4] * 3)
    p = time_point(run, 10.0, (1,), POLICY, lambda: False)  # type: ignore[arg-type]
    assert p.rounds == 3 and p.spread == pytest.approx(1.0)
    assert len(calls) == 1 + 3 * 3


def test_the_budget_stops_re_measuring() -> None:
    calls, run = _scripted([1e-4] + [1e-4, 2e-4, 3e-4] * 3)
    p = time_point(run, 10.0, (1,), POLICY, lambda: True)  # type: ignore[arg-type]
    assert p.rounds == 1 and len(calls) == 4


def test_a_point_slower_than_a_larger_one_is_measured_again() -> None:
    # Every sample of the small point's first round stalled (no spread), the larger is quick.
    _, small_run = _scripted([1e-3] + [5e-3] * 3 + [1e-5] * 3)
    _, big_run = _scripted([1e-4] + [1e-4] * 3)
    small = PointTiming(small_run, 1.0, (1,))  # type: ignore[arg-type]
    big = PointTiming(big_run, 4.0, (4,))  # type: ignore[arg-type]
    measure_points([small, big], POLICY, lambda: False, {0: [1]})
    assert small.rounds == 2 and small.best == pytest.approx(1e-5) and big.rounds == 1


def test_every_point_gets_min_rounds_in_separate_passes() -> None:
    order: list[str] = []

    def run_of(name: str) -> object:
        def run(n: int) -> float:
            order.append(name)
            return n * 1e-4
        return run

    a = PointTiming(run_of("a"), 1.0, (1,))  # type: ignore[arg-type]
    b = PointTiming(run_of("b"), 1.0, (2,))  # type: ignore[arg-type]
    measure_points([a, b], replace(POLICY, min_rounds=2), lambda: False)
    assert a.rounds == b.rounds == 2
    # a's first round, b's first round, then a's second: passes, not rounds back to back.
    assert order == ["a"] * 4 + ["b"] * 4 + ["a"] * 3 + ["b"] * 3


def test_the_noise_summary_says_how_many_points_stayed_noisy() -> None:
    n = Noise(0.2, 3, 45.0, 40, 3, 7, budget_hit=True, min_rounds=2)
    assert n.summary.startswith("noisy: 3 of 40 points had spread > 20% after up to 3 rounds")
    assert "2 passes over every point; 7 re-measured" in n.summary
    assert "budget ran out" in n.summary
    assert Noise(0.2, 3, 45.0, 40, 0, 0).summary.startswith("quiet")


# -- round trips, old calibrations ------------------------------------------------------
def _calibration(grid: ShapeGrid | None) -> Calibration:
    return Calibration("cpu", "Test CPU", "host", 2, "2.x", {"fp32": 0.1}, {"fp32": 2048},
                       10.0, 12.0, 2**28, 5, "now", memory_gb=8.0, grid=grid,
                       load_before=1.5, load_after=2.0)


def test_a_calibration_round_trips_through_json_and_toml(tmp_path: Path) -> None:
    cal = _calibration(_grid())
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    prof = to_profile(cal, "lab")
    assert prof.grid == cal.grid and prof.kernel_latency_s == pytest.approx(FIXED_S)
    path = save_profile(prof, tmp_path / "devices.toml")
    loaded = load_profiles(path)["lab"]
    assert loaded.grid == cal.grid
    assert loaded.kernel_latency_s == pytest.approx(FIXED_S, rel=1e-12)


def test_an_old_calibration_without_a_grid_loads_and_predicts_as_before(tmp_path: Path) -> None:
    old = _calibration(None).to_dict()
    for key in ("grid", "load_before", "load_after"):
        old.pop(key)
    cal = Calibration.from_dict(old)
    assert cal.grid is None and cal.load_before is None
    prof = to_profile(cal, "old")
    assert prof.grid is None and prof.kernel_latency_s == 0.0
    plain = DeviceProfile("old", "Test CPU", {"fp32": 0.1}, 12.0, "x")
    cost = estimate(_Net(), batch_size=2, input_shape=(3, 8, 8), num_classes=10)
    a, b = predict(cost, prof), predict(cost, plain)
    assert [r.predicted for r in a.layers] == [r.predicted for r in b.layers]
    assert a.prediction is not None and a.prediction.grid_source is None
    # An old TOML (no grid table) still parses.
    text = ("[devices.old]\nfp32_tflops = 0.1\nmemory_bandwidth_gb_per_s = 12\n")
    assert parse_profiles(text)["old"].grid is None


def test_a_malformed_grid_is_one_line_with_its_place() -> None:
    text = ("[devices.x]\nfp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\n"
            "[devices.x.grid]\nprecision = \"fp32\"\n")
    with pytest.raises(Exception, match=r"<text>:4 \[devices.x\]: malformed grid"):
        parse_profiles(text)


# -- predictions by shape -----------------------------------------------------------
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_counted_gemms_carry_their_shape() -> None:
    cost = estimate(_Net(), batch_size=2, input_shape=(3, 8, 8), num_classes=10)
    shaped = [(r.name, w) for r in cost.layers for w in r.ops if w.gemm is not None]
    assert {(n, w.op, w.phase) for n, w in shaped} >= {
        ("fc", "aten.addmm", "forward"), ("fc", "aten.mm", "backward_input"),
        ("fc", "aten.mm", "backward_weight"), ("conv", "aten.convolution", "forward"),
        ("conv", "aten.convolution_backward", "backward_weight")}
    for _, w in shaped:  # FLOPs = 2 M N K per call
        m, n, k = w.gemm  # type: ignore[misc]
        assert w.flops == w.calls * 2 * m * n * k
    fc = dict(((w.op, w.phase), w.gemm) for n, w in shaped if n == "fc")
    assert fc[("aten.addmm", "forward")] == (2, 10, 256)
    assert fc[("aten.mm", "backward_weight")] == (10, 256, 2)
    conv = dict(((w.op, w.phase), w.gemm) for n, w in shaped if n == "conv")
    assert conv[("aten.convolution", "forward")] == (2 * 64, 4, 27)


def _one_op_cost(w: OpWork, kind: str = "linear") -> CostResult:
    row = LayerCost("fc", kind, "Linear", 0, 0, 1, PhaseCounts(forward=w.flops),
                    PhaseCounts(forward=w.bytes_moved), MemoryBytes(), (w,))
    loss = LayerCost("(loss)", "loss", "", 0, 0, 0, PhaseCounts(), PhaseCounts(), MemoryBytes())
    return CostResult("m", 2, (3,), 10, "float32", "sgd", (row,), loss)


def test_a_prediction_takes_the_rate_at_the_ops_shape_plus_its_fixed_cost() -> None:
    g = _grid()
    prof = DeviceProfile("lab", "Lab", {"fp32": 1.0}, 100.0, "x", grid=g,
                         kernel_latency_s=g.fixed_s)
    w = OpWork("aten.mm", "forward", 3, 3 * 2 * 16 * 8 * 8, 3 * 2000, "formula", "matmul",
               (16, 8, 8))
    pred = predict(_one_op_cost(w), prof)
    rate = g.gemm_flops_per_s(16, 8, 8).per_s
    assert pred.layers[0].predicted is not None
    assert pred.layers[0].predicted.forward_s == pytest.approx(w.flops / rate + 3 * FIXED_S)
    assert pred.prediction is not None and pred.prediction.grid_source == "hand-made"
    assert pred.prediction.grid_lookups == 2 and pred.prediction.grid_clamped == 0
    assert "shape grid" in pred.prediction.efficiency_source
    # Outside the grid: clamped, and counted.
    far = replace(w, gemm=(4096, 8, 8), flops=3 * 2 * 4096 * 8 * 8)
    assert predict(_one_op_cost(far), prof).prediction.grid_clamped == 1  # type: ignore[union-attr]


def test_the_optimizer_step_streams_at_the_profiles_bandwidth_not_a_warm_curve() -> None:
    """An update touches every parameter, gradient and state tensor once, cold: it runs at
    the profile's bandwidth (x its memory efficiency), where the same op in the forward
    takes the grid's class curve at its bytes per call (warm buffers, here 10x slower)."""
    g = _grid()
    prof = DeviceProfile("lab", "Lab", {"fp32": 1.0}, 100.0, "x", grid=g,
                         kernel_latency_s=g.fixed_s)
    fwd = OpWork("aten.add_", "forward", 3, 0, 30_000, "none", "other")
    upd = replace(fwd, phase="update")
    got = predict(_one_op_cost(fwd), prof).layers[0].predicted
    assert got is not None
    curve = g.memory_bytes_per_s("add", 10_000).per_s
    assert got.forward_s == pytest.approx(30_000 / curve + 3 * FIXED_S)
    got = predict(_one_op_cost(upd), prof).layers[0].predicted
    assert got is not None
    assert got.update_s == pytest.approx(30_000 / (100e9 * 0.8) + 3 * FIXED_S)


def test_a_kind_with_its_own_efficiency_keeps_it_over_the_grid() -> None:
    g = _grid()
    prof = DeviceProfile("lab", "Lab", {"fp32": 1.0}, 100.0, "x", grid=g,
                         compute_efficiency={"linear": 0.5})
    w = OpWork("aten.mm", "forward", 1, 2 * 16 * 8 * 8, 0, "formula", "matmul", (16, 8, 8))
    pred = predict(_one_op_cost(w), prof)
    assert pred.layers[0].predicted is not None
    assert pred.layers[0].predicted.forward_s == pytest.approx(w.flops / (1e12 * 0.5))


def test_without_a_grid_the_per_kind_efficiencies_stay_labelled_as_guesses() -> None:
    from layertime.cost import get_profile

    cost = estimate(_Net(), batch_size=2, input_shape=(3, 8, 8), num_classes=10)
    pred = predict(cost, get_profile("h100")).prediction
    assert pred is not None and pred.grid_source is None and pred.grid_lookups == 0
    assert "uncalibrated" in pred.efficiency_source


# -- the command line -----------------------------------------------------------------
def test_calibrate_prints_the_grid_summary_at_80_columns(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc = main(["calibrate", "--matmul-size", "64", "--memory-mb", "1", "--repeats", "2",
               "--out", str(tmp_path / "d.toml"), "--json", str(tmp_path / "c.json"),
               "--width", "80"])
    out, _ = capsys.readouterr()
    assert rc == 0
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("shape grid (fp32"))
    grid_lines = lines[start:start + 10]
    assert any("per-op fixed cost" in line for line in grid_lines)
    assert any("GEMM 3x3x3" in line and "not measured" in line for line in grid_lines)
    assert any(line.strip().startswith(("quiet:", "noisy:")) for line in lines[start:])
    assert all(len(line) <= 80 for line in lines[start:] if not line.startswith("saved "))
    # The ops timed alone, each a line: batch norm's by bytes, bernoulli_'s by elements.
    assert any(line.startswith("  ops timed alone (") for line in lines[start:])
    assert any(line.strip().startswith("native_batch_norm_backward ") and "GB/s" in line
               for line in lines[start:])
    assert any(line.strip().startswith("bernoulli_ ") and "M el/s" in line
               for line in lines[start:])
    cal = Calibration.from_dict(json.loads((tmp_path / "c.json").read_text())["calibration"])
    assert cal.grid is not None and cal.grid.gemm_m == (8, 32, 128) and cal.grid.unmeasured
    assert load_profiles(tmp_path / "d.toml")["local-cpu"].grid == cal.grid


def test_every_grid_convolution_records_the_implicit_gemm_the_count_gives_it() -> None:
    """The grid's convolutions (depthwise ones too: groups = channels) are recorded at the
    implicit GEMM per group that ``op_shapes`` gives the same convolution in a count, so a
    counted convolution finds its nearest measured one in the same convention."""
    import torch

    from layertime.cost.count.op_shapes import conv_backward_shapes, gemm_shape
    from layertime.measure.calibrate_grid import CONV_SHAPES, measure_grid

    tiny = tuple((1, cin, 8, cout, k, 1, k // 2, *rest)
                 for (_, cin, _, cout, k, _, _, *rest) in CONV_SHAPES)
    assert any(len(c) == 8 and c[7] == c[1] == c[3] for c in CONV_SHAPES)  # a depthwise one
    grid = measure_grid(torch.device("cpu"), gemm_axes=(8,), memory_elements=(1024,),
                        conv_shapes=tiny)
    fwd = [c for c in grid.conv if c.phase == "forward"]
    assert len(fwd) == len(tiny) and len(grid.conv) == 3 * len(tiny)
    aten = torch.ops.aten
    for c, (bs, cin, hw, cout, k, stride, pad, *rest) in zip(fwd, tiny):
        groups = rest[0] if rest else 1
        x = torch.empty(bs, cin, hw, hw, device="meta")
        w = torch.empty(cout, cin // groups, k, k, device="meta")
        args = (x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], groups)
        assert c.gemm == gemm_shape(aten.convolution.default, args, {})
        grad = torch.empty(bs, cout, hw, hw, device="meta")
        back = conv_backward_shapes(x, w, grad, groups)
        assert back is not None
        phases = {p.phase: p.gemm for p in grid.conv if p.point.shape == c.point.shape}
        assert (phases["backward_input"], phases["backward_weight"]) == back
