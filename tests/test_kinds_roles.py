"""Kinds by what a layer computes (names that mislead), and roles and blocks of transformers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _tiny_transformers import tiny
from layertime.kinds import KindObserver, kind_of, observed_kinds
from layertime.modules import ModuleTable
from layertime.roles import place

pytestmark = pytest.mark.usefixtures("one_thread")


# -- modules whose names mislead --------------------------------------------------------
class Conv1DLike(nn.Module):
    """Named like a convolution; computes x @ W + b (GPT-2's Conv1D)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))
        self.bias = nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, 8), self.weight).reshape(x.shape)


class ProjectionEmbedding(nn.Module):
    """Named like an embedding; multiplies by its weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


class AttentionPool(nn.Module):
    """Named like attention; averages."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True).expand_as(x)


class Mixer(nn.Module):
    """Named like nothing; computes softmax(q k^T) v by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = x @ x.transpose(-1, -2) / math.sqrt(x.shape[-1])
        return scores.softmax(dim=-1) @ x


class Fused(nn.Module):
    """Scaled dot-product attention through torch's fused function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.unsqueeze(1)
        return F.scaled_dot_product_attention(q, q, q, is_causal=True).squeeze(1)


class Scale(nn.Module):
    """Named like nothing; an RMS norm written by hand (Llama's, T5's)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class NewGELU(nn.Module):
    """nanoGPT's GELU: a leaf with no parameters whose ops are a nonlinearity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.core = Fused()


class WrapperAttention(nn.Module):
    """Named like attention, wraps another attention module and a projection (BertAttention)."""

    def __init__(self) -> None:
        super().__init__()
        self.self = SelfAttention()
        self.output = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self.core(x))


class Misleading(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv1DLike()
        self.embed = ProjectionEmbedding()
        self.pool = AttentionPool()
        self.mixer = Mixer()
        self.fused = Fused()
        self.scale = Scale()
        self.gelu = NewGELU()
        self.attention = WrapperAttention()
        self.lrn = nn.LocalResponseNorm(2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in (self.conv, self.embed, self.pool, self.mixer, self.fused, self.scale,
                  self.gelu, self.attention, self.relu):
            x = m(x)
        return self.lrn(x.unsqueeze(1)).squeeze(1)


def test_kinds_follow_what_each_module_computes() -> None:
    model = Misleading()
    x = torch.randn(2, 5, 8)
    for train in (False, True):  # watched without and with autograd
        kinds = observed_kinds(model, lambda: model(x) if train else model(x).detach())
        by_name = {n: kinds[id(m)] for n, m in model.named_modules()}
        assert by_name["conv"] == "linear"
        assert by_name["embed"] == "linear"
        assert by_name["pool"] == "other"  # named attention, computes a mean
        assert by_name["mixer"] == "attention"
        assert by_name["fused"] == "attention"
        assert by_name["scale"] == "norm"
        assert by_name["gelu"] == "activation"
        assert by_name["attention"] == "other"  # a wrapper: its self time is not the core
        assert by_name["attention.self.core"] == "attention"
        assert by_name["attention.output"] == "linear"
        assert (by_name["lrn"], by_name["relu"], by_name[""]) == ("norm", "activation", "other")


def test_class_rules_when_nothing_is_watched() -> None:
    model = Misleading()
    static = {n: kind_of(m) for n, m in model.named_modules()}
    assert static["attention"] == "other" and static["attention.self"] == "attention"
    assert static["pool"] == "attention"  # only a watched forward can tell
    assert static["lrn"] == "norm" and static["relu"] == "activation"
    assert kind_of(nn.MultiheadAttention(8, 2)) == "attention"
    assert kind_of(nn.Conv2d(1, 1, 1)) == "conv" and kind_of(nn.Embedding(2, 2)) == "embedding"


def test_watching_is_scoped_and_the_table_takes_the_kinds() -> None:
    model = Misleading()
    x = torch.randn(2, 5, 8)
    was = torch.backends.mha.get_fastpath_enabled()
    with KindObserver(model) as w:
        assert torch.backends.mha.get_fastpath_enabled() is False
        model(x)
    assert torch.backends.mha.get_fastpath_enabled() is was
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    table = ModuleTable(model, w.kinds())
    kinds = {e.name: e.kind for e in table}
    assert kinds["conv"] == "linear" and kinds["scale"] == "norm"


def test_tied_parameters_are_listed_once_at_their_first_owner() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.emb.weight

    table = ModuleTable(Tied())
    params = {e.name: e.params for e in table}
    assert params == {"": 0, "emb": 40, "head": 0}
    (shared,) = table.shared
    assert (shared.owner, shared.user, shared.numel) == ("emb", "head", 40)


# -- roles and blocks ---------------------------------------------------------------------
def _table(model: nn.Module, forward: object) -> ModuleTable:
    """The table a profile makes: kinds, parts and traits of one watched forward."""
    with KindObserver(model) as watched:
        forward()  # type: ignore[operator]
    return ModuleTable(model, facts=watched.facts())


def _placed(model: nn.Module, forward: object) -> dict[str, tuple[str, str | None]]:
    """Each row's (role, block) as a profile places them."""
    return {n: (p.role, p.block) for n, p in _table(model, forward).placements().items()}


def _kinds(table: ModuleTable) -> dict[str, str]:
    return {e.name: e.kind for e in table.rows()}


def _hf(model_type: str) -> nn.Module:
    from layertime.models.hf import resolve_hf

    torch.manual_seed(0)
    return resolve_hf(model_type, tiny(model_type)).build().eval()


def _token_forward(model: nn.Module) -> object:
    from layertime.workload import TokenInput

    batch = TokenInput(8).batch(1, model=model, device=torch.device("cpu"), dtype=torch.float32)
    return lambda: batch.run(model)


def test_roles_of_gpt2() -> None:
    m = _hf("gpt2")
    p = _placed(m, _token_forward(m))
    assert p["transformer.wte"] == ("embedding", None) and p["transformer.wpe"][0] == "embedding"
    assert p["transformer.h.0.attn"] == ("attention", "transformer.h.0")
    assert p["transformer.h.0.attn.c_attn"] == ("attention", "transformer.h.0")
    assert p["transformer.h.1.mlp.c_fc"] == ("mlp", "transformer.h.1")
    assert p["transformer.h.1.mlp.act"] == ("mlp", "transformer.h.1")
    assert p["transformer.h.0.ln_1"] == ("norm", "transformer.h.0")
    assert p["transformer.h.0"] == ("other", "transformer.h.0")  # its residual adds
    assert p["transformer.ln_f"] == ("norm", None) and p["lm_head"] == ("head", None)
    assert p["transformer"] == ("other", None) and p[""] == ("other", None)


def test_roles_of_bert() -> None:
    m = _hf("bert")
    p = _placed(m, _token_forward(m))
    blk = "bert.encoder.layer.1"
    assert p[f"{blk}.attention.self.query"] == ("attention", blk)
    assert p[f"{blk}.attention.self"] == ("attention", blk)
    assert p[f"{blk}.attention.output.dense"] == ("attention", blk)
    assert p[f"{blk}.attention.output.LayerNorm"] == ("norm", blk)
    assert p[f"{blk}.intermediate.dense"] == ("mlp", blk)
    assert p[f"{blk}.output.dense"] == ("mlp", blk)  # the MLP's second projection
    assert p["bert.embeddings.word_embeddings"] == ("embedding", None)
    assert p["bert.embeddings.LayerNorm"] == ("norm", None)
    assert p["cls.predictions.transform.LayerNorm"] == ("head", None)
    assert p["cls.predictions.decoder"] == ("head", None)


def test_roles_of_llama() -> None:
    m = _hf("llama")
    p = _placed(m, _token_forward(m))
    blk = "model.layers.1"
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert p[f"{blk}.self_attn.{proj}"] == ("attention", blk)
    for proj in ("gate_proj", "up_proj", "down_proj", "act_fn"):
        assert p[f"{blk}.mlp.{proj}"] == ("mlp", blk)
    assert p[f"{blk}.input_layernorm"] == ("norm", blk)  # LlamaRMSNorm
    assert p["model.rotary_emb"] == ("embedding", None)  # position tables
    assert p["model.embed_tokens"] == ("embedding", None) and p["lm_head"] == ("head", None)


def test_roles_of_t5() -> None:
    m = _hf("t5")
    p = _placed(m, _token_forward(m))
    enc, dec = "encoder.block.1", "decoder.block.0"
    assert p[f"{enc}.layer.0.SelfAttention.q"] == ("attention", enc)
    assert p[f"{dec}.layer.1.EncDecAttention.o"] == ("attention", dec)
    assert p[f"{dec}.layer.0.SelfAttention.relative_attention_bias"] == ("attention", dec)
    assert p[f"{enc}.layer.1.DenseReluDense.wi"] == ("mlp", enc)
    assert p[f"{enc}.layer.1.layer_norm"] == ("norm", enc)  # T5LayerNorm
    assert p["shared"] == ("embedding", None) and p["lm_head"] == ("head", None)
    assert p["encoder.final_layer_norm"] == ("norm", None)


def test_roles_of_torchvision_and_timm_vit() -> None:
    import timm
    import torchvision

    x = torch.randn(1, 3, 32, 32)
    tv = torchvision.models.vit_b_16(image_size=32).eval()
    table = _table(tv, lambda: tv(x))
    p = {n: (pl.role, pl.block) for n, pl in table.placements().items()}
    kinds = _kinds(table)
    blk = "encoder.layers.encoder_layer_3"
    # nn.MultiheadAttention computes its projections itself: its row is the core alone,
    # its in_proj a part of its own, its out_proj's matmul out_proj's row.
    assert p[f"{blk}.self_attention"] == ("attention", blk)
    assert kinds[f"{blk}.self_attention"] == "attention"
    assert p[f"{blk}.self_attention.(in_proj)"] == ("attention", blk)
    assert kinds[f"{blk}.self_attention.(in_proj)"] == "linear"
    assert p[f"{blk}.self_attention.out_proj"] == ("attention", blk)
    mha = next(e for e in table if e.name == f"{blk}.self_attention")
    part = next(e for e in table.parts if e.name == f"{blk}.self_attention.(in_proj)")
    out_proj = next(e for e in table if e.name == f"{blk}.self_attention.out_proj")
    assert mha.params == 0 and part.params == 3 * 768 * 768 + 3 * 768
    assert [row for _, row in table.own_ops[mha.index]] == [part.index, out_proj.index]
    assert p[f"{blk}.mlp.0"] == ("mlp", blk) and p[f"{blk}.mlp.1"] == ("mlp", blk)
    assert p[f"{blk}.ln_1"] == ("norm", blk)
    assert p["conv_proj"] == ("embedding", None) and p["heads.head"] == ("head", None)
    tm = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=10).eval()
    p = _placed(tm, lambda: tm(x))
    assert p["blocks.7.attn.qkv"] == ("attention", "blocks.7")
    assert p["blocks.7.attn"] == ("attention", "blocks.7")
    assert p["blocks.7.mlp.fc2"] == ("mlp", "blocks.7")
    assert p["blocks.7.norm1"] == ("norm", "blocks.7")
    assert p["patch_embed.proj"] == ("embedding", None) and p["head"] == ("head", None)


class HandWritten(nn.Module):
    """A transformer written the usual way (nanoGPT-like names)."""

    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = nn.ModuleDict({"qkv": nn.Linear(d, 3 * d), "proj": nn.Linear(d, d)})
            self.ln2 = nn.LayerNorm(d)
            self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.attn["qkv"](self.ln1(x)).unsqueeze(1).chunk(3, dim=-1)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).squeeze(1)
            x = x + self.attn["proj"](a)
            return x + self.ffn(self.ln2(x))

    def __init__(self, d: int = 16, n: int = 2) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(50, d)
        self.pos_emb = nn.Parameter(torch.zeros(1, 8, d))
        self.blocks = nn.ModuleList(HandWritten.Block(d) for _ in range(n))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 50)
        self.unknown = nn.Linear(d, d)
        self.transform = nn.Linear(d, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(ids) + self.pos_emb[:, : ids.shape[1]]
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i == 0:
                x = x + self.unknown(x)  # between the blocks: neither way in nor out
        return self.head(self.norm(self.transform(x)))


def test_roles_of_a_hand_written_transformer_and_what_cannot_be_placed() -> None:
    m = HandWritten()
    ids = torch.randint(0, 50, (2, 8))
    p = _placed(m, lambda: m(ids))
    assert p["blocks.1.attn.qkv"] == ("attention", "blocks.1")
    assert p["blocks.1.ffn.0"] == ("mlp", "blocks.1") and p["blocks.1.ffn.1"][0] == "mlp"
    assert p["blocks.0.ln2"] == ("norm", "blocks.0")
    # The block's own forward holds the attention core (F.sdpa) here: by kind, attention.
    assert p["blocks.0"] == ("attention", "blocks.0")
    assert p["tok_emb"] == ("embedding", None) and p["head"] == ("head", None)
    assert p["transform"] == ("head", None)  # on the way out of the blocks, as BERT's is
    assert p["unknown"] == ("other", None) and p[""] == ("other", None)


def test_a_cnn_has_no_blocks_and_keeps_its_headline() -> None:
    rows = [("features.0", "conv", "Conv2d"), ("layer1.0.conv1", "conv", "Conv2d"),
            ("layer1.0", "other", "Bottleneck"), ("fc", "linear", "Linear")]
    placed = place(rows)
    assert all(p.block is None for p in placed.values())
    assert {p.role for p in placed.values()} == {"other"}


def test_roles_of_a_model_with_fc1_fc2_straight_in_the_block() -> None:
    # OPT/BART-style names: no MLP container.
    rows = [
        ("model.decoder.embed_tokens", "embedding", "Embedding"),
        ("model.decoder.layers.0", "other", "OPTDecoderLayer"),
        ("model.decoder.layers.0.self_attn", "attention", "OPTAttention"),
        ("model.decoder.layers.0.self_attn.q_proj", "linear", "Linear"),
        ("model.decoder.layers.0.activation_fn", "activation", "ReLU"),
        ("model.decoder.layers.0.self_attn_layer_norm", "norm", "LayerNorm"),
        ("model.decoder.layers.0.fc1", "linear", "Linear"),
        ("model.decoder.layers.0.fc2", "linear", "Linear"),
        ("lm_head", "linear", "Linear"),
        # A CNN's squeeze-excitation fc1 is not an MLP: no attention around it.
        ("layer1.0.se.fc1", "conv", "Conv2d"),
    ]
    p = place(rows)
    blk = "model.decoder.layers.0"
    assert (p[f"{blk}.fc1"].role, p[f"{blk}.fc1"].block) == ("mlp", blk)
    assert p[f"{blk}.activation_fn"].role == "mlp" and p[f"{blk}.fc2"].role == "mlp"
    assert p[f"{blk}.self_attn_layer_norm"].role == "norm"
    assert (p["layer1.0.se.fc1"].role, p["layer1.0.se.fc1"].block) == ("other", None)


@pytest.mark.parametrize("model_type", ["olmoe", "qwen2_moe", "granitemoe"])
def test_a_moe_model_class_name_does_not_make_every_row_mlp(model_type: str) -> None:
    # "OlmoeModel", "Qwen2MoeForCausalLM", "GraniteMoeModel" hold "moe": not a feed-forward.
    m = _hf(model_type)
    p = _placed(m, _token_forward(m))
    assert p["model.embed_tokens"] == ("embedding", None)
    assert p["lm_head"] == ("head", None)
    assert p[""] == ("other", None) and p["model"] == ("other", None)
    assert p["model.norm"] == ("norm", None)


def _moe_roles(model_type: str) -> dict[str, tuple[str, str | None]]:
    m = _hf(model_type)
    return _placed(m, _token_forward(m))


@pytest.mark.parametrize("model_type, moe", [
    ("olmoe", "mlp"), ("qwen2_moe", "mlp"), ("granitemoe", "block_sparse_moe"),
    ("mixtral", "mlp"),
])
def test_a_mixture_of_experts_has_experts_and_a_router(model_type: str, moe: str) -> None:
    p = _moe_roles(model_type)
    blk = "model.layers.1"
    assert p[f"{blk}.{moe}"] == ("experts", blk)  # its dispatch and combine
    assert p[f"{blk}.{moe}.experts"] == ("experts", blk)
    router = f"{blk}.{moe}.router" if model_type == "granitemoe" else f"{blk}.{moe}.gate"
    assert p[router] == ("router", blk)
    assert p[f"{blk}.self_attn.q_proj"] == ("attention", blk)
    if model_type == "qwen2_moe":  # a shared expert, and its gate, are experts
        assert p[f"{blk}.mlp.shared_expert.down_proj"] == ("experts", blk)
        assert p[f"{blk}.mlp.shared_expert_gate"] == ("experts", blk)


def test_fused_experts_compute_fully_connected() -> None:
    # Mixtral's MixtralExperts holds 3-D weights and multiplies by them (grouped_mm).
    m = _hf("mixtral")
    kinds = _kinds(_table(m, _token_forward(m)))
    assert kinds["model.layers.0.mlp.experts"] == "linear"
    assert kinds["model.layers.0.mlp.gate"] == "linear"


def test_a_moe_block_that_takes_the_top_k_itself_has_its_gate_as_router() -> None:
    class Expert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.down(F.gelu(self.up(x)))

    class Moe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate = nn.Linear(8, 4)
            self.experts = nn.ModuleList(Expert() for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w, idx = self.gate(x).softmax(-1).topk(2, dim=-1)
            out = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                hit = (idx == e).any(-1)
                out[hit] += expert(x[hit]) * w[hit].sum(-1, keepdim=True)
            return out

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = SelfAttention()
            self.moe = Moe()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.moe(x + self.attn.core(x))

    model = nn.Sequential(Block(), Block())
    p = _placed(model, lambda: model(torch.randn(2, 5, 8)))
    assert p["1.moe.gate"] == ("router", "1")
    assert p["1.moe"] == ("experts", "1") and p["1.moe.experts.3.up"] == ("experts", "1")


def test_torch_transformer_layers_have_an_mlp_and_a_split_attention() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    x = torch.randn(2, 6, 16)
    table = _table(model, lambda: model(x))
    p = {n: (pl.role, pl.block) for n, pl in table.placements().items()}
    kinds = _kinds(table)
    assert p["layers.1.linear1"] == ("mlp", "layers.1") and p["layers.1.linear2"][0] == "mlp"
    assert p["layers.1.self_attn"] == ("attention", "layers.1")
    assert kinds["layers.1.self_attn"] == "attention"
    assert (kinds["layers.1.self_attn.(in_proj)"], p["layers.1.self_attn.(in_proj)"][0]) == (
        "linear", "attention")
    dec = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32, batch_first=True), 1)
    table = _table(dec, lambda: dec(x, x))
    p = {n: (pl.role, pl.block) for n, pl in table.placements().items()}
    assert p["layers.0.linear2"] == ("mlp", "layers.0")
    assert p["layers.0.multihead_attn.(in_proj)"] == ("attention", "layers.0")


@pytest.mark.parametrize("model_type, extra", [
    ("distilbert", ["n_layers=2", "dim=64", "n_heads=4", "hidden_dim=128", "vocab_size=128"]),
    ("xlnet", ["n_layer=2", "d_model=64", "n_head=4", "d_inner=128", "vocab_size=128"]),
    ("whisper", ["is_encoder_decoder=false", "decoder_layers=2", "d_model=64",
                 "decoder_attention_heads=4", "encoder_attention_heads=4",
                 "decoder_ffn_dim=128", "encoder_ffn_dim=128", "vocab_size=128",
                 "pad_token_id=1", "bos_token_id=1", "eos_token_id=1",
                 "decoder_start_token_id=1", "suppress_tokens=[]",
                 "begin_suppress_tokens=[]"]),
    ("electra", ["num_hidden_layers=2", "hidden_size=64", "embedding_size=32",
                 "num_attention_heads=4", "intermediate_size=128", "vocab_size=128"]),
    ("albert", ["num_hidden_layers=2", "hidden_size=64", "embedding_size=32",
                "num_attention_heads=4", "intermediate_size=128", "vocab_size=128"]),
])
def test_heads_and_feed_forward_layers_are_placed_by_where_they_run(
    model_type: str, extra: list[str]
) -> None:
    from layertime.models.hf import resolve_hf

    torch.manual_seed(0)
    m = resolve_hf(model_type, extra).build().eval()
    p = _placed(m, _token_forward(m))
    expect = {
        "distilbert": {"vocab_transform": "head", "vocab_projector": "head",
                       "activation": "head"},
        "xlnet": {"lm_loss": "head"},
        "whisper": {"proj_out": "head"},
        "electra": {"generator_predictions.dense": "head",
                    "generator_predictions.activation": "head",
                    "electra.embeddings_project": "embedding"},
        "albert": {"albert.encoder.embedding_hidden_mapping_in": "embedding",
                   "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn_output": "mlp",
                   "albert.encoder.albert_layer_groups.0.albert_layers.0.activation": "mlp"},
    }[model_type]
    assert {n: p[n][0] for n in expect} == expect


@pytest.mark.parametrize("model_type, mixer", [("mamba", "backbone.layers.1.mixer"),
                                               ("jamba", "model.layers.0.mamba")])
def test_a_selective_scan_is_its_own_kind_and_its_mixer_mixes_the_sequence(
    model_type: str, mixer: str
) -> None:
    from layertime.models.hf import resolve_hf

    extra = ["num_hidden_layers=2", "hidden_size=64", "intermediate_size=128", "vocab_size=128"]
    if model_type == "jamba":
        extra += ["num_attention_heads=4", "num_key_value_heads=2", "num_experts=4",
                  "num_experts_per_tok=2", "attn_layer_offset=1", "attn_layer_period=2",
                  "expert_layer_offset=1", "expert_layer_period=2"]
    torch.manual_seed(0)
    m = resolve_hf(model_type, extra).build().eval()
    table = _table(m, _token_forward(m))
    p = {n: (pl.role, pl.block) for n, pl in table.placements().items()}
    kinds = _kinds(table)
    blk = mixer.rsplit(".", 1)[0]
    assert (kinds[mixer], p[mixer]) == ("scan", ("mixing", blk))
    for proj in ("in_proj", "x_proj", "dt_proj", "out_proj"):
        assert (kinds[f"{mixer}.{proj}"], p[f"{mixer}.{proj}"][0]) == ("linear", "mixing")
    assert (kinds[f"{mixer}.conv1d"], p[f"{mixer}.conv1d"][0]) == ("conv", "mixing")
    # The mixer's own F.conv1d with conv1d.weight, and dt_proj.weight @ x, are those rows'.
    names = {e.index: e.name for e in table.rows()}
    own = next(e for e in table if e.name == mixer)
    assert {names[row] for _, row in table.own_ops[own.index]} == {
        f"{mixer}.conv1d", f"{mixer}.dt_proj"}
    if model_type == "jamba":
        assert p["model.layers.1.self_attn.q_proj"][0] == "attention"
        assert p["model.layers.1.feed_forward.router"] == ("router", "model.layers.1")
        assert p["model.layers.0.feed_forward.up_proj"][0] == "mlp"


_MAMBA = ["num_hidden_layers=2", "hidden_size=64", "intermediate_size=128", "vocab_size=128"]
_JAMBA = [*_MAMBA, "num_attention_heads=4", "num_key_value_heads=2", "num_experts=4",
          "num_experts_per_tok=2", "attn_layer_offset=1", "attn_layer_period=2",
          "expert_layer_offset=1", "expert_layer_period=2"]


@pytest.mark.parametrize("model_type, config, parts", [
    ("mamba", _MAMBA, ["sequence mixing: ", "(its selective scan: ", "embeddings and head: "]),
    ("jamba", _JAMBA, ["attention: ", "sequence mixing: ", "MLP: ", "MoE experts: ",
                       "(router "]),
    ("olmoe", None, ["attention: ", "MoE experts: ", "(router "]),
])
def test_headlines_of_state_space_and_mixture_of_experts_models_say_what_takes_the_time(
    model_type: str, config: list[str] | None, parts: list[str]
) -> None:
    import layertime
    from layertime.models import ModelRef

    ref = ModelRef(f"hf:{model_type}", tuple(config if config is not None else tiny(model_type)))
    run = layertime.profile(ref, seq_len=16, batch_size=1, steps=1, warmup_steps=0)
    head = run.headline()
    assert run.is_transformer()
    assert all(p in head for p in parts), head
    assert head.startswith(parts[0]) and "conv layers" not in head
    roles = run.roles()
    named = [k for k in ("attention", "mixing", "mlp", "experts") if k in roles]
    largest = max(named, key=lambda k: roles[k].time_s)
    assert roles[largest].label + ": " in head


def test_routers_found_by_the_experts_beside_them() -> None:
    from layertime.models.hf import resolve_hf

    torch.manual_seed(0)
    # Switch Transformers: a top-1 (an argmax of probabilities) in the router module, the
    # experts one module each; the sparse MLP holds both, inside the T5-like FF sublayer.
    switch = resolve_hf("switch_transformers", [
        "num_layers=2", "num_decoder_layers=2", "d_model=32", "num_heads=2", "d_kv=16",
        "d_ff=64", "num_experts=4", "num_sparse_encoder_layers=2",
        "num_sparse_decoder_layers=2", "vocab_size=128"]).build().eval()
    p = _placed(switch, _token_forward(switch))
    blk = "encoder.block.1"
    assert p[f"{blk}.layer.1.mlp.router.classifier"] == ("router", blk)
    assert p[f"{blk}.layer.1.mlp.experts.expert_3.wi"] == ("experts", blk)
    assert p[f"{blk}.layer.1.mlp"] == ("experts", blk)
    # Zaya: the top-k is in an MLP inside the gate; the whole gate is the router.
    zaya = resolve_hf("zaya", ["num_hidden_layers=2", "hidden_size=64",
                               "num_attention_heads=4", "num_key_value_heads=2",
                               "head_dim=16", "moe_intermediate_size=64", "num_experts=4",
                               "vocab_size=128"]).build().eval()
    p = _placed(zaya, _token_forward(zaya))
    blk = "model.layers.1"
    assert p[f"{blk}.mlp.gate.down_proj"] == ("router", blk)
    assert p[f"{blk}.mlp.gate.router_mlp.fc1"] == ("router", blk)
    assert p[f"{blk}.mlp.experts"] == ("experts", blk)


def test_an_attention_whose_softmax_is_a_child_module_is_the_core() -> None:
    # CPM-Ant, I-BERT: scores and weighted sum in the attention module, nn.Softmax a child.
    class SoftmaxChild(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.softmax(x @ x.transpose(-1, -2)) @ x

    model = SoftmaxChild()
    kinds = observed_kinds(model, lambda: model(torch.randn(2, 5, 8)))
    assert kinds[id(model)] == "attention" and kinds[id(model.softmax)] == "activation"
    # A CNN's squeeze-excitation named "attention" makes no transformer of it.
    rows = [("layer1.0.conv1", "conv", "Conv2d"), ("layer1.0.attention", "other", "SE"),
            ("layer1.0.attention.fc", "conv", "Conv2d")]
    assert {p.role for p in place(rows).values()} == {"other"}
