"""A workload made ready to run: its device resolved, its model built and placed, its
input filled in (the model's default when none was given)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layertime.errors import memory_errors
from layertime.models import target
from layertime.workload import DTYPES, WorkloadSpec, resolve_device


@dataclass(frozen=True)
class Prepared:
    """A model built and placed on its device, with the workload (its input resolved) it runs."""

    model: nn.Module
    workload: WorkloadSpec
    device: torch.device
    label: str


def prepare(workload: WorkloadSpec) -> Prepared:
    """Resolve the device and the model (with any config overrides its reference
    carries), build and place it, fill in the model's default input; errors are one line."""
    dev = resolve_device(workload.device)
    tgt = target(workload.model, workload.input)
    torch.manual_seed(workload.seed)
    with memory_errors(workload.batch_size, dev.type):
        net = tgt.build(workload.num_classes) if tgt.spec is not None else workload.model
        assert isinstance(net, nn.Module)
        net = net.to(device=dev, dtype=DTYPES[workload.dtype])
    # The input as this model takes it (a token input learns its vocabulary and head),
    # so that the stored workload says what was run.
    return Prepared(net, workload.with_input(tgt.input.for_model(net)), dev, tgt.label)
