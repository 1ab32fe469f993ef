"""Every terminal table at 60, 80, 100 and 120 columns and piped (no width): lines
fit, no layer name broken or cut, no number cut, hidden columns said."""

from __future__ import annotations

import dataclasses

import pytest
from test_cost_predict import make_cost
from test_cost_predict import make_run as make_joined_run
from test_render_table import ENV
from test_render_table import make_run as make_profile_run
from width_checks import check_fits

from layertime.cost import get_profile, predict
from layertime.cost.comm import from_cost
from layertime.cost.compare import join
from layertime.render.bench_table import bench_table
from layertime.render.parallel.comm import render as render_comm
from layertime.render.compare import compare_table, runs_table, sweep_table
from layertime.render.layout import Column, Row, lay_out, shorten_middle, to_text
from layertime.render.cost.predict import render as render_joined
from layertime.render.cost.sharded import render as render_sharded
from layertime.results.bench import BenchResult, LayerBench, RecordedInput
from layertime.results.parallel.comm import Link
from layertime.results.cost.sharded import ShardedCost
from layertime.cost.sharded.collectives import LayerLayout, ParamLayout
from layertime.cost.sharded.predict import LayerCompute, StepCompute
from layertime.cost.sharded.predict import predict as predict_sharded
from layertime.results.stored import StoredRun
from layertime.results.sweep import SweepPoint, SweepResult

WIDTHS = [60, 80, 100, 120, None]


def _sharded() -> ShardedCost:
    """A two-block Llama-like step on FSDP 2 x TP 2 (hand-made layout, no model)."""
    layers = [LayerLayout("", "other", "LlamaForCausalLM", ""),
              LayerLayout("model.embed_tokens", "embedding", "Embedding", "",
                          (ParamLayout((128, 64)),))]
    for i in range(2):
        b = f"model.layers.{i}"
        for name, style, feats in (("self_attn.q_proj", "colwise", (64, 64)),
                                   ("self_attn.o_proj", "rowwise", (64, 64)),
                                   ("mlp.gate_proj", "colwise", (64, 128)),
                                   ("mlp.down_proj", "rowwise", (128, 64))):
            dim = 0 if style == "colwise" else 1
            layers.append(LayerLayout(f"{b}.{name}", "linear", "Linear", b,
                                      (ParamLayout((feats[1], feats[0]), dim),), style, feats,
                                      tp_region=True))
        layers.append(LayerLayout(f"{b}.post_attention_layernorm", "norm", "LlamaRMSNorm", b,
                                  (ParamLayout((64,)),)))
    compute = StepCompute({r.name: LayerCompute(1e-4, 2e-4, 1e-5) for r in layers},
                          source="hand-made")
    return predict_sharded("hf:llama", layers, ("model.layers.0", "model.layers.1", ""),
                           world_size=4, dp=2, tp=2, fsdp=True, reshard_after_forward=True,
                           batch_size=2, seq_len=16, dtype="float32", elem_bytes=4,
                           dp_link=Link(1.0), tp_link=Link(10.0), compute=compute,
                           tp_plan_source="hand-made")
LONG = "encoder.layer.11.attention.output.dense"


def _profile_names() -> list[str]:
    return [r.label for r in make_profile_run().layers]


def _renderings() -> dict[str, tuple[object, list[str]]]:
    """name -> (a function of width giving a renderable, the names it must show)."""
    run = make_profile_run()
    other = dataclasses.replace(run, step_samples_s=(0.04, 0.041, 0.05))
    joined = join(make_joined_run(), predict(make_cost(), get_profile("a100")))
    stored = [
        StoredRun(i, "profile", "alexnet2012" if i % 2 else "resnet50", 128, "cpu", "ok",
                  "2026-11-30T01:02:03+00:00", {}, run.to_dict(), None,
                  3 if i > 2 else None, None, "host")
        for i in range(1, 5)
    ]
    sweep = SweepResult(7, tuple(
        SweepPoint({"model": "alexnet", "batch_size": b, "image_size": None, "device": "cpu"},
                   "ok", b, dataclasses.replace(run, batch_size=b))
        for b in (1, 8, 32, 128)
    ))
    bench = BenchResult(
        "smallnet", "cpu", 16, (3, 64, 64), "float32", 2, 5,
        tuple(LayerBench(r.name, r.kind, r.type, 1, (RecordedInput((16, 3), "float32", True),),
                         r.forward_s, r.backward_s / 2, r.backward_s / 2, r.params)
              for r in run.layers if r.name),
        ENV,
    )
    comm = from_cost(make_cost(), 8, Link(100.0))
    sharded = _sharded()
    names = _profile_names()
    joined_names = [r.label for r in joined.rows]
    return {
        "predict": (lambda w: render_joined(joined, w), joined_names),
        "runs": (lambda w: runs_table(stored, w), ["alexnet2012", "resnet50"]),
        "sweep": (lambda w: sweep_table(sweep, w), ["alexnet"]),
        "compare": (lambda w: compare_table([run, other], ["#1 a", "#2 b"], w),
                    [n for n in names]),
        "bench": (lambda w: bench_table(bench, run, w), [n for n in names if n != "(model)"]),
        "comm": (lambda w: render_comm(comm, w), [r.name for r in comm.layers if r.name]),
        "sharded": (lambda w: render_sharded(sharded, w), [g.pattern for g in sharded.groups()]),
    }


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["predict", "runs", "sweep", "compare", "bench", "comm",
                                   "sharded"])
def test_every_table_fits(which: str, width: int | None) -> None:
    make, names = _renderings()[which]
    text = to_text(make(width), None)  # type: ignore[operator]
    check_fits(text, width, names, names_whole=width is None or width >= 80)
    if width is None:
        assert "hidden to fit" not in text


def test_a_name_too_long_for_the_width_is_shortened_in_the_middle_and_said() -> None:
    cols = [Column("layer", align="left", name=True), Column("total ms"),
            Column("params", drop=1)]
    rows = [Row((f"  {LONG}", "1,302", "2.47M")), Row(("  fc", "8.51", "-"))]
    laid = lay_out(cols, rows, 30)
    text = laid.text()
    assert max(len(line) for line in text.splitlines()[:4]) <= 30
    assert "…" in text and "shortened in the middle" in text and "params" in text
    assert "1,302" in text  # numbers whole
    whole = lay_out(cols, rows, None).text()
    assert LONG in whole and "…" not in whole


def test_shorten_middle_keeps_both_ends_and_the_indent() -> None:
    s = shorten_middle(f"  {LONG}", 20)
    assert len(s) == 20 and s.startswith("  encoder") and s.endswith("dense") and "…" in s
    assert shorten_middle("short", 20) == "short"
