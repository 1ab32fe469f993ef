"""How a sharded run reads: the headline's communication clause, the collectives table at
80 columns and in a pipe, the summary lines, and the report's charts and section."""

from __future__ import annotations

import pytest

import factories
from factories import layer
from layertime.render.parallel.sharded import collectives_table, sharded_lines
from layertime.render.table import render_text
from layertime.render.views.profile import profile_view
from layertime.results.parallel.data_parallel import RankRow
from layertime.results.run import Run
from layertime.results.parallel.sharded import CollectiveRow, ShardLayout

LAYOUT = ShardLayout("fsdp+tp", 4, 2, 2, True, ("h.0", "h.1", ""), {"h.*.attn": "colwise"},
                     "test plan")


def _run() -> Run:
    """Two blocks; exposed communication 30 ms (all-gather 20, reduce-scatter 10), 6 ms
    hidden; a 100 ms step."""
    rows = [
        layer("h.0.attn", "linear", 0.010, 0.020, 0.001, 1000, comm_s=0.016,
              comm_exposed_s=0.012, comm_bytes=4000, role="attention", block="h.0"),
        layer("h.0.mlp", "linear", 0.010, 0.020, 0.001, 1000, comm_s=0.020,
              comm_exposed_s=0.018, comm_bytes=4000, role="mlp", block="h.0"),
    ]
    colls = (
        CollectiveRow("all_gather", "forward", "unit", "h.0", 1, 8000, 0.010, 0.002, 0.009),
        CollectiveRow("all_gather", "backward", "unit", "h.0", 1, 8000, 0.010, 0.0, 0.008),
        CollectiveRow("reduce_scatter", "backward", "unit", "h.0", 1, 8000, 0.010, 0.004, 0.012),
    )
    ranks = tuple(RankRow(i, "h", 0.1, 0.1, 0.07, 0.036, 0.030, 0.002 * i) for i in range(4))
    return factories.run(rows, comm_exposed_s=0.030, unattributed_s=0.008, sharding=LAYOUT,
                         collectives=colls, world_size=4, backend="gloo", ranks=ranks)


def test_headline_says_what_communication_is_exposed_and_hidden() -> None:
    run = _run()
    assert run.profiled_step_s == pytest.approx(0.1)
    h = run.headline()
    assert "communication: 30% exposed (all-gather 20%, reduce-scatter 10%)" in h
    assert "6% more hidden behind compute" in h
    assert "FSDP 2 x TP 2" in h


def test_collectives_table_adds_up_and_fits_80_columns() -> None:
    text = collectives_table(_run(), 80).text()
    lines = text.splitlines()
    assert all(len(ln) <= 80 for ln in lines)
    assert lines[0].split() == ["collective", "phase", "calls", "MiB", "exposed", "ms",
                                "hidden", "ms", "backend", "ms"]
    total = next(ln for ln in lines if ln.strip().startswith("charged to layers"))
    # 3 calls, 30 ms exposed, 6 ms hidden, 29 ms in the backend.
    assert total.split()[3:] == ["3", "0.0229", "30.0", "6.00", "29.0"]


def test_whole_render_fits_80_columns_and_a_pipe() -> None:
    text = render_text(_run(), 80)
    assert all(len(ln) <= 80 for ln in text.splitlines()), text
    assert "sharded: FSDP 2 x TP 2, gloo; FSDP units: 3 (h.0 .. h.1, root)" in text
    wide = render_text(_run(), None)
    assert "reduce-scatter" in wide and "tensor-parallel: h.*.attn colwise" in wide


def test_summary_lines_name_the_layout() -> None:
    lines = sharded_lines(_run())
    assert lines[0].startswith("sharded: FSDP 2 x TP 2, gloo")
    assert "36.0 ms per step, 30.0 ms exposed, 6.00 ms hidden" in lines[0]


def test_report_has_communication_and_rank_charts_and_a_section() -> None:
    view = profile_view(_run())
    ids = [c["id"] for c in view["charts"]]
    assert "comm" in ids and "ranks" in ids
    comm = next(c for c in view["charts"] if c["id"] == "comm")
    first = comm["rows"][0]
    assert first["values"] == pytest.approx({"comm": 12.0, "comm_hidden": 4.0})
    ranks = next(c for c in view["charts"] if c["id"] == "ranks")
    assert [r["label"] for r in ranks["rows"]] == ["rank 0", "rank 1", "rank 2", "rank 3"]
    section = next(s for s in view["sections"] if s["title"] == "Communication across ranks")
    items = dict((a, b) for a, b in section["items"])
    assert items["layout"] == "FSDP 2 x TP 2"
    assert items["reduce-scatter, backward"].startswith("1 call,")


def test_an_unsharded_run_has_none_of_it() -> None:
    run = factories.run([layer("fc", "linear", 0.01, 0.02, 0.0, 10)])
    view = profile_view(run)
    assert not {"comm", "ranks"} & {c["id"] for c in view["charts"]}
    assert "communication" not in run.headline()
    assert sharded_lines(run) == []


def test_compare_shows_exposed_communication_by_kind_and_the_hidden_part() -> None:
    from layertime.render.compare import compare_table
    from layertime.render.layout import to_text

    plain = factories.run([layer("h.0.attn", "linear", 0.010, 0.020, 0.001, 1000)])
    text = to_text(compare_table([plain, _run()], ["one", "sharded"], 80), 80)
    lines = text.splitlines()
    exposed = next(ln for ln in lines if ln.strip().startswith("comm exposed"))
    assert "30.0% (30.0 ms)" in exposed
    assert any(ln.strip().startswith("all-gather") and "20.0% (20.0 ms)" in ln for ln in lines)
    hidden = next(ln for ln in lines if ln.strip().startswith("comm hidden"))
    assert hidden.split()[-2:] == ["6.00", "ms"]
    assert all(len(ln) <= 80 for ln in lines)
