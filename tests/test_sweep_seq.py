"""Sequence-length sweeps: the attention/MLP crossover, interpolated, and token configurations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _tiny_transformers import tiny
from layertime.errors import LayertimeError
from layertime.measure.runner import MeasureOptions
from layertime.models import ModelRef
from layertime.results.run import Environment, LayerRow, Phases, Run
from layertime.store import Store
from layertime.sweep import SweepAxes, SweepPoint, run_sweep, seq_crossovers
from layertime.workload import TokenInput, WorkloadSpec

ENV = Environment("cpu", "test cpu", "2.x", None, "3.11", "linux", "host", 1)


def token_run(seq: int, attention_s: float, mlp_s: float) -> Run:
    """A transformer's run with one attention core, one projection and one MLP layer."""
    layers = (
        LayerRow("h.0.attn", "attention", "Attention", attention_s / 2, attention_s / 2, 0.0, 0, 1,
                 role="attention", block="h.0"),
        LayerRow("h.0.attn.proj", "linear", "Linear", 0.0, 0.0, 0.0, 10, 1,
                 role="attention", block="h.0"),
        LayerRow("h.0.mlp.fc", "linear", "Linear", mlp_s / 2, mlp_s / 2, 0.0, 30, 1,
                 role="mlp", block="h.0"),
    )
    total = attention_s + mlp_s
    return Run(
        model="hf:m", device="cpu", batch_size=1, input_shape=(seq,), dtype="float32",
        optimizer="sgd", steps=1, warmup_steps=0, step_samples_s=(total,),
        profiled_step_samples_s=(total,), layers=layers,
        phases=Phases(total / 2, total / 2, 0.0, 0.0, 0.0, 0.0, 0.0),
        environment=ENV, timing="cpu-self-time", seq_len=seq,
    )


def cfg(seq: int) -> dict[str, Any]:
    return {"model": "hf:m", "batch_size": 1, "image_size": None, "device": "cpu",
            "dtype": "float32", "optimizer": "sgd", "seq_len": seq}


def test_the_crossover_is_where_attention_overtakes_the_mlp_in_log_seq() -> None:
    # Attention share 0.2 -> 0.8 between seq 128 and 512; the MLP's 0.8 -> 0.2:
    # their difference goes -0.6 -> +0.6, zero half way in log2(seq): seq 256.
    points = [
        SweepPoint(cfg(64), "ok", 1, token_run(64, 0.1, 0.9)),
        SweepPoint(cfg(128), "ok", 2, token_run(128, 0.2, 0.8)),
        SweepPoint(cfg(512), "ok", 3, token_run(512, 0.8, 0.2)),
        SweepPoint(cfg(1024), "ok", 4, token_run(1024, 0.9, 0.1)),
    ]
    (c,) = seq_crossovers(points)
    assert (c.below, c.above) == (128, 512)
    assert c.seq_len == pytest.approx(256.0)
    text = c.describe()
    assert "attention overtakes the MLP at seq ~256" in text and "interpolated" in text
    assert c.attention_above
    assert seq_crossovers(points[2:]) == []  # attention leads throughout
    # The other way round (the MLP overtakes attention): said so, not the usual sentence.
    backwards = [
        SweepPoint(cfg(128), "ok", 5, token_run(128, 0.8, 0.2)),
        SweepPoint(cfg(512), "ok", 6, token_run(512, 0.2, 0.8)),
    ]
    (b,) = seq_crossovers(backwards)
    assert not b.attention_above
    assert "the MLP overtakes attention at seq ~256" in b.describe()
    run = token_run(128, 0.2, 0.8)
    assert run.roles()["attention"].share == pytest.approx(0.2)
    assert run.roles()["attention"].core_share == pytest.approx(0.2)


def test_a_token_sweep_passes_seq_len_and_config_and_stores_the_crossover(tmp_path: Path) -> None:
    seen: list[WorkloadSpec] = []

    def profile_fn(workload: WorkloadSpec, options: MeasureOptions) -> Run:
        seen.append(workload)
        seq = workload.resolved_input.sequence_length
        assert seq is not None
        share = {64: 0.3, 256: 0.7}[seq]
        return token_run(seq, share, 1 - share)

    axes = SweepAxes(models=("hf:m",), batch_sizes=(1,), seq_lens=(64, 256),
                     model_config=("n_layer=2",))
    with Store(tmp_path / "s.db") as store:
        result = run_sweep(axes, store, profile_fn=profile_fn)
        stored = store.get(result.points[0].run_id)
    assert [w.input for w in seen] == [TokenInput(64), TokenInput(256)]
    assert all(w.model == ModelRef("hf:m", ("n_layer=2",)) for w in seen)
    assert stored.config["workload"]["model_config"] == ["n_layer=2"]
    (c,) = result.seq_crossovers
    assert c.seq_len == pytest.approx(128.0)
    summary = result.summary()
    assert summary["seq_crossovers"][0]["seq_len"] == pytest.approx(128.0)
    assert summary["points"][0]["roles"]["attention"] == pytest.approx(0.3)
    # Image sweeps keep their configuration keys (and what is stored for them).
    image = SweepAxes(models=("alexnet",), batch_sizes=(1,)).configs()[0]
    assert "seq_len" not in image and "config" not in image


def test_a_sweep_refuses_what_cannot_be_one_configuration() -> None:
    with pytest.raises(LayertimeError, match="not both"):
        SweepAxes(models=("hf:m",), batch_sizes=(1,), seq_lens=(64,), image_sizes=(32,))
    with pytest.raises(LayertimeError, match="hf: models only"):
        SweepAxes(models=("alexnet",), batch_sizes=(1,), model_config=("n_layer=2",))


@pytest.mark.slow
def test_cli_profile_cost_and_sweep_of_a_tiny_gpt2(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    flags = [a for kv in tiny("gpt2") for a in ("--config", kv)]
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "layertime", *a], capture_output=True, text=True, env=env,
        timeout=300)
    r = run("profile", "hf:gpt2", *flags, "--seq-len", "16", "--batch-size", "2",
            "--steps", "1", "--width", "80", "--json", str(tmp_path / "run.json"), "--no-store")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("attention: ") and "by role" in r.stdout
    assert "score/softmax core" in r.stdout and "2 block(s)" in r.stdout
    assert "note: lm_head shares" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["seq_len"] == 16 and "roles" in data
    r = run("cost", "hf:gpt2", *flags, "--seq-len", "16", "--batch-size", "2", "--width", "80",
            "--no-store")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("attention: ") and "by role" in r.stdout
    r = run("sweep", "hf:gpt2", *flags, "--seq-lens", "8,16", "--batch-sizes", "1",
            "--steps", "1", "--db", str(tmp_path / "s.db"), "--width", "100",
            "--json", str(tmp_path / "sweep.json"))
    assert r.returncode == 0, r.stderr
    assert " seq " in r.stdout and "attn %" in r.stdout
    assert ("attention overtakes the MLP" in r.stdout) or ("no attention/MLP crossover" in r.stdout)
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert [p["config"]["seq_len"] for p in summary["points"]] == [8, 16]
    assert "seq_crossovers" in summary
