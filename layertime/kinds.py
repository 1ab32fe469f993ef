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
a class named ``...Norm`` is a norm.  Everything else is ``other``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

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
    return "other"


# -- watching a forward -------------------------------------------------------------
_SDPA_MARKERS = ("scaled_dot_product", "multi_head_attention", "flash_attention",
                 "efficient_attention", "cudnn_attention", "flex_attention")
_MATMULS = frozenset(("mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "mv", "addmv",
                      "dot", "linear", "_scaled_mm", "_int_mm"))
_SOFTMAX = frozenset(("softmax", "_softmax", "_safe_softmax", "log_softmax", "_log_softmax"))
_CONV_PREFIX = ("convolution", "_convolution", "conv", "cudnn_convolution", "mkldnn_convolution",
                "_slow_conv", "thnn_conv", "_nnpack_spatial_convolution")
_NORMS = frozenset((
    "native_layer_norm", "layer_norm", "native_batch_norm", "batch_norm",
    "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit_functional", "cudnn_batch_norm", "miopen_batch_norm",
    "native_group_norm", "group_norm", "instance_norm", "rms_norm", "_fused_rms_norm",
    "_batch_norm_impl_index", "_batch_norm_with_update", "_batch_norm_no_update",
))
_REDUCTIONS = frozenset(("mean", "var", "var_mean", "std", "std_mean", "sum"))
_EMBEDDINGS = frozenset(("embedding", "embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"))
_NONLINEAR = frozenset((
    "relu", "relu_", "gelu", "gelu_", "silu", "silu_", "tanh", "tanh_", "sigmoid", "sigmoid_",
    "erf", "elu", "elu_", "leaky_relu", "leaky_relu_", "hardswish", "hardswish_", "hardsigmoid",
    "mish", "softplus", "celu", "selu", "glu", "prelu", "_prelu_kernel", "hardtanh", "hardtanh_",
    "relu6", "threshold",
))


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


class _Seen:
    """What one module's own ops did in the watched forward."""

    __slots__ = ("ran", "flags")

    def __init__(self) -> None:
        self.ran = False
        self.flags: set[str] = set()


class _Watch(TorchDispatchMode):
    def __init__(self, observer: KindObserver) -> None:
        super().__init__()
        self._obs = observer

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._obs._on_op(str(func._overloadpacket).split(".", 1)[-1], args, kwargs)
        return out


class KindObserver:
    """Watches one forward and decides each module's kind by its own ops (module docstring).

    Use as a context manager around a forward of ``model``; hooks and the
    dispatch mode exist only inside it.  Nothing is stored on the modules.
    While watching, torch's multi-head-attention fast path is turned off (and
    restored), so that ``nn.MultiheadAttention`` and
    ``nn.TransformerEncoderLayer`` run their training-time code in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        self._modules = list(dict.fromkeys(m for _, m in model.named_modules()))
        self._index = {id(m): i for i, m in enumerate(self._modules)}
        self._seen = [_Seen() for _ in self._modules]
        self._params = {_storage(p) for p in model.parameters()}
        self._stack: list[int] = []
        self._exit: contextlib.ExitStack | None = None

    def _on_op(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        if not self._stack:
            return
        flags = self._seen[self._stack[-1]].flags
        base = name.rstrip("_") if name.endswith("_") and not name.startswith("_") else name
        if any(m in name for m in _SDPA_MARKERS):
            flags.add("sdpa")
        elif base in _MATMULS:
            ins = _tensors((args, kwargs))
            if any(_storage(t) in self._params for t in ins):
                flags.add("param_matmul")
            elif len(ins) >= 2:
                flags.add("act_matmul")
        elif base in _SOFTMAX:
            flags.add("softmax")
        elif name.startswith(_CONV_PREFIX):
            flags.add("conv")
        elif base in _NORMS:
            flags.add("norm")
        elif base == "rsqrt":
            flags.add("rsqrt")
        elif base in _REDUCTIONS:
            flags.add("reduce")
        elif base in _EMBEDDINGS:
            flags.add("embedding")
        elif name in _NONLINEAR or base in _NONLINEAR:
            flags.add("nonlinear")

    def __enter__(self) -> KindObserver:
        stack = contextlib.ExitStack()
        try:
            for i, m in enumerate(self._modules):

                def pre(_m: nn.Module, _a: Any, _i: int = i) -> None:
                    self._seen[_i].ran = True
                    self._stack.append(_i)
                    # FSDP2 swaps a unit's sharded parameters for gathered ones in its
                    # pre-forward hook, which runs before this one: note those too.
                    self._params.update(_storage(p) for p in _m.parameters(recurse=False))

                def post(_m: nn.Module, _a: Any, _o: Any, _i: int = i) -> None:
                    if self._stack and self._stack[-1] == _i:
                        self._stack.pop()

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
        return {id(m): self._decide(m, s) for m, s in zip(self._modules, self._seen)}

    def _decide(self, module: nn.Module, seen: _Seen) -> str:
        f = seen.flags
        if seen.ran:
            if "sdpa" in f or ("softmax" in f and "act_matmul" in f):
                return "attention"
            if "conv" in f:
                return "conv"
            if "param_matmul" in f:
                return "linear"
            if "norm" in f or ("rsqrt" in f and "reduce" in f):
                return "norm"
            if "embedding" in f:
                return "embedding"
        kind = class_kind(module)
        if kind is not None:
            return kind
        if seen.ran:
            if "nonlinear" in f and not list(module.children()) and not any(
                True for _ in module.parameters(recurse=False)
            ):
                return "activation"
            # Watched and none of the above: a name alone does not make attention.
            static = kind_of(module)
            return "other" if static == "attention" else static
        return kind_of(module)


def observed_kinds(model: nn.Module, forward: Callable[[], object]) -> dict[int, str]:
    """Run ``forward()`` (one forward of ``model``) watched; ``id(module)`` -> kind."""
    with KindObserver(model) as obs:
        forward()
    return obs.kinds()
