"""Roles and blocks of a transformer's layers: pure functions of module names, types and kinds.

Beside its kind (what a layer computes), each row gets a *role* (what it is
for in a transformer) and a *block* (which repeated layer it sits in).

Roles: ``attention`` (its projections and its core), ``mlp`` (feed-forward
projections and their activation, gated or not, and mixture-of-experts
layers), ``embedding`` (token, position and patch embeddings), ``norm``,
``head`` (LM head, pooler, classifier) and ``other``.  The first rule that
holds decides, reading the dotted module path segment by segment:

1. ``head``: a path segment, outside any block, named like a head
   (``lm_head``, ``head``, ``heads``, ``cls``, ``classifier``, ``pooler``,
   ``score``, ``qa_outputs``, ...), and everything under it (BERT's
   prediction head keeps its own LayerNorm);
2. ``norm``: a layer of kind ``norm`` (wherever it is);
3. ``attention``: a layer of kind ``attention``, or under a segment named
   like attention (``attn``, ``self_attn``, ``attention``, ``SelfAttention``,
   ``EncDecAttention``, ``self_attention``, ``crossattention``, ...) or whose
   class is named like one (``T5LayerSelfAttention``).  T5's relative
   position bias, an embedding inside the attention, is attention;
4. ``mlp``: under a segment named like a feed-forward layer (``mlp``,
   ``ffn``, ``feed_forward``, ``ff``, ``DenseReluDense``, ``intermediate``,
   ``experts``, ``block_sparse_moe``, ...) or a class named like one
   (``...MLP``, ``...FeedForward``, ``...LayerFF``); BERT's ``output``, the
   sibling of ``intermediate``, is the MLP's second projection; ``fc1``,
   ``fc2``, ``activation_fn`` (and the like) straight inside a block are the
   MLP of models that have no MLP container (OPT, BART, Whisper);
5. ``embedding``: a layer of kind ``embedding``, or a segment named like an
   embedding outside any block (``wte``, ``wpe``, ``embed_tokens``,
   ``embeddings``, ``patch_embed``, ``rotary_emb``, torchvision ViT's
   top-level ``conv_proj``, ...).  Rotary position tables (``rotary_emb``)
   are position encodings, like GPT-2's ``wpe``; their rotation of queries
   and keys happens inside the attention module (its core);
6. ``other``: everything else -- containers' own time (a block's residual
   adds, a model's mask building), dropouts outside attention and MLP.
   What cannot be placed is ``other``, never a guess.

The roles' names and labels are in :mod:`layertime.taxonomy` (``ROLES``,
``ROLE_LABELS``), so that results and renderers read them without this
module; the collectors place every row (``measure.aggregate``,
``cost.counts``) and store its role and block in the result.

Block: the outermost module path whose last segment ends in a number
(``h.0``, ``layers.3``, ``layer.5``, ``block.2``, ``blocks.7``,
``encoder_layer_3``) and that holds an attention or MLP layer below it; the
full path names it (``transformer.h.0``, ``encoder.block.2``,
``encoder.layers.encoder_layer_3``).  Layers outside any block have none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from layertime.taxonomy import ROLE_LABELS, ROLES

_HEAD = frozenset((
    "lm_head", "head", "heads", "cls", "classifier", "pooler", "score", "qa_outputs",
    "pre_logits", "lm_heads", "output_projection", "generator_lm_head", "mlm_head",
    "prediction_head", "predictions",
))
_ATTN = re.compile(r"(^|_)(attn|attention|self_?attn|attention_?\d*)($|_)|attention$|attn$", re.I)
_MLP_SEGMENTS = frozenset((
    "mlp", "ffn", "ff", "feed_forward", "feedforward", "fc_mlp", "mlp_block", "densereludense",
    "intermediate", "experts", "block_sparse_moe", "moe", "ffn_layer", "mixer_mlp", "channel_mlp",
))
#: A class named like a feed-forward layer: the name *ends* so (``LlamaMLP``,
#: ``T5LayerFF``, ``OlmoeSparseMoeBlock``); a model named after its MoE layers
#: (``OlmoeModel``, ``Qwen2MoeForCausalLM``) is not one.
_MLP_TYPE = re.compile(r"(mlp|feedforward|feed_forward|layerff|ffn|densereludense|"
                       r"denseactdense|densegatedactdense|intermediate|moe)"
                       r"(block|layer|network)?\d*$", re.I)
_EMBED_SEGMENTS = frozenset((
    "wte", "wpe", "embed_tokens", "embed_positions", "embeddings", "embedding", "tok_embeddings",
    "tok_emb", "pos_emb", "token_embedding", "position_embedding", "positional_embedding",
    "patch_embed", "patch_embedding", "patch_embeddings", "rotary_emb", "pos_embed", "word_embeddings",
    "position_embeddings", "token_type_embeddings", "shared", "embed", "embedder",
))
#: Feed-forward layers that some models (OPT, BART, Whisper, GPT-J) put straight
#: into the block, with no MLP container: MLP only directly inside a block that
#: holds attention (an SE module's ``fc1`` in a CNN is not one).
_FF_IN_BLOCK = frozenset((
    "fc1", "fc2", "fc_in", "fc_out", "w1", "w2", "w3", "dense_h_to_4h", "dense_4h_to_h",
    "c_fc", "wi", "wo", "wi_0", "wi_1", "activation_fn", "act", "act_fn",
))
#: Top-level only: torchvision ViT's patch embedding is a conv named ``conv_proj``.
_TOP_EMBED = frozenset(("conv_proj",))
_BLOCK_END = re.compile(r"(^\d+$)|(_\d+$)")


@dataclass(frozen=True)
class Placement:
    """A layer's role and block (None outside any block)."""

    role: str
    block: str | None


__all__ = ["ROLES", "ROLE_LABELS", "Placement", "blocks_of", "place"]


def _segments(name: str) -> list[str]:
    return name.split(".") if name else []


def _is_attention_segment(seg: str) -> bool:
    low = seg.lower()
    return bool(_ATTN.search(low)) or low in ("selfattention", "encdecattention", "crossattention")


def _is_mlp_segment(seg: str) -> bool:
    return seg.lower() in _MLP_SEGMENTS


def blocks_of(layers: Sequence[tuple[str, str, str]]) -> dict[str, str | None]:
    """Layer name -> its block's path (the outermost numbered path holding attention or MLP)."""
    names = [n for n, _, _ in layers]
    # Paths whose subtree holds an attention or MLP layer (by name, type or kind).
    holders: set[str] = set()
    for name, kind, typ in layers:
        segs = _segments(name)
        telling = kind == "attention" or _MLP_TYPE.search(typ) is not None or any(
            _is_attention_segment(s) or _is_mlp_segment(s) for s in segs
        )
        if telling:
            for i in range(1, len(segs) + 1):
                holders.add(".".join(segs[:i]))
    out: dict[str, str | None] = {}
    for name in names:
        segs = _segments(name)
        block = None
        for i, seg in enumerate(segs):
            prefix = ".".join(segs[: i + 1])
            if _BLOCK_END.search(seg) and prefix in holders and any(
                h != prefix and h.startswith(prefix + ".") for h in holders
            ):
                block = prefix
                break
        out[name] = block
    return out


def place(layers: Sequence[tuple[str, str, str]]) -> dict[str, Placement]:
    """Role and block of every layer, given ``(name, kind, type)`` of all of the model's layers.

    All layers are needed at once: a block is recognised by what it holds,
    and BERT's ``output`` by its sibling ``intermediate``.
    """
    blocks = blocks_of(layers)
    names = {n for n, _, _ in layers}
    types = {n: t for n, _, t in layers}
    out: dict[str, Placement] = {}
    for name, kind, typ in layers:
        out[name] = Placement(_role(name, kind, typ, blocks, names, types), blocks.get(name))
    return out


def _role(
    name: str,
    kind: str,
    typ: str,
    blocks: Mapping[str, str | None],
    names: set[str],
    types: Mapping[str, str],
) -> str:
    segs = _segments(name)
    block = blocks.get(name)
    depth_in_block = len(_segments(block)) if block else 0
    # 1. head: a head-named segment outside any block.
    if block is None and any(s.lower() in _HEAD for s in segs):
        return "head"
    # 2. norm
    if kind == "norm":
        return "norm"
    # 3./4. attention and MLP: by kind, path segments, or ancestors' class names.
    prefixes = [".".join(segs[: i + 1]) for i in range(len(segs))]
    for i, seg in enumerate(segs):
        if i < depth_in_block and block is not None:
            continue  # the block's own path (``encoder.layer.5``) says nothing
        prefix = prefixes[i]
        ptype = types.get(prefix, "")
        if _is_attention_segment(seg) or re.search(r"attention|attn", ptype, re.I):
            return "attention"
        if _is_mlp_segment(seg) or _MLP_TYPE.search(ptype):
            return "mlp"
        if seg == "output" and i > 0 and f"{'.'.join(segs[:i])}.intermediate" in names:
            return "mlp"  # BERT: layer.N.output is the MLP's second projection
        if block is not None and i == depth_in_block and seg.lower() in _FF_IN_BLOCK:
            return "mlp"  # OPT, BART: fc1/fc2 and their activation straight in the block
    if kind == "attention":
        return "attention"
    # 5. embedding
    if kind == "embedding":
        return "embedding"
    if block is None and segs:
        if any(s.lower() in _EMBED_SEGMENTS for s in segs):
            return "embedding"
        if len(segs) == 1 and segs[0] in _TOP_EMBED:
            return "embedding"
    return "other"
