"""The GEMM shape (M, N, K) of an op, for looking its rate up on a calibrated shape grid.

Conventions: FLOPs = 2 x M x N x K.  ``mm``/``addmm`` ``(M x K) @ (K x N)``; ``bmm`` and
``baddbmm`` of B batches are counted as one GEMM of ``B x M`` rows (the batches share
N and K).  A convolution is its implicit GEMM, per group: forward M = batch x output
positions, N = output channels / groups, K = input channels / groups x kernel positions;
its input gradient M = batch x input positions, N = input channels / groups, K = output
channels / groups x kernel positions; its weight gradient M = output channels / groups,
N = input channels / groups x kernel positions, K = batch x output positions.  Groups
multiply M (the groups run as more rows).  Other ops have no GEMM shape (None).

A convolution also has a family (:func:`conv_family_of`, ``shape_grid.conv_family``):
depthwise or dense, a 1x1 or a larger kernel, stride 1 or strided; a calibrated grid looks
its rate up among measured convolutions of its own family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from layertime.cost.count.op_work import bind_args
from layertime.results.cost.shape_grid import conv_family

aten = torch.ops.aten

Gemm = tuple[int, int, int]


def _shape(t: Any) -> tuple[int, ...] | None:
    return tuple(int(d) for d in t.shape) if isinstance(t, torch.Tensor) else None


def gemm_shape(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Gemm | None:
    """(M, N, K) of a matrix product or a convolution's forward, else None."""
    packet = func._overloadpacket
    try:
        if packet in (aten.mm, aten.addmm):
            a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
            sa, sb = _shape(a), _shape(b)
            if sa and sb and len(sa) == 2 and len(sb) == 2:
                return sa[0], sb[1], sa[1]
        elif packet in (aten.bmm, aten.baddbmm):
            a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
            sa, sb = _shape(a), _shape(b)
            if sa and sb and len(sa) == 3 and len(sb) == 3:
                return sa[0] * sa[1], sb[2], sa[2]
        elif packet is aten.convolution:
            b = bind_args(func, args, kwargs)
            x, w, out_shape = _shape(b["input"]), _shape(b["weight"]), None
            if x is None or w is None or len(x) < 3:
                return None
            groups = int(b["groups"])
            stride = list(b["stride"])
            pad = list(b["padding"])
            dil = list(b["dilation"])
            spatial = x[2:]
            n = len(spatial)
            out_shape = [
                (spatial[i] + 2 * _at(pad, i) - _at(dil, i) * (w[2 + i] - 1) - 1) // _at(stride, i)
                + 1
                for i in range(n)
            ]
            if b.get("transposed"):
                return None
            positions = math.prod(out_shape)
            taps = math.prod(w[2:])
            return x[0] * positions * groups, w[0] // groups, (x[1] // groups) * taps
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
        return None
    return None


def conv_family_of(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The family of an ``aten.convolution`` or ``aten.convolution_backward`` call, else None."""
    if func._overloadpacket not in (aten.convolution, aten.convolution_backward):
        return None
    return conv_family_bound(bind_args(func, args, kwargs))


def conv_family_bound(b: Mapping[str, Any]) -> str | None:
    """The family of a convolution (forward or backward) from its arguments bound by name
    (``bind_args``); None for a transposed one or arguments not of that form."""
    try:
        w = _shape(b["weight"])
        if w is None or b.get("transposed"):
            return None
        return conv_family(w, [int(x) for x in b["stride"]], int(b["groups"]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _at(v: Sequence[Any], i: int) -> int:
    return int(v[i] if len(v) > i else v[0])


def conv_backward_shapes(x: Any, w: Any, grad_out: Any, groups: int) -> tuple[Gemm, Gemm] | None:
    """The implicit GEMMs of a convolution's input gradient and weight gradient."""
    sx, sw, sg = _shape(x), _shape(w), _shape(grad_out)
    if sx is None or sw is None or sg is None or len(sx) < 3 or groups < 1:
        return None
    taps = math.prod(sw[2:])
    cin, cout = sx[1] // groups, sw[0] // groups
    inp = (sx[0] * math.prod(sx[2:]) * groups, cin, cout * taps)
    wgt = (cout * groups, cin * taps, sg[0] * math.prod(sg[2:]))
    return inp, wgt
