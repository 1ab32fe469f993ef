"""Scaled dot-product attention counted as the kernel the target device runs.

``torch.nn.functional.scaled_dot_product_attention`` dispatches to a fused
kernel (flash, memory-efficient, cuDNN, the CPU's flash) or to the math path;
:func:`layertime.cost.kernel_choice.sdpa_backend` says which, by torch's rules,
for the count's target.  The counter (``step_state.GraphMode``) then runs:

* the math path as its aten ops (``_scaled_dot_product_attention_math``
  decomposed: scaling, ``Q K^T`` by ``bmm``, the causal mask by ``tril`` and
  ``where``, softmax, dropout's ``bernoulli_``/``div_``/``mul``, ``P V``), each
  counted like any op, with its full S x S work and traffic and the S x S
  tensors it saves (no causal halving: the math path computes the masked half);
* a fused backend as :class:`CountedSDPA`: one forward op and one backward op
  named after the backend's aten op, charged by :func:`sdpa_flops` (causal
  halving: the fused kernels skip the masked blocks) and :func:`fused_bytes`,
  with the tensors the fused kernels save.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from layertime.cost.count.kernel_choice import (
    SDPA_BACKEND_OPS,
    KernelTarget,
    SdpaCall,
    SdpaChoice,
    sdpa_backend,
)
from layertime.cost.count.op_work import LOSS, distinct_bytes, storage_key, tensor_bytes

#: Names of the one op a fused SDPA call is listed as, forward and backward, by backend.
SDPA_OPS: dict[str, str] = {b: op for b, op in SDPA_BACKEND_OPS.items() if b != "math"}
SDPA_BACKWARD_OPS: dict[str, str] = {b: op + "_backward" for b, op in SDPA_OPS.items()}
#: The flash kernels' names (a CUDA GPU's).
SDPA_OP = SDPA_OPS["flash"]
SDPA_BACKWARD_OP = SDPA_BACKWARD_OPS["flash"]
#: The torch functions counted this way.
SDPA_FUNCTIONS = frozenset({torch.nn.functional.scaled_dot_product_attention})


class Counter(Protocol):
    """What a counted SDPA call needs of the count it is part of (``step_state.StepState``)."""

    paused: bool
    producer: dict[int, int]
    node_owner: dict[Any, int]
    target: KernelTarget

    def chose(self, what: str, choice: str) -> None: ...

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
    torch.utils.flop_counter's convention.  ``causal`` halves both: the fused
    kernels skip the masked blocks (the math path is not counted by this formula:
    its ops are counted one by one).  Softmax and scaling are not counted.
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


def fused_bytes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                out: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor | None = None,
                grads: Sequence[torch.Tensor] = ()) -> int:
    """Bytes a fused SDPA kernel moves: forward reads q, k, v (and a mask) and writes the
    output and the float32 log-sum-exp per query row; backward reads q, k, v, the output,
    its gradient and the log-sum-exp (and a mask) and writes the gradients.  The S x S
    scores stay on chip: none of their traffic is counted."""
    ins = [q, k, v] + ([mask] if mask is not None else [])
    if grad_out is None:
        return distinct_bytes(ins) + tensor_bytes(out) + tensor_bytes(lse)
    return (distinct_bytes([*ins, out, grad_out]) + tensor_bytes(lse)
            + sum(tensor_bytes(g) for g in grads))


class CountedSDPA(torch.autograd.Function):
    """One fused SDPA call counted as one op by :func:`sdpa_flops` (the kernel inside is not).

    Forward computes the attention (counting paused) and saves what the fused
    kernels save: query, key, value, output and the float32 log-sum-exp per
    query row; backward recomputes through torch's SDPA to get real (or meta)
    gradients, counting paused, and charges the backward formula to the layer
    whose forward made the node.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, state: Counter, backend: str, opts: dict[str, Any], q: torch.Tensor,
        k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
    ) -> torch.Tensor:
        paused, state.paused = state.paused, True
        try:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, **opts)
        finally:
            state.paused = paused
        lse = torch.empty(tuple(q.shape[:-1]), dtype=torch.float32, device=q.device)
        causal = bool(opts.get("is_causal", False))
        flops = sdpa_flops(q.shape, k.shape, v.shape, causal=causal)
        owner = state.current()
        if not state.paused:
            state.charge(owner, SDPA_OPS[backend], "forward", flops,
                         fused_bytes(q, k, v, mask, out, lse), "formula")
            state.producer[storage_key(out)] = owner
        ctx.state, ctx.opts, ctx.backend = state, opts, backend
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
        moved = fused_bytes(q, k, v, mask, out, lse, grad_out, written)
        state.charge(owner, SDPA_BACKWARD_OPS[ctx.backend], "backward_input", flops, moved,
                     "formula")
        return (None, None, None, *grads, None)


_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float64: "float64"}


def sdpa_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              opts: Mapping[str, Any]) -> SdpaCall:
    """What the backend rules read of one call's arguments."""
    return SdpaCall(
        dtype=_DTYPE_NAMES.get(q.dtype, str(q.dtype).removeprefix("torch.")),
        q_shape=tuple(int(d) for d in q.shape),
        k_shape=tuple(int(d) for d in k.shape),
        v_shape=tuple(int(d) for d in v.shape),
        has_mask=mask is not None,
        dropout_p=float(opts.get("dropout_p", 0.0) or 0.0),
        is_causal=bool(opts.get("is_causal", False)),
        requires_grad=torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)),
        enable_gqa=bool(opts.get("enable_gqa", False)),
    )


def counted_sdpa(state: Counter, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """``scaled_dot_product_attention(*args, **kwargs)``, counted as the kernel the
    count's target runs (:func:`layertime.cost.kernel_choice.sdpa_backend`): the math
    path as its aten ops, a fused kernel as one op."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    bound = dict(zip(names, args))
    bound.update(kwargs)
    q, k, v = bound.pop("query"), bound.pop("key"), bound.pop("value")
    mask = bound.pop("attn_mask", None)
    choice: SdpaChoice = sdpa_backend(state.target, sdpa_call(q, k, v, mask, bound))
    state.chose("attention", choice.describe())
    if choice.backend == "math":
        # torch's own composite, held to the math backend: it converts a boolean mask,
        # runs half-precision inputs in float32 (and casts back), then
        # _scaled_dot_product_attention_math, whose ops the dispatch mode counts.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, **bound)
    return CountedSDPA.apply(state, choice.backend, bound, q, k, v, mask)
