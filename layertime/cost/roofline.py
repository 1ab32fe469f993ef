"""Roofline prediction: time per layer and phase on a device profile, always an estimate.

Each op counted in a :class:`~layertime.results.cost.estimate.CostResult` takes the
larger of its compute time, FLOPs / (peak x compute efficiency), and its
memory time, bytes / (bandwidth x memory efficiency), plus the profile's
kernel latency for each kernel it launches (:func:`kernels_launched`); a
layer's phase time is the sum over its ops.  Efficiencies are per layer
kind, plain data that a profile or a later calibration can replace; the
defaults below are round guesses, not measurements, and are labelled as such.

With a profile that has a shape grid (``layertime calibrate`` measures one), an op's rate
comes from its shape instead: a matrix product's or convolution's FLOP/s from the grid at
its GEMM (M, N, K) (:mod:`layertime.cost.count.op_shapes`), a memory-bound op's bytes per second
at its bytes per call: on its own measured curve where ``calibrate`` timed the op alone
(batch norm, pooling, softmax, ``bernoulli_`` by elements, ...), else on its class's curve
(copy, reduce, add); the grid's fixed cost per op is the profile's kernel latency.  A
kind with an efficiency of its own in the profile (fitted by ``calibrate --fit``) or given
to :func:`predict` keeps it; ops without a shape (attention, ops with other formulas) use
the per-kind efficiencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field, replace

from layertime.cost.comm import DTYPE_BYTES
from layertime.cost.devices import KERNEL_SETS, DeviceProfile
from layertime.cost.count.kernel_choice import target_of_name
from layertime.errors import LayertimeError
from layertime.results.cost.estimate import CostResult, Prediction
from layertime.results.cost.rows import LayerCost, OpWork, PhaseTimes
from layertime.results.environment import Environment
from layertime.results.cost.shape_grid import ShapeGrid

#: Fraction of the peak FLOP/s that a layer kind's counted ops reach (uncalibrated guesses:
#: large GEMMs and convolutions typically reach 50-80% of peak on datacenter GPUs).
DEFAULT_COMPUTE_EFFICIENCY: Mapping[str, float] = {
    "conv": 0.6,
    "linear": 0.7,
    "attention": 0.5,
    "default": 0.5,
}
#: Fraction of the peak bandwidth that memory-bound ops reach (a guess; STREAM-like
#: kernels typically reach 80-90%).  ``update`` is the optimizer step.
DEFAULT_MEMORY_EFFICIENCY: Mapping[str, float] = {"default": 0.8}


#: Kernels one call of an op launches where it is not one, per kernel set, keyed by
#: (layer kind or "*" for any, op, phase).  Every other op launches one kernel per call:
#: an element-wise op, a reduction, a copy, one GEMM, one cuDNN convolution.
_KERNELS_PER_CALL: Mapping[str, Mapping[tuple[str, str, str], int]] = {
    "cuda": {
        # ATen's DilatedMaxPool2d.cu: grad_input.zero_(), then max_pool_backward_nchw (a
        # gather over the windows that hold each input element; Caffe's kernel).  The count's
        # bytes (grad_output, input and indices read, grad_input written) equal what the two
        # kernels move: the input is not read, but the fill writes as many bytes.
        ("*", "aten.max_pool2d_with_indices_backward", "backward_input"): 2,
        # Dropout: CUDA runs ATen's fused native_dropout, one kernel writing the output and a
        # bool mask (and native_dropout_backward, one kernel).  The count follows the meta
        # device's path, the CPU's bernoulli_ (the mask), div_ and mul: one kernel for the three.
        ("dropout", "aten.div_", "forward"): 0,
        ("dropout", "aten.mul", "forward"): 0,
    },
    "caffe": {
        # Caffe's PoolingLayer::Backward_gpu: caffe_gpu_set(bottom_diff, 0), then MaxPoolBackward.
        ("*", "aten.max_pool2d_with_indices_backward", "backward_input"): 2,
        # Caffe's DropoutLayer::Forward_gpu: caffe_gpu_rng_uniform (the mask), then
        # DropoutForward; Backward_gpu: DropoutBackward.
        ("dropout", "aten.bernoulli_", "forward"): 2,
        ("dropout", "aten.div_", "forward"): 0,
        ("dropout", "aten.mul", "forward"): 0,
    },
}
#: Ops a kernel set runs once per sample of the batch, with the kernels of one sample.
#: Caffe's ConvolutionLayer (no cuDNN) loops over the samples: forward im2col, gemm and
#: the bias gemm; backward the bias gemv, im2col and gemm for the weight gradient, gemm and
#: col2im for the input gradient.  A 1x1 convolution skips im2col and col2im, one kernel
#: fewer per sample and phase than counted here (the count does not keep kernel sizes).
_KERNELS_PER_SAMPLE: Mapping[str, Mapping[tuple[str, str, str], int]] = {
    "cuda": {},
    "caffe": {
        ("*", "aten.convolution", "forward"): 3,
        ("*", "aten.convolution_backward", "backward_input"): 2,
        ("*", "aten.convolution_backward", "backward_weight"): 3,
    },
}


def kernels_launched(kind: str, work: OpWork, kernels: str, batch_size: int) -> int:
    """How many kernels the calls of ``work`` (in a layer of ``kind``) launch with ``kernels``.

    One per call unless the kernel set's tables say otherwise; ops run once per sample launch
    their per-sample kernels ``batch_size`` times per call.
    """
    if kernels not in KERNEL_SETS:
        raise LayertimeError(f"unknown kernel set {kernels!r} (known: {', '.join(KERNEL_SETS)})")
    for table, scale in ((_KERNELS_PER_SAMPLE[kernels], batch_size), (_KERNELS_PER_CALL[kernels], 1)):
        for key in ((kind, work.op, work.phase), ("*", work.op, work.phase)):
            if key in table:
                return work.calls * table[key] * scale
    return work.calls


@dataclass(frozen=True)
class Efficiency:
    """Per-kind fractions of peak compute and peak bandwidth; ``default`` covers other kinds."""

    compute: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_COMPUTE_EFFICIENCY))
    memory: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MEMORY_EFFICIENCY))
    source: str = "defaults (uncalibrated)"

    def __post_init__(self) -> None:
        for what, table in (("compute", self.compute), ("memory", self.memory)):
            if "default" not in table:
                raise LayertimeError(f"{what} efficiency needs a 'default' entry")
            for k, v in table.items():
                if not 0 < v <= 1:
                    raise LayertimeError(f"{what} efficiency of {k} must be in (0, 1], not {v}")

    def compute_for(self, kind: str) -> float:
        return self.compute.get(kind, self.compute["default"])

    def memory_for(self, kind: str) -> float:
        return self.memory.get(kind, self.memory["default"])

    def overridden(
        self, compute: Mapping[str, float], memory: Mapping[str, float], source: str
    ) -> Efficiency:
        """These efficiencies with some kinds replaced."""
        if not compute and not memory:
            return self
        return Efficiency({**self.compute, **compute}, {**self.memory, **memory}, source)


@dataclass(frozen=True)
class MathMode:
    """Whether float32 convolutions and matmuls may use TF32 tensor cores.

    The defaults are PyTorch's: ``torch.backends.cudnn.allow_tf32`` is True
    (convolutions use TF32 on devices that have it) and
    ``torch.backends.cuda.matmul.allow_tf32`` is False.
    """

    conv_tf32: bool = True
    matmul_tf32: bool = False

    @classmethod
    def of_run(cls, environment: Environment) -> MathMode:
        """The settings a measured run recorded (torch's defaults where it has none)."""
        return cls(
            conv_tf32=True if environment.conv_tf32 is None else environment.conv_tf32,
            matmul_tf32=bool(environment.matmul_tf32),
        )


def math_peaks(profile: DeviceProfile, dtype: str, mode: MathMode = MathMode()) -> dict[str, str]:
    """The precision whose peak each math class (conv, matmul, other) runs at."""
    has = profile.peak_tflops
    if dtype == "float64":
        if "fp64" not in has:
            raise LayertimeError(f"device profile {profile.key} gives no fp64_tflops for float64")
        return {"conv": "fp64", "matmul": "fp64", "other": "fp64"}
    if dtype == "bfloat16":
        tc = "bf16" if "bf16" in has else "fp32"
        return {"conv": tc, "matmul": tc, "other": "fp32"}
    if dtype == "float16":
        tc = "fp16" if "fp16" in has else "fp32"
        return {"conv": tc, "matmul": tc, "other": "fp32"}
    tf32 = "tf32" if "tf32" in has else "fp32"
    return {
        "conv": tf32 if mode.conv_tf32 else "fp32",
        "matmul": tf32 if mode.matmul_tf32 else "fp32",
        "other": "fp32",
    }


#: Memory-bound ops timed on the grid's copy or reduction curve; every other op on its
#: element-wise add's (``layertime.results.cost.shape_grid.MEMORY_OPS``).
_COPY_OPS = frozenset({
    "aten.copy_", "aten.clone", "aten._to_copy", "aten.cat", "aten.constant_pad_nd",
    "aten.fill_", "aten.zero_", "aten.zeros_like", "aten.ones_like", "aten.stack",
    "aten.index_select", "aten.embedding", "aten.slice_scatter", "aten.select_scatter",
})
_REDUCE_OPS = frozenset({
    "aten.sum", "aten.mean", "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.var",
    "aten.std", "aten.var_mean", "aten.linalg_vector_norm", "aten.norm", "aten.any",
    "aten.all", "aten.argmax", "aten.argmin", "aten.prod",
})


def memory_class(op: str) -> str:
    """Which measured memory-bound curve an op is timed on: copy, reduce or add."""
    if op in _COPY_OPS:
        return "copy"
    if op in _REDUCE_OPS:
        return "reduce"
    return "add"


@dataclass
class _GridUse:
    """How a prediction used a shape grid (one per :func:`predict` call)."""

    grid: ShapeGrid
    #: Kinds whose compute or memory efficiency the profile or the caller set: not the grid.
    own_compute: Set[str]
    own_memory: Set[str]
    #: Bytes per element of the counted step's dtype (an op curve by elements divides by it).
    dtype_bytes: int = 4
    lookups: int = 0
    clamped: int = 0
    #: Memory-bound op lookups on a measured op curve, and on a class curve.
    op_curve: int = 0
    class_curve: int = 0

    def op_time(self, w: OpWork, kind: str) -> float | None:
        """The seconds of ``w``'s calls on its op's measured curve, net of the fixed cost
        (which :func:`_row_times` adds once per call); None when the op was not timed
        alone, or its kind keeps an efficiency of its own."""
        if kind in self.own_memory or not w.calls:
            return None
        curve = self.grid.op_curve(w.op)
        if curve is None:
            return None
        amount = w.bytes_moved / (self.dtype_bytes if curve.unit == "elements" else 1)
        look = self.grid.op_rate(w.op, amount / w.calls)
        if look is None:
            return None
        self.lookups += 1
        self.op_curve += 1
        self.clamped += look.clamped
        return amount / look.per_s

    def compute_rate(self, w: OpWork, kind: str, peak: float, profile: DeviceProfile
                     ) -> float | None:
        if kind in self.own_compute or w.gemm is None or w.math not in ("conv", "matmul"):
            return None
        look = (self.grid.conv_flops_per_s(*w.gemm, phase=w.phase, family=w.conv_family)
                if w.math == "conv"
                else self.grid.gemm_flops_per_s(*w.gemm))
        self.lookups += 1
        self.clamped += look.clamped
        # The grid was measured at its precision; another precision scales by the peaks.
        at = profile.peak_flops_per_s(self.grid.precision)
        return look.per_s * (peak / at if at else 1.0)

    def memory_rate(self, w: OpWork, kind: str) -> float | None:
        """Bytes per second of a memory-bound op on the grid's class curve at its bytes per
        call; None (the profile's bandwidth instead) for the optimizer step: it streams every
        parameter, gradient and state tensor once, long after the backward evicted them from
        the caches, where a class-curve point of the same size reuses warm buffers (AlexNet's
        update on this CPU: 26 GB/s measured, 180 GB/s on the curve at 22 MB per call)."""
        if kind in self.own_memory or not w.calls or w.phase == "update":
            return None
        look = self.grid.memory_bytes_per_s(memory_class(w.op), w.bytes_moved / w.calls)
        self.lookups += 1
        self.class_curve += 1
        self.clamped += look.clamped
        return look.per_s


def _row_times(
    row: LayerCost,
    profile: DeviceProfile,
    peaks: Mapping[str, str],
    eff: Efficiency,
    batch_size: int,
    grid: _GridUse | None = None,
) -> PhaseTimes:
    bandwidth = profile.memory_bytes_per_s
    times = {"forward": 0.0, "backward_input": 0.0, "backward_weight": 0.0, "update": 0.0}
    for w in row.ops:
        kind = "update" if w.phase == "update" else row.kind
        peak = profile.peak_flops_per_s(peaks.get(w.math, "fp32"))
        assert peak is not None  # math_peaks only names precisions the profile has
        measured_s = grid.op_time(w, kind) if grid is not None and w.bytes_moved else None
        if grid is not None and measured_s is not None:
            # Timed alone per call, its kernels and dispatch included: the fixed cost once
            # per call, so that a call at a measured point gives back the point's time.
            times[w.phase] += measured_s + w.calls * grid.grid.fixed_s
            continue
        compute_s = memory_s = 0.0
        if w.flops:
            rate = grid.compute_rate(w, kind, peak, profile) if grid else None
            compute_s = w.flops / (rate if rate else peak * eff.compute_for(kind))
        if w.bytes_moved:
            rate = grid.memory_rate(w, kind) if grid else None
            memory_s = w.bytes_moved / (rate if rate else bandwidth * eff.memory_for(kind))
        launch_s = 0.0
        if profile.kernel_latency_s:
            n = kernels_launched(row.kind, w, profile.kernels, batch_size)
            launch_s = n * profile.kernel_latency_s
        times[w.phase] += max(compute_s, memory_s) + launch_s
    return PhaseTimes(
        forward_s=times["forward"],
        backward_s=times["backward_input"] + times["backward_weight"],
        update_s=times["update"],
    )


def predict(
    cost: CostResult,
    profile: DeviceProfile,
    efficiency: Efficiency | None = None,
    mode: MathMode = MathMode(),
) -> CostResult:
    """A copy of ``cost`` with a roofline estimate per layer and phase on ``profile``.

    Efficiencies are the defaults, overridden by the profile's own, overridden
    by ``efficiency`` when given.
    """
    eff = Efficiency()
    eff = eff.overridden(
        profile.compute_efficiency,
        profile.memory_efficiency,
        profile.efficiency_source or f"device profile {profile.key}",
    )
    if efficiency is not None:
        eff = eff.overridden(efficiency.compute, efficiency.memory, efficiency.source)
    grid = None
    source = eff.source
    if profile.grid is not None:
        own_c = set(profile.compute_efficiency) | set(efficiency.compute if efficiency else ())
        own_m = set(profile.memory_efficiency) | set(efficiency.memory if efficiency else ())
        grid = _GridUse(profile.grid, own_c - {"default"}, own_m - {"default"},
                        DTYPE_BYTES.get(cost.dtype, 4))
    peaks = math_peaks(profile, cost.dtype, mode)
    n = cost.batch_size
    layers = [replace(r, predicted=_row_times(r, profile, peaks, eff, n, grid))
              for r in cost.layers]
    loss = replace(cost.loss, predicted=_row_times(cost.loss, profile, peaks, eff, n, grid))
    if grid is not None:
        source = (f"shape grid ({grid.grid.source}): matrix products and convolutions by "
                  f"(M, N, K), memory-bound ops by size (on their own measured curve: "
                  f"{grid.op_curve} lookups; on a class curve: {grid.class_curve}); per kind "
                  f"({eff.source}) for "
                  + (f"{', '.join(sorted(grid.own_compute | grid.own_memory))} and " if
                     grid.own_compute or grid.own_memory else "")
                  + "ops without a shape")
    kinds = sorted({r.kind for r in (*layers, loss)} | {"default", "update"})
    prediction = Prediction(
        device=profile.key,
        device_name=profile.name,
        source=profile.source,
        peak_tflops=dict(profile.peak_tflops),
        memory_bandwidth_gb_per_s=profile.memory_bandwidth_gb_per_s,
        memory_gb=profile.memory_gb,
        compute_efficiency={k: eff.compute_for(k) for k in kinds},
        memory_efficiency={k: eff.memory_for(k) for k in kinds},
        efficiency_source=source,
        math_peaks=peaks,
        kernel_latency_s=profile.kernel_latency_s,
        kernels=profile.kernels,
        grid_source=profile.grid.source if profile.grid is not None else None,
        grid_lookups=grid.lookups if grid else 0,
        grid_clamped=grid.clamped if grid else 0,
        grid_op_curve_lookups=grid.op_curve if grid else 0,
        grid_class_curve_lookups=grid.class_curve if grid else 0,
    )
    warnings = list(cost.warnings)
    wanted = target_of_name(profile.name).describe()
    if cost.kernel_target and cost.kernel_target.split(" ")[0] != wanted.split(" ")[0]:
        warnings.append(
            f"counted with the kernels of {cost.kernel_target}, predicted on {profile.name} "
            f"({wanted}): count with kernel_target=target_of_profile(profile) to follow its "
            "kernels (attention backend, optimizer)"
        )
    need = cost.memory_bytes.total
    if profile.memory_gb is not None and need > profile.memory_gb * 1e9:
        warnings.append(
            f"weights, gradients, optimizer state and saved activations need "
            f"{need / 1e9:.1f} GB, more than the {profile.memory_gb:g} GB of {profile.name}"
        )
    return replace(
        cost.with_layers(layers, loss), prediction=prediction, warnings=tuple(warnings)
    )
