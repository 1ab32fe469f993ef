"""Kernel-aware counting: SDPA's backend by torch's rules (checked against what torch
dispatches on this CPU), the math path's work and traffic by hand, the optimizer's
implementations."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from layertime.cost import estimate
from layertime.cost.count.kernel_choice import (
    KernelTarget,
    SdpaCall,
    foreach_launches,
    optimizer_impl,
    sdpa_backend,
    target_of_name,
)

pytestmark = pytest.mark.usefixtures("one_thread")

B, H, S, D = 1, 2, 4, 8  # batch, heads, sequence, head dim of the hand-counted attention

#: What moves no data or only allocates: left out when comparing op names.
_NOT_KERNELS = {"aten.view", "aten.detach", "aten.expand", "aten.transpose", "aten.t",
                "aten._unsafe_view", "aten.empty_like", "aten.new_empty_strided",
                "aten.empty_strided", "aten.empty", "aten.as_strided", "aten.permute",
                "aten.unsqueeze", "aten.squeeze", "aten.alias", "aten.slice", "aten.select",
                "aten.split", "aten.reshape", "aten._reshape_alias", "aten.unbind"}


class _Names(TorchDispatchMode):
    """Records the aten ops that run (by packet name)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(str(func._overloadpacket))
        return func(*args, **(kwargs or {}))


class _Core(torch.nn.Module):
    """Causal SDPA over q, k, v given as one input; dropout as GPT-2 trains with it."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        # q, k, v each scaled by a parameter: all three need their gradient
        self.scales = torch.nn.Parameter(torch.ones(3, D))
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (x * s for s in self.scales.unbind(0))
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)


def _dispatched(dropout: float, dtype: str = "float32") -> set[str]:
    """The ops torch really runs for the module's forward and backward on this CPU."""
    torch.manual_seed(0)
    model = _Core(dropout).train().to(getattr(torch, dtype))
    x = torch.randn(B, H, S, D, dtype=getattr(torch, dtype), requires_grad=True)
    rec = _Names()
    with rec:
        out = model(x)
        # as a training step: gradients of the parameters only (the count's convention)
        torch.autograd.backward(out, torch.ones_like(out), inputs=list(model.parameters()))
    return set(rec.ops) - _NOT_KERNELS - {"aten.ones_like"}


def _counted(dropout: float, dtype: str = "float32") -> tuple[set[str], Any]:
    cost = estimate(_Core(dropout), batch_size=B, input_shape=(H, S, D), dtype=dtype,
                    kernel_target=KernelTarget("cpu"))
    row = next(r for r in cost.layers if r.name == "")
    return {w.op for w in row.ops if w.phase != "update"} - _NOT_KERNELS, cost


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_counted_sdpa_path_is_what_torch_runs_on_this_cpu(dropout: float,
                                                                dtype: str) -> None:
    ran = _dispatched(dropout, dtype)
    choice = sdpa_backend(KernelTarget("cpu"), SdpaCall(dtype, (B, H, S, D), (B, H, S, D),
                                                       (B, H, S, D), dropout_p=dropout,
                                                       is_causal=True))
    counted, cost = _counted(dropout, dtype)
    if dtype == "bfloat16" and dropout:
        # the math path runs half precision in float32: q, k, v cast up, the output down
        assert "aten._to_copy" in ran and "aten._to_copy" in counted
    if dropout:
        assert choice.backend == "math" and choice.describe() == "math path (dropout 0.1 on cpu)"
        assert "aten._scaled_dot_product_flash_attention_for_cpu" not in ran
        # every kernel of the math path that torch ran is counted, forward and backward
        assert ran == counted, (ran - counted, counted - ran)
        assert {"aten.bmm", "aten._safe_softmax", "aten.bernoulli_", "aten.tril",
                "aten._softmax_backward_data"} <= ran
    else:
        assert choice.backend == "flash_cpu"
        assert {"aten._scaled_dot_product_flash_attention_for_cpu",
                "aten._scaled_dot_product_flash_attention_for_cpu_backward"} <= ran
        assert {"aten._scaled_dot_product_flash_attention_for_cpu",
                "aten._scaled_dot_product_flash_attention_for_cpu_backward"} <= counted
        assert "aten.bmm" not in ran and "aten.bmm" not in counted
        assert ran == counted, (ran - counted, counted - ran)
    assert cost.kernel_choices["attention"] == choice.describe()
    assert cost.kernel_target == "cpu"


def test_the_math_path_by_hand() -> None:
    cost = estimate(_Core(0.1), batch_size=B, input_shape=(H, S, D),
                    kernel_target=KernelTarget("cpu"))
    row = next(r for r in cost.layers if r.name == "")
    fwd = {w.op: w for w in row.ops if w.phase == "forward"}
    bwd = {w.op: w for w in row.ops if w.phase == "backward_input"}
    bh = B * H
    scores = bh * S * S * 4  # bytes of one float32 S x S tensor per batch and head
    qkv = bh * S * D * 4  # bytes of q, k or v
    # Q K^T and P V: 2*BH*S*S*D each, full S x S (no causal halving on the math path)
    assert fwd["aten.bmm"].calls == 2 and fwd["aten.bmm"].flops == 2 * (2 * bh * S * S * D)
    # each bmm reads its operands and writes its product: (q, k -> scores), (p, v -> out)
    assert fwd["aten.bmm"].bytes_moved == (2 * qkv + scores) + (scores + 2 * qkv)
    # backward: the four products of the two bmm's gradients (no recomputation)
    assert bwd["aten.bmm"].calls == 4 and bwd["aten.bmm"].flops == 4 * (2 * bh * S * S * D)
    # _safe_softmax: softmax (scores read, y written), scores == -inf (scores read, a bool
    # each written), all() per row (bools read, a bool per row written), where (row bools
    # and y read, the result written); its backward reads dy and y, writes dx
    assert fwd["aten._safe_softmax"].bytes_moved == 5 * scores + 2 * bh * S * S + 2 * bh * S
    assert bwd["aten._softmax_backward_data"].bytes_moved == 3 * scores
    # dropout: bernoulli_ writes the mask, div_ reads and writes it
    assert fwd["aten.bernoulli_"].bytes_moved == scores
    assert fwd["aten.div_"].bytes_moved == 2 * scores
    # the causal mask: a bool S x S made by ones and tril, turned into a float bias by where,
    # added to the scores (each S x S once: the bias broadcasts over batch and heads)
    assert fwd["aten.tril"].bytes_moved == 2 * S * S
    assert fwd["aten.where"].bytes_moved == S * S + 2 * 4 + S * S * 4
    assert fwd["aten.add"].bytes_moved == scores + S * S * 4 + scores
    # saved: the probabilities after dropout, the mask, ... : at least two S x S tensors
    assert row.memory_bytes.saved_activations >= 2 * scores


@pytest.mark.parametrize("dtype, sm, dropout, head, mask, want", [
    ("bfloat16", (9, 0), 0.0, 64, False, "cudnn"),      # cuDNN first on sm90
    ("bfloat16", (9, 0), 0.1, 64, False, "flash"),      # 0.1 is no multiple of 1/16
    ("float16", (8, 0), 0.1, 64, False, "flash"),
    ("float32", (8, 0), 0.1, 64, False, "efficient"),   # flash takes half precision only
    ("float32", (7, 5), 0.0, 64, False, "efficient"),   # a T4
    ("float16", (8, 0), 0.0, 64, True, "efficient"),    # flash takes no mask tensor
    ("float16", (8, 6), 0.0, 200, False, "efficient"),  # training, head dim in (192, 224]
    ("float16", (8, 6), 0.0, 256, False, "flash"),      # ... but > 224 without dropout
    ("float16", (8, 6), 0.1, 256, False, "efficient"),
    ("float16", (8, 0), 0.0, 264, False, "math"),       # over flash's 256; 264 % 8 ok ...
    ("float64", (8, 0), 0.0, 64, False, "math"),
    ("bfloat16", (7, 0), 0.0, 64, False, "math"),       # no bfloat16 before sm80
    ("float32", (8, 0), 0.0, 30, False, "math"),        # 30 is no multiple of 4
])
def test_cuda_backend_rules(dtype: str, sm: tuple[int, int], dropout: float, head: int,
                            mask: bool, want: str) -> None:
    shape = (2, 12, 256, head)
    call = SdpaCall(dtype, shape, shape, shape, has_mask=mask, dropout_p=dropout,
                    is_causal=not mask)
    got = sdpa_backend(KernelTarget("cuda", sm), call)
    if want == "math" and head == 264:
        want = "efficient"  # the memory-efficient kernel has no head-dim limit on CUDA
    assert got.backend == want, got


def test_cpu_backend_rules() -> None:
    four = (2, 4, 16, 8)
    assert sdpa_backend(KernelTarget(), SdpaCall("float32", four, four, four)).backend == (
        "flash_cpu")
    assert sdpa_backend(KernelTarget(), SdpaCall("float32", four, four, four,
                                                 dropout_p=0.1)).backend == "math"
    three = (8, 16, 8)
    assert sdpa_backend(KernelTarget(), SdpaCall("float32", three, three, three)).backend == (
        "math")
    gqa_k = (2, 2, 16, 8)
    assert sdpa_backend(KernelTarget(), SdpaCall("float32", four, gqa_k, gqa_k)).backend == (
        "math")
    assert sdpa_backend(KernelTarget(), SdpaCall("float32", four, gqa_k, gqa_k,
                                                 enable_gqa=True)).backend == "flash_cpu"


def test_targets_of_device_names() -> None:
    assert target_of_name("NVIDIA H100 80GB HBM3") == KernelTarget("cuda", (9, 0))
    assert target_of_name("NVIDIA A100 SXM4 80GB") == KernelTarget("cuda", (8, 0))
    assert target_of_name("NVIDIA Tesla T4") == KernelTarget("cuda", (7, 5))
    assert target_of_name("AMD EPYC 7B13") == KernelTarget("cpu")
    assert target_of_name("NVIDIA GeForce GTX TITAN X (Maxwell)").sm == (5, 2)
    assert optimizer_impl(KernelTarget("cpu")) == "single_tensor"
    assert optimizer_impl(KernelTarget("cuda", (9, 0))) == "foreach"


def test_foreach_launches_by_hand() -> None:
    # two tensor lists (depth 2): at most 64 tensors per launch
    assert foreach_launches([10] * 250, 2) == [0, 64, 128, 192]
    # one tensor of 2 launches' worth of chunks and one element more: three launches
    assert foreach_launches([2 * 320 * 65536 + 1], 1) == [0, 0, 0]
    # a small tensor after a full launch starts the next one
    assert foreach_launches([320 * 65536, 5], 1) == [0, 1]


def test_a_prediction_on_another_device_than_counted_says_so() -> None:
    from layertime.cost import get_profile, predict, target_of_profile

    model = _Core(0.1)
    h100 = get_profile("h100")
    on_cpu = estimate(model, batch_size=B, input_shape=(H, S, D),
                      kernel_target=KernelTarget("cpu"))
    assert any("counted with the kernels of cpu" in w for w in predict(on_cpu, h100).warnings)
    followed = estimate(model, batch_size=B, input_shape=(H, S, D),
                        kernel_target=target_of_profile(h100))
    assert followed.kernel_target == "cuda sm90"
    assert not any("counted with the kernels" in w for w in predict(followed, h100).warnings)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_saved_for_backward_as_the_kernel_that_runs_saves(dropout: float) -> None:
    import layertime

    torch.manual_seed(0)
    run = layertime.profile(_Core(dropout), batch_size=B, input_shape=(H, S, D),
                            num_classes=H, device="cpu", steps=1, warmup_steps=0)
    measured = next(r.saved_bytes for r in run.layers if r.name == "")
    cost = estimate(_Core(dropout), batch_size=B, input_shape=(H, S, D), num_classes=H,
                    kernel_target=KernelTarget("cpu"))
    counted = next(r.memory_bytes.saved_activations for r in cost.layers if r.name == "")
    # math path (dropout): the S x S probabilities and mask; flash: q, k, v, out, lse
    assert counted == measured > 0
