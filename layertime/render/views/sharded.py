"""The parts of a profile view that a run across ranks adds: each layer's communication,
exposed and hidden; each rank's step; and a sharded run's collectives by kind and phase.

Plain data, as every view (``charts.py``); the profile view places them
(``profile.py``).  Exposed communication is in the rows' time; hidden is not (the
compute it overlapped is), so the communication chart's bars are not part of the step.
"""

from __future__ import annotations

from typing import Any

from layertime.render.views.charts import bar, chart, phase_series
from layertime.render.views.style import fmt_bytes, fmt_ms, fmt_pct
from layertime.results.run import Run
from layertime.results.parallel.sharded import COLLECTIVE_KINDS, COLLECTIVE_LABELS


def comm_chart(run: Run) -> dict[str, Any] | None:
    """Per layer that communicates: its exposed and hidden communication (ms per step)."""
    rows = [r for r in run.layers if r.comm_s > 0]
    if not rows:
        return None
    total = run.comm_s or 1.0
    bars = []
    for r in rows:
        hidden = max(0.0, r.comm_s - r.comm_exposed_s)
        tip = [r.label, f"exposed: {fmt_ms(r.comm_exposed_s)} ms (in the step)",
               f"hidden: {fmt_ms(hidden)} ms (beside compute)",
               f"{fmt_pct(r.comm_s / total, 1)} of the run's communication",
               f"moves {fmt_bytes(r.comm_bytes)} per step"]
        bars.append(bar(r.name, r.label, r.type,
                        {"comm": r.comm_exposed_s * 1e3, "comm_hidden": hidden * 1e3},
                        r.comm_s * 1e3, fmt_ms(r.comm_s), False, tip))
    how = ("a unit's collectives shared among its layers by parameter elements; a "
           "tensor-parallel layer's are its own" if run.sharding is not None else
           "each layer's byte share of the gradient buckets holding its gradients")
    return chart("comm", "stacked", "Communication per layer",
                 f"Milliseconds per step: exposed (in the step) and hidden behind compute; {how}.",
                 unit="ms", layout="half", series=phase_series(["comm", "comm_hidden"]),
                 rows=bars)


def ranks_chart(run: Run) -> dict[str, Any] | None:
    """Per rank: its profiled step as compute, exposed communication and the part of that
    spent waiting for the slowest rank."""
    if len(run.ranks) < 2:
        return None
    bars = []
    for r in run.ranks:
        own = max(0.0, r.comm_exposed_s - r.wait_s)
        tip = [f"rank {r.rank} ({r.host})", f"profiled step: {fmt_ms(r.profiled_step_s)} ms",
               f"compute: {fmt_ms(r.compute_s)} ms",
               f"exposed communication: {fmt_ms(r.comm_exposed_s)} ms, of which about "
               f"{fmt_ms(r.wait_s)} ms waiting for the slowest rank",
               f"unprofiled step: {fmt_ms(r.step_s)} ms"]
        bars.append(bar(f"rank{r.rank}", f"rank {r.rank}", r.host,
                        {"compute": r.compute_s * 1e3, "comm": own * 1e3,
                         "wait": r.wait_s * 1e3},
                        r.profiled_step_s * 1e3, fmt_ms(r.profiled_step_s), False, tip))
    return chart("ranks", "stacked", "Each rank's step",
                 "Milliseconds of each rank's profiled step: compute, exposed communication, "
                 "and the part of it spent waiting for the slowest rank (a straggler computes "
                 "longest and waits least).",
                 unit="ms", layout="half", series=phase_series(["compute", "comm", "wait"]),
                 rows=bars)


def collectives_section(run: Run) -> dict[str, Any] | None:
    """A sharded run's layout and its collectives by kind and phase, as a section."""
    s = run.sharding
    if s is None:
        return None
    items = [["layout", s.describe()], ["backend", run.backend or "–"]]
    if s.units:
        inner = [u for u in s.units if u]
        items.append(["FSDP units", f"{len(s.units)}: " + ", ".join(inner[:3])
                      + (f" … {inner[-1]}" if len(inner) > 3 else "") + ", root"])
    if s.tp_layers:
        items.append(["tensor-parallel layers",
                      ", ".join(f"{k} ({v})" for k, v in s.tp_layers.items())])
        items.append(["tensor-parallel plan", s.tp_plan or "–"])
    for kind in COLLECTIVE_KINDS:
        for phase in ("forward", "backward"):
            rows = [c for c in run.collectives
                    if c.kind == kind and c.phase == phase and c.scope != "step"]
            if not rows:
                continue
            calls = sum(c.count for c in rows)
            moved = sum(c.bytes for c in rows)
            text = (f"{fmt_ms(sum(c.exposed_s for c in rows))} ms exposed, "
                    f"{fmt_ms(sum(c.hidden_s for c in rows))} ms hidden")
            if calls:
                text = (f"{calls:g} call{'' if calls == 1 else 's'}, {fmt_bytes(moved)}, {text}, backend "
                        f"{fmt_ms(sum(c.busy_s for c in rows))} ms")
            items.append([f"{COLLECTIVE_LABELS[kind]}, {phase}", text])
    return {"title": "Communication across ranks", "items": items}
