"""layertime: where the time of training a neural network goes, layer by layer.

Public API::

    run = layertime.profile("alexnet", batch_size=64)    # a Run
    print(run.headline())
    with layertime.Profiler(model, optimizer) as prof:   # inside your own loop
        ...
        prof.step()

Importing ``layertime`` does not import torch: ``profile`` and ``Profiler``
are loaded on first use, so ``layertime --help`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layertime.errors import LayertimeError, OutOfMemory
from layertime.result import SCHEMA, Environment, KindTotal, LayerRow, Phases, Run

if TYPE_CHECKING:
    from layertime.measure.loop import Profiler
    from layertime.measure.runner import profile

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "Environment",
    "KindTotal",
    "LayerRow",
    "LayertimeError",
    "OutOfMemory",
    "Phases",
    "Profiler",
    "Run",
    "profile",
    "__version__",
]

#: Names whose modules import torch, loaded on first access.
_LAZY = {"Profiler": "layertime.measure.loop", "profile": "layertime.measure.runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layertime' has no attribute {name!r}")
