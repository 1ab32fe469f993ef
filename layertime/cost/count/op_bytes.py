"""The bytes one aten op's kernel moves to and from memory, one formula per op.

Like ``torch.utils.flop_counter``'s FLOP formulas, each rule is a pure function of
the op's arguments and results, registered in one table (:data:`RULES`) by op name,
or by what the op is (torch's ``pointwise`` and ``reduction`` tags).  Conventions:

* a pass of a kernel over a tensor reads (or writes) each of its distinct elements
  once; an expanded (broadcast) input counts its distinct elements once;
* a pass over data that stays in cache within one kernel (the rows of a softmax or a
  layer norm, the channel slices of a batch norm's statistics) is not counted again;
* what a kernel only reads the shape of (``nll_loss``'s input beyond the picked
  elements, ``embedding``'s table beyond the looked-up rows, the input of an average
  pool's backward) is not counted;
* a kernel that fills its output before scattering into it (``nll_loss_backward``,
  ``embedding_dense_backward``, ``max_pool2d``'s backward, ``select_backward``) writes
  the output once for the fill, then the scattered elements.

Where the CPU's and CUDA's kernels differ (layer norm's backward), the rule takes the
target device (``"cpu"`` or ``"cuda"``).  An op without a rule falls back to
:func:`operands_once` (each distinct input and output once) and is reported as
``"default"``, so that tests can list the ops still counted by the blanket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from layertime.cost.count.op_work import bind_args, distinct_bytes, tensor_bytes, tensors_in

#: A rule: (bound arguments by schema name, the op's tensor inputs, its tensor
#: outputs, the target device) -> bytes moved.
Rule = Callable[[Mapping[str, Any], Sequence[torch.Tensor], Sequence[torch.Tensor], str], int]


def operands_once(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                  outs: Sequence[torch.Tensor], device: str) -> int:
    """Each distinct input read once, each output written once (an in-place op's
    argument is read and written)."""
    return distinct_bytes(ins) + distinct_bytes(outs)


def outputs_only(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                 outs: Sequence[torch.Tensor], device: str) -> int:
    """A fill or a random draw: its output written once, nothing read."""
    return distinct_bytes(outs)


def nothing(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
            outs: Sequence[torch.Tensor], device: str) -> int:
    """An alias of its input (``_unsafe_view``): no data moved."""
    return 0


def copy_into(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
              outs: Sequence[torch.Tensor], device: str) -> int:
    """``copy_(self, src)``: reads ``src``, writes ``self`` (its old values are not read)."""
    return tensor_bytes(b["src"]) + tensor_bytes(b["self"])


def _n(t: Any) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def batch_norm(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
               outs: Sequence[torch.Tensor], device: str) -> int:
    """``native_batch_norm``.  Training: the statistics pass reads the input (CPU:
    ``batch_norm_cpu_collect_stats``, its mean and variance loops over one channel's slice;
    CUDA: ``batch_norm_stats``, Welford in one pass), then the transform reads it again and
    writes the output: 2 reads and 1 write of the input's size, plus the per-channel
    vectors.  Eval: 1 read and 1 write."""
    x = b["input"]
    per_channel = sum(tensor_bytes(t) for t in ins if t is not x) + sum(
        tensor_bytes(t) for t in outs[1:])
    reads = 2 if b.get("training") else 1
    return reads * tensor_bytes(x) + tensor_bytes(outs[0]) + per_channel


def batch_norm_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                        outs: Sequence[torch.Tensor], device: str) -> int:
    """``native_batch_norm_backward`` in training: a reduction pass reads the output's
    gradient and the input (sum of dy and of dy * (x - mean)), then the input-gradient
    pass reads both again and writes dx.  CUDA runs the passes as two kernels
    (``batch_norm_backward_reduce``, ``batch_norm_backward_elemt``): 2 + 2 reads and 1
    write.  The CPU (``batch_norm_cpu_backward_contiguous_impl``) runs both passes in one
    loop per channel, the second over the channel's slice of dy and x that the first just
    read (in cache while 2 x N x H x W elements fit): 1 + 1 reads and 1 write.  Without an
    input gradient, the reduction only."""
    dy, x = b["grad_out"], b["input"]
    mask = list(b.get("output_mask") or (True, True, True))
    big = tensor_bytes(dy) + tensor_bytes(x)
    small = sum(tensor_bytes(t) for t in ins if t is not dy and t is not x)
    small += sum(tensor_bytes(t) for t, m in zip(outs[1:], mask[1:])
                 if m and isinstance(t, torch.Tensor))
    if not mask[0]:
        return big + small
    passes = 2 if b.get("train", True) and device == "cuda" else 1
    return passes * big + tensor_bytes(outs[0]) + small


def layer_norm(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
               outs: Sequence[torch.Tensor], device: str) -> int:
    """``native_layer_norm``: one row at a time (the row stays in cache for its moments):
    the input read once, the output written once, weight, bias, mean and rstd."""
    return operands_once(b, ins, outs, device)


def layer_norm_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                        outs: Sequence[torch.Tensor], device: str) -> int:
    """``native_layer_norm_backward``.  CPU (``LayerNormBackwardKernelImpl``): one pass per
    row reads dy and x and writes dx, accumulating the weight and bias gradients on the
    way.  CUDA: the input-gradient kernel reads dy and x and writes dx, and a second
    kernel (``GammaBetaBackward``) reads dy and x again for the weight and bias
    gradients."""
    dy, x = b["grad_out"], b["input"]
    mask = list(b.get("output_mask") or (True, True, True))
    base = operands_once(b, ins, [t for t, m in zip(outs, mask) if m and isinstance(t,
                                                                              torch.Tensor)],
                         device)
    if device == "cuda" and mask[0] and (mask[1] or mask[2]):
        base += tensor_bytes(dy) + tensor_bytes(x)
    return base


def softmax_forward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                    outs: Sequence[torch.Tensor], device: str) -> int:
    """``_softmax``, ``_log_softmax``: per row (in cache) the maximum,
    the sum of exponentials and the write: the input read once, the output written once."""
    return tensor_bytes(b["self"]) + distinct_bytes(outs)


def safe_softmax(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                 outs: Sequence[torch.Tensor], device: str) -> int:
    """``_safe_softmax`` (the math path's softmax; a composite in ATen's ``attention.cpp``):
    ``softmax`` (x read, y written), ``x == -inf`` (x read, a bool per element written),
    ``all`` over the row (the bools read, a bool per row written), ``where(rows, 0, y)``
    (the row bools and y read, the result written)."""
    x = b["self"]
    dim = int(b.get("dim", -1))
    rows = x.numel() // max(1, int(x.shape[dim])) if x.dim() else 1
    return 2 * tensor_bytes(x) + 3 * distinct_bytes(outs) + 2 * x.numel() + 2 * rows


def softmax_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                     outs: Sequence[torch.Tensor], device: str) -> int:
    """``_softmax_backward_data``, ``_log_softmax_backward_data``: per row the sum of
    dy * y (or dy), then dx: dy and the output read once, dx written once."""
    return tensor_bytes(b["grad_output"]) + tensor_bytes(b["output"]) + distinct_bytes(outs)


def nll_loss(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
             outs: Sequence[torch.Tensor], device: str) -> int:
    """``nll_loss_forward``: reads each target and the one log-probability it picks (not
    the whole input), and the class weights; writes the loss and the total weight."""
    x, target = b["self"], b["target"]
    picked = _n(target) * x.element_size()
    weight = b.get("weight")
    return tensor_bytes(target) + picked + (tensor_bytes(weight) if isinstance(
        weight, torch.Tensor) else 0) + distinct_bytes(outs)


def nll_loss_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                      outs: Sequence[torch.Tensor], device: str) -> int:
    """``nll_loss_backward``: the input gradient filled with zeros (written once), then one
    element per target written; the targets and the output's gradient read."""
    gi = outs[0]
    target = b["target"]
    return (tensor_bytes(gi) + _n(target) * gi.element_size() + tensor_bytes(target)
            + tensor_bytes(b["grad_output"]) + tensor_bytes(b["total_weight"]))


def embedding(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
              outs: Sequence[torch.Tensor], device: str) -> int:
    """``embedding`` (an ``index_select`` of rows): the indices and the rows looked up
    read, the output written; the rest of the table is not touched."""
    return tensor_bytes(b["indices"]) + 2 * distinct_bytes(outs)


def embedding_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                       outs: Sequence[torch.Tensor], device: str) -> int:
    """``embedding_dense_backward``: the dense weight gradient filled with zeros (the whole
    table written), then each looked-up row of the output's gradient added into its row
    (read the gradient; read and write the rows touched, at most one per index)."""
    gw, go, idx = outs[0], b["grad_output"], b["indices"]
    rows = min(_n(idx), int(gw.shape[0])) if gw.dim() >= 1 else 0
    row_bytes = (tensor_bytes(gw) // int(gw.shape[0])) if gw.dim() >= 1 and gw.shape[0] else 0
    return tensor_bytes(gw) + tensor_bytes(go) + tensor_bytes(idx) + 2 * rows * row_bytes


def gather(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
           outs: Sequence[torch.Tensor], device: str) -> int:
    """``gather``: the index read, the picked elements read, the output written."""
    return tensor_bytes(b["index"]) + 2 * distinct_bytes(outs)


def fill_then_scatter(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                      outs: Sequence[torch.Tensor], device: str) -> int:
    """``max_pool2d_with_indices_backward``: the input gradient zeroed (written once),
    then each output gradient element and its index read and added into its place
    (CPU: a scatter; CUDA: a gather per input element, as many bytes)."""
    gi = outs[0]
    go, idx = b["grad_output"], b["indices"]
    return 2 * tensor_bytes(gi) + tensor_bytes(go) + tensor_bytes(idx)


def fill_then_copy(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                   outs: Sequence[torch.Tensor], device: str) -> int:
    """``select_backward``, ``slice_backward``: the input gradient zeroed, then the
    output's gradient copied into its slice."""
    go = b["grad_output"]
    return distinct_bytes(outs) + 2 * tensor_bytes(go)


def pool_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                  outs: Sequence[torch.Tensor], device: str) -> int:
    """``_adaptive_avg_pool2d_backward``, ``avg_pool2d_backward``: the output's gradient
    read, the input's gradient written (the input itself only gives the shape)."""
    return tensor_bytes(b["grad_output"]) + distinct_bytes(outs)


def matmul(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
           outs: Sequence[torch.Tensor], device: str) -> int:
    """``mm``, ``addmm``, ``bmm``, ``baddbmm``: a blocked GEMM reads each operand once and
    writes the output once (operands that do not fit in cache are re-read per block; not
    counted)."""
    return operands_once(b, ins, outs, device)


def convolution(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                outs: Sequence[torch.Tensor], device: str) -> int:
    """``convolution`` (oneDNN on the CPU, cuDNN's implicit GEMM on CUDA): input, weight
    and bias read once, output written once (an explicit im2col buffer is not counted)."""
    return operands_once(b, ins, outs, device)


def convolution_backward(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                         outs: Sequence[torch.Tensor], device: str) -> int:
    """``convolution_backward`` as two kernels (``step_state._conv_backward`` splits it the
    same way): the input gradient reads grad_out and the weight and writes grad_input; the
    weight gradient reads grad_out and the input and writes grad_weight (and grad_bias)."""
    mask = list(b.get("output_mask") or (True, True, True))
    go, x, w = b["grad_output"], b["input"], b["weight"]
    total = 0
    if mask[0] and outs and isinstance(outs[0], torch.Tensor):
        total += tensor_bytes(go) + tensor_bytes(w) + tensor_bytes(outs[0])
    if mask[1] or mask[2]:
        total += tensor_bytes(go) + tensor_bytes(x)
        total += sum(tensor_bytes(t) for t, m in zip(outs[1:], mask[1:])
                     if m and isinstance(t, torch.Tensor))
    return total


def fused_attention(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
                    outs: Sequence[torch.Tensor], device: str) -> int:
    """A fused SDPA kernel (flash, memory-efficient, cuDNN, the CPU's flash) and its
    backward: q, k, v (mask, output, its gradient, log-sum-exp) read once, results written
    once; the S x S scores stay on chip (``attention.fused_bytes`` counts the same)."""
    return operands_once(b, ins, outs, device)


def copying(b: Mapping[str, Any], ins: Sequence[torch.Tensor],
            outs: Sequence[torch.Tensor], device: str) -> int:
    """``cat``, ``constant_pad_nd``, ``clone`` ...: each input read once, the output
    written once."""
    return operands_once(b, ins, outs, device)


#: The rule of each op by name (``aten.<name>``).
RULES: dict[str, Rule] = {
    "aten.native_batch_norm": batch_norm,
    "aten._native_batch_norm_legit": batch_norm,
    "aten._native_batch_norm_legit_functional": batch_norm,
    "aten.native_batch_norm_backward": batch_norm_backward,
    "aten.native_layer_norm": layer_norm,
    "aten.native_layer_norm_backward": layer_norm_backward,
    "aten._softmax": softmax_forward,
    "aten._log_softmax": softmax_forward,
    "aten._safe_softmax": safe_softmax,
    "aten._softmax_backward_data": softmax_backward,
    "aten._log_softmax_backward_data": softmax_backward,
    "aten.nll_loss_forward": nll_loss,
    "aten.nll_loss_backward": nll_loss_backward,
    "aten.embedding": embedding,
    "aten.embedding_dense_backward": embedding_backward,
    "aten.gather": gather,
    "aten.max_pool2d_with_indices_backward": fill_then_scatter,
    "aten.select_backward": fill_then_copy,
    "aten.slice_backward": fill_then_copy,
    "aten._adaptive_avg_pool2d_backward": pool_backward,
    "aten.avg_pool2d_backward": pool_backward,
    "aten.mm": matmul,
    "aten.addmm": matmul,
    "aten.bmm": matmul,
    "aten.baddbmm": matmul,
    "aten.convolution": convolution,
    "aten.convolution_backward": convolution_backward,
    **{f"aten._scaled_dot_product_{k}{suffix}": fused_attention
       for k in ("flash_attention", "efficient_attention", "cudnn_attention",
                 "flash_attention_for_cpu") for suffix in ("", "_backward")},
    "aten.copy_": copy_into,
    "aten.bernoulli_": outputs_only,
    "aten.zeros": outputs_only,
    "aten.ones": outputs_only,
    "aten.zeros_like": outputs_only,
    "aten.ones_like": outputs_only,
    "aten.full": outputs_only,
    "aten.full_like": outputs_only,
    "aten.fill_": outputs_only,
    "aten.zero_": outputs_only,
    "aten.arange": outputs_only,
    "aten.scalar_tensor": outputs_only,
    "aten.new_zeros": outputs_only,
    "aten._unsafe_view": nothing,
    "aten.cat": copying,
    "aten.stack": copying,
    "aten.constant_pad_nd": copying,
    "aten.clone": copying,
    "aten._to_copy": copying,
    "aten.tril": copying,
    "aten.triu": copying,
    "aten.max_pool2d_with_indices": copying,
    "aten._adaptive_avg_pool2d": copying,
    "aten.avg_pool2d": copying,
    "aten.index_select": gather,
    "aten.where": operands_once,
}
#: Ops outside the table counted by what they are: pointwise ops (``torch.Tag.pointwise``:
#: each distinct input read and each output written once, an in-place op's argument read
#: and written) and reductions (``torch.Tag.reduction``: the input read, the result
#: written).  Activations' backward ops without the tag are pointwise too.
POINTWISE_EXTRA: frozenset[str] = frozenset(
    "aten." + n for n in (
        "hardswish_ hardswish hardswish_backward hardsigmoid_ hardsigmoid_backward "
        "silu_ silu_backward sigmoid_backward tanh_backward gelu_backward elu_backward "
        "leaky_relu_backward threshold_backward hardtanh_backward softplus_backward"
    ).split()
)
_TAGGED: dict[str, str] = {"pointwise": "pointwise", "reduction": "reduction"}


def rule_of(func: Any) -> tuple[Rule, str]:
    """The rule for an aten op and its name (the op's, ``pointwise``, ``reduction``, or
    ``default`` when none applies)."""
    name = str(func._overloadpacket)
    rule = RULES.get(name)
    if rule is not None:
        return rule, name
    if name in POINTWISE_EXTRA:
        return operands_once, "pointwise"
    for tag in getattr(func, "tags", ()):
        label = _TAGGED.get(str(tag).rsplit(".", 1)[-1])
        if label is not None:
            return operands_once, label
    return operands_once, "default"


def op_bytes(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any,
             device: str) -> tuple[int, str]:
    """Bytes the kernel of one aten op call moves on ``device``, and the rule's name."""
    rule, label = rule_of(func)
    b = bind_args(func, args, kwargs)
    ins = tensors_in((args, kwargs))
    outs = tensors_in(out)
    return int(rule(b, ins, outs, device)), label
