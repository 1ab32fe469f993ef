"""A window of training steps whose ends are marked by a framework's hooks.

:class:`~layertime.measure.loop.Profiler` marks step ends with ``prof.step()``
in a loop the user wrote; a framework (Lightning, the Hugging Face Trainer)
owns the loop, so its integration calls :meth:`StepWindow.boundary` from the
hook where one optimizer step ends and the next begins.  Steps before
``start_step`` and after the window run untouched: no hooks, no profiler.
Inside the window steps alternate plain (only timed) and traced (module
ranges and ``torch.profiler`` for that step alone), plain first, so the
profiler's overhead is measured beside the rows, as everywhere else.

A step is one optimizer step; with gradient accumulation it holds several
forward/backward passes, and the Run says how many (``micro_batches``).  A
step that the framework interrupted with work of another kind (validation, a
checkpoint, an epoch's end) is left out and said so; the window goes on
until it has ``steps`` kept steps or twice that many have passed.  Such a step
is not traced once it is known to be left out: not at all when the framework
says so before it begins, from that moment when it says so during it.

A framework may have no hook for an exception (the Hugging Face Trainer has
none), so a watched or traced step guards the model's forward: when it raises,
the step is dropped and every hook and the profiler are taken off right then,
before the exception leaves the model (:class:`_ForwardGuard`).  An exception
raised elsewhere (in the backward, the optimizer) is not seen there: the
window's next call (``boundary``, ``close``) takes them off.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.aggregate import aggregate, timeline
from layertime.measure.attribute import STEP_ROWS, StepCharges, attribute_step, split_steps
from layertime.measure.environment import describe
from layertime.measure.parallel.in_loop import LoopSharding
from layertime.measure.tracer import PhaseMarker, TraceSession
from layertime.kinds import KindObserver
from layertime.modules import ModuleTable
from layertime.results.run import Run


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in a batch (a tensor, or nested tuples, lists and dicts)."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for x in obj:
            t = first_tensor(x)
            if t is not None:
                return t
    return None


def main_input(model: nn.Module, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """The model's main input in one call: the argument named by its ``main_input_name``
    (a transformers model's ``input_ids``, ``pixel_values``), else its first positional
    argument, else the keyword naming its ``forward``'s first parameter, else the first
    tensor anywhere.  Not the first key of a batch dict: a collator may put ``labels``
    first (``default_data_collator`` does)."""
    name = getattr(model, "main_input_name", None)
    if isinstance(name, str) and isinstance(kwargs.get(name), torch.Tensor):
        return kwargs[name]
    if args:
        return args[0]
    try:
        first = next(iter(inspect.signature(model.forward).parameters), None)
    except (TypeError, ValueError):
        first = None
    if first is not None and first in kwargs:
        return kwargs[first]
    return (args, kwargs)


class _ForwardGuard:
    """Notices a forward of ``model`` that raises, and calls ``on_raise`` right then.

    A pre-hook notes which exception (if any) was being handled when the call began; an
    always-called forward hook, registered last, sees a new one when the forward raised.
    torch is then running the model's always-called hooks in the order they were
    registered; this one is the last, so the hooks can be removed from inside it (an
    ``OrderedDict`` being iterated may change once its last item is reached).  Where that
    cannot be told (a hook was registered after this one, or torch keeps its hooks in
    another kind of dict) ``on_raise`` is not called from inside torch: the window's next
    call cleans up instead.
    """

    def __init__(self, model: nn.Module, on_raise: Callable[[], None]) -> None:
        self._model = model
        self._on_raise = on_raise
        self._handling: list[BaseException | None] = []
        self._handles: list[Any] = []

    def install(self) -> None:
        self._handles = [
            self._model.register_forward_pre_hook(self._pre),
            self._model.register_forward_hook(self._post, always_call=True),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._handling.clear()

    def _pre(self, _m: nn.Module, _args: Any) -> None:
        self._handling.append(sys.exc_info()[1])

    def _post(self, _m: nn.Module, _args: Any, _out: Any) -> None:
        before = self._handling.pop() if self._handling else None
        now = sys.exc_info()[1]
        if now is None or now is before or not self._handles:
            return  # the forward returned (perhaps called while an exception is handled)
        hooks = self._model._forward_hooks
        if isinstance(hooks, OrderedDict) and next(reversed(hooks), None) == self._handles[1].id:
            self._on_raise()


def check_window(start_step: int, steps: int) -> None:
    """Refuse a window that cannot be measured, with a one-line error."""
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 1:
        raise LayertimeError(
            f"start_step must be an integer >= 1 (the first step is warm-up), not {start_step!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise LayertimeError(
            f"steps must be an integer >= 2 (plain and traced steps alternate), not {steps!r}"
        )


@dataclass
class _Step:
    index: int
    traced: bool
    t0: float = 0.0
    session: TraceSession | None = None
    micro_batches: int = 0
    #: Why the step is left out (validation ran in it, ...); empty: kept.
    disturbed: list[str] = field(default_factory=list)
    guard: _ForwardGuard | None = None


class StepWindow:
    """Record ``steps`` optimizer steps from ``start_step`` on, marked by a framework's hooks.

    ``start_step`` counts optimizer steps completed before the window (at
    least 1: the first step carries one-time set-up).  ``after_backward`` is
    the row for work in no range after a step's last backward (``clip`` where
    the framework clips there and has no hook around it).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        start_step: int,
        steps: int,
        name: str | None = None,
        after_backward: str = "unattributed",
    ) -> None:
        check_window(start_step, steps)
        if after_backward not in STEP_ROWS:
            raise LayertimeError(f"unknown step row {after_backward!r}")
        self.model = model
        self.start_step = start_step
        self.steps = steps
        self.name = name or type(model).__name__
        self.after_backward = after_backward
        self.phases = PhaseMarker()
        self._table: ModuleTable | None = None
        self._device = torch.device("cpu")
        self._dtype = "float32"
        self._current: _Step | None = None
        self._done = False
        self._kept = 0
        self._plain: list[float] = []
        self._traced: list[StepCharges] = []
        self._traced_walls: list[float] = []
        self._micro: list[int] = []
        #: Why steps were left out -> their numbers (optimizer steps, from 1).
        self._dropped: dict[str, list[int]] = {}
        self._input_shape: tuple[int, ...] | None = None
        self._shape_hook: Any = None
        #: The step just before the window, watched for each module's kind (what it
        #: computes: GPT-2's Conv1D is fully connected); never a measured step.
        self._watch: KindObserver | None = None
        self._watch_guard: _ForwardGuard | None = None
        #: A model the framework sharded (FSDP, tensor parallelism): its layout, and the
        #: charging of each traced step's collectives.
        self._sharding = LoopSharding()

    # -- state -------------------------------------------------------------
    @property
    def done(self) -> bool:
        """The window has closed (or was never going to open: see ``close``)."""
        return self._done

    @property
    def in_step(self) -> bool:
        """A step of the window is in progress."""
        return self._current is not None

    @property
    def traced(self) -> bool:
        """The step in progress is traced (hooks and profiler on)."""
        return self._current is not None and self._current.session is not None

    @property
    def profiled_steps(self) -> int:
        return len(self._traced)

    # -- marks from the framework -------------------------------------------
    def boundary(self, done_steps: int, disturbed: Sequence[str] = ()) -> bool:
        """One optimizer step ended and the next begins; ``done_steps`` are complete.

        Ends the step in progress, and begins the next when it is in the
        window; ``disturbed`` says why the next step will be left out (evaluation
        is due in it): then it is not traced.  Returns True when this call closed
        the window.
        """
        if self._done:
            return False
        self._stop_watching()
        if self._current is not None:
            self._end()
        if self._kept >= self.steps or done_steps >= self.start_step + 2 * self.steps:
            self.close()
            return True
        if done_steps >= self.start_step:
            self._begin(done_steps, disturbed)
        elif done_steps == self.start_step - 1 and self._table is None:
            self._watch = KindObserver(self.model).__enter__()
            self._watch_guard = self._guard()
        return False

    def _guard(self) -> _ForwardGuard:
        guard = _ForwardGuard(self.model, self._forward_raised)
        guard.install()
        return guard

    def _forward_raised(self) -> None:
        """The model's forward raised in a watched or traced step: take everything off
        now (the framework may never call again), and leave the step out."""
        try:
            self._stop_watching()
        finally:
            step = self._current
            self._abort()
            if step is not None:
                self._drop(step, "a forward that raised")

    def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        guard, self._watch_guard = self._watch_guard, None
        try:
            if watch is not None:
                watch.__exit__(None, None, None)
                if self._table is None:
                    self._table = ModuleTable(self.model, facts=watch.facts())
        finally:
            if guard is not None:
                guard.remove()

    def note_micro_batch(self) -> None:
        """One forward/backward pass began in the step in progress."""
        if self._current is not None:
            self._current.micro_batches += 1

    def note_input(self, batch: Any) -> None:
        """Take the batch size and sample shape from a batch (its first tensor)."""
        if self._input_shape is None:
            t = first_tensor(batch)
            if t is not None and t.dim() >= 1:
                self._input_shape = tuple(int(d) for d in t.shape)

    def disturb(self, reason: str) -> None:
        """The step in progress also ran other work (``reason``): leave it out, and stop
        tracing it now (what is still to run in it would only be thrown away)."""
        step = self._current
        if step is None:
            return
        if reason not in step.disturbed:
            step.disturbed.append(reason)
        if step.session is not None:
            self._untrace(step)

    def open_phase(self, row: str) -> None:
        """Open a step-level phase range (traced steps only; plain steps stay plain)."""
        if self.traced:
            self.phases.open(row)

    def close_phase(self, row: str | None = None) -> None:
        if self.traced:
            self.phases.close(row)

    def close(self) -> None:
        """Close the window now: discard a step in progress, remove every hook."""
        try:
            self._stop_watching()
            self._abort()
        finally:
            self._done = True

    # -- steps -------------------------------------------------------------
    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _begin(self, index: int, disturbed: Sequence[str] = ()) -> None:
        if self._table is None:
            self._table = ModuleTable(self.model)
            try:
                first = next(self.model.parameters())
                self._device = first.device
                self._dtype = str(first.dtype).replace("torch.", "")
            except StopIteration:
                pass
        if not self._sharding.read_done:
            self._sharding.read(self.model, self._table)
        step = _Step(index=index, traced=self._kept % 2 == 1, disturbed=list(disturbed))
        self._sync()
        if step.traced and not step.disturbed:
            step.session = TraceSession(self._table, self._device,
                                        record_shapes=self._sharding.record_shapes)
            step.session.start()
            if self._input_shape is None:
                self._shape_hook = self.model.register_forward_pre_hook(
                    self._capture_shape, with_kwargs=True
                )
            step.guard = self._guard()  # last: see _ForwardGuard
            self._current = step
            step.t0 = time.perf_counter()
            step.session.enter_step()
        else:
            self._current = step
            step.t0 = time.perf_counter()

    def _capture_shape(self, mod: nn.Module, args: Any, kwargs: Any) -> None:
        self.note_input(main_input(mod, args, kwargs))

    def _untrace(self, step: _Step) -> None:
        """Stop tracing ``step`` (its timing goes on): phases closed, profiler stopped
        without reading it, every hook removed."""
        session, step.session = step.session, None
        guard, step.guard = step.guard, None
        try:
            self.phases.close_all()
        finally:
            try:
                if session is not None:
                    session.abort()
            finally:
                self._remove_shape_hook()
                if guard is not None:
                    guard.remove()

    def _remove_shape_hook(self) -> None:
        if self._shape_hook is not None:
            self._shape_hook.remove()
            self._shape_hook = None

    def _end(self) -> None:
        step, self._current = self._current, None
        assert step is not None
        try:
            self.phases.close_all()
            self._sync()
            wall = time.perf_counter() - step.t0
            charges = None
            if step.session is not None:
                step.session.exit_step()
                events = step.session.stop()
                step.session = None
                groups = split_steps(events)
                if len(groups) == 1 and not step.disturbed:
                    s, members = groups[0]
                    cuda = self._device.type == "cuda"
                    charges = self._sharding.charge(attribute_step(
                        s,
                        members,
                        device_time=cuda,
                        step_wall_s=wall if cuda else None,
                        loop=True,
                        after_backward=self.after_backward,
                    ))
        finally:
            self._untrace(step)
        if step.disturbed:
            for reason in step.disturbed:
                self._drop(step, reason)
            return
        self._kept += 1
        self._micro.append(max(step.micro_batches, 1))
        if step.traced:
            if charges is None:
                return
            self._traced.append(charges)
            self._traced_walls.append(wall)
        else:
            self._plain.append(wall)

    def _drop(self, step: _Step, reason: str) -> None:
        # step.index optimizer steps were done when it began: it is step index + 1.
        self._dropped.setdefault(reason, []).append(step.index + 1)

    def _abort(self) -> None:
        step, self._current = self._current, None
        if step is not None:
            self._untrace(step)
        else:
            try:
                self.phases.close_all()
            finally:
                self._remove_shape_hook()

    # -- result ------------------------------------------------------------
    def notes(self) -> list[str]:
        """What a reader must know about the steps: accumulation, steps left out."""
        out = []
        micro = sorted(set(self._micro))
        if micro and micro[-1] > 1:
            counts = " or ".join(str(m) for m in micro)
            out.append(
                f"gradient accumulation: a step is one optimizer step of {counts} micro-batches "
                "(forward and backward run that many times); rows are per optimizer step"
            )
        for reason, numbers in sorted(self._dropped.items()):
            which = ", ".join(str(n) for n in numbers)
            out.append(f"{len(numbers)} step(s) left out of the window: {reason} ran in them "
                       f"(step{'s' if len(numbers) > 1 else ''} {which})")
        return out

    def result(
        self,
        *,
        optimizer: str = "none",
        amp: str | None = None,
        warnings: Sequence[str] = (),
    ) -> Run:
        """The window's Run; needs at least one traced step."""
        if not self._traced or self._table is None:
            raise LayertimeError(
                f"no profiled step: the window starts after {self.start_step} optimizer step(s) "
                f"and traces every second step of {self.steps}"
            )
        layers, phases, spread, samples = aggregate(self._table, self._traced)
        shape = self._input_shape or ()
        cuda = self._device.type == "cuda"
        run = Run(
            model=self.name,
            device=str(self._device),
            batch_size=int(shape[0]) if shape else 0,
            input_shape=tuple(int(d) for d in shape[1:]),
            dtype=self._dtype,
            optimizer=optimizer,
            steps=len(self._traced),
            warmup_steps=self.start_step,
            step_samples_s=tuple(self._plain),
            profiled_step_samples_s=samples,
            traced_step_samples_s=tuple(self._traced_walls) if cuda else (),
            layers=layers,
            phases=phases,
            environment=describe(self._device),
            timing="cuda-kernel-time" if cuda else "cpu-self-time",
            amp=amp,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            warnings=tuple(self.notes()) + tuple(warnings),
            phase_spread_s=spread,
            timeline=timeline(self._table, self._traced),
            micro_batches=max(self._micro) if self._micro else 1,
        )
        return self._sharding.finish(run, self._table, self._traced)
