"""Where a result was measured: the device, library versions, threads and math settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Environment:
    """Where a run was measured."""

    device: str
    device_name: str
    torch: str
    torchvision: str | None
    python: str
    platform: str
    host: str
    threads: int
    cuda: str | None = None
    cudnn: int | None = None
    #: The math settings the run used (they change which kernels run):
    #: ``torch.backends.cudnn.benchmark``, and whether float32 convolutions
    #: and matmuls may use TF32 tensor cores.  None in runs saved before them.
    cudnn_benchmark: bool | None = None
    conv_tf32: bool | None = None
    matmul_tf32: bool | None = None
