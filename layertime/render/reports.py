"""Which report stored runs make (``layertime report ID...``): one run or sweep, a
comparison of profiles, or a profile joined with a cost estimate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from layertime.errors import LayertimeError
from layertime.render.views import compare_view
from layertime.results.bench import BenchResult
from layertime.results.cost.estimate import CostResult
from layertime.results.run import Run
from layertime.results.stored import StoredRun
from layertime.results.sweep import SweepSummary


@dataclass(frozen=True)
class Report:
    """What to draw (a typed result, or a ready view), with what, and the profiles a trace
    can be made of (label, run)."""

    subject: Any
    options: dict[str, Any] = field(default_factory=dict)
    traced: tuple[tuple[str, Run], ...] = ()


def run_label(run_id: int, run: Run) -> str:
    """How a stored profile is named in comparisons and traces: ``#12 alexnet b64 cpu``."""
    return f"#{run_id} {run.model} b{run.batch_size} {run.device}"


def report_of(stored: Sequence[StoredRun]) -> Report:
    """The report of stored runs; runs that cannot make one are a one-line error."""
    for st in stored:
        if st.result is None:
            why = f": {st.error}" if st.error else ""
            raise LayertimeError(f"run {st.id} ({st.kind}, {st.status}) has no result{why}")
    results = {st.id: st.result for st in stored}
    kinds = sorted(st.kind for st in stored)
    if len(stored) == 1:
        return _single(stored[0], results[stored[0].id] or {})
    if kinds == ["cost", "profile"]:
        prof = next(st for st in stored if st.kind == "profile")
        cost = next(st for st in stored if st.kind == "cost")
        run = Run.from_dict(results[prof.id] or {})
        return Report(run, {"cost": CostResult.from_dict(results[cost.id] or {})},
                      ((run_label(prof.id, run), run),))
    for st in stored:
        if st.kind != "profile":
            raise LayertimeError(f"run {st.id} is a {st.kind} run; a comparison needs "
                                 "finished profiles (or one profile and one cost estimate)")
    traced = tuple((run_label(st.id, r), r)
                   for st, r in ((st, Run.from_dict(results[st.id] or {})) for st in stored))
    return Report(compare_view([r for _, r in traced], [lab for lab, _ in traced]), {}, traced)


def _single(st: StoredRun, result: dict[str, Any]) -> Report:
    if st.kind == "sweep":
        return Report(SweepSummary.from_dict(result),
                      {"title": f"sweep {st.id}", "status": st.status})
    if st.kind == "cost":
        return Report(CostResult.from_dict(result))
    if st.kind == "profile":
        run = Run.from_dict(result)
        return Report(run, {}, ((run_label(st.id, run), run),))
    if st.kind == "bench-layers":
        bench = BenchResult.from_dict(result)
        situ = bench.in_situ
        return Report(bench, {}, ((run_label(st.id, situ), situ),) if situ is not None else ())
    raise LayertimeError(f"run {st.id} is a {st.kind} run: no report for it yet")
