"""What a step holds that layertime can name, by storage address: parameters, buffers,
gradients, optimizer state, the batch; and each layer's parameter, gradient and
optimizer-state bytes (a DTensor's by its local shard: what this rank holds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layertime.modules import ModuleTable


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (what this rank holds), else the tensor."""
    local = getattr(t, "_local_tensor", None)
    return local if isinstance(local, torch.Tensor) else t


def storage_of(t: torch.Tensor) -> Any:
    """The untyped storage of a tensor's data (a DTensor's local shard's), or None."""
    try:
        return local_tensor(t).untyped_storage()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return None


def local_nbytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements on this rank (a DTensor's local shard)."""
    local = local_tensor(t)
    return int(local.numel()) * int(local.element_size())


@dataclass(frozen=True)
class Held:
    """A tensor layertime can name: its storage address and bytes, its category
    (``parameters``, ``buffers``, ``gradients``, ``optimizer_state``, ``inputs``) and
    the layer it belongs to."""

    ptr: int
    nbytes: int
    category: str
    index: int | None


def _owners(table: ModuleTable) -> dict[int, int]:
    """id(parameter) -> index of its first owner (as ModuleTable counts parameters)."""
    owners: dict[int, int] = {}
    for e in table:
        for p in e.module.parameters(recurse=False):
            owners.setdefault(id(p), e.index)
    return owners


def _ptr(t: torch.Tensor) -> int | None:
    st = storage_of(t)
    return int(st.data_ptr()) if st is not None else None


def optimizer_state(optimizer: Any) -> dict[int, list[torch.Tensor]]:
    """The optimizer's state tensors by the storage address of their parameter.  By
    address, not by object: a framework may put another parameter object over the same
    storage after the optimizer was made (FSDP2's root unit does at its lazy init)."""
    state = getattr(optimizer, "state", None)
    out: dict[int, list[torch.Tensor]] = {}
    if state is None:
        return out
    for group in getattr(optimizer, "param_groups", ()):
        for p in group.get("params", ()):
            ptr = _ptr(p) if isinstance(p, torch.Tensor) else None
            if ptr is not None:
                out.setdefault(ptr, []).extend(
                    v for v in state.get(p, {}).values() if isinstance(v, torch.Tensor))
    return out


def held_tensors(model: nn.Module, table: ModuleTable, optimizer: Any,
                 inputs: Sequence[torch.Tensor] = ()) -> list[Held]:
    """Every tensor of the step layertime can name, by storage."""
    owners = _owners(table)
    out: list[Held] = []

    def add(t: Any, category: str, index: int | None) -> None:
        if not isinstance(t, torch.Tensor):
            return
        st = storage_of(t)
        if st is not None and st.nbytes():
            out.append(Held(int(st.data_ptr()), int(st.nbytes()), category, index))

    params = list(model.parameters())
    for p in params:
        add(p, "parameters", owners.get(id(p)))
        if p.grad is not None:
            add(p.grad, "gradients", owners.get(id(p)))
    for b in model.buffers():
        add(b, "buffers", None)
    state = optimizer_state(optimizer)
    for p in params:
        for v in state.get(_ptr(p) or 0, ()):
            add(v, "optimizer_state", owners.get(id(p)))
    for t in inputs:
        add(t, "inputs", None)
    return out


@dataclass(frozen=True)
class LayerMemory:
    """One layer's memory in the measured step."""

    saved_bytes: int = 0
    params_bytes: int = 0
    grads_bytes: int = 0
    optimizer_state_bytes: int = 0
    #: Whether a checkpoint's kept inputs were charged to it.
    checkpoint: bool = False


def layer_bytes(model: nn.Module, table: ModuleTable, optimizer: Any) -> dict[int, LayerMemory]:
    """Parameter, gradient and optimizer-state bytes per layer (its own parameters, at
    their first owner; a DTensor's local shard)."""
    owners = _owners(table)
    sums: dict[int, list[int]] = {}
    state = optimizer_state(optimizer)
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen or id(p) not in owners:
            continue
        seen.add(id(p))
        acc = sums.setdefault(owners[id(p)], [0, 0, 0])
        acc[0] += local_nbytes(p)
        if p.grad is not None:
            acc[1] += local_nbytes(p.grad)
        acc[2] += sum(local_nbytes(v) for v in state.get(_ptr(p) or 0, ()))
    return {i: LayerMemory(0, a, b, c) for i, (a, b, c) in sums.items()}
