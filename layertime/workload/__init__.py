"""The workload: its description (:mod:`~layertime.workload.spec`), its input kinds
(:mod:`~layertime.workload.inputs`) and the training step (:mod:`~layertime.workload.step`)."""

from layertime.workload.inputs import (
    AUX_LOSS_WEIGHT,
    INPUT_KINDS,
    Batch,
    ImageInput,
    InputSpec,
    TokenInput,
    main_output,
)
from layertime.workload.spec import WorkloadOptions, WorkloadSpec
from layertime.workload.step import (
    AMP_DTYPES,
    DTYPES,
    PhaseScope,
    Workload,
    autocast,
    check_input,
    make_optimizer,
    resolve_device,
)

__all__ = [
    "AMP_DTYPES",
    "AUX_LOSS_WEIGHT",
    "DTYPES",
    "INPUT_KINDS",
    "Batch",
    "ImageInput",
    "InputSpec",
    "PhaseScope",
    "TokenInput",
    "Workload",
    "WorkloadOptions",
    "WorkloadSpec",
    "autocast",
    "check_input",
    "main_output",
    "make_optimizer",
    "resolve_device",
]
