"""The ops ``layertime calibrate`` times alone by size (the shape grid's op curves): one
table, :data:`MEASURED_OPS`, from an aten op's name to how its inputs are built at a size
and how it is called.

These are the memory-bound ops that take most of a training step's time outside matrix
products and convolutions, and that run far from a copy's or an add's bandwidth: batch
norm, max pooling, ReLU, softmax (the SDPA math path's ``_safe_softmax`` too; the loss's
``log_softmax``), layer norm,
GELU and the pieces of GPT-2's tanh GELU, out-of-place multiply and add, each forward and
its backward where that is a kernel of its own; and ``bernoulli_`` (dropout's mask: on a
CPU torch's serial mt19937 kernel, timed per element).

Each call allocates its outputs, as a training step does (an in-place op, ``relu_``, writes
its input).  An op's work per call is what the count's formula
(:func:`layertime.cost.count.op_bytes.op_bytes`) gives that very call, so a counted op
looked up at its bytes per call lands on the measured time (``elements`` for
``bernoulli_``).  ``size`` is the elements of the op's main tensor (its input, or the input
gradient for a backward op), float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from layertime.cost.count.op_bytes import op_bytes

aten = torch.ops.aten

#: Gives a random float32 tensor of a shape on the calibrated device: the i-th call of a
#: build a view of the i-th of a few shared random buffers (no fresh random data per point).
Rand = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class OpCall:
    """One op at one size, ready to time: ``call`` runs it once as a training step does;
    ``func``, ``args`` are the aten call it makes, for the count's byte formula."""

    func: Any
    args: tuple[Any, ...]
    call: Callable[[], object]
    shape: tuple[int, ...]

    def work(self, unit: str, device: str) -> float:
        """One call's work: bytes as the count's formula gives them, or elements written."""
        out = self.func(*self.args)
        if unit == "elements":
            return float(out.numel())
        return float(op_bytes(self.func, self.args, {}, out, device)[0])


@dataclass(frozen=True)
class MeasuredOp:
    """An op timed on its own curve: the aten op, the other names of its kernel, and how
    to build a call of it at ``size`` elements."""

    name: str
    build: Callable[[int, Rand], OpCall]
    #: Other aten names timed on the same curve (the same kernel reached another way).
    aliases: tuple[str, ...] = ()
    unit: str = "bytes"

    @property
    def ops(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def _plain(func: Any, *args: Any, shape: tuple[int, ...]) -> OpCall:
    return OpCall(func, args, lambda: func(*args), shape)


def _nchw(size: int) -> tuple[int, int, int, int]:
    """An image activation of about ``size`` elements: 64 channels, square planes of at
    most 32 x 32, the batch making up the rest."""
    plane = max(1, size // 64)
    side = 1 << min(5, int(math.log2(plane)) // 2)
    return (max(1, plane // (side * side)), 64, side, side)


def _rows(size: int, width: int) -> tuple[int, int]:
    return (max(1, size // width), width)


#: Softmax rows (an attention score row: sequence 512) and layer norm rows (GPT-2's width).
SOFTMAX_WIDTH = 512
NORM_WIDTH = 768


def _batch_norm(size: int, rand: Rand) -> OpCall:
    shape = _nchw(size)
    x, c = rand(*shape), shape[1]
    w, b = torch.ones(c, device=x.device), torch.zeros(c, device=x.device)
    rm, rv = torch.zeros(c, device=x.device), torch.ones(c, device=x.device)
    return _plain(aten.native_batch_norm.default, x, w, b, rm, rv, True, 0.1, 1e-5, shape=shape)


def _batch_norm_backward(size: int, rand: Rand) -> OpCall:
    fwd = _batch_norm(size, rand)
    x, w, _, rm, rv = fwd.args[:5]
    _, mean, invstd = fwd.func(*fwd.args)
    return _plain(aten.native_batch_norm_backward.default, rand(*x.shape), x, w, rm, rv, mean,
                  invstd, True, 1e-5, [True, True, True], shape=fwd.shape)


_POOL = ([3, 3], [2, 2], [1, 1], [1, 1], False)  # ResNet's stem pooling


def _max_pool(size: int, rand: Rand) -> OpCall:
    shape = _nchw(size)
    return _plain(aten.max_pool2d_with_indices.default, rand(*shape), *_POOL, shape=shape)


def _max_pool_backward(size: int, rand: Rand) -> OpCall:
    fwd = _max_pool(size, rand)
    x = fwd.args[0]
    out, idx = fwd.func(*fwd.args)
    return _plain(aten.max_pool2d_with_indices_backward.default, rand(*out.shape), x, *_POOL,
                  idx, shape=fwd.shape)


def _relu_(size: int, rand: Rand) -> OpCall:
    x = rand(size).clone()  # written in place: not the shared buffer
    return _plain(aten.relu_.default, x, shape=(size,))


def _threshold_backward(size: int, rand: Rand) -> OpCall:
    return _plain(aten.threshold_backward.default, rand(size), rand(size).relu(), 0.0,
                  shape=(size,))


def _softmax_of(func: Any) -> Callable[[int, Rand], OpCall]:
    def build(size: int, rand: Rand) -> OpCall:
        shape = _rows(size, SOFTMAX_WIDTH)
        return _plain(func, rand(*shape), -1, False, shape=shape)
    return build


def _safe_softmax(size: int, rand: Rand) -> OpCall:
    shape = _rows(size, SOFTMAX_WIDTH)
    return _plain(aten._safe_softmax.default, rand(*shape), -1, shape=shape)


def _softmax_backward_of(func: Any, forward: Any) -> Callable[[int, Rand], OpCall]:
    def build(size: int, rand: Rand) -> OpCall:
        shape = _rows(size, SOFTMAX_WIDTH)
        y = forward(rand(*shape), -1, False)
        return _plain(func, rand(*shape), y, -1, torch.float32, shape=shape)
    return build


def _layer_norm_parts(size: int, rand: Rand) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = rand(*_rows(size, NORM_WIDTH))
    return x, torch.ones(NORM_WIDTH, device=x.device), torch.zeros(NORM_WIDTH, device=x.device)


def _layer_norm(size: int, rand: Rand) -> OpCall:
    x, w, b = _layer_norm_parts(size, rand)
    return _plain(aten.native_layer_norm.default, x, [NORM_WIDTH], w, b, 1e-5,
                  shape=tuple(x.shape))


def _layer_norm_backward(size: int, rand: Rand) -> OpCall:
    x, w, b = _layer_norm_parts(size, rand)
    _, mean, rstd = aten.native_layer_norm.default(x, [NORM_WIDTH], w, b, 1e-5)
    return _plain(aten.native_layer_norm_backward.default, rand(*x.shape), x, [NORM_WIDTH],
                  mean, rstd, w, b, [True, True, True], shape=tuple(x.shape))


def _unary(func: Any) -> Callable[[int, Rand], OpCall]:
    def build(size: int, rand: Rand) -> OpCall:
        return _plain(func, rand(size), shape=(size,))
    return build


def _binary(func: Any) -> Callable[[int, Rand], OpCall]:
    def build(size: int, rand: Rand) -> OpCall:
        return _plain(func, rand(size), rand(size), shape=(size,))
    return build


def _tanh_backward(size: int, rand: Rand) -> OpCall:
    return _plain(aten.tanh_backward.default, rand(size), rand(size).tanh(), shape=(size,))


def _bernoulli(size: int, rand: Rand) -> OpCall:
    # Dropout on a CPU: ``empty_like(input).bernoulli_(1 - p)``, a fresh mask each call.
    device = rand(1).device
    func = aten.bernoulli_.float
    return OpCall(func, (torch.empty(size, device=device), 0.9),
                  lambda: func(torch.empty(size, device=device), 0.9), (size,))


#: The ops timed alone, in the order they are measured and printed.
MEASURED_OPS: tuple[MeasuredOp, ...] = (
    MeasuredOp("aten.native_batch_norm", _batch_norm,
               ("aten._native_batch_norm_legit", "aten._native_batch_norm_legit_functional")),
    MeasuredOp("aten.native_batch_norm_backward", _batch_norm_backward),
    MeasuredOp("aten.max_pool2d_with_indices", _max_pool),
    MeasuredOp("aten.max_pool2d_with_indices_backward", _max_pool_backward),
    MeasuredOp("aten.relu_", _relu_),
    MeasuredOp("aten.threshold_backward", _threshold_backward),
    MeasuredOp("aten._softmax", _softmax_of(aten._softmax.default)),
    MeasuredOp("aten._safe_softmax", _safe_softmax),
    MeasuredOp("aten._softmax_backward_data",
               _softmax_backward_of(aten._softmax_backward_data.default, aten._softmax.default)),
    MeasuredOp("aten._log_softmax", _softmax_of(aten._log_softmax.default)),
    MeasuredOp("aten._log_softmax_backward_data",
               _softmax_backward_of(aten._log_softmax_backward_data.default,
                                    aten._log_softmax.default)),
    MeasuredOp("aten.native_layer_norm", _layer_norm),
    MeasuredOp("aten.native_layer_norm_backward", _layer_norm_backward),
    MeasuredOp("aten.gelu", _unary(aten.gelu.default)),
    MeasuredOp("aten.gelu_backward", _binary(aten.gelu_backward.default)),
    MeasuredOp("aten.tanh", _unary(aten.tanh.default)),
    MeasuredOp("aten.tanh_backward", _tanh_backward),
    MeasuredOp("aten.mul", _binary(aten.mul.Tensor)),
    MeasuredOp("aten.add", _binary(aten.add.Tensor)),
    MeasuredOp("aten.bernoulli_", _bernoulli, unit="elements"),
)
#: Sizes (elements of the main tensor, float32) by device type: 64 KiB, 1 MiB, 8 MiB, 24 MiB
#: and 64 MiB per tensor.  On a CPU the three regimes of a step's tensors: in cache, from
#: memory into reused pages (below glibc's largest mmap threshold, 32 MiB: an output gets
#: the heap memory the last one freed), and fresh pages the kernel faults in (above it).
OP_ELEMENTS = {"cpu": (2**14, 2**18, 2**21, 6 * 2**20, 2**24),
               "cuda": (2**14, 2**18, 2**21, 2**24)}
