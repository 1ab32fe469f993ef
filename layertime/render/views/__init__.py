"""What a report shows, as plain data: the views the HTML and image renderers draw.

Each builder reads one typed result and returns a *view*: a JSON-ready dict
with the headline, declarative charts (:mod:`~layertime.render.views.charts`),
a table, and sections of facts.  The HTML report (:mod:`layertime.render.html`)
and the plots (:mod:`layertime.render.plot`) draw the same views, so a PNG
shows exactly the charts of the page.  One module per view:

* :mod:`~layertime.render.views.profile` — a profiled run (with a cost estimate joined);
* :mod:`~layertime.render.views.cost` — a cost estimate;
* :mod:`~layertime.render.views.sweep` — a sweep (a token sweep's in
  :mod:`~layertime.render.views.sweep_roles`);
* :mod:`~layertime.render.views.compare` — several runs side by side;
* :mod:`~layertime.render.views.bench` — layers benchmarked alone.

A transformer's charts by role and by block (profile and cost) are in
:mod:`~layertime.render.views.roles`.  Colours, labels and number formats are in
:mod:`~layertime.render.views.style`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from layertime.errors import LayertimeError
from layertime.render.views.bench import bench_view
from layertime.render.views.charts import VIEW_TYPES
from layertime.render.views.compare import compare_view
from layertime.render.views.cost import cost_view
from layertime.render.views.profile import profile_view
from layertime.render.views.sweep import sweep_view
from layertime.results import bench, run, sweep
import layertime.results.cost.estimate as cost

__all__ = ["bench_view", "compare_view", "cost_view", "profile_view", "sweep_view", "view_of"]


def view_of(obj: Any, **kw: Any) -> dict[str, Any]:
    """A view of any result: a Run, a cost result, a sweep (result or summary), a layer
    benchmark, the JSON of one of them, or a view already made."""
    if isinstance(obj, run.Run):
        return profile_view(obj, **kw)
    if isinstance(obj, cost.CostResult):
        return cost_view(obj)
    if isinstance(obj, (sweep.SweepSummary, sweep.SweepResult)):
        return sweep_view(obj, **kw)
    if isinstance(obj, bench.BenchResult):
        return bench_view(obj)
    if not isinstance(obj, Mapping):
        raise LayertimeError(f"cannot read {type(obj).__name__} as a result")
    if obj.get("type") in VIEW_TYPES and "charts" in obj:
        return dict(obj)
    readers: dict[str, Any] = {
        run.SCHEMA: run.Run.from_dict,
        cost.SCHEMA: cost.CostResult.from_dict,
        sweep.SCHEMA: sweep.SweepSummary.from_dict,
        bench.SCHEMA: bench.BenchResult.from_dict,
    }
    reader = readers.get(obj.get("schema"))  # type: ignore[arg-type]
    if reader is None:
        raise LayertimeError(f"nothing to report: unknown result schema {obj.get('schema')!r}")
    return view_of(reader(obj), **kw)
