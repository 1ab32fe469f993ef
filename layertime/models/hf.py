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

An encoder-decoder left with a causal-LM head by these rules (Whisper: its
encoder takes audio features) is refused, saying how to ask for its decoder
alone (``--config is_encoder_decoder=false``).  A config with no vocabulary is
an image classifier when transformers has an image-classification head for its
type (``hf:vit``: images, ``--image-size``, its labels ``--num-classes``), and
refused otherwise, naming the parts of a composite config that take token ids.
Overrides are checked before anything is built: no negative count or size, no
model of no layers, no top-k over more experts than there are; transformers'
own validation errors are given in one line that says what is wrong.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import re
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
#: The head of an image classifier (``hf:vit``): it takes images, not token ids.
IMAGE_HEAD = "image-classification"
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
    raise BadValue(f"transformers has no model class for type {mtype!r} (a part of another "
                   "model's config, or a model built only inside another): give the model "
                   "that holds it")


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

    @property
    def takes_images(self) -> bool:
        """An image classifier (``head`` is ``image-classification``): it takes images."""
        return self.head == IMAGE_HEAD

    @property
    def image_size(self) -> int | None:
        """An image classifier's image size (H = W) in its config, else None."""
        size = getattr(self.config, "image_size", None)
        if isinstance(size, (list, tuple)) and size:
            size = size[0]
        return int(size) if isinstance(size, int) and size > 0 else None

    def build(self, num_classes: int | None = None, image_size: int | None = None) -> nn.Module:
        """The model with random init (seed it first for a repeatable init).  An image
        classifier is built for ``num_classes`` labels and ``image_size`` (its position
        tables depend on it) when given; a text model ignores both."""
        from torch import nn

        transformers = transformers_module()
        cls = getattr(transformers, self.model_class, None)
        if cls is None:
            raise LayertimeError(f"transformers has no class {self.model_class}")
        config = self.config
        if self.takes_images and (num_classes is not None or image_size is not None):
            config = copy.deepcopy(config)
            old = getattr(config, "image_size", None)
            try:
                if num_classes is not None:
                    config.num_labels = num_classes
                if image_size is not None and old is not None:
                    config.image_size = (type(old)([image_size, image_size])
                                         if isinstance(old, (list, tuple)) else image_size)
            except Exception as e:  # transformers' field validation, of any kind
                raise BadValue(f"{self.label}: {_first_line(e)}") from e
        with quiet_transformers():
            try:
                model = cls._from_config(config)
            except LayertimeError:
                raise
            except AttributeError as e:
                raise LayertimeError(f"cannot build {self.label}: {_missing_field(e, config)}") from e
            except Exception as e:
                raise LayertimeError(f"cannot build {self.label}: {_first_line(e)}") from e
        if not isinstance(model, nn.Module):
            raise LayertimeError(f"{self.model_class} is not a torch module")
        return model


_NO_ATTRIBUTE = re.compile(r"'(\w+)' object has no attribute '(\w+)'")


def _missing_field(e: AttributeError, config: Any) -> str:
    """What to set when transformers' code reads a config field the config lacks
    (DBRX's attention reads ``attn_config.rope_theta``, which its config class does not
    define): the field and the ``--config`` that gives it, or the error's own words."""
    m = _NO_ATTRIBUTE.search(str(e))
    if m is None:
        return _first_line(e)
    cls, attr = m.groups()
    for key, sub in (getattr(config, "sub_configs", None) or {}).items():
        if getattr(sub, "__name__", "") == cls:
            return (f"transformers reads {key}.{attr}, which this config does not set "
                    f"({cls} has no such field); give it: --config '{key}={{\"{attr}\": "
                    f"VALUE}}'")
    if type(config).__name__ == cls:
        if attr in known_keys(type(config), config):
            return (f"transformers reads {attr}, which this config does not set; give it: "
                    f"--config {attr}=VALUE")
        parts = [p for p in _parts_to_try(config)]
        hint = f": build its part that has it, {', '.join(parts)}" if parts else ""
        return (f"transformers builds {type(config).__name__} as if it were its text part, "
                f"reading {attr}, which it does not have{hint}")
    return _first_line(e)


_EXCEPTION_PREFIX = re.compile(r"^\s*[A-Za-z_.]*(Error|Exception):\s*")


def _first_line(e: BaseException) -> str:
    """transformers' message in one line: a header that ends with ``:`` (a validator's
    name) gives way to the lines after it, which say what is wrong, and the exception
    name they start with is dropped; at most 300 characters."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    line = _EXCEPTION_PREFIX.sub("", " ".join(lines))
    return line[:300] if len(line) <= 300 else line[:297] + "..."


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
        _check_values(parsed, label)
        try:
            if base_dict:
                config = config_class.from_dict({**dict(base_dict), **parsed})
            else:
                config = config_class(**parsed)
        except Exception as e:
            raise BadValue(f"--config for {label}: {_first_line(e)}") from e
        _check_experts(config, parsed, label)
        return config


#: Fields that count or size something: never negative; a number of layers at least 1.
_COUNT = re.compile(r"(layers|heads|experts|_tok|top_k|size|dim|positions|_len|_ff|inner)$")
#: A mixture of experts' top-k and number of experts, by the names configs give them.
_TOP_K = ("num_experts_per_tok", "moe_top_k", "num_selected_experts", "top_k",
          "n_activated_experts")
_EXPERTS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def _check_values(parsed: Mapping[str, Any], label: str) -> None:
    """Counts and sizes given with ``--config``: none negative, at least one layer (a
    model of no layers would be profiled as if it were one, without a word)."""
    for key, value in parsed.items():
        if isinstance(value, bool) or not isinstance(value, int) or not _COUNT.search(key):
            continue
        if value < 0:
            raise BadValue(f"--config {key}={value}: {label}'s {key} counts or sizes "
                           "something, so it cannot be negative")
        if value == 0 and key.endswith("layers"):
            raise BadValue(f"--config {key}=0: {label} would have no layers to profile; "
                           "give 1 or more")


def _check_experts(config: Any, parsed: Mapping[str, Any], label: str) -> None:
    """A mixture of experts cannot route each token to more experts than it has (the
    model would fail in its first forward, blaming the input)."""
    subs = [getattr(config, k, None) for k in (getattr(config, "sub_configs", None) or {})]
    for c in [config, *[x for x in subs if x is not None and not isinstance(x, dict)]]:
        k_name = next((n for n in _TOP_K if isinstance(_get(c, n), int)), None)
        e_name = next((n for n in _EXPERTS if isinstance(_get(c, n), int) and _get(c, n) > 0),
                      None)
        if k_name is None or e_name is None:
            continue
        k, e = _get(c, k_name), _get(c, e_name)
        if k > e:
            given = next((f"--config {n}={parsed[n]}" for n in (e_name, k_name) if n in parsed),
                         f"{label}'s config")
            raise BadValue(f"{given}: {label} routes each token to {k_name}={k} experts, "
                           f"more than its {e_name}={e}; give --config {k_name}={e} or "
                           f"fewer, or more experts")


def _get(config: Any, name: str) -> Any:
    """A config field, or None where the config has none, or has one per layer
    (transformers' heterogeneous configs refuse a global read with a RuntimeError)."""
    try:
        return getattr(config, name, None)
    except RuntimeError:
        return None


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


def _image_class(model_type: str) -> str | None:
    """transformers' image-classification class for a model type, or None."""
    from transformers.models.auto import modeling_auto as ma

    value = ma.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    return _class_names(value)[0] if value else None


def _parts_to_try(config: Any) -> list[str]:
    """Model types of a composite config's parts layertime can feed (its text model)."""
    heads = _mappings()
    out = []
    for sub in (getattr(config, "sub_configs", None) or {}).values():
        mtype = getattr(sub, "model_type", "")
        if mtype and any(mtype in heads[h] for h in heads) and "vocab_size" in getattr(
                sub, "__dataclass_fields__", {}) | vars(sub):
            out.append(PREFIX + mtype)
    return out


def _main_input(class_name: str) -> str:
    """What a transformers model class takes first (its ``main_input_name``)."""
    cls = getattr(transformers_module(), class_name, None)
    return str(getattr(cls, "main_input_name", "input_ids")) if cls is not None else "input_ids"


def _finish(name: str, source: str, origin: str, config: Any) -> HFModel:
    """The head and class for a config, or a one-line refusal saying what would work."""
    label = PREFIX + name
    text = getattr(config, "get_text_config", None)
    try:
        inner = text() if callable(text) else None
    except ValueError:  # several text parts (an encoder's and a decoder's): none is "the" one
        inner = None
    has_vocab = getattr(config, "vocab_size", None) is not None or (
        inner is not None and inner is not config and getattr(inner, "vocab_size", None) is not None
    )
    head, cls = choose_head(config) if has_vocab else ("base", "")
    main = _main_input(cls) if cls else "pixel_values"
    if not has_vocab or main == "pixel_values":
        image = _image_class(config.model_type)
        if image is not None and _main_input(image) == "pixel_values":
            return HFModel(name, source, origin, config, IMAGE_HEAD, image)
        parts = _parts_to_try(config)
        hint = f"; its parts that take token ids: {', '.join(parts)}" if parts else ""
        raise BadValue(
            f"{label} ({config.model_type}) is neither a text model (it takes {main}, not "
            "token ids: --seq-len) nor an image classifier (transformers has no "
            f"image-classification head for it: --image-size){hint}"
        )
    if main != "input_ids":
        raise BadValue(f"{label} ({config.model_type}) takes {main} ({cls}), not token ids: "
                       "layertime feeds token ids (--seq-len) or images (--image-size)")
    parts = _parts_to_try(config)
    if head == "base" and inner is not None and inner is not config and parts:
        raise BadValue(
            f"{label} ({config.model_type}) is a composite model whose bare {cls} needs more "
            f"than token ids; its parts that take them: {', '.join(parts)}")
    chosen_by_config = cls in (getattr(config, "architectures", None) or ())
    if head == "causal-lm" and getattr(config, "is_encoder_decoder", False) and not chosen_by_config:
        raise BadValue(
            f"{label} ({config.model_type}) is an encoder-decoder whose encoder does not "
            "take token ids (transformers has no text-to-text head for it); layertime feeds "
            f"token ids, so it can profile the decoder alone ({cls}, its encoder not built): "
            "ask for that with --config is_encoder_decoder=false"
        )
    return HFModel(name, source, origin, config, head, cls)


def hf_names() -> list[str]:
    """The built-in ``hf:`` names (model types are listed by ``transformers``)."""
    return [PREFIX + n for n in published_names()]
