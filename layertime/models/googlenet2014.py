"""GoogLeNet (Szegedy et al., 2014) as BVLC's Caffe model defines it, without auxiliary heads.

Unlike torchvision's ``googlenet`` (batch norm after every convolution, a
3x3 convolution in the "5x5" branch), this is BVLC's ``bvlc_googlenet``:
no batch norm, a true 5x5 branch, local response normalisation after the
first max-pool and after conv2 (``lrn=True``, the default), ReLU after every
convolution, ceil-mode max-pooling (224 -> 112 -> 56 -> 28 -> 14 -> 7), a
7x7 average pool, dropout 0.4 and one fully connected classifier; the two
auxiliary classifiers of training are left out.  It has 6,998,552
parameters (with 1000 classes).

convnet-benchmarks timed it with the two LRN layers commented out of its
prototxt, no dropout, and the classifier followed by a ReLU:
``GoogLeNet2014(lrn=False)`` is that network up to the ReLU.
``CAFFE_LAYERS`` maps the Caffe layer names to this module's rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: Per inception module: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) channels,
#: from BVLC's ``train_val.prototxt`` (and the paper's table 1).
INCEPTIONS: tuple[tuple[str, int, tuple[int, int, int, int, int, int]], ...] = (
    ("inception_3a", 192, (64, 96, 128, 16, 32, 32)),
    ("inception_3b", 256, (128, 128, 192, 32, 96, 64)),
    ("inception_4a", 480, (192, 96, 208, 16, 48, 64)),
    ("inception_4b", 512, (160, 112, 224, 24, 64, 64)),
    ("inception_4c", 512, (128, 128, 256, 24, 64, 64)),
    ("inception_4d", 512, (112, 144, 288, 32, 64, 64)),
    ("inception_4e", 528, (256, 160, 320, 32, 128, 128)),
    ("inception_5a", 832, (256, 160, 320, 32, 128, 128)),
    ("inception_5b", 832, (384, 192, 384, 48, 128, 128)),
)

#: The Caffe layer of each branch module of an inception (``inception_3a/<suffix>``).
_BRANCH_LAYERS: tuple[tuple[str, str], ...] = (
    ("1x1", "conv_1x1"),
    ("relu_1x1", "relu_1x1"),
    ("3x3_reduce", "conv_3x3_reduce"),
    ("relu_3x3_reduce", "relu_3x3_reduce"),
    ("3x3", "conv_3x3"),
    ("relu_3x3", "relu_3x3"),
    ("5x5_reduce", "conv_5x5_reduce"),
    ("relu_5x5_reduce", "relu_5x5_reduce"),
    ("5x5", "conv_5x5"),
    ("relu_5x5", "relu_5x5"),
    ("pool", "pool"),
    ("pool_proj", "pool_proj"),
    ("relu_pool_proj", "relu_pool_proj"),
)

#: The blob that feeds each inception module, whose Caffe ``Split`` layer
#: (``<blob>_<blob>_0_split``) copies it to the module's four branches.
_INPUT_BLOB: Mapping[str, str] = {
    "inception_3a": "pool2/3x3_s2",
    "inception_3b": "inception_3a/output",
    "inception_4a": "pool3/3x3_s2",
    "inception_4b": "inception_4a/output",
    "inception_4c": "inception_4b/output",
    "inception_4d": "inception_4c/output",
    "inception_4e": "inception_4d/output",
    "inception_5a": "pool4/3x3_s2",
    "inception_5b": "inception_5a/output",
}


def _caffe_layers() -> dict[str, str]:
    table = {
        "conv1/7x7_s2": "conv1",
        "conv1/relu_7x7": "relu1",
        "pool1/3x3_s2": "pool1",
        "pool1/norm1": "norm1",
        "conv2/3x3_reduce": "conv2_reduce",
        "conv2/relu_3x3_reduce": "relu2_reduce",
        "conv2/3x3": "conv2",
        "conv2/relu_3x3": "relu2",
        "conv2/norm2": "norm2",
        "pool2/3x3_s2": "pool2",
        "pool3/3x3_s2": "pool3",
        "pool4/3x3_s2": "pool4",
        "pool5/7x7_s1": "pool5",
        "pool5/drop_7x7_s1": "dropout",
        "loss3/classifier": "classifier",
        "fc6": "classifier",  # convnet-benchmarks' name for the classifier
    }
    for name, _, _ in INCEPTIONS:
        for suffix, attr in _BRANCH_LAYERS:
            table[f"{name}/{suffix}"] = f"{name}.{attr}"
        # Concat and the Split of the module's input are charged to the module's own row.
        table[f"{name}/output"] = name
        blob = _INPUT_BLOB[name]
        table[f"{blob}_{blob}_0_split"] = name
    return table


#: Caffe layer name (BVLC's ``bvlc_googlenet`` and convnet-benchmarks' ``googlenet.prototxt``)
#: -> module path here.  Caffe's ReLU run in place, as ``nn.ReLU(inplace=True)`` does.
#: Caffe's ``Concat`` (``inception_Xy/output``) and the ``Split`` that copies an
#: inception module's input to its four branches (``..._0_split``; it sums their
#: gradients in backward) are both charged to the inception module's own row,
#: where PyTorch's ``cat`` runs (its backward only takes views).  A Caffe layer
#: absent here (convnet-benchmarks' ``fc6/relu``) has no row in this model.
CAFFE_LAYERS: Mapping[str, str] = _caffe_layers()


def _conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2)


def _lrn() -> nn.LocalResponseNorm:
    """BVLC's LRN: local_size 5, alpha 1e-4, beta 0.75, k 1 (Caffe divides alpha by n as torch does)."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """One inception module: 1x1, 1x1->3x3, 1x1->5x5 and 3x3 max-pool->1x1 branches, concatenated."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c1, c3r, c3, c5r, c5, cp = widths
        self.conv_1x1 = _conv(c_in, c1, 1)
        self.relu_1x1 = nn.ReLU(inplace=True)
        self.conv_3x3_reduce = _conv(c_in, c3r, 1)
        self.relu_3x3_reduce = nn.ReLU(inplace=True)
        self.conv_3x3 = _conv(c3r, c3, 3)
        self.relu_3x3 = nn.ReLU(inplace=True)
        self.conv_5x5_reduce = _conv(c_in, c5r, 1)
        self.relu_5x5_reduce = nn.ReLU(inplace=True)
        self.conv_5x5 = _conv(c5r, c5, 5)
        self.relu_5x5 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True)
        self.pool_proj = _conv(c_in, cp, 1)
        self.relu_pool_proj = nn.ReLU(inplace=True)
        self.out_channels = c1 + c3 + c5 + cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.relu_1x1(self.conv_1x1(x))
        b2 = self.relu_3x3(self.conv_3x3(self.relu_3x3_reduce(self.conv_3x3_reduce(x))))
        b3 = self.relu_5x5(self.conv_5x5(self.relu_5x5_reduce(self.conv_5x5_reduce(x))))
        b4 = self.relu_pool_proj(self.pool_proj(self.pool(x)))
        return torch.cat([b1, b2, b3, b4], 1)


class GoogLeNet2014(nn.Module):
    """BVLC GoogLeNet (input 3x224x224), without the auxiliary classifiers."""

    def __init__(self, num_classes: int = 1000, lrn: bool = True, dropout: float = 0.4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)  # 224 -> 112
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # 112 -> 56
        self.norm1: nn.Module = _lrn() if lrn else nn.Identity()
        self.conv2_reduce = nn.Conv2d(64, 64, kernel_size=1)
        self.relu2_reduce = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.norm2: nn.Module = _lrn() if lrn else nn.Identity()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # 56 -> 28
        blocks = {name: Inception(c_in, widths) for name, c_in, widths in INCEPTIONS}
        self.inception_3a = blocks["inception_3a"]
        self.inception_3b = blocks["inception_3b"]
        self.pool3 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # 28 -> 14
        self.inception_4a = blocks["inception_4a"]
        self.inception_4b = blocks["inception_4b"]
        self.inception_4c = blocks["inception_4c"]
        self.inception_4d = blocks["inception_4d"]
        self.inception_4e = blocks["inception_4e"]
        self.pool4 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # 14 -> 7
        self.inception_5a = blocks["inception_5a"]
        self.inception_5b = blocks["inception_5b"]
        self.pool5 = nn.AvgPool2d(kernel_size=7, stride=1)  # 7 -> 1
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.norm1(x)
        x = self.relu2_reduce(self.conv2_reduce(x))
        x = self.relu2(self.conv2(x))
        x = self.pool2(self.norm2(x))
        x = self.inception_3b(self.inception_3a(x))
        x = self.pool3(x)
        x = self.inception_4a(x)
        x = self.inception_4b(x)
        x = self.inception_4c(x)
        x = self.inception_4d(x)
        x = self.inception_4e(x)
        x = self.pool4(x)
        x = self.inception_5b(self.inception_5a(x))
        x = torch.flatten(self.pool5(x), 1)
        return self.classifier(self.dropout(x))
