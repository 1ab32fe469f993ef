"""The timeline of one sharded step: compute on one stream, collectives on another (pure).

The model (``docs/cost.md``, "Sharded training"):

* compute runs as :class:`Segment` s one after another; a segment starts when the one
  before it has ended and the collectives it ``waits`` for have finished;
* collectives run one at a time on one communication stream, first issued first served,
  each starting when issued and the stream is free: those a segment issues at its start
  are issued when the segment before it ends (for FSDP2's prefetch, a unit's all-gather
  is issued as the unit before it starts computing: one unit ahead), those it issues at its
  end when it ends (a unit's reduce-scatter after its backward);
* the compute stream is idle while it waits; each idle stretch is charged to the
  collectives running during it (by overlap), which is the collective's *exposed* time;
  the rest of it is *hidden* behind compute.  So ``end = compute + exposed``.

Tensor-parallel collectives are not on this stream: they sit on the critical path in
eager TP, so they are part of the segment's length (and wholly exposed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layertime.errors import LayertimeError


@dataclass(frozen=True)
class Segment:
    """A stretch of compute: ``seconds`` long, after the collectives ``waits`` (indices into
    the collectives) end; it issues ``issue_start`` as it starts, ``issue_end`` as it ends."""

    label: str
    seconds: float
    waits: tuple[int, ...] = ()
    issue_start: tuple[int, ...] = ()
    issue_end: tuple[int, ...] = ()


@dataclass(frozen=True)
class Timeline:
    """Where everything ran: per segment its start, per collective its start, end and
    exposed seconds; ``end_s`` is the step."""

    segment_start_s: tuple[float, ...]
    comm_start_s: tuple[float, ...]
    comm_end_s: tuple[float, ...]
    exposed_s: tuple[float, ...]
    compute_s: float
    end_s: float

    @property
    def idle_s(self) -> float:
        """Time the compute stream waited: ``end_s - compute_s``."""
        return self.end_s - self.compute_s


def simulate(segments: Sequence[Segment], comm_s: Sequence[float]) -> Timeline:
    """Run ``segments`` in order with collectives of ``comm_s`` seconds (see the module doc).

    Every collective a segment waits for must have been issued by then (at that segment's
    start at the latest); one never issued runs nowhere and is an error.
    """
    n = len(comm_s)
    start: list[float | None] = [None] * n
    end: list[float | None] = [None] * n
    free = 0.0

    def issue(ops: Sequence[int], at: float) -> None:
        nonlocal free
        for i in ops:
            if not 0 <= i < n:
                raise LayertimeError(f"segment issues collective {i}, of {n}")
            if start[i] is not None:
                raise LayertimeError(f"collective {i} issued twice")
            s = max(at, free)
            start[i], end[i] = s, s + max(0.0, comm_s[i])
            free = s + max(0.0, comm_s[i])

    t = 0.0
    idle: list[tuple[float, float]] = []
    seg_start: list[float] = []
    compute = 0.0
    for seg in segments:
        issue(seg.issue_start, t)
        ready = t
        for i in seg.waits:
            e = end[i]
            if e is None:
                raise LayertimeError(f"segment {seg.label!r} waits for collective {i}, "
                                     "which was never issued")
            ready = max(ready, e)
        if ready > t:
            idle.append((t, ready))
        seg_start.append(ready)
        t = ready + max(0.0, seg.seconds)
        compute += max(0.0, seg.seconds)
        issue(seg.issue_end, t)
    exposed = [0.0] * n
    for i in range(n):
        s, e = start[i], end[i]
        if s is None or e is None:
            continue
        exposed[i] = sum(max(0.0, min(e, b) - max(s, a)) for a, b in idle)
    return Timeline(
        segment_start_s=tuple(seg_start),
        comm_start_s=tuple(s if s is not None else float("nan") for s in start),
        comm_end_s=tuple(e if e is not None else float("nan") for e in end),
        exposed_s=tuple(exposed),
        compute_s=compute,
        end_s=t,
    )
