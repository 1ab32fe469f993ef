"""Hand-worked counts of the cost model, on the meta device.

Every expected number is worked out in a comment: MACs of a convolution are
N * H_out * W_out * C_out * (C_in / groups) * k_h * k_w, of a linear layer
N * in * out; FLOPs are 2 x MACs.  The input gradient of a convolution is a
transposed convolution with the same MACs as the forward; so is the weight
gradient.  For a linear layer y = x W^T + b, grad_x = grad_y W and
grad_W = grad_y^T x each take N * in * out MACs as well.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from layertime.cost import estimate, meta_copy
from layertime.cost.count.counts import LOSS_NAME, count_step
from layertime.cost.count.kernel_choice import KernelTarget
from layertime.errors import LayertimeError
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost
from layertime.workload import WorkloadSpec


def _meta(model_fn) -> nn.Module:  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        return model_fn()


def _count(model: nn.Module, shape: tuple[int, ...], batch: int = 2, **kw: str) -> CostResult:
    cfg = WorkloadSpec.create("test", batch_size=batch, input_shape=shape, num_classes=10, **kw)
    return count_step(model, cfg, label="test")


def _row(cost: CostResult, name: str) -> LayerCost:
    for r in cost.layers:
        if r.name == name:
            return r
    raise AssertionError(f"no row {name!r}")


class StemConvHead(nn.Module):
    """stem (1x1 conv, the first layer) -> conv under test -> flatten -> fc."""

    def __init__(self, conv: nn.Conv2d, flat: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(4, 4, 1, bias=False)
        self.conv = conv
        self.fc = nn.Linear(flat, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(self.stem(x)), 1))


# Input 2 x 4 x 8 x 8 in every case below.
CONV_CASES = [
    pytest.param(
        dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
        # 2 * 8*8 * 6 * 4 * 3*3 = 27,648 MACs
        27_648,
        6 * 8 * 8,
        id="conv3x3",
    ),
    pytest.param(
        dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
        # output 4x4: 2 * 4*4 * 6 * 4 * 9 = 6,912 MACs
        6_912,
        6 * 4 * 4,
        id="conv3x3-stride2",
    ),
    pytest.param(
        dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2),
        # each output channel sees 4/2 = 2 input channels: 2 * 64 * 6 * 2 * 9 = 13,824 MACs
        13_824,
        6 * 8 * 8,
        id="grouped",
    ),
    pytest.param(
        dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4),
        # depthwise, one input channel per output: 2 * 64 * 4 * 1 * 9 = 4,608 MACs
        4_608,
        4 * 8 * 8,
        id="depthwise",
    ),
]


@pytest.mark.parametrize("conv_kwargs, macs, flat", CONV_CASES)
def test_conv_forward_and_both_gradients(conv_kwargs: dict, macs: int, flat: int) -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(**conv_kwargs), flat))
    cost = _count(model, (4, 8, 8))
    conv = _row(cost, "conv")
    assert conv.macs_forward == macs
    assert conv.flops.forward == 2 * macs
    # Not the first layer: its input gradient is needed by the stem's weight gradient.
    assert conv.flops.backward_input == 2 * macs
    # The weight gradient has the forward's MACs, with groups too (torch's own
    # formula would count it `groups` times over).
    assert conv.flops.backward_weight == 2 * macs


def test_first_layer_computes_no_input_gradient() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    cost = _count(model, (4, 8, 8))
    stem = _row(cost, "stem")
    # 1x1 conv, 4 -> 4 channels, 2 x 8 x 8: 2 * 64 * 4 * 4 = 2,048 MACs = 4,096 FLOPs
    assert stem.flops.forward == 4_096
    assert stem.flops.backward_input == 0
    assert stem.flops.backward_weight == 4_096


def test_linear_first_layer_and_hidden_layer() -> None:
    model = _meta(lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3)))
    cost = _count(model, (3, 2, 2), batch=4)
    first, second = _row(cost, "1"), _row(cost, "3")
    # first: 4 samples * 12 in * 5 out = 240 MACs = 480 FLOPs; no grad for the batch
    assert (first.flops.forward, first.flops.backward_input, first.flops.backward_weight) == (
        480,
        0,
        480,
    )
    # second: 4 * 5 * 3 = 60 MACs = 120 FLOPs; grad_x = grad_y (4x3) @ W (3x5): 120;
    # grad_W = grad_y^T (3x4) @ x (4x5): 120
    assert (second.flops.forward, second.flops.backward_input, second.flops.backward_weight) == (
        120,
        120,
        120,
    )
    assert first.params == 12 * 5 + 5 and second.params == 5 * 3 + 3


def test_linear_with_frozen_weight_keeps_input_gradient_only() -> None:
    # The weight frozen, the bias trainable: the backward runs grad_x (an mm)
    # and the bias gradient (a sum, no FLOP formula), never grad_W.  Telling
    # the two matmuls apart by shape would be ambiguous here (in = out = N = 8).
    model = _meta(lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)))
    model[2].weight.requires_grad_(False)
    cost = _count(model, (8,), batch=8)
    fc = _row(cost, "2")
    # 8 * 8 * 8 = 512 MACs = 1,024 FLOPs
    assert fc.flops.forward == 1_024
    assert fc.flops.backward_input == 1_024
    assert fc.flops.backward_weight == 0
    # the bias gradient still costs bytes and is charged to the weight phase
    assert fc.bytes_moved.backward_weight > 0
    assert [w.op for w in fc.ops if w.phase == "backward_weight"] == ["aten.sum"]


def test_frozen_layer_has_no_weight_gradient_grad_memory_or_update() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    model.conv.requires_grad_(False)
    cost = _count(model, (4, 8, 8))
    conv = _row(cost, "conv")
    assert conv.flops.backward_weight == 0
    assert conv.flops.update == 0
    assert conv.memory_bytes.grads == 0 and conv.memory_bytes.optimizer_state == 0
    # 6*4*9 + 6 = 222 parameters of 4 bytes
    assert conv.memory_bytes.weights == 888
    assert conv.trainable_params == 0
    # The stem below still needs this layer's input gradient.
    assert conv.flops.backward_input == 2 * 27_648


def test_frozen_first_layer_removes_the_next_layers_input_gradient() -> None:
    # With the stem frozen, nothing below the conv needs a gradient: autograd
    # runs no input gradient for the conv either.
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    model.stem.requires_grad_(False)
    cost = _count(model, (4, 8, 8))
    stem, conv = _row(cost, "stem"), _row(cost, "conv")
    assert stem.flops.backward == 0 and stem.bytes_moved.backward == 0
    assert conv.flops.backward_input == 0
    assert conv.flops.backward_weight == 2 * 27_648


def _count_on(model: nn.Module, shape: tuple[int, ...], target: KernelTarget,
              **kw: str) -> CostResult:
    cfg = WorkloadSpec.create("test", batch_size=2, input_shape=shape, num_classes=10, **kw)
    return count_step(model, cfg, label="test", kernel_target=target)


def test_sgd_update_and_memory_of_a_layer() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    conv = _row(_count_on(model, (4, 8, 8), KernelTarget("cpu")), "conv")
    # 222 parameters (weight 216, bias 6); the CPU's single-tensor SGD with momentum and
    # weight decay: g2 = g.add(p, alpha=wd) (2 FLOPs), buf.mul_(mu) (1),
    # buf.add_(g2) (2), p.add_(buf, alpha=-lr) (2) = 7 FLOPs per element: 1,554.
    assert conv.flops.update == 7 * 222
    # element moves: 3 (g, p read; g2 written) + 2 (buf) + 3 (buf, g2; buf) + 3 (p, buf; p)
    # = 11 per element: 11 * 222 * 4 bytes
    assert conv.bytes_moved.update == 11 * 888
    (upd,) = [w for w in conv.ops if w.phase == "update"]
    # four kernels per tensor, two tensors
    assert upd.op == "update.sgd.single_tensor" and upd.calls == 8
    assert conv.memory_bytes.grads == 888
    assert conv.memory_bytes.optimizer_state == 888  # one momentum buffer


def test_sgd_foreach_on_cuda_same_bytes_fewer_launches() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    cost = _count_on(model, (4, 8, 8), KernelTarget("cuda", (9, 0)))
    conv = _row(cost, "conv")
    assert conv.bytes_moved.update == 11 * 888  # the same passes as _foreach_ kernels
    # all four tensors (conv and head, weight and bias) fit in one launch per pass: the
    # four launches are charged to the layer holding the first tensor, the conv.
    ups = [w for r in cost.layers for w in r.ops if w.phase == "update"]
    assert sum(w.calls for w in ups) == 4
    assert next(w for w in conv.ops if w.phase == "update").op == "update.sgd.foreach"
    assert cost.kernel_choices["optimizer"].startswith("foreach sgd: 4 kernel(s) per group")


def test_fused_sgd_reads_and_writes_each_tensor_once() -> None:
    from layertime.cost.count.update import update_rule

    rule = update_rule("sgd", "fused")
    # reads p, g, buf and writes p, buf
    assert rule.elements_moved_per_element == 5 and len(rule.passes) == 1
    assert update_rule("sgd", "foreach").elements_moved_per_element == 11


def test_adam_keeps_two_state_tensors_and_counts_13_flops() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    conv = _row(_count_on(model, (4, 8, 8), KernelTarget("cpu"), optimizer="adam"), "conv")
    assert conv.memory_bytes.optimizer_state == 2 * 888
    assert conv.flops.update == 13 * 222
    # lerp_ 3, mul_ 2, addcmul_ 3, sqrt 2, div 2, add_ 2, addcdiv_ 4 = 18 moves
    assert conv.bytes_moved.update == 18 * 888


def test_bytes_of_a_conv_forward_follow_minimum_traffic() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    conv = _row(_count(model, (4, 8, 8)), "conv")
    fwd = [w for w in conv.ops if w.phase == "forward"]
    assert [w.op for w in fwd] == ["aten.convolution"]
    # read x 2*4*8*8 = 512, weight 216, bias 6; write 2*6*8*8 = 768: 1,502 floats
    assert fwd[0].bytes_moved == 1_502 * 4


def test_saved_activations_and_outputs() -> None:
    model = _meta(lambda: nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)))
    cost = _count(model, (16,), batch=4)
    fc1, relu, fc2 = _row(cost, "0"), _row(cost, "1"), _row(cost, "2")
    # fc1 saves its input (the batch, 4 x 16 floats); ReLU saves its output
    # (4 x 32); fc2 saves its input, the same storage as ReLU's output: saved by two
    # layers, it is charged once, to the layer whose op allocated it (the ReLU).
    assert fc1.memory_bytes.saved_activations == 4 * 16 * 4
    assert relu.memory_bytes.saved_activations == 4 * 32 * 4
    assert fc2.memory_bytes.saved_activations == 0
    assert fc2.memory_bytes.output == 4 * 10 * 4
    # the Sequential passes on its last child's output and owns none of it
    assert _row(cost, "").memory_bytes.output == 0


def test_container_self_work_is_charged_to_the_container() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) + x  # the add is the container's own work

    model = _meta(lambda: nn.Sequential(nn.Linear(8, 8), Residual(), nn.Linear(8, 10)))
    cost = _count(model, (8,), batch=4)
    block = _row(cost, "1")
    assert [w.op for w in block.ops if w.phase == "forward"] == ["aten.add"]
    assert block.flops.total == 0 and block.bytes_moved.forward == 3 * 4 * 8 * 4
    assert "aten.add" in block.not_counted


def test_loss_row_and_not_counted_ops_are_listed() -> None:
    model = _meta(lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 10)))
    cost = _count(model, (8,), batch=4)
    assert cost.loss.name == LOSS_NAME and cost.loss.kind == "loss"
    assert cost.loss.bytes_moved.forward > 0 and cost.loss.bytes_moved.backward > 0
    nc = cost.not_counted()
    assert nc["aten.relu"] == 1 and nc["aten.threshold_backward"] == 1
    assert "aten.mm" not in nc and "aten.addmm" not in nc


def test_layer_names_and_kinds_match_the_profile_rows() -> None:
    from layertime.modules import ModuleTable

    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    cost = _count(model, (4, 8, 8))
    table = ModuleTable(model)
    assert [(r.name, r.kind, r.type, r.params) for r in cost.layers] == [
        (e.name, e.kind, e.type, e.params) for e in table
    ]


def test_shared_module_is_one_row_with_two_calls() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.fc(self.fc(x)))

    cost = _count(_meta(Twice), (8,), batch=4)
    fc = _row(cost, "fc")
    assert fc.calls == 2
    # two calls of 4 * 8 * 8 = 256 MACs
    assert fc.flops.forward == 2 * 2 * 256
    # the first call's input is the batch: one input gradient, two weight gradients
    assert fc.flops.backward_input == 2 * 256
    assert fc.flops.backward_weight == 2 * 2 * 256


def test_forward_only_in_eval_mode_has_no_backward_update_or_saved_memory() -> None:
    model = _meta(lambda: StemConvHead(nn.Conv2d(4, 6, 3, padding=1), 6 * 64))
    cfg = WorkloadSpec.create("test", batch_size=2, input_shape=(4, 8, 8), num_classes=10)
    cost = count_step(model, cfg, label="t", training=False)
    assert cost.flops.backward == 0 and cost.flops.update == 0
    assert cost.memory_bytes.saved_activations == 0 and cost.memory_bytes.grads == 0
    assert _row(cost, "conv").flops.forward == 2 * 27_648


def test_existing_gradients_are_restored() -> None:
    model = _meta(lambda: nn.Sequential(nn.Linear(8, 10)))
    marker = torch.empty(10, 8, device="meta")
    model[0].weight.grad = marker
    _count(model, (8,), batch=2)
    assert model[0].weight.grad is marker
    assert model[0].bias.grad is None


def test_no_trainable_parameters_is_an_error() -> None:
    model = _meta(lambda: nn.Sequential(nn.Linear(8, 10)))
    model.requires_grad_(False)
    with pytest.raises(LayertimeError, match="no trainable parameters"):
        _count(model, (8,))


class SmallNet(nn.Module):
    """Conv, BN, ReLU, max pool, a residual block, dropout, linear: the common op kinds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = x + self.bn2(self.conv2(x))
        return self.fc(self.drop(torch.flatten(x, 1)))


def _comparable(cost: CostResult) -> list[tuple]:  # type: ignore[type-arg]
    return [
        (r.name, r.calls, r.flops, r.bytes_moved, r.memory_bytes, r.ops) for r in cost.rows
    ]


def test_meta_and_real_tensors_give_the_same_counts() -> None:
    torch.manual_seed(0)
    real = SmallNet()
    meta = meta_copy(real)
    cfg = WorkloadSpec.create("test", batch_size=4, input_shape=(3, 8, 8), num_classes=10)
    on_meta = count_step(meta, cfg, label="small")
    on_cpu = count_step(real, cfg, label="small")
    assert on_meta.tensors == "meta" and on_cpu.tensors == "real"
    assert _comparable(on_meta) == _comparable(on_cpu)
    # and the real model was left as it was
    assert all(p.grad is None for p in real.parameters())


def test_estimate_of_a_module_copies_it_to_meta_and_leaves_it_alone() -> None:
    torch.manual_seed(0)
    real = SmallNet()
    before = copy.deepcopy(real.state_dict())
    cost = estimate(real, batch_size=2, input_shape=(3, 8, 8), num_classes=10)
    assert cost.tensors == "meta" and not cost.warnings
    assert all(p.device.type == "cpu" for p in real.parameters())
    assert all(torch.equal(before[k], v) for k, v in real.state_dict().items())


class NeedsData(nn.Module):
    """A model whose forward reads a value back, which the meta device cannot do."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.abs().max()) > 1e9:  # data-dependent branch
            x = x * 0
        return self.fc(x)


def test_model_that_cannot_run_on_meta_falls_back_to_real_tensors_and_says_so() -> None:
    cost = estimate(NeedsData(), batch_size=2, input_shape=(4,), num_classes=3)
    assert cost.tensors == "real"
    assert len(cost.warnings) == 1 and "cannot run on the meta device" in cost.warnings[0]
    # 2 * 4 * 3 = 24 MACs
    assert _row(cost, "fc").macs_forward == 24


class BadShape(nn.Module):
    """A model that rejects its input the same way on any device."""

    calls: list[str] = []

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        BadShape.calls.append(x.device.type)
        raise ValueError("expected 5 features")


def test_an_error_that_is_not_the_meta_devices_is_reported_without_a_rerun() -> None:
    BadShape.calls.clear()
    with pytest.raises(LayertimeError, match="cannot run BadShape on input 4: expected 5"):
        estimate(BadShape(), batch_size=2, input_shape=(4,), num_classes=3)
    assert BadShape.calls == ["meta"]


def test_freeze_by_module_path_and_unknown_path() -> None:
    cost = estimate("alexnet", batch_size=2, frozen=["features"])
    conv = _row(cost, "features.3")
    assert conv.flops.backward_weight == 0 and conv.trainable_params == 0
    assert _row(cost, "features.0").flops.backward == 0
    assert _row(cost, "classifier.1").flops.backward_weight > 0
    with pytest.raises(LayertimeError, match="matches no parameter"):
        estimate("alexnet", batch_size=2, frozen=["nope"])


def test_alexnet_conv_versus_fully_connected() -> None:
    cost = estimate("alexnet", batch_size=128)
    kinds = cost.by_kind()
    # torchvision's alexnet: 0.714 GMACs per image, 61,100,840 parameters
    assert round(cost.macs_forward / 128 / 1e9, 3) == 0.714
    assert cost.params == 61_100_840
    assert kinds["conv"].flops_share > 0.9 and kinds["linear"].params_share > 0.95
    assert abs(sum(k.flops_share for k in kinds.values()) - 1) < 1e-9
    assert abs(sum(k.params_share for k in kinds.values()) - 1) < 1e-9
