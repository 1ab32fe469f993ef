"""Scaled dot-product attention counted as one op, whichever kernel runs it.

``torch.nn.functional.scaled_dot_product_attention`` dispatches to a fused
kernel (flash, memory-efficient) or to the math path, whose aten ops differ
from backend to backend and are partly unknown to the meta device.  The
counter (``step_state.GraphMode``) therefore replaces each call by
:class:`CountedSDPA`: one forward op and one backward op, charged by the
formula in :func:`sdpa_flops`, with the tensors the fused kernels save.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from layertime.cost.op_work import LOSS, distinct_bytes, storage_key, tensor_bytes

#: Names of the one op a counted SDPA call is listed as, forward and backward.
SDPA_OP = "aten.scaled_dot_product_attention"
SDPA_BACKWARD_OP = "aten.scaled_dot_product_attention_backward"
#: The torch functions counted this way.
SDPA_FUNCTIONS = frozenset({torch.nn.functional.scaled_dot_product_attention})


class Counter(Protocol):
    """What a counted SDPA call needs of the count it is part of (``step_state.StepState``)."""

    paused: bool
    producer: dict[int, int]
    node_owner: dict[Any, int]

    def current(self) -> int: ...

    def charge(
        self, owner: int, name: str, phase: str, flops: int, moved: int, status: str,
        calls: int = 1,
    ) -> None: ...


def sdpa_flops(
    q: Sequence[int], k: Sequence[int], v: Sequence[int], *, causal: bool, backward: bool = False
) -> int:
    """FLOPs of one scaled dot-product attention, whichever kernel runs it.

    Forward: ``Q K^T`` and ``P V``, ``2*B*H*Sq*Sk*(Dqk + Dv)`` (``4*B*H*S^2*D``
    for square attention), with ``H`` the query heads (grouped-query attention
    broadcasts the key/value heads).  Backward: five matrix multiplies as the
    fused kernels run them (``Q K^T`` recomputed, ``dO V^T``, ``P^T dO``,
    ``dS K``, ``Q^T dS``): ``2*B*H*Sq*Sk*(3*Dqk + 2*Dv)`` = ``10*B*H*S^2*D``,
    torch.utils.flop_counter's convention.  ``is_causal`` halves both: flash
    and memory-efficient kernels skip the masked half; the math kernel and an
    explicit mask tensor compute it all, and are still counted the same (the
    convention is per call, not per kernel).  Softmax and scaling are not counted.
    """
    bh = 1
    for d in q[:-2]:
        bh *= int(d)  # batch x query heads (and any other leading dims)
    sq, dqk, sk, dv = int(q[-2]), int(q[-1]), int(k[-2]), int(v[-1])
    if backward:
        flops = 2 * bh * sq * sk * (3 * dqk + 2 * dv)
    else:
        flops = 2 * bh * sq * sk * (dqk + dv)
    return flops // 2 if causal else flops


class CountedSDPA(torch.autograd.Function):
    """One SDPA call counted as one op by :func:`sdpa_flops` (the kernel inside is not).

    Forward computes the attention (counting paused) and saves what the fused
    kernels save: query, key, value, output and the float32 log-sum-exp per
    query row; backward recomputes through torch's SDPA to get real (or meta)
    gradients, counting paused, and charges the backward formula to the layer
    whose forward made the node.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, state: Counter, opts: dict[str, Any], q: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, mask: torch.Tensor | None,
    ) -> torch.Tensor:
        paused, state.paused = state.paused, True
        try:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, **opts)
        finally:
            state.paused = paused
        lse = torch.empty(tuple(q.shape[:-1]), dtype=torch.float32, device=q.device)
        causal = bool(opts.get("is_causal", False))
        flops = sdpa_flops(q.shape, k.shape, v.shape, causal=causal)
        ins = [q, k, v] + ([mask] if mask is not None else [])
        owner = state.current()
        if not state.paused:
            state.charge(owner, SDPA_OP, "forward", flops,
                         distinct_bytes(ins) + tensor_bytes(out) + tensor_bytes(lse), "formula")
            state.producer[storage_key(out)] = owner
        ctx.state, ctx.opts = state, opts
        ctx.save_for_backward(q, k, v, out, lse, mask)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:  # type: ignore[override]
        state: Counter = ctx.state
        q, k, v, out, lse, mask = ctx.saved_tensors
        paused, state.paused = state.paused, True
        try:
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(t.requires_grad) for t in (q, k, v)]
                want = [t for t in leaves if t.requires_grad]
                o = torch.nn.functional.scaled_dot_product_attention(
                    leaves[0], leaves[1], leaves[2], attn_mask=mask, **ctx.opts
                )
                got = iter(torch.autograd.grad(o, want, grad_out)) if want else iter(())
                grads = [next(got) if t.requires_grad else None for t in leaves]
        finally:
            state.paused = paused
        node = torch._C._current_autograd_node()
        owner = state.node_owner.get(node, 0) if node is not None else LOSS
        causal = bool(ctx.opts.get("is_causal", False))
        flops = sdpa_flops(q.shape, k.shape, v.shape, causal=causal, backward=True)
        written = [g for g in grads if isinstance(g, torch.Tensor)]
        moved = (distinct_bytes([q, k, v, out, grad_out]) + tensor_bytes(lse)
                 + sum(tensor_bytes(g) for g in written))
        state.charge(owner, SDPA_BACKWARD_OP, "backward_input", flops, moved, "formula")
        return (None, None, *grads, None)


def counted_sdpa(state: Counter, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """``scaled_dot_product_attention(*args, **kwargs)``, counted as one op."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    q, k, v = bound.pop("query"), bound.pop("key"), bound.pop("value")
    mask = bound.pop("attn_mask", None)
    return CountedSDPA.apply(state, bound, q, k, v, mask)
