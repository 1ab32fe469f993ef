"""Measure a device on a grid of op shapes (``layertime calibrate``'s grid).

Five things, each a point timed the same way (:func:`time_point`):

* the **per-op fixed cost**: a tiny add (one element), back to back;
* **GEMMs** ``(M x K) @ (K x N)`` on the full product of three axes (skinny ones
  included: M = 8 is a fully connected layer at batch 8);
* a few **convolutions** (forward), each beside its implicit GEMM's shape, so the
  prediction can check and use "a convolution runs as its implicit GEMM";
* **memory-bound ops by size**: a copy, an element-wise add and a sum, from 4 KiB
  (fixed cost dominates) to beyond the caches;
* **ops timed alone by size** (:data:`layertime.measure.calibrate_ops.MEASURED_OPS`):
  batch norm, pooling, softmax, layer norm, activations and their backward, on fresh
  outputs, and ``bernoulli_``; each point's work is what the count's byte formula gives
  that call (elements for ``bernoulli_``).

**Protection against load.** A round of a point is ``samples`` timed runs of ``n``
back-to-back ops (``n`` chosen so that a run lasts ``min_sample_s``); its spread is
median / best - 1.  Every point gets ``min_rounds`` rounds in separate passes over the
grid; while its spread is above ``threshold`` (or it is slower than a larger shape) it is
measured again in later passes, up to ``max_rounds`` rounds, and not once the grid's
``budget_s`` is spent.  The best time over
all rounds is kept (load only ever adds time), the median of its least spread round
beside it, and the grid says how many points stayed noisy.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from layertime.cost.count.op_shapes import conv_backward_shapes
from layertime.measure.calibrate_ops import MEASURED_OPS, OP_ELEMENTS, MeasuredOp
from layertime.results.cost.shape_grid import ConvPoint, GridPoint, OpCurve, ShapeGrid, noise_of

aten = torch.ops.aten

#: GEMM axes (each of M, N, K) by device type: 4x apart, 8 to 8192 on a CPU.  A point is
#: measured when M x N x K is at most ``max_mnk`` (``calibrate`` passes a quarter of its
#: largest square matmul's); the others (a large corner of the cube) take the best rate of
#: the largest measured points they contain.
GEMM_AXES = {"cpu": (8, 32, 128, 512, 2048, 8192), "cuda": (16, 64, 256, 1024, 4096, 16384)}
#: Convolutions measured (forward, with a bias, and both gradients): (batch, C_in, H=W,
#: C_out, kernel, stride, padding[, groups]).  A convolution's rate is looked up among the
#: points of its family (``shape_grid.conv_family``: depthwise or dense, 1x1 or larger,
#: stride 1 or strided), so every family common in CNNs has a point: AlexNet's first
#: three, VGG and ResNet 3x3s, ResNet's 7x7 stem, 1x1s at 14x14 and 28x28 and a small
#: MobileNet one at 56x56, ResNet's strided 3x3 and 1x1 (its downsampling), and depthwise
#: 3x3 and 5x5 at stride 1 and 2 (MobileNet's and EfficientNet's), whose implicit GEMM
#: per group (N = 1, K = kernel^2) runs nothing like a dense one's.  Every tensor of a
#: point stays under 32 MiB on a CPU (the 7x7 stem at batch 8): a fresh output above that
#: page-faults as glibc's heap happens to be, and such points varied 2-4x between
#: calibrations; the strided 1x1 and 256-channel 1x1s measured at 56x56 (above 32 MiB)
#: took ResNet-50's other 1x1 layers 1.4-3x too slow.  The batch is scaled by device type.
CONV_SHAPES: tuple[tuple[int, ...], ...] = (
    (16, 3, 224, 64, 11, 4, 2),
    (16, 64, 27, 192, 5, 1, 2),
    (16, 192, 13, 384, 3, 1, 1),
    (16, 64, 56, 64, 3, 1, 1),
    (16, 256, 14, 1024, 1, 1, 0),
    (16, 128, 56, 128, 3, 1, 1),
    (16, 96, 56, 96, 3, 1, 1, 96),
    (16, 240, 28, 240, 5, 1, 2, 240),
    (8, 3, 224, 64, 7, 2, 3),
    (16, 24, 56, 72, 1, 1, 0),
    (16, 256, 28, 128, 1, 1, 0),
    (16, 128, 56, 128, 3, 2, 1),
    (16, 512, 28, 1024, 1, 2, 0),
    (16, 96, 56, 96, 3, 2, 1, 96),
    (16, 72, 56, 72, 5, 2, 2, 72),
)
CONV_BATCH_SCALE = {"cpu": 1, "cuda": 8}
#: Memory-bound sizes, float32 elements: 1 Ki (4 KiB) up, 4x apart.
MEMORY_ELEMENTS = {"cpu": tuple(4**i * 1024 for i in range(8)),
                   "cuda": tuple(4**i * 1024 for i in range(9))}


@dataclass(frozen=True)
class NoisePolicy:
    """How a point is timed and when it is measured again."""

    threshold: float = 0.2
    #: Every point gets this many rounds, in separate passes over the grid (a burst of load
    #: that slowed every sample of one round has passed by the next); noisy ones more.
    min_rounds: int = 2
    max_rounds: int = 3
    samples: int = 3
    #: One timed run lasts at least this long (n ops back to back).
    min_sample_s: float = 2e-3
    #: No new round after the grid has taken this long.
    budget_s: float = 45.0

    def __post_init__(self) -> None:
        if (self.samples < 2 or not 1 <= self.min_rounds <= self.max_rounds
                or self.threshold <= 0):
            raise ValueError("a noise policy needs samples >= 2, 1 <= min_rounds <= max_rounds "
                             "and threshold > 0")


DEFAULT_POLICY = {"cpu": NoisePolicy(budget_s=35.0), "cuda": NoisePolicy(budget_s=20.0)}


@dataclass
class PointTiming:
    """One point's samples so far: the ops per timed run, the best, the least spread round."""

    run: Callable[[int], float]
    work: float
    shape: tuple[int, ...]
    n: int = 0
    best: float = math.inf
    median: float = math.inf
    spread: float = math.inf
    rounds: int = 0

    def round(self, policy: NoisePolicy) -> None:
        """Time ``policy.samples`` runs of ``n`` ops (the first round also picks ``n``)."""
        if self.n == 0:
            first = self.run(1)  # also the warm-up
            self.n = max(1, min(100_000, math.ceil(policy.min_sample_s / max(first, 1e-9))))
        samples = [self.run(self.n) / self.n for _ in range(policy.samples)]
        lo, med = min(samples), statistics.median(samples)
        self.rounds += 1
        self.best = min(self.best, lo)
        spread = med / lo - 1 if lo > 0 else 0.0
        if spread < self.spread:
            self.median, self.spread = med, spread

    def point(self) -> GridPoint:
        return GridPoint(self.shape, float(self.work), self.best, self.median, self.spread,
                         self.rounds)


def measure_points(timings: Sequence[PointTiming], policy: NoisePolicy,
                   over_budget: Callable[[], bool],
                   larger: Mapping[int, Sequence[int]] | None = None) -> bool:
    """Time every point ``min_rounds`` times, a pass over all points each (later passes stop
    when the budget is spent), then again in later passes (up to ``max_rounds`` in all) those
    still noisy: a spread above the threshold, or slower by more than the threshold than a
    larger shape (``larger``: point -> indices of points with more work, a stall that every
    sample of one round saw).  Later passes come after the others, so a burst of load that
    hit a run of points has passed.  Returns whether the budget stopped a pass."""
    for _ in range(policy.min_rounds):
        for t in timings:
            if t.rounds and over_budget():
                break
            t.round(policy)
    more = larger or {}

    def noisy(i: int) -> bool:
        t = timings[i]
        if t.spread > policy.threshold:
            return True
        return any(t.best > (1 + policy.threshold) * timings[j].best for j in more.get(i, ()))

    for _ in range(policy.max_rounds - policy.min_rounds):
        todo = [i for i in range(len(timings))
                if noisy(i) and timings[i].rounds < policy.max_rounds]
        if not todo:
            return False
        for i in todo:
            if over_budget():
                return True
            timings[i].round(policy)
    return False


def time_point(run: Callable[[int], float], work: float, shape: tuple[int, ...],
               policy: NoisePolicy, over_budget: Callable[[], bool]) -> GridPoint:
    """Time one point alone.  ``run(n)`` runs the op ``n`` times back to back and returns the
    seconds it took (the real one synchronises a GPU; a test injects its own)."""
    t = PointTiming(run, work, shape)
    measure_points([t], policy, over_budget)
    return t.point()


def _runner(fn: Callable[[], object], device: torch.device,
            clock: Callable[[], float]) -> Callable[[int], float]:
    cuda = device.type == "cuda"

    def run(n: int) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        t0 = clock()
        for _ in range(n):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
        return clock() - t0

    return run


def measure_grid(
    device: torch.device,
    policy: NoisePolicy | None = None,
    *,
    gemm_axes: tuple[int, ...] | None = None,
    memory_elements: tuple[int, ...] | None = None,
    conv_shapes: tuple[tuple[int, ...], ...] | None = None,
    max_mnk: float | None = None,
    op_elements: tuple[int, ...] | None = None,
    ops: Sequence[MeasuredOp] = MEASURED_OPS,
    on_progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> ShapeGrid:
    """Measure the fixed cost, the GEMM grid, the convolutions, the memory-bound op
    classes and the ops timed alone (``ops`` at ``op_elements``) in float32 on ``device``."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    pol = policy or DEFAULT_POLICY[kind]
    axes = gemm_axes or GEMM_AXES[kind]
    sizes = memory_elements or MEMORY_ELEMENTS[kind]
    op_sizes = OP_ELEMENTS[kind] if op_elements is None else op_elements
    convs = CONV_SHAPES if conv_shapes is None else conv_shapes
    progress = on_progress or (lambda what: None)
    start = clock()
    hit = [False]

    def over() -> bool:
        if clock() - start > pol.budget_s:
            hit[0] = True
        return hit[0]

    timings: list[PointTiming] = []

    def point(fn: Callable[[], object], work: float, shape: tuple[int, ...]) -> int:
        timings.append(PointTiming(_runner(fn, device, clock), work, shape))
        return len(timings) - 1

    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device)

    one, out1 = torch.ones(1, device=device), torch.empty(1, device=device)
    i_fixed = point(lambda: torch.add(one, one, out=out1), 4 * 3, (1,))

    biggest = max(sizes)
    pool = (rand(max((biggest, *op_sizes))), rand(max((biggest, *op_sizes))))
    a, b, c = pool[0], pool[1], torch.empty(biggest, device=device)
    s = torch.empty((), device=device)
    larger: dict[int, list[int]] = {}
    i_memory: dict[str, list[int]] = {"copy": [], "add": [], "reduce": []}
    for n in sizes:
        x, y, z = a[:n], b[:n], c[:n]
        i_memory["copy"].append(point(partial(z.copy_, x), 2 * 4 * n, (n,)))
        i_memory["add"].append(point(partial(torch.add, x, y, out=z), 3 * 4 * n, (n,)))
        i_memory["reduce"].append(point(partial(torch.sum, x, dim=0, out=s), 4 * n + 4, (n,)))
    for idx in i_memory.values():
        for lo, hi in zip(idx, idx[1:]):
            larger[lo] = [hi]

    cap = max_mnk if max_mnk is not None else math.inf
    shapes = [(m, n, k) for m in axes for n in axes for k in axes]
    todo = [q for q in shapes if q[0] * q[1] * q[2] <= cap]
    # Contiguous operands cut from three flat buffers (a slice of a larger matrix would
    # have the larger matrix's row stride).
    lhs = rand(max((q[0] * q[2] for q in todo), default=1))
    rhs = rand(max((q[2] * q[1] for q in todo), default=1))
    res = torch.empty(max((q[0] * q[1] for q in todo), default=1), device=device)
    i_gemm: dict[tuple[int, int, int], int] = {}
    for m, n, k in todo:
        x, y = lhs[: m * k].view(m, k), rhs[: k * n].view(k, n)
        o = res[: m * n].view(m, n)
        i_gemm[(m, n, k)] = point(partial(torch.mm, x, y, out=o), 2.0 * m * n * k, (m, n, k))
    nxt = dict(zip(axes, axes[1:]))
    for (m, n, k), i in i_gemm.items():
        bigger = [(nxt[m], n, k)] if m in nxt else []
        bigger += [(m, nxt[n], k)] if n in nxt else []
        bigger += [(m, n, nxt[k])] if k in nxt else []
        larger[i] = [i_gemm[q] for q in bigger if q in i_gemm]

    i_conv: list[tuple[int, tuple[int, int, int], str]] = []
    scale = CONV_BATCH_SCALE[kind]
    for (bs, cin, hw, cout, kk, stride, pad, *rest) in convs:
        groups = rest[0] if rest else 1
        bs *= scale
        inp, w, bias = rand(bs, cin, hw, hw), rand(cout, cin // groups, kk, kk), rand(cout)
        ho = (hw + 2 * pad - kk) // stride + 1
        # The implicit GEMM per group, as op_shapes.gemm_shape counts a convolution.
        mm, nn_, kdim = bs * ho * ho * groups, cout // groups, (cin // groups) * kk * kk
        flops = 2.0 * mm * nn_ * kdim  # each phase does as much (torch's count)
        shape = (bs, cin, hw, hw, cout, kk, stride, pad, *((groups,) if groups > 1 else ()))
        i = point(partial(F.conv2d, inp, w, bias, stride=stride, padding=pad, groups=groups),
                  flops, shape)
        i_conv.append((i, (mm, nn_, kdim), "forward"))
        grad = rand(bs, cout, ho, ho)
        back = conv_backward_shapes(inp, w, grad, groups)
        assert back is not None
        for phase, mask, gemm_ in (("backward_input", [True, False, False], back[0]),
                                   ("backward_weight", [False, True, True], back[1])):
            i = point(partial(aten.convolution_backward, grad, inp, w, [cout], [stride] * 2,
                              [pad] * 2, [1, 1], False, [0, 0], groups, mask), flops, shape)
            i_conv.append((i, gemm_, phase))

    i_ops: list[list[int]] = []
    for op in ops if op_sizes else ():
        idx = []
        for n in op_sizes:
            call = op.build(n, _views(pool))
            idx.append(point(call.call, call.work(op.unit, device.type), call.shape))
        for lo, hi in zip(idx, idx[1:]):
            larger[lo] = [hi]
        i_ops.append(idx)

    progress(f"grid: {len(timings)} points (fixed cost, memory by size, GEMMs, convolutions, "
             f"{len(i_ops)} ops timed alone)")
    measure_points(timings, pol, over, larger)
    pts = [t.point() for t in timings]
    fixed = pts[i_fixed]
    memory = {op: tuple(pts[i] for i in idx) for op, idx in i_memory.items()}
    gemm = [pts[i_gemm[q]] if q in i_gemm else GridPoint(q, 2.0 * q[0] * q[1] * q[2], 0.0, 0.0,
                                                           0.0, rounds=0)
            for q in shapes]
    conv = [ConvPoint(pts[i], g, phase) for i, g, phase in i_conv]
    curves = tuple(OpCurve(op.name, op.ops, tuple(pts[i] for i in idx), op.unit)
                   for op, idx in zip(ops, i_ops))

    every = [fixed, *gemm, *(cp.point for cp in conv), *(q for v in memory.values() for q in v),
             *(q for cv in curves for q in cv.points)]
    return ShapeGrid(
        precision="fp32", fixed=fixed, gemm_m=axes, gemm_n=axes, gemm_k=axes,
        gemm=tuple(gemm), conv=tuple(conv), memory=memory,
        noise=noise_of(every, pol.threshold, pol.max_rounds, pol.budget_s, hit[0],
                       pol.min_rounds),
        elapsed_s=clock() - start, source=f"measured by layertime calibrate on {device}",
        op_curves=curves,
    )


def _views(pool: Sequence[torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A build's ``rand``: its i-th call a view of the i-th shared random buffer (in turn),
    so that an op's two inputs are distinct and no point draws random data of its own."""
    taken = [0]

    def rand(*shape: int) -> torch.Tensor:
        buf = pool[taken[0] % len(pool)]
        taken[0] += 1
        return buf[: math.prod(shape)].view(shape)

    return rand
