"""The Chrome trace of a run: valid trace-event JSON, one slice per attributed (row, phase)
per traced step, one track per phase, slices that viewers can nest."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from layertime.cli import main
from layertime.errors import LayertimeError
from layertime.render.trace import (
    ROW_CATEGORY,
    STEP_CATEGORY,
    trace_events,
    trace_json,
    write_trace,
)
from layertime.results.run import Run, Slice
from layertime.store import Store

TINY = '''
import torch.nn as nn

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return x + self.relu(self.conv(x))   # the residual + is the block's own time

def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, num_classes))
'''


@pytest.fixture(scope="module")
def run(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Run:
    import layertime

    p = tmp_path_factory.mktemp("model") / "tiny_trace.py"
    p.write_text(TINY)
    return layertime.profile(f"{p}:build", input_shape=(3, 16, 16), num_classes=10,
                             batch_size=4, steps=2, warmup_steps=0)


@pytest.fixture(scope="module")
def doc(run: Run) -> dict[str, Any]:
    return json.loads(trace_json(run))


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == ROW_CATEGORY]


def _track_names(doc: dict[str, Any]) -> dict[tuple[int, int], str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def test_valid_trace_event_json(doc: dict[str, Any]) -> None:
    assert isinstance(doc["traceEvents"], list) and doc["displayTimeUnit"] == "ms"
    for e in doc["traceEvents"]:
        assert e["ph"] in ("X", "M")
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        assert isinstance(e["name"], str) and e["name"]
        if e["ph"] == "X":
            assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
            assert isinstance(e["args"], dict)
        else:
            assert e["name"] in ("process_name", "process_sort_index", "thread_name",
                                 "thread_sort_index")
    names = _track_names(doc)
    used = {(e["pid"], e["tid"]) for e in doc["traceEvents"] if e["ph"] == "X"}
    assert used <= set(names), "every track with slices has a name"
    assert any(e["name"] == "process_name" for e in doc["traceEvents"])


def test_one_slice_per_row_phase_and_step(run: Run, doc: dict[str, Any]) -> None:
    rows = _rows(doc)
    assert len(rows) == len(run.timeline)
    got = Counter((e["args"]["step"], e["args"]["layer"], e["args"]["phase"]) for e in rows)
    want = Counter((sl.step, sl.name, sl.phase) for sl in run.timeline)
    assert got == want
    assert max(got.values()) == 1
    # Every layer with backward time has its backward slice in every traced step.
    steps = {sl.step for sl in run.timeline}
    for r in run.layers:
        if r.backward_s > 0:
            for s in steps:
                assert got[(s, r.name, "backward")] == 1, r.name
    assert len(steps) == run.steps == 2


def test_one_track_per_phase_and_slices_named_by_layer(run: Run, doc: dict[str, Any]) -> None:
    names = _track_names(doc)
    kinds = {r.name: r.kind for r in run.layers}
    for e in _rows(doc):
        track = names[(e["pid"], e["tid"])]
        assert track.split(" · ")[0] == e["args"]["phase"]
        assert e["name"] == (e["args"]["layer"] or "(model)")
        if not e["args"]["layer"].startswith("("):
            assert e["args"]["kind"] == kinds[e["args"]["layer"]]
        assert e["args"]["self_ms"] >= 0
    tracks = set(names.values())
    assert {"forward", "backward", "update", "loss", "zero_grad", "steps"} <= tracks
    backward = {e["name"] for e in _rows(doc) if e["args"]["phase"] == "backward"}
    assert {r.name for r in run.layers if r.backward_s > 0 and r.name} <= backward


def test_times_are_microseconds_with_steps_end_to_end(run: Run, doc: dict[str, Any]) -> None:
    steps = sorted((e for e in doc["traceEvents"] if e.get("cat") == STEP_CATEGORY),
                   key=lambda e: e["ts"])
    assert [e["args"]["step"] for e in steps] == [0, 1]
    for e, length in zip(steps, run.profiled_step_samples_s):
        assert e["dur"] == pytest.approx(length * 1e6, abs=1e-3)
    assert steps[1]["ts"] == pytest.approx(steps[0]["ts"] + steps[0]["dur"], abs=1e-3)
    starts = {e["args"]["step"]: e["ts"] for e in steps}
    by_key = {(sl.step, sl.name, sl.phase): sl for sl in run.timeline}
    for e in _rows(doc):
        sl = by_key[(e["args"]["step"], e["args"]["layer"], e["args"]["phase"])]
        assert e["ts"] == pytest.approx(starts[sl.step] + sl.start_s * 1e6, abs=2e-3)
        assert e["dur"] == pytest.approx((sl.end_s - sl.start_s) * 1e6, abs=2e-3)
        assert e["args"]["self_ms"] == pytest.approx(sl.self_s * 1e3, abs=1e-6)


def _assert_nested(doc: dict[str, Any]) -> None:
    """On every track, two slices are disjoint or one contains the other."""
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in tracks.values():
        spans.sort(key=lambda s: (s[0], -s[1]))
        open_ends: list[float] = []
        for start, end in spans:
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1] + 1e-6, (start, end, open_ends)
            open_ends.append(end)


def test_slices_nest_on_every_track(doc: dict[str, Any]) -> None:
    _assert_nested(doc)
    # The block's own time (its residual +) encloses its children's forward slices.
    rows = _rows(doc)
    block = next(e for e in rows if e["name"] == "1" and e["args"]["phase"] == "forward"
                 and e["args"]["step"] == 0)
    conv = next(e for e in rows if e["name"] == "1.conv" and e["args"]["phase"] == "forward"
                and e["args"]["step"] == 0)
    assert block["tid"] == conv["tid"]
    assert block["ts"] <= conv["ts"] and conv["ts"] + conv["dur"] <= block["ts"] + block["dur"]


def test_overlapping_slices_move_to_a_second_lane(run: Run) -> None:
    # Two backward slices that overlap without nesting (interleaved ops of two layers).
    odd = dataclasses.replace(run, timeline=(
        Slice(0, "a", "backward", 0.001, 0.003, 0.001),
        Slice(0, "b", "backward", 0.002, 0.004, 0.001),
        Slice(0, "c", "backward", 0.0025, 0.0028, 0.0001),
        Slice(0, "d", "forward", 0.0, 0.0009, 0.0009),
    ), profiled_step_samples_s=(0.005,))
    doc = trace_events(odd)
    _assert_nested(doc)
    rows = _rows(doc)
    assert len(rows) == 4
    names = _track_names(doc)
    tracks = {e["name"]: names[(e["pid"], e["tid"])] for e in rows}
    assert tracks["a"] == "backward" and tracks["c"] == "backward"
    assert tracks["b"] == "backward · 2"


def test_several_runs_get_one_process_each(run: Run) -> None:
    doc = json.loads(trace_json([run, run], ["first", "second"]))
    procs = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert procs == {1: "first", 2: "second"}
    assert len(_rows(doc)) == 2 * len(run.timeline)


def test_a_run_without_timeline_is_a_clear_error(run: Run, tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="no timeline"):
        write_trace(dataclasses.replace(run, timeline=()), tmp_path / "t.json")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_leaves_nothing(run: Run, tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="cannot write"):
        write_trace(run, tmp_path / "missing" / "t.json")
    (tmp_path / "t.json").mkdir()
    with pytest.raises(LayertimeError, match="cannot write"):
        write_trace(run, tmp_path / "t.json")
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]


def test_cli_report_trace_of_a_stored_run(run: Run, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    with Store(db) as store:
        rid = store.add("profile", model=run.model, config={}, result=run.to_dict())
        sid = store.add("sweep", model="x", config={}, result={"schema": "layertime.sweep/1",
                                                               "points": [], "crossovers": []})
    out = tmp_path / "trace.json"
    assert main(["report", str(rid), "--trace", str(out), "--db", str(db)]) == 0
    assert len(_rows(json.loads(out.read_text()))) == len(run.timeline)
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    assert main(["report", str(sid), "--trace", str(bad), "--db", str(db)]) == 2  # a bad flag
    assert "needs profile runs" in capsys.readouterr().err
    assert not bad.exists()


def _trace_processor_binary() -> str | None:
    return (os.environ.get("LAYERTIME_TRACE_PROCESSOR") or shutil.which("trace_processor_shell")
            or shutil.which("trace_processor"))


def test_loads_in_perfetto_trace_processor(run: Run, tmp_path: Path) -> None:
    """Perfetto's own importer reads the trace: one slice per row event.

    The ``perfetto`` Python package downloads its trace_processor binary at run
    time, which a machine without network cannot; give a local binary with
    $LAYERTIME_TRACE_PROCESSOR (or trace_processor_shell on PATH) to run this.
    """
    try:
        from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig
    except ImportError:
        pytest.skip("Perfetto check not run: the perfetto package is not installed")
    binary = _trace_processor_binary()
    if binary is None:
        pytest.skip("Perfetto check not run: no trace_processor binary here (the perfetto "
                    "package would download one; set LAYERTIME_TRACE_PROCESSOR)")
    path = tmp_path / "trace.json"
    write_trace(run, path)
    tp = TraceProcessor(trace=str(path), config=TraceProcessorConfig(bin_path=binary))
    try:
        n = next(iter(tp.query(f"select count(*) as n from slice where category = "
                               f"'{ROW_CATEGORY}'"))).n
        assert n == len(run.timeline)
        errors = next(iter(tp.query("select count(*) as n from stats where severity = 'error' "
                                    "and value > 0"))).n
        assert errors == 0
    finally:
        tp.close()
