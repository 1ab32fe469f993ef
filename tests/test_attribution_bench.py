"""benchmarks/attribution.py stays runnable: one image and one token model at toy size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_report_runs_quick_with_the_stock_profiler_beside_it() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "attribution.py"), "--quick",
         "--models", "alexnet", "hf:gpt2", "--repeats", "2"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    # Both models, each with its own input, and two samples of three steps each.
    assert "alexnet, batch 2, 3x64x64" in out and "hf:gpt2, batch 2, sequence 32" in out
    assert out.count("2 samples of a plain, a layertime-profiled and a stock-profiled step") == 2
    # The stock profiler's overhead, the difference and the post-processing time are numbers.
    stock = re.findall(r"stock torch\.profiler alone, same samples +(\d\.\d{3}) \(CPU time (\d\.\d{3})\)", out)
    diff = re.findall(r"layertime - stock, CPU time / plain CPU time +([+-]\d\.\d{3}) \(per sample ([+-]\d\.\d{3})\.\.([+-]\d\.\d{3}); wall", out)
    post = re.findall(r"post-processing: step end -> attributed, / plain +(\d+\.\d{3})s = ", out)
    assert len(stock) == len(diff) == len(post) == 2
    assert all(float(p) > 0 for p in post)
    assert all(float(lo) <= float(med) <= float(hi) for med, lo, hi in diff)
    # GPT-2's Conv1D layers are linear on both sides: both shares are found and are shares.
    # How closely they agree is a timing comparison of two separate profiles, so it is the
    # benchmark's output to read, not a test's (CI saw 55.8% vs 66.3% on a contended machine).
    gpt2 = out[out.index("hf:gpt2, batch 2"):]
    m = re.search(r"linear total share: layertime vs independent +([\d.]+)% vs ([\d.]+)%", gpt2)
    assert m and 0 < float(m.group(1)) <= 100 and 0 < float(m.group(2)) <= 100
    assert "linear share spread over 2 profiles" in gpt2


@pytest.mark.slow
def test_hook_cost_runs_quick_and_measures_every_way() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hook_cost.py"), "--quick"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    ways = re.findall(r"^   (\S.*?) +(\d+\.\d\d) +(\d+\.\d\d) +([+-]\d+\.\d\d)$", r.stdout, re.M)
    assert [w[0] for w in ways] == [
        "no hooks", "empty hooks", "record_function ops (before)",
        "lightweight range, new per call (now)", "lightweight range, one per module",
        "global hooks + lightweight range"]
    assert all(float(w[1]) > 0 and float(w[2]) > 0 for w in ways)
    assert re.search(r"events straight from Kineto \(now\) +\d+\.\d ms +x\d\.\d\d", r.stdout)
