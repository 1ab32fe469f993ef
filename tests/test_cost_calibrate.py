"""``layertime calibrate``: measured peaks saved as a TOML profile, and the efficiency fit.

Measurements run at tiny sizes (a 64x64 matmul, 1 MiB buffers): the tests
check what is written and read back, never how fast anything is.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from width_checks import only_announcements
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import factories
from layertime.cli import main
from layertime.cost import predict
from layertime.cost.calibrate import fit_to_run, to_profile
from layertime.cost.devices import (
    DeviceProfile,
    find_profile,
    load_profiles,
    parse_profiles,
    user_profiles_path,
)
from layertime.cost.fit import fit_efficiency, solve_scale
from layertime.cost.profile_file import profile_toml, save_profile
from layertime.errors import LayertimeError
from layertime.measure.calibrate import calibrate
from layertime.results.cost.calibration import Calibration
from layertime.results.cost.estimate import CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts
from layertime.results.run import Run

TINY = ["--matmul-size", "64", "--memory-mb", "1", "--repeats", "1"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _tiny_calibration() -> Calibration:
    return calibrate(torch.device("cpu"), matmul_size=64, memory_mb=1, repeats=1)


# -- measuring and saving ----------------------------------------------------------
def test_calibration_writes_a_toml_that_loads_back(tmp_path: Path) -> None:
    cal = _tiny_calibration()
    assert cal.matmul_sizes["fp32"] == 64 and cal.memory_bytes == 2**20
    assert set(cal.matmul_tflops) >= {"fp32"} and all(v > 0 for v in cal.matmul_tflops.values())
    assert cal.memory_bandwidth_gb_per_s == max(cal.copy_gb_per_s, cal.add_gb_per_s) > 0
    prof = to_profile(cal, "lab-cpu")
    path = save_profile(prof, tmp_path / "devices.toml")
    back = load_profiles(path)["lab-cpu"]
    assert back.peak_tflops == pytest.approx(dict(cal.matmul_tflops), rel=1e-15)
    assert back.memory_bandwidth_gb_per_s == pytest.approx(cal.memory_bandwidth_gb_per_s)
    assert back.name == cal.device_name and "layertime calibrate" in back.source
    assert back.compute_efficiency == {} and back.efficiency_source is None


def test_cli_saves_to_the_user_file_and_every_command_finds_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, out, err = _cli(capsys, "calibrate", "--device", "cpu", *TINY, "--json",
                        str(tmp_path / "cal.json"))
    assert rc == 0 and only_announcements(err)
    path = user_profiles_path()
    assert path.exists()
    assert f"saved device profile local-cpu in {path}" in out and "GFLOP/s" in out
    assert find_profile("local-cpu").key == "local-cpu"
    data = json.loads((tmp_path / "cal.json").read_text())
    assert data["profile"] == "local-cpu" and data["fit"] is None
    assert data["calibration"]["matmul_sizes"]["fp32"] == 64
    # Loadable by --device-profile like a built-in, without --profiles.
    cost_json = tmp_path / "cost.json"
    rc, _, err = _cli(capsys, "cost", "alexnet", "-b", "2", "--device-profile", "local-cpu",
                      "--json", str(cost_json), "-q", "--no-store")
    assert rc == 0 and only_announcements(err)
    pred = json.loads(cost_json.read_text())["prediction"]
    assert pred["device"] == "local-cpu" and pred["label"] == "estimate"
    measured = data["calibration"]["matmul_tflops"]["fp32"]
    assert pred["peak_tflops"]["fp32"] == pytest.approx(measured)


def test_out_and_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "mine.toml"
    rc, _, _ = _cli(capsys, "calibrate", *TINY, "--out", str(out_file), "--name", "bench box")
    assert rc == 0
    assert '[devices."bench box"]' in out_file.read_text()
    assert "bench box" in load_profiles(out_file)
    assert not user_profiles_path().exists()


def test_save_replaces_its_own_profile_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(
        "# my lab\n[devices.lab]\nfp32_tflops = 5\nmemory_bandwidth_gb_per_s = 250\n\n"
        "# the old local one\n[devices.local-cpu]\nfp32_tflops = 1\n"
        "memory_bandwidth_gb_per_s = 1\n[devices.local-cpu.compute_efficiency]\nconv = 0.1\n\n"
        "[devices.other]\nfp32_tflops = 2\nmemory_bandwidth_gb_per_s = 3  # kept\n"
    )
    prof = DeviceProfile("local-cpu", "Test CPU", {"fp32": 0.5, "bf16": 0.25}, 20.0, "measured")
    save_profile(prof, path)
    text = path.read_text()
    profiles = parse_profiles(text)
    assert set(profiles) == {"lab", "other", "local-cpu"}
    assert profiles["local-cpu"].peak_tflops == {"fp32": 0.5, "bf16": 0.25}
    assert profiles["local-cpu"].compute_efficiency == {}  # the old sub-table went with it
    assert "# my lab" in text and "# kept" in text and "the old local one" not in text
    save_profile(prof, path)  # again: idempotent
    assert path.read_text() == text


def test_save_refuses_a_file_that_does_not_parse(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text("[devices.lab]\nfp32_tflops = 5\nmemory_bandwidth_gb_per_s = \n")
    prof = DeviceProfile("local-cpu", "Test CPU", {"fp32": 0.5}, 20.0, "measured")
    with pytest.raises(LayertimeError, match=r"devices.toml:3: not valid TOML"):
        save_profile(prof, path)
    path.write_text("[devices.lab]\nfp32_tflops = 5\n")
    with pytest.raises(LayertimeError, match=r"devices.toml:1 \[devices.lab\]: missing"):
        save_profile(prof, path)


# -- the efficiency fit on a hand-made run and cost ------------------------------------
PROFILE = DeviceProfile("test", "Test CPU", {"fp32": 0.1}, 10.0, "made up for a test")


def op(phase: str, flops: float, nbytes: float, math_class: str = "other") -> OpWork:
    status = "formula" if flops else "not_counted"
    return OpWork(f"aten.op_{phase}", phase, 1, int(flops), int(nbytes), status, math_class)


def cost_row(name: str, kind: str, ops: list[OpWork], params: int = 0) -> LayerCost:
    flops = PhaseCounts(**{p: sum(w.flops for w in ops if w.phase == p)
                           for p in ("forward", "backward_input", "backward_weight", "update")})
    moved = PhaseCounts(**{p: sum(w.bytes_moved for w in ops if w.phase == p)
                           for p in ("forward", "backward_input", "backward_weight", "update")})
    return LayerCost(name, kind, kind.title(), params, params, 1, flops, moved,
                     MemoryBytes(weights=4 * params), tuple(ops))


def hand_made_cost() -> CostResult:
    layers = [
        cost_row("", "other", []),
        # conv: compute-bound products plus one memory-bound op (a bias add), so the
        # fitted efficiency has to cross a breakpoint of the max().
        cost_row("conv", "conv", [op("forward", 2e9, 1e8, "conv"), op("forward", 0, 1e9),
                                  op("backward_input", 2e9, 1e8, "conv"),
                                  op("backward_weight", 2e9, 1e8, "conv"),
                                  op("update", 6e3, 2e4)], params=1000),
        cost_row("relu", "activation", [op("forward", 0, 4e8), op("backward_input", 0, 6e8)]),
        cost_row("drop", "dropout", [op("forward", 0, 1e6)]),
        cost_row("fc", "linear", [op("forward", 1e9, 4e8, "matmul"),
                                  op("backward_input", 1e9, 4e8, "matmul"),
                                  op("backward_weight", 1e9, 4e8, "matmul"),
                                  op("update", 6e6, 2e7)], params=1_000_000),
    ]
    loss = cost_row("(loss)", "loss", [op("forward", 0, 1e5), op("backward_input", 0, 1e5)])
    return CostResult("testnet", 4, (3, 8, 8), 10, "float32", "sgd", tuple(layers), loss)


def hand_made_run(fc_s: float = 0.4) -> Run:
    return factories.run(
        [("", "other", 0.0002, 0.0, 0.0),
         ("conv", "conv", 0.15, 0.35, 0.001, 1000),
         ("relu", "activation", 0.05, 0.10, 0.0),
         ("drop", "dropout", 0.0005, 0.0, 0.0),
         ("fc", "linear", fc_s / 3, 2 * fc_s / 3, 0.099, 1_000_000)],
        loss_s=0.02, zero_grad_s=0.001, unattributed_s=0.002)


def predicted_by_kind(cost: CostResult) -> tuple[dict[str, float], float]:
    """Predicted forward + backward per kind, and the whole update, from ``predict``."""
    out: dict[str, float] = {}
    update = 0.0
    for r in cost.rows:
        assert r.predicted is not None
        out[r.kind] = out.get(r.kind, 0.0) + r.predicted.forward_s + r.predicted.backward_s
        update += r.predicted.update_s
    return out, update


def test_fit_reproduces_measured_time_per_kind_exactly() -> None:
    run, cost = hand_made_run(), hand_made_cost()
    fit = fit_efficiency(run, cost, PROFILE)
    status = {k.kind: k for k in fit.kinds}
    assert status["conv"].status == "fitted" and status["conv"].target == "compute"
    assert status["linear"].status == "fitted" and status["linear"].target == "compute"
    # No counted FLOPs: the memory efficiency is what can explain the time.
    assert status["activation"].target == "memory" and status["activation"].status == "fitted"
    assert status["loss"].target == "memory" and status["loss"].status == "fitted"
    assert status["update"].target == "memory" and status["update"].status == "fitted"
    # Under 1% of the step, and nothing counted: defaults, labelled so.
    assert status["dropout"].status == "default" and "under 1%" in status["dropout"].reason
    assert status["other"].status == "default" and status["other"].reason == \
        "nothing counted for it"
    assert "dropout" not in fit.fitted("memory") and "other" not in fit.fitted("memory")

    fitted = DeviceProfile(PROFILE.key, PROFILE.name, PROFILE.peak_tflops,
                           PROFILE.memory_bandwidth_gb_per_s, PROFILE.source,
                           compute_efficiency=fit.fitted("compute"),
                           memory_efficiency=fit.fitted("memory"),
                           efficiency_source=fit.source)
    pred = predict(cost, fitted)
    by_kind, update = predicted_by_kind(pred)
    measured = {"conv": 0.5, "linear": 0.4, "activation": 0.15, "loss": 0.02}
    for kind, seconds in measured.items():
        assert by_kind[kind] == pytest.approx(seconds, rel=1e-12), kind
    assert update == pytest.approx(0.1, rel=1e-12)
    assert pred.prediction is not None and pred.prediction.efficiency_source == fit.source
    assert "fitted to a measured run (testnet, batch 4" in fit.source
    for k in fit.kinds:
        assert 0 < k.efficiency <= 1
        if k.status == "fitted":
            assert k.predicted_s == pytest.approx(k.measured_s, rel=1e-12)


def test_fit_crosses_a_breakpoint_of_the_max() -> None:
    """conv's bias add is memory-bound at the fitted efficiency, the products compute-bound."""
    fit = fit_efficiency(hand_made_run(), hand_made_cost(), PROFILE)
    conv = next(k for k in fit.kinds if k.kind == "conv")
    # products: 6e9 FLOPs / (1e11 x e); memory-bound: bias 1e9 B / (1e10 x 0.8) = 0.125 s,
    # so e = 0.06 / (0.5 - 0.125) exactly.
    assert conv.efficiency == pytest.approx(0.06 / (0.5 - 0.125), rel=1e-12)


def test_a_kind_faster_than_the_roofline_is_capped() -> None:
    fit = fit_efficiency(hand_made_run(fc_s=0.02), hand_made_cost(), PROFILE)
    fc = next(k for k in fit.kinds if k.kind == "linear")
    assert fc.status == "capped" and fc.efficiency == 1.0
    assert fc.reason == "faster than its memory bound alone allows"
    assert fit.fitted("compute")["linear"] == 1.0


def test_fitted_profile_round_trips_through_toml(tmp_path: Path) -> None:
    fit = fit_efficiency(hand_made_run(), hand_made_cost(), PROFILE)
    cal = Calibration("cpu", "Test CPU", "host", 1, "2.x", {"fp32": 0.1}, {"fp32": 64}, 10.0, 9.0,
                      2**20, 1, "2025-01-01T00:00:00+00:00")
    prof = to_profile(cal, "local-cpu", fit)
    text = profile_toml(prof, fit)
    assert re.search(r"# dropout: default 0.8 kept \(0.0\d% of the step, under 1%\)", text)
    assert "# other: default 0.8 kept (nothing counted for it)" in text
    path = save_profile(prof, tmp_path / "d.toml", fit)
    back = load_profiles(path)["local-cpu"]
    assert dict(back.compute_efficiency) == pytest.approx(fit.fitted("compute"), rel=1e-15)
    assert dict(back.memory_efficiency) == pytest.approx(fit.fitted("memory"), rel=1e-15)
    assert back.efficiency_source == fit.source


def test_fit_refuses_a_run_of_another_configuration() -> None:
    from dataclasses import replace

    with pytest.raises(LayertimeError, match="differ in batch size"):
        fit_efficiency(replace(hand_made_run(), batch_size=8), hand_made_cost(), PROFILE)
    with pytest.raises(LayertimeError, match="amp"):
        fit_efficiency(replace(hand_made_run(), amp="bf16"), hand_made_cost(), PROFILE)
    cal = Calibration("cuda:0", "GPU", "host", 1, "2.x", {"fp32": 1.0}, {"fp32": 64}, 1.0, 1.0,
                      2**20, 1, "now")
    with pytest.raises(LayertimeError, match="measured on cpu and the calibration on cuda:0"):
        fit_to_run(cal, "x", hand_made_run())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0, 10)), min_size=1, max_size=8),
    st.floats(1e-3, 1.0),
)
def test_solve_scale_inverts_the_roofline(ops: list[tuple[float, float]], x_true: float) -> None:
    a = [p for p, _ in ops]
    b = [q for _, q in ops]
    target = sum(max(ai / x_true, bi) for ai, bi in ops)
    x = solve_scale(a, b, target)
    if not any(ai > 0 for ai in a) or target <= sum(b) * (1 + 1e-12):
        return  # the efficiency has no effect here: any x, or none, reproduces the target
    assert x is not None
    assert sum(max(ai / x, bi) for ai, bi in ops) == pytest.approx(target, rel=1e-9)


def test_solve_scale_without_a_solution() -> None:
    assert solve_scale([0.0, 0.0], [1.0, 2.0], 5.0) is None  # nothing scales
    assert solve_scale([1.0], [2.0], 1.5) is None  # the other bound alone is slower
    assert solve_scale([1.0], [0.0], 4.0) == 0.25
    # max(1/x, 1) + 3/x = 5: both ops on their compute side, 4/x = 5
    assert math.isclose(solve_scale([1.0, 3.0], [1.0, 0.0], 5.0) or 0, 0.8)


def test_cli_fit_from_a_run_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--from-run RUN.json``: fitted without profiling, saved with the fit's labels."""
    model = tmp_path / "net.py"
    model.write_text(
        "from torch import nn\n\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),\n"
        "                         nn.Linear(4 * 6 * 6, num_classes))\n"
    )
    run_json = tmp_path / "run.json"
    rc, _, err = _cli(capsys, "profile", f"{model}:build", "-b", "2", "--input-shape", "3,8,8",
                      "--num-classes", "3", "--steps", "1", "--warmup", "0", "--json",
                      str(run_json), "-q", "--no-store")
    assert rc == 0, err
    out_file = tmp_path / "d.toml"
    rc, out, err = _cli(capsys, "calibrate", *TINY, "--out", str(out_file), "--from-run",
                        str(run_json), "--min-share", "0", "--width", "200")
    assert rc == 0, err
    assert "efficiencies fitted to" in out and "saved device profile local-cpu" in out
    prof = load_profiles(out_file)["local-cpu"]
    assert "fitted to a measured run" in (prof.efficiency_source or "")
    assert set(prof.compute_efficiency) <= {"conv", "linear"}
    # The profile predicts for the same run: the join shows errors (same device name).
    rc, out, err = _cli(capsys, "profile", f"{model}:build", "-b", "2", "--input-shape",
                        "3,8,8", "--num-classes", "3", "--steps", "1", "--warmup", "0",
                        "--profiles", str(out_file), "--predict", "local-cpu", "--width", "200",
                        "--no-store")
    assert rc == 0, err
    assert "est. error" in out and "ESTIMATES" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from-run", "999"], "no run 999"),
        (["--from-run", "NOTARUN"], "not a layertime run"),
        (["--out", "BROKEN"], "broken.toml:2: not valid TOML"),
        (["--min-share", "2"], "--min-share must be in [0, 1)"),
        (["--device", "cuda:7"], "cuda"),
        (["--fit", "nonet"], "unknown model 'nonet'"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[devices.x]\nfp32_tflops = \n")
    notarun = tmp_path / "notarun.json"
    notarun.write_text('{"schema": "something/1"}')
    args = [str(broken) if a == "BROKEN" else str(notarun) if a == "NOTARUN" else a for a in args]
    rc, out, err = _cli(capsys, "calibrate", *TINY, *args)
    bad_value = message.startswith(("--", "unknown model")) or message == "cuda"
    assert rc == (2 if bad_value else 1), err
    assert out == ""
    assert err.startswith("layertime: error: ") and err.count("\n") == 1
    assert message in err


def test_a_broken_user_file_is_named_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    path = user_profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[devices.mine]\nfp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\n"
                    "speed = 3\n")
    rc, out, err = _cli(capsys, "cost", "alexnet", "-b", "2", "--device-profile", "h100", "-q")
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert f"{path}:4 [devices.mine]: unknown field 'speed'" in err
