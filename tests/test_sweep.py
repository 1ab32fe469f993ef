"""Sweeps: every configuration stored, failures recorded, resume, interrupt, crossover."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import factories
from factories import environment, layer
from layertime.errors import LayertimeError, OutOfMemory
from layertime.measure.runner import MeasureOptions
from layertime.results.run import Run
from layertime.results.sweep import SweepPoint
from layertime.store import Store
from layertime.sweep import SweepAxes, crossovers, parse_axis, run_sweep
from layertime.workload import WorkloadSpec

def fake_run(model: str, batch: int, conv_s: float, fc_s: float) -> Run:
    return factories.run(
        [layer("conv", "conv", conv_s / 2, conv_s / 2, 0.0, 100, type="Conv2d"),
         layer("fc", "linear", fc_s / 3, fc_s / 3, fc_s / 3, 900, type="Linear")],
        model=model, batch_size=batch, warmup_steps=0, num_classes=None,
        environment=environment(device_name="test cpu"),
    )


def test_parse_axis_rejects_bad_values() -> None:
    assert parse_axis("1,8,32", "batch-sizes") == (1, 8, 32)
    for bad, msg in [("", "empty"), ("1,,2", "empty"), ("0", "at least 1"), ("-1", "at least 1"),
                     ("x", "not a whole number"), ("2,2", "repeated")]:
        with pytest.raises(LayertimeError, match=msg):
            parse_axis(bad, "batch-sizes")


def test_crossover_is_interpolated_in_log_batch() -> None:
    # fc leads at batch 1 (0.8 vs 0.2), conv at batch 4 (0.2 vs 0.8): the
    # difference fc - conv goes +0.6 -> -0.6, zero half way in log2: batch 2.
    cfg = lambda b: {"model": "m", "image_size": None, "device": "cpu", "dtype": "float32",  # noqa: E731
                     "optimizer": "sgd", "batch_size": b}
    points = [
        SweepPoint(cfg(1), "ok", 1, fake_run("m", 1, conv_s=0.2, fc_s=0.8)),
        SweepPoint(cfg(4), "ok", 2, fake_run("m", 4, conv_s=0.8, fc_s=0.2)),
        SweepPoint(cfg(16), "ok", 3, fake_run("m", 16, conv_s=0.9, fc_s=0.1)),
    ]
    (c,) = crossovers(points)
    assert c.below == 1 and c.above == 4
    assert c.batch_size == pytest.approx(2.0)
    assert "interpolated" in c.describe()
    # No sign change, no crossover.
    assert crossovers(points[1:]) == []


def test_oom_in_one_configuration_is_recorded_and_the_rest_complete(tmp_path: Path) -> None:
    calls: list[int] = []

    def profile_fn(workload: WorkloadSpec, options: MeasureOptions) -> Run:
        batch_size = workload.batch_size
        calls.append(batch_size)
        if batch_size == 8:
            raise OutOfMemory("batch 8 does not fit in cpu memory; try --batch-size 4")
        return fake_run(workload.model_label, batch_size, conv_s=0.1 * batch_size, fc_s=0.5)

    axes = SweepAxes(models=("m",), batch_sizes=(1, 8, 32))
    with Store(tmp_path / "s.db") as store:
        result = run_sweep(axes, store, profile_fn=profile_fn)
        runs = {r.id: r for r in store.list()}
    assert calls == [1, 8, 32]
    assert [p.status for p in result.points] == ["ok", "failed", "ok"]
    failed = runs[result.points[1].run_id]  # type: ignore[index]
    assert failed.status == "failed" and "does not fit" in (failed.error or "")
    sweep_row = runs[result.sweep_id]  # type: ignore[index]
    assert sweep_row.kind == "sweep" and sweep_row.status == "ok"
    assert all(runs[p.run_id].sweep_id == result.sweep_id for p in result.points)  # type: ignore[index]


def test_rerun_skips_stored_configurations_unless_forced(tmp_path: Path) -> None:
    calls: list[int] = []

    def profile_fn(workload: WorkloadSpec, options: MeasureOptions) -> Run:
        calls.append(workload.batch_size)
        return fake_run(workload.model_label, workload.batch_size, conv_s=0.1, fc_s=0.2)

    db = tmp_path / "s.db"
    with Store(db) as store:
        run_sweep(SweepAxes(models=("m",), batch_sizes=(1, 2)), store, profile_fn=profile_fn)
        again = run_sweep(SweepAxes(models=("m",), batch_sizes=(1, 2, 4)), store,
                          profile_fn=profile_fn)
        assert calls == [1, 2, 4]
        assert [p.status for p in again.points] == ["skipped", "skipped", "ok"]
        run_sweep(SweepAxes(models=("m",), batch_sizes=(1,)), store, profile_fn=profile_fn,
                  force=True)
        assert calls == [1, 2, 4, 1]


@pytest.mark.slow
def test_real_small_sweep_stores_every_run(tmp_path: Path, tiny_model_file: Path) -> None:
    axes = SweepAxes(models=(f"{tiny_model_file}:build",), batch_sizes=(2, 4),
                     image_sizes=(8, 12), steps=1, warmup_steps=0)
    with Store(tmp_path / "s.db") as store:
        result = run_sweep(axes, store)
        stored = [r for r in store.list() if r.kind == "profile"]
    assert len(stored) == 4 and all(r.status == "ok" for r in stored)
    shapes = sorted((r.result["batch_size"], tuple(r.result["input_shape"])) for r in stored)  # type: ignore[index]
    assert shapes == [(2, (3, 8, 8)), (2, (3, 12, 12)), (4, (3, 8, 8)), (4, (3, 12, 12))]
    assert all(p.run is not None and p.run.layers for p in result.points)


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    p = tmp_path / "tinynet.py"
    p.write_text(
        "import time\nimport torch\nfrom torch import nn\n\n"
        "class Slow(nn.Module):\n"
        "    def forward(self, x):\n"
        "        env = __import__('os').environ\n"
        "        time.sleep(float(env.get('TINY_SLEEP', '0')))\n"
        "        while x.shape[0] >= int(env.get('TINY_HOLD_FROM_BATCH') or 10**9):\n"
        "            time.sleep(0.05)  # held until interrupted\n"
        "        return x\n\n"
        "def build(num_classes=10):\n"
        "    return nn.Sequential(Slow(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes))\n"
    )
    return p


def _count_ok_profiles(db: Path) -> int:
    if not db.exists():
        return 0
    with Store(db) as s:
        return sum(1 for r in s.list() if r.kind == "profile" and r.status == "ok")


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_sigint_keeps_finished_runs_and_the_rerun_resumes(tmp_path: Path, tiny_model_file: Path) -> None:
    db = tmp_path / "sweep.db"
    cmd = [sys.executable, "-m", "layertime", "sweep", f"{tiny_model_file}:build",
           "--batch-sizes", "1,2,3,4,5,6,7,8", "--image-sizes", "8", "--steps", "1",
           "--warmup", "0", "--db", str(db)]
    # Batches 1 and 2 are measured; batch 3's forward waits until the interrupt, however
    # slowly this machine runs (a timed sleep let a loaded machine finish all 8 first).
    env = {**os.environ, "TINY_HOLD_FROM_BATCH": "3"}
    # SIGINT's default action restored in the child: a runner started in the background by
    # a non-interactive shell ignores SIGINT, its children inherit that, and Python then
    # installs no KeyboardInterrupt handler (a fresh-clone CI run started so held forever).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default)
    deadline = time.monotonic() + 240
    while _count_ok_profiles(db) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "sweep made no progress"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "layertime: interrupted"
    assert "Traceback" not in err
    kept = _count_ok_profiles(db)
    assert kept == 2
    with Store(db) as s:
        (sweep,) = [r for r in s.list() if r.kind == "sweep"]
        assert sweep.status == "interrupted"
    # The same sweep again measures only what is missing.
    done = subprocess.run(cmd, env=dict(os.environ), capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert _count_ok_profiles(db) == 8
    with Store(db) as s:
        latest = [r for r in s.list() if r.kind == "sweep"][0]
    assert latest.status == "ok" and latest.result is not None
    statuses = [p["status"] for p in latest.result["points"]]
    assert statuses.count("skipped") == kept and statuses.count("ok") == 8 - kept
