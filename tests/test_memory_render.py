"""Memory in results and renderers (issue 20), with hand-made runs: the JSON, the table's
column, the headline's clause, the HTML charts, ranks, the OOM hint, the cost model beside
the measurement, and how compare and sweep show scaling."""

from __future__ import annotations

import json
from dataclasses import replace

import factories
from layertime.cost.count.memory import hint_text, measured_fit
from layertime.measure.parallel.merge import merge_ranks
from layertime.render.memory import beside_table, scaling_lines
from layertime.render.layout import to_text
from layertime.render.table import render_text
from layertime.render.views import compare_view, profile_view
from layertime.render.views.memory import sweep_memory_charts
from layertime.results.cost.rows import LayerCost, MemoryBytes, PhaseCounts
from layertime.results.memory import (
    AtPeak,
    LayerAtPeak,
    MemoryMark,
    MemoryPoint,
    MemorySummary,
    beside,
    memory_totals,
)
from layertime.results.run import Run
from layertime.results.sweep import SummaryPoint, SweepSummary

MB = 1_000_000


def _summary(peak: int = 900 * MB, saved: int = 100 * MB) -> MemorySummary:
    return MemorySummary(
        method="cpu-allocator", peak_bytes=peak, peak_at_s=0.012, peak_phase="backward",
        peak_when="early backward", peak_layer="conv",
        at_peak=AtPeak(300 * MB, 100 * MB, 300 * MB, 150 * MB, 50 * MB,
                       (LayerAtPeak("conv", 90 * MB, 10 * MB), LayerAtPeak("fc", 0, 290 * MB))),
        base_bytes=600 * MB, forward_end_bytes=800 * MB, saved_bytes=saved,
        loss_saved_bytes=2 * MB, step_s=0.05,
        timeline=(MemoryPoint(0.0, 600 * MB, "zero_grad"),
                  MemoryPoint(0.012, peak, "backward", "conv")),
        marks=(MemoryMark("forward end", 0.01), MemoryMark("peak", 0.012)))


def _run(**fields: object) -> Run:
    """conv: few parameters, most saved activations; fc: the reverse."""
    conv = factories.layer("conv", "conv", 0.01, 0.02, 0.001, 1_000, saved_bytes=88 * MB,
                           params_bytes=4 * MB, grads_bytes=4 * MB, optimizer_state_bytes=4 * MB)
    fc = factories.layer("fc", "linear", 0.01, 0.01, 0.004, 70_000, saved_bytes=10 * MB,
                         params_bytes=290 * MB, grads_bytes=290 * MB,
                         optimizer_state_bytes=290 * MB)
    return factories.run([conv, fc], loss_s=0.001, memory=_summary(), **fields)


def test_memory_round_trips_through_json() -> None:
    run = _run()
    back = Run.from_json(run.to_json())
    assert back == run and back.memory is not None
    d = json.loads(run.to_json())
    assert d["memory"]["peak_bytes"] == 900 * MB
    assert d["memory"]["at_peak"]["total_bytes"] == 900 * MB
    assert d["layers"][0]["saved_bytes"] == 88 * MB
    # A run without memory writes no memory key (older readers see what they saw).
    assert "memory" not in factories.run([("a", "conv", 0.01)]).to_dict()


def test_the_headline_adds_saved_activations_when_memory_decides() -> None:
    run = _run()
    head = run.headline()
    # conv: 1% of parameters but 90% of saved activations (88 of 98 MB in the layers).
    assert "conv layers: " in head and "1% of parameters, 90% of saved activations" in head
    assert "fully connected layers:" in head and "10% of saved activations" in head
    assert "saved activations" not in replace(run, memory=None).headline()
    # Saved activations that follow the parameters decide nothing: no clause.
    even = replace(run, layers=tuple(replace(r, saved_bytes=r.params_bytes)
                                     for r in run.layers))
    assert "saved activations" not in even.headline()
    totals = memory_totals(run.layers)
    assert totals["conv"].saved_bytes == 88 * MB
    assert abs(sum(t.saved_share for t in totals.values()) - 1.0) < 1e-12


def test_the_saved_column_is_hidden_first_when_the_table_is_narrow() -> None:
    run = _run()
    wide = render_text(run, None)
    assert "saved MB" in wide and "88.0" in wide
    assert "peak 900.0 MB at early backward (conv)" in wide
    assert "saved for backward: 100.0 MB in all (25.00 MB per sample at batch 4" in wide
    header = next(line for line in wide.splitlines() if "saved MB" in line)
    full = len(header)
    narrow = render_text(run, full - 3)
    note = next(line for line in narrow.splitlines() if "hidden" in line)
    assert note.startswith("1 column hidden") and "(saved MB)" in note
    table = narrow.split("profiled step")[0]
    assert "calls" in table and "saved MB" not in table


def test_the_html_view_has_the_memory_charts_and_section() -> None:
    view = profile_view(_run())
    ids = [c["id"] for c in view["charts"]]
    assert {"memory-layers", "memory-step", "memory-peak"} <= set(ids)
    layers = next(c for c in view["charts"] if c["id"] == "memory-layers")
    conv = next(r for r in layers["rows"] if r["key"] == "conv")
    assert conv["values"] == {"saved": 88.0, "params": 4.0, "grads": 4.0, "optimizer": 4.0}
    step = next(c for c in view["charts"] if c["id"] == "memory-step")
    assert [p["y"] for p in step["series"][0]["points"]] == [600.0, 900.0]
    assert any(m["label"].startswith("peak 900.0 MB") for m in step["markers"])
    kinds = view["charts"][0]
    assert "saved" in [s["key"] for s in kinds["series"]]
    section = next(s for s in view["sections"] if s["title"] == "Memory")
    assert section["items"][0] == ["peak", "900.0 MB at early backward (conv), 12.000 ms into "
                                           "the measured step"]
    assert "saved MB" in [c["label"] for c in view["table"]["columns"]]


def test_ranks_keep_their_own_memory_and_the_merge_the_highest_peak() -> None:
    low, high = _run(), _run()
    high = replace(high, memory=replace(_summary(peak=1000 * MB)))
    merged = merge_ranks([low, high])
    assert merged.memory is not None and merged.memory.rank == 1
    assert merged.memory.peak_bytes == 1000 * MB
    assert [r.peak_bytes for r in merged.ranks] == [900 * MB, 1000 * MB]
    assert merged.ranks[0].params_bytes == 294 * MB
    text = render_text(merged, None)
    assert "rank 1 memory: peak 1,000.0 MB" in text and "(rank 1, the highest" in text


def test_the_oom_hint_rests_on_measured_bytes_per_sample() -> None:
    run = _run()
    # Peak 900 MB less parameters, gradients and optimizer state (3 x 294 MB) over batch 4.
    fit = measured_fit(run, 2_000 * MB, "run 7 at batch 4")
    assert fit is not None
    assert fit.fixed_bytes == 882 * MB and fit.per_sample_bytes == 18 * MB // 4
    assert fit.batch_size == int((0.85 * 2_000 * MB - 882 * MB) // (18 * MB // 4))
    text = hint_text(fit, 4096)
    assert text.startswith("run 7 at batch 4 measured 4.5 MB per sample")
    assert f"try --batch-size {fit.batch_size}" in text and "(measured)" in text
    assert measured_fit(replace(run, memory=None), 2_000 * MB) is None


def _cost(name: str, saved: int, weights: int) -> LayerCost:
    return LayerCost(name, "conv", "Conv2d", 0, 0, 1, PhaseCounts(), PhaseCounts(),
                     MemoryBytes(weights, weights, weights, saved), ())


def test_measured_beside_counted_names_the_misses() -> None:
    run = _run()
    rows = beside(run.layers, [_cost("conv", 88 * MB, 4 * MB), _cost("fc", 12 * MB, 290 * MB)],
                  (2 * MB, 2 * MB))
    assert [r.name for r in rows] == ["conv", "fc", "(loss)"]
    assert rows[0].saved_ratio == 1.0 and rows[1].saved_ratio == 1.2
    text = to_text(beside_table(rows, None), None)
    assert "1 layer(s) where the count differs from the measurement by more than 10%: fc x1.20"\
        in text


def test_compare_and_sweep_show_how_saved_memory_scales() -> None:
    small, big = _run(), replace(_run(batch_size=8), memory=_summary(saved=200 * MB))
    view = compare_view([small, big], ["b4", "b8"])
    chart = next(c for c in view["charts"] if c["id"] == "memory-runs")
    saved = next(r for r in chart["rows"] if r["key"] == "saved")
    assert saved["values"] == {"r0": 100.0, "r1": 200.0}
    assert "b8: batch x2.00" in chart["caption"]
    lines = scaling_lines([({"model": "m", "batch_size": 4}, 100 * MB),
                           ({"model": "m", "batch_size": 16}, 400 * MB)])
    assert lines == ["saved for backward (m): 100.0 MB at batch 4 -> 400.0 MB at batch 16: "
                     "x4.00 for x4.00 the batch; 25.00 MB per sample at batch 16"]
    points = (SummaryPoint({"model": "m", "batch_size": 4}, "ok", 1, saved_bytes=100 * MB,
                           peak_bytes=500 * MB),
              SummaryPoint({"model": "m", "batch_size": 8}, "ok", 2, saved_bytes=200 * MB,
                           peak_bytes=600 * MB))
    charts = sweep_memory_charts(points, "batch_size")
    assert len(charts) == 1 and "x2.00 from 4 to 8" in charts[0]["caption"]
    summary = SweepSummary(points)
    assert SweepSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_the_plot_and_the_compare_table_carry_memory(tmp_path: object) -> None:
    from pathlib import Path

    from layertime.render.compare import compare_table
    from layertime.render.plot import write_plot

    run = _run()
    out = Path(str(tmp_path)) / "run.png"
    write_plot(run, out)
    assert out.stat().st_size > 10_000
    big = replace(_run(batch_size=8), memory=_summary(saved=200 * MB))
    text = to_text(compare_table([run, big], ["b4", "b8"], None), None)
    saved = next(line for line in text.splitlines() if "saved for backward" in line)
    assert "100.0 MB" in saved and "200.0 MB x2.00" in saved
    assert "8 x2.00" in next(line for line in text.splitlines() if line.strip().startswith("batch"))
