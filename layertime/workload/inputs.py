"""What one sample of a synthetic batch is, and the loss a training step takes on it.

An :class:`InputSpec` is the open part of a workload: it makes the batch
(:meth:`InputSpec.batch`), the targets (:meth:`InputSpec.targets`) and the
loss (:meth:`InputSpec.loss`), so the runner, the cost counter and the
isolated benchmarks never ask which kind of input they run.  Two kinds:

* :class:`ImageInput` — dense float samples of a fixed shape (3x224x224), a
  classification loss (cross-entropy; auxiliary heads weighted 0.3);
* :class:`TokenInput` — token ids of a sequence length within the model's
  vocabulary, and the loss of the model's head (next-token cross-entropy for
  causal LMs and for a user's own module, masked-LM and sequence-to-sequence
  losses, a stand-in for a model without a head; :mod:`layertime.workload.tokens`).

An input learns what it needs of the model it feeds through
:meth:`InputSpec.for_model` (a token input: its vocabulary and head), and
checks that the model can take it before any long work (:meth:`InputSpec.check`:
a sequence longer than the model's learned positions).

A new kind is a frozen dataclass subclassing :class:`InputSpec` with a
``kind`` name, registered in :data:`INPUT_KINDS` (so stored workloads read
back); nothing that runs a workload changes.  Batches are random (no data
is ever downloaded); on the meta device they are empty tensors of the
right shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from layertime.errors import BadValue, LayertimeError
from layertime.records import build
from layertime.workload.tokens import (
    HEADS,
    call_of,
    head_loss,
    head_of,
    learned_positions,
    make_batch,
    vocabulary_size,
)

#: Weight of auxiliary classifier losses (GoogLeNet, Inception v3), as in their papers.
AUX_LOSS_WEIGHT = 0.3


@dataclass(frozen=True)
class Batch:
    """The arguments of one call of the model: ``model(*args, **kwargs, **options)``.

    ``options`` are keyword arguments that are not tensors (``use_cache=False``);
    ``targets``, when the input made them with the batch (token labels), are what
    :meth:`InputSpec.targets` returns.
    """

    args: tuple[torch.Tensor, ...]
    kwargs: Mapping[str, torch.Tensor] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    targets: torch.Tensor | None = None

    def run(self, model: nn.Module) -> Any:
        return model(*self.args, **self.kwargs, **self.options)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The model's tensor arguments, positional first."""
        return (*self.args, *self.kwargs.values())

    @property
    def first(self) -> torch.Tensor:
        """The first tensor argument (its first dimension is the batch)."""
        return self.tensors[0]

    def requiring_grad(self) -> Batch:
        """The batch with every floating-point tensor made a leaf that requires grad
        (cloned), so that autograd's graph tells activations from parameters."""

        def leaf(t: torch.Tensor) -> torch.Tensor:
            return t.requires_grad_().clone() if t.is_floating_point() else t

        return dataclasses.replace(
            self, args=tuple(leaf(t) for t in self.args),
            kwargs={k: leaf(v) for k, v in self.kwargs.items()},
        )


def main_output(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The main output of a model and any auxiliary classifier outputs of the same shape."""
    if isinstance(out, torch.Tensor):
        return out, []
    if isinstance(out, dict):
        for key in ("logits", "out", "output"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key], []
        tensors = [v for v in out.values() if isinstance(v, torch.Tensor)]
    elif isinstance(out, (tuple, list)):
        tensors = [v for v in out if isinstance(v, torch.Tensor)]
    else:
        tensors = [v for v in vars(out).values() if isinstance(v, torch.Tensor)] if hasattr(
            out, "__dict__"
        ) else []
    if not tensors:
        raise LayertimeError(f"the model returned {type(out).__name__}, which holds no tensor")
    main = tensors[0]
    return main, [t for t in tensors[1:] if t.shape == main.shape]


def _randn(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype, gen: torch.Generator | None
) -> torch.Tensor:
    """Normal samples on ``device``: drawn from ``gen`` on the CPU and moved (the same numbers
    on every device), from the global generator when None; empty on the meta device."""
    if device.type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)
    if gen is None:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.randn(shape, generator=gen, dtype=dtype).to(device)


def _randint(
    high: int, shape: tuple[int, ...], device: torch.device, gen: torch.Generator | None
) -> torch.Tensor:
    """Integers in [0, high) on ``device``, as :func:`_randn` draws them."""
    if device.type == "meta":
        return torch.empty(shape, dtype=torch.long, device=device)
    if gen is None:
        return torch.randint(0, high, shape, device=device)
    return torch.randint(0, high, shape, generator=gen).to(device)


class InputSpec(ABC):
    """One sample of a synthetic batch, and the loss a step takes (see the module doc)."""

    #: The name stored in JSON (``{"kind": ...}``) and registered in :data:`INPUT_KINDS`.
    kind: ClassVar[str]
    #: What a model of this input takes, and the flags that set it (for messages).
    takes: ClassVar[str]
    flags: ClassVar[str]

    @property
    @abstractmethod
    def sample_shape(self) -> tuple[int, ...]:
        """One sample's shape, as results store it (``input_shape``)."""

    @property
    def image_size(self) -> int | None:
        """H (= W) of a square image, for models whose shape is fixed at construction."""
        return None

    @property
    def sequence_length(self) -> int | None:
        """Tokens per sample of a token input (results store it as ``seq_len``), else None."""
        return None

    def for_model(self, model: nn.Module) -> InputSpec:
        """The input as ``model`` takes it (a token input learns its vocabulary and head);
        the same input for a kind that needs nothing of the model."""
        return self

    def check(self, model: nn.Module, label: str) -> None:
        """Refuse, in one line and before any forward, an input ``model`` cannot take."""

    @abstractmethod
    def describe(self, short: bool = False) -> str:
        """What the input is, for messages: "input shape 3x224x224" ("input 3x224x224")."""

    @abstractmethod
    def batch(
        self,
        n: int,
        *,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> Batch:
        """A batch of ``n`` samples on ``device`` (``generator``: reproducible numbers)."""

    @abstractmethod
    def targets(
        self, output_shape: Sequence[int], batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """What the loss compares the main output (of ``output_shape``) with."""

    @abstractmethod
    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """The step's loss from the model's whole output."""

    def classes(self, output_shape: Sequence[int]) -> int | None:
        """How many classes the main output scores (results store it as ``num_classes``)."""
        return int(output_shape[1])

    @property
    def loss_name(self) -> str:
        """The loss row's type in a cost estimate."""
        return "CrossEntropyLoss"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> InputSpec:
        """An input from its JSON object (``kind`` picks the class; unknown keys are ignored)."""
        cls = INPUT_KINDS.get(str(d.get("kind")))
        if cls is None:
            raise LayertimeError(
                f"unknown input kind {d.get('kind')!r} (known: {', '.join(INPUT_KINDS)})"
            )
        return cls.read(d)

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> InputSpec:
        return build(cls, d)


@dataclass(frozen=True)
class ImageInput(InputSpec):
    """Dense float samples of ``shape`` (3x224x224 images), classified with cross-entropy."""

    shape: tuple[int, ...]
    kind: ClassVar[str] = "image"
    takes: ClassVar[str] = "images"
    flags: ClassVar[str] = "--input-shape/--image-size"

    def __post_init__(self) -> None:
        if not self.shape or any(int(d) < 1 for d in self.shape):
            raise LayertimeError(f"bad input shape {self.shape}: every size must be >= 1")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @classmethod
    def square(cls, size: int, channels: int = 3) -> ImageInput:
        return cls((channels, size, size))

    @classmethod
    def read(cls, d: Mapping[str, Any]) -> InputSpec:
        return build(cls, d, shape=tuple)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def image_size(self) -> int | None:
        s = self.shape
        return s[-1] if len(s) == 3 and s[-1] == s[-2] else None

    def describe(self, short: bool = False) -> str:
        return ("input " if short else "input shape ") + "x".join(str(d) for d in self.shape)

    def batch(
        self,
        n: int,
        *,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> Batch:
        return Batch((_randn((n, *self.shape), device, dtype, generator),))

    def targets(
        self, output_shape: Sequence[int], batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A class index per sample (per output position of a dense model), at random."""
        x = batch.args[0]
        return _randint(int(output_shape[1]), (x.shape[0], *output_shape[2:]), x.device, generator)

    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the main output, plus 0.3 x that of each auxiliary head."""
        main, aux = main_output(output)
        loss_fn = nn.CrossEntropyLoss()
        loss = loss_fn(main, targets)
        for a in aux:
            loss = loss + AUX_LOSS_WEIGHT * loss_fn(a, targets)
        return loss


@dataclass(frozen=True)
class TokenInput(InputSpec):
    """Sequences of ``seq_len`` token ids within the vocabulary, trained with the loss of
    the model's head (:mod:`layertime.workload.tokens`).

    ``vocab_size`` and ``head`` None take the model's own (:meth:`for_model`:
    ``config.vocab_size`` or the first embedding's size; a transformers
    model's head by its class, ``causal-lm`` for any other module).  A
    transformers model is called with ``input_ids=`` (and an encoder-decoder's
    ``decoder_input_ids``, ``use_cache=False``); any other module with the ids
    as its one argument, its main output read as (batch, sequence,
    vocabulary) logits.
    """

    seq_len: int
    vocab_size: int | None = None
    head: str | None = None
    kind: ClassVar[str] = "tokens"
    takes: ClassVar[str] = "token ids"
    flags: ClassVar[str] = "--seq-len"

    def __post_init__(self) -> None:
        if int(self.seq_len) < 2:
            raise LayertimeError(
                f"sequence length must be at least 2 (the loss predicts each next token), "
                f"not {self.seq_len}"
            )
        if self.vocab_size is not None and int(self.vocab_size) < 1:
            raise LayertimeError(f"vocabulary size must be at least 1, not {self.vocab_size}")
        if self.head is not None and self.head not in HEADS:
            raise LayertimeError(f"unknown head {self.head!r} (choose {', '.join(HEADS)})")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.seq_len,)

    @property
    def sequence_length(self) -> int | None:
        return self.seq_len

    def describe(self, short: bool = False) -> str:
        return f"sequence length {self.seq_len}"

    def for_model(self, model: nn.Module) -> TokenInput:
        vocab = self.vocab_size or vocabulary_size(model)
        if vocab is None:
            raise LayertimeError(
                "token inputs need the model's vocabulary size: it has no embedding and no "
                "config.vocab_size (give TokenInput(seq_len, vocab_size=N))"
            )
        return dataclasses.replace(self, vocab_size=vocab, head=self.head or head_of(model))

    def check(self, model: nn.Module, label: str) -> None:
        """A sequence longer than the model's learned positions is refused."""
        positions = learned_positions(model)
        if positions is not None and self.seq_len > positions[1]:
            name, n = positions
            raise BadValue(
                f"--seq-len {self.seq_len} is longer than {label}'s {n} learned positions "
                f"({name}); use --seq-len {n} or less, or --config {name}={self.seq_len}"
            )

    def batch(
        self,
        n: int,
        *,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> Batch:
        """Token ids as the model takes them, with the labels of its head as the targets."""
        bound = self.for_model(model)
        call = call_of(model)
        assert bound.vocab_size is not None and bound.head is not None
        made = make_batch(bound.head, self.seq_len, bound.vocab_size, n, call, device, generator)
        if not call.keyword:
            return Batch((made.ids,), options=made.options, targets=made.labels)
        kwargs = {"input_ids": made.ids}
        if made.decoder_ids is not None:
            kwargs["decoder_input_ids"] = made.decoder_ids
        return Batch((), kwargs, made.options, made.labels)

    def targets(
        self, output_shape: Sequence[int], batch: Batch, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The labels made with the batch; empty for the stand-in loss (no head)."""
        if batch.targets is not None:
            return batch.targets
        return torch.empty(0, dtype=torch.long, device=batch.first.device)

    def loss(self, output: Any, targets: torch.Tensor) -> torch.Tensor:
        """The loss of the head (``causal-lm`` when not yet bound to a model)."""
        head = self.head or "causal-lm"
        return head_loss(head, output, targets if head != "base" else None)

    def classes(self, output_shape: Sequence[int]) -> int | None:
        """The vocabulary the head scores; None without a head."""
        if self.head == "base":
            return None
        return self.vocab_size or int(output_shape[-1])

    @property
    def loss_name(self) -> str:
        return f"{self.head or 'causal-lm'} loss"


#: Every input kind, by the name its JSON carries.
INPUT_KINDS: dict[str, type[InputSpec]] = {"image": ImageInput, "tokens": TokenInput}
