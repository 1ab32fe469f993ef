"""LayertimeTrainerCallback in a real Hugging Face Trainer: a tiny CNN, a DataLoader, a few steps.

The Trainer needs ``accelerate`` (``layertime[hf]`` installs both).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from _datasets import Images

import layertime
import layertime.integrations.hf as hf
from layertime.errors import LayertimeWarning
from layertime.integrations.hf import LayertimeTrainerCallback, unattributable
from layertime.results.run import Run

LAYERTIME_DIR = str(Path(layertime.__file__).parent)
BATCH = 8


@pytest.fixture(autouse=True)
def _quiet(one_thread: None) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="transformers")
        warnings.filterwarnings("ignore", module="accelerate")
        yield


class TinyCNN(nn.Module):
    """Returns its loss, as Hugging Face models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(8 * 8 * 8, 10),
        )
        self.loss = nn.CrossEntropyLoss()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        logits = self.net(pixel_values)
        return {"loss": self.loss(logits, labels), "logits": logits}


def train(callbacks: list[Any], tmp_path: Path, *, max_steps: int = 8, sleep_s: float = 0.0,
          **args_kw: Any) -> tuple[Trainer, TinyCNN]:
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, max_steps=max_steps,
        per_device_train_batch_size=BATCH, logging_steps=1, disable_tqdm=True,
        save_strategy="no", dataloader_num_workers=0, **args_kw,
    )
    model = TinyCNN()
    trainer = Trainer(model, args, train_dataset=Images(sleep_s=sleep_s, as_dict=True),
                      callbacks=callbacks)
    trainer.train()
    return trainer, model


def rows_sum(run: Run) -> float:
    p = run.phases
    return sum(r.total_s for r in run.layers) + p.loss_s + p.step_level_s + p.unattributed_s


def module_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_rows_add_up_and_slow_loading_shows_as_data(tmp_path: Path) -> None:
    sleep_s = 0.002
    cb = LayertimeTrainerCallback(start_step=2, steps=4, verbose=False)
    trainer, model = train([cb], tmp_path, sleep_s=sleep_s)
    assert trainer.state.global_step == 8
    run = cb.result
    assert run is not None and cb.skipped is None
    assert run.steps == 2 and len(run.step_samples_s) == 2
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert run.phases.data_s >= BATCH * sleep_s
    names = {r.name: r for r in run.layers}
    for layer in ("net.0", "net.4"):
        assert names[layer].forward_s > 0 and names[layer].backward_s > 0
        assert names[layer].update_s > 0 and names[layer].calls == 1
    assert names["loss"].kind == "loss" and names["loss"].forward_s > 0
    # max_grad_norm (1.0 by default) clips between the backward and the optimizer step
    assert run.phases.clip_s > 0 and run.phases.scheduler_s > 0 and run.phases.logging_s > 0
    assert run.optimizer == "adamw" and run.amp is None and run.micro_batches == 1
    assert run.batch_size == BATCH and run.input_shape == (3, 16, 16)
    assert module_hooks(model) == 0


def test_a_step_after_the_window_runs_no_layertime_code(tmp_path: Path) -> None:
    calls: list[str] = []
    watched: list[int] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(LAYERTIME_DIR):
            calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    class Watch(TrainerCallback):
        """From the end of step 7 to the end of step 9 (the window is steps 2-5)."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 7:
                sys.setprofile(watch)
            elif state.global_step == 9:
                sys.setprofile(None)
                watched.append(state.global_step)

    cb = LayertimeTrainerCallback(start_step=2, steps=4, verbose=False)
    try:
        _, model = train([cb, Watch()], tmp_path, max_steps=10)
    finally:
        sys.setprofile(None)
    assert watched == [9] and cb.result is not None
    assert calls == []
    assert module_hooks(model) == 0 and not torch._C._autograd._profiler_enabled()


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    cb = LayertimeTrainerCallback(start_step=1, steps=2, verbose=False)
    train([cb], tmp_path, max_steps=4, gradient_accumulation_steps=2)
    run = cb.result
    assert run is not None and run.micro_batches == 2
    assert all(r.calls == 2 for r in run.layers if r.name.startswith("net."))
    assert any("2 micro-batches" in w for w in run.warnings)
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)


def test_bf16_autocast_as_configured(tmp_path: Path) -> None:
    cb = LayertimeTrainerCallback(start_step=1, steps=2, verbose=False)
    train([cb], tmp_path, max_steps=4, bf16=True)
    run = cb.result
    assert run is not None and run.amp == "bf16"
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)


def test_what_it_cannot_attribute_is_one_line_and_training_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSpeed needs more than this CPU: the check is simulated, the training is real."""
    reason = unattributable(SimpleNamespace(deepspeed="ds.json"))
    assert reason is not None
    monkeypatch.setattr(hf, "unattributable", lambda args, model=None: reason)
    cb = LayertimeTrainerCallback(start_step=1, steps=2)
    with pytest.warns(LayertimeWarning) as caught:
        trainer, model = train([cb], tmp_path, max_steps=4)
    ours = [w for w in caught if issubclass(w.category, LayertimeWarning)]
    assert len(ours) == 1 and "DeepSpeed" in str(ours[0].message)
    assert "\n" not in str(ours[0].message)
    assert trainer.state.global_step == 4
    assert cb.result is None and cb.skipped == reason and module_hooks(model) == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (SimpleNamespace(deepspeed="ds.json"), "DeepSpeed"),
        (SimpleNamespace(torch_compile=True), "torch.compile"),
        (SimpleNamespace(parallel_mode=SimpleNamespace(value="not_distributed")), "DataParallel"),
        (SimpleNamespace(parallel_mode="tpu"), "XLA"),
    ],
)
def test_what_it_cannot_attribute_is_named(args: Any, words: str) -> None:
    reason = unattributable(args)
    assert reason is not None and words in reason


class WithCompiledNet(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.compile(self.net)  # type: ignore[assignment]


def test_a_compiled_model_or_compiled_part_is_named_with_what_to_do(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    whole = unattributable(args, torch.compile(TinyCNN()))
    assert whole is not None and "model handed to the trainer is compiled" in whole
    part = unattributable(args, WithCompiledNet())
    assert part is not None and "compiled parts ('net')" in part and "\n" not in part
    assert unattributable(args, TinyCNN()) is None


def test_single_process_ddp_and_fsdp_arguments_are_attributed(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    assert unattributable(args) is None
    assert unattributable(SimpleNamespace(parallel_mode="distributed", fsdp=[])) is None
    # FSDP through accelerate: its units' collectives are charged to their layers
    # (measure/parallel/in_loop.py; accelerate runs it on GPUs only: benchmarks/gpu_check.py).
    assert unattributable(SimpleNamespace(parallel_mode="distributed",
                                          fsdp="full_shard auto_wrap")) is None


def test_reports_are_written_and_announced(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.json"
    cb = LayertimeTrainerCallback(start_step=1, steps=2, json=path, store=tmp_path / "runs.db")
    train([cb], tmp_path, max_steps=4)
    out, err = capsys.readouterr()
    assert cb.result is not None and Run.load(path).steps == cb.result.steps
    assert f"wrote {path} (json)" in err and f"stored as run {cb.stored_id}" in err
    assert "conv layers:" in out and "clip" in out  # the table, on stdout


def profiler_on() -> bool:
    return bool(torch._C._autograd._profiler_enabled())


class RaisesAt(TinyCNN):
    """Raises in its own forward at its ``n``-th call."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.calls = 0

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError(f"forward {self.n} failed")
        return super().forward(pixel_values, labels)


def _trainer(model: nn.Module, callbacks: list[Any], tmp_path: Path, *, max_steps: int = 14,
             dataset: Any = None, eval_dataset: Any = None, **args_kw: Any) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, max_steps=max_steps,
        per_device_train_batch_size=BATCH, logging_steps=1, disable_tqdm=True,
        dataloader_num_workers=0, **{"save_strategy": "no", **args_kw},
    )
    return Trainer(model, args, train_dataset=dataset or Images(as_dict=True),
                   eval_dataset=eval_dataset, callbacks=callbacks)


@pytest.mark.parametrize("raise_at", [7, 9])
def test_an_exception_in_a_traced_forward_leaves_nothing_behind(
        tmp_path: Path, raise_at: int) -> None:
    """start_step=5, steps=6: the 7th and 9th forwards are in traced steps."""
    cb = LayertimeTrainerCallback(start_step=5, steps=6, verbose=False)
    model = RaisesAt(raise_at)
    with pytest.raises(RuntimeError, match=f"forward {raise_at} failed"):
        _trainer(model, [cb], tmp_path).train()
    assert model.calls == raise_at  # it did raise in the window's traced step
    assert module_hooks(model) == 0 and not profiler_on()
    # A second training in this process, with a new callback, is profiled.
    again = LayertimeTrainerCallback(start_step=2, steps=4, verbose=False)
    second = TinyCNN()
    _trainer(second, [again], tmp_path, max_steps=8).train()
    assert again.result is not None and again.result.steps == 2
    assert module_hooks(second) == 0 and not profiler_on()
    # So is one with the same callback: the failed training's window is not reused.
    _trainer(TinyCNN(), [cb], tmp_path, max_steps=14).train()
    assert cb.result is not None and cb.result.steps == 3 and cb.skipped is None


def test_steps_with_evaluation_or_a_save_are_left_out_and_never_traced(tmp_path: Path) -> None:
    seen: list[tuple[str, int, bool]] = []

    class Spy(TrainerCallback):
        """Before layertime's callback: what runs while evaluating and saving."""

        def on_prediction_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            seen.append(("eval", state.global_step, profiler_on()))

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            seen.append(("save", state.global_step, profiler_on()))

    cb = LayertimeTrainerCallback(start_step=1, steps=4, verbose=False)
    trainer = _trainer(TinyCNN(), [Spy(), cb], tmp_path, max_steps=12,
                       eval_strategy="steps", eval_steps=3, save_strategy="steps", save_steps=4,
                       per_device_eval_batch_size=BATCH, eval_dataset=Images(16, as_dict=True))
    trainer.train()
    run = cb.result
    assert run is not None and run.steps == 2
    # Evaluation after steps 3 and 6 and the save after step 4 fall in the window
    # (steps 1-8 at most): none of it was traced.
    assert {(what, step) for what, step, _ in seen} >= {("eval", 3), ("save", 4), ("eval", 6)}
    assert not any(on for what, step, on in seen if step <= 8), seen
    assert "step(s) left out of the window: evaluation ran in them (steps 4, 7)" in \
        "\n".join(run.warnings)
    assert any("a checkpoint save ran in them (step 5)" in w for w in run.warnings)
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)


class LabelFirst(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Items as datasets give them (``label``): the default collator puts ``labels`` first."""

    def __init__(self) -> None:
        self.images = Images(as_dict=True)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.images[i]
        return {"label": item["labels"], "pixel_values": item["pixel_values"]}


def test_the_input_shape_is_the_models_main_input_not_the_first_key(tmp_path: Path) -> None:
    from transformers import default_data_collator

    batch = default_data_collator([LabelFirst()[0], LabelFirst()[1]])
    assert list(batch)[0] == "labels"  # what the Trainer passes as model(**batch)
    cb = LayertimeTrainerCallback(start_step=1, steps=2, verbose=False)
    _trainer(TinyCNN(), [cb], tmp_path, max_steps=4, dataset=LabelFirst()).train()
    run = cb.result
    assert run is not None and run.batch_size == BATCH and run.input_shape == (3, 16, 16)
