"""FLOPs, bytes and state of one optimizer step, per parameter element.

These follow torch's own update rules (``torch.optim.SGD``, ``Adam``,
``AdamW``, single-tensor or foreach, steady state: momentum buffers exist),
configured as :func:`layertime.workload.make_optimizer` configures them.
Each elementwise multiply, add, subtract, divide or square root is one FLOP;
a fused multiply-add (``add_(x, alpha=a)``) is two; scalar work (bias
corrections, the learning rate schedule) is ignored.  Bytes follow the
minimum-traffic model: each tensor the rule touches is read once and each
tensor it changes is written once.
"""

from __future__ import annotations

from dataclasses import dataclass

from layertime.errors import LayertimeError
from layertime.taxonomy import OPTIMIZERS
from layertime.workload.spec import MOMENTUM, WEIGHT_DECAY


@dataclass(frozen=True)
class UpdateRule:
    """Per-element cost of one optimizer's step."""

    optimizer: str
    flops_per_element: int
    #: Tensors read plus tensors written, counted in elements of the parameter's dtype.
    elements_moved_per_element: int
    #: Optimizer state elements kept per parameter element (momentum, Adam's m and v).
    state_per_element: int
    #: The rule, spelled out (shown in docs and JSON).
    formula: str


def update_rule(optimizer: str) -> UpdateRule:
    """The update rule of the ``optimizer`` that ``make_optimizer`` builds.

    SGD: ``g += wd*p`` (2 FLOPs when wd > 0), ``buf = mu*buf + g`` (2, when
    mu > 0), ``p -= lr*buf`` (2); reads p, g (and buf), writes p (and buf).
    Adam: ``m.lerp_(g, 1-b1)`` (3), ``v = b2*v + (1-b2)*g*g`` (4),
    ``denom = sqrt(v)/sqrt(bc2) + eps`` (3), ``p -= step*m/denom`` (3) = 13;
    reads p, g, m, v, writes p, m, v.  AdamW adds ``p *= 1 - lr*wd`` (1).
    """
    opt = optimizer
    if opt == "sgd":
        wd = WEIGHT_DECAY > 0
        mom = MOMENTUM > 0
        flops = 2 * wd + 2 * mom + 2
        moved = 5 if mom else 3
        formula = (
            ("g += wd*p; " if wd else "")
            + ("buf = mu*buf + g; p -= lr*buf" if mom else "p -= lr*g")
        )
        return UpdateRule("sgd", flops, moved, 1 if mom else 0, formula)
    if opt == "adam":
        return UpdateRule(
            "adam",
            13,
            7,
            2,
            "m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g; p -= step*m/(sqrt(v)/sqrt(bc2)+eps)",
        )
    if opt == "adamw":
        flops = 14 if WEIGHT_DECAY > 0 else 13
        return UpdateRule(
            "adamw",
            flops,
            7,
            2,
            ("p *= 1-lr*wd; " if WEIGHT_DECAY > 0 else "")
            + "m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g; p -= step*m/(sqrt(v)/sqrt(bc2)+eps)",
        )
    raise LayertimeError(f"unknown optimizer {opt!r} (choose {', '.join(OPTIMIZERS)})")
