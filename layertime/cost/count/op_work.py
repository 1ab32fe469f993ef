"""What one aten op costs: its FLOPs (``torch.utils.flop_counter`` formulas, 2 x MACs),
the bytes it moves (each distinct input and output element once), and which peak it runs
at (convolution, matrix multiply or other).  Used by :mod:`layertime.cost.count.step_state`.
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
        "native_channel_shuffle col2im im2col _unsafe_view tril triu"
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
    "aten." + n for n in ("mm", "addmm", "bmm", "baddbmm", "_scaled_mm", "_grouped_mm",
                          "_scaled_grouped_mm")
)
#: A mixture of experts' grouped matrix multiply: each group (an expert) multiplies the
#: rows (tokens) routed to it; torch has no FLOP formula for it (see grouped_mm_flops).
GROUPED_MM: frozenset[str] = frozenset(("aten._grouped_mm", "aten._scaled_grouped_mm"))


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




def grouped_mm_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    """2 x MACs of a grouped matrix multiply of ``a`` by ``b``: every row of the routed
    operand is multiplied by one group's matrix, so the work is that of the rows that ran
    (tokens times their top-k experts), whatever the groups' sizes.

    2-D by 3-D (tokens (S, K) by experts (E, K, N)): 2 S K N; 3-D by 2-D: 2 M K N; 2-D by
    2-D (the weight gradient, groups along the contracted S): 2 K S N; 3-D by 3-D (a
    batch of groups): 2 E M K N."""
    if a.dim() == 2 and b.dim() == 3:
        return 2 * a.shape[0] * a.shape[1] * b.shape[2]
    if a.dim() == 3 and b.dim() == 2:
        return 2 * a.shape[1] * a.shape[2] * b.shape[1]
    if a.dim() == 2 and b.dim() == 2:
        return 2 * a.shape[0] * a.shape[1] * b.shape[1]
    if a.dim() == 3 and b.dim() == 3:
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return 0


def run_grouped_mm_on_meta(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """A grouped matrix multiply of meta tensors in any float dtype: torch's meta kernel
    takes bfloat16 only (the CUDA kernel's dtypes), so the shapes are had in bfloat16 and
    the result given the dtype it has on a device that runs it (float32 on the CPU)."""
    dtype = next((t.dtype for t in tensors_in(args) if t.is_floating_point()), None)

    def cast(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.to(torch.bfloat16)
        return x

    out = func(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
    return out.to(dtype) if dtype is not None else out


def op_flops(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> tuple[int, str]:
    """FLOPs of one aten op call and how they were obtained (an ``OpWork.flop_status``)."""
    if str(func._overloadpacket) in GROUPED_MM:
        a, b = (x for x in args[:2])
        return grouped_mm_flops(a, b), "formula"
    formula = flop_registry.get(func._overloadpacket)
    if formula is not None:
        return int(formula(*args, **kwargs, out_val=out)), "formula"
    if str(func._overloadpacket) in NO_ARITHMETIC:
        return 0, "none"
    return 0, "not_counted"
