"""Describe the machine a run was measured on."""

from __future__ import annotations

import platform
import socket
import sys

import torch

from layertime.result import Environment


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
    )
