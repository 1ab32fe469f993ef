"""Roles and blocks in the report views (issue 11): a transformer's profile, cost estimate and
sequence-length sweep; a CNN's views exactly as before.

The numbers are worked out by hand from ``factories.TRANSFORMER_ROWS`` (milliseconds):
attention is block 0's core 3+3 and projection 2+4+1, block 1's core 6+6 and projection 7,
so 32 of the 88.7 ms step, its core 18; the MLP 2 x (11 + 2) = 26; the blocks 27 and 33.5,
the layers outside them 25.2 and the step-level rows (loss, zero_grad) 3.

To regenerate the golden view of the CNN run after an intended change, run
``LAYERTIME_UPDATE_GOLDEN=1 python -m pytest tests/test_render_roles.py`` (it then fails
once, on purpose), check the new file by eye and commit it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

import factories
from layertime.render.html import render_html
from layertime.render.views import cost_view, profile_view, sweep_view
from layertime.render.views.roles import CORE_LABEL, ROLES_NOTE
from layertime.results.run import Run
from layertime.results.sweep import SweepResult, SweepSummary
from layertime.sweep import SweepPoint, seq_crossovers
from test_render_plot import make_run
from test_sweep_seq import cfg, token_run

GOLDEN = Path(__file__).parent / "golden" / "view_smallnet.json"
MS = 1e-3
STEP_MS = 88.7


def _chart(view: dict[str, Any], id: str) -> dict[str, Any]:
    return next(c for c in view["charts"] if c["id"] == id)


def _rows(chart: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in chart["rows"]}


# -- a profile ---------------------------------------------------------------------------
def test_a_transformer_profile_shows_roles_first_then_layers_and_blocks() -> None:
    run = factories.transformer_run()
    assert run.profiled_step_s == pytest.approx(STEP_MS * MS)
    view = profile_view(run)
    assert [c["id"] for c in view["charts"]] == ["roles", "layers", "blocks", "kinds",
                                                 "kind-phases"]
    assert view["headline"] == run.headline()
    roles = _chart(view, "roles")
    assert roles["title"] == "Share by role" and roles["type"] == "grouped"
    assert [s["key"] for s in roles["series"]] == ["time", "params"]
    rows = _rows(roles)
    # Report order, the core right after attention; unattributed (0) has no group.
    assert list(rows) == ["attention", "attention-core", "mlp", "embedding", "norm", "head",
                          "other", "loss", "step"]
    params = 6_400 + 1_024 + 2 * (128 + 12_480 + 16_640) + 128
    assert rows["attention"]["values"]["time"] == pytest.approx(32 / STEP_MS * 100)
    assert rows["attention"]["values"]["params"] == pytest.approx(2 * 12_480 / params * 100)
    assert rows["attention-core"]["values"]["time"] == pytest.approx(18 / STEP_MS * 100)
    assert rows["attention-core"]["values"]["params"] == 0.0
    assert rows["mlp"]["values"]["time"] == pytest.approx(26 / STEP_MS * 100)
    assert rows["mlp"]["values"]["params"] == pytest.approx(2 * 16_640 / params * 100)
    assert rows["head"]["values"]["params"] == 0.0  # the tied head: its weight is wte's
    assert rows["loss"]["values"]["time"] == pytest.approx(2 / STEP_MS * 100)
    # The bars come from the run's own totals, and the roles (without the core) add up.
    for role, rt in run.roles().items():
        if role in rows:
            assert rows[role]["values"]["time"] == pytest.approx(rt.share * 100)
    assert sum(r["values"]["time"] for k, r in rows.items()
               if k != "attention-core") == pytest.approx(100.0)
    # The core is labelled part of attention, on the bar and in the caption.
    core = rows["attention-core"]
    assert core["label"] == CORE_LABEL and "in attention" in core["label"]
    assert any("included in attention's bar" in line for line in core["tips"]["time"])
    assert "part of attention" in roles["caption"]
    assert core["tips"]["time"][2] == "18.000 ms per step"


def test_time_per_block_stacks_the_phases_of_each_block_in_model_order() -> None:
    view = profile_view(factories.transformer_run())
    blocks = _chart(view, "blocks")
    assert blocks["title"] == "Time per block" and blocks["type"] == "stacked"
    assert [s["key"] for s in blocks["series"]] == ["forward", "backward", "update"]
    assert [b["key"] for b in blocks["rows"]] == ["transformer.h.0", "transformer.h.1"]
    h0, h1 = blocks["rows"]
    assert h0["values"] == pytest.approx({"forward": 9.75, "backward": 14.25, "update": 3.0})
    assert h1["values"] == pytest.approx({"forward": 13.25, "backward": 17.25, "update": 3.0})
    assert (h0["total"], h1["total"]) == pytest.approx((27.0, 33.5))
    assert h0["sublabel"] == "GPT2Block"
    tip = "\n".join(h1["tip"])
    assert "attention 19.000 ms" in tip and "MLP 13.000 ms" in tip
    assert f"{33.5 / STEP_MS * 100:.2f}% of step" in tip
    # What is not in a block is said, so that the step adds up: 27 + 33.5 + 25.2 + 3.
    assert "outside the blocks (embeddings, norms, head, other): 25.200 ms" in blocks["caption"]
    assert "step-level rows: 3.000 ms" in blocks["caption"]


def test_the_table_has_a_role_column_and_the_page_a_blocks_card_and_notes() -> None:
    run = factories.transformer_run()
    view = profile_view(run)
    labels = [c["label"] for c in view["table"]["columns"]]
    assert labels[:6] == ["#", "layer", "type", "kind", "role", "fwd ms"]
    role_col = labels.index("role")
    got = [r["cells"][role_col]["t"] for r in view["table"]["rows"]]
    names = {"attention": "attention", "mlp": "MLP", "embedding": "embeddings", "norm": "norms",
             "head": "head", "other": "other"}
    assert got == [names[r.role or ""] for r in run.layers] + ["", ""]  # loss, zero_grad
    assert len(view["table"]["foot"]) == len(labels)
    cards = {c["label"]: c for c in view["summary"]}
    assert cards["blocks"]["value"] == "2"
    assert cards["blocks"]["title"] == "transformer.h.0 .. transformer.h.1"
    assert ROLES_NOTE in view["notes"] and run.notes[0] in view["notes"]


def test_a_profile_joined_with_counts_has_role_shares_of_flops_too() -> None:
    """Counts joined by name: each role's FLOPs are its rows' FLOPs."""
    from layertime.results.cost.estimate import CostResult

    run = factories.transformer_run()
    base = profile_view(run)
    flops = {r.name: 1000 * (i + 1) for i, r in enumerate(run.layers)}
    zero = {"forward": 0, "backward_input": 0, "backward_weight": 0, "update": 0}
    layers = [{"name": r.name, "kind": r.kind, "type": r.type, "params": r.params,
               "role": r.role, "block": r.block, "calls": 1,
               "flops": {**zero, "forward": flops[r.name]}, "bytes_moved": zero,
               "memory_bytes": {"saved_activations": 8}} for r in run.layers]
    cost = CostResult.from_dict({
        "schema": "layertime.cost/1", "model": run.model, "batch_size": run.batch_size,
        "input_shape": list(run.input_shape), "dtype": "float32", "optimizer": "sgd",
        "layers": layers,
        "loss": {"name": "", "kind": "loss", "type": "CrossEntropyLoss", "params": 0,
                 "flops": zero, "bytes_moved": zero, "memory_bytes": {"saved_activations": 0}}})
    view = profile_view(run, cost)
    rows = _rows(_chart(view, "roles"))
    assert [s["key"] for s in _chart(view, "roles")["series"]] == ["time", "params", "flops",
                                                                   "memory"]
    total = sum(flops.values())
    attention = sum(flops[r.name] for r in run.layers if r.role == "attention")
    core = sum(flops[r.name] for r in run.layers if r.kind == "attention")
    assert rows["attention"]["values"]["flops"] == pytest.approx(attention / total * 100)
    assert rows["attention-core"]["values"]["flops"] == pytest.approx(core / total * 100)
    # Time shares do not change with counts joined.
    assert rows["mlp"]["values"]["time"] == _rows(_chart(base, "roles"))["mlp"]["values"]["time"]


# -- a CNN: unchanged ----------------------------------------------------------------------
def test_a_cnn_view_is_exactly_the_golden_one() -> None:
    view = profile_view(make_run())
    text = json.dumps(view, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("LAYERTIME_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
        pytest.fail(f"rewrote {GOLDEN}; check it by eye, then rerun without the variable")
    assert text == GOLDEN.read_text(encoding="utf-8"), "the view of a CNN run changed"
    assert "role" not in [c["label"] for c in view["table"]["columns"]]


def test_roles_without_attention_or_mlp_leave_the_page_byte_identical() -> None:
    """A CNN's rows carry roles too (its classifier is a head, the rest other): the page is
    the same byte for byte as without them."""
    run = make_run()
    placed = run.with_layers(dataclasses.replace(
        r, role="head" if r.name.startswith("classifier") else "other",
        block="features" if r.name.startswith("features") else None) for r in run.layers)
    assert placed.roles()["head"].time_s > 0
    assert render_html(placed) == render_html(run)


# -- a cost estimate ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cost() -> Any:
    from _tiny_transformers import tiny
    from layertime.cost import estimate, get_profile, predict
    from layertime.models import ModelRef

    return predict(estimate(ModelRef("hf:gpt2", tuple(tiny("gpt2"))), seq_len=16,
                            batch_size=2), get_profile("h100"))


def test_a_token_cost_view_shows_role_shares_of_flops_parameters_and_predicted_time(
        tiny_cost: Any) -> None:
    cost = tiny_cost
    view = cost_view(cost)
    assert [c["id"] for c in view["charts"]] == ["roles", "layers", "blocks", "kinds",
                                                 "predicted-layers"]
    roles = _chart(view, "roles")
    assert [s["key"] for s in roles["series"]] == ["flops", "params", "memory", "predicted"]
    rows = _rows(roles)
    by_role = cost.by_role()
    for role, rc in by_role.items():
        assert rows[role]["values"]["flops"] == pytest.approx(rc.flops_share * 100)
        assert rows[role]["values"]["params"] == pytest.approx(rc.params_share * 100)
        assert rows[role]["values"]["predicted"] == pytest.approx(rc.predicted_share * 100)
    att = by_role["attention"]
    assert att.core_flops > 0
    assert rows["attention-core"]["values"]["flops"] == pytest.approx(
        att.core_flops / cost.flops.total * 100)
    # FLOPs per block: the cost result's own block totals, in model order.
    blocks = _chart(view, "blocks")
    assert [b["key"] for b in blocks["rows"]] == list(cost.blocks())
    unit = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[blocks["unit"][0]]
    for b in blocks["rows"]:
        assert b["total"] * unit == pytest.approx(cost.blocks()[b["key"]].flops)
    labels = [c["label"] for c in view["table"]["columns"]]
    assert labels[4] == "role" and ROLES_NOTE in view["notes"]


# -- a sequence-length sweep ------------------------------------------------------------------
def _token_sweep(batches: tuple[int, ...] = (1,)) -> SweepResult:
    """Attention 0.2 -> 0.8 of the step between seq 128 and 512 (the MLP the rest): their
    difference -0.6 -> +0.6 is zero half way in log2(seq), at 256."""
    points = []
    for b in batches:
        for seq, att in ((64, 0.1), (128, 0.2), (512, 0.8), (1024, 0.9)):
            run = dataclasses.replace(token_run(seq, att, 1 - att), batch_size=b)
            points.append(SweepPoint({**cfg(seq), "batch_size": b}, "ok", len(points) + 1, run))
    return SweepResult(1, tuple(points), (), tuple(seq_crossovers(points)))


def test_a_seq_sweep_draws_role_shares_against_length_with_the_crossover_interpolated() -> None:
    result = _token_sweep()
    view = sweep_view(result)
    assert view["headline"] == ("attention overtakes the MLP at sequence length ~256 "
                                "(interpolated): above it, attention takes more time than "
                                "the MLP")
    (c,) = view["charts"]
    assert c["title"] == "Share by role against sequence length" and c["type"] == "lines"
    assert c["x_ticks"] == [64, 128, 512, 1024] and c["x_scale"] == "log2"
    assert [s["key"] for s in c["series"]] == ["attention", "mlp"]
    att = {p["x"]: p["y"] for p in c["series"][0]["points"]}
    assert att == pytest.approx({64: 10.0, 128: 20.0, 512: 80.0, 1024: 90.0})
    (m,) = c["markers"]
    assert m["x"] == pytest.approx(256.0)
    assert m["label"] == "crossover ≈ 256 (interpolated)"
    assert "interpolated between 128 and 512" in m["tip"][0]
    labels = [col["label"] for col in view["table"]["columns"]]
    assert "seq" in labels and "image" not in labels
    assert "attention %" in labels and "MLP %" in labels
    assert any("interpolated linearly in log2(sequence length)" in n for n in view["notes"])
    # The stored summary draws the same view.
    assert sweep_view(result.summarised()) == view


def test_a_seq_sweep_over_batch_sizes_has_one_chart_per_batch_and_per_length() -> None:
    view = sweep_view(_token_sweep((1, 4)))
    titles = [c["title"] for c in view["charts"]]
    assert titles == ["Share by role against sequence length"] * 2 + [
        "Share by role against batch size"] * 4
    assert [len(c["markers"]) for c in view["charts"][:2]] == [1, 1]
    assert "batch 4" in view["charts"][1]["caption"]
    assert view["headline"].startswith("attention overtakes the MLP at sequence length "
                                       "~256 (batch 1), ~256 (batch 4)")


def test_the_mlp_overtaking_attention_is_said_so() -> None:
    """A crossover the other way (attention's share falling) is named the other way."""
    points = [SweepPoint(cfg(seq), "ok", i, token_run(seq, att, 1 - att))
              for i, (seq, att) in enumerate(((128, 0.8), (512, 0.2)))]
    view = sweep_view(SweepResult(1, tuple(points), (), tuple(seq_crossovers(points))))
    assert view["headline"].startswith("the MLP overtakes attention at sequence length ~256")


def test_a_seq_sweep_without_a_crossover_says_which_leads() -> None:
    points = [SweepPoint(cfg(seq), "ok", i, token_run(seq, 0.3, 0.7))
              for i, seq in enumerate((64, 128))]
    view = sweep_view(SweepResult(1, tuple(points)))
    assert view["headline"] == ("no crossover: the MLP takes more time than attention at "
                                "every sequence length measured (64–128)")
    assert view["charts"][0]["caption"].endswith("no crossover in this range")


def test_an_image_sweep_still_draws_kinds_against_batch_size() -> None:
    from test_render_plot import SWEEP

    view = sweep_view(SweepSummary.from_dict(SWEEP))
    assert [c["title"] for c in view["charts"]] == ["Share by kind against batch size"]
    assert "image" in [col["label"] for col in view["table"]["columns"]]


# -- a tiny real model -----------------------------------------------------------------------
@pytest.mark.slow
def test_the_view_of_a_real_tiny_gpt2_has_its_roles_and_blocks(one_thread: None) -> None:
    import layertime
    from _tiny_transformers import tiny
    from layertime.models import ModelRef

    run: Run = layertime.profile(ModelRef("hf:gpt2", tuple(tiny("gpt2"))), seq_len=16,
                                 batch_size=2, device="cpu", steps=1, warmup_steps=0)
    view = profile_view(run)
    rows = _rows(_chart(view, "roles"))
    for role in ("attention", "attention-core", "mlp", "embedding", "norm", "head"):
        assert role in rows
    roles = run.roles()
    assert rows["attention"]["values"]["time"] == pytest.approx(roles["attention"].share * 100)
    assert rows["attention-core"]["values"]["time"] == pytest.approx(
        roles["attention"].core_share * 100)
    blocks = _chart(view, "blocks")
    assert [b["key"] for b in blocks["rows"]] == ["transformer.h.0", "transformer.h.1"]
    per_block = sum(b["total"] for b in blocks["rows"]) / 1e3
    outside = sum(r.total_s for r in run.layers if r.block is None)
    step_rows = run.profiled_step_s - sum(r.total_s for r in run.layers)
    assert per_block + outside + step_rows == pytest.approx(run.profiled_step_s)
    role_col = [c["label"] for c in view["table"]["columns"]].index("role")
    assert all(r["cells"][role_col]["t"] for r in view["table"]["rows"][: len(run.layers)])
    assert '"id":"roles"' in render_html(run) and '"id":"blocks"' in render_html(run)


# -- mixtures of experts and state-space models -------------------------------------------
def test_a_moe_run_says_how_much_of_the_step_its_experts_and_router_take() -> None:
    from layertime.render.roles import MOE_NOTE, render_roles
    from layertime.render.layout import to_text

    run = factories.rows_run(factories.MOE_ROWS, "hf:olmoe")
    assert run.profiled_step_s == pytest.approx(100 * MS)
    assert run.headline() == (
        "attention: 20% of step time, 10% of parameters (its score/softmax core: 12%); "
        "MoE experts: 62% of time, 70% of parameters (router 7%); "
        "embeddings and head: 8% of time, 10% of parameters "
        "(hf:olmoe, batch 2, seq 16, cpu, float32)")
    text = to_text(render_roles(run, 80), 80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    experts = next(line for line in lines if line.lstrip().startswith("MoE experts (3)"))
    router = next(line for line in lines if line.lstrip().startswith("MoE router (1)"))
    assert "62.0%" in experts and "70.0%" in experts and "7.0%" in router
    assert MOE_NOTE in text
    d = json.loads(run.to_json())
    assert d["roles"]["experts"]["share"] == pytest.approx(0.62)
    assert d["roles"]["router"]["params"] == 500
    assert Run.from_dict(d).roles() == run.roles()
    rows = _rows(_chart(profile_view(run), "roles"))
    assert list(rows)[:4] == ["attention", "attention-core", "experts", "router"]


def test_a_state_space_run_says_how_much_its_mixers_and_their_scan_take() -> None:
    from layertime.render.roles import render_roles
    from layertime.render.layout import to_text
    from layertime.render.views.roles import SCAN_LABEL

    run = factories.rows_run(factories.MAMBA_ROWS, "hf:mamba")
    assert run.profiled_step_s == pytest.approx(100 * MS)
    assert run.is_transformer()
    assert run.headline() == (
        "sequence mixing: 76% of step time, 75% of parameters (its selective scan: 60%); "
        "embeddings and head: 20% of time, 17% of parameters "
        "(hf:mamba, batch 2, seq 16, cpu, float32)")
    text = to_text(render_roles(run, 80), 80)
    assert "sequence mixing (3)" in text and "  selective scan" in text
    rows = _rows(_chart(profile_view(run), "roles"))
    assert list(rows)[:2] == ["mixing", "mixing-core"]
    assert rows["mixing-core"]["label"] == SCAN_LABEL
    assert rows["mixing-core"]["values"]["time"] == pytest.approx(60.0)
    assert json.loads(run.to_json())["roles"]["mixing"]["core_s"] == pytest.approx(60 * MS)
