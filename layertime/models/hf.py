"""Hugging Face ``transformers`` models, built from a config with random init.

``hf:NAME`` names a text model by its config, never by its weights:

* ``hf:path/to/config.json`` or ``hf:path/to/folder`` (holding a ``config.json``);
* ``hf:gpt2``, ``hf:gpt2-medium``, ``hf:bert-base-uncased``,
  ``hf:bert-large-uncased``, ``hf:tinyllama-1.1b``, ``hf:t5-small``: published
  configs written into layertime (``hf_configs.py`` names their sources), so
  they work offline; hub ids such as ``hf:openai-community/gpt2`` are aliases;
* ``hf:TYPE`` for any model type the installed ``transformers`` knows
  (``llama``, ``mistral``, ``bert``, ``t5``, ...): that type's default config;
* any other hub id (``hf:org/name``), when its ``config.json`` is in the local
  Hugging Face cache.  Nothing is ever downloaded: a name that would need the
  network is a one-line error saying how to get the config.

``overrides`` (``--config KEY=VALUE``, repeatable) change config fields; a
key must be a field of the config class (or one of its aliases, such as
``num_hidden_layers`` for GPT-2's ``n_layer``), and each value is parsed by
the type of the field's current value (int, float, bool, str; JSON for lists
and dicts; a field that is None takes a number, true/false, null or text).

The head, and so the loss (``layertime.workload.tokens``), is chosen thus:

1. the config's ``architectures`` (a published config's own class), when
   transformers has that class and it is a causal-LM, masked-LM or
   sequence-to-sequence LM head;
2. else an encoder-decoder config gets its sequence-to-sequence LM head;
3. else a type with a masked-LM head gets it (encoders such as BERT also
   list a causal "decoder mode" head, which is not how they are trained);
4. else a type with a causal-LM head gets it;
5. else the bare model (``AutoModel``), with no head.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layertime.errors import BadValue, LayertimeError
from layertime.models.hf_configs import find_published, published_names

if TYPE_CHECKING:  # torch loads with the first model built, not with the name list
    from torch import nn

PREFIX = "hf:"
#: Token ids per sequence when ``--seq-len`` is not given.
DEFAULT_SEQ_LEN = 128
_INSTALL = "pip install 'layertime[hf]'"


def transformers_module() -> Any:
    """The installed ``transformers``, or a one-line error naming the extra."""
    try:
        import transformers
    except ImportError as e:
        raise LayertimeError(
            f"hf: models need transformers, which is not installed ({_INSTALL})"
        ) from e
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' logging (config warnings) for the block, then restore it."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _mappings() -> dict[str, Mapping[str, Any]]:
    from transformers.models.auto import modeling_auto as ma

    return {
        "causal-lm": ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "masked-lm": ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        "seq2seq-lm": ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
        "base": ma.MODEL_MAPPING_NAMES,
    }


def _class_names(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (str(value),)


def head_of_class(class_name: str) -> str | None:
    """Which head a transformers model class is (by the auto mappings), or None."""
    for head in ("seq2seq-lm", "masked-lm", "causal-lm", "base"):
        for value in _mappings()[head].values():
            if class_name in _class_names(value):
                return head
    return None


def choose_head(config: Any) -> tuple[str, str]:
    """(head, model class name) for a config, by the rule in the module docstring."""
    transformers = transformers_module()
    maps = _mappings()
    for arch in getattr(config, "architectures", None) or ():
        head = head_of_class(str(arch))
        if head in ("causal-lm", "masked-lm", "seq2seq-lm") and hasattr(transformers, str(arch)):
            return head, str(arch)
    mtype = config.model_type
    order = ["seq2seq-lm"] if getattr(config, "is_encoder_decoder", False) else []
    order += ["masked-lm", "causal-lm", "base"]
    for head in order:
        if mtype in maps[head]:
            return head, _class_names(maps[head][mtype])[0]
    raise LayertimeError(f"transformers has no model class for type {mtype!r}")


@dataclass(frozen=True)
class HFModel:
    """A resolved ``hf:`` name: its config (overrides applied) and head."""

    name: str
    #: "builtin" (a published config written in), "type" (a model type's
    #: default config), "file" (a local config.json) or "cache" (the HF cache).
    source: str
    #: Where the config came from: a URL, a path, or the config class.
    origin: str
    config: Any
    head: str
    model_class: str

    @property
    def label(self) -> str:
        return PREFIX + self.name

    def build(self) -> nn.Module:
        """The model with random init (seed it first for a repeatable init)."""
        from torch import nn

        transformers = transformers_module()
        cls = getattr(transformers, self.model_class, None)
        if cls is None:
            raise LayertimeError(f"transformers has no class {self.model_class}")
        with quiet_transformers():
            try:
                model = cls._from_config(self.config)
            except LayertimeError:
                raise
            except Exception as e:
                raise LayertimeError(f"cannot build {self.label}: {_first_line(e)}") from e
        if not isinstance(model, nn.Module):
            raise LayertimeError(f"{self.model_class} is not a torch module")
        return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def model_types() -> tuple[str, ...]:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return tuple(CONFIG_MAPPING_NAMES)


def _config_class(model_type: str, where: str) -> Any:
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return CONFIG_MAPPING[model_type]
    except KeyError:
        raise LayertimeError(
            f"{where}: model_type {model_type!r} is not one the installed transformers knows"
        ) from None


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise LayertimeError(f"cannot read {path}: {e.strerror}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LayertimeError(f"{path} is not a JSON config: {e}") from e
    if not isinstance(data, dict) or "model_type" not in data:
        raise LayertimeError(f"{path} is not a transformers config (no model_type)")
    return data


def _cached_config(repo_id: str) -> Path | None:
    """The path of a hub model's config.json in the local HF cache, or None (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # an id the hub would reject (HFValidationError) is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def _cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def _looks_like_path(text: str) -> bool:
    return text.endswith(".json") or text.startswith((".", "/", "~")) or Path(text).exists()


# -- --config KEY=VALUE -----------------------------------------------------------
def known_keys(config_class: Any, base: Any) -> set[str]:
    """Keys ``--config`` accepts: the class's fields, its aliases, what the config holds."""
    import dataclasses

    keys = set(getattr(config_class, "attribute_map", {}) or {})
    if dataclasses.is_dataclass(config_class):
        keys |= {f.name for f in dataclasses.fields(config_class)}
    keys |= set(base.to_dict())
    return {k for k in keys if not k.startswith("_")}


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BadValue(f"--config {text!r}: expected KEY=VALUE, e.g. num_hidden_layers=2")
    return key, value.strip()


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(key: str, text: str, default: Any) -> Any:
    """``text`` as the type of ``default`` (the field's current value)."""
    where = f"--config {key}={text}"
    low = text.lower()
    if isinstance(default, bool):
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise BadValue(f"{where}: expected true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise BadValue(f"{where}: expected a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise BadValue(f"{where}: expected a number") from None
    if isinstance(default, str):
        return text
    if isinstance(default, (list, tuple, dict)):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise BadValue(f"{where}: expected JSON like the current value") from None
    # The field is None (or of another type): a number, a flag, null, JSON, or text.
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    return text


def apply_overrides(
    config_class: Any, base_dict: Mapping[str, Any], overrides: Sequence[str], label: str
) -> Any:
    """The config class built from ``base_dict`` with ``overrides`` applied, checked."""
    with quiet_transformers():
        try:
            base = config_class.from_dict(dict(base_dict)) if base_dict else config_class()
        except Exception as e:
            raise LayertimeError(f"{label}: bad config: {_first_line(e)}") from e
        if not overrides:
            return base
        keys = known_keys(config_class, base)
        aliases = dict(getattr(config_class, "attribute_map", {}) or {})
        parsed: dict[str, Any] = {}
        for text in overrides:
            key, value = parse_override(text)
            if key not in keys:
                close = difflib.get_close_matches(key, sorted(keys), n=4, cutoff=0.5)
                hint = f" (close: {', '.join(close)})" if close else ""
                raise BadValue(
                    f"--config {key}: {label}'s config ({config_class.__name__}) has no field "
                    f"{key!r}{hint}"
                )
            canonical = aliases.get(key, key)
            parsed[canonical] = parse_value(key, value, getattr(base, canonical, None))
        try:
            if base_dict:
                return config_class.from_dict({**dict(base_dict), **parsed})
            return config_class(**parsed)
        except Exception as e:
            raise BadValue(f"--config for {label}: {_first_line(e)}") from e


# -- resolution -------------------------------------------------------------------
def resolve_hf(name: str, overrides: Sequence[str] = ()) -> HFModel:
    """Resolve the part of ``hf:NAME`` after the prefix; one-line errors."""
    transformers_module()
    name = name.strip()
    label = PREFIX + name
    if not name:
        raise BadValue("hf: needs a name: hf:gpt2, hf:llama, hf:path/to/config.json")
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise LayertimeError(f"{label}: no such file: {path}")
        data = _read_config_json(path)
        cls = _config_class(str(data["model_type"]), str(path))
        return _finish(name, "file", str(path), apply_overrides(cls, data, overrides, label))
    published = find_published(name)
    if published is not None:
        data = dict(published.config)
        cls = _config_class(str(data["model_type"]), published.name)
        config = apply_overrides(cls, data, overrides, label)
        return _finish(published.name, "builtin", published.source, config)
    types = model_types()
    if name in types:
        cls = _config_class(name, name)
        return _finish(name, "type", cls.__name__, apply_overrides(cls, {}, overrides, label))
    cached = _cached_config(name)
    if cached is not None:
        data = _read_config_json(cached)
        cls = _config_class(str(data["model_type"]), str(cached))
        return _finish(name, "cache", str(cached), apply_overrides(cls, data, overrides, label))
    candidates = list(published_names()) + list(types)
    close = difflib.get_close_matches(name.lower(), candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
    raise BadValue(
        f"{label}: not a built-in config ({', '.join(published_names())}), not a model type "
        f"transformers knows, and its config.json is not in the local Hugging Face cache "
        f"({_cache_dir()}){hint}; layertime never downloads: fetch the config where there is a "
        f"network (huggingface-cli download {name} config.json) or give hf:path/to/config.json"
    )


def _finish(name: str, source: str, origin: str, config: Any) -> HFModel:
    text = getattr(config, "get_text_config", None)
    if getattr(config, "vocab_size", None) is None:
        inner = text() if callable(text) else None
        if inner is None or getattr(inner, "vocab_size", None) is None or inner is config:
            raise BadValue(
                f"hf:{name} ({config.model_type}) is not a text model: its config has no "
                "vocab_size, and layertime's token workload feeds token ids"
            )
    head, cls = choose_head(config)
    return HFModel(name, source, origin, config, head, cls)


def hf_names() -> list[str]:
    """The built-in ``hf:`` names (model types are listed by ``transformers``)."""
    return [PREFIX + n for n in published_names()]
