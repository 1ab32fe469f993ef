"""OverFeat "fast" (2013) and BVLC GoogLeNet (2014), built in: parameters and MACs by arithmetic.

Every expected number below is worked from the networks' definitions (the
OverFeat paper's table 1 and convnet-benchmarks' ``overfeat.prototxt``; the
GoogLeNet paper's table 1 and BVLC's ``bvlc_googlenet``), not read back from
the modules.  MACs are the cost model's ``macs_forward`` (forward FLOPs / 2:
convolution and matrix-product multiply-accumulates, biases not counted).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layertime.cost import estimate
from layertime.models import available, resolve
from layertime.models.googlenet2014 import CAFFE_LAYERS as GOOGLENET_LAYERS
from layertime.models.googlenet2014 import GoogLeNet2014
from layertime.models.overfeat import CAFFE_LAYERS as OVERFEAT_LAYERS
from layertime.models.overfeat import OverFeatFast

#: Builds and runs the 2012-2014 models at full size (real models).
pytestmark = pytest.mark.slow


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_params(c_in: int, c_out: int, k: int) -> int:
    return c_out * c_in * k * k + c_out


def fc_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# -- OverFeat "fast" ------------------------------------------------------------
# 231 -> conv1 11x11/4, no padding: (231 - 11) / 4 + 1 = 56 -> pool 2/2: 28
#     -> conv2 5x5, no padding: 28 - 4 = 24 -> pool 2/2: 12
#     -> conv3, conv4, conv5 3x3 padding 1: 12 -> pool 2/2: 6 -> fc6 in 1024 * 6 * 6
OVERFEAT_PARAMS = (
    conv_params(3, 96, 11)  # 34,944
    + conv_params(96, 256, 5)  # 614,656
    + conv_params(256, 512, 3)  # 1,180,160
    + conv_params(512, 1024, 3)  # 4,719,616
    + conv_params(1024, 1024, 3)  # 9,438,208
    + fc_params(1024 * 6 * 6, 3072)  # 113,249,280
    + fc_params(3072, 4096)  # 12,587,008
    + fc_params(4096, 1000)  # 4,097,000
)
OVERFEAT_MACS = (
    96 * 3 * 11 * 11 * 56 * 56
    + 256 * 96 * 5 * 5 * 24 * 24
    + 512 * 256 * 3 * 3 * 12 * 12
    + 1024 * 512 * 3 * 3 * 12 * 12
    + 1024 * 1024 * 3 * 3 * 12 * 12
    + 1024 * 6 * 6 * 3072
    + 3072 * 4096
    + 4096 * 1000
)


def test_overfeat_parameters_by_arithmetic() -> None:
    assert OVERFEAT_PARAMS == 145_920_872
    assert n_params(OverFeatFast()) == OVERFEAT_PARAMS


def test_overfeat_macs_by_arithmetic() -> None:
    assert OVERFEAT_MACS == 2_801_403_904  # 2.80 GMACs per 231x231 image
    cost = estimate("overfeat", batch_size=2)
    assert cost.input_shape == (3, 231, 231)
    assert cost.macs_forward == 2 * OVERFEAT_MACS
    assert cost.params == OVERFEAT_PARAMS


def test_overfeat_is_built_in_at_231() -> None:
    spec = resolve("overfeat")
    assert spec.source == "builtin" and spec.default_image_size == 231
    assert "overfeat" in available()
    model = spec.build(10)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 231, 231)).shape == (1, 10)


def test_overfeat_caffe_table_names_its_rows() -> None:
    modules = dict(OverFeatFast().named_modules())
    assert all(row in modules for row in OVERFEAT_LAYERS.values())
    # 5 convolutions, 5 in-place ReLUs, 3 max-pools and 3 fully connected layers, one row each.
    assert len(OVERFEAT_LAYERS) == 16 and len(set(OVERFEAT_LAYERS.values())) == 16
    relu = modules[OVERFEAT_LAYERS["conv1/relu"]]
    assert isinstance(relu, nn.ReLU) and relu.inplace


# -- GoogLeNet (BVLC) -------------------------------------------------------------
#: (input channels, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj, spatial size): the
#: paper's table 1.  An inception module's output is 1x1 + 3x3 + 5x5 + pool proj channels.
INCEPTION_TABLE = (
    (192, 64, 96, 128, 16, 32, 32, 28),  # 3a -> 256
    (256, 128, 128, 192, 32, 96, 64, 28),  # 3b -> 480
    (480, 192, 96, 208, 16, 48, 64, 14),  # 4a -> 512
    (512, 160, 112, 224, 24, 64, 64, 14),  # 4b -> 512
    (512, 128, 128, 256, 24, 64, 64, 14),  # 4c -> 512
    (512, 112, 144, 288, 32, 64, 64, 14),  # 4d -> 528
    (528, 256, 160, 320, 32, 128, 128, 14),  # 4e -> 832
    (832, 256, 160, 320, 32, 128, 128, 7),  # 5a -> 832
    (832, 384, 192, 384, 48, 128, 128, 7),  # 5b -> 1024
)


def _inception_params(cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> int:
    return (conv_params(cin, c1, 1) + conv_params(cin, c3r, 1) + conv_params(c3r, c3, 3)
            + conv_params(cin, c5r, 1) + conv_params(c5r, c5, 5) + conv_params(cin, cp, 1))


def _inception_macs(cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int,
                    s: int) -> int:
    return s * s * (cin * c1 + cin * c3r + c3r * c3 * 9 + cin * c5r + c5r * c5 * 25 + cin * cp)


# 224 -> conv1 7x7/2 padding 3: 112 -> max-pool 3/2 (ceil): 56 -> conv2 (1x1, 3x3): 56
#     -> pool 3/2: 28 (3a, 3b) -> pool: 14 (4a-4e) -> pool: 7 (5a, 5b) -> average pool 7: 1
GOOGLENET_PARAMS = (
    conv_params(3, 64, 7)
    + conv_params(64, 64, 1)
    + conv_params(64, 192, 3)
    + sum(_inception_params(*row[:7]) for row in INCEPTION_TABLE)
    + fc_params(1024, 1000)
)
GOOGLENET_MACS = (
    64 * 3 * 7 * 7 * 112 * 112
    + 64 * 64 * 56 * 56
    + 192 * 64 * 3 * 3 * 56 * 56
    + sum(_inception_macs(*row) for row in INCEPTION_TABLE)
    + 1024 * 1000
)


def test_inception_widths_chain() -> None:
    # Each module's input is the previous module's output (pools keep channels).
    outs = [c1 + c3 + c5 + cp for _, c1, _, c3, _, c5, cp, _ in INCEPTION_TABLE]
    assert [row[0] for row in INCEPTION_TABLE[1:]] == outs[:-1]
    assert outs[-1] == 1024


def test_googlenet_parameters_by_arithmetic() -> None:
    assert GOOGLENET_PARAMS == 6_998_552
    assert n_params(GoogLeNet2014()) == GOOGLENET_PARAMS
    # LRN has no parameters: the variant convnet-benchmarks timed has the same count.
    assert n_params(GoogLeNet2014(lrn=False)) == GOOGLENET_PARAMS


def test_googlenet_macs_by_arithmetic() -> None:
    assert GOOGLENET_MACS == 1_582_671_872  # 1.58 GMACs per 224x224 image
    cost = estimate("googlenet2014", batch_size=2)
    assert cost.input_shape == (3, 224, 224)
    assert cost.macs_forward == 2 * GOOGLENET_MACS
    assert cost.params == GOOGLENET_PARAMS
    kinds = cost.by_kind()
    assert kinds["norm"].layers == 2  # the two LRN layers
    assert kinds["conv"].layers == 3 + 6 * 9
    assert "batch" not in " ".join(r.type.lower() for r in cost.layers)


def test_googlenet_structure() -> None:
    model = GoogLeNet2014()
    assert isinstance(model.norm1, nn.LocalResponseNorm) and isinstance(model.norm2, nn.LocalResponseNorm)
    # BVLC: local_size 5, alpha 1e-4 (Caffe and torch both divide it by the size), beta 0.75, k 1.
    assert (model.norm1.size, model.norm1.alpha, model.norm1.beta, model.norm1.k) == (
        5, 1e-4, 0.75, 1.0)
    assert isinstance(GoogLeNet2014(lrn=False).norm1, nn.Identity)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.inception_3a.conv_5x5.kernel_size == (5, 5)  # a true 5x5, unlike torchvision's
    assert model.dropout.p == 0.4
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    spec = resolve("googlenet2014")
    assert spec.source == "builtin" and spec.default_image_size == 224


def test_googlenet_caffe_table() -> None:
    modules = dict(GoogLeNet2014().named_modules())
    assert all(row in modules for row in GOOGLENET_LAYERS.values())
    # Branch layers map to the branch modules; Concat and the Split of the module's input
    # to the module's own row.
    assert GOOGLENET_LAYERS["inception_4c/5x5_reduce"] == "inception_4c.conv_5x5_reduce"
    assert GOOGLENET_LAYERS["inception_4c/output"] == "inception_4c"
    assert GOOGLENET_LAYERS["inception_4b/output_inception_4b/output_0_split"] == "inception_4c"
    assert GOOGLENET_LAYERS["pool3/3x3_s2_pool3/3x3_s2_0_split"] == "inception_4a"
    splits = [k for k in GOOGLENET_LAYERS if k.endswith("_0_split")]
    assert len(splits) == 9 and len({GOOGLENET_LAYERS[k] for k in splits}) == 9
    # 13 branch layers per module (6 convolutions, 6 ReLUs, 1 pool), Concat and Split.
    assert sum(1 for k in GOOGLENET_LAYERS if k.startswith("inception_")) == 9 * 14 + 6
    assert isinstance(modules["inception_3a.relu_1x1"], nn.ReLU)
    assert modules["inception_3a.relu_1x1"].inplace  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["overfeat", "googlenet2014"])
def test_close_names_suggest_the_built_ins(name: str) -> None:
    from layertime.errors import LayertimeError

    with pytest.raises(LayertimeError, match=f"did you mean .*{name}"):
        resolve(name[:-1] + "x")
