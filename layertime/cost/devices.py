"""Device profiles: peak arithmetic rates and memory bandwidth, built in or from a TOML file.

Peaks are dense (no structured sparsity), at boost clock where the vendor
quotes one, in TFLOP/s; bandwidth is in GB/s (10^9 bytes).  Each entry names
its source.  A user file adds or overrides profiles::

    [devices.my-gpu]
    name = "My GPU"
    fp32_tflops = 30.0
    tf32_tflops = 60.0          # optional, tensor cores
    bf16_tflops = 120.0         # optional
    fp16_tflops = 120.0         # optional
    fp64_tflops = 0.5           # optional
    memory_bandwidth_gb_per_s = 900.0
    memory_gb = 24              # optional
    source = "vendor datasheet"

    kernel_latency_us = 2.0     # optional, added per kernel launched (default 0)
    kernels = "cuda"            # optional: whose kernels run, "cuda" (default) or "caffe"
    intra_node_link_gbps = 3600 # optional: GPU to GPU in a node, Gbit/s each way (NVLink)
    intra_node_link_latency_us = 5   # optional (default 5)
    inter_node_link_gbps = 400  # optional: per GPU between nodes, Gbit/s (its network card)
    inter_node_link_latency_us = 5   # optional (default 5)

    [devices.my-gpu.compute_efficiency]   # optional, per layer kind
    conv = 0.5
    [devices.my-gpu.memory_efficiency]    # optional, per layer kind
    default = 0.7

``layertime calibrate`` writes measured profiles of this machine to the user
file, ``$XDG_CONFIG_HOME/layertime/devices.toml`` (:func:`user_profiles_path`),
which every command reads when it exists; :func:`find_profile` looks a name up
in the built-in table, then that file, then a ``--profiles`` file.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from layertime.errors import BadValue, LayertimeError
from layertime.results.parallel.comm import DEFAULT_LATENCY_US, Link
from layertime.results.cost.shape_grid import ShapeGrid

#: The precisions a profile may give a peak for, in the order tables show them.
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp64")

#: Whose kernels a profile's device runs, which decides how many kernels each op launches
#: (``layertime.cost.roofline.kernels_launched``): PyTorch's CUDA kernels (cuDNN convolutions
#: over the whole batch), or Caffe's own (no cuDNN: im2col + gemm once per sample).
KERNEL_SETS: tuple[str, ...] = ("cuda", "caffe")


@dataclass(frozen=True)
class DeviceProfile:
    """Peaks and bandwidth of one device; efficiencies (optional) override the defaults."""

    key: str
    name: str
    #: Dense peak TFLOP/s per precision; tf32/bf16/fp16 are tensor-core rates
    #: where the device has tensor cores.
    peak_tflops: Mapping[str, float]
    memory_bandwidth_gb_per_s: float
    source: str
    memory_gb: float | None = None
    compute_efficiency: Mapping[str, float] = field(default_factory=dict)
    memory_efficiency: Mapping[str, float] = field(default_factory=dict)
    #: Where the efficiencies come from (e.g. a calibration fit); None: "device profile KEY".
    efficiency_source: str | None = None
    #: Seconds added per kernel launched: launch, ramp-up and drain that a roofline of the
    #: kernel's work leaves out (0: no launch term, as for CPU profiles).
    kernel_latency_s: float = 0.0
    #: One of KERNEL_SETS.
    kernels: str = "cuda"
    #: Links for the sharded what-if (``cost --fsdp/--tp``): between the GPUs of one node
    #: (the tensor-parallel group's), and from one GPU to other nodes (the data-parallel
    #: group's); None where the profile does not say.
    intra_node_link: Link | None = None
    inter_node_link: Link | None = None
    #: Times by op shape (``layertime calibrate``'s grid): predictions look an op's rate up
    #: by its shape instead of a per-kind efficiency.  None: no grid (every built-in profile).
    grid: ShapeGrid | None = None

    def __post_init__(self) -> None:
        if self.kernels not in KERNEL_SETS:
            raise LayertimeError(
                f"device profile {self.key}: kernels must be one of {', '.join(KERNEL_SETS)}, "
                f"not {self.kernels!r}"
            )
        if not (math.isfinite(self.kernel_latency_s) and self.kernel_latency_s >= 0):
            raise LayertimeError(
                f"device profile {self.key}: kernel latency must be >= 0 s, "
                f"not {self.kernel_latency_s!r}"
            )

    def peak_flops_per_s(self, precision: str) -> float | None:
        """The peak for ``precision`` in FLOP/s, or None when the device has none."""
        v = self.peak_tflops.get(precision)
        return v * 1e12 if v else None

    @property
    def memory_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gb_per_s * 1e9


def _p(
    key: str,
    name: str,
    *,
    fp32: float,
    bw: float,
    mem: float,
    source: str,
    tf32: float | None = None,
    bf16: float | None = None,
    fp16: float | None = None,
    fp64: float | None = None,
    kernels: str = "cuda",
    kernel_latency_s: float = 0.0,
    compute_efficiency: Mapping[str, float] | None = None,
    memory_efficiency: Mapping[str, float] | None = None,
    efficiency_source: str | None = None,
    nvlink_gb_per_s: float | None = None,
) -> DeviceProfile:
    """A built-in profile; ``nvlink_gb_per_s`` is the datasheet's total NVLink bandwidth per
    GPU (both directions), half of which each way is the intra-node link."""
    peaks = {"fp32": fp32, "tf32": tf32, "bf16": bf16, "fp16": fp16, "fp64": fp64}
    return DeviceProfile(
        key=key,
        name=name,
        peak_tflops={k: v for k, v in peaks.items() if v is not None},
        memory_bandwidth_gb_per_s=bw,
        memory_gb=mem,
        source=source,
        kernels=kernels,
        kernel_latency_s=kernel_latency_s,
        compute_efficiency=dict(compute_efficiency or {}),
        memory_efficiency=dict(memory_efficiency or {}),
        efficiency_source=efficiency_source,
        intra_node_link=(
            Link(nvlink_gb_per_s / 2 * 8, DEFAULT_LATENCY_US,
                 f"NVLink {nvlink_gb_per_s:g} GB/s per GPU ({source}), half each way; "
                 "latency: the default, not measured")
            if nvlink_gb_per_s else None
        ),
    )


#: The GTX Titan X's kernel latency and per-kind efficiencies, fitted by
#: ``benchmarks/caffe_reference.py`` (``layertime.cost.fit.fit_layer_times`` on OverFeat and
#: GoogLeNet together; the script prints the fit, the fit on each network alone judged on
#: the other, and checks that these digits are the fit's).  The data: Caffe's per-layer
#: forward and backward times at batch 128, float32, Caffe's own kernels (no cuDNN), one
#: synchronisation per layer (soumith/convnet-benchmarks b458aab, caffe/output_overfeat.log
#: and output_googlenet.log).  So they describe Caffe-era per-layer timing on that GPU:
#: the convolution efficiency is that of Caffe's per-sample im2col + cuBLAS sgemm, at the
#: datasheet's 6.14 TFLOP/s (base clock), with 2 us per kernel launched.
TITANX_CAFFE_KERNEL_LATENCY_S = 1.995e-6
TITANX_CAFFE_COMPUTE_EFFICIENCY: Mapping[str, float] = {"conv": 0.885, "linear": 0.664}
TITANX_CAFFE_MEMORY_EFFICIENCY: Mapping[str, float] = {
    "activation": 0.665,  # ReLU, in place
    "pool": 0.322,  # max-pooling (the fill and gather of its backward) and one average pool
    "other": 0.596,  # GoogLeNet's Concat and Split layers (the inception modules' own rows)
    # Kinds the logs do not time (norm, dropout, loss, the update) take ReLU's: the
    # simplest streaming kernel measured.
    "default": 0.665,
}
TITANX_CAFFE_SOURCE = (
    "fitted to Caffe's per-layer times of OverFeat and GoogLeNet on a GTX Titan X "
    "(convnet-benchmarks, batch 128, no cuDNN; benchmarks/caffe_reference.py): "
    "Caffe-era per-layer timing"
)
#: The kernel latency of the other built-in GPU profiles: the Titan X's, carried over as an
#: order of magnitude (a launch costs microseconds through CUDA's driver on every
#: generation), not measured on them.  Their efficiencies stay the uncalibrated defaults of
#: ``layertime.cost.roofline``: Caffe's FP32 kernels on Maxwell say nothing of cuDNN's or
#: of tensor cores.
GPU_KERNEL_LATENCY_S = TITANX_CAFFE_KERNEL_LATENCY_S
GPU_EFFICIENCY_SOURCE = (
    "defaults (uncalibrated); kernel latency carried over from the titanx-maxwell fit"
)


class _GpuDefaults(TypedDict):
    kernel_latency_s: float
    efficiency_source: str


def builtin_profiles() -> dict[str, DeviceProfile]:
    """The built-in table, keyed by profile name (a new dict each call)."""
    gpu = _GpuDefaults(kernel_latency_s=GPU_KERNEL_LATENCY_S,
                       efficiency_source=GPU_EFFICIENCY_SOURCE)
    profiles = [
        # GeForce GTX 580 (Fermi GF110, 2010), the GPUs AlexNet was trained on:
        # 512 CUDA cores x 1544 MHz shader clock x 2 = 1581 GFLOP/s FP32; FP64
        # capped at 1/8; 192.4 GB/s GDDR5 (4008 MT/s, 384-bit); 1.5 GB (3 GB
        # boards existed).  No tensor cores, no fast FP16.
        # Source: NVIDIA GeForce GTX 580 specifications page.
        _p("gtx580", "NVIDIA GeForce GTX 580", fp32=1.581, fp64=0.198, bw=192.4, mem=1.5,
           source="NVIDIA GeForce GTX 580 specifications", **gpu),
        # Tesla K40 (Kepler GK110B, 2013): 4.29 TFLOP/s FP32 and 1.43 FP64 at
        # base clock, 288 GB/s, 12 GB GDDR5.
        # Source: NVIDIA Tesla K40 GPU Accelerator board specification / datasheet.
        _p("k40", "NVIDIA Tesla K40", fp32=4.29, fp64=1.43, bw=288.0, mem=12,
           source="NVIDIA Tesla K40 datasheet", **gpu),
        # GeForce GTX TITAN X (Maxwell GM200, 2015): 3072 cores x 1000 MHz base
        # x 2 = 6.14 TFLOP/s FP32 (6.6 at 1075 MHz boost; base used); FP64 1/32;
        # 336.5 GB/s (7 Gbps, 384-bit); 12 GB.
        # Source: NVIDIA GeForce GTX TITAN X specifications page.
        _p("titanx-maxwell", "NVIDIA GeForce GTX TITAN X (Maxwell)", fp32=6.14, fp64=0.19,
           bw=336.5, mem=12, source="NVIDIA GeForce GTX TITAN X specifications",
           kernels="caffe", kernel_latency_s=TITANX_CAFFE_KERNEL_LATENCY_S,
           compute_efficiency=TITANX_CAFFE_COMPUTE_EFFICIENCY,
           memory_efficiency=TITANX_CAFFE_MEMORY_EFFICIENCY,
           efficiency_source=TITANX_CAFFE_SOURCE),
        # Tesla P100 SXM2 (Pascal GP100, 2016): 10.6 TFLOP/s FP32, 21.2 FP16
        # (packed half2 on CUDA cores, no tensor cores), 5.3 FP64, 732 GB/s HBM2, 16 GB.
        # Source: NVIDIA Tesla P100 datasheet (NVLink version).
        _p("p100", "NVIDIA Tesla P100 SXM2", fp32=10.6, fp16=21.2, fp64=5.3, bw=732.0, mem=16,
           source="NVIDIA Tesla P100 datasheet (SXM2)", **gpu),
        # Tesla V100 SXM2 (Volta GV100, 2017): 15.7 TFLOP/s FP32, 125 tensor
        # (FP16 in, FP32 accumulate), 7.8 FP64, 900 GB/s HBM2, 16/32 GB; NVLink 300 GB/s.
        # No TF32 or BF16 (BF16 runs at FP32 rate here).
        # Source: NVIDIA Tesla V100 datasheet (SXM2).
        _p("v100", "NVIDIA Tesla V100 SXM2", fp32=15.7, fp16=125.0, fp64=7.8, bw=900.0, mem=32,
           source="NVIDIA Tesla V100 datasheet (SXM2)", nvlink_gb_per_s=300.0, **gpu),
        # A100 SXM4 80GB (Ampere GA100, 2020): 19.5 TFLOP/s FP32, 156 TF32
        # tensor, 312 BF16/FP16 tensor (dense; datasheet's 312/624 are with
        # sparsity), 9.7 FP64 (19.5 FP64 tensor), 2039 GB/s HBM2e, 80 GB; NVLink
        # (third generation) 600 GB/s per GPU.
        # Source: NVIDIA A100 Tensor Core GPU datasheet.
        _p("a100", "NVIDIA A100 SXM4 80GB", fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0,
           fp64=9.7, bw=2039.0, mem=80, source="NVIDIA A100 datasheet (SXM4 80GB)",
           nvlink_gb_per_s=600.0, **gpu),
        # A100 SXM4 40GB: the same compute, 1555 GB/s HBM2.
        # Source: NVIDIA A100 Tensor Core GPU datasheet.
        _p("a100-40gb", "NVIDIA A100 SXM4 40GB", fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0,
           fp64=9.7, bw=1555.0, mem=40, source="NVIDIA A100 datasheet (SXM4 40GB)",
           nvlink_gb_per_s=600.0, **gpu),
        # H100 SXM5 (Hopper GH100, 2022): 67 TFLOP/s FP32, tensor TF32 494.5,
        # BF16/FP16 989.5 (the datasheet's 989/1979 are with sparsity: halved),
        # 34 FP64, 3.35 TB/s HBM3, 80 GB; NVLink (fourth generation) 900 GB/s per GPU.
        # Source: NVIDIA H100 Tensor Core GPU datasheet (SXM).
        _p("h100", "NVIDIA H100 SXM5 80GB", fp32=67.0, tf32=494.5, bf16=989.5, fp16=989.5,
           fp64=34.0, bw=3350.0, mem=80, source="NVIDIA H100 datasheet (SXM)",
           nvlink_gb_per_s=900.0, **gpu),
        # H100 PCIe: 51 TFLOP/s FP32, tensor TF32 378, BF16/FP16 756.5 (the
        # datasheet's 756/1513 with sparsity, halved),
        # 26 FP64, 2.0 TB/s HBM2e, 80 GB.
        # Source: NVIDIA H100 Tensor Core GPU datasheet (PCIe).
        _p("h100-pcie", "NVIDIA H100 PCIe 80GB", fp32=51.0, tf32=378.0, bf16=756.5, fp16=756.5,
           fp64=26.0, bw=2000.0, mem=80, source="NVIDIA H100 datasheet (PCIe)", **gpu),
        # H200 SXM (Hopper GH100 with HBM3e, 2024): compute as H100 SXM (67
        # FP32; TF32 989 and BF16/FP16 1979 with sparsity, halved), 4.8 TB/s, 141 GB;
        # NVLink 900 GB/s per GPU.
        # Source: NVIDIA H200 Tensor Core GPU datasheet.
        _p("h200", "NVIDIA H200 SXM 141GB", fp32=67.0, tf32=494.5, bf16=989.5, fp16=989.5,
           fp64=34.0, bw=4800.0, mem=141, source="NVIDIA H200 datasheet (SXM)",
           nvlink_gb_per_s=900.0, **gpu),
        # Tesla T4 (Turing TU104, 2018): 8.1 TFLOP/s FP32, 65 FP16 tensor
        # (mixed precision), 320 GB/s GDDR6, 16 GB.  No TF32/BF16.
        # Source: NVIDIA T4 Tensor Core GPU datasheet.
        _p("t4", "NVIDIA Tesla T4", fp32=8.1, fp16=65.0, bw=320.0, mem=16,
           source="NVIDIA T4 datasheet", **gpu),
    ]
    return {p.key: p for p in profiles}


_REQUIRED = ("fp32_tflops", "memory_bandwidth_gb_per_s")
_OPTIONAL_NUM = ("tf32_tflops", "bf16_tflops", "fp16_tflops", "fp64_tflops", "memory_gb")
_KNOWN = set(_REQUIRED) | set(_OPTIONAL_NUM) | {
    "name",
    "source",
    "efficiency_source",
    "compute_efficiency",
    "memory_efficiency",
    "kernel_latency_us",
    "kernels",
    "intra_node_link_gbps",
    "intra_node_link_latency_us",
    "inter_node_link_gbps",
    "inter_node_link_latency_us",
    "grid",
}


def _line_of(text: str, key: str, field: str | None = None) -> int | None:
    """The line of a profile's table header, or of one of its fields, in the TOML text."""
    header = re.compile(
        r"^[ \t]*\[\s*devices\s*\.\s*\"?" + re.escape(key) + r"\"?\s*\]", re.M
    )
    m = header.search(text)
    if m is None:
        return None
    start = m.start()
    if field is not None:
        top = field.split(".")[0]
        nxt = re.compile(r"^[ \t]*\[(?!\s*devices\s*\.\s*\"?" + re.escape(key) + r"\"?\s*\.)", re.M)
        end_m = nxt.search(text, m.end())
        end = end_m.start() if end_m else len(text)
        fm = re.compile(
            r"^[ \t]*(" + re.escape(top) + r"[ \t]*=|\[[^\]]*\." + re.escape(top) + r"\s*\])", re.M
        ).search(text, m.end(), end)
        if fm is not None:
            start = fm.start()
    return text.count("\n", 0, start) + 1


def _number(value: Any, where: str, what: str, *, fraction: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LayertimeError(f"{where}: {what} must be a number, not {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0 or (fraction and v > 1):
        bound = "in (0, 1]" if fraction else "> 0"
        raise LayertimeError(f"{where}: {what} must be {bound}, not {value!r}")
    return v


def _efficiencies(value: Any, where: str, what: str) -> dict[str, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"default": _number(value, where, what, fraction=True)}
    if not isinstance(value, dict):
        raise LayertimeError(f"{where}: {what} must be a table of kind = fraction")
    return {str(k): _number(v, where, f"{what}.{k}", fraction=True) for k, v in value.items()}


def parse_profiles(text: str, path: str = "<text>") -> dict[str, DeviceProfile]:
    """Profiles from TOML text; errors name the file and line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg).strip()
        if m:
            raise LayertimeError(
                f"{path}:{m.group(1)}: not valid TOML: {reason} (column {m.group(2)})"
            ) from e
        raise LayertimeError(f"{path}: not valid TOML: {reason}") from e
    devices = data.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise LayertimeError(f"{path}: no [devices.NAME] tables (see 'layertime cost --help')")
    out: dict[str, DeviceProfile] = {}
    for key, body in devices.items():

        def where(field: str | None = None, _key: str = key) -> str:
            line = _line_of(text, _key, field)
            return (f"{path}:{line}" if line else path) + f" [devices.{_key}]"

        if not isinstance(body, dict):
            raise LayertimeError(f"{where()}: must be a table")
        unknown = sorted(set(body) - _KNOWN)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(_KNOWN), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LayertimeError(f"{where(unknown[0])}: unknown field {unknown[0]!r}{hint}")
        missing = [k for k in _REQUIRED if k not in body]
        if missing:
            raise LayertimeError(f"{where()}: missing {', '.join(missing)}")
        peaks = {"fp32": _number(body["fp32_tflops"], where("fp32_tflops"), "fp32_tflops")}
        for prec in ("tf32", "bf16", "fp16", "fp64"):
            f = f"{prec}_tflops"
            if f in body:
                peaks[prec] = _number(body[f], where(f), f)
        mem = body.get("memory_gb")
        bw = "memory_bandwidth_gb_per_s"
        latency_us = body.get("kernel_latency_us", 0.0)
        if (isinstance(latency_us, bool) or not isinstance(latency_us, (int, float))
                or not math.isfinite(latency_us) or latency_us < 0):
            raise LayertimeError(
                f"{where('kernel_latency_us')}: kernel_latency_us must be a number >= 0, "
                f"not {latency_us!r}"
            )
        kernels = body.get("kernels", "cuda")
        if kernels not in KERNEL_SETS:
            raise LayertimeError(
                f"{where('kernels')}: kernels must be one of "
                f"{', '.join(repr(k) for k in KERNEL_SETS)}, not {kernels!r}"
            )
        links: dict[str, Link | None] = {}
        for which in ("intra_node_link", "inter_node_link"):
            gbps, lat = f"{which}_gbps", f"{which}_latency_us"
            if lat in body and gbps not in body:
                raise LayertimeError(f"{where(lat)}: {lat} needs {gbps}")
            if gbps not in body:
                links[which] = None
                continue
            latency = body.get(lat, DEFAULT_LATENCY_US)
            if (isinstance(latency, bool) or not isinstance(latency, (int, float))
                    or not math.isfinite(latency) or latency < 0):
                raise LayertimeError(f"{where(lat)}: {lat} must be a number >= 0, "
                                     f"not {latency!r}")
            links[which] = Link(_number(body[gbps], where(gbps), gbps), float(latency),
                                f"device profile {key} ({path})")
        grid = None
        if "grid" in body:
            try:
                grid = ShapeGrid.from_dict(body["grid"])
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
                raise LayertimeError(f"{where('grid')}: malformed grid ({type(e).__name__}: "
                                     f"{e})") from e
        out[key] = DeviceProfile(
            key=key,
            name=str(body.get("name", key)),
            peak_tflops=peaks,
            memory_bandwidth_gb_per_s=_number(body[bw], where(bw), bw),
            source=str(body.get("source", f"user profile {path}")),
            efficiency_source=(
                str(body["efficiency_source"]) if "efficiency_source" in body else None
            ),
            memory_gb=_number(mem, where("memory_gb"), "memory_gb") if mem is not None else None,
            compute_efficiency=_efficiencies(
                body.get("compute_efficiency", {}), where("compute_efficiency"),
                "compute_efficiency",
            ),
            memory_efficiency=_efficiencies(
                body.get("memory_efficiency", {}), where("memory_efficiency"), "memory_efficiency"
            ),
            kernel_latency_s=float(latency_us) * 1e-6,
            kernels=str(kernels),
            intra_node_link=links["intra_node_link"],
            inter_node_link=links["inter_node_link"],
            grid=grid,
        )
    return out


def load_profiles(path: str | Path) -> dict[str, DeviceProfile]:
    """Profiles from a TOML file (see the module docstring for its format)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise LayertimeError(f"cannot read {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise LayertimeError(f"{p}: not a text file ({e.reason})") from e
    return parse_profiles(text, str(p))


#: How ``torch.cuda.get_device_name()`` names each built-in device (it never
#: matches the datasheet's name: "NVIDIA H200", not "NVIDIA H200 SXM 141GB").
#: Patterns are searched, case-insensitively, in the reported name.
_DEVICE_NAME_PATTERNS: dict[str, str] = {
    "gtx580": r"\bgtx 580\b",
    "k40": r"\bk40",
    "titanx-maxwell": r"\btitan x\b(?!p)(?! \(pascal)",
    "p100": r"\bp100\b",
    "v100": r"\bv100\b",
    "a100": r"\ba100\b.*80\s*gb",
    "a100-40gb": r"\ba100\b(?!.*80\s*gb)",
    "h100": r"\bh100\b(?!.*pcie)",
    "h100-pcie": r"\bh100\b.*pcie",
    "h200": r"\bh200\b",
    "t4": r"\bt4\b",
}


def matches_device(key: str, name: str, device_name: str) -> bool:
    """Whether ``device_name`` (as torch reports it) is the device of the profile
    ``key`` named ``name``.

    Exact names match (a calibrated profile keeps torch's name); built-in
    profiles match by the pattern of their model number.
    """
    if name.strip().lower() == device_name.strip().lower():
        return True
    pattern = _DEVICE_NAME_PATTERNS.get(key)
    return pattern is not None and re.search(pattern, device_name, re.I) is not None


def profile_for_device(device_name: str) -> DeviceProfile | None:
    """The built-in profile of a device torch names ``device_name``, if there is one."""
    for prof in builtin_profiles().values():
        if matches_device(prof.key, prof.name, device_name):
            return prof
    return None


def get_profile(name: str, extra: Mapping[str, DeviceProfile] | None = None) -> DeviceProfile:
    """A profile by name: the user's ``extra`` first, then the built-in table."""
    table = {**builtin_profiles(), **(extra or {})}
    key = name.strip().lower()
    for k, prof in table.items():
        if k.lower() == key:
            return prof
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    raise BadValue(
        f"unknown device profile {name!r} ({hint}known: {', '.join(sorted(table))})"
    )


def user_profiles_path() -> Path:
    """The user's profile file: ``$XDG_CONFIG_HOME/layertime/devices.toml``
    (``~/.config/layertime/devices.toml``); ``layertime calibrate`` writes there."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "layertime" / "devices.toml"


def user_profiles() -> dict[str, DeviceProfile]:
    """Profiles of the user's file, or none when it does not exist."""
    path = user_profiles_path()
    return load_profiles(path) if path.is_file() else {}


def find_profile(name: str, profiles_file: str | Path | None = None) -> DeviceProfile:
    """A profile by name: a ``profiles_file`` first, then the user's file, then the built-ins."""
    extra = {**user_profiles(), **(load_profiles(profiles_file) if profiles_file else {})}
    return get_profile(name, extra)
