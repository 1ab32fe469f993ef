"""Forward MACs and parameters equal torchvision's documented ``_ops`` and ``num_params``.

torchvision documents ``_ops`` as "GFLOPS", but its counter (vision's
test/common_extended_utils.py) counts one per multiply-accumulate of
convolutions and matmuls: they are GMACs, for one image at the crop size of
the weights' transforms, in eval mode, rounded to 3 decimals.  The cost
model counts the same forward pass on the meta device and must agree to
every printed digit, for every classification model torchvision lists.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from layertime.cost import build_meta
from layertime.cost.count.counts import count_step
from layertime.models import _torchvision_image_size, resolve, torchvision_names
from layertime.workload import WorkloadSpec

#: Builds every torchvision classification model (real models).
pytestmark = pytest.mark.slow

#: Models built differently from plain ``get_model(name)``, each with the reason.
BUILD_EXCEPTIONS: dict[str, tuple[dict[str, object], str]] = {
    "googlenet": (
        {"aux_logits": False, "init_weights": False},
        "torchvision's googlenet builder deletes the two auxiliary classifiers when it "
        "loads weights (unless aux_logits=True is asked for), so the documented "
        "num_params (6,624,904) is of the model without them; the forward in eval mode "
        "never runs them, so _ops is the same either way",
    ),
}


def _build(name: str, size: int) -> torch.nn.Module:
    """The model as layertime builds it, or as the weights' builder does for the exceptions."""
    if name in BUILD_EXCEPTIONS:
        kwargs, _reason = BUILD_EXCEPTIONS[name]

        def build(num_classes: int) -> torch.nn.Module:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torchvision.models.get_model(
                    name, weights=None, num_classes=num_classes, **kwargs
                )

        return build_meta(build, 1000, "float32")
    spec = resolve(name)
    return build_meta(lambda n: spec.build(n, size), 1000, "float32")


@pytest.mark.parametrize("name", torchvision_names())
def test_forward_macs_and_params_match_torchvision(name: str) -> None:
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    size = _torchvision_image_size(name)
    model = _build(name, size)
    cfg = WorkloadSpec.create("test", batch_size=1, input_shape=(3, size, size), num_classes=1000)
    cost = count_step(model, cfg, label=name, training=False)
    assert cost.tensors == "meta"
    assert cost.params == meta["num_params"]
    assert round(cost.macs_forward / 1e9, 3) == meta["_ops"]


def test_every_exception_names_a_listed_model() -> None:
    assert set(BUILD_EXCEPTIONS) <= set(torchvision_names())
    assert all(reason for _, reason in BUILD_EXCEPTIONS.values())


def test_macs_count_the_training_forward_too() -> None:
    # The training step's forward (train mode) of resnet18 has the same MACs,
    # once per image of the batch: 1.814 GMACs per image.
    from layertime.cost import estimate

    cost = estimate("resnet18", batch_size=4)
    assert round(cost.macs_forward / 4 / 1e9, 3) == 1.814
