"""``torch.profiler`` around one step of a compiled model (part of
:mod:`layertime.measure.compiled`): one range on the compiled wrapper, and per CPU
event the device kernels it launched and the shape of its first input."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from layertime.measure.events import MODULE, OpEvent, from_profiler_indexed
from layertime.measure.tracer import StepRange

#: Ops inside AccumulateGrad whose first input is the gradient (its shape names the parameter).
_SHAPED_OPS = frozenset({"aten::copy_", "aten::new_empty_strided", "aten::detach", "aten::clone",
                         "aten::add_", "aten::empty_strided"})


class CompiledTraceSession:
    """``torch.profiler`` around one step of a compiled model, like ``TraceSession``.

    Only the compiled wrapper gets a range (``layertime::module::<root>``),
    from a hook on the wrapper, which Dynamo does not trace; the modules inside
    get none (hooks added after compilation would not run in compiled code, or
    would recompile it).  Keeps, per CPU event, the device kernels it launched.
    """

    def __init__(self, wrapper: nn.Module, root: int, device: torch.device) -> None:
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        self._wrapper = wrapper
        self._label = f"{MODULE}{root}"
        self._handles: list[Any] = []
        self._open: list[Any] = []
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        # Shapes tell which parameter an AccumulateGrad after a compiled backward is for.
        self._prof = torch.profiler.profile(activities=acts, record_shapes=True)
        self._step_range = StepRange()
        self.events: list[OpEvent] = []
        self.kernels: dict[int, list[tuple[str, float]]] = {}
        self.shapes: dict[int, tuple[int, ...]] = {}

    def _install(self) -> None:
        enter = torch.ops.profiler._record_function_enter_new
        exit_ = torch.ops.profiler._record_function_exit._RecordFunction

        def pre(_m: nn.Module, _a: Any) -> None:
            self._open.append(enter(self._label, None))

        def post(_m: nn.Module, _a: Any, _o: Any) -> None:
            if self._open:
                exit_(self._open.pop())

        self._handles.append(self._wrapper.register_forward_pre_hook(pre))
        self._handles.append(self._wrapper.register_forward_hook(post, always_call=True))

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._open.clear()

    def start(self) -> None:
        self._install()
        try:
            self._prof.__enter__()
        except BaseException:
            self._remove()
            raise

    def enter_step(self) -> None:
        self._step_range.enter()

    def exit_step(self) -> None:
        self._step_range.exit()

    def stop(self) -> list[OpEvent]:
        try:
            self.exit_step()
            self._prof.__exit__(None, None, None)
        finally:
            self._remove()
        raw = list(self._prof.events())
        self.events, index = from_profiler_indexed(raw)
        for e in raw:
            # Keyed like the OpEvents: the ids from_profiler gave (profiler ids
            # are not unique on CUDA).
            new_id = index.get(id(e))
            if new_id is None:
                continue
            if e.name in _SHAPED_OPS:
                first = next((s for s in (getattr(e, "input_shapes", None) or ()) if s), None)
                if first:
                    self.shapes[new_id] = tuple(int(d) for d in first)
            ks = getattr(e, "kernels", None)
            if ks and str(getattr(e, "device_type", "CPU")).endswith("CPU"):
                # Less a range's GPU-side mirror (Kineto's annotation, same name).
                self.kernels[new_id] = [
                    (str(getattr(k, "name", "")), float(getattr(k, "duration", 0.0) or 0.0))
                    for k in ks
                    if str(getattr(k, "name", "")) != str(e.name)
                ]
        return self.events

    def abort(self) -> None:
        try:
            self.exit_step()
            self._prof.__exit__(None, None, None)
        finally:
            self._remove()
