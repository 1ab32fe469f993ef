"""What the user compiled, told from the modules: modes and CUDA graphs of a user's
``torch.compile`` wrapper, and compiled parts inside a model refused with one line.

Nothing here compiles (``torch.compile`` is lazy, and a refusal comes before any step),
so these are fast.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import layertime
from layertime.errors import LayertimeError
from layertime.measure.compiled.collector import CompiledCollector
from layertime.measure.compiled.detect import compiled_parts, user_mode, uses_cuda_graphs
from layertime.modules import ModuleTable


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    ("mode", "cuda_graphs"),
    [(None, False), ("default", False), ("reduce-overhead", True), ("max-autotune", True),
     ("max-autotune-no-cudagraphs", False)],
)
def test_a_user_compiled_models_mode_and_cuda_graphs_are_read_from_its_wrapper(
    mode: str | None, cuda_graphs: bool
) -> None:
    net = _net()
    wrapper = torch.compile(net, mode=mode)
    assert user_mode(wrapper) == (None if mode == "default" else mode)
    collector = CompiledCollector.for_user_model(wrapper, ModuleTable(net), torch.device("cuda"))
    assert collector.mode == (None if mode == "default" else mode)
    assert collector.cuda_graphs is cuda_graphs
    message = collector._message([], 0.0)
    if cuda_graphs:
        assert message is not None and "CUDA graphs" in message and str(mode) in message
    else:
        assert message is None


def test_options_turning_cuda_graphs_on_or_off_are_heeded() -> None:
    net = _net()
    on = torch.compile(net, options={"triton.cudagraphs": True})
    c = CompiledCollector.for_user_model(on, ModuleTable(net), torch.device("cuda"))
    assert c.mode == "reduce-overhead" and c.cuda_graphs  # what that mode sets
    off = torch.compile(net, options={"max_autotune": True, "triton.cudagraphs": False})
    c = CompiledCollector.for_user_model(off, ModuleTable(net), torch.device("cuda"))
    assert not c.cuda_graphs
    assert uses_cuda_graphs("max-autotune") and not uses_cuda_graphs("max-autotune-no-cudagraphs")
    assert uses_cuda_graphs(None, {"triton.cudagraphs": True})


class WithCompiledPart(nn.Module):
    """``self.body = torch.compile(body)`` inside an eager model."""

    def __init__(self, in_place: bool = False) -> None:
        super().__init__()
        body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        if in_place:
            body.compile()
            self.body: nn.Module = body
        else:
            self.body = torch.compile(body)  # type: ignore[assignment]
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.body(x), 1))


@pytest.mark.parametrize("in_place", [False, True])
def test_compiled_parts_are_found(in_place: bool) -> None:
    assert compiled_parts(WithCompiledPart(in_place)) == ["body"]
    assert compiled_parts(_net()) == []


@pytest.mark.parametrize("in_place", [False, True])
def test_profile_refuses_a_model_with_compiled_parts_in_one_line(in_place: bool) -> None:
    with pytest.raises(LayertimeError) as caught:
        layertime.profile(WithCompiledPart(in_place), batch_size=2, input_shape=(3, 8, 8),
                          num_classes=10, device="cpu", steps=1)
    message = str(caught.value)
    assert "\n" not in message and "'body'" in message and "compile=True" in message


@pytest.mark.parametrize("in_place", [False, True])
def test_the_loop_profiler_refuses_a_model_with_compiled_parts(in_place: bool) -> None:
    model = WithCompiledPart(in_place)
    with pytest.raises(LayertimeError, match="compiled parts \\('body'"):
        layertime.Profiler(model)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert hooks == 0


def test_profile_refuses_a_compiled_model_compiled_again() -> None:
    with pytest.raises(LayertimeError, match="already compiled"):
        layertime.profile(torch.compile(_net()), batch_size=2, input_shape=(4,),
                          num_classes=2, device="cpu", steps=1, compile=True)
