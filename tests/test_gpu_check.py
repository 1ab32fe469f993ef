"""benchmarks/gpu_check.py --smoke: the GPU check's own code, run on the CPU so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Runs benchmarks/gpu_check.py as a subprocess (a minute or two).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_runs_every_section_and_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "gc"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out),
         "--budget", "600"],
        capture_output=True, text=True, timeout=900, cwd=str(ROOT),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    broken = [(r["config"], r["check"], r["value"]) for r in rows if r["status"] in ("ERROR", "SKIP")]
    assert not broken
    checks = {r["check"] for r in rows}
    for needed in ("overhead", "coverage", "repeatability", "conv agreement", "fc agreement",
                   "second clock", "memory", "event ids", "calibrate", "after sessions",
                   "time limit", "oom then run", "reports", "attribute trace",
                   "torchrun 1 rank", "cli profile", "fsdp 1 rank", "tp 1 rank",
                   "pytest -m cuda", "memory peak", "memory curve", "memory layers"):
        assert needed in checks, (needed, [(r["check"], r["value"]) for r in rows
                                              if r["status"] == "MISS"])
    files = [f for f in out.iterdir() if not f.name.startswith(".")]
    assert 1 < len(files) <= 8
    # The table is printed on stdout, one line per row.
    assert "status" in p.stdout and p.stdout.count("\n") >= len(rows)


def test_without_cuda_the_full_check_says_so(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the message is for machines without it")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "no CUDA device" in p.stderr and "--smoke" in p.stderr
