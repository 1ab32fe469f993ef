"""Isolated layer benchmarks: shapes, gradient split, calls, frozen layers, round trip."""

from __future__ import annotations

import torch
from torch import nn

from layertime.measure.isolated import bench, bench_layers, record_inputs
from layertime.results.bench import BenchResult


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        x = self.act(self.mid(x))  # act is called twice
        return self.head(torch.flatten(x, 1))


def test_record_inputs_sees_shapes_calls_and_grad_requirements() -> None:
    model = Twice()
    seen = record_inputs(model, torch.randn(2, 3, 8, 8))
    assert set(seen) == {"conv", "act", "mid", "head"}
    assert len(seen["act"][1]) == 2
    (conv_in,) = seen["conv"][1][0]
    assert conv_in.shape == (2, 3, 8, 8) and conv_in.requires_grad is False
    (head_in,) = seen["head"][1][0]
    assert head_in.shape == (2, 256) and head_in.requires_grad is True
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_split_first_layer_frozen_layer_and_calls() -> None:
    model = Twice()
    model.mid.weight.requires_grad_(False)
    model.mid.bias.requires_grad_(False)
    model.eval()
    result = bench_layers(model, torch.randn(2, 3, 8, 8), label="twice", warmup=0, repeats=1)
    rows = {r.name: r for r in result.layers}
    # The first conv's input needs no gradient: autograd never computes it.
    assert rows["conv"].backward_input_s == 0.0 and rows["conv"].backward_weight_s > 0
    # A frozen layer computes its input gradient but no weight gradient.
    assert rows["mid"].backward_weight_s == 0.0 and rows["mid"].backward_input_s > 0
    assert rows["head"].backward_input_s > 0 and rows["head"].backward_weight_s > 0
    assert rows["act"].calls == 2 and rows["act"].backward_weight_s == 0.0
    assert rows["head"].params == 256 * 5 + 5
    assert all(r.forward_s > 0 for r in result.layers)
    assert result.total_s == sum(r.total_s for r in result.layers)
    # Modes restored, no hook left.
    assert all(not m.training for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_json_round_trip() -> None:
    result = bench_layers(Twice(), torch.randn(2, 3, 8, 8), label="twice", warmup=0, repeats=1)
    again = BenchResult.from_dict(result.to_dict())
    assert again == result
    d = result.to_dict()
    assert d["schema"] == "layertime.bench/1"
    assert {"forward_s", "backward_input_s", "backward_weight_s", "calls"} <= set(d["layers"][0])


def test_bench_by_name_uses_the_model_input_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "net.py"
    f.write_text(
        "from torch import nn\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),"
        " nn.Linear(4 * 10 * 10, num_classes))\n"
    )
    result = bench(f"{f}:build", input_shape=(3, 12, 12), batch_size=3, num_classes=7,
                   device="cpu", warmup=0, repeats=1)
    assert result.batch_size == 3 and result.input_shape == (3, 12, 12)
    rows = {r.name: r for r in result.layers}
    assert rows["3"].inputs[0].shape == (3, 400)
    assert rows["3"].params == 400 * 7 + 7
