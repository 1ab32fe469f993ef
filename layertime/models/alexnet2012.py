"""The original AlexNet of Krizhevsky, Sutskever and Hinton (NIPS 2012).

Unlike torchvision's ``alexnet`` (the one-GPU variant of "One weird trick",
64/192/384/256/256 filters, no normalisation), this is the network of the
paper: 96/256/384/384/256 filters; conv2, conv4 and conv5 split in two groups
as on the paper's two GPUs (conv3 sees both halves); local response
normalisation after conv1 and conv2; 227x227 input; dropout before fc6 and
fc7.  It has 60,965,224 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

#: The paper's normalisation: b = a / (k + alpha * sum a^2)^beta over n=5
#: neighbouring maps, k=2, alpha=1e-4, beta=0.75.  torch divides alpha by n,
#: so it is given n * alpha.
def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)


class AlexNet2012(nn.Module):
    """AlexNet as published in 2012 (input 3x227x227)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=11, stride=4),  # 227 -> 55
            nn.ReLU(inplace=True),
            _lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 55 -> 27
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            _lrn(),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 27 -> 13
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 13 -> 6
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
