"""The saved-tensor hooks of the memory step: every storage autograd saves for backward,
once, with the modules that saved it; activation checkpointing's kept inputs charged to
the module it checkpoints (see the package's doc)."""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layertime.measure.memory.held import storage_of
from layertime.modules import ModuleTable

#: The file of torch's activation checkpointing, whose frames call the saved-tensor hook
#: when it keeps a checkpoint's inputs.
_CHECKPOINT_FILE = os.path.join("torch", "utils", "checkpoint.py")


@dataclass
class Saved:
    """One storage saved for backward: its address and bytes, who saved it, whether
    it is a checkpoint's kept input."""

    ptr: int
    nbytes: int
    savers: list[int | None]
    checkpoint: bool = False


class SavedRecorder:
    """The saved-tensor hooks and the module stack they read, for one step.

    :meth:`install` adds a pre/post forward hook to every module (a per-thread stack
    of module indices) and pushes the saved-tensor hooks; :meth:`remove` undoes both.
    Saves made inside backward (a reentrant checkpoint's recompute, double backward)
    are not counted: they are no memory of the forward.
    """

    def __init__(self, table: ModuleTable) -> None:
        self._table = table
        self._index = {id(e.module): e.index for e in table}
        self._local = threading.local()
        self._handles: list[Any] = []
        self._hooks: Any = None
        #: Storage addresses of parameters and buffers (never saved activations).
        self.held: set[int] = set()
        #: (storage identity, address) -> what was saved.
        self.saved: dict[tuple[int, int], Saved] = {}

    def _stack(self) -> list[int]:
        try:
            return self._local.stack  # type: ignore[no-any-return]
        except AttributeError:
            st: list[int] = []
            self._local.stack = st
            return st

    def install(self, model: nn.Module) -> None:
        self.held = set()
        for t in [*model.parameters(), *model.buffers()]:
            st = storage_of(t)
            if st is not None:
                self.held.add(int(st.data_ptr()))
        stack = self._stack

        def make(index: int) -> tuple[Any, Any]:
            def pre(_m: nn.Module, _a: Any) -> None:
                stack().append(index)

            def post(_m: nn.Module, _a: Any, _o: Any) -> None:
                st = stack()
                if st:
                    st.pop()

            return pre, post

        try:
            for entry in self._table:
                pre, post = make(entry.index)
                self._handles.append(entry.module.register_forward_pre_hook(pre))
                self._handles.append(entry.module.register_forward_hook(post, always_call=True))
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
            self._hooks.__enter__()
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        hooks, self._hooks = self._hooks, None
        try:
            if hooks is not None:
                hooks.__exit__(None, None, None)
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._local = threading.local()

    def _checkpointed(self) -> tuple[bool, int | None]:
        """Whether the save being packed is a checkpoint keeping its inputs (the hook's
        caller is torch's checkpoint code), and the module it checkpoints, if one."""
        try:
            frame = sys._getframe(2)  # 0: this method, 1: the hook, 2: its caller
        except ValueError:  # called from C++ with no Python caller
            return False, None
        if not frame.f_code.co_filename.endswith(_CHECKPOINT_FILE):
            return False, None
        for _ in range(4):
            if frame is None:
                break
            fn = frame.f_locals.get("fn", frame.f_locals.get("function"))
            if fn is not None:
                target = getattr(fn, "__self__", fn)
                return True, self._index.get(id(target))
            frame = frame.f_back  # type: ignore[assignment]
        return True, None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        packed = t.detach()  # the graph must not hold the tensor itself (a cycle)
        if torch._C._current_autograd_node() is not None:
            return packed  # a save inside backward
        if isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter):
            return packed
        st = storage_of(t)
        if st is None:
            return packed
        nbytes = int(st.nbytes())
        ptr = int(st.data_ptr())
        if nbytes == 0 or ptr in self.held:
            return packed
        checkpoint, target = self._checkpointed()
        stack = self._stack()
        saver = target if target is not None else (stack[-1] if stack else None)
        key = (int(st._cdata), ptr)
        rec = self.saved.get(key)
        if rec is None:
            self.saved[key] = Saved(ptr, nbytes, [saver], checkpoint)
        else:
            if saver not in rec.savers:
                rec.savers.append(saver)
            rec.checkpoint = rec.checkpoint or checkpoint
        return packed


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t
