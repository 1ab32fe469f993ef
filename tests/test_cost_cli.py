"""``layertime cost``: the commands of the issue, JSON output, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from width_checks import only_announcements

from layertime.cli import main

#: Guards against a hung child; not a speed requirement.
HANG_GUARD_S = 600


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cost_alexnet_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "cost", "alexnet", "--batch-size", "128", "--width", "150")
    assert rc == 0 and only_announcements(err)
    assert out.startswith("conv layers: 91% of training FLOPs")
    for text in ("features.0", "classifier.6", "training step", "GMACs", "not counted", "2 x MACs"):
        assert text in out
    assert "ESTIMATES" not in out  # no device profile, no prediction


def test_cost_vgg16_with_profile_writes_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cost.json"
    rc, out, err = _run(
        capsys, "cost", "vgg16", "--batch-size", "256", "--device-profile", "a100",
        "--json", str(path), "--width", "160",
    )
    assert rc == 0 and only_announcements(err)
    assert "ESTIMATES, not measurements" in out and "est. ms" in out
    d = json.loads(path.read_text())
    assert d["schema"] == "layertime.cost/1" and d["batch_size"] == 256
    assert d["prediction"]["device"] == "a100" and d["prediction"]["label"] == "estimate"
    # vgg16: 15.470 GMACs per image (torchvision's _ops), 138,357,544 parameters
    assert round(d["macs_forward"] / 256 / 1e9, 3) == 15.470
    assert d["params"] == 138_357_544
    assert all("predicted" in layer for layer in d["layers"])
    assert d["kinds"]["conv"]["predicted_share"] > d["kinds"]["linear"]["predicted_share"]


def test_quiet_prints_the_headline_only(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _run(capsys, "cost", "alexnet", "-b", "4", "-q", "--optimizer", "adam")
    assert rc == 0 and out.count("\n") == 1 and "(alexnet, batch 4)" in out


def test_tf32_switch_changes_the_peaks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    peaks = {}
    for mode in ("torch", "on", "off"):
        path = tmp_path / f"{mode}.json"
        rc, _, _ = _run(
            capsys, "cost", "alexnet", "-b", "2", "--device-profile", "a100", "--tf32", mode,
            "--json", str(path), "-q",
        )
        assert rc == 0
        peaks[mode] = json.loads(path.read_text())["prediction"]["math_peaks"]
    assert peaks["torch"] == {"conv": "tf32", "matmul": "fp32", "other": "fp32"}
    assert peaks["on"]["matmul"] == "tf32" and peaks["off"]["conv"] == "fp32"


def test_user_profile_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    toml = tmp_path / "dev.toml"
    toml.write_text("[devices.lab]\nfp32_tflops = 5\nmemory_bandwidth_gb_per_s = 250\n")
    path = tmp_path / "c.json"
    rc, _, err = _run(
        capsys, "cost", "alexnet", "-b", "2", "--profiles", str(toml),
        "--device-profile", "lab", "--json", str(path), "-q",
    )
    assert rc == 0 and only_announcements(err)
    assert json.loads(path.read_text())["prediction"]["peak_tflops"] == {"fp32": 5.0}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device-profile", "a1000"], "unknown device profile 'a1000' (did you mean a100?"),
        (["--profiles", "PROFILE"], "--profiles needs --device-profile"),
        (["--profiles", "BADTOML", "--device-profile", "x"], "bad.toml:2: not valid TOML"),
        (["--freeze", "nothing"], "--freeze 'nothing' matches no parameter"),
        (["--image-size", "8"], "cannot run alexnet on input 3x8x8"),
        (["--image-size", "64", "--input-shape", "3,64,64"], "give --input-shape or --image-size"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[devices.x]\nfp32_tflops = 1\nmemory_bandwidth_gb_per_s = 1\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[devices.x]\nfp32_tflops = \n")
    args = [str(good) if a == "PROFILE" else str(bad) if a == "BADTOML" else a for a in args]
    rc, out, err = _run(capsys, "cost", "alexnet", "-b", "2", *args)
    # A flag's bad value exits 2 (as argparse does); a file that cannot be read, 1.
    assert rc == (2 if message.startswith(("unknown device profile", "--")) else 1), err
    assert out == ""
    assert err.startswith("layertime: error: ") and err.count("\n") == 1
    assert message in err


def test_fallback_to_real_tensors_is_reported(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = tmp_path / "needs_data.py"
    model.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class M(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, num_classes)\n"
        "    def forward(self, x):\n"
        "        if x.sum().item() > 1e30:\n"
        "            x = x * 0\n"
        "        return self.fc(x)\n"
    )
    rc, out, err = _run(
        capsys, "cost", f"{model}:M", "-b", "2", "--input-shape", "4", "--num-classes", "3",
        "--width", "150",
    )
    assert rc == 0 and only_announcements(err)
    assert "cannot run on the meta device" in out and "counted with real tensors" in out


@pytest.mark.slow
def test_the_issue_command_as_a_process(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    proc = subprocess.run(
        [sys.executable, "-m", "layertime", "cost", "vgg16", "--batch-size", "256",
         "--device-profile", "a100", "--json", str(path), "--quiet"],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert "estimated for a100" in proc.stdout
    assert json.loads(path.read_text())["model"] == "vgg16"
    bad = subprocess.run(
        [sys.executable, "-m", "layertime", "cost", "vgg16", "--device-profile", "nope"],
        capture_output=True, text=True, timeout=HANG_GUARD_S,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
