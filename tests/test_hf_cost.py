"""The cost model on token workloads: one block's FLOPs by hand, SDPA, roles, blocks, meta vs real."""

from __future__ import annotations

import pytest
import torch

from _tiny_transformers import tiny
from layertime.cost import estimate
from layertime.cost.count.attention import SDPA_BACKWARD_OPS, SDPA_OPS, sdpa_flops
from layertime.cost.count.kernel_choice import KernelTarget
from layertime.models import ModelRef


def _hf(model_type: str, config: list[str] | None = None) -> ModelRef:
    return ModelRef(f"hf:{model_type}", tuple(tiny(model_type) if config is None else config))

pytestmark = pytest.mark.usefixtures("one_thread")

B, S, D, H = 2, 16, 64, 4  # batch, sequence, hidden, heads of the tiny configs


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_sdpa_flops_match_torchs_formulas_and_halve_when_causal() -> None:
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    q, k, v = (2, 8, 128, 64), (2, 8, 256, 64), (2, 8, 256, 32)
    assert sdpa_flops(q, k, v, causal=False) == sdpa_flop_count(q, k, v)
    assert sdpa_flops(q, k, v, causal=False, backward=True) == sdpa_backward_flop_count(
        (2, 8, 128, 32), q, k, v)
    assert sdpa_flops(q, k, v, causal=True) * 2 == sdpa_flop_count(q, k, v)
    # Grouped-query attention: the query heads count.
    assert sdpa_flops((1, 8, 4, 2), (1, 2, 4, 2), (1, 2, 4, 2), causal=False) == 2 * 8 * 4 * 4 * 4


def _rows(cost: object, prefix: str) -> dict[str, object]:
    return {r.name: r for r in cost.layers if r.name.startswith(prefix)}  # type: ignore[attr-defined]


def test_one_gpt2_block_counted_against_the_arithmetic() -> None:
    # On a CUDA GPU (sm80, float32) GPT-2's SDPA takes the memory-efficient kernel:
    # one op, causal halving.
    cost = estimate(_hf("gpt2"), seq_len=S, batch_size=B, kernel_target=KernelTarget("cuda", (8, 0)))
    rows = _rows(cost, "transformer.h.0")
    tokens = B * S

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        f = rows[f"transformer.h.0.{name}"].flops  # type: ignore[attr-defined]
        mm = 2 * tokens * fan_in * fan_out
        assert (f.forward, f.backward_input, f.backward_weight) == (mm, mm, mm), name

    linear("attn.c_attn", D, 3 * D)
    linear("attn.c_proj", D, D)
    linear("mlp.c_fc", D, 4 * D)
    linear("mlp.c_proj", 4 * D, D)
    core = rows["transformer.h.0.attn"]
    dh = D // H
    # Causal: half of Q K^T and P V forward; half of five products backward.
    assert core.flops.forward == 2 * B * H * S * S * (dh + dh) // 2  # type: ignore[attr-defined]
    assert core.flops.backward_input == 2 * B * H * S * S * (5 * dh) // 2  # type: ignore[attr-defined]
    ops = {(w.op, w.phase) for w in core.ops}  # type: ignore[attr-defined]
    assert (SDPA_OPS["efficient"], "forward") in ops
    assert (SDPA_BACKWARD_OPS["efficient"], "backward_input") in ops
    assert cost.kernel_target == "cuda sm80"
    assert cost.kernel_choices["attention"].startswith("memory-efficient (float32, dropout 0.1")
    # The head's matmul, tied to the embedding: its own FLOPs, no parameters.
    head = next(r for r in cost.layers if r.name == "lm_head")
    assert head.params == 0 and head.flops.forward == 2 * tokens * D * 128
    assert cost.seq_len == S and cost.input_shape == (S,) and cost.num_classes == 128


def test_gpt2_attention_on_the_cpu_is_the_math_path_op_by_op() -> None:
    # Training with attention dropout 0.1 on the CPU: the math path, full S x S work.
    cost = estimate(_hf("gpt2"), seq_len=S, batch_size=B, kernel_target=KernelTarget("cpu"))
    core = _rows(cost, "transformer.h.0")["transformer.h.0.attn"]
    dh = D // H
    bh = B * H
    # Forward: Q K^T and P V by bmm, 2*BH*S*S*dh each, no causal halving.
    assert core.flops.forward == 2 * (2 * bh * S * S * dh)  # type: ignore[attr-defined]
    # Backward: the four products of the two bmm's gradients (no recomputation).
    assert core.flops.backward_input == 4 * (2 * bh * S * S * dh)  # type: ignore[attr-defined]
    ops = {w.op: w for w in core.ops if w.phase == "forward"}  # type: ignore[attr-defined]
    assert {"aten.bmm", "aten._safe_softmax", "aten.bernoulli_", "aten.where",
            "aten.tril"} <= set(ops)
    scores = bh * S * S * 4  # one float32 S x S tensor per batch and head
    # _safe_softmax's four kernels move five S x S float tensors and two of bools
    # (softmax, the -inf test, all() per row, where); bernoulli_ writes the mask.
    assert ops["aten._safe_softmax"].bytes_moved == 5 * scores + 2 * bh * S * S + 2 * bh * S
    assert ops["aten.bernoulli_"].bytes_moved == scores
    assert cost.kernel_choices["attention"] == "math path (dropout 0.1 on cpu) x2"
    # It saves the S x S probabilities and the dropout mask (and what they are made of).
    assert core.memory_bytes.saved_activations >= 2 * scores  # type: ignore[attr-defined]


def test_roles_blocks_and_the_transformer_headline() -> None:
    cost = estimate(_hf("llama"), seq_len=S, batch_size=B)
    roles = cost.by_role()
    assert set(roles) >= {"attention", "mlp", "embedding", "norm", "head", "loss"}
    assert sum(r.flops_share for r in roles.values()) == pytest.approx(1.0)
    assert sum(r.params_share for r in roles.values()) == pytest.approx(1.0)
    assert 0 < roles["attention"].core_flops < roles["attention"].flops.total
    blocks = cost.blocks()
    assert list(blocks) == ["model.layers.0", "model.layers.1"]
    b0, b1 = blocks.values()
    assert b0.flops == b1.flops and b1.saved_activations > 0
    # The rotary tables (cos, sin: 1 x S x head_dim each) are made once, outside the
    # blocks, and saved by every block: charged to the layer that made them, so the
    # blocks save alike.
    assert b0.saved_activations == b1.saved_activations
    rotary = next(r for r in cost.layers if r.name.endswith("rotary_emb"))
    assert rotary.memory_bytes.saved_activations == 2 * S * (D // H) * 4
    head = cost.headline()
    assert head.startswith("attention: ") and "score/softmax core" in head and "seq 16" in head
    d = cost.to_dict()
    assert d["seq_len"] == S and d["roles"]["attention"]["core_flops"] > 0
    assert d["blocks"]["model.layers.0"]["saved_activations_bytes"] == b0.saved_activations
    assert "attention" in d["conventions"]
    from layertime.results.cost.estimate import CostResult

    assert CostResult.from_dict(d).seq_len == S


def test_meta_and_real_tensors_count_the_same() -> None:
    from layertime.cost import build_meta
    from layertime.cost.count.counts import count_step
    from layertime.models import target
    from layertime.workload import TokenInput, WorkloadSpec

    for model_type in ("gpt2", "t5"):
        tgt = target(_hf(model_type), TokenInput(S))
        workload = WorkloadSpec(_hf(model_type), TokenInput(S), batch_size=B)
        meta = count_step(build_meta(tgt.build, 1, "float32"), workload, label="m")
        torch.manual_seed(0)
        real = count_step(tgt.build(1), workload, label="r")
        assert real.tensors == "real" and meta.tensors == "meta"
        for a, b in zip(meta.layers, real.layers):
            assert (a.name, a.kind, a.flops) == (b.name, b.kind, b.flops), a.name


def test_attention_overtakes_the_mlp_where_the_arithmetic_says() -> None:
    # GPT-2 block, fwd+bwd FLOPs per token: attention's projections 3 x 2 x 4*D^2,
    # its causal core (4 + 10) * S * D / 2 per token; the MLP 3 x 2 x 8*D^2.
    # Equal at 24*D^2 + 7*S*D = 48*D^2: S = 24 * D / 7 (219.4 for D = 64).
    def attention_minus_mlp(seq: int) -> int:
        cost = estimate(_hf("gpt2", tiny("gpt2")[:-1] + ["n_positions=256"]), seq_len=seq,
                        batch_size=1, kernel_target=KernelTarget("cuda", (8, 0)))
        roles = cost.by_role()
        fb = {k: roles[k].flops.forward + roles[k].flops.backward for k in ("attention", "mlp")}
        return fb["attention"] - fb["mlp"]

    assert attention_minus_mlp(219) < 0 < attention_minus_mlp(220)


def test_seven_billion_llama_shape_on_meta_is_counted() -> None:
    cost = estimate(_hf("llama", ["hidden_size=4096", "num_hidden_layers=2",
                                  "intermediate_size=11008"]), seq_len=4096, batch_size=1)
    assert cost.tensors == "meta"
    core = next(r for r in cost.layers if r.name == "model.layers.0.self_attn")
    assert core.flops.forward == 2 * 1 * 32 * 4096 * 4096 * 256 // 2


class _Attention(torch.nn.Module):
    """q, k, v as views of one projection's output, then fused causal attention."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(D, 3 * D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.reshape(B, S, H, D // H).transpose(1, 2)
                   for t in self.qkv(x).split(D, dim=-1))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.transpose(1, 2).reshape(B, S, D)


def test_sdpa_saves_what_the_fused_kernels_save() -> None:
    cost = estimate(_Attention(), batch_size=B, input_shape=(S, D))
    core = next(r for r in cost.layers if r.name == "")
    # q, k, v (one storage: the projection's output), the output, a float32
    # log-sum-exp per query row; no S x S probabilities.
    assert core.memory_bytes.saved_activations == 4 * (B * S * 3 * D + B * S * D + B * H * S)
    assert core.kind == "attention"
    assert core.flops.forward == 2 * B * H * S * S * 2 * (D // H) // 2


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mixture_of_experts_counts_each_token_through_its_top_k_experts(dtype: str) -> None:
    # tiny("mixtral"): hidden 64, experts' intermediate 32, 4 experts, top-2.
    cost = estimate(_hf("mixtral"), seq_len=S, batch_size=B, dtype=dtype)
    rows = {r.name: r for r in cost.layers}
    experts = rows["model.layers.0.mlp.experts"]
    routed = B * S * 2  # every token, through its two experts
    per_token = 2 * (64 * 2 * 32 + 32 * 64)  # gate_up (64 -> 2 x 32) and down (32 -> 64)
    f = experts.flops
    assert f.forward == routed * per_token
    assert f.backward_input == routed * per_token and f.backward_weight == routed * per_token
    roles = cost.by_role()
    assert roles["experts"].flops.total > 0 and roles["router"].flops.total > 0
    head = cost.headline()
    assert "MoE experts: " in head and "(router " in head
    grouped = [w for w in experts.ops if w.op == "aten._grouped_mm"]
    assert grouped and all(w.flop_status == "formula" for w in grouped)
