"""FLOPs, bytes, kernels and state of one optimizer step, per parameter element, per
implementation.

These follow torch's own update code (``torch/optim/sgd.py``, ``adam.py``, steady
state: momentum buffers exist), configured as :func:`layertime.workload.make_optimizer`
configures them, for the implementation the target runs
(:func:`layertime.cost.kernel_choice.optimizer_impl`):

* ``single_tensor`` (the CPU): a Python loop over the parameters, each line of the
  update one kernel per tensor;
* ``foreach`` (CUDA's default): the same passes as ``_foreach_*`` kernels, each launched
  once per chunk of tensors (:func:`layertime.cost.kernel_choice.foreach_launches`);
  the same bytes as the single-tensor loop;
* ``fused``: one kernel per group reading each tensor once and writing what changes.

Each elementwise multiply, add, subtract, divide or square root is one FLOP; an add
with ``alpha`` (``add(x, alpha=a)``, ``addcmul``, ``addcdiv``, ``lerp``) counts its
multiplies too; scalar work (bias corrections, the learning rate) is ignored.  Bytes:
each pass reads every tensor it takes and writes every tensor it makes or changes, in
elements of the parameter's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from layertime.errors import LayertimeError
from layertime.taxonomy import OPTIMIZERS
from layertime.workload.spec import MOMENTUM, WEIGHT_DECAY


@dataclass(frozen=True)
class UpdatePass:
    """One kernel of the update: what it computes, elements moved and FLOPs per parameter
    element, and its tensor lists (the ``depth`` of a foreach kernel)."""

    code: str
    moved: int
    flops: int
    depth: int


@dataclass(frozen=True)
class UpdateRule:
    """Per-element cost of one optimizer's step with one implementation."""

    optimizer: str
    flops_per_element: int
    #: Tensors read plus tensors written, counted in elements of the parameter's dtype.
    elements_moved_per_element: int
    #: Optimizer state elements kept per parameter element (momentum, Adam's m and v).
    state_per_element: int
    #: The rule, spelled out (shown in docs and JSON).
    formula: str
    #: ``single_tensor``, ``foreach`` or ``fused``.
    implementation: str = "single_tensor"
    #: The kernels, in order (one entry for a fused update).
    passes: tuple[UpdatePass, ...] = ()

    @property
    def op(self) -> str:
        """The op name the update is listed as: ``update.<optimizer>.<implementation>``."""
        return f"update.{self.optimizer}.{self.implementation}"

    def describe(self) -> str:
        impl = self.implementation.replace("_", "-")
        return (f"{impl} {self.optimizer}: {len(self.passes)} kernel(s) per "
                f"{'tensor' if self.implementation == 'single_tensor' else 'group'}, "
                f"{self.elements_moved_per_element} element moves per parameter")


def _sgd_passes() -> tuple[UpdatePass, ...]:
    """torch.optim.sgd._single_tensor_sgd / _multi_tensor_sgd, steady state."""
    out = []
    if WEIGHT_DECAY > 0:
        out.append(UpdatePass("g2 = g.add(p, alpha=wd)", 3, 2, 3))
    if MOMENTUM > 0:
        out.append(UpdatePass("buf.mul_(mu)", 2, 1, 1))
        out.append(UpdatePass("buf.add_(g2, alpha=1-dampening)", 3, 2, 2))
    out.append(UpdatePass("p.add_(buf, alpha=-lr)", 3, 2, 2))
    return tuple(out)


def _adam_passes(decoupled: bool) -> tuple[UpdatePass, ...]:
    """torch.optim.adam._single_tensor_adam / _multi_tensor_adam (not capturable, no
    amsgrad), steady state; AdamW's decoupled weight decay first."""
    out = []
    if decoupled and WEIGHT_DECAY > 0:
        out.append(UpdatePass("p.mul_(1 - lr*wd)", 2, 1, 1))
    out += [
        UpdatePass("m.lerp_(g, 1-b1)", 3, 3, 2),
        UpdatePass("v.mul_(b2)", 2, 1, 1),
        UpdatePass("v.addcmul_(g, g, value=1-b2)", 3, 3, 2),
        UpdatePass("s = v.sqrt()", 2, 1, 2),
        UpdatePass("s = s / sqrt(bc2)", 2, 1, 1),
        UpdatePass("s.add_(eps)", 2, 1, 1),
        UpdatePass("p.addcdiv_(m, s, value=-step)", 4, 3, 3),
    ]
    return tuple(out)


def update_rule(optimizer: str, implementation: str = "single_tensor") -> UpdateRule:
    """The update rule of the ``optimizer`` that ``make_optimizer`` builds, run by
    ``implementation``.

    SGD (single-tensor or foreach): ``g2 = g + wd*p`` (a new tensor: reads g, p, writes
    g2), ``buf *= mu``, ``buf += g2``, ``p -= lr*buf``: 3 + 2 + 3 + 3 = 11 element moves
    and 7 FLOPs per parameter in 4 kernels; fused: reads p, g, buf, writes p, buf (5).
    Adam: ``m.lerp_`` (3 moves), ``v *= b2`` (2), ``v += (1-b2) g*g`` (3), ``s = sqrt(v)``
    (2), ``s /= sqrt(bc2)`` (2), ``s += eps`` (2), ``p.addcdiv_(m, s)`` (4): 18 moves, 13
    FLOPs, 7 kernels; AdamW adds ``p *= 1 - lr*wd`` (2 moves, 1 FLOP); fused: reads p, g,
    m, v, writes p, m, v (7).
    """
    if implementation not in ("single_tensor", "foreach", "fused"):
        raise LayertimeError(f"unknown optimizer implementation {implementation!r}")
    opt = optimizer
    if opt == "sgd":
        wd, mom = WEIGHT_DECAY > 0, MOMENTUM > 0
        passes = _sgd_passes()
        formula = (("g += wd*p; " if wd else "")
                   + ("buf = mu*buf + g; p -= lr*buf" if mom else "p -= lr*g"))
        state = 1 if mom else 0
        fused_moved = 5 if mom else 3
    elif opt in ("adam", "adamw"):
        passes = _adam_passes(decoupled=opt == "adamw")
        formula = (("p *= 1-lr*wd; " if opt == "adamw" and WEIGHT_DECAY > 0 else "")
                   + "m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g*g; "
                   "p -= step*m/(sqrt(v)/sqrt(bc2)+eps)")
        state = 2
        fused_moved = 7
    else:
        raise LayertimeError(f"unknown optimizer {opt!r} (choose {', '.join(OPTIMIZERS)})")
    flops = sum(p.flops for p in passes)
    if implementation == "fused":
        one = UpdatePass(f"fused {opt}", fused_moved, flops, 2 + state)
        return UpdateRule(opt, flops, fused_moved, state, formula, implementation, (one,))
    moved = sum(p.moved for p in passes)
    return UpdateRule(opt, flops, moved, state, formula, implementation, passes)
