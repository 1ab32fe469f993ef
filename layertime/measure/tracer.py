"""In-situ tracer: scoped module ranges plus ``torch.profiler`` around one step.

Nothing global is touched: hooks are registered on the user's modules only
while a step is traced and removed in ``finally``; no attribute is stored on
a module; the profiler is the stock ``torch.profiler``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from layertime.measure.events import (
    MODULE,
    STEP,
    KernelSpan,
    OpEvent,
    device_spans,
    from_kineto,
    from_profiler,
    kineto_readable,
)
from layertime.measure.own_ops import split_own_ops
from layertime.modules import ModuleTable


#: torch's lightweight range (what Dynamo uses): a C++ RecordFunction entered from
#: Python directly, not through two dispatcher calls of the ``record_function`` ops
#: (``benchmarks/hook_cost.py`` measures both per module call).  Absent from older
#: torch, where the ops are used.
_FAST_RANGE: Any = getattr(getattr(torch._C, "_profiler", None), "_RecordFunctionFast", None)
#: The class of Kineto's events, whose methods ``from_kineto`` reads.
_KINETO_EVENT: Any = getattr(getattr(torch._C, "_autograd", None), "_KinetoEvent", None)


class _RangeHooks:
    """Forward hooks that open and close a profiler range per module call.

    One pre-hook and one hook per module, each a closure over its label; the
    open ranges are a per-thread stack (a module's forward may run on another
    thread, as in ``nn.DataParallel``), closed innermost first, and the hook
    runs even when the forward raises (``always_call``).  ``fast=False`` uses
    the ``record_function`` ops even where the lightweight range exists.
    """

    def __init__(self, table: ModuleTable, *, fast: bool = True) -> None:
        self._table = table
        self._local = threading.local()
        self._handles: list[Any] = []
        self._fast = fast and _FAST_RANGE is not None

    def _stack(self) -> list[Any]:
        try:
            return self._local.stack  # type: ignore[no-any-return]
        except AttributeError:
            st: list[Any] = []
            self._local.stack = st
            return st

    def install(self) -> None:
        stack = self._stack
        if self._fast:
            fast_range = _FAST_RANGE

            def make(label: str) -> tuple[Any, Any]:
                # A new range object per call: within 0.2 µs of one per module entered
                # again (benchmarks/hook_cost.py; 30 µs a step for GPT-2's 164
                # modules), and safe for a module called inside its own forward or
                # on two threads at once, which a shared object is not.
                def pre(_mod: nn.Module, _args: Any) -> None:
                    rf = fast_range(label)
                    rf.__enter__()
                    stack().append(rf)

                def post(_mod: nn.Module, _args: Any, _out: Any) -> None:
                    st = stack()
                    if st:
                        st.pop().__exit__(None, None, None)

                return pre, post
        else:
            enter = torch.ops.profiler._record_function_enter_new
            exit_ = torch.ops.profiler._record_function_exit._RecordFunction

            def make(label: str) -> tuple[Any, Any]:
                def pre(_mod: nn.Module, _args: Any) -> None:
                    stack().append(enter(label, None))

                def post(_mod: nn.Module, _args: Any, _out: Any) -> None:
                    st = stack()
                    if st:
                        exit_(st.pop())

                return pre, post

        for entry in self._table:
            pre, post = make(f"{MODULE}{entry.index}")
            # Prepended: the range opens before the module's own pre-hooks (FSDP's
            # all-gather, a tensor-parallel layer's input redistribution), so their
            # work is inside it; the closing hook runs after every other hook.
            self._handles.append(entry.module.register_forward_pre_hook(pre, prepend=True))
            self._handles.append(entry.module.register_forward_hook(post, always_call=True))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._local = threading.local()


@contextmanager
def module_ranges(table: ModuleTable) -> Iterator[None]:
    """Wrap every module call in a ``layertime::module::<i>`` range, for this block only."""
    hooks = _RangeHooks(table)
    try:
        hooks.install()
        yield
    finally:
        hooks.remove()


def _activities(device: torch.device) -> list[Any]:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


class StepRange:
    """The ``layertime::step`` range around one traced step, opened and closed by hand
    (a step spans code the profiler's context managers cannot wrap)."""

    def __init__(self) -> None:
        self._handle: Any = None

    @property
    def open(self) -> bool:
        """Whether the range is entered and not yet closed."""
        return self._handle is not None

    def enter(self) -> None:
        self._handle = torch.ops.profiler._record_function_enter_new(STEP, None)

    def exit(self) -> None:
        if self._handle is not None:
            torch.ops.profiler._record_function_exit._RecordFunction(self._handle)
            self._handle = None


class ProfilerSession:
    """``torch.profiler`` around traced steps, with hooks that exist only while it runs.

    The lifecycle is shared; what is hooked and what is kept of the profile
    are a subclass's (:meth:`_install`, :meth:`_remove`, :meth:`_collect`).
    """

    def __init__(self, device: torch.device, *, record_shapes: bool = False) -> None:
        # Kineto logs to stderr at every start and stop unless told not to;
        # the library never prints, so quiet it (only if the user did not choose).
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        self._prof = torch.profiler.profile(
            activities=_activities(device),
            record_shapes=record_shapes,
            with_stack=False,
            profile_memory=False,
        )
        self._step_range = StepRange()
        self.events: list[OpEvent] = []

    @property
    def profiler(self) -> Any:
        """The underlying ``torch.profiler.profile`` (its raw events after ``stop``)."""
        return self._prof

    def _install(self) -> None:
        """Add the hooks that open ranges while the session runs."""

    def _remove(self) -> None:
        """Remove every hook :meth:`_install` added."""

    def _collect(self) -> list[OpEvent]:
        """Keep what the session needs of the stopped profile; the op events."""
        return from_profiler(self._prof.events())

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
        self.events = self._collect()
        return self.events

    def abort(self) -> None:
        """Stop without collecting, for an error mid-step."""
        try:
            self.exit_step()
            self._prof.__exit__(None, None, None)
        finally:
            self._remove()


class TraceSession(ProfilerSession):
    """One ``torch.profiler`` session with module ranges; events after ``stop``.

    Without device activities the events are read straight from Kineto's
    results (:func:`~layertime.measure.events.from_kineto`), not through
    torch's ``FunctionEvent`` tree; with them (CUDA), through the tree, whose
    linking of kernels to ops is used as torch tests it.  ``fast=False`` takes
    the slower ways (``record_function`` ops, the tree) everywhere: the same
    result, for comparing the two.  ``record_shapes`` records ops' input shapes, from
    which the bytes of collectives are read (sharded runs).  Ops a module computes with
    another row's parameters get that row's range
    (:func:`~layertime.measure.own_ops.split_own_ops`).
    """

    def __init__(self, table: ModuleTable, device: torch.device, *, fast: bool = True,
                 record_shapes: bool = False) -> None:
        super().__init__(device, record_shapes=record_shapes)
        self._hooks = _RangeHooks(table, fast=fast)
        self._own_ops = table.own_ops
        self._cpu_only = device.type != "cuda"  # as _activities: no device activities
        self._fast = fast
        #: Device activities (CUDA only), for the device's busy time per step.
        self.kernels: list[KernelSpan] = []

    def _install(self) -> None:
        self._hooks.install()

    def _remove(self) -> None:
        self._hooks.remove()

    def _collect(self) -> list[OpEvent]:
        results = getattr(getattr(self._prof, "profiler", None), "kineto_results", None)
        if self._fast and self._cpu_only and kineto_readable(results, _KINETO_EVENT):
            return split_own_ops(from_kineto(results), self._own_ops)
        raw = list(self._prof.events())
        self.kernels = device_spans(raw)
        return split_own_ops(from_profiler(raw), self._own_ops)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """A step-level phase range (loss, zero_grad, update, backward, data)."""
    with torch.profiler.record_function(f"layertime::phase::{name}"):
        yield


class PhaseMarker:
    """Step-level phase ranges opened in one framework hook and closed in a later one.

    A framework integration cannot wrap a ``with`` block around the code
    between two of its callbacks; it opens a ``layertime::phase::<row>`` range
    in the first and closes it in the second.  Ranges are closed innermost
    first, and ``close_all`` (in ``finally``) leaves none open.
    """

    def __init__(self) -> None:
        self._open: list[tuple[str, Any]] = []

    def open(self, row: str) -> None:
        handle = torch.ops.profiler._record_function_enter_new(f"layertime::phase::{row}", None)
        self._open.append((row, handle))

    def close(self, row: str | None = None) -> None:
        """Close the innermost range (only if it is ``row``, when given)."""
        if not self._open or (row is not None and self._open[-1][0] != row):
            return
        _, handle = self._open.pop()
        torch.ops.profiler._record_function_exit._RecordFunction(handle)

    @property
    def current(self) -> str | None:
        return self._open[-1][0] if self._open else None

    def close_all(self) -> None:
        while self._open:
            self.close()
