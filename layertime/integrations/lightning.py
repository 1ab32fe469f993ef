"""PyTorch Lightning: a callback that profiles a window of optimizer steps.

::

    from layertime.integrations.lightning import LayertimeCallback
    trainer = L.Trainer(callbacks=[LayertimeCallback(start_step=20, steps=10, html="breakdown.html")])

Where the rows come from, in a traced step:

* the model's layers: forward hooks on the LightningModule's modules, and the
  autograd engine's ranges for their backward, as everywhere in layertime;
* the step-level rows from the names Lightning gives its own hook calls
  (``trainer.profiler.profile("[Strategy]...training_step")``): for traced
  steps only, ``trainer.profiler`` is replaced by a pass-through wrapper that
  also opens a profiler range per call, and put back at the step's end (a
  profiler the user configured still gets every call).  ``data`` is the
  dataloader's fetch and moving the batch to the device; ``loss`` the
  ``training_step``'s work outside the model's layers; ``zero_grad``,
  ``clip`` (``configure_gradient_clipping``), ``update`` (the optimizer step
  less the closure it runs: with a GradScaler, unscaling and its update too),
  ``scheduler`` (``lr_scheduler_step``); ``logging`` is callbacks, the
  LightningModule's own hooks, loggers and the loop's work between batches.

A step is one optimizer step (``trainer.global_step``), from this callback's
``on_train_batch_end`` to the next one that finds the step count moved.
"""

from __future__ import annotations

from typing import Any

from layertime.errors import MissingExtra

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.profilers import Profiler as _LightningProfiler
    from lightning.pytorch.profilers import PyTorchProfiler
    from lightning.pytorch.strategies import (
        DDPStrategy,
        DeepSpeedStrategy,
        FSDPStrategy,
        ModelParallelStrategy,
        SingleDeviceStrategy,
        SingleDeviceXLAStrategy,
        XLAStrategy,
    )
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore
        from pytorch_lightning.profilers import Profiler as _LightningProfiler  # type: ignore
        from pytorch_lightning.profilers import PyTorchProfiler  # type: ignore
        from pytorch_lightning.strategies import (  # type: ignore
            DDPStrategy,
            DeepSpeedStrategy,
            FSDPStrategy,
            ModelParallelStrategy,
            SingleDeviceStrategy,
            SingleDeviceXLAStrategy,
            XLAStrategy,
        )
    except ImportError:
        raise MissingExtra(
            "layertime.integrations.lightning needs PyTorch Lightning 2.x: "
            "pip install 'layertime[lightning]'"
        ) from None

from layertime.integrations._common import (
    DEFAULT_START_STEP,
    DEFAULT_STEPS,
    WindowCallback,
    compiled_reason,
)
from layertime.measure.tracer import PhaseMarker
from layertime.measure.traces.lightning import row_of
from layertime.measure.window import StepWindow

__all__ = ["LayertimeCallback", "lightning_row", "unattributable"]

#: Strategies whose steps the rows would misdescribe, and why.
_UNATTRIBUTABLE: tuple[tuple[type, str], ...] = (
    (DeepSpeedStrategy, "DeepSpeed runs the model and optimizer in its own engine (ZeRO "
                        "partitions gradients and optimizer state, the update is fused)"),
    (XLAStrategy, "XLA compiles the step into graphs: no op runs inside the module ranges"),
    (SingleDeviceXLAStrategy, "XLA compiles the step into graphs: no op runs inside the "
                              "module ranges"),
)

#: The step row of one of Lightning's profiled actions (None: no row of its own), the same
#: table a recorded trace is read by (``measure/traces/lightning.py``).
lightning_row = row_of


def unattributable(strategy: Any, pl_module: Any = None, profiler: Any = None) -> str | None:
    """Why layertime cannot attribute this training (one line), or None when it can."""
    name = type(strategy).__name__
    for cls, why in _UNATTRIBUTABLE:
        if isinstance(strategy, cls):
            return (f"strategy {name}: {why}; layertime attributes single-device, DDP, FSDP "
                    "and model-parallel training only, so it profiles nothing here")
    if not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy, FSDPStrategy,
                                 ModelParallelStrategy)):
        return (f"strategy {name}: not one layertime knows (it attributes Lightning's "
                "single-device, DDP, FSDP and model-parallel strategies only), so it profiles "
                "nothing here")
    if pl_module is not None and getattr(pl_module, "_compiler_ctx", None):
        return ("torch.compile: module hooks do not run inside compiled graphs, so layers "
                "cannot be timed; profile the model uncompiled")
    if isinstance(profiler, PyTorchProfiler):
        return ("Trainer(profiler=PyTorchProfiler) already runs torch.profiler, and two "
                "cannot run at once; remove one of them")
    return compiled_reason(pl_module)


class _RangeProfiler(_LightningProfiler):
    """Lightning's profiler, passed through, plus a layertime range per hook call.

    Installed as ``trainer.profiler`` for one traced step.  The closure that
    Lightning runs inside the optimizer step (training_step, zero_grad,
    backward, clipping) also gets a ``logging`` range around it, so the
    closure's own bookkeeping is not charged to the update.
    """

    def __init__(self, inner: Any, own_prefix: str) -> None:
        super().__init__()
        self._inner = inner
        self._own = own_prefix
        self._marks = PhaseMarker()
        self._opened: dict[str, list[bool]] = {}
        self._closure_open = False

    def start(self, action_name: str) -> None:
        self._inner.start(action_name)
        row = None if action_name.startswith(self._own) else lightning_row(action_name)
        if row == "loss" and not self._closure_open:
            self._marks.open("logging")
            self._closure_open = True
        if row is not None:
            self._marks.open(row)
        self._opened.setdefault(action_name, []).append(row is not None)

    def stop(self, action_name: str) -> None:
        stack = self._opened.get(action_name)
        if stack and stack.pop():
            self._marks.close()
        if self._closure_open and (
            action_name == "run_training_batch" or action_name.endswith(".configure_gradient_clipping")
        ):
            self._marks.close("logging")
            self._closure_open = False
        self._inner.stop(action_name)

    def close_all(self) -> None:
        self._marks.close_all()
        self._opened.clear()
        self._closure_open = False

    def summary(self) -> str:
        return str(self._inner.summary())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)


class LayertimeCallback(WindowCallback, Callback):  # type: ignore[misc]
    """Profile optimizer steps ``start_step`` to ``start_step + steps`` of ``Trainer.fit``.

    Steps in the window alternate plain (timed) and traced (rows), plain
    first.  ``json``, ``html``, ``plot``, ``trace``: files to write at the end
    of the window (rank 0); ``store``: keep the run in the run store (True:
    the default database, or a path); ``verbose``: print the table and
    announce each file on rank 0 (default True; False prints nothing).  The
    Run is ``callback.result``; ``callback.skipped`` says why there is none.
    """

    _BASE = Callback
    _HOOKS = (
        "setup", "on_train_batch_start", "on_train_batch_end", "on_validation_start",
        "on_save_checkpoint", "on_train_epoch_end", "on_train_end", "on_exception", "teardown",
    )

    def __init__(self, start_step: int = DEFAULT_START_STEP, steps: int = DEFAULT_STEPS,
                 **kwargs: Any) -> None:
        WindowCallback.__init__(self, start_step, steps, **kwargs)
        self._trainer: Any = None
        self._last_step: int | None = None
        self._wrapper: _RangeProfiler | None = None
        self._saved_profiler: Any = None

    # -- framework-specific parts of the result -------------------------------
    def _rank_zero(self) -> bool:
        return self._trainer is None or bool(self._trainer.is_global_zero)

    def _source(self) -> str:
        return "lightning"

    def _run_meta(self) -> dict[str, Any]:
        trainer = self._trainer
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        precision = str(getattr(trainer, "precision", ""))
        amp = {"bf16-mixed": "bf16", "16-mixed": "fp16"}.get(precision)
        notes = []
        if len(optimizers) > 1:
            notes.append(f"{len(optimizers)} optimizers: update is all of their steps")
        world = int(getattr(trainer, "world_size", 1) or 1)
        if world > 1 and isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy)):
            notes.append(
                f"sharded ({type(trainer.strategy).__name__}, {world} ranks): rows are rank "
                f"{trainer.global_rank}'s; collectives are charged to the layers that cause "
                "them (an FSDP unit's by parameter elements)"
            )
        elif world > 1:
            notes.append(
                f"data-parallel ({type(trainer.strategy).__name__}, {world} ranks): rows are "
                f"rank {trainer.global_rank}'s; DDP's gradient all-reduce is not split per layer "
                "here (its exposed part is unattributed; layertime profile --ddp splits it)"
            )
        return {
            "optimizer": type(optimizers[0]).__name__.lower() if optimizers else "none",
            "amp": amp,
            "warnings": notes,
        }

    # -- Lightning's hooks -------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit" or self.window is not None or self.skipped is not None:
            return
        self._trainer = trainer
        reason = unattributable(trainer.strategy, pl_module, trainer.profiler)
        if reason is not None:
            self.skip(reason)
            return
        self.window = StepWindow(
            pl_module, start_step=self.start_step, steps=self.steps,
            name=self.name or type(pl_module).__name__,
        )

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:
        w = self.window
        if w is None or not w.in_step:
            return
        w.close_phase("logging")
        w.note_micro_batch()
        w.note_input(batch)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        w = self.window
        if w is None or w.done:
            return
        done = int(trainer.global_step)
        if done != self._last_step:  # an optimizer step ended here
            self._last_step = done
            self._uninstall()
            if w.boundary(done):
                self.finish()
                return
            if w.traced:
                self._install(trainer)
        # Until the next batch starts: other callbacks, hooks, loggers, the fetch.
        w.open_phase("logging")

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        # The step is left out: it is traced no further (nor are Lightning's hook calls).
        if self.window is not None:
            self._uninstall()
            self.window.disturb("validation")

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Any) -> None:
        if self.window is not None:
            self._uninstall()
            self.window.disturb("a checkpoint save")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.window is not None:
            self.window.disturb("the end of an epoch")

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._uninstall()
        self.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._uninstall()
        self.finish(report=False)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._uninstall()
            if self.window is not None and not self.window.done:
                self.finish()

    # -- the pass-through profiler, for traced steps only -------------------------
    def _install(self, trainer: Any) -> None:
        self._saved_profiler = trainer.profiler
        self._wrapper = _RangeProfiler(self._saved_profiler, f"[Callback]{self.state_key}.")
        trainer.profiler = self._wrapper

    def _uninstall(self) -> None:
        wrapper, self._wrapper = self._wrapper, None
        if wrapper is None:
            return
        try:
            wrapper.close_all()
        finally:
            if self._trainer is not None and self._trainer.profiler is wrapper:
                self._trainer.profiler = self._saved_profiler
            self._saved_profiler = None
