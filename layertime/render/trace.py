"""A Chrome trace-event JSON of a run's traced steps (open in Perfetto or chrome://tracing).

One process per run; one track (thread) per phase: data, zero_grad, forward,
loss, backward, update, plus a ``steps`` track with one slice per traced
step.  Each attributed (row, phase) of each step is one complete event
(``ph: "X"``) named by its layer, so a layer's backward slice sits on the
backward track under the layer's own name.  ``ts``/``dur`` are microseconds;
the steps are laid end to end in run order.  ``args`` carry the row's self
time (what the row is charged, which can be less than the slice's span: the
slice spans its first to its last op), kind and type.

Chrome's format requires slices on one track to nest properly.  A container's
self-time slice encloses its children, which is fine; two slices that overlap
without nesting (interleaved backward ops of two layers) would be dropped or
mangled by viewers, so such a slice moves to an extra lane of its phase
(``backward · 2``) instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layertime.errors import LayertimeError
from layertime.files import write_text_atomic
from layertime.results.run import Run, Slice

#: Tracks in display order; a phase not in this list goes after them.
PHASE_ORDER: tuple[str, ...] = (
    "data", "zero_grad", "forward", "loss", "backward", "clip", "update", "scheduler", "logging"
)
#: The category of the per-row slices (the steps track uses "step").
ROW_CATEGORY = "layertime.row"
STEP_CATEGORY = "layertime.step"
_LANE_TID_STRIDE = 100


def _us(seconds: float) -> float:
    """Seconds to microseconds, rounded to the nanosecond."""
    return round(seconds * 1e6, 3)


def _lanes(slices: Sequence[tuple[float, float, int]]) -> dict[int, int]:
    """A lane for each slice so that slices in one lane nest or are disjoint.

    ``slices`` are ``(start_us, end_us, id)``; returns id -> lane (0 first).
    """
    order = sorted(slices, key=lambda t: (t[0], -t[1], t[2]))
    stacks: list[list[float]] = []  # per lane: the ends of the open (enclosing) slices
    out: dict[int, int] = {}
    for start, end, sid in order:
        for lane, stack in enumerate(stacks):
            while stack and stack[-1] <= start:
                stack.pop()
            if not stack or end <= stack[-1]:
                stack.append(end)
                out[sid] = lane
                break
        else:
            stacks.append([end])
            out[sid] = len(stacks) - 1
    return out


def trace_events(run: Run, *, pid: int = 1, label: str | None = None) -> dict[str, Any]:
    """The run's timeline as a trace-event JSON object (``{"traceEvents": [...]}``)."""
    if not run.timeline:
        raise LayertimeError(
            "this run has no timeline to trace (it was saved before timelines were kept, "
            "or no step was traced); profile it again"
        )
    samples = run.profiled_step_samples_s
    steps = sorted({sl.step for sl in run.timeline})
    # Lay the traced steps end to end: each starts where the previous one ended.
    offset: dict[int, float] = {}
    t = 0.0
    for i in steps:
        offset[i] = t
        length = samples[i] if i < len(samples) else max(
            sl.end_s for sl in run.timeline if sl.step == i)
        t += length
    name = label or f"layertime: {run.model} · batch {run.batch_size} · {run.device}"
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": pid, "tid": 0, "name": "process_name", "args": {"name": name}},
        {"ph": "M", "pid": pid, "tid": 0, "name": "process_sort_index",
         "args": {"sort_index": pid}},
    ]
    slices, tracks = _slice_events(run, offset, pid)
    events += slices
    for i in steps:
        length = samples[i] if i < len(samples) else 0.0
        events.append({
            "ph": "X", "cat": STEP_CATEGORY, "pid": pid, "tid": 1, "name": f"step {i}",
            "ts": _us(offset[i]), "dur": _us(length),
            "args": {"step": i, "profiled_step_ms": round(length * 1e3, 6)},
        })
    for tid, tname in sorted(tracks.items()):
        events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
                       "args": {"name": tname}})
        events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index",
                       "args": {"sort_index": tid}})
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "layertime",
            "model": run.model,
            "batch_size": run.batch_size,
            "device": run.device,
            "timing": run.timing,
            "timeline": "CPU; each slice spans the first to the last op charged to its row",
            "traced_steps": len(steps),
            "headline": run.headline(),
        },
    }


def _slice_events(
    run: Run, offset: dict[int, float], pid: int
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """One complete event per slice, on a track per phase (more lanes where slices of a
    phase overlap without nesting); returns the events and the tracks' names by tid."""
    kinds = {r.name: (r.kind, r.type) for r in run.layers}
    step_kinds = {"loss": "loss", "zero_grad": "step", "data": "step", "update": "step"}
    phases = [p for p in PHASE_ORDER if any(sl.phase == p for sl in run.timeline)]
    phases += sorted({sl.phase for sl in run.timeline} - set(phases))
    base_tid = {p: 2 + i for i, p in enumerate(phases)}  # tid 1 is the steps track
    rows: list[tuple[Slice, float, float]] = []
    for sl in run.timeline:
        start = _us(offset[sl.step] + sl.start_s)
        end = max(start, _us(offset[sl.step] + sl.end_s))
        rows.append((sl, start, end))
    lane_of: dict[int, int] = {}
    for p in phases:
        mine = [(s, e, i) for i, (sl, s, e) in enumerate(rows) if sl.phase == p]
        lane_of.update(_lanes(mine))
    # Enclosing slices first at equal start times: viewers nest in input order.
    order = sorted(range(len(rows)), key=lambda i: (rows[i][1], -(rows[i][2] - rows[i][1]), i))
    events: list[dict[str, Any]] = []
    tracks: dict[int, str] = {1: "steps"}
    for i in order:
        sl, start, end = rows[i]
        lane = lane_of[i]
        tid = base_tid[sl.phase] + lane * _LANE_TID_STRIDE
        tracks.setdefault(tid, sl.phase if lane == 0 else f"{sl.phase} · {lane + 1}")
        if sl.name.startswith("(") and sl.name.endswith(")"):
            kind, typ = step_kinds.get(sl.phase, "step"), ""
        else:
            kind, typ = kinds.get(sl.name, ("other", ""))
        events.append({
            "ph": "X", "cat": ROW_CATEGORY, "pid": pid, "tid": tid,
            "name": sl.name or "(model)",
            "ts": start, "dur": round(end - start, 3),
            "args": {"layer": sl.name, "phase": sl.phase, "step": sl.step, "kind": kind,
                     "type": typ, "self_ms": round(sl.self_s * 1e3, 6),
                     "span_ms": round((end - start) / 1e3, 6)},
        })
    return events, tracks


def trace_json(runs: Run | Sequence[Run], labels: Sequence[str] | None = None) -> str:
    """One or more runs as a trace-event JSON document (one pid per run)."""
    runs = [runs] if isinstance(runs, Run) else list(runs)
    events: list[dict[str, Any]] = []
    other: dict[str, Any] = {}
    for i, run in enumerate(runs):
        t = trace_events(run, pid=i + 1, label=labels[i] if labels else None)
        events.extend(t["traceEvents"])
        other = other or t["otherData"]
    doc = {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def write_trace(runs: Run | Sequence[Run], path: str | Path,
                labels: Sequence[str] | None = None) -> Path:
    """Write the trace atomically (a temporary file, then a rename)."""
    p = Path(path)
    write_text_atomic(p, trace_json(runs, labels) + "\n")
    return p
