"""Hugging Face ``Trainer``: a callback that profiles a window of optimizer steps.

::

    from layertime.integrations.hf import LayertimeTrainerCallback
    trainer = Trainer(model, args, train_dataset=ds,
                      callbacks=[LayertimeTrainerCallback(start_step=20, steps=10)])

A step is one optimizer step, from one ``on_step_end`` to the next.  The
Trainer calls its callbacks between the parts of a step, so the callback
marks them with profiler ranges, in traced steps only:

* ``logging``: from ``on_step_end`` to the next ``on_step_begin``: logging,
  evaluation and checkpoint hooks, other callbacks, and the Trainer's batch
  bookkeeping (except the DataLoader's fetch, which is ``data``);
* ``data``: the DataLoader's fetch (torch's own range around ``next()``), and
  the work before each forward (moving the batch to the device);
* the model's layers, and ``loss``: work between a forward and its backward
  (with a custom ``compute_loss``; a model that computes its loss in its own
  ``forward`` has it in the ``(model)`` row or its loss module);
* ``clip``: from the last backward to ``on_pre_optimizer_step``, where the
  Trainer clips gradients (``max_grad_norm``, on by default) after a little
  loss bookkeeping; without clipping that time is ``logging``;
* ``update``: from ``on_pre_optimizer_step`` to ``on_optimizer_step`` (with a
  GradScaler, its unscale, step and update too);
* ``scheduler``: from ``on_optimizer_step`` to ``on_step_end``: the LR
  scheduler's step and ``model.zero_grad()`` (which sets gradients to None:
  no ops, so ``zero_grad`` stays 0 under the Trainer).

A step in which the Trainer evaluates or saves a checkpoint is left out of the
window; it is not traced when the Trainer's flags announce it at the step's
start, and tracing stops at the first evaluation batch otherwise.  The Trainer
has no hook for an exception: when the model's forward raises in a traced step,
its hooks and the profiler are taken off before the exception leaves the model
(``measure/window.py``); an exception raised elsewhere in a traced step is
cleaned up when this callback's next training begins.  A second training with
this callback, after one that raised, gets a window of its own.
"""

from __future__ import annotations

from typing import Any

from layertime.errors import MissingExtra

try:
    from transformers import TrainerCallback
except ImportError:
    raise MissingExtra(
        "layertime.integrations.hf needs Hugging Face transformers (and accelerate): "
        "pip install 'layertime[hf]'"
    ) from None

from layertime.integrations._common import (
    DEFAULT_START_STEP,
    DEFAULT_STEPS,
    WindowCallback,
    compiled_reason,
)
from layertime.measure.window import StepWindow

__all__ = ["LayertimeTrainerCallback", "unattributable"]


def _value(x: Any) -> str:
    return str(getattr(x, "value", x))


def unattributable(args: Any, model: Any = None) -> str | None:
    """Why layertime cannot attribute training with these ``TrainingArguments`` (one line)."""
    tail = ("layertime attributes single-device, DDP and FSDP training only, so it profiles "
            "nothing here")
    if getattr(args, "deepspeed", None):
        return ("DeepSpeed (TrainingArguments.deepspeed) runs the model and optimizer in its "
                f"own engine (ZeRO partitions gradients and optimizer state); {tail}")
    if getattr(args, "torch_compile", False):
        return ("torch.compile (TrainingArguments.torch_compile): module hooks do not run inside "
                "compiled graphs, so layers cannot be timed; profile without it")
    mode = _value(getattr(args, "parallel_mode", "not_parallel"))
    if mode == "not_distributed":
        return ("torch.nn.DataParallel (several GPUs, one process) runs the replicas' layers "
                f"in threads at once; {tail}; launch with torchrun for DDP")
    if mode == "tpu":
        return f"XLA compiles the step into graphs: no op runs inside the module ranges; {tail}"
    if mode == "sagemaker_model_parallel":
        return f"SageMaker model parallelism splits layers across devices; {tail}"
    return compiled_reason(model)


class LayertimeTrainerCallback(WindowCallback, TrainerCallback):  # type: ignore[misc]
    """Profile optimizer steps ``start_step`` to ``start_step + steps`` of ``Trainer.train``.

    Steps in the window alternate plain (timed) and traced (rows), plain
    first.  ``json``, ``html``, ``plot``, ``trace``: files to write at the end
    of the window (main process); ``store``: keep the run in the run store
    (True: the default database, or a path); ``verbose``: print the table
    and announce each file on the main process (default True; False prints
    nothing).  The Run is ``callback.result``; ``callback.skipped`` says why
    there is none.
    """

    _BASE = TrainerCallback
    _HOOKS = (
        "on_train_begin", "on_step_begin", "on_substep_end", "on_pre_optimizer_step",
        "on_optimizer_step", "on_step_end", "on_prediction_step", "on_evaluate", "on_save",
        "on_epoch_end", "on_train_end",
    )

    def __init__(self, start_step: int = DEFAULT_START_STEP, steps: int = DEFAULT_STEPS,
                 **kwargs: Any) -> None:
        WindowCallback.__init__(self, start_step, steps, **kwargs)
        self._args: Any = None
        self._main = True
        self._optimizer: Any = None

    # -- framework-specific parts of the result -------------------------------
    def _rank_zero(self) -> bool:
        return self._main

    def _source(self) -> str:
        return "hf"

    def _run_meta(self) -> dict[str, Any]:
        args = self._args
        opt = getattr(self._optimizer, "optimizer", self._optimizer)  # accelerate wraps it
        amp = "bf16" if getattr(args, "bf16", False) else "fp16" if getattr(args, "fp16", False) \
            else None
        notes = []
        world = int(getattr(args, "world_size", 1) or 1)
        fsdp = getattr(args, "fsdp", None)
        if world > 1 and fsdp and fsdp not in ("", [], "no", False):
            notes.append(
                f"sharded (FSDP through accelerate, {world} ranks): rows are rank "
                f"{args.process_index}'s; each FSDP unit's collectives are charged to its "
                "layers by parameter elements"
            )
        elif world > 1:
            notes.append(
                f"data-parallel (DDP, {world} ranks): rows are rank {args.process_index}'s; "
                "DDP's gradient all-reduce is not split per layer here (its exposed part is "
                "unattributed; layertime profile --ddp splits it)"
            )
        return {
            "optimizer": type(opt).__name__.lower() if opt is not None else "none",
            "amp": amp,
            "warnings": notes,
        }

    # -- the Trainer's hooks -------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if self.skipped is not None:
            return
        if self.window is not None:
            # The window of an earlier training that never ended (it raised: the
            # Trainer has no hook for that): whatever it left is taken off, and this
            # training gets a window of its own.
            self.window.close()
            self.window = None
        self._args = args
        self._main = bool(getattr(state, "is_world_process_zero", True))
        self._optimizer = optimizer
        reason = unattributable(args, model)
        if reason is None and model is None:
            reason = "the Trainer passed no model to its callbacks"
        if reason is not None:
            self.skip(reason)
            return
        clip = (getattr(args, "max_grad_norm", 0.0) or 0.0) > 0
        self.window = StepWindow(
            model, start_step=self.start_step, steps=self.steps,
            name=self.name or type(model).__name__,
            after_backward="clip" if clip else "logging",
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        w = self.window
        if w is None or w.done:
            return
        w.close_phase("scheduler")
        # What the Trainer does after this hook, in the next step: the flow callback
        # (first in line) has set these already, so that step is not traced at all.
        due = [reason for flag, reason in (("should_evaluate", "evaluation"),
                                           ("should_save", "a checkpoint save"))
               if getattr(control, flag, False)]
        if w.boundary(int(state.global_step), due):
            self.finish()
            return
        w.open_phase("logging")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        w = self.window
        if w is not None and w.in_step:
            w.close_phase("logging")
            w.note_micro_batch()

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.window is not None:
            self.window.note_micro_batch()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.window is not None:
            self.window.open_phase("update")

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        w = self.window
        if w is not None:
            w.close_phase("update")
            w.open_phase("scheduler")

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Each evaluation batch: evaluation that no flag announced stops tracing here.
        if self.window is not None:
            self.window.disturb("evaluation")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.window is not None:
            self.window.disturb("evaluation")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.window is not None:
            self.window.disturb("a checkpoint save")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.window is not None:
            self.window.disturb("the end of an epoch")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.finish()
