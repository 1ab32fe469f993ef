"""Tiny transformers configs (2 layers, hidden 64) shared by the hf: tests."""

from __future__ import annotations

#: --config overrides that make each model type tiny.
TINY: dict[str, list[str]] = {
    "gpt2": ["n_layer=2", "n_embd=64", "n_head=4", "vocab_size=128", "n_positions=64"],
    "bert": ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=4",
             "intermediate_size=128", "vocab_size=128", "max_position_embeddings=64"],
    "llama": ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=4",
              "num_key_value_heads=2", "intermediate_size=128", "vocab_size=128"],
    "t5": ["num_layers=2", "d_model=64", "num_heads=4", "d_kv=16", "d_ff=128", "vocab_size=128"],
    "olmoe": ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=2",
              "num_key_value_heads=2", "intermediate_size=64", "num_experts=4",
              "num_experts_per_tok=2", "vocab_size=128"],
    "qwen2_moe": ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=4",
                  "num_key_value_heads=2", "intermediate_size=128", "moe_intermediate_size=32",
                  "shared_expert_intermediate_size=64", "num_experts=4",
                  "num_experts_per_tok=2", "vocab_size=128"],
    "granitemoe": ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=4",
                   "num_key_value_heads=2", "intermediate_size=32", "num_local_experts=4",
                   "num_experts_per_tok=2", "vocab_size=128"],
    "mixtral": ["num_hidden_layers=2", "hidden_size=64", "num_attention_heads=4",
                "num_key_value_heads=2", "intermediate_size=32", "num_local_experts=4",
                "num_experts_per_tok=2", "vocab_size=128"],
}


def tiny(model_type: str) -> list[str]:
    return list(TINY[model_type])
