"""The immutable result models: what collectors produce and renderers and the store read.

One module per result, each a frozen dataclass that round-trips through JSON
under a versioned schema (``docs/schema.md``), read back tolerantly
(:mod:`layertime.records`):

* :mod:`~layertime.results.run` — :class:`Run`, a profiled training step (``layertime.run/1``),
  its rows and their totals per kind and role in :mod:`~layertime.results.rows`;
* :mod:`~layertime.results.cost.estimate` — :class:`CostResult`, a counted step (``layertime.cost/1``),
  its per-layer records in :mod:`~layertime.results.cost.rows`, its totals per role and
  transformer block in :mod:`~layertime.results.cost.roles`;
* :mod:`~layertime.results.environment` — where a result was measured;
* :mod:`~layertime.results.cost.joined` — a run joined with a cost estimate (``layertime.prediction/1``);
* :mod:`~layertime.results.bench` — layers benchmarked alone (``layertime.bench/1``);
* :mod:`~layertime.results.sweep` — a sweep and its stored summary (``layertime.sweep/1``);
* :mod:`~layertime.results.stored` — one row of the run store;
* :mod:`~layertime.results.parallel.comm` — the data-parallel what-if;
* :mod:`~layertime.results.cost.calibration` — a device calibration and an efficiency fit;
* :mod:`~layertime.results.compiled` — what a ``torch.compile``d run adds (``Run.compiled``).

Results import nothing above them: no torch, no collector, no renderer.
"""
