"""Describe the machine a run was measured on."""

from __future__ import annotations

import platform
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from layertime.results.environment import Environment


def matmul_tf32() -> bool:
    """Whether float32 matmuls may run on TF32 tensor cores, by whichever API torch has.

    torch 2.9 added ``torch.backends.cuda.matmul.fp32_precision``; once it is
    used, reading the older ``allow_tf32`` raises, so the new one is read first.
    """
    m = torch.backends.cuda.matmul
    new = getattr(m, "fp32_precision", None)
    if isinstance(new, str) and new not in ("", "none"):
        return new == "tf32"
    try:
        return bool(m.allow_tf32)
    except RuntimeError:
        return torch.get_float32_matmul_precision() != "highest"


@contextmanager
def matmul_tf32_set(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 for float32 matmuls in this block only."""
    m = torch.backends.cuda.matmul
    if isinstance(getattr(m, "fp32_precision", None), str):
        old = m.fp32_precision
        m.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            m.fp32_precision = old
        return
    old_flag = m.allow_tf32
    m.allow_tf32 = enabled
    try:
        yield
    finally:
        m.allow_tf32 = old_flag


def conv_tf32() -> bool:
    """Whether float32 cuDNN convolutions may use TF32 (torch's default: yes)."""
    c = torch.backends.cudnn
    conv = getattr(c, "conv", None)
    new = getattr(conv, "fp32_precision", None) if conv is not None else None
    if isinstance(new, str) and new not in ("", "none"):
        return new == "tf32"
    try:
        return bool(c.allow_tf32)
    except RuntimeError:
        return True


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation could have now: free CUDA memory (after returning
    the caching allocator's spare blocks), or the host's MemAvailable on the CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def describe(device: torch.device) -> Environment:
    """Device name, library versions and thread count, for every result."""
    try:
        import torchvision

        tv: str | None = torchvision.__version__
    except ImportError:
        tv = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        cuda = torch.version.cuda
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        cudnn = None
        cuda = None
    return Environment(
        device=str(device),
        device_name=name,
        torch=torch.__version__,
        torchvision=tv,
        python=sys.version.split()[0],
        platform=platform.platform(),
        host=socket.gethostname(),
        threads=torch.get_num_threads(),
        cuda=cuda,
        cudnn=cudnn,
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        conv_tf32=conv_tf32(),
        matmul_tf32=matmul_tf32(),
    )
