"""The token workload of a text model: a synthetic batch of token ids and the loss its head fits.

One :class:`TokenTask` per model and sequence length.  ``make_batch`` makes
random token ids within the config's vocabulary (seeded, made once, then
moved to the device: the step measures training, not data loading);
``forward`` runs the model on them and ``loss`` computes, outside the
model (so that it is the step's ``loss`` row, not the model's), the loss
the head is trained with, exactly as transformers computes it when given
``labels``:

* ``causal-lm``: next-token cross-entropy; labels are the inputs, shifted
  by one inside the loss (the last position predicts nothing);
* ``masked-lm``: cross-entropy over 15% of the positions per sequence
  (``MLM_PROBABILITY``; at least one), the rest ignored (label -100); the
  inputs are left as they are (random ids, so a [MASK] token would change
  nothing measurable);
* ``seq2seq-lm``: cross-entropy of the decoder's logits against random
  target ids as long as the input (``seq_len``), the decoder fed the
  targets shifted right behind the decoder start token;
* ``base`` (a model without a head): a stand-in, the mean of the squared
  last hidden state (in float32), so that backward reaches every layer.

Attention masks: every sequence is full length (no padding, as in packed
pre-training batches), so no ``attention_mask`` is passed and each model
builds the mask it needs itself (a causal mask for decoders, none for
encoders).

Key/value cache: ``use_cache=False`` is passed where the model takes it, as
transformers' ``Trainer`` does for training (its ``use_cache`` argument
defaults to False): with the config's default (True) the model would copy
every layer's keys and values into a cache it never uses in training.  On
the meta device (the cost model) the cache is left as the config has it:
without one, transformers' mask code reads values back (is the batch
packed?), which the meta device cannot; so a count of a model whose config
enables the cache includes those copies (bytes, no FLOPs) and keeps the
copies, not views of the projection, as the attention's saved activations.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layertime.errors import LayertimeError

#: Share of positions a masked-LM batch predicts (BERT's 15%).
MLM_PROBABILITY = 0.15
#: Label that cross-entropy ignores (transformers' convention).
IGNORE_INDEX = -100
#: Config fields that give a model's number of learned absolute positions.
_POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx")


@dataclass(frozen=True)
class TokenBatch:
    """What the model is called with, and the targets its loss compares against."""

    inputs: Mapping[str, torch.Tensor]
    labels: torch.Tensor | None
    #: Keyword arguments that are not tensors.
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def _config(model: nn.Module) -> Any:
    config = getattr(_unwrap(model), "config", None)
    if config is None or getattr(config, "vocab_size", None) is None:
        raise LayertimeError(
            f"{type(_unwrap(model)).__name__} is not a transformers text model (no config with "
            "vocab_size): the token workload (--seq-len) feeds token ids to hf: models"
        )
    return config


def head_of(model: nn.Module) -> str:
    """The head of a transformers model: causal-lm, masked-lm, seq2seq-lm or base."""
    from layertime.models.hf import head_of_class

    inner = _unwrap(model)
    head = head_of_class(type(inner).__name__)
    if head is not None:
        return head
    config = _config(inner)
    return "base"


def _has_param(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def learned_positions(model: nn.Module) -> tuple[str, int] | None:
    """(config field, count) when the model looks positions up in a learned table.

    Such a model cannot take a sequence longer than the table (GPT-2's 1024,
    BERT's 512); rotary and relative positions (Llama, T5) have no table.
    """
    inner = _unwrap(model)
    config = _config(inner)
    for name in _POSITION_FIELDS:
        value = getattr(config, name, None)
        if not isinstance(value, int) or value < 1:
            continue
        for mod_name, mod in inner.named_modules():
            leaf = mod_name.rsplit(".", 1)[-1].lower()
            if (
                isinstance(mod, nn.Embedding)
                and mod.num_embeddings in (value, value + 2)  # OPT/BART offset by 2
                and ("pos" in leaf or leaf == "wpe")
            ):
                return name, value
    return None


@dataclass(frozen=True)
class TokenTask:
    """The batch and loss of one text model at one sequence length."""

    head: str
    seq_len: int
    vocab_size: int
    decoder_start_token_id: int = 0
    #: An encoder-decoder: the decoder is fed ``decoder_input_ids``.
    decoder: bool = False
    #: Keyword arguments (not tensors) for the model's forward: ``use_cache=False``.
    options: Mapping[str, Any] = field(default_factory=dict)

    def make_batch(
        self,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator | None = None,
    ) -> TokenBatch:
        """Random token ids (``batch_size`` x ``seq_len``) and the labels for the loss.

        On the meta device the tensors have shapes and no data (for counting).
        """
        shape = (batch_size, self.seq_len)
        if device.type == "meta":
            ids = torch.empty(shape, dtype=torch.long, device=device)
            labels = torch.empty(shape, dtype=torch.long, device=device)
            return self._assemble(ids, labels)
        gen = generator or torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(0, self.vocab_size, shape, generator=gen)
        if self.head == "masked-lm":
            k = max(1, round(MLM_PROBABILITY * self.seq_len))
            picked = torch.rand(shape, generator=gen).argsort(dim=1)[:, :k]
            labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
            labels.scatter_(1, picked, ids.gather(1, picked))
        elif self.head == "seq2seq-lm":
            labels = torch.randint(0, self.vocab_size, shape, generator=gen)
        else:
            labels = ids.clone()
        return self._assemble(ids.to(device), labels.to(device))

    def _assemble(self, ids: torch.Tensor, labels: torch.Tensor) -> TokenBatch:
        inputs: dict[str, torch.Tensor] = {"input_ids": ids}
        if self.decoder:
            # The targets shifted right behind the decoder start token.
            start = torch.full_like(labels[:, :1], self.decoder_start_token_id)
            inputs["decoder_input_ids"] = torch.cat([start, labels[:, :-1]], dim=1)
        options = dict(self.options)
        if ids.device.type == "meta":
            options.pop("use_cache", None)  # see the module docstring
        return TokenBatch(inputs, labels if self.head != "base" else None, options)

    def forward(self, model: nn.Module, batch: TokenBatch) -> Any:
        return model(**batch.inputs, **batch.options)

    def loss(self, output: Any, batch: TokenBatch) -> torch.Tensor:
        """The loss of the head, as transformers computes it from ``labels``."""
        if self.head == "base":
            hidden = _field(output, "last_hidden_state")
            return hidden.float().pow(2).mean()
        logits = _field(output, "logits").float()
        assert batch.labels is not None
        labels = batch.labels
        if self.head == "causal-lm":
            # transformers' ForCausalLMLoss: pad the labels and shift them left.
            labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
        )

    @property
    def classes(self) -> int | None:
        """Classes of the head's output (the vocabulary), None without a head."""
        return None if self.head == "base" else self.vocab_size


def _field(output: Any, name: str) -> torch.Tensor:
    value = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
    if value is None and isinstance(output, (tuple, list)) and output:
        value = output[0]
    if not isinstance(value, torch.Tensor):
        raise LayertimeError(f"the model's output has no {name} tensor")
    return value


def task_for(model: nn.Module, seq_len: int) -> TokenTask:
    """The token task of a transformers model (unwrapping DDP) at ``seq_len``."""
    if seq_len < 1:
        raise LayertimeError(f"--seq-len must be at least 1, not {seq_len}")
    inner = _unwrap(model)
    config = _config(inner)
    head = head_of(inner)
    options: dict[str, Any] = {}
    if _has_param(inner, "use_cache"):
        options["use_cache"] = False  # as transformers' Trainer trains
    decoder = bool(getattr(config, "is_encoder_decoder", False)) and _has_param(
        inner, "decoder_input_ids"
    )
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "pad_token_id", None)
    return TokenTask(
        head=head,
        seq_len=seq_len,
        vocab_size=int(config.vocab_size),
        decoder_start_token_id=int(start or 0),
        decoder=decoder,
        options=options,
    )


def check_tokens(
    model: nn.Module,
    seq_len: int,
    device: torch.device,
    label: str,
    amp: contextlib.AbstractContextManager[Any] | None = None,
) -> TokenTask:
    """One forward of one full-length sequence (no grad, eval mode) before any long work.

    A sequence longer than the model's learned positions is a one-line
    error before it runs; any other failure of the forward becomes one too.
    The model's train/eval mode is restored module by module.
    """
    task = task_for(model, seq_len)
    positions = learned_positions(model)
    if positions is not None and seq_len > positions[1]:
        field_name, n = positions
        raise LayertimeError(
            f"--seq-len {seq_len} is longer than {label}'s {n} learned positions ({field_name}); "
            f"use --seq-len {n} or less, or --config {field_name}={seq_len}"
        )
    batch = task.make_batch(1, device)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad(), (amp or contextlib.nullcontext()):
            out = task.forward(model, batch)
            task.loss(out, batch)
    except LayertimeError:
        raise
    except Exception as e:
        from layertime.workload import is_out_of_memory, out_of_memory

        if is_out_of_memory(e):
            raise out_of_memory(e, 1, device) from e
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise LayertimeError(f"--seq-len {seq_len} does not fit {label}: {text}") from e
    finally:
        for m, mode in modes:
            m.training = mode
    return task
