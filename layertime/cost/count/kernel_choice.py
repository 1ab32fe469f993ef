"""Which kernel the target device runs for ops that have several: scaled dot-product
attention's backend and the optimizer's implementation, chosen by torch's own rules.

The rules are pure functions of the call (dtype, shapes, mask, dropout, whether a
gradient is wanted) and of the target (CPU, or a CUDA GPU and its compute capability),
so that a count made on the meta device follows the kernel the predicted device would
run.  Sources (torch 2.x):

* SDPA on the CPU: ``aten/src/ATen/native/transformers/sdp_utils_cpp.cpp``
  (``select_sdp_backend_cpp``): flash (``_scaled_dot_product_flash_attention_for_cpu``)
  when there is no dropout, q/k/v are 4-D with one head dim, the dtype is float, double,
  bfloat16 or half; else the math path.
* SDPA on CUDA: ``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``
  (``select_sdp_backend``): the order is flash, memory-efficient, math; cuDNN goes first on
  sm90 / sm100 (``check_prefer_cudnn_attention``, cuDNN > 9.15).  Flash: float16 /
  bfloat16, no mask tensor, equal head dims <= 256, sm80..sm121, causal only when
  ``Sq == Sk``, no training with head dim in (192, 224] (or (224, 256] with dropout) on
  sm86/89/120.  Memory-efficient: float32 too, head dims a multiple of the GEMM alignment,
  sm50..sm121 (float32 / float16 below sm80, bfloat16 from sm80).  cuDNN: float16 /
  bfloat16, dropout a multiple of 1/16, head dims a multiple of 8 and <= 128 (256 on
  sm90/sm100), sm80..sm121.
* The optimizer: ``torch/optim/optimizer.py: _default_to_fused_or_foreach``: ``foreach``
  on CUDA (every parameter on a foreach-capable device), the single-tensor loop on the
  CPU; ``fused`` only when asked (layertime's ``make_optimizer`` does not ask).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The SDPA backends a count can follow, with the aten op each one runs.
SDPA_BACKEND_OPS: dict[str, str] = {
    "math": "aten._scaled_dot_product_attention_math",
    "flash_cpu": "aten._scaled_dot_product_flash_attention_for_cpu",
    "flash": "aten._scaled_dot_product_flash_attention",
    "efficient": "aten._scaled_dot_product_efficient_attention",
    "cudnn": "aten._scaled_dot_product_cudnn_attention",
}
#: How each backend is named in tables.
SDPA_BACKEND_LABELS: dict[str, str] = {
    "math": "math path",
    "flash_cpu": "flash (CPU kernel)",
    "flash": "flash",
    "efficient": "memory-efficient",
    "cudnn": "cuDNN",
}
#: Optimizer implementations: torch's single-tensor loop, its foreach kernels, fused.
OPTIMIZER_IMPLS: tuple[str, ...] = ("single_tensor", "foreach", "fused")

#: Compute capability of NVIDIA devices by a pattern of the name torch or a profile gives
#: (searched case-insensitively, first match wins).
_SM_BY_NAME: tuple[tuple[str, tuple[int, int]], ...] = (
    (r"\b(gb|b)200\b|\bb100\b", (10, 0)),
    (r"\bgh200\b|\bh100\b|\bh200\b|\bh800\b|\bh20\b", (9, 0)),
    (r"\bl4\b|\bl40s?\b|rtx 40\d\d|rtx 6000 ada", (8, 9)),
    (r"\ba100\b|\ba800\b|\ba30\b", (8, 0)),
    (r"\ba10g?\b|\ba40\b|rtx 30\d\d|rtx a\d000", (8, 6)),
    (r"\bt4\b|rtx 20\d\d|titan rtx", (7, 5)),
    (r"\bv100\b|titan v\b", (7, 0)),
    (r"\bp100\b", (6, 0)),
    (r"\bp40\b|gtx 10\d0|titan xp|titan x \(pascal", (6, 1)),
    (r"titan x\b|gtx 9\d0|\bm40\b", (5, 2)),
    (r"\bk80\b", (3, 7)),
    (r"\bk40\b", (3, 5)),
    (r"gtx 5\d0", (2, 0)),
)
_NVIDIA = re.compile(r"nvidia|geforce|tesla|quadro|titan|rtx|\bgtx\b", re.I)


@dataclass(frozen=True)
class KernelTarget:
    """The device a count's kernel choices are made for: ``cpu`` or ``cuda`` (with its
    compute capability when known)."""

    device: str = "cpu"
    sm: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.device == "cuda" and self.sm is not None:
            return f"cuda sm{self.sm[0]}{self.sm[1]}"
        return self.device


def sm_of_name(name: str) -> tuple[int, int] | None:
    """The compute capability of an NVIDIA device by its name, or None when unknown."""
    for pattern, sm in _SM_BY_NAME:
        if re.search(pattern, name, re.I):
            return sm
    return None


def target_of_name(name: str) -> KernelTarget:
    """The target a device profile's device name stands for: an NVIDIA GPU, else the CPU
    (a calibrated profile of a CPU keeps the processor's name)."""
    if _NVIDIA.search(name) or sm_of_name(name) is not None:
        return KernelTarget("cuda", sm_of_name(name))
    return KernelTarget("cpu")


def target_of_device(device: str) -> KernelTarget:
    """The target of a workload's device (``auto``: CUDA when this machine has it)."""
    import torch

    text = device
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(text).type
    except RuntimeError:
        return KernelTarget("cpu")
    if kind != "cuda":
        return KernelTarget("cpu")
    if torch.cuda.is_available():
        index = torch.device(text).index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return KernelTarget("cuda", (int(major), int(minor)))
    return KernelTarget("cuda")


@dataclass(frozen=True)
class SdpaCall:
    """What the backend rules read of one ``scaled_dot_product_attention`` call."""

    dtype: str  # "float32", "float16", "bfloat16", "float64"
    q_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    v_shape: tuple[int, ...]
    has_mask: bool = False
    dropout_p: float = 0.0
    is_causal: bool = False
    requires_grad: bool = True
    enable_gqa: bool = False


@dataclass(frozen=True)
class SdpaChoice:
    """The backend an SDPA call runs on a target, and why (shown in tables)."""

    backend: str
    reason: str

    def describe(self) -> str:
        return f"{SDPA_BACKEND_LABELS[self.backend]} ({self.reason})"


def _heads_ok(call: SdpaCall) -> bool:
    """check_batch_size_and_num_heads_dense: equal heads, or grouped-query heads with
    enable_gqa (query heads a multiple of the key/value heads)."""
    hq, hk, hv = call.q_shape[1], call.k_shape[1], call.v_shape[1]
    if hq == hk == hv:
        return True
    return call.enable_gqa and hk == hv and hk > 0 and hq % hk == 0


def _sm_in(sm: tuple[int, int], lo: tuple[int, int], hi: tuple[int, int]) -> bool:
    return lo <= sm <= hi


def _flash_cuda(call: SdpaCall, sm: tuple[int, int]) -> str | None:
    """None when flash runs, else why not."""
    dq, dk, dv = call.q_shape[-1], call.k_shape[-1], call.v_shape[-1]
    if call.has_mask:
        return "a mask tensor"
    if not (dq == dk == dv and dq <= 256):
        return f"head dims {dq}/{dk}/{dv}"
    if not _sm_in(sm, (8, 0), (12, 1)):
        return f"sm{sm[0]}{sm[1]}"
    if call.requires_grad and (_sm_in(sm, (8, 6), (8, 9)) or _sm_in(sm, (12, 0), (12, 1))):
        if not (dq <= 192 or (call.dropout_p == 0 and dq > 224)):
            return f"training with head dim {dq} on sm{sm[0]}{sm[1]}"
    if call.is_causal and call.q_shape[-2] != call.k_shape[-2]:
        return "causal with Sq != Sk"
    if call.dtype not in ("float16", "bfloat16") or (call.dtype == "bfloat16" and sm < (8, 0)):
        return call.dtype
    if not _heads_ok(call):
        return "head counts"
    return None


def _efficient_cuda(call: SdpaCall, sm: tuple[int, int]) -> str | None:
    dq, dk, dv = call.q_shape[-1], call.k_shape[-1], call.v_shape[-1]
    if not _sm_in(sm, (5, 0), (12, 1)):
        return f"sm{sm[0]}{sm[1]}"
    half = call.dtype in ("float16", "bfloat16")
    tensor_cores = sm >= (8, 0) or (sm >= (7, 0) and half)
    align = 4 if sm >= (8, 0) else 1
    if tensor_cores:
        align = max(align, 128 // (16 if half else 32))
    if not (dq == dk and dq % align == 0 and dv % align == 0 and dq > 0 and dv > 0):
        return f"head dims {dq}/{dv} not multiples of {align}"
    if not _heads_ok(call):
        return "head counts"
    allowed = ("float16", "float32", "bfloat16") if sm >= (8, 0) else ("float16", "float32")
    if call.dtype not in allowed:
        return call.dtype
    return None


def _cudnn_cuda(call: SdpaCall, sm: tuple[int, int]) -> str | None:
    dq, dv = call.q_shape[-1], call.v_shape[-1]
    if call.dtype not in ("float16", "bfloat16"):
        return call.dtype
    if not _sm_in(sm, (8, 0), (12, 1)):
        return f"sm{sm[0]}{sm[1]}"
    if call.dropout_p * 16 != int(call.dropout_p * 16):
        return f"dropout {call.dropout_p:g} not a multiple of 1/16"
    limit = 256 if sm in ((9, 0),) or sm[0] == 10 else 128
    if not (dq <= limit and dv <= limit and dq % 8 == 0 and dv % 8 == 0):
        return f"head dims {dq}/{dv}"
    if call.k_shape[-2] == 1:
        return "key length 1"
    return None


def _prefers_cudnn(sm: tuple[int, int]) -> bool:
    """check_prefer_cudnn_attention: cuDNN first on sm90 and sm100 (with a new cuDNN)."""
    return sm[0] in (9, 10) and sm[1] in (0, 3)


def sdpa_backend(target: KernelTarget, call: SdpaCall) -> SdpaChoice:
    """The backend ``call`` runs on ``target`` (see the module docstring for the rules)."""
    dropout = f"dropout {call.dropout_p:g}" if call.dropout_p > 0 else "no dropout"
    four_d = len(call.q_shape) == len(call.k_shape) == len(call.v_shape) == 4
    if target.device != "cuda":
        if call.dropout_p > 0:
            return SdpaChoice("math", f"{dropout} on cpu")
        if not four_d:
            return SdpaChoice("math", "not 4-D q/k/v on cpu")
        if not (call.q_shape[-1] == call.k_shape[-1] == call.v_shape[-1]):
            return SdpaChoice("math", "unequal head dims on cpu")
        if not _heads_ok(call):
            return SdpaChoice("math", "head counts on cpu")
        if call.dtype not in ("float32", "float64", "bfloat16", "float16"):
            return SdpaChoice("math", f"{call.dtype} on cpu")
        return SdpaChoice("flash_cpu", f"{dropout}, {call.dtype} on cpu")
    sm = target.sm if target.sm is not None else (8, 0)
    where = f"{call.dtype}, {dropout} on {KernelTarget('cuda', sm).describe()}"
    if target.sm is None:
        where += " (assumed: the GPU's capability is unknown)"
    if not four_d:
        return SdpaChoice("math", f"not 4-D q/k/v, {where}")
    order: Sequence[tuple[str, str | None]] = (
        ("flash", _flash_cuda(call, sm)),
        ("efficient", _efficient_cuda(call, sm)),
    )
    if _prefers_cudnn(sm):
        order = (("cudnn", _cudnn_cuda(call, sm)), *order)
    missed = []
    for backend, why_not in order:
        if why_not is None:
            return SdpaChoice(backend, where)
        missed.append(f"{SDPA_BACKEND_LABELS[backend]}: {why_not}")
    return SdpaChoice("math", f"{where}; " + ", ".join(missed))


def optimizer_impl(target: KernelTarget) -> str:
    """The implementation torch's default optimizers take on ``target``: ``foreach`` on
    CUDA, ``single_tensor`` on the CPU (``fused`` is never the default)."""
    return "foreach" if target.device == "cuda" else "single_tensor"


#: multi_tensor_apply's limits (aten/src/ATen/native/cuda/MultiTensorApply.cuh): tensors
#: per launch by the number of tensor lists (depth 1..5), and elements per launch
#: (320 blocks of 65,536-element chunks).
FOREACH_MAX_TENSORS: tuple[int, ...] = (110, 64, 48, 36, 30)
FOREACH_MAX_ELEMENTS = 320 * 65536


def foreach_launches(numels: Sequence[int], depth: int) -> list[int]:
    """Kernel launches of one foreach op over tensors of ``numels`` elements, and which
    tensor each launch starts at (its index): a launch ends when it holds the most tensors
    its depth allows or its chunks fill the 320 blocks (each chunk 65,536 elements)."""
    limit = FOREACH_MAX_TENSORS[min(max(depth, 1), 5) - 1]
    starts: list[int] = []
    tensors = blocks = 0
    for i, n in enumerate(numels):
        chunks = max(1, -(-int(n) // 65536))
        in_launch = False
        while chunks > 0:
            if not starts or blocks == 320 or (not in_launch and tensors == limit):
                starts.append(i)
                tensors = blocks = 0
                in_launch = False
            if not in_launch:
                tensors += 1
                in_launch = True
            take = min(chunks, 320 - blocks)
            blocks += take
            chunks -= take
    return starts
