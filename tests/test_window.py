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
    # loop steps 1 plain (kept), 2 traced but disturbed (left out: optimizer step 3,
    # counted from 1 as the frameworks count), 3 traced again
    assert [t for _, t, _ in seen] == [False, False, True, True, False, False]
    run = w.result()
    assert run.steps == 1 and len(run.step_samples_s) == 1
    assert "1 step(s) left out of the window: validation ran in them (step 3)" in run.warnings


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


class _Fails(nn.Module):
    """Raises in its own forward at its ``n``-th call (after its layers ran)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.net = _net()
        self.n, self.calls = n, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.net(x)
        if self.calls == self.n:
            raise RuntimeError("boom")
        return out


def _dispatch_mode() -> object:
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode()


@pytest.mark.parametrize(("fail_at", "where"), [(2, "watched"), (4, "traced")])
def test_a_forward_that_raises_takes_every_hook_and_the_profiler_off_at_once(
        fail_at: int, where: str) -> None:
    """No framework hook comes after the exception (the HF Trainer has none): the window
    itself notices it, before it leaves the model."""
    model = _Fails(fail_at)
    w = StepWindow(model, start_step=2, steps=4)
    x = torch.randn(8, 16)
    state: dict[str, object] = {}
    for i in range(6):
        try:
            model(x).sum().backward()
        except RuntimeError:
            state = {"hooks": _hooks(model), "profiler": _profiler_on(),
                     "mode": _dispatch_mode(), "traced": w.traced, "step": i + 1}
            break
        w.boundary(i + 1)
    # forward 2 runs in the step watched for kinds (before the window), forward 4 in
    # its first traced step (steps 3 plain, 4 traced)
    assert state == {"hooks": 0, "profiler": False, "mode": None, "traced": False,
                     "step": fail_at}, where
    # The window goes on if the training does, and says what it left out.
    for i in range(fail_at, 10):
        model(x).sum().backward()
        w.boundary(i + 1)
    run = w.result()
    assert _hooks(model) == 0 and not _profiler_on()
    if where == "traced":
        assert "1 step(s) left out of the window: a forward that raised ran in them (step 4)" \
            in run.warnings


def test_a_forward_that_raises_while_an_exception_is_handled_is_told_apart() -> None:
    """A forward called inside an ``except`` block sees that exception in sys.exc_info:
    only a new one means the forward raised."""
    model = _net()
    w = StepWindow(model, start_step=1, steps=2)
    w.boundary(1)
    w.boundary(2)
    assert w.traced
    try:
        raise ValueError("handled by the caller")
    except ValueError:
        model(torch.randn(8, 16))  # returns normally
        assert w.traced and _profiler_on()
    w.close()
    assert _hooks(model) == 0 and not _profiler_on()


def test_a_step_known_to_be_left_out_is_not_traced_and_one_disturbed_stops_tracing() -> None:
    model = _net()
    w = StepWindow(model, start_step=1, steps=4)
    w.boundary(1)  # plain
    w.boundary(2, ["evaluation"])  # the traced slot, but evaluation is due: not traced
    assert w.in_step and not w.traced and not _profiler_on() and _hooks(model) == 0
    w.boundary(3)  # traced
    assert w.traced and _profiler_on()
    w.disturb("a checkpoint save")
    assert not w.traced and not _profiler_on() and _hooks(model) == 0
    w.boundary(4)
    assert w.traced  # the next step takes the traced slot again
    w.close()
    assert w.notes() == [
        "1 step(s) left out of the window: a checkpoint save ran in them (step 4)",
        "1 step(s) left out of the window: evaluation ran in them (step 3)",
    ]


def test_the_input_shape_is_the_models_main_input() -> None:
    from layertime.measure.window import main_input

    class Net(nn.Module):
        main_input_name = "pixel_values"

        def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return pixel_values

    class Plain(nn.Module):
        def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return images

    x, y = torch.zeros(2, 3), torch.zeros(2)
    assert main_input(Net(), (), {"labels": y, "pixel_values": x}) is x
    assert main_input(Plain(), (), {"labels": y, "images": x}) is x
    assert main_input(Plain(), (x,), {"labels": y}) is x
