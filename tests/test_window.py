"""StepWindow: a window of steps marked from outside, as the framework callbacks mark it.

A hand-written loop stands in for the framework: it calls ``boundary`` where
an optimizer step ends, as ``on_train_batch_end``/``on_step_end`` do.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.window import StepWindow, check_window, first_tensor


def _profiler_on() -> bool:
    return bool(torch._C._autograd._profiler_enabled())


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _train(window: StepWindow, model: nn.Module, steps: int, *, micro: int = 1,
           disturb_at: int | None = None, seen: list[tuple[int, bool, bool]] | None = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    for i in range(steps):
        if seen is not None:
            seen.append((i, window.traced, _profiler_on()))
        for _ in range(micro):
            window.note_micro_batch()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
        window.open_phase("clip")
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        window.close_phase("clip")
        opt.step()
        opt.zero_grad()
        if i == disturb_at:
            window.disturb("validation")
        window.boundary(i + 1)


def test_the_window_alternates_plain_and_traced_steps_then_stops() -> None:
    model = _net()
    w = StepWindow(model, start_step=2, steps=4)
    seen: list[tuple[int, bool, bool]] = []
    _train(w, model, 9, seen=seen)
    # steps 0 and 1 before the window, 2..5 in it (plain, traced, plain, traced), then none
    assert [(i, t) for i, t, _ in seen] == [
        (0, False), (1, False), (2, False), (3, True), (4, False), (5, True),
        (6, False), (7, False), (8, False),
    ]
    assert [p for _, _, p in seen] == [t for _, t, _ in seen]  # the profiler runs only then
    assert w.done and not _profiler_on() and _hooks(model) == 0
    run = w.result(optimizer="sgd")
    assert run.steps == 2 and len(run.step_samples_s) == 2
    assert run.batch_size == 8 and run.input_shape == (16,)
    assert run.phases.clip_s > 0
    parts = sum(r.total_s for r in run.layers) + run.phases.loss_s + run.phases.step_level_s \
        + run.phases.unattributed_s
    assert parts == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert run.micro_batches == 1 and run.warnings == ()


def test_micro_batches_are_counted_and_said() -> None:
    model = _net()
    w = StepWindow(model, start_step=1, steps=2)
    _train(w, model, 4, micro=3)
    run = w.result()
    assert run.micro_batches == 3
    assert all(r.calls == 3 for r in run.layers if r.name in ("0", "1", "2"))
    assert any("gradient accumulation" in n and "3 micro-batches" in n for n in run.warnings)


def test_a_disturbed_step_is_left_out_and_the_window_goes_on() -> None:
    model = _net()
    w = StepWindow(model, start_step=1, steps=2)
    seen: list[tuple[int, bool, bool]] = []
    _train(w, model, 6, disturb_at=2, seen=seen)
    # step 1 plain (kept), step 2 traced but disturbed (left out), step 3 traced again
    assert [t for _, t, _ in seen] == [False, False, True, True, False, False]
    run = w.result()
    assert run.steps == 1 and len(run.step_samples_s) == 1
    assert "1 step(s) left out of the window: validation ran in them" in run.warnings


def test_phases_open_only_in_traced_steps() -> None:
    model = _net()
    w = StepWindow(model, start_step=1, steps=2)
    w.boundary(1)  # a plain step begins
    w.open_phase("logging")
    assert w.phases.current is None
    w.boundary(2)  # a traced step begins
    w.open_phase("logging")
    assert w.phases.current == "logging"
    w.close()
    assert w.phases.current is None and not _profiler_on() and _hooks(model) == 0


def test_closing_mid_step_discards_it_and_removes_everything() -> None:
    model = _net()
    w = StepWindow(model, start_step=1, steps=4)
    w.boundary(1)
    w.boundary(2)
    assert w.traced and _profiler_on() and _hooks(model) > 0
    w.close()
    assert w.done and not _profiler_on() and _hooks(model) == 0
    with pytest.raises(LayertimeError, match="no profiled step"):
        w.result()
    assert w.boundary(3) is False and not w.in_step


@pytest.mark.parametrize(
    ("start", "steps", "message"),
    [(0, 4, "start_step must be an integer >= 1"), (2, 1, "steps must be an integer >= 2"),
     (True, 4, "start_step"), (2, 3.0, "steps must")],
)
def test_bad_windows_are_one_line_errors(start: object, steps: object, message: str) -> None:
    with pytest.raises(LayertimeError, match=message):
        check_window(start, steps)  # type: ignore[arg-type]


def test_first_tensor_finds_the_batch_in_nested_containers() -> None:
    t = torch.zeros(3, 5)
    assert first_tensor({"labels": [1, 2], "x": (None, t)}) is t
    assert first_tensor(((), {"a": "b"})) is None


def test_the_step_before_the_window_is_watched_for_kinds() -> None:
    """A layer is classed by what it computes (GPT-2's Conv1D is fully connected), from
    the one step before the window; the measured steps are not watched."""
    import transformers  # installed by the setup (layertime[hf]): never skipped
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ids = torch.randint(0, 64, (2, 16))
    w = StepWindow(model, start_step=2, steps=2)
    for i in range(5):
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        w.boundary(i + 1)
    run = w.result()
    assert run is not None
    kinds = {r.name: r.kind for r in run.layers}
    assert kinds["transformer.h.0.attn.c_attn"] == "linear"  # a Conv1D by class
    assert kinds["transformer.h.0.mlp.c_fc"] == "linear"
    assert _hooks(model) == 0 and not _profiler_on()
