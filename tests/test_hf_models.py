"""hf: model sources (built-in configs, model types, files, the local HF cache) and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _tiny_transformers import tiny
from layertime.errors import BadValue, LayertimeError
from layertime.models import ModelRef, available, resolve, target
from layertime.models.hf import apply_overrides, choose_head, parse_value, resolve_hf
from layertime.workload import ImageInput, TokenInput, WorkloadSpec


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _params_on_meta(name: str) -> int:
    """Parameters of an hf: model built on the meta device (each tied parameter once)."""
    hf = resolve_hf(name)
    with torch.device("meta"):
        model = hf.build()
    return sum(p.numel() for p in model.parameters())


# -- built-in published configs -------------------------------------------------------
@pytest.mark.parametrize(
    "name, model_class, head, params",
    [
        # The parameter counts published for these models (tied heads counted once).
        ("gpt2", "GPT2LMHeadModel", "causal-lm", 124_439_808),
        ("gpt2-medium", "GPT2LMHeadModel", "causal-lm", 354_823_168),
        ("bert-base-uncased", "BertForMaskedLM", "masked-lm", 109_514_298),
        ("bert-large-uncased", "BertForMaskedLM", "masked-lm", 335_174_458),
        ("tinyllama-1.1b", "LlamaForCausalLM", "causal-lm", 1_100_048_384),
        ("t5-small", "T5ForConditionalGeneration", "seq2seq-lm", 60_506_624),
    ],
)
def test_builtin_configs_build_the_published_models(
    name: str, model_class: str, head: str, params: int
) -> None:
    hf = resolve_hf(name)
    assert hf.source == "builtin" and hf.origin.startswith("https://huggingface.co/")
    assert (hf.model_class, hf.head) == (model_class, head)
    assert _params_on_meta(name) == params


def test_hub_ids_of_builtin_configs_are_aliases() -> None:
    assert resolve_hf("openai-community/gpt2").name == "gpt2"
    assert resolve_hf("TinyLlama/TinyLlama-1.1B-Chat-v1.0").name == "tinyllama-1.1b"
    assert resolve("hf:google-bert/bert-base-uncased").name == "hf:bert-base-uncased"
    assert "hf:gpt2" in available() and "hf:tinyllama-1.1b" in available()


# -- model types and heads ------------------------------------------------------------
def test_model_types_get_their_default_config_and_head() -> None:
    llama = resolve_hf("llama")
    assert llama.source == "type" and llama.head == "causal-lm"
    assert (llama.config.hidden_size, llama.config.num_hidden_layers) == (4096, 32)
    assert resolve_hf("bert").head == "masked-lm"  # not BERT's causal "decoder mode" head
    assert resolve_hf("t5").head == "seq2seq-lm"
    assert resolve_hf("mistral").model_class == "MistralForCausalLM"


def test_a_text_model_without_an_lm_head_is_the_bare_model() -> None:
    from transformers import CLIPTextConfig

    head, cls = choose_head(CLIPTextConfig())
    assert head == "base" and cls == "CLIPTextModel"


def test_the_published_architecture_decides_the_head() -> None:
    from transformers import BertConfig

    assert choose_head(BertConfig(architectures=["BertLMHeadModel"])) == (
        "causal-lm", "BertLMHeadModel")
    assert choose_head(BertConfig()) == ("masked-lm", "BertForMaskedLM")


def test_an_image_classifier_takes_images_and_other_models_are_refused_saying_what_works(
) -> None:
    vit = resolve_hf("vit")
    assert (vit.head, vit.model_class, vit.image_size) == (
        "image-classification", "ViTForImageClassification", 224)
    spec = resolve("hf:vit")
    assert spec.default_input() == ImageInput.square(224)
    assert target(ModelRef("hf:vit"), ImageInput.square(32)).input == ImageInput.square(32)
    with pytest.raises(LayertimeError, match=r"hf:vit takes images: give --input-shape"):
        target("hf:vit", TokenInput(16))
    tiny_vit = ["num_hidden_layers=1", "hidden_size=32", "num_attention_heads=2",
                "intermediate_size=64"]
    model = resolve(ModelRef("hf:vit", tuple(tiny_vit))).build(10, 32)
    assert model.config.num_labels == 10 and model.config.image_size == 32
    with pytest.raises(LayertimeError, match=r"takes input_values \(HubertModel\), not token"):
        resolve_hf("hubert")
    with pytest.raises(LayertimeError, match="its parts that take them: hf:clip_text_model"):
        resolve_hf("clip")
    with pytest.raises(LayertimeError, match="neither a text model .* nor an image classifier"):
        resolve_hf("siglip_vision_model")


def test_an_encoder_decoder_whose_encoder_takes_no_token_ids_says_how_to_get_its_decoder(
) -> None:
    # Whisper's encoder takes audio features: built silently as WhisperForCausalLM before,
    # its encoder_layers ignored.
    with pytest.raises(LayertimeError, match="--config is_encoder_decoder=false") as e:
        resolve_hf("whisper", ["encoder_layers=2"])
    assert "decoder alone (WhisperForCausalLM" in str(e.value) and "\n" not in str(e.value)
    hf = resolve_hf("whisper", ["is_encoder_decoder=false"])
    assert (hf.head, hf.model_class) == ("causal-lm", "WhisperForCausalLM")


def test_a_config_field_transformers_reads_but_does_not_define_is_named_with_its_flag() -> None:
    # DBRX's attention reads attn_config.rope_theta, which DbrxAttentionConfig lacks.
    tiny_dbrx = ["n_layers=1", "d_model=32", "n_heads=2", "vocab_size=64",
                 'ffn_config={"ffn_hidden_size": 32, "moe_num_experts": 2, "moe_top_k": 1}']
    with pytest.raises(LayertimeError) as e:
        resolve_hf("dbrx", tiny_dbrx).build()
    assert "transformers reads attn_config.rope_theta" in str(e.value)
    assert """--config 'attn_config={"rope_theta": VALUE}'""" in str(e.value)
    model = resolve_hf("dbrx", [*tiny_dbrx, 'attn_config={"rope_theta": 10000}']).build()
    assert model.config.attn_config.rope_theta == 10000


def test_bad_config_values_are_one_line_errors_that_say_what_is_wrong() -> None:
    with pytest.raises(BadValue) as e:
        resolve_hf("llama", ["hidden_size=65"])
    assert str(e.value) == ("--config for hf:llama: The hidden size (65) is not a multiple of "
                            "the number of attention heads (32).")
    with pytest.raises(BadValue, match="num_hidden_layers=-1: .* cannot be negative"):
        resolve_hf("llama", ["num_hidden_layers=-1"])
    with pytest.raises(BadValue, match="num_hidden_layers=0: hf:llama would have no layers"):
        resolve_hf("llama", ["num_hidden_layers=0"])
    with pytest.raises(BadValue) as e:
        resolve_hf("olmoe", ["num_experts=4"])
    assert str(e.value) == (
        "--config num_experts=4: hf:olmoe routes each token to num_experts_per_tok=8 "
        "experts, more than its num_experts=4; give --config num_experts_per_tok=4 or "
        "fewer, or more experts")
    assert resolve_hf("olmoe", ["num_experts=4", "num_experts_per_tok=2"]).config.num_experts == 4


# -- local files and the cache ------------------------------------------------------------
def _write_config(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "n_layer": 3, "n_embd": 32, "n_head": 2,
                                "vocab_size": 100, "architectures": ["GPT2LMHeadModel"]}))
    return path


def test_a_local_config_file_or_its_folder(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "m")
    for text in (str(path), str(path.parent)):
        hf = resolve_hf(text)
        assert hf.source == "file" and hf.config.n_layer == 3 and hf.head == "causal-lm"
    assert resolve_hf(str(path), ["n_layer=1"]).config.n_layer == 1


def test_local_config_errors(tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="no such file"):
        resolve_hf(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LayertimeError, match="not a JSON config"):
        resolve_hf(str(bad))
    typeless = tmp_path / "typeless.json"
    typeless.write_text("{}")
    with pytest.raises(LayertimeError, match="no model_type"):
        resolve_hf(str(typeless))
    odd = tmp_path / "odd.json"
    odd.write_text('{"model_type": "no-such-type"}')
    with pytest.raises(LayertimeError, match="not one the installed transformers knows"):
        resolve_hf(str(odd))


def test_a_hub_name_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "models--someorg--tiny-gpt"
    _write_config(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    hf = resolve_hf("someorg/tiny-gpt")
    assert hf.source == "cache" and hf.config.n_layer == 3


def test_a_name_that_needs_the_network_is_one_line_saying_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(LayertimeError) as e:
        resolve_hf("meta-llama/Llama-2-7b-hf")
    msg = str(e.value)
    assert "\n" not in msg and "never downloads" in msg
    assert "huggingface-cli download meta-llama/Llama-2-7b-hf config.json" in msg
    with pytest.raises(LayertimeError, match="did you mean hf:llama"):
        resolve_hf("lama")


# -- --config KEY=VALUE -----------------------------------------------------------------
def test_overrides_are_checked_against_the_config_class() -> None:
    hf = resolve_hf("gpt2", ["n_layer=2", "num_attention_heads=4", "scale_attn_weights=false",
                             "layer_norm_epsilon=1e-6", "activation_function=relu"])
    c = hf.config
    assert (c.n_layer, c.n_head, c.scale_attn_weights) == (2, 4, False)
    assert c.layer_norm_epsilon == pytest.approx(1e-6) and c.activation_function == "relu"
    with pytest.raises(LayertimeError) as e:
        resolve_hf("gpt2", ["n_layers=2"])
    assert "has no field 'n_layers'" in str(e.value) and "n_layer" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(LayertimeError, match="expected a whole number"):
        resolve_hf("gpt2", ["n_layer=2.5"])
    with pytest.raises(LayertimeError, match="expected true or false"):
        resolve_hf("gpt2", ["scale_attn_weights=maybe"])
    with pytest.raises(LayertimeError, match="expected KEY=VALUE"):
        resolve_hf("gpt2", ["n_layer"])


def test_values_parse_by_the_type_of_the_default() -> None:
    assert parse_value("k", "3", 1) == 3 and parse_value("k", "3", 1.0) == 3.0
    assert parse_value("k", "yes", False) is True and parse_value("k", "3", "x") == "3"
    assert parse_value("k", "[1, 2]", [0]) == [1, 2]
    # A field that is None takes a number, a flag, null or text.
    assert parse_value("k", "7", None) == 7 and parse_value("k", "0.5", None) == 0.5
    assert parse_value("k", "null", None) is None and parse_value("k", "gelu", None) == "gelu"
    from transformers import LlamaConfig

    c = apply_overrides(LlamaConfig, {}, ["num_hidden_layers=2", "hidden_size=64"], "hf:llama")
    assert (c.num_hidden_layers, c.hidden_size) == (2, 64)


def test_config_overrides_apply_to_hf_models_only() -> None:
    with pytest.raises(LayertimeError, match="hf: models only"):
        resolve(ModelRef("alexnet", ("n_layer=2",)))
    with pytest.raises(LayertimeError, match="expected KEY=VALUE"):
        ModelRef("hf:gpt2", ("n_layer",))
    with pytest.raises(LayertimeError, match="alexnet takes images"):
        target("alexnet", TokenInput(16))
    with pytest.raises(LayertimeError, match="give --seq-len"):
        target("hf:gpt2", ImageInput.square(32))
    t = target(ModelRef("hf:gpt2", tuple(tiny("gpt2"))), TokenInput(16))
    assert t.input == TokenInput(16) and t.spec is not None
    assert target("hf:gpt2").input == TokenInput(128)  # the default sequence length
    # The overrides travel with the name, and are stored with the workload.
    spec = WorkloadSpec.create(ModelRef("hf:gpt2", ("n_layer=2",)), seq_len=16)
    d = spec.to_dict()
    assert d["model"] == "hf:gpt2" and d["model_config"] == ["n_layer=2"]
    assert WorkloadSpec.from_dict(d) == spec


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(LayertimeError, match=r"pip install 'layertime\[hf\]'"):
        resolve("hf:gpt2")


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    r = subprocess.run([sys.executable, "-m", "layertime", "profile", "hf:gpt2", "--config",
                        "n_layers=2", "--no-store"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr  # a bad flag value
    assert "close: n_layer" in r.stderr
    r = subprocess.run([sys.executable, "-m", "layertime", "cost", "hf:someorg/private-model",
                        "--no-store"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "never downloads" in r.stderr
    r = subprocess.run([sys.executable, "-m", "layertime", "profile", "alexnet", "--seq-len",
                        "16", "--no-store"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "alexnet takes images" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "layertime", "profile", "hf:gpt2", "--seq-len",
                        "0"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--seq-len" in r.stderr
    for flags, said in ((["hf:llama", "--config", "hidden_size=65"], "is not a multiple"),
                        (["hf:llama", "--config", "num_hidden_layers=-1"], "cannot be negative"),
                        (["hf:olmoe", "--config", "num_experts=4"], "num_experts_per_tok=8")):
        r = subprocess.run([sys.executable, "-m", "layertime", "profile", *flags, "--no-store"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and said in r.stderr, r.stderr
