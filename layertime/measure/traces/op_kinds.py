"""A traced module's kind from the ops its forward ran itself, as ``layertime.kinds`` decides
it for a watched forward, where a trace cannot show what ``kinds.py`` sees.

``kinds.py`` watches the forward with a dispatch mode and knows each op's tensors; a trace
holds only op names (and, with ``record_shapes``, shapes), so two of its tests are read
from names here: a matrix multiply *with a parameter* is one whose op takes a weight
matrix (``linear``, ``addmm``, ``mm``), one *of two activations* a batched one (``bmm``,
``baddbmm``).  The rest is the same rule, in the same order: attention (scaled dot-product
attention, or a softmax beside a batched matmul), conv, fully connected, norm (a norm op,
or ``rsqrt`` of a mean or variance), embedding; then torch's own class of that name
(:func:`layertime.kinds.class_kind`); then a leaf whose ops include a nonlinearity is an
activation, and, since a trace has no class to test, a leaf whose ops pool, drop out or
compute a loss is that; then a class named ``...Norm`` is a norm.  Everything else is
``other`` (a name alone does not make attention of a watched module).

The op-name sets are ``kinds.py``'s (which decides from tensors, not names).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from layertime.kinds import (
    CONV_OPS,
    EMBEDDING_OPS,
    NONLINEAR_OPS,
    NORM_OPS,
    REDUCTION_OPS,
    SDPA_OPS,
    SOFTMAX_OPS,
    class_kind,
)

_PARAM_MATMULS = frozenset(("linear", "addmm", "mm", "_scaled_mm", "_int_mm", "addmv", "mv"))
_ACT_MATMULS = frozenset(("bmm", "baddbmm", "addbmm"))
_POOL = ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "_adaptive_avg_pool",
         "lp_pool", "max_pool2d_with_indices", "mkldnn_max_pool")
_DROPOUT = frozenset(("dropout", "native_dropout", "feature_dropout", "alpha_dropout",
                      "bernoulli"))
_LOSS = ("cross_entropy_loss", "nll_loss", "mse_loss", "l1_loss", "binary_cross_entropy",
         "smooth_l1_loss", "huber_loss", "kl_div", "ctc_loss", "margin_ranking_loss")


def _base(name: str) -> str:
    """``relu_`` -> ``relu`` (an in-place op is its op), ``_softmax`` stays."""
    return name.rstrip("_") if name.endswith("_") and not name.startswith("_") else name


def torch_class_kind(cls_name: str) -> str | None:
    """The kind torch's own class of this name has (``Conv2d`` -> conv), or None when
    ``torch.nn`` has no module class of that name."""
    cls = getattr(nn, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None
    # class_kind tests isinstance and the class's own bases: an instance that was never
    # initialised (nothing runs, nothing is kept) is enough for that.
    return class_kind(cls.__new__(cls))


def kind_from_ops(ops: Iterable[str], cls_name: str, *, leaf: bool) -> str:
    """The kind of a traced module (see the module doc): ``ops`` are the names (without
    ``aten::``) of the ops its forward ran itself, ``leaf`` whether it called no module."""
    names = {_base(o) for o in ops}
    if any(m in o for o in names for m in SDPA_OPS) or (
            names & SOFTMAX_OPS and names & _ACT_MATMULS):
        return "attention"
    if any(o.startswith(CONV_OPS) for o in names):
        return "conv"
    if names & _PARAM_MATMULS:
        return "linear"
    if names & NORM_OPS or ("rsqrt" in names and names & REDUCTION_OPS):
        return "norm"
    if names & EMBEDDING_OPS:
        return "embedding"
    kind = torch_class_kind(cls_name)
    if kind is not None:
        return kind
    if leaf:
        if names & NONLINEAR_OPS:
            return "activation"
        if any(o.startswith(_POOL) for o in names):
            return "pool"
        if names & _DROPOUT:
            return "dropout"
        if any(o.startswith(_LOSS) for o in names):
            return "loss"
    if cls_name.lower().endswith(("norm", "norm2d")):
        return "norm"
    return "other"
