"""Per-op memory traffic (layertime/cost/count/op_bytes.py): formulas by hand, and every op of
real models counted by a formula of its own, none by the blanket default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layertime.cost import estimate
from layertime.cost.count.kernel_choice import KernelTarget
from layertime.cost.count.op_bytes import op_bytes, rule_of
from layertime.models import ModelRef
from layertime.results.cost.estimate import CostResult

pytestmark = pytest.mark.usefixtures("one_thread")

aten = torch.ops.aten


class _ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).flatten(1))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_batch_norm_in_training_by_hand(device: str) -> None:
    n, c, hw = 2, 4, 8 * 8
    target = KernelTarget(device, (9, 0) if device == "cuda" else None)
    cost = estimate(_ConvBN(), batch_size=n, input_shape=(3, 8, 8), num_classes=10,
                    kernel_target=target)
    bn = next(r for r in cost.layers if r.name == "bn")
    act = n * c * hw * 4  # bytes of the activation
    vec = c * 4  # one per-channel vector
    fwd = next(w for w in bn.ops if w.op == "aten.native_batch_norm")
    # statistics pass reads x, the transform reads x and writes y: 3 x the activation;
    # weight, bias, running mean and variance read, save_mean and save_invstd written
    assert fwd.bytes_moved == 3 * act + 6 * vec
    bwd = next(w for w in bn.ops if w.op == "aten.native_batch_norm_backward")
    # weight, running stats, save_mean, save_invstd read; grad_weight, grad_bias written
    small = 5 * vec + 2 * vec
    if device == "cuda":
        # reduce kernel reads dy and x, elementwise kernel reads both again, writes dx
        assert bwd.bytes_moved == 5 * act + small
    else:
        # one loop per channel: the second pass re-reads the slice the first read
        assert bwd.bytes_moved == 3 * act + small
    # the blanket (each distinct operand once) would have said 2 x forward
    assert fwd.bytes_moved > 2 * act + 6 * vec


def test_batch_norm_in_eval_reads_once() -> None:
    x = torch.randn(2, 4, 8, 8)
    w, b, rm, rv = (torch.ones(4) for _ in range(4))
    out = aten.native_batch_norm.default(x, w, b, rm, rv, False, 0.1, 1e-5)
    nbytes, rule = op_bytes(aten.native_batch_norm.default,
                            (x, w, b, rm, rv, False, 0.1, 1e-5), {}, out, "cpu")
    outs = sum(t.numel() * 4 for t in out[1:])
    assert rule == "aten.native_batch_norm"
    assert nbytes == x.numel() * 4 * 2 + 4 * 4 * 4 + outs


def test_loss_and_embedding_read_only_what_they_pick() -> None:
    logits = torch.randn(6, 50)
    target = torch.randint(0, 50, (6,))
    out = aten.nll_loss_forward.default(logits, target, None, 1, -100)
    nbytes, _ = op_bytes(aten.nll_loss_forward.default, (logits, target, None, 1, -100), {},
                         out, "cpu")
    # the targets (int64) and one float per target, the loss and the total weight
    assert nbytes == 6 * 8 + 6 * 4 + 4 + 4
    grad = aten.nll_loss_backward.default(torch.tensor(1.0), logits, target, None, 1, -100,
                                          out[1])
    nbytes, _ = op_bytes(aten.nll_loss_backward.default,
                         (torch.tensor(1.0), logits, target, None, 1, -100, out[1]), {}, grad,
                         "cpu")
    # the gradient filled once (6 x 50), one element per target, targets, two scalars
    assert nbytes == 6 * 50 * 4 + 6 * 4 + 6 * 8 + 4 + 4
    table = torch.randn(1000, 16)
    idx = torch.tensor([[1, 2, 2]])
    emb = aten.embedding.default(table, idx)
    nbytes, _ = op_bytes(aten.embedding.default, (table, idx), {}, emb, "cpu")
    assert nbytes == 3 * 8 + 2 * 3 * 16 * 4  # not the 1000-row table
    gw = aten.embedding_dense_backward.default(torch.ones(1, 3, 16), idx, 1000, -1, False)
    nbytes, _ = op_bytes(aten.embedding_dense_backward.default,
                         (torch.ones(1, 3, 16), idx, 1000, -1, False), {}, gw, "cpu")
    # the dense table's gradient zeroed (1000 x 16), grad_out and indices read, the
    # touched rows (at most one per index: 3) read and written
    assert nbytes == 1000 * 16 * 4 + 3 * 16 * 4 + 3 * 8 + 2 * 3 * 16 * 4


def test_layer_norm_backward_differs_by_device() -> None:
    x, dy = torch.randn(4, 8), torch.randn(4, 8)
    w, b = torch.ones(8), torch.zeros(8)
    _, mean, rstd = aten.native_layer_norm.default(x, [8], w, b, 1e-5)
    args = (dy, x, [8], mean, rstd, w, b, [True, True, True])
    out = aten.native_layer_norm_backward.default(*args)
    cpu, _ = op_bytes(aten.native_layer_norm_backward.default, args, {}, out, "cpu")
    cuda, _ = op_bytes(aten.native_layer_norm_backward.default, args, {}, out, "cuda")
    # CUDA's GammaBetaBackward kernel reads dy and x again
    assert cuda - cpu == 2 * 4 * 8 * 4


def _defaults(cost: CostResult) -> set[str]:
    """Ops of a count whose bytes came from the blanket default (no formula of their own)."""
    out = set()
    for r in cost.rows:
        for w in r.ops:
            if w.op.startswith("update.") or not w.op.startswith("aten."):
                continue
            packet = getattr(aten, w.op.removeprefix("aten."), None)
            if packet is None:  # a counted op of layertime's own (a fused SDPA backend)
                continue
            func = getattr(packet, packet.overloads()[0])
            if rule_of(func)[1] == "default":
                out.add(w.op)
    return out


@pytest.mark.parametrize("model, kw", [
    ("resnet50", {"batch_size": 2}),
    (ModelRef("hf:gpt2", ("n_layer=2",)), {"seq_len": 32, "batch_size": 1}),
    ("mobilenet_v3_large", {"batch_size": 2}),
    ("vit_b_16", {"batch_size": 1}),
    (ModelRef("hf:bert", ("num_hidden_layers=2",)), {"seq_len": 32, "batch_size": 1}),
])
def test_every_op_of_real_models_has_a_traffic_formula(model: object, kw: dict) -> None:
    for target in (KernelTarget("cpu"), KernelTarget("cuda", (9, 0))):
        cost = estimate(model, kernel_target=target, **kw)  # type: ignore[arg-type]
        assert _defaults(cost) == set(), target
