"""Lightning's ``PyTorchProfiler`` ranges, read as layertime's own.

With ``record_module_names=True`` (its default) Lightning wraps every module call of the
LightningModule in ``[pl][module]<module class path>: <dotted path>`` and every hook call
in ``[pl][profile]<action>``.  Module ranges give dotted paths directly; hook calls map to
the step rows the live Lightning callback uses (``integrations/lightning.py``): the
dataloader's fetch and the batch transfer are ``data``, ``training_step`` outside the
layers ``loss``, ``optimizer_zero_grad`` ``zero_grad``, ``configure_gradient_clipping``
``clip``, ``lr_scheduler_step`` ``scheduler``, ``backward`` the backward phase, the
optimizer step less the closure it runs ``update``, callbacks and other hooks ``logging``.

A step is one ``run_training_batch`` (forward, loss, zero_grad, backward, update: with a
closure the optimizer step runs them all), from the fetch of its batch to the hooks after
it.  ``ProfilerStep#N`` cannot be the step here: Lightning calls ``profiler.step()`` when
``training_step`` returns, so each of those ranges holds one batch's backward and the next
batch's forward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from layertime.measure.events import PHASE, STEP
from layertime.measure.traces.records import MODULE, RANGE, TraceEvent

PROFILE = "[pl][profile]"
MODULE_RANGE = "[pl][module]"
BATCH = f"{PROFILE}run_training_batch"

#: Lightning hook name -> step row, for a recorded trace and the live callback alike.
_HOOK_ROWS = {
    "optimizer_step": "update", "optimizer_zero_grad": "zero_grad",
    "configure_gradient_clipping": "clip", "lr_scheduler_step": "scheduler",
    "training_step": "loss", "backward": "backward", "batch_to_device": "data",
    "transfer_batch_to_device": "data", "on_before_batch_transfer": "data",
    "on_after_batch_transfer": "data",
}
_HOOK_CALL = re.compile(r"^\[(?:LightningModule|Strategy|LightningDataModule)\][^.]*\.(\w+)$")
_ROOT_CLASS = re.compile(r"^\[LightningModule\]([^.]+)\.")


def is_lightning(events: Sequence[TraceEvent]) -> bool:
    """Whether the trace holds Lightning's per-batch ranges."""
    return any(e.what == RANGE and e.name == BATCH for e in events)


def row_of(action: str) -> str | None:
    """The step row of one of Lightning's actions; None: a container with no row."""
    if action == "optimizer_step":
        return "update"
    if action.startswith("[Callback]"):
        return "logging"
    if action.startswith("[_TrainingEpochLoop]") and action.endswith("_dataloader_next"):
        return "data"
    m = _HOOK_CALL.match(action)
    if m:
        return _HOOK_ROWS.get(m.group(1), "logging")
    if action.startswith("[_EvaluationLoop]") or action == "save_checkpoint":
        return "logging"
    return None


def root_class(events: Sequence[TraceEvent]) -> str:
    """The LightningModule's class, from its hooks' names (``[LightningModule]Cls.hook``)."""
    for e in events:
        if e.what == RANGE and e.name.startswith(PROFILE):
            m = _ROOT_CLASS.match(e.name[len(PROFILE):])
            if m:
                return m.group(1)
    return "LightningModule"


def rewrite(events: list[TraceEvent]) -> list[TraceEvent]:
    """The events with Lightning's ranges as layertime's: module ranges (named by their
    dotted path, ``pid`` and ``tid`` kept), phase ranges, one step range per batch, and a
    ``logging`` range around the closure's own work; ``ProfilerStep#N`` and Lightning's
    container ranges dropped."""
    ranges = sorted((e for e in events if e.what == RANGE and e.name.startswith(PROFILE)),
                    key=lambda e: e.ts)
    out: list[TraceEvent] = _closures(ranges) + _steps(ranges)  # before ranges are renamed
    for e in events:
        if e.what == MODULE:
            continue  # the Python tracer's module calls: Lightning's ranges name the modules
        if e.what != RANGE:
            out.append(e)
            continue
        if e.name.startswith(MODULE_RANGE):
            cls_path, _, path = e.name[len(MODULE_RANGE):].partition(": ")
            e.what, e.name, e.cls = MODULE, path, cls_path.rsplit(".", 1)[-1]
            out.append(e)
        elif e.name.startswith(PROFILE):
            row = row_of(e.name[len(PROFILE):])
            if row is not None:
                e.name = f"{PHASE}{row}"
                out.append(e)
        elif not e.name.startswith("ProfilerStep#"):
            out.append(e)
    return out


def _closures(ranges: Sequence[TraceEvent]) -> list[TraceEvent]:
    """A ``logging`` range from each ``training_step`` to the end of the closure (its
    gradient clipping, else its backward), as the live callback opens one."""
    out = []
    start: TraceEvent | None = None
    last_end = 0.0
    for e in ranges:
        action = e.name[len(PROFILE):]
        if action.endswith(".training_step") and start is None:
            start, last_end = e, e.end
        elif start is not None and (action.endswith(".backward")
                                    or action.endswith(".configure_gradient_clipping")):
            last_end = max(last_end, e.end)
            if action.endswith(".configure_gradient_clipping"):
                out.append(_range(start, f"{PHASE}logging", start.ts, last_end))
                start = None
        elif start is not None and action == "run_training_batch" and e.ts > start.ts:
            out.append(_range(start, f"{PHASE}logging", start.ts, last_end))
            start = None
    if start is not None:
        out.append(_range(start, f"{PHASE}logging", start.ts, last_end))
    return out


def _steps(ranges: Sequence[TraceEvent]) -> list[TraceEvent]:
    """One step range per ``run_training_batch``: from the fetch of its batch (the last
    ``*_dataloader_next`` after the previous batch) to the last hook before the next fetch."""
    batches = [e for e in ranges if e.name == BATCH]
    fetches = [e for e in ranges if e.name.startswith(f"{PROFILE}[_TrainingEpochLoop]")
               and e.name.endswith("_dataloader_next")]
    starts = []
    prev_end = float("-inf")
    for b in batches:
        mine = [f.ts for f in fetches if prev_end <= f.ts < b.ts]
        starts.append(max(mine) if mine else b.ts)
        prev_end = b.end
    out = []
    for i, b in enumerate(batches):
        later = [f.ts for f in fetches if f.ts >= b.end]
        limit = min([starts[i + 1]] if i + 1 < len(batches) else [float("inf")] + later[:1])
        end = max([b.end] + [r.end for r in ranges if b.end <= r.ts and r.end < limit])
        step = _range(b, STEP, starts[i], end)
        step.cls = f"run_training_batch {i + 1}"
        out.append(step)
    return out


def _range(like: TraceEvent, name: str, ts: float, end: float) -> TraceEvent:
    return TraceEvent(RANGE, name, like.pid, like.tid, ts, end)
