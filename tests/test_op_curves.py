"""The grid's op curves: ops ``layertime calibrate`` times alone by size (batch norm,
pooling, softmax, ``bernoulli_`` ...) and predictions that take an op's time from its own
curve.  Hand-made grids for the lookups; the measured ops' work checked against the count's
own bytes for the same call; no test asserts how fast anything runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from layertime.cost import estimate, predict
from layertime.cost.count.op_bytes import rule_of
from layertime.cost.devices import DeviceProfile
from layertime.measure.calibrate_grid import NoisePolicy, measure_grid
from layertime.measure.calibrate_ops import MEASURED_OPS, MeasuredOp
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts
from layertime.results.cost.shape_grid import GridPoint, Noise, OpCurve, ShapeGrid

pytestmark = pytest.mark.usefixtures("one_thread")

FIXED_S = 2e-6
AXES = (8, 32)
#: Bytes per second of the class curves (add, copy, reduce) at their two sizes.
CLASS_RATES = (1e9, 1e10)
CLASS_BYTES = (1000.0, 100_000.0)


def _gp(shape: tuple[int, ...], work: float, net_s: float) -> GridPoint:
    t = FIXED_S + net_s
    return GridPoint(shape, work, t, t, 0.0, 2)


#: Batch norm forward measured at two sizes: 3 GB/s at 48 kB a call, 6 GB/s at 4.8 MB.
BN = OpCurve("aten.native_batch_norm",
             ("aten.native_batch_norm", "aten._native_batch_norm_legit_functional"),
             (_gp((1, 64, 8, 8), 48e3, 48e3 / 3e9), _gp((100, 64, 8, 8), 4.8e6, 4.8e6 / 6e9)))
#: bernoulli_ by elements: 200 M elements/s at 1 Ki and at 1 Mi elements.
BERNOULLI = OpCurve("aten.bernoulli_", ("aten.bernoulli_",),
                    (_gp((1024,), 1024.0, 1024 / 2e8), _gp((2**20,), 2.0**20, 2**20 / 2e8)),
                    unit="elements")


def _grid(curves: tuple[OpCurve, ...] = (BN, BERNOULLI)) -> ShapeGrid:
    gemm = tuple(_gp((m, n, k), 2.0 * m * n * k, 2.0 * m * n * k / 1e9)
                 for m in AXES for n in AXES for k in AXES)
    memory = {op: tuple(_gp((int(b / 4),), b, b / r) for b, r in zip(CLASS_BYTES, CLASS_RATES))
              for op in ("copy", "add", "reduce")}
    return ShapeGrid("fp32", _gp((1,), 12, 0.0), AXES, AXES, AXES, gemm, (), memory,
                     Noise(0.2, 3, 10.0, 9 + 6, 0, 0), source="hand-made", op_curves=curves)


def _profile(grid: ShapeGrid) -> DeviceProfile:
    return DeviceProfile("lab", "Lab", {"fp32": 1.0}, 100.0, "x", grid=grid,
                         kernel_latency_s=grid.fixed_s)


def _cost(*ops: OpWork, dtype: str = "float32") -> CostResult:
    row = LayerCost("bn", "norm", "BatchNorm2d", 0, 0, 1, PhaseCounts(),
                    PhaseCounts(forward=sum(w.bytes_moved for w in ops)), MemoryBytes(), ops)
    loss = LayerCost("(loss)", "loss", "", 0, 0, 0, PhaseCounts(), PhaseCounts(), MemoryBytes())
    return CostResult("m", 2, (3,), 10, dtype, "sgd", (row,), loss)


def _forward_s(cost: CostResult, grid: ShapeGrid) -> float:
    pred = predict(cost, _profile(grid))
    assert pred.layers[0].predicted is not None
    return pred.layers[0].predicted.forward_s


def _op(op: str, calls: int, nbytes: float) -> OpWork:
    return OpWork(op, "forward", calls, 0, int(nbytes), "not_counted")


# -- lookups on a hand-made grid ----------------------------------------------------------
def test_a_point_on_an_op_curve_predicts_its_own_time() -> None:
    g = _grid()
    for p in BN.points:
        assert _forward_s(_cost(_op("aten.native_batch_norm", 1, p.work)), g) == pytest.approx(
            p.best_s, rel=1e-12)
        # Three calls of that size: three times the point's time.
        assert _forward_s(_cost(_op("aten.native_batch_norm", 3, 3 * p.work)), g) == (
            pytest.approx(3 * p.best_s, rel=1e-12))


def test_an_op_family_is_looked_up_by_any_of_its_names_log_linearly() -> None:
    g = _grid()
    # The geometric middle of the two points (480 kB a call): the geometric mean rate.
    mid = math.sqrt(48e3 * 4.8e6)
    look = g.op_rate("aten._native_batch_norm_legit_functional", mid)
    assert look is not None and not look.clamped
    assert look.per_s == pytest.approx(math.sqrt(3e9 * 6e9), rel=1e-9)
    assert g.op_curve("aten._native_batch_norm_legit_functional") is BN
    got = _forward_s(_cost(_op("aten._native_batch_norm_legit_functional", 2, 2 * mid)), g)
    assert got == pytest.approx(2 * FIXED_S + 2 * mid / math.sqrt(3e9 * 6e9), rel=1e-9)
    # Beyond the curve: its end's rate, and the lookup says it clamped.
    far = g.op_rate("aten.native_batch_norm", 1e9)
    assert far is not None and far.clamped and far.per_s == pytest.approx(6e9)
    # An op not timed alone has no curve of its own: its class's curve.
    assert g.op_rate("aten.sigmoid", 1e4) is None and g.op_curve("aten.sigmoid") is None


def test_the_prediction_says_which_ops_took_an_op_curve_and_which_a_class_curve() -> None:
    g = _grid()
    cost = _cost(_op("aten.native_batch_norm", 1, 48e3), _op("aten.sigmoid", 1, 10_000),
                 _op("aten.bernoulli_", 1, 4096))
    pred = predict(cost, _profile(g))
    p = pred.prediction
    assert p is not None and p.grid_op_curve_lookups == 2 and p.grid_class_curve_lookups == 1
    assert "own measured curve: 2 lookups" in p.efficiency_source
    sigmoid_s = FIXED_S + 10_000 / math.sqrt(1e9 * 1e10)  # the add curve's log-midpoint
    want = BN.points[0].best_s + sigmoid_s + BERNOULLI.points[0].best_s
    assert pred.layers[0].predicted is not None
    assert pred.layers[0].predicted.forward_s == pytest.approx(want, rel=1e-9)


def test_bernoulli_is_timed_by_elements_whatever_the_dtype() -> None:
    g = _grid()
    n = 2**15  # between the two points: 200 M elements/s on both
    want = 2 * FIXED_S + 2 * n / 2e8
    # Two calls: the count's bytes are the masks written, 4 bytes an element in float32 ...
    assert _forward_s(_cost(_op("aten.bernoulli_", 2, 2 * 4 * n)), g) == pytest.approx(want)
    # ... and 2 in bfloat16: the same elements, the same time.
    bf16 = _cost(_op("aten.bernoulli_", 2, 2 * 2 * n), dtype="bfloat16")
    pred = predict(bf16, DeviceProfile("lab", "Lab", {"fp32": 1.0, "bf16": 2.0}, 100.0, "x",
                                       grid=g, kernel_latency_s=g.fixed_s))
    assert pred.layers[0].predicted is not None
    assert pred.layers[0].predicted.forward_s == pytest.approx(want)


def test_a_grid_without_op_curves_predicts_as_before() -> None:
    with_curves = _grid()
    old = json.loads(json.dumps(with_curves.to_dict()))
    old.pop("op_curves")  # a calibration written before op curves
    back = ShapeGrid.from_dict(old)
    assert back.op_curves == () and back == _grid(())
    cost = _cost(_op("aten.native_batch_norm", 1, 48e3))
    # Without its curve, batch norm takes the add class's curve, log-linear in log bytes.
    t = (math.log(48e3) - math.log(1e3)) / (math.log(1e5) - math.log(1e3))
    add_rate = math.exp((1 - t) * math.log(1e9) + t * math.log(1e10))
    assert _forward_s(cost, back) == pytest.approx(FIXED_S + 48e3 / add_rate, rel=1e-9)
    p = predict(cost, _profile(back)).prediction
    assert p is not None and p.grid_op_curve_lookups == 0 and p.grid_class_curve_lookups == 1
    # And the grid with curves round-trips.
    assert ShapeGrid.from_dict(json.loads(json.dumps(with_curves.to_dict()))) == with_curves


def test_the_summary_lists_the_op_curves_at_80_columns() -> None:
    lines = _grid().summary_lines()
    assert any("ops timed alone (2" in line for line in lines)
    bn = next(line for line in lines if line.strip().startswith("native_batch_norm "))
    assert "GB/s" in bn and "3 .." in bn and "6 GB/s" in bn
    assert any(line.strip().startswith("bernoulli_") and "M el/s" in line for line in lines)
    assert all(len(line) <= 80 for line in lines)


# -- the measured ops: their table, and their work in the count's own bytes ---------------
@pytest.mark.parametrize("op", MEASURED_OPS, ids=lambda o: o.name)
def test_every_measured_op_builds_and_is_counted_by_a_rule_of_its_own(op: MeasuredOp) -> None:
    rand_pool = (torch.randn(4096), torch.randn(4096))
    taken = [0]

    def rand(*shape: int) -> torch.Tensor:
        buf = rand_pool[taken[0] % 2]
        taken[0] += 1
        return buf[: math.prod(shape)].view(shape)

    call = op.build(4096, rand)
    assert str(call.func._overloadpacket) == op.name
    assert call.call() is not None
    assert rule_of(call.func)[1] != "default"
    assert call.work(op.unit, "cpu") > 0


class _ConvNormPool(nn.Module):
    """A convolution (so the norm's input needs a gradient), batch norm, ReLU, pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(64, 64, 1)
        self.bn = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def test_a_measured_ops_work_is_the_counts_bytes_for_the_same_call() -> None:
    """Measured at (1, 64, 16, 16), counted in a model at that shape: the op curve's work
    per call is the count's bytes per call, so the lookup inverts the measurement."""
    grid = measure_grid(
        torch.device("cpu"), NoisePolicy(min_rounds=1, max_rounds=1, samples=2,
                                         min_sample_s=1e-4, budget_s=5.0),
        gemm_axes=(8,), memory_elements=(1024,), conv_shapes=(), op_elements=(2**14,),
        ops=[o for o in MEASURED_OPS if o.name in (
            "aten.native_batch_norm", "aten.native_batch_norm_backward", "aten.relu_",
            "aten.threshold_backward", "aten.max_pool2d_with_indices",
            "aten.max_pool2d_with_indices_backward")])
    assert len(grid.op_curves) == 6 and grid.points == 1 + 1 + 3 + 6
    cost = estimate(_ConvNormPool(), batch_size=1, input_shape=(64, 16, 16), num_classes=10)
    counted = {w.op: w.bytes_moved // w.calls for r in cost.layers for w in r.ops
               if r.name in ("bn", "relu", "pool")}
    for curve in grid.op_curves:
        assert curve.points[0].shape == (1, 64, 16, 16) or curve.points[0].shape == (2**14,)
        assert counted[curve.name] == curve.points[0].work, curve.name
    # And so the counted batch norm, predicted on the measured grid, takes the measured time.
    bn = next(w for r in cost.layers for w in r.ops if w.op == "aten.native_batch_norm")
    fwd = next(c for c in grid.op_curves if c.name == "aten.native_batch_norm")
    assert _forward_s(_cost(bn), grid) == pytest.approx(fwd.points[0].best_s, rel=1e-9)
