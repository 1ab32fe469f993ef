"""The ``hf:`` battery (issue 22): every model type the installed transformers ships, built
tiny from its default config, one training step profiled, its roles checked.

For each type: ``hf:TYPE`` is resolved from its default config; a type layertime
refuses (it takes audio, or a composite's bare model needs more than token ids)
is listed with the refusal; the others get tiny overrides (:func:`tiny_overrides`:
2 layers, hidden 64, 4 heads, 4 experts of which 2 per token, a vocabulary of
256, in whichever of those fields the config has; a few types need more, in
``EXTRA``), are built on the meta device first (a type whose tiny overrides do
not shrink it, a composite whose parts keep their size, is listed, not run),
then profiled for one step (batch 1, 16 tokens or a 32x32 image) and checked
(:func:`problems`):

* every row with parameters or at least 1% of the step has a role other than
  ``other``, unless it truly is other: a container's own code (residual adds,
  mask building; no parameters of its own), or a row ``TRULY_OTHER`` names with
  why;
* the input embeddings (``get_input_embeddings()``) are ``embedding``, the
  output embeddings (``get_output_embeddings()``, the LM head) ``head``, and no
  embedding lookup outside the blocks is anything but ``embedding``;
* the headline names every role of the blocks that took time (attention,
  sequence mixing, MLP, MoE experts) when the model has them;
* a mixture of experts' router has experts beside it that hold parameters (it
  is the gate, not the experts).

``python tests/hf_battery.py [TYPE ...]`` prints the summary table (type,
built?, roles found, other rows and why); ``tests/test_hf_battery.py`` runs it
all and fails on any problem, or on a type that fails in a way not listed in
``CANNOT``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Above this many parameters (on the meta device) a "tiny" model is not run.
MAX_PARAMS = 20_000_000
#: A row at least this share of the step must have a role other than ``other``.
MIN_SHARE = 0.01
SEQ_LEN = 16
#: Image classifiers: 64x64 images, two of them (batch norms need two values per channel).
IMAGE_SIZE = 64

_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers",
           "encoder_layers", "decoder_layers", "num_encoder_layers")
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim", "embed_dim")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads",
          "decoder_attention_heads", "n_heads")
_FEED_FORWARD = ("intermediate_size", "d_ff", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim",
                 "n_inner", "moe_intermediate_size", "shared_expert_intermediate_size",
                 "ffn_hidden_size", "hidden_dim")
_EXPERTS = ("num_experts", "num_local_experts", "n_routed_experts")
_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
              "sep_token_id", "cls_token_id", "mask_token_id", "unk_token_id")
VOCAB = 256

#: Types that need more than the generic overrides to be tiny and to run, and why.
EXTRA: dict[str, list[str]] = {
    # transformers' DBRX attention reads attn_config.rope_theta, which its config lacks.
    # And clamps queries and keys by attn_config.clip_qkv, which may not be null.
    "dbrx": ["n_layers=2", "d_model=64", "n_heads=4", "vocab_size=256",
             'attn_config={"rope_theta": 10000, "kv_n_heads": 2, "clip_qkv": 8}',
             'ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 4, "moe_top_k": 2}'],
    # Whisper's encoder takes audio features: its decoder alone.
    "whisper": ["is_encoder_decoder=false"],
    # Rotary dimensions and sizes fixed in the default config that head_dim 16 breaks.
    "mamba2": ["num_heads=8", "head_dim=16", "expand=2", "n_groups=1", "state_size=16"],
    # Mixtures of experts whose sparse layers are spaced by the default's layer count.
    "switch_transformers": ["num_sparse_encoder_layers=2", "num_sparse_decoder_layers=2",
                            "num_experts=4"],
    "nllb-moe": ["encoder_sparse_step=1", "decoder_sparse_step=1", "num_experts=4"],
    # Lists of per-layer settings as long as the default's layers, or sizes they fix.
    "gpt_neo": ['attention_types=[[["global","local"],1]]'],
    "granitemoehybrid": ['layer_types=["mamba","attention"]'],
    "reformer": ["axial_pos_embds_dim=[32,32]", "axial_pos_shape=[4,4]"],
    "mobilebert": ["embedding_size=64"],
    "squeezebert": ["embedding_size=64"],
    # Default configs whose rotary or routing settings are null until a checkpoint sets them.
    "deepseek_v2": ["num_experts_per_tok=2", "n_routed_experts=4"],
    "ministral": ["sliding_window=4096"],
    # Hierarchical image models: stages of their own sizes.
    "swin": ["embed_dim=32", "depths=[1,1]", "num_heads=[2,2]", "window_size=4"],
    # A speech synthesiser: its flows, wave networks and vocoder made small too.
    "vits": ["duration_predictor_num_flows=1", "prior_encoder_num_flows=1",
             "prior_encoder_num_wavenet_layers=1", "posterior_encoder_num_wavenet_layers=2",
             "upsample_initial_channel=32", "flow_size=32",
             "duration_predictor_filter_channels=32", "spectrogram_bins=65"],
    # An indexer that picks the keys each query attends to: a small one.
    "glm5_next_text": ["index_n_heads=2", "index_head_dim=16", "index_topk=64",
                       'layer_types=["linear_attention","indexed_attention"]'],
    "qwen2_vl_text": ['rope_parameters={"rope_type":"default","mrope_section":[2,3,3],'
                      '"rope_theta":10000}'],
    "qwen2_5_vl_text": ['rope_parameters={"rope_type":"default","mrope_section":[2,3,3],'
                        '"rope_theta":10000}'],
}

#: Types that cannot be built or run tiny, with the words of the error that says why (if
#: one fails otherwise, or runs, the battery says so).
CANNOT: dict[str, str] = {
    # transformers' default config does not build: a setting its model reads is unset
    # (null rope or head settings, a missing padding token), or its parts disagree.
    "chameleon": "'NoneType' object has no attribute 'get'",
    "cohere_compass_text": "'full_attention'",
    "deepseek_ocr2": "'NoneType' object is not subscriptable",
    "diffusion_gemma": "empty(): argument 'size'",
    "dots1": "empty() takes 1 positional argument",
    "gemma3n_text": "The set of layer types producing a cache",
    "gemma4_assistant": "hidden_size_per_layer_input must be 0",
    "granite4_vision": "object of type 'NoneType' has no len()",
    "hunyuan_v1_dense": "unsupported operand type(s) for ** or pow()",
    "hunyuan_v1_moe": "unsupported operand type(s) for ** or pow()",
    "hunyuan_vl_text": "unsupported operand type(s) for ** or pow()",
    "kyutai_speech_to_text": "Padding_idx must be within num_embeddings",
    "lfm2_moe": "'NoneType' object is not subscriptable",
    "ministral": "unsupported operand type(s) for ** or pow()",
    "nemotron": "unsupported operand type(s) for //",
    "nougat": "Unrecognized model type for subconfig: donut_swin",
    "perception_lm": "'NoneType' object is not subscriptable",
    "voxtral_realtime_text": "transformers has no class VoxtralRealtimeTextModel",
    # A composite whose causal-LM class transformers builds as if it were its text part.
    "dots3_note": "as if it were its text part",
    "emu3": "as if it were its text part",
    "llama4": "as if it were its text part",
    "qwen3_5": "as if it were its text part",
    "qwen3_5_moe": "as if it were its text part",
    "qwen4_exp": "as if it were its text part",
    "t5gemma2_encoder": "transformers reads text_config.dropout_rate",
    # Needs a library that is not installed.
    "dinat": "natten",
    "layoutlmv2": "requires the detectron2 library",
    # Takes more than token ids (boxes, visual features, a language, labels, queries).
    "blip_2_qformer": "missing 1 required positional argument: 'query_embeds'",
    "bros": "You have to specify bbox",
    "fastspeech2_conformer": "All labels must be provided to run in training mode",
    "layoutlmv3": "The size of tensor a (64) must match the size of tensor b (768)",
    "lilt": "mat1 and mat2 shapes cannot be multiplied",
    "lxmert": "`visual_feats` cannot be `None`",
    "udop": "Bbox is required",
    "vilt": "You have to specify either pixel_values or image_embeds",
    "xmod": "Input language unknown",
    # The generic tiny overrides break a relation its config checks or its code assumes
    # (rotary sections, per-layer lists, stage widths, fixed head counts); not shrunk by
    # hand here.
    "aya_vision": "embed_dim must be divisible by num_heads",
    "convnext": "Given normalized_shape=[768]",
    "convnextv2": "Given normalized_shape=[768]",
    "cosmos3_edge_text": "mrope_section",
    "donut-swin": "is not a multiple of the number of attention heads",
    "esmc": "does not support grouped-query attention",
    "glm4v_moe_text": "split_with_sizes",
    "glm4v_text": "split_with_sizes",
    "glm_image_text": "split_with_sizes",
    "glm_ocr_text": "split_with_sizes",
    "gradium_phonon_tts": "condition_dim",
    "hy_v4_vl_text": "mrope_section",
    "kolibri1_1": "index_num_heads",
    "mistral4": "The size of tensor a (8) must match the size of tensor b (4)",
    "pocket_tts": "condition_dim",
    "swinv2": "is not a multiple of the number of attention heads",
    "zamba": "must be equal to the number of `layer_types`",
    "zamba2": "must be equal to the number of `layer_types`",
}

#: Rows that are other and truly are, by type and name pattern, with why.
TRULY_OTHER: dict[str, dict[str, str]] = {
    "swiftformer": {r"swiftformer\.encoder\.network\.\d+\.proj":
                    "a downsampling conv between two stages of blocks"},
    "vits": {r"(duration_predictor|posterior_encoder|flow|decoder)\..*":
             "a speech synthesiser's flows, wave networks and vocoder: no transformer role"},
}


def _int_field(config: Any, name: str) -> bool:
    try:
        value = getattr(config, name, None)
    except RuntimeError:  # a per-layer field of a heterogeneous config
        return False
    return isinstance(value, int) and not isinstance(value, bool)


def tiny_overrides(config: Any) -> list[str]:
    """``--config`` overrides that make a default config tiny, for the fields it has."""
    keys = set(config.to_dict()) | set(getattr(type(config), "attribute_map", {}) or {})
    out: list[str] = []

    def put(names: Iterable[str], value: int, only_above: bool = False) -> None:
        for k in names:
            if k in keys and _int_field(config, k):
                if not only_above or getattr(config, k) > value:
                    out.append(f"{k}={value}")

    put(_LAYERS, 2)
    put(_HIDDEN, 64)
    put(_HEADS, 4)
    # Multi-head latent attention keeps a key and value head per query head.
    put(("num_key_value_heads",), 4 if "kv_lora_rank" in keys else 2)
    put(("head_dim",), 16)
    put(_FEED_FORWARD, 128)
    put(_EXPERTS, 4, only_above=True)
    put(("num_experts_per_tok",), 2, only_above=True)
    # Multi-head latent attention's low-rank and rotary dimensions, a partial rotary's.
    put(("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"), 16, only_above=True)
    put(("kv_lora_rank", "q_lora_rank"), 32, only_above=True)
    put(("rotary_dim",), 8, only_above=True)
    # Expert groups (DeepSeek's routing picks groups first): one group of the 4 experts.
    put(("n_group", "topk_group"), 1, only_above=True)
    # Linear attention's own heads (gated delta rules): few and small.
    put(sorted(k for k in keys if k.startswith("linear_") and k.endswith("head_dim")), 16,
        only_above=True)
    put(sorted(k for k in keys if k.startswith("linear_num") and k.endswith("heads")), 2,
        only_above=True)
    # A state-space mixer's heads and state (Mamba-2 in Bamba, Falcon-H1, Nemotron-H):
    # 8 heads of 16 (the inner size 128, twice the hidden), a state of 16.
    put(("mamba_n_heads", "mamba_num_heads"), 8, only_above=True)
    put(("mamba_d_head", "mamba_head_dim"), 16, only_above=True)
    put(("mamba_d_state", "ssm_state_size"), 16, only_above=True)
    put(("mamba_d_ssm",), 128, only_above=True)
    # Mixtures of experts whose first layers are dense: the second of the two is sparse.
    put(("first_k_dense_replace",), 1, only_above=True)
    if "vocab_size" in keys and _int_field(config, "vocab_size"):
        out.append(f"vocab_size={VOCAB}")
        for k in _TOKEN_IDS:
            if k in keys and _int_field(config, k) and getattr(config, k) >= VOCAB:
                out.append(f"{k}=1")
    return out


@dataclass
class Outcome:
    """One type's result: ``status`` is ``ran``, ``refused`` (layertime says why),
    ``cannot`` (built or run failed), or ``too big`` (tiny overrides did not shrink it)."""

    model_type: str
    status: str
    why: str = ""
    roles: dict[str, float] = field(default_factory=dict)
    other: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    headline: str = ""
    seconds: float = 0.0


def _containers(names: Sequence[str]) -> set[str]:
    """Every path that holds another (the model itself, ``""``, included)."""
    out: set[str] = set()
    for n in names:
        segs = n.split(".") if n else []
        out.update(".".join(segs[:i]) for i in range(len(segs)))
    return out


def _module_name(model: Any, module: Any) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


_BLOCK_ROLES = ("attention", "mixing", "mlp", "experts", "router")


def _truly_other(row: Any, containers: set[str]) -> str | None:
    """Why a row is truly other, by what it is: a container's own code (its residual adds,
    masks, residual scales), a dropout on the residual stream in a block, a layer scale or
    gate (parameters that only multiply: no matmul, no norm), a leaf that computes nothing
    a kind names; or None."""
    if row.kind == "other" and row.name in containers:
        return "containers' own code (residual adds, masks)"
    if row.kind == "dropout" and row.block is not None:
        return "dropout on the residual stream"
    if row.kind == "other" and row.params and row.block is not None:
        return "layer scales or gates (parameters that only multiply)"
    if row.kind == "other" and not row.params:
        # (its share is noise of one step on a busy machine: I-BERT's QuantAct, off)
        return "a pass-through: its ops compute no layer's work (copies, casts)"
    return None


def problems(model_type: str, run: Any, model: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """The run's rows that are other (with why they are), and what is wrong."""
    total = run.profiled_step_s
    rows = {r.name: r for r in run.layers}
    containers = _containers(list(rows))
    allowed = TRULY_OTHER.get(model_type, {})
    other: list[tuple[str, str]] = []
    wrong: list[str] = []
    blocks = {r.block for r in run.layers if r.block is not None}
    if not blocks and not any(r.role in _BLOCK_ROLES for r in run.layers):
        # A convolutional network (ResNet, PoolFormer): no block of attention, scan or
        # MLP, so no row has a transformer's role; its kinds answer (the headline).
        allowed = {".*": "a convolutional network: no transformer blocks, its kinds answer",
                   **allowed}
    for r in run.layers:
        if (r.role or "other") != "other" or not (r.params or r.total_s >= MIN_SHARE * total):
            continue
        why = next((w for pat, w in allowed.items() if re.fullmatch(pat, r.name)), None)
        if why is None:
            why = _truly_other(r, containers)
        if why is None:
            wrong.append(f"{r.label} ({r.type}, {r.kind}, {r.params} params, "
                         f"{r.total_s / total:.0%}) is other")
        else:
            other.append((r.label, why))
    for what, role, getter in (("input embeddings", "embedding", "get_input_embeddings"),
                               ("output embeddings", "head", "get_output_embeddings")):
        try:
            module = getattr(model, getter)()
        except (NotImplementedError, AttributeError):
            module = None
        name = _module_name(model, module) if module is not None else None
        row = rows.get(name) if name is not None else None
        if row is not None and role == "head" and row.kind == "embedding":
            continue  # a tied head that is the input table itself (FSMT): no head row
        if row is not None and (row.calls or row.total_s) and row.role != role:
            wrong.append(f"{what} {row.label} are {row.role}, not {role}")
    for r in run.layers:
        # (an attention's position bias, kept outside the blocks, is the attention's)
        if r.kind == "embedding" and r.block is None and r.role not in (
                "embedding", "head", "attention"):
            wrong.append(f"embedding {r.label} outside the blocks is {r.role}")
    roles = run.roles()
    # A router is the gate: there are experts beside it, holding their own parameters.
    if "router" in roles and not ("experts" in roles and roles["experts"].params):
        wrong.append(f"a router of {roles['router'].params} parameters and no experts' "
                     "parameters beside it")
    present = [k for k in ("attention", "mixing", "mlp", "experts")
               if k in roles and roles[k].time_s > 0]
    head = run.headline()
    if present:
        if not run.is_transformer():
            wrong.append(f"roles {', '.join(present)} but the headline is by kind: {head}")
        for k in present:
            if roles[k].label + ":" not in head:
                wrong.append(f"the headline does not name {roles[k].label}: {head}")
    return other, wrong


def run_type(model_type: str) -> Outcome:
    """Resolve, shrink, build and profile one type; its outcome."""
    import torch

    import layertime
    from layertime.errors import BadValue, LayertimeError
    from layertime.models import ModelRef
    from layertime.models.hf import resolve_hf

    t0 = time.perf_counter()
    extra = EXTRA.get(model_type, [])
    try:
        base = resolve_hf(model_type, [o for o in extra if o.startswith("is_encoder")])
    except BadValue as e:
        return Outcome(model_type, "refused", str(e))
    except LayertimeError as e:
        return Outcome(model_type, "cannot", str(e))
    keys = {o.split("=", 1)[0] for o in extra}
    overrides = [o for o in tiny_overrides(base.config) if o.split("=", 1)[0] not in keys]
    overrides += extra
    try:
        hf = resolve_hf(model_type, overrides)
        with torch.device("meta"):
            meta = hf.build(10 if hf.takes_images else None,
                            IMAGE_SIZE if hf.takes_images else None)
        n = sum(p.numel() for p in meta.parameters())
        del meta
        if n > MAX_PARAMS:
            return Outcome(model_type, "too big",
                           f"{n / 1e6:.0f}M parameters after the tiny overrides")
        torch.manual_seed(0)
        model = hf.build(10 if hf.takes_images else None,
                         IMAGE_SIZE if hf.takes_images else None)
        inputs: dict[str, Any] = (
            {"image_size": IMAGE_SIZE, "num_classes": 10, "batch_size": 2} if hf.takes_images
            else {"seq_len": SEQ_LEN, "batch_size": 1})
        run = layertime.profile(model, steps=1, warmup_steps=0, device="cpu", **inputs)
    except LayertimeError as e:
        return Outcome(model_type, "cannot", str(e), seconds=time.perf_counter() - t0)
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            NotImplementedError, AssertionError) as e:  # raised inside transformers
        return Outcome(model_type, "cannot", f"{type(e).__name__}: {str(e).splitlines()[0]}",
                       seconds=time.perf_counter() - t0)
    other, wrong = problems(model_type, run, model)
    roles = {k: v.share for k, v in run.roles().items()
             if k not in ("loss", "step", "unattributed")}
    return Outcome(model_type, "ran", "", roles, other, wrong, run.headline(),
                   time.perf_counter() - t0)


def battery(types: Sequence[str] | None = None) -> list[Outcome]:
    """Every type (or ``types``), one outcome each."""
    import torch

    from layertime.models.hf import model_types, quiet_transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with quiet_transformers():
            return [run_type(t) for t in (types or model_types())]
    finally:
        torch.set_num_threads(threads)


_SHORT_ROLES = {"attention": "attn", "mixing": "mix", "mlp": "mlp", "experts": "experts",
                "router": "router", "embedding": "emb", "norm": "norm", "head": "head",
                "other": "other"}


#: Why layertime refuses a type, by the words of its refusal.
_REFUSALS = (
    ("is neither a text model", "takes neither token ids nor images"),
    ("takes input_", "takes audio or other features, not token ids"),
    ("is a composite model", "a composite whose bare model needs more than token ids"),
    ("no model class for type", "a part of another model's config, no model of its own"),
    ("is an encoder-decoder", "its encoder takes no token ids"),
)


def _wrapped(words: Sequence[str], width: int, indent: str = "    ", sep: str = ", ",
             first: str | None = None) -> list[str]:
    """``words`` joined by ``sep`` in lines of at most ``width``, the first starting with
    ``first`` (else ``indent``), the others with ``indent``."""
    lines: list[str] = []
    line = indent if first is None else first
    start = len(line)
    for w in words:
        if len(line) + len(w) > width and len(line) > start:
            lines.append(line[: -len(sep)].rstrip())
            line = indent
            start = len(line)
        line += w + sep
    if len(line) > start or not lines:
        lines.append(line[: -len(sep)].rstrip() if len(line) > start else line.rstrip())
    return lines


def table(outcomes: Sequence[Outcome], width: int = 80) -> str:
    """The summary: one line per type that ran (roles found, other rows and why); the types
    that could not run, each with why; those refused or too big, grouped by why."""
    lines = [f"{'type':24} built? roles found (share of the step); other rows: why"]
    for o in outcomes:
        if o.status != "ran":
            continue
        roles = " ".join(f"{_SHORT_ROLES.get(k, k)} {v:.0%}" for k, v in o.roles.items()
                         if k != "other" and v >= 0.005)
        lines += _wrapped(roles.split(" "), width, " " * 31, sep=" ",
                          first=f"{o.model_type[:24]:24} yes    ")
        whys: dict[str, list[str]] = {}
        for name, why in o.other:
            whys.setdefault(why, []).append(name)
        for why, names in whys.items():
            lines += _wrapped(f"{len(names)} other: {why}".split(" "), width, " " * 31,
                              sep=" ")
        for p in o.problems:
            lines += _wrapped(f"PROBLEM: {p}".split(" "), width, " " * 31, sep=" ")
    cannot = [o for o in outcomes if o.status == "cannot"]
    if cannot:
        lines += ["", f"built, but cannot run tiny ({len(cannot)}):"]
        lines += [f"  {o.model_type}: {o.why}"[:width] for o in cannot]
    big = [o.model_type for o in outcomes if o.status == "too big"]
    if big:
        lines += ["", f"too big after the tiny overrides ({len(big)}): composites whose parts",
                  "keep their size, image models whose stage widths they miss:"]
        lines += _wrapped(big, width)
    refused = [o for o in outcomes if o.status == "refused"]
    if refused:
        lines += ["", f"refused by layertime ({len(refused)}), by why:"]
        groups: dict[str, list[str]] = {}
        for o in refused:
            why = next((w for key, w in _REFUSALS if key in o.why), o.why)
            groups.setdefault(why, []).append(o.model_type)
        for why, names in groups.items():
            lines.append(f"  {why} ({len(names)}):"[:width])
            lines += _wrapped(names, width)
    ran = [o for o in outcomes if o.status == "ran"]
    lines += ["", f"{len(outcomes)} types: {len(ran)} ran ("
              f"{sum(1 for o in ran if o.problems)} with problems), {len(cannot)} cannot run, "
              f"{len(big)} too big, {len(refused)} refused"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    t0 = time.perf_counter()
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    results = battery(names or None)
    print(table(results, 200 if "--wide" in sys.argv else 80))
    print(f"({time.perf_counter() - t0:.0f} s)")
