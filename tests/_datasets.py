"""A synthetic image dataset shared by the Lightning and Trainer integration tests."""

from __future__ import annotations

import time
from typing import Any

import torch


class Images(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Synthetic 3x16x16 images and labels of 10 classes; ``sleep_s`` per sample makes
    loading slow on purpose; ``as_dict`` gives Hugging Face's ``pixel_values``/``labels``
    dicts instead of (image, label) pairs."""

    def __init__(self, n: int = 256, sleep_s: float = 0.0, *, as_dict: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)
        self.sleep_s = sleep_s
        self.as_dict = as_dict

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Any:
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.as_dict:
            return {"pixel_values": self.x[i], "labels": self.y[i]}
        return self.x[i], self.y[i]
