"""layertime: where the time of training a neural network goes, layer by layer.

Public API::

    run = layertime.profile("alexnet", batch_size=64)    # a Run
    print(run.headline())
    with layertime.Profiler(model, optimizer) as prof:   # inside your own loop
        ...
        prof.step()
"""

from layertime.errors import LayertimeError, OutOfMemory
from layertime.measure.loop import Profiler
from layertime.measure.runner import profile
from layertime.result import SCHEMA, Environment, KindTotal, LayerRow, Phases, Run

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
