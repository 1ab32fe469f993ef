"""How a text model takes token ids, and the loss its head is trained with.

:class:`~layertime.workload.inputs.TokenInput` makes its batch, targets and
loss with these functions.  The head decides the loss, computed outside the
model (so that it is the step's ``loss`` row, not the model's) exactly as
Hugging Face transformers computes it when given ``labels``:

* ``causal-lm``: next-token cross-entropy; labels are the inputs, shifted
  by one inside the loss (the last position predicts nothing).  A model that
  is not a transformers model (a user's module taking token ids) is trained
  this way too;
* ``masked-lm``: cross-entropy over 15% of the positions per sequence
  (``MLM_PROBABILITY``; at least one), the rest ignored (label -100); the
  inputs are left as they are (random ids, so a [MASK] token would change
  nothing measurable);
* ``seq2seq-lm``: cross-entropy of the decoder's logits against random
  target ids as long as the input, the decoder fed the targets shifted right
  behind the decoder start token;
* ``base`` (a transformers model without a head): a stand-in, the mean of
  the squared last hidden state (in float32), so that backward reaches every
  layer; a model that returns no hidden state (a retriever's pooled output, a
  speech synthesiser's waveform) is trained on its first floating-point output.

Attention masks: every sequence is full length (no padding, as in packed
pre-training batches), so no ``attention_mask`` is passed and each model
builds the mask it needs itself (a causal mask for decoders, none for
encoders).

Key/value cache: ``use_cache=False`` is passed where the model takes it, as
transformers' ``Trainer`` does for training: with the config's default
(True) the model would copy every layer's keys and values into a cache it
never uses in training.  On the meta device (the cost model) the cache is
left as the config has it: without one, transformers' mask code reads values
back (is the batch packed?), which the meta device cannot; so a count of a
model whose config enables the cache includes those copies (bytes, no FLOPs)
and keeps the copies, not views of the projection, as the attention's saved
activations.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layertime.errors import LayertimeError

#: Heads, named by what they are trained to predict.
HEADS: tuple[str, ...] = ("causal-lm", "masked-lm", "seq2seq-lm", "base")
#: Share of positions a masked-LM batch predicts (BERT's 15%).
MLM_PROBABILITY = 0.15
#: Label that cross-entropy ignores (transformers' convention).
IGNORE_INDEX = -100
#: Config fields that give a model's number of learned absolute positions.
POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel (or similar) wrapper."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def text_config(model: nn.Module) -> Any:
    """A transformers model's config (one with ``vocab_size``), or None for any other module."""
    config = getattr(unwrap(model), "config", None)
    return config if getattr(config, "vocab_size", None) is not None else None


def vocabulary_size(model: nn.Module) -> int | None:
    """The model's vocabulary: ``config.vocab_size`` (transformers), else the size of its
    first embedding; None when it has neither."""
    config = text_config(model)
    if config is not None and int(config.vocab_size) > 0:
        return int(config.vocab_size)
    for m in unwrap(model).modules():
        if isinstance(m, nn.Embedding):
            return int(m.num_embeddings)
    return None


def head_of(model: nn.Module) -> str:
    """The head a model is trained with (``HEADS``): a transformers model's by its class
    (the auto mappings; a class in none of them with a config is ``base``); any other
    module that takes token ids is read as a causal LM."""
    inner = unwrap(model)
    if text_config(inner) is None:
        return "causal-lm"
    from layertime.models.hf import head_of_class

    return head_of_class(type(inner).__name__) or "base"


def _takes(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def learned_positions(model: nn.Module) -> tuple[str, int] | None:
    """(config field, count) when the model looks positions up in a learned table.

    Such a model cannot take a sequence longer than the table (GPT-2's 1024,
    BERT's 512); rotary and relative positions (Llama, T5) have no table.
    """
    inner = unwrap(model)
    config = text_config(inner)
    if config is None:
        return None
    for name in POSITION_FIELDS:
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
class TokenCall:
    """How a model is called with token ids: by keyword (``input_ids=``, transformers) or
    positionally (a user's module), with the decoder's inputs, and non-tensor options."""

    keyword: bool
    #: An encoder-decoder: the decoder is fed ``decoder_input_ids``.
    decoder: bool = False
    decoder_start_token_id: int = 0
    #: Keyword arguments that are not tensors: ``use_cache=False``.
    options: Mapping[str, Any] = field(default_factory=dict)


def call_of(model: nn.Module) -> TokenCall:
    """How ``model`` (unwrapping DDP) takes token ids."""
    inner = unwrap(model)
    config = text_config(inner)
    if config is None:
        return TokenCall(keyword=False)
    options: dict[str, Any] = {}
    if _takes(inner, "use_cache"):
        options["use_cache"] = False  # as transformers' Trainer trains
    decoder = bool(getattr(config, "is_encoder_decoder", False)) and _takes(
        inner, "decoder_input_ids"
    )
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(config, "pad_token_id", None)
    return TokenCall(True, decoder, int(start or 0), options)


@dataclass(frozen=True)
class TokenBatch:
    """A batch of token ids as the model takes them, and the labels its loss compares with."""

    ids: torch.Tensor
    #: ``decoder_input_ids`` of an encoder-decoder, else None.
    decoder_ids: torch.Tensor | None
    #: None for the stand-in loss of a model without a head.
    labels: torch.Tensor | None
    options: Mapping[str, Any]


def make_batch(
    head: str,
    seq_len: int,
    vocab_size: int,
    n: int,
    call: TokenCall,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> TokenBatch:
    """Random token ids (``n`` x ``seq_len``) and the labels of ``head``'s loss.

    Drawn on the CPU from ``generator`` (seed 0 when None) and moved, so every
    device gets the same numbers; on the meta device the tensors have shapes
    and no data (for counting).
    """
    shape = (n, seq_len)
    options = dict(call.options)
    if device.type == "meta":
        ids = torch.empty(shape, dtype=torch.long, device=device)
        labels = torch.empty(shape, dtype=torch.long, device=device)
        options.pop("use_cache", None)  # see the module docstring
    else:
        gen = generator or torch.Generator(device="cpu").manual_seed(0)
        ids = torch.randint(0, vocab_size, shape, generator=gen)
        if head == "masked-lm":
            k = max(1, round(MLM_PROBABILITY * seq_len))
            picked = torch.rand(shape, generator=gen).argsort(dim=1)[:, :k]
            labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
            labels.scatter_(1, picked, ids.gather(1, picked))
        elif head == "seq2seq-lm":
            labels = torch.randint(0, vocab_size, shape, generator=gen)
        else:
            labels = ids.clone()
        ids, labels = ids.to(device), labels.to(device)
    decoder_ids = None
    if call.decoder:
        # The targets shifted right behind the decoder start token.
        start = torch.full_like(labels[:, :1], call.decoder_start_token_id)
        decoder_ids = torch.cat([start, labels[:, :-1]], dim=1)
    return TokenBatch(ids, decoder_ids, labels if head != "base" else None, options)


def _field(output: Any, name: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    value = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
    if value is None and isinstance(output, (tuple, list)) and output:
        value = output[0]
    if not isinstance(value, torch.Tensor):
        raise LayertimeError(f"the model's output has no {name} tensor")
    return value


def _stand_in(output: Any) -> torch.Tensor:
    """What a model without a head is trained on here: its last hidden state, or, for a
    model that returns none (a retriever's pooled output, a speech synthesiser's
    waveform), its first floating-point output."""
    if isinstance(output, Mapping) and isinstance(output.get("last_hidden_state"), torch.Tensor):
        return output["last_hidden_state"]
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, Mapping) else (
        output if isinstance(output, (tuple, list)) else ())
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    return _field(output, "last_hidden_state")


def head_loss(head: str, output: Any, labels: torch.Tensor | None) -> torch.Tensor:
    """The loss of ``head``, as transformers computes it from ``labels`` (module docstring)."""
    if head == "base" or labels is None:
        return _stand_in(output).float().pow(2).mean()
    logits = _field(output, "logits").float()
    if head == "causal-lm":
        # transformers' ForCausalLMLoss: pad the labels and shift them left.
        labels = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
