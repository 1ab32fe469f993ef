"""Model names: the built-in 2012 AlexNet, torchvision, timm and the user's own code."""

from __future__ import annotations

import functools
import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch
import torchvision
from torch import nn

from layertime.errors import LayertimeError
from layertime.models import available, resolve, torchvision_names
from layertime.models.alexnet2012 import AlexNet2012


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- alexnet2012 --------------------------------------------------------------


@pytest.fixture(scope="module")
def alexnet2012() -> nn.Module:
    torch.manual_seed(0)
    return resolve("alexnet2012").build(1000).eval()


def test_alexnet2012_parameter_count(alexnet2012: nn.Module) -> None:
    assert n_params(alexnet2012) == 60_965_224


def test_alexnet2012_two_gpu_grouping(alexnet2012: nn.Module) -> None:
    convs = [m for m in alexnet2012.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    # conv2, conv4 and conv5 are split across the paper's two GPUs; conv3 sees both.
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    assert [c.kernel_size for c in convs] == [(11, 11), (5, 5), (3, 3), (3, 3), (3, 3)]
    fcs = [m for m in alexnet2012.modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [
        (9216, 4096),
        (4096, 4096),
        (4096, 1000),
    ]


def test_alexnet2012_lrn_after_first_two_convs(alexnet2012: nn.Module) -> None:
    # Which conv (1-based) each LocalResponseNorm follows, in forward order.
    seen_convs = 0
    lrn_after: list[int] = []
    for m in alexnet2012.modules():
        if isinstance(m, nn.Conv2d):
            seen_convs += 1
        elif isinstance(m, nn.LocalResponseNorm):
            lrn_after.append(seen_convs)
    assert lrn_after == [1, 2]
    lrn = next(m for m in alexnet2012.modules() if isinstance(m, nn.LocalResponseNorm))
    # The paper's k=2, n=5, alpha=1e-4 (torch divides alpha by n), beta=0.75.
    assert (lrn.size, lrn.k, lrn.beta) == (5, 2.0, 0.75)
    assert lrn.alpha / lrn.size == pytest.approx(1e-4)


def test_alexnet2012_takes_227_to_1000_logits(alexnet2012: nn.Module) -> None:
    spec = resolve("alexnet2012")
    assert spec.source == "builtin"
    assert spec.default_image_size == 227
    with torch.no_grad():
        out = alexnet2012(torch.randn(2, 3, 227, 227))
    assert out.shape == (2, 1000)
    assert torch.isfinite(out).all()


def test_alexnet2012_num_classes_is_passed() -> None:
    with torch.device("meta"):
        model = resolve("alexnet2012").build(10)
    assert isinstance(model, AlexNet2012)
    assert model.classifier[-1].out_features == 10


# -- torchvision --------------------------------------------------------------


def _regnet_block_params_on_cpu() -> mock._patch:  # type: ignore[type-arg]
    """torchvision's RegNet works out its block widths with torch ops and
    ``.tolist()``, which fail under the meta device; do that arithmetic on the CPU."""
    from torchvision.models import regnet

    original = regnet.BlockParams.from_init_params.__func__  # type: ignore[attr-defined]

    def from_init_params(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        with torch.device("cpu"):
            return original(cls, *args, **kwargs)

    return mock.patch.object(regnet.BlockParams, "from_init_params", classmethod(from_init_params))


@functools.lru_cache(maxsize=None)
def meta_model(name: str) -> nn.Module:
    """layertime's build of a torchvision model, on the meta device (no memory, fast)."""
    spec = resolve(name)
    assert spec.source == "torchvision"
    with _regnet_block_params_on_cpu(), torch.device("meta"):
        model = spec.build(1000)
    assert all(p.device.type == "meta" for p in model.parameters())
    return model


def documented_params(name: str) -> int:
    return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])


def test_torchvision_names_are_the_classification_models() -> None:
    names = torchvision_names()
    assert len(names) == len(set(names)) > 50
    assert {"alexnet", "resnet50", "vgg16", "vit_b_16", "googlenet", "inception_v3"} <= set(names)
    # detection / segmentation / video models are not classification models
    assert not {"fasterrcnn_resnet50_fpn", "fcn_resnet50", "r3d_18"} & set(names)
    assert set(names) <= set(available())
    assert "alexnet2012" in available()


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_names())
def test_torchvision_model_has_documented_parameter_count(name: str) -> None:
    model = meta_model(name)
    expected = documented_params(name)
    if name == "googlenet":
        # torchvision documents the count of its pretrained weights, which
        # drop GoogLeNet's two auxiliary classifiers; layertime profiles the
        # training network, which keeps them (their losses count, weight 0.3).
        # (Inception v3's documented count already includes its AuxLogits.)
        assert model.aux1 is not None and model.aux2 is not None
        expected += n_params(model.aux1) + n_params(model.aux2)
    assert n_params(model) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name", torchvision_names())
def test_torchvision_model_takes_its_default_input(name: str) -> None:
    """The default input size is the one the model was built for (ViT fixes it)."""
    spec = resolve(name)
    size = spec.default_image_size
    crop = torchvision.models.get_model_weights(name).DEFAULT.transforms.keywords["crop_size"]
    assert size == (crop[0] if isinstance(crop, (list, tuple)) else crop)
    model = meta_model(name).eval()
    with torch.device("meta"), torch.no_grad():
        out = model(torch.empty(1, 3, size, size))
    if not isinstance(out, torch.Tensor):  # aux outputs in train mode only, but be safe
        out = out[0]
    assert tuple(out.shape) == (1, 1000)


def test_torchvision_num_classes_is_passed() -> None:
    with torch.device("meta"):
        model = resolve("resnet18").build(10)
    assert model.fc.out_features == 10


# -- timm ---------------------------------------------------------------------


@pytest.mark.slow
def test_timm_model() -> None:
    spec = resolve("timm:resnet18")  # resolving never imports timm
    assert spec.source == "timm"
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(LayertimeError, match=r"needs timm.*pip install timm") as e:
            spec.build(10)
        assert "\n" not in str(e.value)
    else:
        with torch.device("meta"):
            model = spec.build(10)
        assert isinstance(model, nn.Module)
        with torch.device("meta"), torch.no_grad():
            assert tuple(model.eval()(torch.empty(1, 3, 224, 224)).shape) == (1, 10)


# -- the user's own code ------------------------------------------------------

USER_PY = """
from torch import nn

from helper import WIDTH  # a module beside the file


def with_classes(num_classes):
    return nn.Linear(WIDTH, num_classes)


def fixed():
    return nn.Linear(WIDTH, 3)


def with_kwargs(**kwargs):
    return nn.Linear(WIDTH, kwargs["num_classes"])


class Net(nn.Module):
    def __init__(self, num_classes=5):
        super().__init__()
        self.fc = nn.Linear(WIDTH, num_classes)


def not_a_module():
    return [1, 2]


def raises():
    raise ValueError("bad config")


NOT_CALLABLE = 3
"""


@pytest.fixture
def user_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "user models"  # a space in the path, as users' paths have
    d.mkdir()
    (d / "helper.py").write_text("WIDTH = 4\n")
    (d / "nets.py").write_text(textwrap.dedent(USER_PY))
    pkg = tmp_path / "userpkg_layertime_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        "from torch import nn\n\ndef build(num_classes=2):\n    return nn.Linear(4, num_classes)\n"
    )
    before = list(sys.path)
    yield d
    sys.path[:] = before
    for mod in [m for m in sys.modules if m == "helper" or m.startswith("userpkg_layertime_test")]:
        del sys.modules[mod]


@pytest.mark.parametrize(
    ("attr", "out_features"),
    [("with_classes", 7), ("fixed", 3), ("with_kwargs", 7), ("Net", 7)],
)
def test_user_file_callable(user_dir: Path, attr: str, out_features: int) -> None:
    path_before = list(sys.path)
    spec = resolve(f"{user_dir / 'nets.py'}:{attr}")
    assert sys.path == path_before  # the file's folder is on sys.path only while importing
    assert spec.source == "user"
    model = spec.build(7)
    linear = model if isinstance(model, nn.Linear) else model.fc
    assert (linear.in_features, linear.out_features) == (4, out_features)


def test_user_file_relative_path(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user_dir.parent)
    model = resolve(f"{user_dir.name}/nets.py:with_classes").build(6)
    assert model.out_features == 6


def test_module_callable(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(user_dir.parent))
    spec = resolve("userpkg_layertime_test.nets:build")
    assert spec.source == "user"
    assert spec.build(9).out_features == 9
    with torch.device("meta"):
        model = resolve("layertime.models.alexnet2012:AlexNet2012").build(12)
    assert isinstance(model, AlexNet2012) and model.classifier[-1].out_features == 12


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("{d}/nets.py:missing", "has no callable 'missing'"),
        ("{d}/nets.py:NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
        ("{d}/nope.py:build", "no such file"),
        ("{d}/nets.py:1bad", "is not a Python name"),
        ("no_such_module_lt_xyz:build", "cannot import module 'no_such_module_lt_xyz'"),
        ("layertime.models.alexnet2012:missing", "has no callable 'missing'"),
    ],
)
def test_user_code_errors_at_resolve(user_dir: Path, name: str, message: str) -> None:
    with pytest.raises(LayertimeError) as e:
        resolve(name.format(d=user_dir))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("not_a_module", "returned list, not a torch.nn.Module"),
        ("raises", "raised ValueError: bad config"),
    ],
)
def test_user_code_errors_at_build(user_dir: Path, attr: str, message: str) -> None:
    spec = resolve(f"{user_dir / 'nets.py'}:{attr}")
    with pytest.raises(LayertimeError) as e:
        spec.build(10)
    assert message in str(e.value)


def test_user_file_raising_on_import(tmp_path: Path) -> None:
    f = tmp_path / "broken.py"
    f.write_text("import torch\nraise RuntimeError('no GPU here')\ndef build(): pass\n")
    with pytest.raises(LayertimeError, match=r"cannot import .*broken\.py: RuntimeError: no GPU"):
        resolve(f"{f}:build")


# -- unknown names ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("alexnett", "alexnet"),
        ("resnet5", "resnet50"),
        ("ResNet50", "resnet50"),
        ("vgg_16", "vgg16"),
        ("alexnet2013", "alexnet2012"),
    ],
)
def test_unknown_name_suggests_close_matches(name: str, suggested: str) -> None:
    with pytest.raises(LayertimeError) as e:
        resolve(name)
    msg = str(e.value)
    assert f"unknown model {name!r}" in msg
    hint = msg.split("did you mean ", 1)[1].split("?", 1)[0]
    assert suggested in hint.split(", ")
    assert "layertime models" in msg and "\n" not in msg


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(LayertimeError) as e:
        resolve("zzzzqqqq")
    assert "did you mean" not in str(e.value)
    assert "unknown model 'zzzzqqqq'" in str(e.value)


@pytest.mark.parametrize("name", ["", "   "])
def test_empty_name(name: str) -> None:
    with pytest.raises(LayertimeError, match="empty model name"):
        resolve(name)
