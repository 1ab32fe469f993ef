"""Fit per-kind efficiencies so that the roofline reproduces a measured run.

Pure: a measured :class:`~layertime.result.Run`, the counted
:class:`~layertime.cost.result.CostResult` of the same configuration and a
:class:`~layertime.cost.devices.DeviceProfile` (the peaks that
``layertime calibrate`` measured) in, an :class:`EfficiencyFit` out.  Nothing
is measured here and nothing is invented: every fitted number is a measured
time divided into counted work.

The rule (also in ``docs/cost.md``).  For each kind, its measured time is the
forward and backward time of its rows (the ``loss`` phase for the loss); the
optimizer update of all rows is the kind ``update``.  With the roofline's
per-op time ``max(FLOPs / (peak x c), bytes / (bandwidth x m))``:

* a kind with counted FLOPs gets the compute efficiency ``c`` that makes the
  sum over its ops equal its measured time (its memory efficiency ``m`` kept);
* a kind without counted FLOPs (batch norm, ReLU, pooling, dropout: no FLOP
  formula, so compute efficiency cannot change its prediction) and the update
  get the memory efficiency ``m`` instead;
* the sum is continuous and decreasing in the efficiency, so the solution is
  unique and found exactly, piece by piece of the ``max``;
* a kind under ``min_share`` of the profiled step, with no measured time or
  nothing counted keeps its default (status ``default``, with the reason);
  one measured faster than the roofline allows at efficiency 1 (or than its
  other bound alone) gets 1 (status ``capped``): an efficiency is at most 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layertime.cost.devices import DeviceProfile
from layertime.cost.result import CostResult, OpWork
from layertime.cost.roofline import Efficiency, MathMode, math_peaks
from layertime.errors import LayertimeError
from layertime.result import KINDS, Run

#: What a kind's entry ends as: fitted to the measurement, capped at 1, or left at the default.
FIT_STATUSES: tuple[str, ...] = ("fitted", "capped", "default")
#: Kinds under this share of the profiled step keep their default efficiency.
DEFAULT_MIN_SHARE = 0.01
#: The pseudo-kind of the optimizer update (as in ``Efficiency``).
UPDATE = "update"


@dataclass(frozen=True)
class KindFit:
    """The fit of one kind: what was measured, which efficiency, and what became of it."""

    kind: str
    #: "compute" or "memory": the efficiency of this kind the fit sets.
    target: str
    measured_s: float
    #: measured_s over the run's profiled step.
    step_share: float
    #: The efficiency before the fit (the default, or the profile's own).
    default: float
    #: The efficiency after: fitted, capped at 1, or equal to ``default``.
    efficiency: float
    #: One of FIT_STATUSES.
    status: str
    #: Why a kind kept its default or was capped ("" when fitted).
    reason: str
    #: Roofline time of the kind's ops before and after the fit.
    predicted_before_s: float
    predicted_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "measured_s": self.measured_s,
            "step_share": self.step_share,
            "default": self.default,
            "efficiency": self.efficiency,
            "status": self.status,
            "reason": self.reason,
            "predicted_before_s": self.predicted_before_s,
            "predicted_s": self.predicted_s,
        }


@dataclass(frozen=True)
class EfficiencyFit:
    """Efficiencies fitted to one measured run, per kind, with how each was obtained."""

    profile: str
    #: The run fitted to, e.g. "alexnet, batch 64, cpu, float32".
    run_label: str
    min_share: float
    kinds: tuple[KindFit, ...]

    def fitted(self, target: str) -> dict[str, float]:
        """The efficiencies the fit set (fitted or capped) for ``target`` (compute or memory)."""
        return {
            k.kind: k.efficiency
            for k in self.kinds
            if k.target == target and k.status != "default"
        }

    @property
    def source(self) -> str:
        """How the efficiencies were made, for ``Prediction.efficiency_source``."""
        done = [k.kind for k in self.kinds if k.status != "default"]
        kept = [k.kind for k in self.kinds if k.status == "default"]
        text = f"fitted to a measured run ({self.run_label}): " + (", ".join(done) or "no kind")
        if kept:
            text += f"; defaults (uncalibrated) for {', '.join(kept)} and any other kind"
        else:
            text += "; defaults (uncalibrated) for any other kind"
        return text

    def efficiency(self, base: Efficiency | None = None) -> Efficiency:
        """``base`` (the defaults when None) with the fitted kinds replaced."""
        return (base or Efficiency()).overridden(
            self.fitted("compute"), self.fitted("memory"), self.source
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "run": self.run_label,
            "min_share": self.min_share,
            "source": self.source,
            "compute_efficiency": self.fitted("compute"),
            "memory_efficiency": self.fitted("memory"),
            "kinds": [k.to_dict() for k in self.kinds],
        }


# -- the roofline of a set of ops, split into its two bounds ------------------------
@dataclass(frozen=True)
class _Bounds:
    """Per op: compute seconds at efficiency 1 and memory seconds at efficiency 1."""

    compute_s: tuple[float, ...]
    memory_s: tuple[float, ...]

    def time(self, compute_eff: float, memory_eff: float) -> float:
        """The roofline's time of these ops at the given efficiencies (as ``predict`` sums it)."""
        return sum(
            max(c / compute_eff if c else 0.0, m / memory_eff if m else 0.0)
            for c, m in zip(self.compute_s, self.memory_s)
        )

    @property
    def empty(self) -> bool:
        return not any(self.compute_s) and not any(self.memory_s)


def _bounds(ops: Iterable[OpWork], profile: DeviceProfile, peaks: Mapping[str, str]) -> _Bounds:
    compute: list[float] = []
    memory: list[float] = []
    for w in ops:
        peak = profile.peak_flops_per_s(peaks.get(w.math, "fp32"))
        assert peak is not None  # math_peaks only names precisions the profile has
        compute.append(w.flops / peak if w.flops else 0.0)
        memory.append(w.bytes_moved / profile.memory_bytes_per_s if w.bytes_moved else 0.0)
    return _Bounds(tuple(compute), tuple(memory))


def solve_scale(a: Sequence[float], b: Sequence[float], target: float) -> float | None:
    """The ``x > 0`` with ``sum(max(a_i / x, b_i)) == target``, exactly; None when none exists.

    The sum is continuous and non-increasing in ``x``: infinite at 0 when some
    ``a_i > 0``, ``sum(b)`` at infinity.  Between two consecutive breakpoints
    ``a_i / b_i`` the set of ops on their ``a`` side is fixed, so the sum is
    ``A / x + B`` there and ``x = A / (target - B)``.  None when every ``a_i``
    is 0 or ``target <= sum(b)`` (no ``x`` is fast enough).
    """
    if not target > 0 or not any(ai > 0 for ai in a) or target <= sum(b):
        return None

    def total(x: float) -> float:
        return sum(max(ai / x, bi) for ai, bi in zip(a, b))

    # Breakpoints that underflow to 0 or overflow to inf are no breakpoints at all.
    points = sorted({p for ai, bi in zip(a, b) if ai > 0 and bi > 0
                     for p in (ai / bi,) if 0 < p < math.inf})
    edges = [0.0, *points, math.inf]
    for lo, hi in zip(edges, edges[1:]):
        # On (lo, hi] an op is on its a side when its breakpoint is >= hi.
        if hi != math.inf and total(hi) > target:
            continue
        big_a = sum(ai for ai, bi in zip(a, b) if ai > 0 and (bi == 0 or ai / bi >= hi))
        big_b = sum(bi for ai, bi in zip(a, b) if not (ai > 0 and (bi == 0 or ai / bi >= hi)))
        if big_a <= 0 or target <= big_b:
            return None
        return big_a / (target - big_b)
    return None  # pragma: no cover (the last interval always answers)


def _kind_order(kinds: Iterable[str]) -> list[str]:
    ks = set(kinds)
    return [k for k in KINDS if k in ks] + sorted(ks - set(KINDS) - {UPDATE}) + (
        [UPDATE] if UPDATE in ks else []
    )


def _check_pair(run: Run, cost: CostResult) -> None:
    if run.amp:
        raise LayertimeError(
            f"cannot fit to an --amp {run.amp} run: the cost model counts one dtype"
        )
    for what, measured, counted in (
        ("batch size", run.batch_size, cost.batch_size),
        ("input shape", tuple(run.input_shape), tuple(cost.input_shape)),
        ("dtype", run.dtype, cost.dtype),
        ("optimizer", run.optimizer, cost.optimizer),
    ):
        if measured != counted:
            raise LayertimeError(
                f"the run and the cost differ in {what} ({measured} measured, {counted} counted)"
            )


def fit_efficiency(
    run: Run,
    cost: CostResult,
    profile: DeviceProfile,
    *,
    min_share: float = DEFAULT_MIN_SHARE,
    mode: MathMode = MathMode(),
) -> EfficiencyFit:
    """Efficiencies per kind that make ``predict(cost, profile)`` reproduce ``run`` (module doc).

    ``profile`` gives the peaks (and any efficiencies of its own, which the
    fit starts from); ``cost`` must count the run's configuration.
    """
    if not 0 <= min_share < 1:
        raise LayertimeError(f"min_share must be in [0, 1), not {min_share}")
    _check_pair(run, cost)
    base = Efficiency().overridden(profile.compute_efficiency, profile.memory_efficiency, "")
    peaks = math_peaks(profile, cost.dtype, mode)
    step_s = run.profiled_step_s

    measured: dict[str, float] = {}
    for r in run.layers:
        measured[r.kind] = measured.get(r.kind, 0.0) + r.forward_s + r.backward_s
    if run.phases.loss_s:
        measured["loss"] = measured.get("loss", 0.0) + run.phases.loss_s
    update_s = sum(r.update_s for r in run.layers)
    if update_s:
        measured[UPDATE] = update_s

    ops: dict[str, list[OpWork]] = {}
    for row in cost.rows:
        for w in row.ops:
            ops.setdefault(UPDATE if w.phase == "update" else row.kind, []).append(w)

    fits: list[KindFit] = []
    for kind in _kind_order(set(measured) | set(ops)):
        bounds = _bounds(ops.get(kind, ()), profile, peaks)
        t_s = measured.get(kind, 0.0)
        share = t_s / step_s if step_s else 0.0
        c_eff, m_eff = base.compute_for(kind), base.memory_for(kind)
        has_flops = any(bounds.compute_s)
        target = "compute" if has_flops and kind != UPDATE else "memory"
        default = c_eff if target == "compute" else m_eff
        before = bounds.time(c_eff, m_eff)
        reason = ""
        if bounds.empty:
            reason = "nothing counted for it"
        elif not t_s > 0:
            reason = "no measured time"
        elif share < min_share:
            reason = f"{share:.2%} of the step, under {min_share:.0%}"
        if reason:
            fits.append(KindFit(kind, target, t_s, share, default, default, "default", reason,
                                before, before))
            continue
        if target == "compute":
            a = bounds.compute_s
            b = [m / m_eff if m else 0.0 for m in bounds.memory_s]
        else:
            a = bounds.memory_s
            b = [c / c_eff if c else 0.0 for c in bounds.compute_s]
        x = solve_scale(a, b, t_s)
        if x is None or x > 1:
            status, value = "capped", 1.0
            other = "memory" if target == "compute" else "compute"
            reason = (f"faster than the roofline allows (would need {x:.3g})" if x is not None
                      else f"faster than its {other} bound alone allows")
        else:
            status, value = "fitted", x
        after = bounds.time(value, m_eff) if target == "compute" else bounds.time(c_eff, value)
        fits.append(KindFit(kind, target, t_s, share, default, value, status, reason,
                            before, after))
    label = f"{run.model}, batch {run.batch_size}, {run.device}, {run.dtype}"
    return EfficiencyFit(profile.key, label, min_share, tuple(fits))
