"""Find a model by name: built-in, torchvision, timm, or the user's own code.

Accepted names:

* ``alexnet2012`` — the original 2012 AlexNet, built in;
* ``overfeat`` — OverFeat's 2013 "fast" model (231x231), built in;
* ``googlenet2014`` — BVLC's GoogLeNet (LRN, no batch norm, no auxiliary heads), built in;
* any torchvision classification model (``alexnet``, ``vgg16``, ``resnet50``, ...);
* ``timm:NAME`` — a timm model, when timm is installed;
* ``hf:NAME`` — a Hugging Face transformers text model from its config
  (:mod:`layertime.models.hf`; ``--config KEY=VALUE`` overrides travel with the
  name in a :class:`ModelRef`): it takes token ids, ``--seq-len`` long; an image
  classifier (``hf:vit``) takes images, ``--image-size`` (its config's by default);
* ``path/to/file.py:callable`` or ``package.module:callable`` — a callable
  returning an ``nn.Module`` (given ``num_classes`` if it accepts it).

Weights are never downloaded: every model starts from random init.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from layertime.errors import BadValue, LayertimeError

if TYPE_CHECKING:  # torch loads with the first model built, not with the name list
    from torch import nn

    from layertime.workload.inputs import InputSpec

BUILTIN: dict[str, tuple[str, int]] = {
    # name: (dotted builder, default image size)
    "alexnet2012": ("layertime.models.alexnet2012:AlexNet2012", 227),
    "overfeat": ("layertime.models.overfeat:OverFeatFast", 231),
    "googlenet2014": ("layertime.models.googlenet2014:GoogLeNet2014", 224),
}


@dataclass(frozen=True)
class ModelRef:
    """A model by name, with ``KEY=VALUE`` overrides of an ``hf:`` model's config
    (``--config``, checked against the config class when the name is resolved)."""

    name: str
    config: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", tuple(str(c) for c in self.config))
        if self.config and not self.name.strip().startswith("hf:"):
            raise BadValue(
                f"--config KEY=VALUE applies to hf: models only, not {self.name.strip()!r}"
            )
        for text in self.config:
            key, sep, _ = text.partition("=")
            if not sep or not key.strip():
                raise BadValue(
                    f"--config {text!r}: expected KEY=VALUE, e.g. num_hidden_layers=2"
                )

    def __str__(self) -> str:
        return self.name


class Builder(Protocol):
    def __call__(self, num_classes: int, image_size: int | None = None) -> nn.Module: ...


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name: how to build it and the image size it expects."""

    name: str
    source: str
    #: build(num_classes, image_size): image_size (H=W) matters only to models
    #: whose shape is fixed at construction (ViT); None means the default.
    build: Builder
    default_image_size: int | None = 224
    #: What one sample is: "image" (a tensor of ``input_shape``) or "tokens" (token
    #: ids of one sequence: ``hf:`` models).
    inputs: str = "image"

    def default_input(self) -> InputSpec:
        """The input the model is profiled on unless told otherwise."""
        from layertime.workload.inputs import ImageInput, TokenInput

        if self.inputs == "tokens":
            from layertime.models.hf import DEFAULT_SEQ_LEN

            return TokenInput(DEFAULT_SEQ_LEN)
        return ImageInput.square(self.default_image_size or 224)


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """torchvision's classification models, as ``list_models(module=torchvision.models)``.

    Read from the ``@register_model`` decorators in torchvision's source, without
    importing it (importing torch takes seconds, and ``layertime models`` should
    answer at once); torchvision itself is asked when its source is not there.
    """
    names = _scan_torchvision_sources()
    if names:
        return names
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def _scan_torchvision_sources() -> tuple[str, ...]:
    import ast

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return ()
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    names: set[str] = set()
    for path in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            return ()
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for dec in node.decorator_list:
                call = dec if isinstance(dec, ast.Call) else None
                target = call.func if call is not None else dec
                if isinstance(target, ast.Name) and target.id == "register_model":
                    name = node.name
                    for kw in call.keywords if call is not None else ():
                        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                            name = str(kw.value.value)
                    names.add(name)
    return tuple(sorted(names))


def available() -> list[str]:
    """Every name ``resolve`` accepts without a prefix, and the built-in ``hf:`` names
    (listed without importing transformers)."""
    from layertime.models.hf import hf_names

    return sorted(set(BUILTIN) | set(torchvision_names()) | set(hf_names()))


def _torchvision_image_size(name: str) -> int:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)
        transforms = weights.DEFAULT.transforms  # type: ignore[attr-defined]
        crop = getattr(transforms, "keywords", {}).get("crop_size")
        if isinstance(crop, int):
            return crop
        if isinstance(crop, (list, tuple)) and crop:
            return int(crop[0])
    except (ValueError, AttributeError, KeyError):
        pass
    return 224


def _build_torchvision(name: str, num_classes: int, image_size: int | None = None) -> nn.Module:
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True  # silences torchvision's init-change warning
    if name.startswith("vit_"):
        # A ViT's position embedding fixes its input size; build it for the
        # size asked for, or the size it is profiled at by default (518 for
        # vit_h_14, else 224).
        kwargs["image_size"] = image_size or _torchvision_image_size(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torchvision.models.get_model(name, **kwargs)


def _build_timm(name: str, num_classes: int) -> nn.Module:
    try:
        import timm
    except ImportError as e:
        raise LayertimeError(
            f"timm:{name} needs timm, which is not installed (pip install timm)"
        ) from e
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise BadValue(f"unknown timm model {name!r}{hint}") from e


def _call_builder(fn: Callable[..., Any], label: str, num_classes: int) -> nn.Module:
    try:
        params = inspect.signature(fn).parameters
        takes = "num_classes" in params or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )
    except (TypeError, ValueError):
        takes = False
    try:
        model = fn(num_classes=num_classes) if takes else fn()
    except LayertimeError:
        raise
    except Exception as e:
        raise LayertimeError(f"{label} raised {type(e).__name__}: {e}") from e
    from torch import nn

    if not isinstance(model, nn.Module):
        raise LayertimeError(f"{label} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_file(path_text: str, attr: str) -> Callable[..., Any]:
    path = Path(path_text)
    if not path.is_file():
        raise LayertimeError(f"no such file: {path_text}")
    mod_name = f"layertime_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise LayertimeError(f"cannot import {path_text}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise LayertimeError(f"cannot import {path_text}: {type(e).__name__}: {e}") from e
    finally:
        try:
            sys.path.remove(str(path.resolve().parent))
        except ValueError:
            pass
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise LayertimeError(f"{path_text} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def _load_module_attr(mod_text: str, attr: str) -> Callable[..., Any]:
    try:
        module = importlib.import_module(mod_text)
    except ImportError as e:
        raise LayertimeError(f"cannot import module {mod_text!r}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise LayertimeError(f"module {mod_text!r} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def _ignore_size(fn: Callable[[int], nn.Module]) -> Builder:
    """A builder for a model whose input size is not fixed at construction."""

    def build(num_classes: int, image_size: int | None = None) -> nn.Module:
        return fn(num_classes)

    return build


def resolve(model: str | ModelRef) -> ModelSpec:
    """Resolve a model name (with an ``hf:`` model's config overrides) to a
    :class:`ModelSpec`, or raise a one-line error."""
    ref = model if isinstance(model, ModelRef) else ModelRef(model)
    name = ref.name.strip()
    if not name:
        raise BadValue("empty model name")
    if name.startswith("hf:"):
        from layertime.models.hf import resolve_hf

        hf = resolve_hf(name[len("hf:") :], ref.config)
        if hf.takes_images:  # an image classifier (hf:vit): images of its config's size
            return ModelSpec(hf.label, "hf", hf.build, hf.image_size or 224)
        return ModelSpec(hf.label, "hf", _ignore_size(lambda n: hf.build()), None, "tokens")
    if name in BUILTIN:
        target, size = BUILTIN[name]
        mod_text, attr = target.split(":")
        cls = _load_module_attr(mod_text, attr)
        return ModelSpec(name, "builtin", _ignore_size(lambda n: _call_builder(cls, name, n)), size)
    if name.startswith("timm:"):
        tname = name[len("timm:") :]
        return ModelSpec(name, "timm", _ignore_size(lambda n: _build_timm(tname, n)), None)
    if ":" in name:
        left, attr = name.rsplit(":", 1)
        if not attr.isidentifier():
            raise LayertimeError(f"{attr!r} in {name!r} is not a Python name")
        if left.endswith(".py") or "/" in left or "\\" in left:
            fn = _load_file(left, attr)
        else:
            fn = _load_module_attr(left, attr)
        return ModelSpec(name, "user", _ignore_size(lambda n: _call_builder(fn, name, n)), None)
    if name in torchvision_names():
        return ModelSpec(
            name,
            "torchvision",
            functools.partial(_build_torchvision, name),
            _torchvision_image_size(name),
        )
    close = difflib.get_close_matches(name.lower(), available(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise BadValue(
        f"unknown model {name!r}{hint} (see 'layertime models'; "
        "or give timm:NAME, hf:NAME, file.py:callable or package.module:callable)"
    )


@dataclass(frozen=True)
class Target:
    """What to build and on which input: a resolved name (or the user's module) and its input."""

    spec: ModelSpec | None
    label: str
    input: InputSpec

    def build(self, num_classes: int) -> nn.Module:
        if self.spec is None:
            raise ValueError("a target given as a module is not built")
        return self.spec.build(num_classes, self.input.image_size)


def target(model: str | ModelRef | nn.Module, input: InputSpec | None = None) -> Target:
    """Resolve a model and its input: ``input``, else the model's own default
    (a 3-channel square image of its default size, 224 for a module; 128 token
    ids for an ``hf:`` model).  A named model given the other kind of input is a
    one-line error (a module takes whatever input it is given)."""
    from torch import nn

    from layertime.workload.inputs import ImageInput

    if isinstance(model, (str, ModelRef)):
        spec: ModelSpec | None = resolve(model)
        assert spec is not None
        label = spec.name
        default = spec.default_input()
        if input is not None and input.kind != default.kind:
            raise BadValue(
                f"{label} takes {default.takes}: give {default.flags}, not {input.flags}"
            )
    elif isinstance(model, nn.Module):
        spec, label, default = None, type(model).__name__, ImageInput.square(224)
    else:
        raise LayertimeError(f"expected a model name or an nn.Module, not {type(model).__name__}")
    return Target(spec, label, input if input is not None else default)
