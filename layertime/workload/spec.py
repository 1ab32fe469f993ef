"""One description of a workload: which model, on which input, batch, device and precision.

A :class:`WorkloadSpec` is made once, from the command line's workload flags
or from Python (:meth:`WorkloadSpec.create` takes the keyword options
``layertime.profile`` has always taken), validated on construction with
one-line errors, and passed unchanged to every collector: the profile, the
data-parallel profile, the cost estimate, the isolated benchmarks and the
sweep.  Its JSON (:meth:`WorkloadSpec.to_dict`) is stored with every run.

``model`` is a :class:`~layertime.models.ModelRef` (a name, with any
``--config KEY=VALUE`` overrides of an ``hf:`` model's config; a plain name
is made one) or the user's ``nn.Module``.  ``input`` None means the model's
own default input (227x227 for ``alexnet2012``, 128 tokens for ``hf:``
models); ``prepare`` and ``cost.estimate`` fill it in when they resolve the
model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from torch import nn

from layertime.errors import LayertimeError
from layertime.models import ModelRef
from layertime.records import build
from layertime.taxonomy import AMP_NAMES, DTYPE_NAMES, OPTIMIZERS
from layertime.workload.inputs import ImageInput, InputSpec, TokenInput

#: How ``make_optimizer`` configures each optimizer (Adam and AdamW take a tenth of ``LR``).
LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


class WorkloadOptions(TypedDict, total=False):
    """The keyword options of ``layertime.profile`` and the other entry points that describe
    the workload (what :meth:`WorkloadSpec.create` takes besides the model)."""

    batch_size: int
    input_shape: Sequence[int] | None
    image_size: int | None
    seq_len: int | None
    input: InputSpec | None
    num_classes: int
    device: str
    optimizer: str
    dtype: str
    amp: str | None
    seed: int


@dataclass(frozen=True)
class WorkloadSpec:
    """What one training step does and on what; validated on construction (module doc)."""

    #: A model name (``layertime.models.resolve``; a string is made a
    #: :class:`ModelRef`) or the user's ``nn.Module``.
    model: str | ModelRef | nn.Module
    input: InputSpec | None = None
    batch_size: int = 128
    num_classes: int = 1000
    #: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked against this machine when resolved).
    device: str = "auto"
    dtype: str = "float32"
    amp: str | None = None
    optimizer: str = "sgd"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.model, str):
            object.__setattr__(self, "model", ModelRef(self.model))
        if not isinstance(self.model, (ModelRef, nn.Module)):
            raise LayertimeError(
                f"expected a model name or an nn.Module, not {type(self.model).__name__}"
            )
        if self.input is not None and not isinstance(self.input, InputSpec):
            raise LayertimeError(f"input must be an InputSpec, not {type(self.input).__name__}")
        if self.batch_size < 1:
            raise LayertimeError(f"batch size must be at least 1, not {self.batch_size}")
        if self.num_classes < 1:
            raise LayertimeError(f"num_classes must be at least 1, not {self.num_classes}")
        if self.optimizer not in OPTIMIZERS:
            raise LayertimeError(
                f"unknown optimizer {self.optimizer!r} (choose {', '.join(OPTIMIZERS)})"
            )
        if self.amp is not None and self.amp not in AMP_NAMES:
            raise LayertimeError(f"unknown --amp {self.amp!r} (choose bf16 or fp16)")
        if self.dtype not in DTYPE_NAMES:
            raise LayertimeError(f"unknown dtype {self.dtype!r} (choose {', '.join(DTYPE_NAMES)})")

    @classmethod
    def create(
        cls,
        model: str | ModelRef | nn.Module,
        *,
        batch_size: int = 128,
        input_shape: Sequence[int] | None = None,
        image_size: int | None = None,
        seq_len: int | None = None,
        input: InputSpec | None = None,
        num_classes: int = 1000,
        device: str = "auto",
        optimizer: str = "sgd",
        dtype: str = "float32",
        amp: str | None = None,
        seed: int = 0,
    ) -> WorkloadSpec:
        """A spec from keyword options: the input as ``input``, one sample's
        ``input_shape``, the H=W ``image_size`` of a 3-channel image, or ``seq_len``
        token ids (at most one; none: the model's own default)."""
        if input_shape is not None and image_size is not None:
            raise LayertimeError("give --input-shape or --image-size, not both")
        if seq_len is not None and (input_shape is not None or image_size is not None):
            raise LayertimeError("give --seq-len (token ids) or --input-shape/--image-size "
                                 "(images), not both")
        if input is not None and (
            input_shape is not None or image_size is not None or seq_len is not None
        ):
            raise LayertimeError("give the input, its shape or an image size, not several")
        if input_shape is not None:
            input = ImageInput(tuple(input_shape))
        elif image_size is not None:
            input = ImageInput.square(image_size)
        elif seq_len is not None:
            input = TokenInput(seq_len)
        return cls(model, input, batch_size, num_classes, device, dtype, amp, optimizer, seed)

    def with_input(self, input: InputSpec) -> WorkloadSpec:
        return dataclasses.replace(self, input=input)

    @property
    def resolved_input(self) -> InputSpec:
        """The input once the model's default is filled in (by ``prepare`` or ``estimate``)."""
        if self.input is None:
            raise LayertimeError("the workload's input is not resolved: prepare() fills in "
                                 "the model's default")
        return self.input

    @property
    def model_label(self) -> str:
        """The model's name, or its class name for a module."""
        if isinstance(self.model, ModelRef):
            return self.model.name
        return self.model if isinstance(self.model, str) else type(self.model).__name__

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON (a module is stored as its class name; a name's config
        overrides as ``model_config``)."""
        return {
            "model": self.model_label,
            "model_config": list(self.model.config) if isinstance(self.model, ModelRef) else [],
            "input": self.input.to_dict() if self.input is not None else None,
            "batch_size": self.batch_size,
            "num_classes": self.num_classes,
            "device": self.device,
            "dtype": self.dtype,
            "amp": self.amp,
            "optimizer": self.optimizer,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkloadSpec:
        """A spec from its JSON; keys this version does not know are ignored."""
        fields = dict(d)
        if "model" in d:
            fields["model"] = ModelRef(str(d["model"]), tuple(d.get("model_config") or ()))
        return build(cls, fields, input=lambda v: InputSpec.from_dict(v) if v else None)
