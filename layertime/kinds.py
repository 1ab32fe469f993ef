"""Map a module to its kind (conv, linear, norm, attention, ...): by what it computes.

The rule, in full.  A module's *own ops* are the aten ops its ``forward``
runs itself, outside its child modules.  When a forward has been watched
(:class:`KindObserver`, around one forward of the model), the first of
these that holds decides:

1. ``attention``: its own ops include the attention core: scaled
   dot-product attention (any SDPA backend, or the fused multi-head
   attention op), or a softmax beside a batched matrix multiply of two
   activations (the hand-written ``softmax(q @ k^T) @ v``).  In Hugging Face
   models the core is a function (``sdpa_attention_forward``,
   ``eager_attention_forward``) called from the attention module's own
   forward, so the attention module's *self time* is the core: scores,
   softmax, weighted sum, with the head split and merge and any rotary
   rotation done in the same forward.  Its projections are child modules
   with rows (and kinds) of their own.
2. ``conv``: a convolution op.
3. ``linear`` (shown as "fully connected"): a matrix multiply
   (``mm``, ``addmm``, ``bmm``, ...) one of whose operands is a parameter of
   the model (or a view of one), whatever the module's class: GPT-2's
   ``Conv1D`` (``addmm`` with its weight) is fully connected.
4. ``norm``: a normalisation op (layer, batch, group, instance, RMS norm), or
   a hand-written one: ``rsqrt`` of a mean or variance (Llama's
   ``LlamaRMSNorm``, T5's ``T5LayerNorm``).
5. ``embedding``: a table lookup (``embedding``, ``embedding_bag``).

Otherwise (and for modules not watched, such as in a user's own loop) the
class decides, most specific first, so that a user's subclass of
``nn.Conv2d`` is still a conv: torch's layer classes, activation classes
(torch's, and classes named ``...Activation`` or defined in an
``activations`` module, as transformers' and timm's are); then a watched
leaf with no parameters whose own ops include a nonlinearity (``gelu``,
``tanh``, ...) is an activation.  Names decide last: a class named like
attention is ``attention`` only if it was not watched and holds no other
attention module (``BertAttention``, which wraps ``BertSelfAttention`` and
an output projection, is ``other``: a wrapper's self time is not the core);
a class named ``...Norm`` is a norm, one named ``...DropPath`` or ``...Dropout`` a
dropout (a drop path computes nothing in the eval-mode forward watched).  Everything
else is ``other``.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from layertime.taxonomy import KIND_LABELS

_RULES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("attention", (nn.MultiheadAttention,)),
    ("conv", (nn.modules.conv._ConvNd,)),
    ("linear", (nn.Linear, nn.Bilinear, nn.LazyLinear)),
    (
        "norm",
        (
            nn.modules.batchnorm._NormBase,
            nn.LayerNorm,
            nn.GroupNorm,
            nn.LocalResponseNorm,
            nn.CrossMapLRN2d,
            getattr(nn, "RMSNorm", nn.LayerNorm),
        ),
    ),
    (
        "pool",
        (
            nn.modules.pooling._MaxPoolNd,
            nn.modules.pooling._AvgPoolNd,
            nn.modules.pooling._AdaptiveAvgPoolNd,
            nn.modules.pooling._AdaptiveMaxPoolNd,
            nn.modules.pooling._LPPoolNd,
        ),
    ),
    ("dropout", (nn.modules.dropout._DropoutNd,)),
    ("embedding", (nn.Embedding, nn.EmbeddingBag)),
    ("recurrent", (nn.RNNBase, nn.modules.rnn.RNNCellBase)),
    ("loss", (nn.modules.loss._Loss,)),
)

#: Activation classes live in ``torch.nn.modules.activation`` (except attention).
_ACTIVATION_MODULE = "torch.nn.modules.activation"


def _named_like_attention(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, nn.MultiheadAttention) or "attention" in name or name.endswith("attn")


def _is_activation_class(module: nn.Module) -> bool:
    for cls in type(module).__mro__:
        if cls is nn.Module:
            break
        if cls.__module__ == _ACTIVATION_MODULE and not issubclass(cls, nn.MultiheadAttention):
            return True
        if cls.__name__.endswith("Activation") or cls.__module__.endswith(".activations"):
            return True
    return False


def class_kind(module: nn.Module) -> str | None:
    """The kind torch's own classes (and activation classes) give, or None."""
    for kind, classes in _RULES:
        if isinstance(module, classes):
            return kind
    if _is_activation_class(module):
        return "activation"
    return None


def kind_of(module: nn.Module) -> str:
    """The kind of one module from its class alone (no forward watched)."""
    kind = class_kind(module)
    if kind is not None:
        return kind
    name = type(module).__name__.lower()
    # timm, transformers and users define their own attention and norm blocks;
    # an attention class that holds another is a wrapper, not the core.
    if _named_like_attention(module):
        inner = any(_named_like_attention(m) for m in module.modules() if m is not module)
        return "other" if inner else "attention"
    if name.endswith("norm") or name.endswith("norm2d"):
        return "norm"
    if name.endswith(("droppath", "dropout")):
        return "dropout"  # a stochastic depth's drop path: in eval mode it does nothing
    return "other"


# -- watching a forward -------------------------------------------------------------
#: The op names each rule reads (``measure/traces/op_kinds.py`` reads a trace by them too).
SDPA_OPS = ("scaled_dot_product", "multi_head_attention", "flash_attention",
                 "efficient_attention", "cudnn_attention", "flex_attention")
_MATMULS = frozenset(("mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "mv", "addmv",
                      "dot", "linear", "_scaled_mm", "_int_mm", "_grouped_mm", "grouped_mm",
                      "_scaled_grouped_mm"))
#: A softmax, or one written by hand as exp(x - logsumexp(x)) (Reformer's attention).
SOFTMAX_OPS = frozenset(("softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax",
                      "logsumexp"))
CONV_OPS = ("convolution", "_convolution", "conv", "cudnn_convolution", "mkldnn_convolution",
                "_slow_conv", "thnn_conv", "_nnpack_spatial_convolution")
NORM_OPS = frozenset((
    "native_layer_norm", "layer_norm", "native_batch_norm", "batch_norm",
    "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "cudnn_batch_norm", "miopen_batch_norm",
    "native_group_norm", "group_norm", "instance_norm", "rms_norm", "_fused_rms_norm",
    "_batch_norm_impl_index", "_batch_norm_with_update", "_batch_norm_no_update",
))
REDUCTION_OPS = frozenset(("mean", "var", "var_mean", "std", "std_mean", "sum"))
EMBEDDING_OPS = frozenset(("embedding", "embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"))
NONLINEAR_OPS = frozenset((
    "relu", "relu_", "gelu", "gelu_", "silu", "silu_", "tanh", "tanh_", "sigmoid", "sigmoid_",
    "erf", "elu", "elu_", "leaky_relu", "leaky_relu_", "hardswish", "hardswish_", "hardsigmoid",
    "mish", "softplus", "celu", "selu", "glu", "prelu", "_prelu_kernel", "hardtanh", "hardtanh_",
    "relu6", "threshold",
))
#: Random masks (a dropout, a stochastic depth's drop path written by hand).
_RANDOM = frozenset(("bernoulli", "rand", "rand_like", "native_dropout", "dropout",
                     "feature_dropout", "alpha_dropout"))
#: Steps of a Python loop over the sequence (one position taken per step).
_STEPS = frozenset(("select",))
#: A loop over the sequence takes at least this many steps in one watched forward.
_MIN_LOOP_STEPS = 8
_PART_SUFFIX = re.compile(r"(^|_)(weight|bias)$")


def _storage(t: torch.Tensor) -> int:
    """The storage a tensor's data lives in: a DTensor's (tensor parallelism) is its local
    shard's, so its views (a transposed weight) are found as the parameter's."""
    local = getattr(t, "_local_tensor", None)
    if isinstance(local, torch.Tensor):
        t = local
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, AttributeError):
        return id(t)


def _tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _flops(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> int:
    """2 x MACs of a matmul or convolution (torch's FLOP formulas), 0 when none applies."""
    from torch.utils.flop_counter import flop_registry

    formula = flop_registry.get(func._overloadpacket)
    if formula is None:
        return 0
    try:
        return int(formula(*args, **kwargs, out_val=out))
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError, NotImplementedError):
        return 0


@dataclass(frozen=True)
class ParamOp:
    """One op of a module's own forward that computes with a parameter of the model, and
    where its time belongs (see :class:`KindObserver`).

    ``op`` is the op as the dispatcher names it (``addmm``, ``mm``, ``convolution``);
    ``kind`` what it computes (``linear`` for a matrix multiply, ``conv``);
    ``holder`` the ``id`` of the child module that holds the parameter (its row takes the
    op), or None: the module's own part (its projections, a row of its own);
    ``params``: ids of the module's own parameters it reads; ``flops``: 2 x MACs.
    """

    op: str
    kind: str
    holder: int | None
    params: tuple[int, ...] = ()
    flops: int = 0
    at: int = 0


@dataclass(frozen=True)
class ModuleFacts:
    """What a watched forward showed of one module: its kind (by what its own ops compute,
    the ops charged elsewhere left out), when it first ran, whether it routes tokens to
    experts, and the ops of its own forward that belong to another row.

    ``order``: rank of its first call in the forward (None if it did not run);
    ``routes_over``: the number of choices a top-k of its own ops picks among (a
    mixture-of-experts router: the experts), None if it takes no top-k;
    ``out_dim``: the last dimension of its first output (a projection's features);
    ``mixes``: its own ops transform along the sequence without attention or a scan
    (an FFT: FNet's Fourier mixing);
    ``ops``: in the order they ran, the ops that go to a child's row or to ``part``
    (the module's projections computed with its own parameters, a row of kind
    ``part_kind`` named ``part_name``).
    """

    kind: str
    order: int | None = None
    routes_over: int | None = None
    out_dim: int | None = None
    mixes: bool = False
    ops: tuple[ParamOp, ...] = ()
    part_name: str | None = None
    part_kind: str | None = None
    #: Rank, among module calls, of the moment the part's first op ran.
    part_order: int | None = None
    #: ids of the module's own parameters the part holds: those its ops read, and
    #: their namesakes (``in_proj_bias`` beside ``in_proj_weight``).
    part_params: tuple[int, ...] = ()
    #: The kind by all its own ops, none charged elsewhere: for a collector that keeps a
    #: module's work whole (the cost count).
    whole_kind: str | None = None


class _Seen:
    """What one module's own ops did in the watched forward."""

    __slots__ = ("ran", "flags", "uses", "topk_over", "order", "out_dim")

    def __init__(self) -> None:
        self.ran = False
        self.flags: Counter[str] = Counter()
        #: (op, kind, parameter storages it read, flops, module calls started before it)
        #: of ops with a parameter operand.
        self.uses: list[tuple[str, str, frozenset[int], int, int]] = []
        self.topk_over: int | None = None
        self.order: int | None = None
        self.out_dim: int | None = None


class _Watch(TorchDispatchMode):
    def __init__(self, observer: KindObserver) -> None:
        super().__init__()
        self._obs = observer

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._obs._on_op(func, args, kwargs, out)
        return out


class KindObserver:
    """Watches one forward and decides each module's kind by its own ops (module docstring).

    Use as a context manager around a forward of ``model``; hooks and the
    dispatch mode exist only inside it.  Nothing is stored on the modules.
    While watching, torch's multi-head-attention fast path is turned off (and
    restored), so that ``nn.MultiheadAttention`` and
    ``nn.TransformerEncoderLayer`` run their training-time code in eval mode.

    Own ops computed with a parameter (a matrix multiply or a convolution) are
    charged by what they compute, not by who calls them: with a parameter a child
    module holds (``nn.MultiheadAttention``'s ``F.linear`` with ``out_proj.weight``,
    Mamba's ``F.conv1d`` with ``conv1d.weight``), to that child's row, when the child
    is of that kind by its class (or has no class kind); with the module's own
    parameters (``in_proj_weight``), to a part of the module of that kind, when its
    other ops compute something else (the attention core, a scan).  The module's own
    kind is then decided by the ops it keeps (:meth:`facts`).
    """

    def __init__(self, model: nn.Module) -> None:
        named = list(dict.fromkeys((m, n) for n, m in model.named_modules()))
        first: dict[int, str] = {}
        for m, n in named:
            first.setdefault(id(m), n)
        self._modules = list(dict.fromkeys(m for m, _ in named))
        self._names = [first[id(m)] for m in self._modules]
        self._by_name = {n: i for i, n in enumerate(self._names)}
        self._index = {id(m): i for i, m in enumerate(self._modules)}
        self._seen = [_Seen() for _ in self._modules]
        #: parameter storage -> indices of the modules holding it directly.
        self._holders: dict[int, list[int]] = {}
        for i, m in enumerate(self._modules):
            for p in m.parameters(recurse=False):
                self._holders.setdefault(_storage(p), []).append(i)
        self._params = set(self._holders)
        #: module index -> indices of its direct children.
        self._kids: dict[int, list[int]] = {}
        for i, n in enumerate(self._names):
            if n:
                parent = n.rsplit(".", 1)[0] if "." in n else ""
                if parent in self._by_name:
                    self._kids.setdefault(self._by_name[parent], []).append(i)
        self._stack: list[int] = []
        self._calls = 0
        self._exit: contextlib.ExitStack | None = None

    def _on_op(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> None:
        if not self._stack:
            return
        name = str(func._overloadpacket).split(".", 1)[-1]
        seen = self._seen[self._stack[-1]]
        flags = seen.flags
        base = name.rstrip("_") if name.endswith("_") and not name.startswith("_") else name
        if any(m in name for m in SDPA_OPS):
            flags["sdpa"] += 1
        elif base in _MATMULS or name.startswith(CONV_OPS):
            conv = base not in _MATMULS
            ins = _tensors((args, kwargs))
            params = frozenset(k for k in (_storage(t) for t in ins) if k in self._params)
            if params:
                flags["conv" if conv else "param_matmul"] += 1
                seen.uses.append((name, "conv" if conv else "linear", params,
                                  _flops(func, args, kwargs, out), self._calls))
            elif conv:
                flags["conv"] += 1
            elif len(ins) >= 2:
                flags["act_matmul"] += 1
        elif base in SOFTMAX_OPS:
            flags["softmax"] += 1
        elif base in NORM_OPS:
            flags["norm"] += 1
        elif base == "rsqrt":
            flags["rsqrt"] += 1
        elif base in REDUCTION_OPS:
            flags["reduce"] += 1
        elif base in EMBEDDING_OPS:
            flags["embedding"] += 1
        elif name in NONLINEAR_OPS or base in NONLINEAR_OPS:
            flags["nonlinear"] += 1
        elif base == "exp":
            flags["exp"] += 1
        elif base.startswith(("fft_", "_fft_")):
            flags["fft"] += 1
        elif base in _RANDOM:
            flags["random"] += 1
        elif base == "cumsum":
            flags["cumsum"] += 1
        elif base in _STEPS:
            flags["step"] += 1
        elif base == "topk" or (base == "argmax" and flags["softmax"]):
            # A top-k over scores, or a top-1 as an argmax of probabilities (Switch
            # Transformers' and NLLB-MoE's routers; not an argmax of token ids).
            ins = _tensors(args[:1])
            if ins and ins[0].dim() >= 1 and ins[0].is_floating_point():
                seen.topk_over = int(ins[0].shape[-1])

    def __enter__(self) -> KindObserver:
        stack = contextlib.ExitStack()
        try:
            for i, m in enumerate(self._modules):

                def pre(_m: nn.Module, _a: Any, _i: int = i) -> None:
                    seen = self._seen[_i]
                    seen.ran = True
                    if seen.order is None:
                        seen.order = self._calls
                    self._calls += 1
                    self._stack.append(_i)
                    # FSDP2 swaps a unit's sharded parameters for gathered ones in its
                    # pre-forward hook, which runs before this one: note those too.
                    self._params.update(_storage(p) for p in _m.parameters(recurse=False))

                def post(_m: nn.Module, _a: Any, _o: Any, _i: int = i) -> None:
                    if self._stack and self._stack[-1] == _i:
                        self._stack.pop()
                    seen = self._seen[_i]
                    if seen.out_dim is None:
                        outs = _tensors(_o)
                        if outs and outs[0].dim() >= 1:
                            seen.out_dim = int(outs[0].shape[-1])

                stack.callback(m.register_forward_pre_hook(pre).remove)
                stack.callback(m.register_forward_hook(post, always_call=True).remove)
            mha = getattr(torch.backends, "mha", None)
            if mha is not None and hasattr(mha, "get_fastpath_enabled"):
                was = mha.get_fastpath_enabled()
                mha.set_fastpath_enabled(False)
                stack.callback(mha.set_fastpath_enabled, was)
            stack.enter_context(_Watch(self))
        except BaseException:
            stack.close()
            raise
        self._exit = stack
        return self

    def __exit__(self, *exc: object) -> None:
        if self._exit is not None:
            self._exit.close()
            self._exit = None
        self._stack.clear()

    def kinds(self) -> dict[int, str]:
        """``id(module)`` -> kind, for every module of the model."""
        return {k: f.kind for k, f in self.facts().items()}

    def facts(self) -> dict[int, ModuleFacts]:
        """``id(module)`` -> what the watched forward showed of it (:class:`ModuleFacts`)."""
        return {id(m): self._facts(i, m, s) for i, (m, s) in enumerate(zip(self._modules, self._seen))}

    def _below(self, child: int, parent: int) -> bool:
        p = self._names[parent]
        return child != parent and (p == "" or self._names[child].startswith(p + "."))

    def _facts(self, i: int, module: nn.Module, seen: _Seen) -> ModuleFacts:
        """Which ops go elsewhere, and the kind decided by the ops the module keeps."""
        flags = Counter(seen.flags)
        decided: list[tuple[ParamOp, bool]] = []  # (op, computed with its own parameters)
        for op, kind, storages, flops, at in seen.uses:
            holders = [h for k in storages for h in self._holders.get(k, ())]
            child = None
            if i not in holders:
                child = next((h for h in holders if self._below(h, i)
                              and class_kind(self._modules[h]) in (kind, None)), None)
            if child is not None:
                flags["conv" if kind == "conv" else "param_matmul"] -= 1
                decided.append((ParamOp(op, kind, id(self._modules[child]), (), flops, at), False))
            else:
                mine = tuple(id(p) for p in module.parameters(recurse=False)
                             if _storage(p) in storages)
                decided.append((ParamOp(op, kind, None, mine, flops, at), True))
        flags = +flags  # what went to children's rows is not this module's
        if flags["act_matmul"] and not flags["softmax"] and any(
            self._seen[k].flags["softmax"] and not self._seen[k].flags["act_matmul"]
            for k in self._kids.get(i, ())
        ):
            # Its softmax is a child module's (an nn.Softmax): the scores and the
            # weighted sum around it are this module's, the attention core.
            flags["softmax"] += 1
        own = [p for p, is_own in decided if is_own]
        part_name = part_kind = None
        part_params: tuple[int, ...] = ()
        if own and seen.ran:
            rest = Counter(flags)
            for p in own:
                rest["conv" if p.kind == "conv" else "param_matmul"] -= 1
            rest = +rest
            kept = self._decide(module, seen, rest)
            kinds = {p.kind for p in own}
            if len(kinds) == 1 and kept in _COMPUTE_KINDS and kept not in kinds:
                (part_kind,) = kinds
                part_name, part_params = self._part(module, own)
                flags = rest
        ops = tuple(p for p, is_own in decided if part_kind is not None or not is_own)
        return ModuleFacts(
            kind=self._decide(module, seen, flags), order=seen.order,
            routes_over=seen.topk_over, out_dim=seen.out_dim, mixes=bool(flags["fft"]),
            ops=ops,
            part_name=part_name, part_kind=part_kind,
            part_order=min((p.at for p in own), default=None) if part_kind else None,
            part_params=part_params,
            whole_kind=self._decide(module, seen, +Counter(seen.flags)) if seen.uses else None,
        )

    def _part(self, module: nn.Module, own: Sequence[ParamOp]) -> tuple[str, tuple[int, ...]]:
        """A part's name and parameters: the stems of the module's own parameters its ops
        read (``in_proj`` for ``in_proj_weight``), and every own parameter of those stems
        (``in_proj_bias`` too, added outside the matrix multiply); for a part computing
        with others' parameters only, its kind's label and none."""
        ids = {x for p in own for x in p.params}
        named = list(module.named_parameters(recurse=False))
        stems = [_PART_SUFFIX.sub("", n) for n, p in named if id(p) in ids]
        stems = [s for s in dict.fromkeys(stems) if s]
        if not stems:
            held = tuple(id(p) for _, p in named if id(p) in ids)
            kinds = sorted({p.kind for p in own})
            return ",".join(KIND_LABELS.get(k, k) for k in kinds), held
        held = tuple(id(p) for n, p in named if id(p) in ids or _PART_SUFFIX.sub("", n) in stems)
        return ",".join(stems), held

    def _decide(self, module: nn.Module, seen: _Seen, f: Counter[str]) -> str:
        if seen.ran:
            if f["sdpa"] or (f["softmax"] and f["act_matmul"]):
                return "attention"
            if _is_scan(f):
                return "scan"
            if f["conv"]:
                return "conv"
            if f["param_matmul"]:
                return "linear"
            if f["norm"] or (f["rsqrt"] and f["reduce"]):
                return "norm"
            if f["embedding"]:
                return "embedding"
        kind = class_kind(module)
        if kind is not None:
            return kind
        if seen.ran:
            leaf = not list(module.children()) and not any(
                True for _ in module.parameters(recurse=False))
            if f["nonlinear"] and leaf:
                return "activation"
            if f["random"] and leaf:
                return "dropout"  # a drop path: a random mask and a rescale
            # Watched and none of the above: a name alone does not make attention.
            static = kind_of(module)
            return "other" if static == "attention" else static
        return kind_of(module)


#: Kinds that a module's kept ops can compute beside projections with its own parameters.
_COMPUTE_KINDS = frozenset(("attention", "scan", "conv", "linear", "norm", "embedding"))


def _is_scan(f: Counter[str]) -> bool:
    """A recurrence over the sequence (a selective scan, a linear-attention or RNN-like
    state update), with no softmax: a loop over the sequence's steps, or a product of
    two activations, beside a decay (``exp``), a running sum or the other of the two."""
    if f["softmax"] or f["sdpa"]:
        return False
    loop = f["step"] >= _MIN_LOOP_STEPS
    product = f["act_matmul"] > 0
    decay = f["exp"] > 0 or f["cumsum"] > 0
    return (loop and (decay or product)) or (product and decay)


def observed_kinds(model: nn.Module, forward: Callable[[], object]) -> dict[int, str]:
    """Run ``forward()`` (one forward of ``model``) watched; ``id(module)`` -> kind."""
    with KindObserver(model) as obs:
        forward()
    return obs.kinds()
