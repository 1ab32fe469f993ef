"""``torch.profiler`` around one step of a compiled model (part of
:mod:`layertime.measure.compiled.collector`): one range on the compiled wrapper, and per CPU
event the device kernels it launched and the shape of its first input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from layertime.measure.events import (
    MODULE,
    OpEvent,
    from_profiler_indexed,
    launched_kernels,
    own_kernels,
)
from layertime.measure.tracer import ProfilerSession

#: Ops inside AccumulateGrad whose first input is the gradient (its shape names the parameter).
_SHAPED_OPS = frozenset({"aten::copy_", "aten::new_empty_strided", "aten::detach", "aten::clone",
                         "aten::add_", "aten::empty_strided"})


class CompiledTraceSession(ProfilerSession):
    """``torch.profiler`` around one step of a compiled model, like ``TraceSession``.

    Only the compiled wrapper gets a range (``layertime::module::<root>``),
    from a hook on the wrapper, which Dynamo does not trace; the modules inside
    get none (hooks added after compilation would not run in compiled code, or
    would recompile it).  Keeps, per CPU event, the device kernels it launched.
    """

    def __init__(self, wrapper: nn.Module, root: int, device: torch.device) -> None:
        # Shapes tell which parameter an AccumulateGrad after a compiled backward is for.
        super().__init__(device, record_shapes=True)
        self._wrapper = wrapper
        self._label = f"{MODULE}{root}"
        self._handles: list[Any] = []
        self._open: list[Any] = []
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

    def _collect(self) -> list[OpEvent]:
        raw = list(self._prof.events())
        launched = launched_kernels(raw)
        events, index = from_profiler_indexed(raw, launched)
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
            if str(getattr(e, "device_type", "CPU")).endswith("CPU"):
                kernels = launched.get(id(e), []) if launched is not None else own_kernels(e)
                if kernels:
                    self.kernels[new_id] = kernels
        return events
