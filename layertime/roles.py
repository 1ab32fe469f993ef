"""Roles and blocks of a transformer's layers: pure functions of module names, types,
kinds and what a watched forward showed (:class:`Traits`).

Beside its kind (what a layer computes), each row gets a *role* (what it is
for in a transformer) and a *block* (which repeated layer it sits in).

Roles: ``attention`` (its projections and its core), ``mixing`` (sequence
mixing that is not attention: a state-space model's selective scan, with the
mixer's projections and its depthwise convolution), ``mlp`` (feed-forward
projections and their activation, gated or not), ``experts`` and ``router``
(a mixture of experts: the experts, a shared expert included, and the MoE
layer's own dispatch and combine; the router's gate and top-k), ``embedding``
(token, position and patch embeddings), ``norm``, ``head`` (LM head, pooler,
classifier) and ``other``.  Where a watched forward decides it, the role
follows what a layer computes and where it runs; names decide only what that
cannot.  The first rule that holds decides:

1. ``head``: outside any block, a path segment named like a head (``lm_head``,
   ``head``, ``cls``, ``classifier``, ``pooler``, ...) and everything under it
   (BERT's prediction head keeps its own LayerNorm); or, by where it runs, a
   layer outside any block, holding none, that is not a norm and first runs
   after the last block has started: the final projection to the vocabulary and what transforms the
   hidden states on the way (DistilBERT's ``vocab_transform`` and
   ``vocab_projector``, XLNet's ``lm_loss``, Whisper's ``proj_out``);
2. ``norm``: a layer of kind ``norm`` (wherever it is);
3. ``mixing``: a layer of kind ``scan`` (or one that transforms along the
   sequence, FNet's Fourier transform: :attr:`Traits.mixes`) and, in a block,
   the block's child that holds it, with everything under that child (Mamba's
   mixer: its ``in_proj``, ``x_proj``, ``dt_proj``, ``out_proj`` and ``conv1d``);
4. ``attention``: a layer of kind ``attention``, or, in a model with an
   attention core somewhere (or an attention-named module of fully connected
   projections: YOSO's and MRA's approximations compute no softmax), under a
   segment named like attention (``attn``,
   ``self_attn``, ``attention``, ``SelfAttention``, ``EncDecAttention``, ...)
   or whose class is named like one (``T5LayerSelfAttention``); a CNN's
   squeeze-excitation named ``attention`` computes none and is not.  T5's relative position bias, an embedding
   inside the attention, is attention;
5. ``router`` and ``experts``: a layer whose own ops take a top-k over the
   experts (:attr:`Traits.routes_over`) routes; the MoE layer is the nearest
   module above it that holds the experts (as many modules of one type as
   there are experts, or one stacked weight per expert) and no attention, and
   that layer's child holding the routing layer is the router, with what is
   under it (Zaya's gate computes its scores with an MLP of its own); when
   the routing layer holds the experts itself, its children of as many
   outputs as experts (the gate: a fully connected layer, or DBRX's router
   module) are the router.  Everything else in the MoE layer is ``experts``:
   the experts (fused or one module each), a shared expert and its gate, and
   the MoE layer's own time (dispatch and combine);
6. ``mlp``: under a segment named like a feed-forward layer (``mlp``,
   ``ffn``, ``feed_forward``, ``DenseReluDense``, ``intermediate``, ...) or a
   class named like one (``...MLP``, ``...FeedForward``, ``...LayerFF``);
   BERT's ``output``, the sibling of ``intermediate``, is the MLP's second
   projection;
7. ``mixing`` again: in a block, the block's child that holds a layer of kind
   ``conv`` (a convolution over the sequence: LFM's short convolution);
8. ``mlp`` again: in a block, any other fully connected layer or activation
   (OPT's and BART's ``fc1``/``fc2``, ``torch.nn.TransformerEncoderLayer``'s
   ``linear1``/``linear2``, ALBERT's ``ffn_output``): in a block, what is
   neither attention, sequence mixing nor norm is the feed-forward;
9. ``embedding``: a layer of kind ``embedding``, or a segment named like an
   embedding outside any block (``wte``, ``embed_tokens``, ``embeddings``,
   ``patch_embed``, ``rotary_emb``, ...); or, by where it runs, a layer outside
   any block (as in 1) that runs before the first block starts (ALBERT's
   ``embedding_hidden_mapping_in``, torchvision ViT's ``conv_proj``, GPT-2's
   embedding dropout, a rotary table's module).  Rotary position tables (``rotary_emb``) are
   position encodings, like GPT-2's ``wpe``; their rotation of queries and keys
   happens inside the attention module (its core);
10. ``other``: everything else -- containers' own time (a block's residual
    adds, a model's mask building).  What cannot be placed is ``other``, never
    a guess.

The roles' names and labels are in :mod:`layertime.taxonomy` (``ROLES``,
``ROLE_LABELS``), so that results and renderers read them without this
module; the collectors place every row (``measure.aggregate``,
``cost.count.counts``) and store its role and block in the result.

Block: the outermost module path whose last segment ends in a number
(``h.0``, ``layers.3``, ``layer.5``, ``block.2``, ``blocks.7``,
``encoder_layer_3``) and that is or holds an attention, scan or MLP layer
(XLM keeps its layers' attentions and feed-forwards in lists of their own:
``attentions.0`` and ``ffns.0`` are blocks);
the full path names it (``transformer.h.0``, ``encoder.block.2``,
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
#: Kinds a block's feed-forward is made of (rule 8).
_FEED_FORWARD = frozenset(("linear", "activation"))
_BLOCK_END = re.compile(r"(^\d+$)|(_\d+$)")


@dataclass(frozen=True)
class Traits:
    """What a watched forward showed of a layer that roles read
    (:class:`layertime.kinds.ModuleFacts`): the rank of its first call, the number of
    experts a top-k of its own ops chooses among (a router), the last dimension of its
    output; whether it mixes the sequence by a transform (an FFT); the leading size of
    its stacked weights.  None where not known."""

    order: int | None = None
    routes_over: int | None = None
    out_dim: int | None = None
    #: Its own ops transform along the sequence (an FFT), as a scan or attention would.
    mixes: bool = False
    #: The leading size of a parameter of 3 or more dimensions it holds (fused experts'
    #: stacked weights: one matrix per expert), else None.
    stacked: int | None = None


@dataclass(frozen=True)
class Placement:
    """A layer's role and block (None outside any block)."""

    role: str
    block: str | None


__all__ = ["ROLES", "ROLE_LABELS", "Placement", "Traits", "blocks_of", "place"]


def _segments(name: str) -> list[str]:
    return name.split(".") if name else []


def _parent(name: str) -> str | None:
    if not name:
        return None
    return name.rsplit(".", 1)[0] if "." in name else ""


def _under(name: str, root: str) -> bool:
    """Whether ``name`` is ``root`` or below it (``""`` is the model)."""
    return name == root or root == "" or name.startswith(root + ".")


def _is_attention_segment(seg: str) -> bool:
    low = seg.lower()
    return bool(_ATTN.search(low)) or low in ("selfattention", "encdecattention", "crossattention")


def _is_mlp_segment(seg: str) -> bool:
    return seg.lower() in _MLP_SEGMENTS


def _attends(layers: Sequence[tuple[str, str, str]]) -> bool:
    """Whether names may say attention: the model has an attention core somewhere, or a
    module named like attention with fully connected projections (YOSO's and MRA's
    approximations compute no softmax).  A CNN's squeeze-excitation, named "attention"
    and made of convolutions, is neither."""
    if any(kind == "attention" for _, kind, _ in layers):
        return True
    return any(kind == "linear" and any(_is_attention_segment(s) for s in _segments(n)[:-1])
               for n, kind, _ in layers)


def blocks_of(layers: Sequence[tuple[str, str, str]]) -> dict[str, str | None]:
    """Layer name -> its block's path (the outermost numbered path holding attention, a
    scan or an MLP)."""
    names = [n for n, _, _ in layers]
    # Paths whose subtree holds an attention, scan or MLP layer (by name, type or kind).
    holders: set[str] = set()
    attends = _attends(layers)
    for name, kind, typ in layers:
        segs = _segments(name)
        telling = kind in ("attention", "scan") or _MLP_TYPE.search(typ) is not None or any(
            (attends and _is_attention_segment(s)) or _is_mlp_segment(s) for s in segs
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
            if _BLOCK_END.search(seg) and prefix in holders:
                block = prefix
                break
        out[name] = block
    return out


class _Model:
    """What the rules read of the whole model: blocks, containers, mixers, MoE layers."""

    def __init__(
        self, layers: Sequence[tuple[str, str, str]], traits: Mapping[str, Traits]
    ) -> None:
        self.blocks = blocks_of(layers)
        self.block_paths = {b for b in self.blocks.values() if b is not None}
        self.names = {n for n, _, _ in layers}
        self.types = {n: t for n, _, t in layers}
        self.kinds = {n: k for n, k, _ in layers}
        self.traits = traits
        parents = {_parent(n) for n in self.names}
        self.containers = {p for p in parents if p is not None}
        self.children: dict[str, list[str]] = {}
        for n in self.names:
            p = _parent(n)
            if p is not None:
                self.children.setdefault(p, []).append(n)
        # When the blocks run: the first and the last first call of a layer in a block.
        ranks = [t.order for n, t in traits.items()
                 if t.order is not None and self.blocks.get(n) is not None]
        self.first_block = min(ranks) if ranks else None
        self.last_block = max(ranks) if ranks else None
        self.attends = _attends(layers)
        self.scan_mixers = self._mixers("scan")
        self.conv_mixers = self._mixers("conv")
        self.routers, self.experts = self._moe()

    def _mixers(self, kind: str) -> set[str]:
        """For each layer of ``kind`` in a block (below the block's own row), the block's
        child that holds it."""
        out: set[str] = set()
        for name, k in self.kinds.items():
            mixes = kind == "scan" and self.traits.get(name, Traits()).mixes
            if k != kind and not mixes:
                continue
            block = self.blocks.get(name)
            if block is None:
                continue  # outside the blocks, a scan's row alone is mixing (by its kind)
            depth = len(_segments(block))
            segs = _segments(name)
            if len(segs) > depth:
                out.add(".".join(segs[: depth + 1]))
        return out

    def _moe(self) -> tuple[set[str], set[str]]:
        """The roots of the routers, and the MoE layers (their experts are everything in
        them that is not a router).

        The MoE layer is the nearest module above the routing module that holds the
        experts -- as many modules of one type as there are experts (Switch
        Transformers' ``expert_0`` ...), or one stacked weight per expert (OLMoE's fused
        experts) -- and no attention; its child holding the routing module is the router
        (OLMoE's ``gate``; Zaya's whole gate, whose top-k is in a module inside it).
        When the routing module holds the experts itself (it takes the top-k over a gate
        it calls), its children of as many outputs as experts are the router.  Where no
        experts are found, the outermost module below the block that holds no attention
        is taken as the MoE layer."""
        routers: set[str] = set()
        layers: set[str] = set()
        for name, t in self.traits.items():
            if t.routes_over is None or name not in self.names:
                continue
            segs = _segments(name)
            block = self.blocks.get(name)
            top = len(_segments(block)) + 1 if block is not None else 1
            layer = None
            for i in range(len(segs), top - 1, -1):  # nearest first
                candidate = ".".join(segs[:i])
                if self._holds_attention(candidate):
                    break
                if self._holds_experts(candidate, t.routes_over, exclude=name):
                    layer = candidate
                    break
            if layer is None and block is not None:
                layer = next((".".join(segs[:i]) for i in range(top, len(segs) + 1)
                              if not self._holds_attention(".".join(segs[:i]))), None)
            if layer is None:
                parent = _parent(name)
                layer = parent if parent is not None else name
            if layer != name:
                routers.add(".".join(segs[: len(_segments(layer)) + 1]))
                layers.add(layer)
                continue
            children = [c for c in self.names if _parent(c) == name]
            gates = [c for c in children
                     if self.traits.get(c, Traits()).out_dim == t.routes_over]
            if gates and len(gates) < len(children):
                routers.update(gates)
            else:
                routers.add(name)
            layers.add(name)
        # Fused experts whose router was not seen to route (PhiMoE's sparse mixer takes
        # maxima, not a top-k): their parent is the MoE layer, the sibling with as many
        # outputs as experts its router.
        for name, t in self.traits.items():
            parent = _parent(name)
            if (t.stacked is None or t.stacked < 2 or parent is None or name not in self.names
                    or self.blocks.get(name) is None or self.in_any(name, layers)
                    or self._holds_attention(parent)):
                continue
            gates = [c for c in self.children.get(parent, ())
                     if c != name and self.traits.get(c, Traits()).out_dim == t.stacked]
            if gates:
                routers.update(gates)
                layers.add(parent)
        return routers, layers

    def _holds_experts(self, path: str, experts: int, exclude: str) -> bool:
        """Whether ``path`` holds, outside the routing module ``exclude`` (unless it is
        ``path`` itself), one stacked weight per expert or as many modules of one type as
        there are experts."""
        for n in self.names:
            if not _under(n, path) or (exclude != path and _under(n, exclude)):
                continue
            if self.traits.get(n, Traits()).stacked == experts:
                return True
            kids: dict[str, int] = {}
            for c in self.children.get(n, ()):
                kids[self.types.get(c, "")] = kids.get(self.types.get(c, ""), 0) + 1
            if experts >= 2 and any(k >= experts for k in kids.values()):
                return True
        return False

    def _holds_attention(self, path: str) -> bool:
        """Whether a layer at or under ``path`` is attention, by its kind or its names."""
        depth = len(_segments(path))
        return any(
            _under(n, path) and (k == "attention" or any(
                _is_attention_segment(s) for s in _segments(n)[depth - 1:]))
            for n, k in self.kinds.items()
        )

    def holds_block(self, name: str) -> bool:
        return any(_under(b, name) for b in self.block_paths)

    def in_any(self, name: str, roots: set[str]) -> bool:
        return any(_under(name, r) for r in roots)


def place(
    layers: Sequence[tuple[str, str, str]], traits: Mapping[str, Traits] | None = None
) -> dict[str, Placement]:
    """Role and block of every layer, given ``(name, kind, type)`` of all of the model's layers
    and, where a forward was watched, their :class:`Traits` by name.

    All layers are needed at once: a block is recognised by what it holds,
    BERT's ``output`` by its sibling ``intermediate``, a head by running after the
    blocks.
    """
    model = _Model(layers, traits or {})
    return {
        name: Placement(_role(name, kind, model), model.blocks.get(name))
        for name, kind, _ in layers
    }


def _by_position(name: str, kind: str, model: _Model) -> str | None:
    """Rules 1 and 9 by where a layer outside the blocks, holding none, runs: head or
    embedding.  Norms keep their role; so does a container that holds blocks (the model
    itself runs before them)."""
    if kind in ("norm", "loss") or model.first_block is None or model.holds_block(name):
        return None
    order = model.traits.get(name, Traits()).order
    if order is None or model.last_block is None:
        return None
    if order > model.last_block:
        return "head"
    if order < model.first_block:
        return "embedding"
    return None


def _by_names(name: str, model: _Model) -> str | None:
    """Rules 4 and 6 by names: ``attention`` or ``mlp`` from the outermost telling segment
    or ancestor's class below the block's own path, or None."""
    segs = _segments(name)
    block = model.blocks.get(name)
    depth_in_block = len(_segments(block)) if block else 0
    prefixes = [".".join(segs[: i + 1]) for i in range(len(segs))]
    for i, seg in enumerate(segs):
        if i < depth_in_block and block is not None:
            continue  # the block's own path (``encoder.layer.5``) says nothing
        ptype = model.types.get(prefixes[i], "")
        if model.attends and (_is_attention_segment(seg)
                              or re.search(r"attention|attn", ptype, re.I)):
            return "attention"
        if _is_mlp_segment(seg) or _MLP_TYPE.search(ptype):
            return "mlp"
        if seg == "output" and i > 0 and f"{'.'.join(segs[:i])}.intermediate" in model.names:
            return "mlp"  # BERT: layer.N.output is the MLP's second projection
    return None


def _role(name: str, kind: str, model: _Model) -> str:
    segs = _segments(name)
    block = model.blocks.get(name)
    # 1. head: a head-named segment outside any block, or a layer running after them.
    if block is None and any(s.lower() in _HEAD for s in segs):
        return "head"
    position = _by_position(name, kind, model) if block is None else None
    if position == "head":
        return "head"
    # 2. norm
    if kind == "norm":
        return "norm"
    # 3. sequence mixing by a scan (or a transform along the sequence: FNet's FFT)
    if kind == "scan" or model.traits.get(name, Traits()).mixes or model.in_any(
            name, model.scan_mixers):
        return "mixing"
    # 4. attention
    named = _by_names(name, model)
    if named == "attention" or kind == "attention":
        return "attention"
    # 5. a mixture of experts
    if model.in_any(name, model.routers):
        return "router"
    if model.in_any(name, model.experts):
        return "experts"
    # 6. MLP by names
    if named == "mlp":
        return "mlp"
    if block is not None:
        # 7. sequence mixing by a convolution in the block
        if model.in_any(name, model.conv_mixers):
            return "mixing"
        # 8. the block's other feed-forward layers
        if kind in _FEED_FORWARD:
            return "mlp"
    # 9. embedding
    if kind == "embedding" or position == "embedding":
        return "embedding"
    if block is None and any(s.lower() in _EMBED_SEGMENTS for s in segs):
        return "embedding"
    return "other"
