"""benchmarks/transformers_bench.py stays runnable: its CUDA check and its report, at toy size on the CPU."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_gpu_check_function_at_toy_size_on_the_cpu() -> None:
    import transformers_bench as tb

    out = tb.gpu_check_transformers("cpu", seq_len=16, batch_size=1, steps=1, warmup=1,
                                    config=tb.QUICK_CONFIG)
    assert out["seq_len"] == 16 and math.isfinite(out["overhead"])
    assert 0 < out["layertime"]["core_share"] < 1 and 0 < out["layertime"]["matmul_share"] < 1
    assert 0 < out["independent"]["attention_share"] < 1
    assert 0 < out["independent"]["matmul_share"] < 1
    assert set(out["roles"]) >= {"attention", "mlp", "embedding", "head"}
    assert out["headline"].startswith("attention: ")
    assert out["run"].headline() == out["headline"]  # the Run itself, for gpu_check


@pytest.mark.slow
def test_the_report_runs_quick() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "transformers_bench.py"),
                        "--quick"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "overhead" in r.stdout and "same traced steps" in r.stdout
    assert "crossover" in r.stdout and "predicted (roofline on this CPU" in r.stdout
