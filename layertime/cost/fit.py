"""Fit per-kind efficiencies so that the roofline reproduces a measured run.

Pure: a measured :class:`~layertime.results.run.Run`, the counted
:class:`~layertime.results.cost.estimate.CostResult` of the same configuration and a
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
  other bound alone) gets 1 (status ``capped``): an efficiency is at most 1;
* the profile's kernel latency, times the kernels the kind's ops launch, is
  the same at any efficiency: it is taken off the measured time first.

:func:`fit_layer_times` fits the kernel latency too, to measured per-layer
times (a published log, say): for each latency tried, every kind's
efficiency is solved as above over all the models given, and the latency
kept is the one whose predictions have the smallest mean squared
log(predicted / measured) over the rows above ``min_share`` of their
model's measured time.  Rows that launch many kernels for their work pin
the latency (Caffe's per-sample convolutions of few channels), rows with
much work per kernel the efficiencies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from layertime.cost.devices import DeviceProfile
from layertime.cost.roofline import Efficiency, MathMode, kernels_launched, math_peaks
from layertime.errors import LayertimeError
from layertime.results.cost.calibration import EfficiencyFit, KindFit
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import OpWork
from layertime.results.run import Run
from layertime.taxonomy import KINDS

#: Kinds under this share of the profiled step keep their default efficiency.
DEFAULT_MIN_SHARE = 0.01
#: The pseudo-kind of the optimizer update (as in ``Efficiency``).
UPDATE = "update"


# -- the roofline of a set of ops, split into its two bounds ------------------------
@dataclass(frozen=True)
class _Bounds:
    """Per op: compute seconds at efficiency 1, memory seconds at efficiency 1, and the
    number of kernels it launches (each costs the kernel latency, whatever the efficiencies)."""

    compute_s: tuple[float, ...]
    memory_s: tuple[float, ...]
    kernels: tuple[int, ...]

    def time(self, compute_eff: float, memory_eff: float, latency_s: float = 0.0) -> float:
        """The roofline's time of these ops at the given efficiencies (as ``predict`` sums it)."""
        return sum(
            max(c / compute_eff if c else 0.0, m / memory_eff if m else 0.0) + k * latency_s
            for c, m, k in zip(self.compute_s, self.memory_s, self.kernels)
        )

    def launch_s(self, latency_s: float) -> float:
        return sum(self.kernels) * latency_s

    @property
    def empty(self) -> bool:
        return not any(self.compute_s) and not any(self.memory_s)


def _bounds(
    ops: Iterable[tuple[str, OpWork]],
    profile: DeviceProfile,
    peaks: Mapping[str, str],
    batch_size: int,
) -> _Bounds:
    """The bounds of ``(row kind, op)`` pairs on ``profile`` (kernels as its kernel set launches)."""
    compute: list[float] = []
    memory: list[float] = []
    kernels: list[int] = []
    for kind, w in ops:
        peak = profile.peak_flops_per_s(peaks.get(w.math, "fp32"))
        assert peak is not None  # math_peaks only names precisions the profile has
        compute.append(w.flops / peak if w.flops else 0.0)
        memory.append(w.bytes_moved / profile.memory_bytes_per_s if w.bytes_moved else 0.0)
        kernels.append(kernels_launched(kind, w, profile.kernels, batch_size))
    return _Bounds(tuple(compute), tuple(memory), tuple(kernels))


def _join(parts: Sequence[_Bounds]) -> _Bounds:
    return _Bounds(
        tuple(c for p in parts for c in p.compute_s),
        tuple(m for p in parts for m in p.memory_s),
        tuple(k for p in parts for k in p.kernels),
    )


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

    ops: dict[str, list[tuple[str, OpWork]]] = {}
    for row in cost.rows:
        for w in row.ops:
            ops.setdefault(UPDATE if w.phase == "update" else row.kind, []).append((row.kind, w))

    fits: list[KindFit] = []
    for kind in _kind_order(set(measured) | set(ops)):
        bounds = _bounds(ops.get(kind, ()), profile, peaks, cost.batch_size)
        t_s = measured.get(kind, 0.0)
        share = t_s / step_s if step_s else 0.0
        fits.append(_fit_kind(kind, bounds, t_s, share, base, profile.kernel_latency_s,
                              min_share, share_of="the step"))
    label = f"{run.model}, batch {run.batch_size}, {run.device}, {run.dtype}"
    return EfficiencyFit(profile.key, label, min_share, tuple(fits))


def _fit_kind(
    kind: str,
    bounds: _Bounds,
    t_s: float,
    share: float,
    base: Efficiency,
    latency_s: float,
    min_share: float,
    share_of: str,
) -> KindFit:
    """One kind's efficiency that makes its ops' time, launches included, equal ``t_s``."""
    c_eff, m_eff = base.compute_for(kind), base.memory_for(kind)
    has_flops = any(bounds.compute_s)
    target = "compute" if has_flops and kind != UPDATE else "memory"
    default = c_eff if target == "compute" else m_eff
    before = bounds.time(c_eff, m_eff, latency_s)
    reason = ""
    if bounds.empty:
        reason = "nothing counted for it"
    elif not t_s > 0:
        reason = "no measured time"
    elif share < min_share:
        reason = f"{share:.2%} of {share_of}, under {min_share:.0%}"
    if reason:
        return KindFit(kind, target, t_s, share, default, default, "default", reason,
                       before, before)
    if target == "compute":
        a = bounds.compute_s
        b = [m / m_eff if m else 0.0 for m in bounds.memory_s]
    else:
        a = bounds.memory_s
        b = [c / c_eff if c else 0.0 for c in bounds.compute_s]
    # Launches cost the same at any efficiency: the roofline part must make up the rest.
    x = solve_scale(a, b, t_s - bounds.launch_s(latency_s))
    if x is None or x > 1:
        status, value = "capped", 1.0
        other = "memory" if target == "compute" else "compute"
        launches = " and kernel launches" if bounds.launch_s(latency_s) else ""
        reason = (f"faster than the roofline allows (would need {x:.3g})" if x is not None
                  else f"faster than its {other} bound{launches} alone "
                  + ("allow" if launches else "allows"))
    else:
        status, value = "fitted", x
    after = (bounds.time(value, m_eff, latency_s) if target == "compute"
             else bounds.time(c_eff, value, latency_s))
    return KindFit(kind, target, t_s, share, default, value, status, reason, before, after)


# -- kernel latency and efficiencies fitted to measured per-layer times --------------
#: The kernel latencies ``fit_layer_times`` tries by default: 0, then 0.1 us to 100 us in
#: steps of 10^(1/40) (6%).
DEFAULT_LATENCIES_S: tuple[float, ...] = (0.0, *(1e-7 * 10 ** (i / 40) for i in range(121)))

#: The phases a per-layer log times (forward and backward; not the optimizer update).
_TIMED_PHASES = frozenset({"forward", "backward_input", "backward_weight"})


@dataclass(frozen=True)
class LayerTimes:
    """Measured forward + backward seconds of some rows of one counted model.

    ``measured_s`` maps a row name of ``cost`` to its time (e.g. from a published per-layer
    log, several of its layers summed into one row); rows not in it are not fitted or judged.
    """

    label: str
    cost: CostResult
    measured_s: Mapping[str, float]

    @property
    def total_s(self) -> float:
        return sum(self.measured_s.values())


@dataclass(frozen=True)
class LatencyFit:
    """A kernel latency and per-kind efficiencies fitted together to measured layer times."""

    profile: str
    labels: tuple[str, ...]
    kernel_latency_s: float
    min_share: float
    kinds: tuple[KindFit, ...]
    #: sqrt(mean(log(predicted / measured)^2)) over the judged rows, at the fitted values.
    rms_log_error: float
    #: The rows the latency was chosen on: above ``min_share`` of their model's measured total.
    judged_rows: int

    def fitted(self, target: str) -> dict[str, float]:
        """The efficiencies the fit set (fitted or capped) for ``target`` (compute or memory)."""
        return {k.kind: k.efficiency for k in self.kinds
                if k.target == target and k.status != "default"}

    @property
    def source(self) -> str:
        done = [k.kind for k in self.kinds if k.status != "default"]
        return (f"fitted to measured layer times ({', '.join(self.labels)}): kernel latency "
                f"{self.kernel_latency_s * 1e6:.3g} us, efficiencies of "
                f"{', '.join(done) or 'no kind'}; defaults for any other kind")

    def apply(self, profile: DeviceProfile) -> DeviceProfile:
        """``profile`` with this fit's latency and efficiencies (over its own)."""
        return replace(
            profile,
            compute_efficiency={**profile.compute_efficiency, **self.fitted("compute")},
            memory_efficiency={**profile.memory_efficiency, **self.fitted("memory")},
            kernel_latency_s=self.kernel_latency_s,
            efficiency_source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "fitted_to": list(self.labels),
            "kernel_latency_s": self.kernel_latency_s,
            "min_share": self.min_share,
            "rms_log_error": self.rms_log_error,
            "judged_rows": self.judged_rows,
            "source": self.source,
            "compute_efficiency": self.fitted("compute"),
            "memory_efficiency": self.fitted("memory"),
            "kinds": [k.to_dict() for k in self.kinds],
        }


def _timed_ops(data: LayerTimes) -> dict[str, list[tuple[str, OpWork]]]:
    """Per measured row: its (kind, op) pairs of the timed phases."""
    rows = {r.name: r for r in data.cost.rows}
    missing = sorted(set(data.measured_s) - set(rows))
    if missing:
        raise LayertimeError(f"{data.label}: no row named {missing[0]!r} in the cost")
    return {name: [(rows[name].kind, w) for w in rows[name].ops if w.phase in _TIMED_PHASES]
            for name in data.measured_s}


def fit_layer_times(
    data: Sequence[LayerTimes],
    profile: DeviceProfile,
    *,
    min_share: float = DEFAULT_MIN_SHARE,
    latencies_s: Sequence[float] = DEFAULT_LATENCIES_S,
    mode: MathMode = MathMode(),
) -> LatencyFit:
    """The kernel latency and per-kind efficiencies that best reproduce measured layer times.

    For each latency tried, each kind's efficiency is solved as :func:`fit_efficiency` does
    (the kind's predicted time over all of ``data``, launches included, equals its measured
    time; kinds under ``min_share`` of the measured total keep their default); the latency
    kept is the one with the smallest mean squared log(predicted / measured) over the rows
    above ``min_share`` of their model's measured total (the first such, when tied).
    ``profile`` gives the peaks, the kernel set and the efficiencies the fit starts from.
    """
    if not data:
        raise LayertimeError("nothing to fit: no measured layer times")
    if not 0 <= min_share < 1:
        raise LayertimeError(f"min_share must be in [0, 1), not {min_share}")
    if not latencies_s or any(not (math.isfinite(x) and x >= 0) for x in latencies_s):
        raise LayertimeError("latencies to try must be finite and >= 0")
    base = Efficiency().overridden(profile.compute_efficiency, profile.memory_efficiency, "")
    total_s = sum(d.total_s for d in data)
    if not total_s > 0:
        raise LayertimeError("nothing to fit: the measured times sum to 0")
    # Bounds per row (for judging) and per kind (for solving), over every model.
    row_bounds: list[tuple[float, str, _Bounds]] = []  # (measured s, kind, bounds) judged
    kind_parts: dict[str, list[_Bounds]] = {}
    kind_time: dict[str, float] = {}
    for d in data:
        peaks = math_peaks(profile, d.cost.dtype, mode)
        kinds = {r.name: r.kind for r in d.cost.rows}
        for name, ops in _timed_ops(d).items():
            b = _bounds(ops, profile, peaks, d.cost.batch_size)
            kind = kinds[name]
            kind_parts.setdefault(kind, []).append(b)
            kind_time[kind] = kind_time.get(kind, 0.0) + d.measured_s[name]
            if d.measured_s[name] > min_share * d.total_s:
                row_bounds.append((d.measured_s[name], kind, b))
    kind_bounds = {k: _join(v) for k, v in kind_parts.items()}
    order = _kind_order(kind_bounds)

    best: tuple[float, float, tuple[KindFit, ...]] | None = None
    for latency in latencies_s:
        fits = tuple(
            _fit_kind(k, kind_bounds[k], kind_time[k], kind_time[k] / total_s, base, latency,
                      min_share, share_of="the measured time")
            for k in order
        )
        eff = base.overridden(
            {f.kind: f.efficiency for f in fits if f.target == "compute"},
            {f.kind: f.efficiency for f in fits if f.target == "memory"},
            "",
        )
        errors = []
        for measured, kind, b in row_bounds:
            predicted = b.time(eff.compute_for(kind), eff.memory_for(kind), latency)
            if predicted > 0 and measured > 0:
                errors.append(math.log(predicted / measured) ** 2)
        score = sum(errors) / len(errors) if errors else 0.0
        if best is None or score < best[0]:
            best = (score, latency, fits)
    assert best is not None
    score, latency, fits = best
    return LatencyFit(
        profile=profile.key,
        labels=tuple(d.label for d in data),
        kernel_latency_s=latency,
        min_share=min_share,
        kinds=fits,
        rms_log_error=math.sqrt(score),
        judged_rows=len(row_bounds),
    )
