"""The Run model: JSON schema layertime.run/1, derived numbers, atomic save."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

import factories
from factories import environment, layer as make_layer
from layertime.errors import LayertimeError
from layertime.results.run import SCHEMA, LayerRow, Run
from layertime.taxonomy import KINDS

ENV = environment(device_name="test cpu", torch="2.14.1", python="3.11.7", platform="Linux",
                  host="test")


def layer(name: str, kind: str, f: float, b: float, u: float, params: int, calls=1.0) -> LayerRow:
    return make_layer(name, kind, f, b, u, params, calls, spread_s=0.001,
                      type={"conv": "Conv2d", "linear": "Linear", "activation": "ReLU"}.get(kind, "Net"))


LAYERS = (
    layer("", "other", 0.001, 0.0005, 0.0, 0),
    layer("conv1", "conv", 0.010, 0.020, 0.001, 448),
    layer("relu", "activation", 0.002, 0.003, 0.0, 0, calls=2.0),
    layer("fc", "linear", 0.004, 0.008, 0.004, 10250),
)


def make_run(layers: tuple[LayerRow, ...] = LAYERS, **kw) -> Run:
    """A consistent run: the phases and the profiled step agree with the rows."""
    fields = dict(
        loss_s=0.003, zero_grad_s=0.0005, data_s=0.0, unattributed_s=0.002,
        profiled=lambda total: (total * 0.99, total * 1.01),
        plain=(0.05, 0.052),
        steps=2,
        environment=ENV,
        created="2025-01-01T00:00:00+00:00",
        warnings=("a warning",),
        phase_spread_s={"forward_s": 0.001, "loss_s": 0.0},
    )
    fields.update(kw)
    return factories.run(layers, **fields)


# -- JSON round trip and schema -------------------------------------------------------


def test_json_round_trip_is_equal() -> None:
    r = make_run()
    back = Run.from_json(r.to_json())
    assert back == r
    assert back.to_dict() == r.to_dict()
    assert Run.from_json(r.to_json(indent=None)) == r


def test_round_trip_keeps_optional_fields() -> None:
    r = make_run(amp="bf16", num_classes=None, warnings=(), update_split="parameter-elements")
    assert Run.from_json(r.to_json()) == r


def test_to_dict_has_the_documented_keys() -> None:
    d = make_run().to_dict()
    for key in (
        "schema", "model", "device", "batch_size", "input_shape", "dtype", "optimizer",
        "steps", "step_s", "profiled_step_s", "layers", "phases", "kinds",
    ):
        assert key in d, key
    assert d["schema"] == SCHEMA == "layertime.run/1"
    assert d["input_shape"] == [3, 8, 8]
    assert d["batch_size"] == 4 and d["steps"] == 2
    assert d["step_s"] == pytest.approx(0.051)
    assert len(d["layers"]) == len(LAYERS)
    for row in d["layers"]:
        for key in ("name", "kind", "forward_s", "backward_s", "update_s", "params", "calls"):
            assert key in row, key
    assert d["layers"][1]["name"] == "conv1" and d["layers"][1]["params"] == 448
    assert d["layers"][2]["calls"] == 2.0
    for key in ("forward_s", "backward_s", "update_s", "loss_s", "zero_grad_s", "unattributed_s"):
        assert key in d["phases"], key
    assert d["phases"]["data_s"] == 0.0
    for kind, v in d["kinds"].items():
        assert kind in KINDS or kind in ("step", "unattributed"), kind
        assert "time_s" in v and "share" in v
    json.dumps(d, allow_nan=False)  # plain, finite JSON types only


def test_to_json_writes_no_nan() -> None:
    r = make_run(step_samples_s=())  # no plain step: step_s is NaN
    text = r.to_json()
    assert "NaN" not in text
    d = json.loads(text)
    assert d["step_s"] is None and d["overhead_ratio"] is None
    assert Run.from_json(text) == r


# -- derived numbers ---------------------------------------------------------------------


def test_by_kind_shares_sum_to_one() -> None:
    r = make_run()
    kinds = r.by_kind()
    assert sum(k.share for k in kinds.values()) == pytest.approx(1.0, rel=1e-12)
    assert set(kinds) == {"other", "conv", "activation", "linear", "loss", "step", "unattributed"}
    assert list(kinds)[:4] == ["conv", "linear", "activation", "loss"]  # report order
    assert kinds["conv"].time_s == pytest.approx(0.031)
    assert kinds["conv"].params == 448
    assert kinds["linear"].params_share == pytest.approx(10250 / 10698)
    assert kinds["step"].time_s == pytest.approx(0.0005)
    assert kinds["unattributed"].time_s == pytest.approx(0.002)
    assert sum(k.params_share for k in kinds.values()) == pytest.approx(1.0)


def test_phases_total_is_the_profiled_step() -> None:
    r = make_run()
    assert r.phases.total_s == pytest.approx(r.profiled_step_s, rel=1e-12)
    assert r.params == 448 + 10250
    assert r.overhead_ratio == pytest.approx(r.profiled_step_s / r.step_s)


def test_headline_names_conv_and_fully_connected() -> None:
    h = make_run().headline()
    assert "conv layers" in h and "fully connected layers" in h
    assert h.index("conv layers") < h.index("fully connected layers")
    share = make_run().by_kind()["conv"].share
    assert f"{share:.0%} of step time" in h
    assert "testnet" in h and "batch 4" in h


def test_headline_without_conv_names_the_two_biggest_kinds() -> None:
    layers = (
        layer("fc1", "linear", 0.01, 0.02, 0.001, 100),
        layer("act", "activation", 0.001, 0.001, 0.0, 0),
        layer("norm", "norm", 0.005, 0.005, 0.0, 10),
    )
    h = make_run(layers).headline()
    assert h.startswith("fully connected layers")
    assert "normalisation layers" in h and "activation" not in h


def test_headline_names_a_kind_larger_than_conv_or_fully_connected() -> None:
    # AlexNet 2012 on a CPU: the normalisation layers take the largest share.
    layers = (
        layer("conv1", "conv", 0.010, 0.020, 0.001, 100),
        layer("lrn", "norm", 0.020, 0.020, 0.0, 0),
        layer("fc", "linear", 0.005, 0.010, 0.004, 1000),
        layer("act", "activation", 0.001, 0.001, 0.0, 0),
    )
    h = make_run(layers).headline()
    assert h.index("conv layers") < h.index("fully connected layers") < h.index(
        "normalisation layers")
    assert "activation" not in h


def test_headline_with_neither_conv_nor_linear_names_the_two_largest() -> None:
    layers = (
        layer("emb", "embedding", 0.010, 0.020, 0.001, 100),
        layer("attn", "attention", 0.020, 0.030, 0.0, 50),
        layer("ln", "norm", 0.001, 0.001, 0.0, 10),
    )
    h = make_run(layers).headline()
    assert h.startswith("attention layers") and "embedding layers" in h
    assert "normalisation" not in h


def test_headline_without_layers() -> None:
    r = make_run(())
    assert r.headline().startswith("loss:")  # the loss is a kind of its own
    r = replace(r, phases=replace(r.phases, loss_s=0.0))
    assert r.headline().startswith("no layers measured")


# -- malformed input -------------------------------------------------------------------


def test_other_schema_is_an_error() -> None:
    d = make_run().to_dict()
    d["schema"] = "layertime.run/2"
    with pytest.raises(LayertimeError, match="schema"):
        Run.from_dict(d)
    del d["schema"]
    with pytest.raises(LayertimeError):
        Run.from_json(json.dumps(d))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "not json",
        "null",
        "[]",
        "[1, 2]",
        '"a string"',
        "42",
        json.dumps({"schema": SCHEMA}),
    ],
)
def test_malformed_json_is_an_error(text: str) -> None:
    with pytest.raises(LayertimeError):
        Run.from_json(text)


def _broken(**changes) -> str:
    d = make_run().to_dict()
    for k, v in changes.items():
        if v is KeyError:
            del d[k]
        else:
            d[k] = v
    return json.dumps(d)


@pytest.mark.parametrize(
    "changes",
    [
        {"layers": KeyError},
        {"phases": KeyError},
        {"environment": KeyError},
        {"layers": [1, 2]},
        {"layers": ["conv"]},
        {"layers": None},
        {"layers": [{"name": "x"}]},
        {"phases": [1, 2]},
        {"phases": {"forward_s": 1.0}},
        {"environment": "cpu"},
        {"batch_size": "four"},
        {"input_shape": None},
        {"step_samples_s": ["fast"]},
    ],
    ids=lambda c: ",".join(f"{k}={v!r}"[:30] for k, v in c.items()),
)
def test_malformed_run_is_an_error(changes: dict) -> None:
    with pytest.raises(LayertimeError):
        Run.from_json(_broken(**changes))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LayertimeError, match="cannot read"):
        Run.load(tmp_path / "missing.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(LayertimeError):
        Run.load(binary)
    with pytest.raises(LayertimeError):
        Run.load(tmp_path)  # a directory


# -- atomic save ---------------------------------------------------------------------------


def test_save_then_load(tmp_path: Path) -> None:
    r = make_run()
    path = tmp_path / "run.json"
    r.save(path)
    assert Run.load(path) == r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temp file left
    r2 = replace(r, model="other")
    r2.save(str(path))  # overwrite, str path
    assert Run.load(path).model == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_save_to_an_unwritable_path_is_an_error(tmp_path: Path) -> None:
    r = make_run()
    with pytest.raises(LayertimeError, match="cannot write"):
        r.save(tmp_path / "no" / "such" / "dir" / "run.json")
    target = tmp_path / "is_a_dir"
    target.mkdir()
    with pytest.raises(LayertimeError, match="cannot write"):
        r.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is_a_dir"]  # no temp file left
    assert list(target.iterdir()) == []


def test_failed_save_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.json"
    old = make_run()
    old.save(path)
    before = path.read_text()

    def fail(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(LayertimeError, match="No space left"):
        replace(old, model="new").save(path)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_framework_rows_and_micro_batches_round_trip_and_older_files_read() -> None:
    base = make_run()
    p = replace(base.phases, clip_s=0.001, scheduler_s=0.0002, logging_s=0.003)
    r = replace(base, phases=p, micro_batches=2,
                profiled_step_samples_s=(p.total_s, p.total_s))
    assert Run.from_json(r.to_json()) == r
    assert r.by_kind()["step"].time_s == pytest.approx(
        p.zero_grad_s + p.data_s + p.clip_s + p.scheduler_s + p.logging_s)
    assert sum(k.share for k in r.by_kind().values()) == pytest.approx(1.0)
    assert "batch 4 x 2 accumulated" in r.headline()
    # a file written before these fields: no micro_batches, phases without the new rows
    d = base.to_dict()
    del d["micro_batches"]
    for k in ("clip_s", "scheduler_s", "logging_s", "compiled_wrapper_s"):
        del d["phases"][k]
    old = Run.from_dict(d)
    assert old.micro_batches == 1 and old.phases.clip_s == 0.0 and old == base


def test_the_compiled_wrapper_row_is_a_step_level_row_that_round_trips() -> None:
    from layertime.render.table import render_text

    base = make_run()
    p = replace(base.phases, compiled_wrapper_s=0.002)
    r = replace(base, phases=p, profiled_step_samples_s=(p.total_s,))
    assert Run.from_json(r.to_json()) == r
    assert r.by_kind()["step"].time_s == pytest.approx(p.zero_grad_s + p.data_s + 0.002)
    assert sum(k.share for k in r.by_kind().values()) == pytest.approx(1.0)
    assert r.phases.total_s == pytest.approx(r.profiled_step_s)
    text = render_text(r, width=80)
    assert "compiled wrapper (step)" in text
    assert "compiled wrapper" not in render_text(base, width=80)  # an eager run has none
