"""layertime: where the time of training a neural network goes, layer by layer.

Public API::

    run = layertime.profile("alexnet", batch_size=64)    # a Run
    print(run.headline())
    with layertime.Profiler(model, optimizer) as prof:   # inside your own loop
        ...
        prof.step()
    spec = layertime.WorkloadSpec.create("alexnet", batch_size=64)   # one workload,
    run = layertime.profile_workload(spec)               # for profile, cost, bench, sweep
"""

from layertime.api import Profiler
from layertime.errors import LayertimeError, OutOfMemory
from layertime.measure.runner import MeasureOptions, profile, profile_workload
from layertime.results.environment import Environment
from layertime.results.run import SCHEMA, KindTotal, LayerRow, Phases, Run
from layertime.workload import ImageInput, InputSpec, TokenInput, WorkloadSpec

__version__ = "0.1.0"

__all__ = [
    "SCHEMA",
    "Environment",
    "ImageInput",
    "InputSpec",
    "KindTotal",
    "LayerRow",
    "LayertimeError",
    "MeasureOptions",
    "OutOfMemory",
    "Phases",
    "Profiler",
    "Run",
    "TokenInput",
    "WorkloadSpec",
    "profile",
    "profile_workload",
    "__version__",
]
