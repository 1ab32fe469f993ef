"""One workload description: validated once, taken by every collector, open to token inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layertime.cost import estimate, estimate_workload
from layertime.errors import LayertimeError
from layertime.measure.isolated import bench_workload
from layertime.measure.prepare import prepare
from layertime.measure.runner import MeasureOptions, profile_workload
from layertime.workload import ImageInput, TokenInput, WorkloadSpec


class TinyLM(nn.Module):
    """Embedding, one linear layer per position, and a head over the vocabulary."""

    def __init__(self, vocab: int = 50, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.mix(self.embed(ids))))


@pytest.mark.parametrize("options, message", [
    ({"batch_size": 0}, "batch size must be at least 1"),
    ({"num_classes": 0}, "num_classes must be at least 1"),
    ({"optimizer": "lion"}, "unknown optimizer 'lion'"),
    ({"dtype": "int8"}, "unknown dtype 'int8'"),
    ({"amp": "fp8"}, "unknown --amp 'fp8'"),
    ({"input_shape": (3, 0, 8)}, "every size must be >= 1"),
    ({"input_shape": (3, 8, 8), "image_size": 8}, "not both"),
    ({"input": TokenInput(8), "image_size": 8}, "not several"),
])
def test_a_bad_workload_is_one_line_at_once(options: dict, message: str) -> None:
    with pytest.raises(LayertimeError, match=message) as e:
        WorkloadSpec.create("alexnet", **options)
    assert "\n" not in str(e.value)


def test_a_token_input_needs_a_next_token() -> None:
    with pytest.raises(LayertimeError, match="sequence length must be at least 2"):
        TokenInput(1)


def test_a_model_must_be_a_name_or_a_module() -> None:
    with pytest.raises(LayertimeError, match="a model name or an nn.Module"):
        WorkloadSpec(42)  # type: ignore[arg-type]


def test_the_keyword_options_make_the_same_spec() -> None:
    spec = WorkloadSpec.create("alexnet2012", batch_size=8, image_size=64, optimizer="adam")
    assert spec == WorkloadSpec("alexnet2012", ImageInput((3, 64, 64)), batch_size=8,
                                optimizer="adam")
    assert spec.to_dict()["input"] == {"kind": "image", "shape": (3, 64, 64)}


def test_prepare_fills_in_the_models_own_input() -> None:
    p = prepare(WorkloadSpec.create("alexnet2012", batch_size=1, device="cpu"))
    assert p.workload.input == ImageInput((3, 227, 227)) and p.label == "alexnet2012"


def test_the_adapter_and_the_spec_count_the_same(one_thread: None) -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    a = estimate(net, batch_size=2, input_shape=(3, 2, 2), num_classes=4)
    b = estimate_workload(WorkloadSpec(net, ImageInput((3, 2, 2)), batch_size=2, num_classes=4))
    assert a == b


def test_token_inputs_run_through_every_collector(one_thread: None) -> None:
    """A token workload is profiled, counted and benchmarked by the same calls as images."""
    spec = WorkloadSpec(TinyLM(), TokenInput(seq_len=12), batch_size=2, device="cpu")
    run = profile_workload(spec, MeasureOptions(steps=1, warmup_steps=0))
    assert run.input_shape == (12,) and run.num_classes == 50
    rows = sum(r.total_s for r in run.layers)
    p = run.phases
    assert rows + p.loss_s + p.zero_grad_s + p.data_s + p.unattributed_s == pytest.approx(
        run.profiled_step_s, rel=1e-9)
    assert {r.kind for r in run.layers} >= {"embedding", "linear"}

    cost = estimate_workload(spec)
    assert cost.input_shape == (12,) and cost.num_classes == 50
    head = next(r for r in cost.layers if r.name == "head")
    # A (2*12) x 16 by 16 x 50 matmul: 2 FLOPs per multiply-accumulate, plus the bias add.
    assert head.flops.forward >= 2 * 2 * 12 * 16 * 50

    bench = bench_workload(spec, warmup=0, repeats=1)
    assert [b.name for b in bench.layers] == ["embed", "mix", "head"]
    assert bench.input_shape == (12,)


def test_token_inputs_need_a_vocabulary() -> None:
    spec = WorkloadSpec(nn.Linear(4, 4), TokenInput(4), batch_size=1, device="cpu")
    with pytest.raises(LayertimeError, match="vocabulary size"):
        profile_workload(spec, MeasureOptions(steps=1, warmup_steps=0))
