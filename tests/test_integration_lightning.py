"""LayertimeCallback in real Lightning training: a tiny CNN, a DataLoader, a few steps on the CPU.

Each fit runs about a dozen optimizer steps of a model that takes
milliseconds; Lightning's own import (seconds) is paid once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    Strategy,
)
from torch import nn

from _datasets import Images

import layertime
from layertime.errors import LayertimeError, LayertimeWarning
from layertime.integrations.lightning import LayertimeCallback, lightning_row, unattributable
from layertime.results.run import Run
from layertime.store import Store

LAYERTIME_DIR = str(Path(layertime.__file__).parent)
BATCH = 8


@pytest.fixture(autouse=True)
def _quiet_lightning(one_thread: None) -> Iterator[None]:
    with warnings.catch_warnings():
        # Lightning's own advice (workers, logging intervals) is not under test here.
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*val_dataloader.*")
        yield


class TinyCNN(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(8 * 8 * 8, 10),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.99)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def fit(callbacks: list[Any], *, max_steps: int = 8, sleep_s: float = 0.0, val: bool = False,
        **trainer_kw: Any) -> tuple[L.Trainer, TinyCNN]:
    trainer_kw.setdefault("accelerator", "cpu")
    trainer = L.Trainer(
        max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        num_sanity_val_steps=0, limit_val_batches=2 if val else 0,
        **trainer_kw,
    )
    model = TinyCNN()
    loader = torch.utils.data.DataLoader(Images(sleep_s=sleep_s), batch_size=BATCH)
    trainer.fit(model, loader, torch.utils.data.DataLoader(Images(16), batch_size=BATCH)
                if val else None)
    return trainer, model


def rows_sum(run: Run) -> float:
    p = run.phases
    return sum(r.total_s for r in run.layers) + p.loss_s + p.step_level_s + p.unattributed_s


def module_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# -- a window of real training ----------------------------------------------------


def test_rows_add_up_and_slow_loading_shows_as_data() -> None:
    sleep_s = 0.002
    cb = LayertimeCallback(start_step=2, steps=4, verbose=False)
    trainer, model = fit([cb], sleep_s=sleep_s, gradient_clip_val=1.0)
    assert trainer.global_step == 8  # training ran to its end
    run = cb.result
    assert run is not None and cb.skipped is None
    assert run.steps == 2 and len(run.step_samples_s) == 2
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)
    # Each step fetches one batch: BATCH samples, each sleeping sleep_s inside the fetch.
    assert run.phases.data_s >= BATCH * sleep_s
    names = {r.name: r for r in run.layers}
    for layer in ("net.0", "net.4"):  # the conv and the fully connected layer
        assert names[layer].forward_s > 0 and names[layer].backward_s > 0
        assert names[layer].update_s > 0 and names[layer].calls == 1
    # the framework's parts of the step have their rows
    assert run.phases.clip_s > 0 and run.phases.scheduler_s > 0 and run.phases.zero_grad_s > 0
    assert run.phases.loss_s > 0 and run.phases.logging_s > 0
    assert run.batch_size == BATCH and run.input_shape == (3, 16, 16)
    assert run.optimizer == "sgd" and run.amp is None and run.micro_batches == 1
    assert run.model == "TinyCNN"
    assert module_hooks(model) == 0


def test_a_step_after_the_window_runs_no_layertime_code() -> None:
    """Python's profiler function sees every call: none lands in layertime's files."""
    calls: list[str] = []

    def watch(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(LAYERTIME_DIR):
            calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    class Watch(L.Callback):
        """From the start of step 7 to the start of step 9 (the window is steps 2-5)."""

        def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step == 7:
                sys.setprofile(watch)
            elif trainer.global_step == 9:
                sys.setprofile(None)
                watched.append(trainer.global_step)

    watched: list[int] = []
    cb = LayertimeCallback(start_step=2, steps=4, verbose=False)
    try:
        trainer, model = fit([cb, Watch()], max_steps=10)
    finally:
        sys.setprofile(None)
    assert watched == [9] and cb.result is not None
    assert calls == []
    assert module_hooks(model) == 0
    assert not torch._C._autograd._profiler_enabled()
    assert type(trainer.profiler).__name__ == "PassThroughProfiler"  # Lightning's own, back


def test_gradient_accumulation_counts_optimizer_steps() -> None:
    cb = LayertimeCallback(start_step=1, steps=2, verbose=False)
    trainer, _ = fit([cb], max_steps=5, accumulate_grad_batches=2)
    run = cb.result
    assert run is not None
    assert run.micro_batches == 2
    assert all(r.calls == 2 for r in run.layers if r.name.startswith("net."))
    assert any("2 micro-batches" in w and "per optimizer step" in w for w in run.warnings)
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert "batch 8 x 2 accumulated" in run.headline()


def test_bf16_autocast_as_configured() -> None:
    cb = LayertimeCallback(start_step=1, steps=2, verbose=False)
    fit([cb], max_steps=4, precision="bf16-mixed")
    run = cb.result
    assert run is not None and run.amp == "bf16" and run.dtype == "float32"
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert "amp bf16" in run.headline()


def test_steps_with_validation_are_left_out_and_said() -> None:
    seen: list[tuple[int, bool]] = []

    class Spy(L.Callback):
        def on_validation_batch_start(self, trainer: Any, *args: Any) -> None:
            seen.append((trainer.global_step, bool(torch._C._autograd._profiler_enabled())))

    cb = LayertimeCallback(start_step=1, steps=4, verbose=False)
    fit([cb, Spy()], max_steps=10, val=True, val_check_interval=2)
    run = cb.result
    assert run is not None
    # No validation batch ran while the profiler was on: those steps stopped tracing.
    assert {step for step, _ in seen} >= {2, 4, 6, 8} and not any(on for _, on in seen), seen
    # Validation runs after optimizer steps 2, 4, 6 and 8, inside steps 3, 5, 7 and 9 (a
    # step spans from one step's end to the next): 3, 5 and 7 are left out, and the
    # window, which needs 4 kept steps, has them after step 8: steps 2, 4, 6, 8
    # (plain, traced, plain, traced).
    assert [w for w in run.warnings if "left out" in w] == [
        "3 step(s) left out of the window: validation ran in them (steps 3, 5, 7)"]
    assert run.steps == 2 and len(run.step_samples_s) == 2


def test_a_profiler_the_user_configured_still_gets_every_call() -> None:
    """Traced steps pass Lightning's hook calls through to the Trainer's own profiler."""
    cb = LayertimeCallback(start_step=1, steps=4, verbose=False)
    trainer, _ = fit([cb], max_steps=6, profiler="simple")
    assert cb.result is not None and cb.result.steps == 2
    assert type(trainer.profiler).__name__ == "SimpleProfiler"
    durations = trainer.profiler.recorded_durations  # type: ignore[attr-defined]
    assert len(durations["run_training_batch"]) == 6
    assert len(durations["[Strategy]SingleDeviceStrategy.training_step"]) == 6


class OwnStrategy(Strategy):
    """A strategy of the user's own (it runs like a single-device one)."""

    @property
    def root_device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def is_global_zero(self) -> bool:
        return True

    global_rank = local_rank = node_rank = 0
    world_size = 1

    def model_to_device(self) -> None:
        assert self.model is not None
        self.model.to(self.root_device)

    def reduce(self, tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor

    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj

    def all_gather(self, tensor: Any, group: Any = None, sync_grads: bool = False) -> Any:
        return tensor


def test_a_strategy_it_cannot_attribute_is_one_line_and_training_goes_on() -> None:
    cb = LayertimeCallback(start_step=1, steps=2)
    with pytest.warns(LayertimeWarning) as caught:
        trainer, model = fit([cb], max_steps=5, strategy=OwnStrategy())
    ours = [w for w in caught if issubclass(w.category, LayertimeWarning)]
    assert len(ours) == 1
    line = str(ours[0].message)
    assert "\n" not in line and "OwnStrategy" in line and "single-device, DDP" in line
    assert trainer.global_step == 5
    assert cb.result is None and cb.skipped is not None and "OwnStrategy" in cb.skipped
    assert module_hooks(model) == 0


def test_deepspeed_is_named_with_the_reason() -> None:
    strategy = object.__new__(DeepSpeedStrategy)  # its constructor needs deepspeed
    reason = unattributable(strategy)
    assert reason is not None and "DeepSpeed" in reason and "DeepSpeedStrategy" in reason


def test_sharding_strategies_are_attributed() -> None:
    # Lightning runs FSDPStrategy on GPUs only (benchmarks/gpu_check.py runs it); its
    # model-parallel strategy runs here: test_model_parallel_strategy_is_attributed.
    assert unattributable(FSDPStrategy()) is None
    assert unattributable(ModelParallelStrategy()) is None


@pytest.mark.slow
def test_model_parallel_strategy_is_attributed(tmp_path: Path) -> None:
    """FSDP2 applied in configure_model under ModelParallelStrategy, 2 CPU processes: the
    units' collectives go to their layers and rows add up (rank 0's)."""
    out = tmp_path / "run.json"
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "sharded" /
                                                "lightning_mp.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Run.load(out)
    assert run.sharding is not None and run.world_size == 2
    assert run.sharding.units == ("layers.0", "layers.2", "layers.4", "")
    gathers = {c.target: c for c in run.collectives
               if c.kind == "all_gather" and c.phase == "forward"}
    assert {t: c.bytes for t, c in gathers.items()} == {
        "layers.0": (32 * 64 + 64) * 4, "layers.2": (64 * 64 + 64) * 4,
        "layers.4": (64 * 10 + 10) * 4}
    assert rows_sum(run) == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert any("sharded (ModelParallelStrategy, 2 ranks)" in w for w in run.warnings)


class CompiledNet(TinyCNN):
    """``self.net = torch.compile(net)`` inside the LightningModule."""

    def __init__(self, in_place: bool = False) -> None:
        super().__init__()
        if in_place:
            self.net.compile()
        else:
            self.net = torch.compile(self.net)  # type: ignore[assignment]


@pytest.mark.parametrize("in_place", [False, True])
def test_a_compiled_part_of_the_module_is_named_with_what_to_do(in_place: bool) -> None:
    reason = unattributable(SingleDeviceStrategy(torch.device("cpu")), CompiledNet(in_place))
    assert reason is not None and "\n" not in reason
    assert "compiled parts ('net')" in reason and "uncompiled" in reason
    assert unattributable(SingleDeviceStrategy(torch.device("cpu")), TinyCNN()) is None


def test_single_device_and_ddp_are_attributed() -> None:
    assert unattributable(SingleDeviceStrategy(torch.device("cpu"))) is None
    assert unattributable(DDPStrategy()) is None


def test_training_shorter_than_the_window_says_so() -> None:
    cb = LayertimeCallback(start_step=6, steps=4, verbose=False)
    with pytest.warns(LayertimeWarning, match="no step profiled"):
        trainer, model = fit([cb], max_steps=5)
    assert trainer.global_step == 5 and cb.result is None and module_hooks(model) == 0


# -- the result, reported -----------------------------------------------------------


def test_reports_are_written_stored_and_announced(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    paths = {k: tmp_path / f"run.{ext}" for k, ext in
             (("json", "json"), ("html", "html"), ("plot", "svg"), ("trace", "trace.json"))}
    db = tmp_path / "runs.db"
    cb = LayertimeCallback(start_step=1, steps=2, store=db, width=80, **paths)  # type: ignore
    fit([cb], max_steps=4)
    out, err = capsys.readouterr()
    run = cb.result
    assert run is not None
    assert out.startswith("conv layers:")  # the table's headline, on stdout
    assert "clip" in out and "data" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    for flag, path in paths.items():
        assert path.exists() and f"wrote {path} ({flag})" in err
    assert Run.load(paths["json"]).phases == run.phases
    assert json.loads(paths["trace"].read_text())["traceEvents"]
    assert f"stored as run {cb.stored_id} in {db}" in err
    with Store(db) as store:
        stored = store.get(cb.stored_id or 0)
    assert stored.kind == "profile" and stored.config["source"] == "lightning"
    assert Run.from_dict(stored.result or {}).profiled_step_s == run.profiled_step_s


def test_quiet_callback_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    cb = LayertimeCallback(start_step=1, steps=2, verbose=False)
    fit([cb], max_steps=4)
    out, err = capsys.readouterr()
    assert cb.result is not None
    assert "layertime" not in out + err and "conv" not in out


def test_an_unwritable_report_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="no such directory"):
        LayertimeCallback(html=tmp_path / "missing" / "r.html")
    with pytest.raises(LayertimeError, match="steps must be"):
        LayertimeCallback(steps=1)


def test_lightning_rows_of_hook_calls() -> None:
    assert lightning_row("[_TrainingEpochLoop].train_dataloader_next") == "data"
    assert lightning_row("[Strategy]DDPStrategy.batch_to_device") == "data"
    assert lightning_row("[Strategy]SingleDeviceStrategy.training_step") == "loss"
    assert lightning_row("[Strategy]SingleDeviceStrategy.backward") == "backward"
    assert lightning_row("[LightningModule]Net.optimizer_step") == "update"
    assert lightning_row("optimizer_step") == "update"
    assert lightning_row("[LightningModule]Net.optimizer_zero_grad") == "zero_grad"
    assert lightning_row("[LightningModule]Net.configure_gradient_clipping") == "clip"
    assert lightning_row("[LightningModule]Net.lr_scheduler_step") == "scheduler"
    assert lightning_row("[LightningModule]Net.on_train_batch_end") == "logging"
    assert lightning_row("[Callback]TQDMProgressBar.on_train_batch_end") == "logging"
    assert lightning_row("run_training_batch") is None


class RaisesAt(TinyCNN):
    """Raises in ``training_step`` at its ``n``-th call, after the model's forward."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.calls += 1
        loss = super().training_step(batch, batch_idx)
        if self.calls == self.n:
            raise RuntimeError(f"step {self.n} failed")
        return loss


@pytest.mark.parametrize("raise_at", [7, 9])
def test_an_exception_in_a_traced_step_leaves_nothing_behind(raise_at: int) -> None:
    cb = LayertimeCallback(start_step=5, steps=6, verbose=False)
    model = RaisesAt(raise_at)
    trainer = L.Trainer(max_steps=14, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", callbacks=[cb])
    with pytest.raises(RuntimeError, match=f"step {raise_at} failed"), warnings.catch_warnings():
        # raising at 7: no traced step completed, which the callback says in a warning
        warnings.simplefilter("ignore", LayertimeWarning)
        trainer.fit(model, torch.utils.data.DataLoader(Images(), batch_size=BATCH))
    assert model.calls == raise_at
    assert module_hooks(model) == 0 and not torch._C._autograd._profiler_enabled()
    assert type(trainer.profiler).__name__ == "PassThroughProfiler"
    again = LayertimeCallback(start_step=2, steps=4, verbose=False)
    _, second = fit([again], max_steps=8)
    assert again.result is not None and again.result.steps == 2 and module_hooks(second) == 0
