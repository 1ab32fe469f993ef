"""layertime: where the time of training a neural network goes, layer by layer.

Public API::

    run = layertime.profile("alexnet", batch_size=64)    # a Run
    print(run.headline())
    with layertime.Profiler(model, optimizer) as prof:   # inside your own loop
        ...
        prof.step()
    spec = layertime.WorkloadSpec.create("alexnet", batch_size=64)   # one workload,
    run = layertime.profile_workload(spec)               # for profile, cost, bench, sweep
    gpt2 = layertime.ModelRef("hf:gpt2", ("n_layer=2",)) # a name with config overrides
    run = layertime.profile(gpt2, seq_len=512, batch_size=2)   # token ids
    run = layertime.attribute("traces/", model="resnet50").run   # torch.profiler's traces
    torch.profiler.profile(..., with_stack=True,         # or attribute each cycle
                           on_trace_ready=layertime.trace_handler(model=model))

Importing ``layertime`` does not import torch: the names whose modules need it
(``profile``, ``Profiler``, the workload) are loaded on first use, so
``layertime --help`` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layertime.errors import LayertimeError, OutOfMemory
from layertime.models import ModelRef
from layertime.results.environment import Environment
from layertime.results.run import SCHEMA, KindTotal, LayerRow, Phases, RoleTotal, Run

if TYPE_CHECKING:
    from layertime.api import Profiler, TraceHandler, trace_handler
    from layertime.measure.runner import MeasureOptions, profile, profile_workload
    from layertime.measure.traces import TraceAttribution, attribute
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
    "ModelRef",
    "OutOfMemory",
    "Phases",
    "Profiler",
    "RoleTotal",
    "Run",
    "TokenInput",
    "TraceAttribution",
    "TraceHandler",
    "WorkloadSpec",
    "profile",
    "profile_workload",
    "attribute",
    "trace_handler",
    "__version__",
]

#: Names whose modules import torch, loaded on first access.
_LAZY = {
    "Profiler": "layertime.api",
    "TraceHandler": "layertime.api",
    "trace_handler": "layertime.api",
    "attribute": "layertime.measure.traces",
    "TraceAttribution": "layertime.measure.traces",
    "MeasureOptions": "layertime.measure.runner",
    "profile": "layertime.measure.runner",
    "profile_workload": "layertime.measure.runner",
    "ImageInput": "layertime.workload",
    "InputSpec": "layertime.workload",
    "TokenInput": "layertime.workload",
    "WorkloadSpec": "layertime.workload",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'layertime' has no attribute {name!r}")
