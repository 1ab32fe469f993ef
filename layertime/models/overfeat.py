"""OverFeat's "fast" model (Sermanet et al., ICLR 2014; released 2013), as timed in Caffe.

Five convolutions (96 11x11 stride 4, 256 5x5, 512, 1024 and 1024 3x3 with
padding 1), max-pooling 2x2 stride 2 after the first, second and fifth, no
normalisation, then three fully connected layers (3072, 4096, 1000) with
ReLU and dropout after the first two, on a 231x231 input.  It has
145,920,872 parameters.  ``CAFFE_LAYERS`` maps the layer names of the
prototxt that convnet-benchmarks timed (``overfeat.prototxt``) to this
module's rows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

#: Caffe layer name (``caffe/imagenet_winners/overfeat.prototxt`` of
#: soumith/convnet-benchmarks) -> module path here.  Caffe's ReLU run in place
#: on their convolution's output, as ``nn.ReLU(inplace=True)`` does.  The
#: timed prototxt has no ReLU or dropout between the fully connected layers:
#: ``classifier.relu6``, ``drop6``, ``relu7`` and ``drop7`` have no Caffe row.
CAFFE_LAYERS: Mapping[str, str] = {
    "conv1/11x11_s4": "features.conv1",
    "conv1/relu": "features.relu1",
    "pool1/2x2_s2": "features.pool1",
    "conv2/5x5_s1": "features.conv2",
    "conv2/relu": "features.relu2",
    "pool2/2x2_s2": "features.pool2",
    "conv3/3x3_s1": "features.conv3",
    "conv3/relu": "features.relu3",
    "conv4/3x3_s1": "features.conv4",
    "conv4/relu": "features.relu4",
    "conv5/3x3_s1": "features.conv5",
    "conv5/relu": "features.relu5",
    "pool5/2x2_s2": "features.pool5",
    "fc6": "classifier.fc6",
    "fc7": "classifier.fc7",
    "fc8": "classifier.fc8",
}


class OverFeatFast(nn.Module):
    """OverFeat "fast" (input 3x231x231): 231 -> 56 -> 28 -> 24 -> 12 -> 12 -> 12 -> 6."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),  # 231 -> 56
                    ("relu1", nn.ReLU(inplace=True)),
                    ("pool1", nn.MaxPool2d(kernel_size=2, stride=2)),  # 56 -> 28
                    ("conv2", nn.Conv2d(96, 256, kernel_size=5)),  # 28 -> 24
                    ("relu2", nn.ReLU(inplace=True)),
                    ("pool2", nn.MaxPool2d(kernel_size=2, stride=2)),  # 24 -> 12
                    ("conv3", nn.Conv2d(256, 512, kernel_size=3, padding=1)),
                    ("relu3", nn.ReLU(inplace=True)),
                    ("conv4", nn.Conv2d(512, 1024, kernel_size=3, padding=1)),
                    ("relu4", nn.ReLU(inplace=True)),
                    ("conv5", nn.Conv2d(1024, 1024, kernel_size=3, padding=1)),
                    ("relu5", nn.ReLU(inplace=True)),
                    ("pool5", nn.MaxPool2d(kernel_size=2, stride=2)),  # 12 -> 6
                ]
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc6", nn.Linear(1024 * 6 * 6, 3072)),
                    ("relu6", nn.ReLU(inplace=True)),
                    ("drop6", nn.Dropout(p=dropout)),
                    ("fc7", nn.Linear(3072, 4096)),
                    ("relu7", nn.ReLU(inplace=True)),
                    ("drop7", nn.Dropout(p=dropout)),
                    ("fc8", nn.Linear(4096, num_classes)),
                ]
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
