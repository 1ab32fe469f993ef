"""The allocator's events of one profile, by block address, and the live blocks of a step
built from them (see the package's doc)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from layertime.measure.memory.held import Held


@dataclass(frozen=True)
class Allocation:
    """One allocation (``delta`` > 0) or free (< 0) of the allocator, µs on the
    profile's clock (that of :class:`OpEvent`), with the allocator's own total after
    it (CUDA: the caching allocator's allocated bytes; CPU: not used)."""

    t_us: float
    ptr: int
    delta: int
    total: int


def allocations(results: Any, device: torch.device) -> list[Allocation] | None:
    """The allocator's events of one profile on ``device``, in time order, from torch's
    event tree (which carries each block's address); None when this torch has none."""
    tree_of = getattr(results, "experimental_event_tree", None)
    if tree_of is None:
        return None
    start0 = results.trace_start_ns()
    want = device.type
    out: list[Allocation] = []
    stack = list(tree_of())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        f = node.extra_fields
        if not type(f).__name__.endswith("Allocation"):
            continue
        dev = getattr(f, "device", None)
        if dev is not None and getattr(dev, "type", want) != want:
            continue
        out.append(Allocation((node.start_time_ns - start0) / 1000.0, int(f.ptr),
                              int(f.alloc_size), int(f.total_allocated)))
    out.sort(key=lambda a: a.t_us)
    return out


@dataclass
class Block:
    """One live interval of an allocator block: its address, bytes, from and until."""

    ptr: int
    nbytes: int
    start_us: float
    end_us: float = float("inf")


def live_blocks(allocs: Sequence[Allocation], start_us: float, end_us: float,
                held: Sequence[Held]) -> tuple[list[Block], list[tuple[float, int]]]:
    """The blocks of the step ``[start_us, end_us]`` and the live bytes after each event.

    Live at the start: the tensors layertime can name (``held``) and the blocks the
    events before the step allocated and did not free.  A free of a block the events
    never saw (allocated before the session) is ignored: it was never counted.
    """
    live: dict[int, Block] = {}
    for a in allocs:
        if a.t_us >= start_us:
            break
        if a.delta > 0:
            live[a.ptr] = Block(a.ptr, a.delta, -1.0)
        else:
            live.pop(a.ptr, None)
    for h in held:
        live.setdefault(h.ptr, Block(h.ptr, h.nbytes, -1.0))
    blocks = list(live.values())
    total = sum(b.nbytes for b in blocks)
    curve = [(start_us, total)]
    for a in allocs:
        if a.t_us < start_us:
            continue
        if a.t_us > end_us:
            break
        if a.delta > 0:
            old = live.pop(a.ptr, None)
            if old is not None:  # a free the events missed
                old.end_us = a.t_us
                total -= old.nbytes
            b = Block(a.ptr, a.delta, a.t_us)
            live[a.ptr] = b
            blocks.append(b)
            total += a.delta
        else:
            old = live.pop(a.ptr, None)
            if old is None:
                continue
            old.end_us = a.t_us
            total -= old.nbytes
        curve.append((a.t_us, total))
    return blocks, curve
