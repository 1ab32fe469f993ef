"""The training step layertime measures: a synthetic batch, the loss, the optimizer.

One step is zero_grad, forward, loss, backward and the optimizer update, in
that order; a collector that traces the step passes a ``phase`` marker that
opens a range around each phase.  Batches are random (weights and datasets
are never downloaded) and made once, on the device, so the step measures
training, not data loading.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from layertime.errors import (
    BadValue,
    LayertimeError,
    first_line,
    is_out_of_memory,
    out_of_memory,
)
from layertime.modules import training_mode
from layertime.workload.inputs import main_output
from layertime.workload.spec import LR, MOMENTUM, WEIGHT_DECAY, WorkloadSpec

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}

#: Opens a range around one phase of the step ("zero_grad", "loss", "backward", "update").
PhaseScope = Callable[[str], contextlib.AbstractContextManager[None]]


def resolve_device(text: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; CUDA without CUDA is an error."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError as e:
        raise BadValue(f"unknown device {text!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadValue(f"--device {text} asked for, but CUDA is not available here "
                           "(use --device cpu, or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise BadValue(f"no {dev}: this machine has {n} CUDA device(s) (cuda:0"
                           + (f" to cuda:{n - 1})" if n > 1 else ")"))
    elif dev.type != "cpu":
        raise BadValue(f"device {text!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return dev


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager[Any]:
    """Automatic mixed precision in ``amp`` (bf16, fp16) on ``device``; nothing when None."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def check_input(
    model: nn.Module, workload: WorkloadSpec, device: torch.device, label: str
) -> torch.Size:
    """One tiny forward and loss (batch 2, no grad, eval mode) to catch a bad input early,
    after the input's own check (a sequence longer than the model's positions).

    Returns the shape of the main output.  The model's train/eval mode is
    restored afterwards, module by module.
    """
    spec = workload.resolved_input.for_model(model)
    spec.check(model, label)
    gen = torch.Generator(device="cpu").manual_seed(workload.seed)
    try:
        with training_mode(model, train=False), torch.no_grad(), autocast(device, workload.amp):
            batch = spec.batch(2, model=model, device=device, dtype=DTYPES[workload.dtype],
                               generator=gen)
            out = batch.run(model)
            main, _ = main_output(out)
            spec.loss(out, spec.targets(main.shape, batch, gen))
    except LayertimeError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(e, 2, device.type) from e
        raise LayertimeError(f"{spec.describe()} does not fit {label}: {first_line(e)}") from e
    if main.dim() < 2:
        raise LayertimeError(
            f"{label} returned an output of shape {tuple(main.shape)}; "
            "expected (batch, classes, ...) logits"
        )
    return main.shape


def make_optimizer(model: nn.Module, optimizer: str) -> torch.optim.Optimizer:
    """The optimizer layertime trains with: SGD (momentum, weight decay), Adam or AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LayertimeError("the model has no trainable parameters")
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=LR * 0.1)
    return torch.optim.AdamW(params, lr=LR * 0.1, weight_decay=WEIGHT_DECAY)


class Workload:
    """A model, its optimizer and one synthetic batch (with its targets) on a device."""

    def __init__(
        self,
        model: nn.Module,
        workload: WorkloadSpec,
        device: torch.device,
        output_shape: torch.Size,
    ) -> None:
        self.model = model
        self.workload = workload
        self.device = device
        self.optimizer = make_optimizer(model, workload.optimizer)
        self.input = workload.resolved_input.for_model(model)
        gen = torch.Generator(device="cpu").manual_seed(workload.seed)
        self.batch = self.input.batch(
            workload.batch_size, model=model, device=device, dtype=DTYPES[workload.dtype],
            generator=gen,
        )
        self.targets = self.input.targets(output_shape, self.batch, gen)
        self.scaler = (
            torch.amp.GradScaler(device.type)
            if workload.amp == "fp16" and device.type == "cuda"
            else None
        )
        # Before its first step a scaler reports its initial scale (no sync).
        self._last_scale = float(self.scaler.get_scale()) if self.scaler is not None else None

    def update_skipped(self) -> bool:
        """Whether the last step's update was skipped by fp16 loss scaling.

        GradScaler starts at 65536 and halves its scale (skipping
        ``optimizer.step``) whenever gradients overflow, so early steps can
        have an empty update.  Reads the scale (a device sync): call it
        outside timed regions, after every step.
        """
        if self.scaler is None:
            return False
        scale = float(self.scaler.get_scale())
        skipped = self._last_scale is not None and scale < self._last_scale
        self._last_scale = scale
        return skipped

    def step(self, phase: PhaseScope | None = None) -> torch.Tensor:
        """One training step; returns the (detached) loss.  ``phase`` marks its phases.

        An error the model raises in training (not in the eval-mode check
        before: a batch norm given one value per channel at batch 1, say) is a
        one-line :class:`LayertimeError` naming the step; out-of-memory errors
        pass unchanged, for the caller to translate.
        """
        try:
            return self._step(phase)
        except LayertimeError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as e:
            # Under torch.distributed a collective's failure is for the rank's health
            # check to name (a rank that died or hung), not a model error.
            if is_out_of_memory(e) or _distributed():
                raise
            raise LayertimeError(
                f"a training step failed at batch {self.workload.batch_size}: "
                f"{type(e).__name__}: {first_line(e)}"
            ) from e

    def _step(self, phase: PhaseScope | None) -> torch.Tensor:
        rng: PhaseScope = phase if phase is not None else _no_phase
        amp = self.workload.amp
        with rng("zero_grad"):
            self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, amp):
            out = self.batch.run(self.model)
        with rng("loss"), autocast(self.device, amp):
            loss = self.input.loss(out, self.targets)
        with rng("backward"):
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        with rng("update"):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        return loss.detach()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _no_phase(name: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()
