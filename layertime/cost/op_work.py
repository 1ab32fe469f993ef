"""What one aten op costs: its FLOPs (``torch.utils.flop_counter`` formulas, 2 x MACs),
the bytes it moves (each distinct input and output element once), and which peak it runs
at (convolution, matrix multiply or other).  Used by :mod:`layertime.cost.step_state`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

#: Scope index of the loss (step-level work outside the model).
LOSS = -1
#: Ops whose FLOP count is zero by definition: they move or make data.
NO_ARITHMETIC: frozenset[str] = frozenset(
    "aten." + n
    for n in (
        "copy_ clone _to_copy cat stack constant_pad_nd zeros zeros_like ones ones_like "
        "full full_like fill_ zero_ new_zeros new_ones new_full scalar_tensor index_select "
        "gather index slice_backward select_backward as_strided_scatter slice_scatter "
        "select_scatter diagonal_backward roll flip repeat narrow_copy masked_select "
        "_unsafe_index lift_fresh_copy channel_shuffle pixel_shuffle pixel_unshuffle "
        "native_channel_shuffle col2im im2col"
    ).split()
)
#: Ops that only allocate: nothing moved, nothing computed, not listed.
ALLOCATION: frozenset[str] = frozenset(
    "aten." + n for n in ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")
)
CONV_OPS: frozenset[str] = frozenset(
    "aten." + n
    for n in (
        "convolution",
        "_convolution",
        "cudnn_convolution",
        "_slow_conv2d_forward",
        "convolution_overrideable",
        "convolution_backward",
    )
)
MATMUL_OPS: frozenset[str] = frozenset(
    "aten." + n for n in ("mm", "addmm", "bmm", "baddbmm", "_scaled_mm")
)


def math_class(name: str) -> str:
    """Which peak an op runs at: convolution, matrix multiply (attention too), or other."""
    if name in CONV_OPS:
        return "conv"
    if name in MATMUL_OPS or "attention" in name:
        return "matmul"
    return "other"


def storage_key(t: torch.Tensor) -> int:
    """An identity for a tensor's storage, valid while the storage lives (meta included)."""
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, AttributeError):
        return id(t)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor view covers (expanded dims count once)."""
    n = t.numel()
    if n == 0:
        return 0
    span = 1
    for size, stride in zip(t.shape, t.stride()):
        span += (size - 1) * abs(stride)
    return min(n, span) * t.element_size()


def distinct_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of the distinct views among ``tensors`` (the same view read twice counts once)."""
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for t in tensors:
        key: tuple[Any, ...]
        try:
            key = (storage_key(t), t.storage_offset(), tuple(t.shape), t.stride())
        except (RuntimeError, NotImplementedError):
            key = (id(t),)
        if key in seen:
            continue
        seen.add(key)
        total += tensor_bytes(t)
    return total


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a nest of tuples, lists and dicts (an op's arguments or results)."""
    leaves, _ = tree_flatten(obj)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def bind_args(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """An aten op's arguments by their schema names."""
    names = [a.name for a in func._schema.arguments]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound




def op_flops(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> tuple[int, str]:
    """FLOPs of one aten op call and how they were obtained (an ``OpWork.flop_status``)."""
    formula = flop_registry.get(func._overloadpacket)
    if formula is not None:
        return int(formula(*args, **kwargs, out_val=out)), "formula"
    if str(func._overloadpacket) in NO_ARITHMETIC:
        return 0, "none"
    return 0, "not_counted"
