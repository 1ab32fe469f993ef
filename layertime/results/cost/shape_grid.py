"""A device measured on a grid of op shapes (``layertime calibrate``), and the lookup that
turns an op's shape into its achieved rate.

What is kept per point is measured time (best and median of the samples, their spread,
how many rounds it took); rates are derived on lookup.  The per-op fixed cost (``fixed_s``:
dispatch on a CPU, launch on a GPU, the time of a tiny op) is in every point's time, so a
point's rate is its work over its time less the fixed cost, and a prediction is
``kernels x fixed_s + work / rate``: at a grid point that gives back the point's time.

**Interpolation** (documented in ``docs/cost.md``): log-linear.  A GEMM's rate is
interpolated trilinearly in ``(log M, log N, log K)`` on the full grid of the three axes,
linearly in the *logarithm* of the rate; a memory-bound op's bytes per second linearly in
``log bytes``, in the log of the rate, on its own curve where the op was timed alone
(:class:`OpCurve`: its work in the count's bytes, or elements), else on its class's.  So a grid point returns its own value, and between
points the result lies between its neighbours' values (a weighted geometric mean with
non-negative weights).  Outside the grid each coordinate is clamped to the axis' end and
the lookup says it clamped.  Pure Python; never imports torch.
"""

from __future__ import annotations

import bisect
import math
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

#: A point's time less the fixed cost is kept at least this fraction of its time (a point
#: measured barely above the fixed cost must not give an infinite rate).
MIN_NET_FRACTION = 0.05
#: The memory-bound op classes measured: a copy, an element-wise add, a sum (reduction).
MEMORY_OPS: tuple[str, ...] = ("copy", "add", "reduce")
#: What an op curve's work counts: ``bytes``, what the count's formula
#: (``layertime/cost/count/op_bytes.py``) gives one call of the measured shape, so that a
#: lookup at a counted op's bytes per call inverts the measurement exactly; ``elements``,
#: the elements one call writes (a random draw: its cost is per number drawn).
OP_UNITS: tuple[str, ...] = ("bytes", "elements")


@dataclass(frozen=True)
class GridPoint:
    """One measured shape: its work (FLOPs or bytes moved per op) and its time per op."""

    #: GEMM (M, N, K); convolution (N, C_in, H, W, C_out, kernel, stride, padding[, groups
    #: when above 1]);
    #: memory-bound (elements,).
    shape: tuple[int, ...]
    work: float
    best_s: float
    median_s: float
    #: median_s / best_s - 1 of the round kept (the least spread of its rounds).
    spread: float
    #: Rounds of samples taken (more than 1: it was re-measured because it was noisy).
    rounds: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "work": self.work, "best_s": self.best_s,
                "median_s": self.median_s, "spread": self.spread, "rounds": self.rounds}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GridPoint:
        return cls(tuple(int(x) for x in d["shape"]), float(d["work"]), float(d["best_s"]),
                   float(d["median_s"]), float(d.get("spread", 0.0)), int(d.get("rounds", 1)))


#: The widest implicit GEMM side of a depthwise-like convolution (one channel a group):
#: its N, and K but in the weight gradient, are the kernel's taps (9, 25), where a dense
#: convolution's are channels x taps (27 and up).
NARROW_SIDE = 25


def narrow_conv(n: int, k: int, phase: str) -> bool:
    """Whether a convolution's implicit GEMM per group (N, K of ``phase``,
    :mod:`layertime.cost.count.op_shapes`) is a depthwise-like one: N at most
    :data:`NARROW_SIDE`, and K too in forward and input gradient (the weight gradient's K
    is the batch's positions)."""
    return n <= NARROW_SIDE and (phase == "backward_weight" or k <= NARROW_SIDE)


def conv_family(weight_shape: Sequence[int], stride: Sequence[int], groups: int) -> str:
    """A convolution's family: ``"<depthwise|dense> <1x1|kxk> <s1|strided>"``.

    Convolutions of one implicit GEMM shape run at rates far apart across families (on this
    CPU a strided 3x3 convolution takes twice the time of the stride-1 one of the same GEMM,
    a dense 1x1 runs at half a 3x3's rate), so a convolution's rate is looked up among
    measured convolutions of its own family.  Depthwise: one input channel per group with
    more than one group (MobileNet's); a grouped convolution with several channels per
    group (ResNeXt's) counts as dense."""
    depthwise = groups > 1 and len(weight_shape) > 1 and int(weight_shape[1]) == 1
    taps = math.prod(int(d) for d in weight_shape[2:])
    strided = any(int(x) > 1 for x in stride)
    return (f"{'depthwise' if depthwise else 'dense'} {'1x1' if taps == 1 else 'kxk'} "
            f"{'strided' if strided else 's1'}")


@dataclass(frozen=True)
class ConvPoint:
    """A measured convolution (one phase of it) beside its implicit GEMM's shape."""

    point: GridPoint
    #: The implicit GEMM (``layertime.cost.count.op_shapes``): forward M = N x H_out x W_out,
    #: N = C_out, K = C_in x kernel^2; the gradients' as counted there.
    gemm: tuple[int, int, int]
    #: "forward", "backward_input" or "backward_weight".
    phase: str = "forward"

    @property
    def family(self) -> str | None:
        """Its :func:`conv_family`, from the measured shape (N, C_in, H, W, C_out, kernel,
        stride, padding[, groups]); None for a shape not of that form."""
        sh = self.point.shape
        if len(sh) not in (8, 9):
            return None
        groups = sh[8] if len(sh) == 9 else 1
        return conv_family((sh[4], sh[1] // max(groups, 1), sh[5], sh[5]), (sh[6],), groups)

    def to_dict(self) -> dict[str, Any]:
        return {**self.point.to_dict(), "gemm": list(self.gemm), "phase": self.phase}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConvPoint:
        g = [int(x) for x in d["gemm"]]
        return cls(GridPoint.from_dict(d), (g[0], g[1], g[2]), str(d.get("phase", "forward")))


@dataclass(frozen=True)
class OpCurve:
    """One op timed alone by size, on fresh outputs as a training step allocates them: its
    time per call against its work per call (:data:`OP_UNITS`).  Ops timed on it
    (``ops``) take its rate instead of a memory class's (:data:`MEMORY_OPS`)."""

    #: The aten op measured (``aten.native_batch_norm``).
    name: str
    #: The aten ops whose time is looked up on this curve: the measured one and other names
    #: of the same kernel (``aten._native_batch_norm_legit``).
    ops: tuple[str, ...]
    #: Points by size, ascending work; a point's shape is the measured input's.
    points: tuple[GridPoint, ...]
    unit: str = "bytes"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ops": list(self.ops), "unit": self.unit,
                "points": [p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpCurve:
        return cls(str(d["name"]), tuple(str(x) for x in d.get("ops", (d["name"],))),
                   tuple(GridPoint.from_dict(p) for p in d["points"]),
                   str(d.get("unit", "bytes")))


@dataclass(frozen=True)
class Noise:
    """How the calibration guarded against a loaded machine, and what was left noisy."""

    #: A point is re-measured while its spread is above this (0.2: median 20% over best).
    threshold: float
    #: At most this many rounds per point; no new round once the budget is spent.
    max_rounds: int
    budget_s: float
    points: int
    #: Points still above the threshold after their last round.
    noisy: int
    #: Points measured more than ``min_rounds`` times (re-measured because noisy).
    repeated: int
    #: Whether the budget ran out (later passes stopped).
    budget_hit: bool = False
    #: Rounds every point gets, in separate passes over the grid.
    min_rounds: int = 1

    @property
    def summary(self) -> str:
        """``noisy: 3 of 40 points had spread > 20% after 3 rounds`` or ``quiet: ...``."""
        head = (f"noisy: {self.noisy} of {self.points} points had spread > "
                f"{self.threshold:.0%} after up to {self.max_rounds} rounds"
                if self.noisy else
                f"quiet: every one of {self.points} points within {self.threshold:.0%} spread")
        extra = ""
        if self.min_rounds > 1:
            extra += f"; {self.min_rounds} passes over every point"
        if self.repeated:
            extra += f"; {self.repeated} re-measured"
        if self.budget_hit:
            extra += f"; the {self.budget_s:g} s budget ran out (no more re-measuring)"
        return head + extra

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "max_rounds": self.max_rounds,
                "budget_s": self.budget_s, "points": self.points, "noisy": self.noisy,
                "repeated": self.repeated, "budget_hit": self.budget_hit,
                "min_rounds": self.min_rounds, "summary": self.summary}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Noise:
        return cls(float(d["threshold"]), int(d["max_rounds"]), float(d["budget_s"]),
                   int(d["points"]), int(d["noisy"]), int(d.get("repeated", 0)),
                   bool(d.get("budget_hit", False)), int(d.get("min_rounds", 1)))


@dataclass(frozen=True)
class Lookup:
    """A rate looked up on the grid, and whether a coordinate lay outside it (clamped)."""

    per_s: float
    clamped: bool


def _log_linear(works: Sequence[float], rates: Sequence[float], x: float) -> Lookup:
    """The rate at ``x`` on a curve of (work, rate) points by ascending work: linear in
    ``log work`` on the log of the rate, clamped (and said so) outside it."""
    lx = math.log(max(x, 1e-300))
    logs = [math.log(w) for w in works]
    lr = [math.log(r) for r in rates]
    if lx <= logs[0]:
        return Lookup(rates[0], lx < logs[0] - 1e-12)
    if lx >= logs[-1]:
        return Lookup(rates[-1], lx > logs[-1] + 1e-12)
    j = bisect.bisect_right(logs, lx)
    t = (lx - logs[j - 1]) / (logs[j] - logs[j - 1])
    return Lookup(math.exp(lr[j - 1] + t * (lr[j] - lr[j - 1])), False)


def _capped_times(points: Sequence[GridPoint]) -> tuple[float, ...]:
    """Points' times by ascending size, each at most that of the next larger one (more work
    never takes less time: a point slower than a larger one was held up by load)."""
    t = [p.best_s for p in points]
    for i in range(len(t) - 2, -1, -1):
        t[i] = min(t[i], t[i + 1])
    return tuple(t)


def _axis(values: Sequence[int], x: float) -> tuple[int, int, float, bool]:
    """Neighbours i, j on a sorted axis and the weight of j for ``x`` in log space."""
    lx = math.log(max(x, 1e-300))
    logs = [math.log(v) for v in values]
    if lx <= logs[0]:
        return 0, 0, 0.0, lx < logs[0] - 1e-12
    if lx >= logs[-1]:
        last = len(values) - 1
        return last, last, 0.0, lx > logs[-1] + 1e-12
    j = bisect.bisect_right(logs, lx)
    i = j - 1
    return i, j, (lx - logs[i]) / (logs[j] - logs[i]), False


@dataclass(frozen=True)
class ShapeGrid:
    """GEMM, convolution and memory-bound times measured by shape, and the fixed cost per op."""

    #: The precision the GEMMs and convolutions were measured at ("fp32").
    precision: str
    #: Time of a tiny op: the per-op fixed cost (dispatch on a CPU, launch on a GPU).
    fixed: GridPoint
    #: The GEMM grid's axes; ``gemm`` holds every (M, N, K) of their product, M slowest.
    gemm_m: tuple[int, ...]
    gemm_n: tuple[int, ...]
    gemm_k: tuple[int, ...]
    gemm: tuple[GridPoint, ...]
    conv: tuple[ConvPoint, ...]
    #: Per memory op class (MEMORY_OPS), points by size (elements of float32), ascending.
    memory: Mapping[str, tuple[GridPoint, ...]]
    noise: Noise
    #: Wall time the grid took to measure, and where it came from.
    elapsed_s: float = 0.0
    source: str = "measured"
    dtype_bytes: int = 4
    #: Ops timed alone by size (batch norm, pooling, softmax, ``bernoulli_`` ...); empty
    #: in grids measured before them (their ops take the class curves).
    op_curves: tuple[OpCurve, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.gemm_m) * len(self.gemm_n) * len(self.gemm_k)
        if n == 0 or len(self.gemm) != n:
            raise ValueError(f"a GEMM grid of {len(self.gemm_m)}x{len(self.gemm_n)}x"
                             f"{len(self.gemm_k)} needs {n} points, not {len(self.gemm)}")

    @property
    def fixed_s(self) -> float:
        """The per-op fixed cost: the best time of a tiny op."""
        return self.fixed.best_s

    @property
    def points(self) -> int:
        return (1 + len(self.gemm) + len(self.conv) + sum(len(v) for v in self.memory.values())
                + sum(len(c.points) for c in self.op_curves))

    def _net_rate(self, p: GridPoint, time_s: float | None = None) -> float:
        t = p.best_s if time_s is None else time_s
        net = max(t - self.fixed_s, MIN_NET_FRACTION * t)
        return p.work / net

    @cached_property
    def _gemm_s(self) -> tuple[float, ...]:
        """Each measured GEMM point's time, at most that of any larger measured point (more
        work never takes less time: a point slower than a larger one was held up by load)."""
        sm, sn = len(self.gemm_n) * len(self.gemm_k), len(self.gemm_k)
        t = [p.best_s if p.rounds else math.inf for p in self.gemm]
        for i in range(len(t) - 1, -1, -1):
            m, rest = divmod(i, sm)
            n, k = divmod(rest, sn)
            for ok, j in ((m + 1 < len(self.gemm_m), i + sm), (n + 1 < len(self.gemm_n), i + sn),
                          (k + 1 < len(self.gemm_k), i + 1)):
                if ok:
                    t[i] = min(t[i], t[j])
        return tuple(t)

    @cached_property
    def _gemm_rates(self) -> tuple[float, ...]:
        """Each GEMM point's rate (fixed cost off, load capped); a point not measured (too
        much work for the calibration: ``rounds`` 0) takes the best rate of the largest
        measured points it contains (a GEMM at least as large in every side runs at least
        as fast)."""
        sm, sn = len(self.gemm_n) * len(self.gemm_k), len(self.gemm_k)
        r = [0.0] * len(self.gemm)
        for i, p in enumerate(self.gemm):
            if p.rounds:
                r[i] = self._net_rate(p, self._gemm_s[i])
                continue
            m, rest = divmod(i, sm)
            n, k = divmod(rest, sn)
            below = [r[j] for ok, j in ((m > 0, i - sm), (n > 0, i - sn), (k > 0, i - 1)) if ok]
            r[i] = max(below) if below else 0.0
        return tuple(r)

    @cached_property
    def _memory_s(self) -> dict[str, tuple[float, ...]]:
        """Memory points' times, each at most that of the next larger size (as for GEMMs)."""
        return {op: _capped_times(pts) for op, pts in self.memory.items()}

    @cached_property
    def _op_s(self) -> tuple[tuple[float, ...], ...]:
        """Each op curve's times, capped as the memory points' are."""
        return tuple(_capped_times(c.points) for c in self.op_curves)

    @cached_property
    def _op_index(self) -> dict[str, int]:
        """Which op curve each aten op is timed on (the first curve that names it)."""
        out: dict[str, int] = {}
        for i, c in enumerate(self.op_curves):
            for op in c.ops:
                out.setdefault(op, i)
        return out

    @property
    def capped(self) -> int:
        """Points whose time was lowered to a larger point's by more than the noise
        threshold (held up by load, or a slow path of a small shape)."""
        lim = 1 + self.noise.threshold
        n = sum(1 for p, t in zip(self.gemm, self._gemm_s) if p.rounds and t * lim < p.best_s)
        n += sum(1 for c, ts in zip(self.op_curves, self._op_s)
                 for p, t in zip(c.points, ts) if t * lim < p.best_s)
        return n + sum(1 for op, pts in self.memory.items()
                       for p, t in zip(pts, self._memory_s[op]) if t * lim < p.best_s)

    def gemm_point_flops_per_s(self, i: int) -> float:
        """The rate of GEMM point ``i`` as the lookup uses it (fixed cost off, load capped,
        filled from smaller points where not measured)."""
        return self._gemm_rates[i]

    @property
    def unmeasured(self) -> int:
        """GEMM points not measured (their work beyond the calibration's largest)."""
        return sum(1 for p in self.gemm if not p.rounds)

    # -- lookups -------------------------------------------------------------
    def gemm_flops_per_s(self, m: int, n: int, k: int) -> Lookup:
        """A GEMM's FLOP/s at (M, N, K): trilinear in the logs of the sides and the rate."""
        axes = [_axis(self.gemm_m, m), _axis(self.gemm_n, n), _axis(self.gemm_k, k)]
        sn, sk = len(self.gemm_n) * len(self.gemm_k), len(self.gemm_k)
        acc = 0.0
        for a in (0, 1):
            for b in (0, 1):
                for c in (0, 1):
                    w = ((axes[0][2] if a else 1 - axes[0][2])
                         * (axes[1][2] if b else 1 - axes[1][2])
                         * (axes[2][2] if c else 1 - axes[2][2]))
                    if w == 0.0:
                        continue
                    i = axes[0][1] if a else axes[0][0]
                    j = axes[1][1] if b else axes[1][0]
                    h = axes[2][1] if c else axes[2][0]
                    acc += w * math.log(self.gemm_point_flops_per_s(i * sn + j * sk + h))
        return Lookup(math.exp(acc), any(ax[3] for ax in axes))

    @property
    def conv_vs_gemm(self) -> tuple[float, ...]:
        """Each measured convolution's rate over the GEMM grid's at its implicit GEMM shape."""
        return tuple(self._net_rate(c.point) / self.gemm_flops_per_s(*c.gemm).per_s
                     for c in self.conv)

    @property
    def conv_factor(self) -> float:
        """The median of :attr:`conv_vs_gemm` (1 without convolution points)."""
        ratios = self.conv_vs_gemm
        return statistics.median(ratios) if ratios else 1.0

    @cached_property
    def _conv_ratios(self) -> tuple[float, ...]:
        return self.conv_vs_gemm

    def conv_factor_at(self, m: int, n: int, k: int, phase: str = "forward",
                       family: str | None = None) -> float:
        """The conv / implicit GEMM ratio of the measured convolution of ``phase`` nearest to
        (M, N, K) in log space (of any phase when none of it was measured; 1 without
        convolution points): how far a convolution of that shape runs from a GEMM of its
        implicit shape.  The nearest is taken among the points of the convolution's
        ``family`` (:func:`conv_family`) where the grid measured that family; else a
        depthwise-like convolution (:func:`narrow_conv`) takes the nearest of the
        depthwise-like points, a dense one the nearest dense point: the two run at ratios
        10-100x apart, and a dense 1x1 convolution's gradient lies nearer a depthwise point
        in (M, N, K) than a dense one."""
        idx = [i for i, c in enumerate(self.conv) if c.phase == phase] or list(
            range(len(self.conv)))
        if not idx:
            return 1.0
        same = [i for i in idx if family is not None and self.conv[i].family == family]
        if same:
            idx = same
        else:
            narrow = narrow_conv(n, k, phase)
            idx = [i for i in idx if narrow_conv(self.conv[i].gemm[1], self.conv[i].gemm[2],
                                                 self.conv[i].phase) == narrow] or idx
        at = (math.log(max(m, 1)), math.log(max(n, 1)), math.log(max(k, 1)))

        def dist(c: ConvPoint) -> float:
            return sum((math.log(max(g, 1)) - x) ** 2 for g, x in zip(c.gemm, at))

        i = min(idx, key=lambda j: dist(self.conv[j]))
        return self._conv_ratios[i]

    def conv_flops_per_s(self, m: int, n: int, k: int, phase: str = "forward",
                         family: str | None = None) -> Lookup:
        """A convolution's FLOP/s: its implicit GEMM's (M, N, K) on the GEMM grid, times the
        ratio of the nearest measured convolution of its phase and family
        (:meth:`conv_factor_at`)."""
        g = self.gemm_flops_per_s(m, n, k)
        return Lookup(g.per_s * self.conv_factor_at(m, n, k, phase, family), g.clamped)

    def memory_bytes_per_s(self, op: str, nbytes: float) -> Lookup:
        """Bytes per second of a memory-bound op class moving ``nbytes`` per call."""
        key = op if op in self.memory else "add" if "add" in self.memory else next(iter(self.memory))
        pts = self.memory[key]
        return _log_linear([p.work for p in pts],
                           [self._net_rate(p, t) for p, t in zip(pts, self._memory_s[key])],
                           max(nbytes, 1.0))

    def op_curve(self, op: str) -> OpCurve | None:
        """The measured curve an aten op (``aten.native_batch_norm``) is timed on, if any."""
        i = self._op_index.get(op)
        return self.op_curves[i] if i is not None else None

    def op_rate(self, op: str, amount: float) -> Lookup | None:
        """An op's rate on its measured curve (work per second, in the curve's unit, net of
        the fixed cost) at ``amount`` work per call; None when the op was not measured.
        Log-linear in ``log work``, as the memory classes: a point gives back its own time
        as ``fixed_s + work / rate``."""
        i = self._op_index.get(op)
        if i is None:
            return None
        c = self.op_curves[i]
        return _log_linear([p.work for p in c.points],
                           [self._net_rate(p, t) for p, t in zip(c.points, self._op_s[i])],
                           max(amount, 1.0))

    @property
    def peak_gemm_flops_per_s(self) -> float:
        return max(self.gemm_point_flops_per_s(i) for i in range(len(self.gemm)))

    def summary_lines(self) -> list[str]:
        """The grid in a few lines of at most 80 columns (``layertime calibrate`` prints them)."""
        g = [self.gemm_point_flops_per_s(i) / 1e9 for i in range(len(self.gemm))]
        small, big = g[0], g[-1]
        lines = [
            f"shape grid ({self.precision}, {self.points} points, {self.elapsed_s:.1f} s):",
            f"  per-op fixed cost {self.fixed_s * 1e6:.3g} us (a tiny add)",
            f"  GEMM {len(self.gemm_m)}x{len(self.gemm_n)}x{len(self.gemm_k)} M,N,K "
            f"{self.gemm_m[0]}..{self.gemm_m[-1]}: {min(g):,.3g}..{max(g):,.3g} GFLOP/s"
            + (f" ({self.unmeasured} largest not measured: the best rate they contain)"
               if self.unmeasured else ""),
            f"    smallest {self.gemm_m[0]}x{self.gemm_n[0]}x{self.gemm_k[0]} {small:,.3g}, "
            f"largest {self.gemm_m[-1]}x{self.gemm_n[-1]}x{self.gemm_k[-1]} {big:,.3g}",
        ]
        for m in self.gemm_m[1:2] or self.gemm_m[:1]:
            k = self.gemm_k[-1]
            n = self.gemm_n[-1]
            lines.append(f"    skinny M={m} N={n} K={k}: "
                         f"{self.gemm_flops_per_s(m, n, k).per_s / 1e9:,.3g} GFLOP/s "
                         f"({self.gemm_flops_per_s(m, n, k).per_s * 1e-9 / max(g):.0%} of best)")
        for phase in ("forward", "backward_input", "backward_weight"):
            ratios = ", ".join(f"{r:.2f}" for r, c in zip(self.conv_vs_gemm, self.conv)
                               if c.phase == phase)
            if ratios:
                lines.append(f"  conv {phase} / its implicit GEMM: {ratios}")
        if self.conv:
            lines.append("    (a convolution takes the ratio of the nearest one of its phase and family)")
        for op, pts in self.memory.items():
            lo, hi = pts[0], pts[-1]
            r_lo = self.memory_bytes_per_s(op, lo.work).per_s
            r_hi = self.memory_bytes_per_s(op, hi.work).per_s
            lines.append(f"  {op:<6} {lo.work / 1e3:,.3g} kB {r_lo / 1e9:,.3g} GB/s .. "
                         f"{hi.work / 1e6:,.4g} MB {r_hi / 1e9:,.3g} GB/s (bytes moved per op)")
        if self.op_curves:
            lines.append(f"  ops timed alone ({len(self.op_curves)}; new outputs each call; "
                         "work per call as counted):")
        for c in self.op_curves:
            lines.append("    " + _curve_line(c, self.op_rate(c.ops[0], c.points[0].work),
                                              self.op_rate(c.ops[0], c.points[-1].work)))
        worst = max(self._all(), key=lambda p: p.spread)
        lines.append(f"  {self.noise.summary}")
        if self.capped:
            lines.append(f"  {self.capped} points over {self.noise.threshold:.0%} slower than a "
                         "larger shape: taken at its time (more work never takes less)")
        lines.append(f"  largest spread {worst.spread:.0%} (shape {_shape(worst.shape)}, "
                     f"{worst.rounds} round{'s' if worst.rounds > 1 else ''})")
        return [w for line in lines
                for w in textwrap.wrap(line, 80, subsequent_indent="    ") or [""]]

    def _all(self) -> list[GridPoint]:
        return [self.fixed, *(p for p in self.gemm if p.rounds), *(c.point for c in self.conv),
                *(p for pts in self.memory.values() for p in pts),
                *(p for c in self.op_curves for p in c.points)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "fixed": self.fixed.to_dict(),
            "fixed_s": self.fixed_s,
            "gemm_m": list(self.gemm_m),
            "gemm_n": list(self.gemm_n),
            "gemm_k": list(self.gemm_k),
            "gemm": [p.to_dict() for p in self.gemm],
            "conv": [c.to_dict() for c in self.conv],
            "conv_vs_gemm": list(self.conv_vs_gemm),
            "memory": {op: [p.to_dict() for p in pts] for op, pts in self.memory.items()},
            "noise": self.noise.to_dict(),
            "elapsed_s": self.elapsed_s,
            "source": self.source,
            "dtype_bytes": self.dtype_bytes,
            "op_curves": [c.to_dict() for c in self.op_curves],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShapeGrid:
        return cls(
            precision=str(d.get("precision", "fp32")),
            fixed=GridPoint.from_dict(d["fixed"]),
            gemm_m=tuple(int(x) for x in d["gemm_m"]),
            gemm_n=tuple(int(x) for x in d["gemm_n"]),
            gemm_k=tuple(int(x) for x in d["gemm_k"]),
            gemm=tuple(GridPoint.from_dict(p) for p in d["gemm"]),
            conv=tuple(ConvPoint.from_dict(c) for c in d.get("conv", ())),
            # Each memory op class is a list of points; anything else is a later version's.
            memory={str(op): tuple(GridPoint.from_dict(p) for p in pts)
                    for op, pts in d["memory"].items() if isinstance(pts, list)},
            noise=Noise.from_dict(d["noise"]),
            elapsed_s=float(d.get("elapsed_s", 0.0)),
            source=str(d.get("source", "measured")),
            dtype_bytes=int(d.get("dtype_bytes", 4)),
            op_curves=tuple(OpCurve.from_dict(c) for c in d.get("op_curves", ())),
        )


def _curve_line(c: OpCurve, lo: Lookup | None, hi: Lookup | None) -> str:
    """``native_batch_norm 197 kB 3.1 .. 201 MB 6.5 GB/s``: an op curve's two ends."""
    name = c.name.removeprefix("aten.")
    a, b = c.points[0].work, c.points[-1].work
    r_lo, r_hi = (lo.per_s if lo else 0.0), (hi.per_s if hi else 0.0)
    if c.unit == "elements":
        return (f"{name:<27} {_si(a, ' el')} {r_lo / 1e6:,.3g} .. {_si(b, ' el')} "
                f"{r_hi / 1e6:,.3g} M el/s")
    return (f"{name:<27} {_si(a, 'B')} {r_lo / 1e9:,.3g} .. {_si(b, 'B')} "
            f"{r_hi / 1e9:,.3g} GB/s")


def _si(x: float, unit: str) -> str:
    """``197 kB``, ``16.8 M el``: a count with an SI prefix, three digits, and its unit."""
    for div, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit.strip()}"


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in s)


def noise_of(points: Sequence[GridPoint], threshold: float, max_rounds: int,
             budget_s: float, budget_hit: bool, min_rounds: int = 1) -> Noise:
    """The noise summary of measured points."""
    return Noise(threshold, max_rounds, budget_s, len(points),
                 sum(1 for p in points if p.spread > threshold),
                 sum(1 for p in points if p.rounds > min_rounds), budget_hit, min_rounds)


