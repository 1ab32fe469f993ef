"""Measured here, predicted there: the join of a run with a cost estimate, its tables, the
``profile --predict``/``--cost`` flags, and cost runs in the run store."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from width_checks import only_announcements

import factories
from factories import layer
from layertime.cli import main
from layertime.cost import estimate, get_profile, predict
from layertime.cost.compare import join
from layertime.errors import LayertimeError
from layertime.render.cost.predict import render_text
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts
from layertime.results.cost.joined import LOSS_ROW, Comparison
from layertime.results.run import Run
from layertime.store import Store

def make_run() -> Run:
    return factories.run(
        [("", "other", 0.001, 0.0, 0.0),
         ("conv", "conv", 0.010, 0.020, 0.001, 100),
         ("relu", "activation", 0.002, 0.002, 0.0),
         ("measured_only", "other", 0.003, 0.0, 0.0),
         ("fc", "linear", 0.004, 0.008, 0.009, 900)],
        loss_s=0.005, zero_grad_s=0.002, unattributed_s=0.001, model="net")


def _cost_row(name: str, kind: str, flops: int, nbytes: int, params: int = 0,
              saved: int = 0) -> LayerCost:
    ops = (OpWork("aten.op", "forward", 1, flops, nbytes, "formula" if flops else "none",
                  "matmul"),) if flops or nbytes else ()
    return LayerCost(name, kind, kind.title(), params, params, 1, PhaseCounts(forward=flops),
                     PhaseCounts(forward=nbytes), MemoryBytes(weights=4 * params,
                                                              saved_activations=saved), ops)


def make_cost() -> CostResult:
    layers = (
        _cost_row("", "other", 0, 0),
        _cost_row("conv", "conv", 3_000_000, 1_000, 100, saved=600),
        _cost_row("relu", "activation", 0, 2_000, saved=400),
        _cost_row("counted_only", "pool", 0, 500),
        _cost_row("empty_container", "other", 0, 0),
        _cost_row("fc", "linear", 1_000_000, 4_000, 900),
    )
    return CostResult("net", 4, (3, 8, 8), 10, "float32", "sgd", layers,
                      _cost_row(LOSS_ROW, "loss", 0, 100))


def test_join_aligns_by_name_and_keeps_rows_of_one_side() -> None:
    cmp = join(make_run(), make_cost())
    names = [r.name for r in cmp.rows]
    # Run order; the cost's own row after its predecessor in the cost; the loss last;
    # a container with no work that the run does not have is left out.
    assert names == ["", "conv", "relu", "counted_only", "measured_only", "fc", LOSS_ROW]
    rows = {r.name: r for r in cmp.rows}
    assert rows["measured_only"].in_run and not rows["measured_only"].in_cost
    assert rows["measured_only"].flops is None and rows["measured_only"].predicted_s is None
    assert rows["counted_only"].in_cost and not rows["counted_only"].in_run
    assert rows["counted_only"].measured_s is None and rows["counted_only"].kind == "pool"
    assert cmp.only_in_run == ("measured_only",) and cmp.only_in_cost == ("counted_only",)
    # Measured: layer totals with their update; the loss from the run's loss phase.
    assert rows["fc"].measured_s == pytest.approx(0.021)
    assert rows[LOSS_ROW].measured_s == pytest.approx(0.005) and rows[LOSS_ROW].in_cost
    # Shares of each side's own totals.
    assert cmp.measured_total_s == pytest.approx(0.065)
    assert sum(r.measured_share or 0 for r in cmp.rows) == pytest.approx(1.0)
    assert rows["conv"].flops_share == pytest.approx(0.75)
    assert rows["fc"].params_share == pytest.approx(0.9)
    assert rows["conv"].memory_share == pytest.approx(1000 / 5000)
    assert cmp.not_modelled_s == {"zero_grad_s": 0.002, "data_s": 0.0, "unattributed_s": 0.001}
    assert not cmp.predicted and all(r.predicted_share is None for r in cmp.rows)


def test_join_by_kind_and_prediction() -> None:
    profile = get_profile("h100")
    cmp = join(make_run(), predict(make_cost(), profile))
    assert cmp.predicted and cmp.predicted_device == "h100"
    assert not cmp.same_device  # measured on "Test CPU"
    kinds = {k.kind: k for k in cmp.kinds}
    assert set(kinds) == {"conv", "linear", "activation", "pool", "loss", "other"}
    assert sum(k.measured_share for k in cmp.kinds) == pytest.approx(1.0)
    assert sum(k.predicted_share or 0 for k in cmp.kinds) == pytest.approx(1.0)
    assert kinds["conv"].flops_share == pytest.approx(0.75)
    assert kinds["other"].rows == 2  # the model's own row and the measured-only one
    assert kinds["conv"].share_points == pytest.approx(
        100 * (kinds["conv"].predicted_share - kinds["conv"].measured_share))
    assert "estimated on NVIDIA H100" in cmp.headline() and "ESTIMATES" in cmp.headline()


def test_same_device_shows_errors() -> None:
    from layertime.cost.devices import DeviceProfile

    local = DeviceProfile("local-cpu", "Test CPU", {"fp32": 0.001}, 1.0, "calibrated")
    cmp = join(make_run(), predict(make_cost(), local))
    assert cmp.same_device
    conv = next(r for r in cmp.rows if r.name == "conv")
    assert conv.error == pytest.approx(conv.predicted_s / conv.measured_s - 1)
    text = render_text(cmp)
    assert "est. error" in text and "median |error|" in text
    # The step's ratio and the worst kind, each recomputable from what is printed.
    assert cmp.step_ratio == pytest.approx(cmp.predicted_total_s / cmp.measured_total_s)
    assert f"= x{cmp.step_ratio:.2f}" in text.replace("\n", " ")
    worst = cmp.worst_kind()
    assert worst is not None and all(
        abs(worst.share_points) >= abs(k.share_points) for k in cmp.kinds)
    assert f"largest kind difference: {worst.label} {worst.share_points:+.1f} pts" in text
    other = render_text(join(make_run(), predict(make_cost(), get_profile("a100"))))
    assert "est. error" not in other and "compare shares, not times" in other


def test_tables_say_what_is_estimated() -> None:
    text = render_text(join(make_run(), predict(make_cost(), get_profile("a100"))), width=200)
    for word in ("ESTIMATES", "est. ms", "est. %", "FLOPs %", "params %", "memory %",
                 "measured_only (run only)", "counted_only (cost only)", "fully connected (1)"):
        assert word in text
    counts_only = render_text(join(make_run(), make_cost()), width=200)
    assert "est." not in counts_only and "FLOPs %" in counts_only


def test_no_shared_layer_is_an_error() -> None:
    run = make_run().with_layers([layer("x", "conv", 0.1, 0.1, 0.0)])
    with pytest.raises(LayertimeError, match="share no layer names"):
        join(run, replace(make_cost(), layers=(make_cost().layers[3],)))


def test_mismatched_configuration_is_a_warning() -> None:
    cmp = join(replace(make_run(), batch_size=8), make_cost())
    assert any("batch size 4, the measurement for 8" in w for w in cmp.warnings)


def test_comparison_and_run_round_trip_through_json(tmp_path: Path) -> None:
    cmp = join(make_run(), predict(make_cost(), get_profile("v100")))
    back = Comparison.from_dict(json.loads(json.dumps(cmp.to_dict())))
    assert back == cmp
    run = replace(make_run(), prediction=cmp.to_dict())
    path = tmp_path / "run.json"
    run.save(path)
    d = json.loads(path.read_text())
    assert d["prediction"]["schema"] == "layertime.prediction/1"
    assert d["prediction"]["label"] == "estimate"
    assert Run.load(path).prediction == json.loads(json.dumps(cmp.to_dict()))
    assert "prediction" not in make_run().to_dict()  # optional: absent without one


# -- the command line ---------------------------------------------------------------
NET = (
    "from torch import nn\n\n"
    "def build(num_classes=10):\n"
    "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),\n"
    "                         nn.Linear(4 * 6 * 6, num_classes))\n"
)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def net(tmp_path: Path) -> list[str]:
    path = tmp_path / "net.py"
    path.write_text(NET)
    return [f"{path}:build", "-b", "2", "--input-shape", "3,8,8", "--num-classes", "3",
            "--steps", "1", "--warmup", "0"]


def test_profile_predict_prints_both_and_writes_the_prediction(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, net: list[str]
) -> None:
    path = tmp_path / "run.json"
    html = tmp_path / "run.html"
    rc, out, err = _cli(capsys, "profile", *net, "--predict", "h100", "--json", str(path),
                        "--html", str(html), "--width", "200", "--no-store")
    assert rc == 0, err
    assert "NVIDIA H100 SXM5 80GB" in html.read_text()  # the report is joined with the cost
    assert "estimated on NVIDIA H100 SXM5 80GB" in out and "ESTIMATES" in out
    assert "0" in out and "est. %" in out and "FLOPs %" in out
    d = json.loads(path.read_text())
    pred = d["prediction"]
    assert pred["predicted_device"] == "h100" and pred["label"] == "estimate"
    names = [r["name"] for r in pred["rows"]]
    assert names[:4] == ["", "0", "1", "2"] and names[-1] == LOSS_ROW
    measured = {r["name"]: r["total_s"] for r in d["layers"]}
    for r in pred["rows"]:
        if r["name"] in measured:
            assert r["measured_s"] == pytest.approx(measured[r["name"]])
    kinds = {k["kind"]: k for k in pred["kinds"]}
    assert kinds["conv"]["predicted_share"] is not None and kinds["linear"]["params_share"] > 0.5


def test_profile_cost_and_quiet(
    capsys: pytest.CaptureFixture[str], net: list[str]
) -> None:
    rc, out, err = _cli(capsys, "profile", *net, "--cost", "-q", "--no-store")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and "of FLOPs" in lines[1] and "measured on cpu" in lines[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--predict", "h1000"], "unknown device profile 'h1000' (did you mean h100? known: "),
        (["--profiles", "x.toml"], "--profiles needs --predict PROFILE"),
        (["--predict", "x", "--profiles", "BAD"], "bad.toml:2: not valid TOML"),
    ],
)
def test_profile_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, net: list[str], args: list[str],
    message: str,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[devices.x]\nfp32_tflops = \n")
    args = [str(bad) if a == "BAD" else a for a in args]
    rc, out, err = _cli(capsys, "profile", *net, *args)
    # Nothing measured: the error comes first (a flag's bad value exits 2).
    assert rc == (2 if message.startswith(("unknown device profile", "--")) else 1), err
    assert out == ""
    assert err.startswith("layertime: error: ") and err.count("\n") == 1 and message in err


def test_cost_runs_are_stored(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    rc, _, err = _cli(capsys, "cost", "alexnet", "-b", "2", "--device-profile", "a100",
                      "--db", str(db), "--width", "150")
    assert rc == 0 and only_announcements(err) and "stored as run 1" in err
    rc, _, _ = _cli(capsys, "cost", "alexnet", "-b", "2", "--db", str(db), "--no-store", "-q")
    assert rc == 0
    with Store(db) as store:
        runs = store.list()
    assert len(runs) == 1 and runs[0].kind == "cost" and runs[0].device == "a100"
    assert runs[0].batch_size == 2 and runs[0].result is not None
    assert CostResult.from_dict(runs[0].result).prediction is not None
    rc, out, _ = _cli(capsys, "runs", "show", "1", "--db", str(db), "--width", "150")
    assert rc == 0 and "conv layers:" in out and "ESTIMATES" in out


def test_estimate_of_the_real_model_joins_every_layer(
    capsys: pytest.CaptureFixture[str], net: list[str], tmp_path: Path
) -> None:
    """The cost model and the profiler name the same modules the same way."""
    path = tmp_path / "r.json"
    rc, _, _ = _cli(capsys, "profile", *net, "--json", str(path), "-q", "--no-store")
    assert rc == 0
    run = Run.load(path)
    cost = estimate(net[0], batch_size=2, input_shape=(3, 8, 8), num_classes=3)
    cmp = join(run, cost)
    assert cmp.only_in_run == () and cmp.only_in_cost == ()
    assert {r.kind for r in cmp.rows} >= {"conv", "linear", "activation", "loss"}


def test_the_kernels_counted_are_shown_and_kept() -> None:
    cost = replace(make_cost(), kernel_target="cpu", kernel_choices={
        "attention": "math path (dropout 0.1 on cpu) x2", "optimizer": "single-tensor sgd"})
    cmp = join(make_run(), predict(cost, get_profile("a100")))
    assert cmp.kernel_choices == ("attention: math path (dropout 0.1 on cpu) x2",
                                  "optimizer: single-tensor sgd")
    text = render_text(cmp, width=200)
    assert "counted as: attention: math path (dropout 0.1 on cpu) x2; optimizer: " in text
    from layertime.results.cost.joined import Comparison

    assert Comparison.from_dict(cmp.to_dict()).kernel_choices == cmp.kernel_choices
