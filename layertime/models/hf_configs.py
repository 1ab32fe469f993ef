"""Published Hugging Face configs, written in so that ``hf:NAME`` works offline.

Each entry is the ``config.json`` of a model on the Hugging Face Hub, as
published (fields that only concern tokenizers or generation are left out;
none of them changes the network).  Only the architecture comes from here:
the weights are always a random init, never downloaded.  ``source`` names
the file each was copied from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PublishedConfig:
    """A model's published config and where it was published."""

    name: str
    source: str
    config: dict[str, Any]
    #: Other names people use for it (hub ids with their organisation).
    aliases: tuple[str, ...] = ()


_GPT2_COMMON: dict[str, Any] = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "vocab_size": 50257,
}

_BERT_COMMON: dict[str, Any] = {
    "architectures": ["BertForMaskedLM"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}

PUBLISHED: tuple[PublishedConfig, ...] = (
    PublishedConfig(
        "gpt2",
        "https://huggingface.co/openai-community/gpt2/blob/main/config.json",
        {**_GPT2_COMMON, "n_embd": 768, "n_head": 12, "n_layer": 12},
        ("openai-community/gpt2",),
    ),
    PublishedConfig(
        "gpt2-medium",
        "https://huggingface.co/openai-community/gpt2-medium/blob/main/config.json",
        {**_GPT2_COMMON, "n_embd": 1024, "n_head": 16, "n_layer": 24},
        ("openai-community/gpt2-medium",),
    ),
    PublishedConfig(
        "bert-base-uncased",
        "https://huggingface.co/google-bert/bert-base-uncased/blob/main/config.json",
        {
            **_BERT_COMMON,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
        },
        ("google-bert/bert-base-uncased",),
    ),
    PublishedConfig(
        "bert-large-uncased",
        "https://huggingface.co/google-bert/bert-large-uncased/blob/main/config.json",
        {
            **_BERT_COMMON,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_attention_heads": 16,
            "num_hidden_layers": 24,
        },
        ("google-bert/bert-large-uncased",),
    ),
    PublishedConfig(
        "tinyllama-1.1b",
        "https://huggingface.co/TinyLlama/TinyLlama-1.1B-Chat-v1.0/blob/main/config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": 2048,
            "initializer_range": 0.02,
            "intermediate_size": 5632,
            "max_position_embeddings": 2048,
            "model_type": "llama",
            "num_attention_heads": 32,
            "num_hidden_layers": 22,
            "num_key_value_heads": 4,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0,
            "tie_word_embeddings": False,
            "vocab_size": 32000,
        },
        (
            "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
            "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
            "tinyllama",
        ),
    ),
    PublishedConfig(
        "t5-small",
        "https://huggingface.co/google-t5/t5-small/blob/main/config.json",
        {
            "architectures": ["T5ForConditionalGeneration"],
            "d_ff": 2048,
            "d_kv": 64,
            "d_model": 512,
            "decoder_start_token_id": 0,
            "dropout_rate": 0.1,
            "eos_token_id": 1,
            "feed_forward_proj": "relu",
            "initializer_factor": 1.0,
            "is_encoder_decoder": True,
            "layer_norm_epsilon": 1e-06,
            "model_type": "t5",
            "n_positions": 512,
            "num_decoder_layers": 6,
            "num_heads": 8,
            "num_layers": 6,
            "pad_token_id": 0,
            "relative_attention_num_buckets": 32,
            "vocab_size": 32128,
        },
        ("google-t5/t5-small",),
    ),
)


def find_published(name: str) -> PublishedConfig | None:
    """The built-in config for a name or alias (case-insensitive), or None."""
    key = name.strip().lower()
    for p in PUBLISHED:
        if key == p.name or key in (a.lower() for a in p.aliases):
            return p
    return None


def published_names() -> tuple[str, ...]:
    return tuple(p.name for p in PUBLISHED)
