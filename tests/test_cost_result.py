"""The cost result model: derived totals, shares, and the JSON schema layertime.cost/1."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from layertime.cost import estimate, get_profile, predict
from layertime.errors import LayertimeError
from layertime.results.cost.estimate import SCHEMA, CostResult


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )


@pytest.fixture(scope="module")
def cost() -> CostResult:
    return estimate(_net(), batch_size=4, input_shape=(3, 8, 8), num_classes=10)


@pytest.fixture(scope="module")
def predicted(cost: CostResult) -> CostResult:
    return predict(cost, get_profile("v100"))


def test_json_round_trip_without_and_with_prediction(
    cost: CostResult, predicted: CostResult
) -> None:
    for c in (cost, predicted):
        again = CostResult.from_json(c.to_json())
        assert again == c
        assert again.to_dict() == c.to_dict()


def test_json_has_the_issue_fields(predicted: CostResult) -> None:
    d = json.loads(predicted.to_json())
    assert d["schema"] == SCHEMA == "layertime.cost/1"
    layer = next(r for r in d["layers"] if r["name"] == "0")
    for key in ("name", "kind", "params", "macs_forward", "flops", "memory_bytes", "predicted"):
        assert key in layer
    assert set(layer["flops"]) == {"forward", "backward_input", "backward_weight", "update"}
    assert set(layer["memory_bytes"]) == {
        "weights", "grads", "optimizer_state", "saved_activations", "output"
    }
    assert set(layer["predicted"]) >= {"forward_s", "backward_s", "update_s"}
    assert layer["macs_forward"] * 2 == layer["flops"]["forward"]
    for kind in d["kinds"].values():
        assert {"params_share", "flops_share", "predicted_share"} <= set(kind)
    assert d["prediction"]["label"] == "estimate"
    assert "FLOPs = 2 x multiply-accumulates" in d["conventions"]["flops"]


def test_no_predicted_fields_without_a_profile(cost: CostResult) -> None:
    d = cost.to_dict()
    assert "prediction" not in d and "predicted" not in d
    assert all("predicted" not in r for r in d["layers"])
    assert all("predicted_share" not in k for k in d["kinds"].values())


def test_shares_add_up(predicted: CostResult) -> None:
    kinds = predicted.by_kind()
    assert sum(k.params_share for k in kinds.values()) == pytest.approx(1)
    assert sum(k.flops_share for k in kinds.values()) == pytest.approx(1)
    assert sum(k.predicted_share or 0 for k in kinds.values()) == pytest.approx(1)
    assert predicted.predicted is not None
    assert predicted.predicted.total_s == pytest.approx(
        sum(r.predicted.total_s for r in predicted.rows if r.predicted)
    )


def test_totals_are_sums_of_rows(cost: CostResult) -> None:
    assert cost.flops.total == sum(r.flops.total for r in cost.rows)
    assert cost.bytes_moved.total == sum(r.bytes_moved.total for r in cost.rows)
    assert cost.params == sum(p.numel() for p in _net().parameters())
    for r in cost.rows:
        assert r.flops.forward == sum(w.flops for w in r.ops if w.phase == "forward")


def test_headline_names_conv_and_fully_connected(predicted: CostResult) -> None:
    h = predicted.headline()
    assert h.startswith("conv layers: ")
    assert "fully connected layers" in h and "predicted time" in h and "v100" in h


def test_save_and_load(tmp_path: Path, predicted: CostResult) -> None:
    path = tmp_path / "cost.json"
    predicted.save(path)
    assert CostResult.load(path) == predicted


@pytest.mark.parametrize(
    "text, match",
    [
        ("{", "not JSON"),
        ("[]", "not an object"),
        ('{"schema": "layertime.run/1"}', "not a layertime cost"),
        ('{"schema": "layertime.cost/1", "model": "x"}', "malformed layertime cost"),
    ],
)
def test_bad_json_is_a_one_line_error(text: str, match: str) -> None:
    with pytest.raises(LayertimeError, match=match) as e:
        CostResult.from_json(text)
    assert "\n" not in str(e.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="cannot read"):
        CostResult.load(tmp_path / "nope.json")


def test_intensity_and_not_counted(cost: CostResult) -> None:
    conv = next(r for r in cost.layers if r.name == "0")
    assert conv.intensity("forward") == conv.flops.forward / conv.bytes_moved.forward
    relu = next(r for r in cost.layers if r.name == "1")
    assert relu.intensity("forward") == 0
    assert relu.not_counted == ("aten.relu", "aten.threshold_backward")
    empty = replace(relu, ops=(), bytes_moved=replace(relu.bytes_moved, forward=0))
    assert empty.intensity("forward") is None


def test_meta_tensors_are_recorded(cost: CostResult) -> None:
    assert cost.tensors == "meta" and cost.training
    assert torch.Size(cost.input_shape) == torch.Size((3, 8, 8))
