"""benchmarks/cost_accuracy.py stays runnable: calibrate alone, three toy models."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_accuracy_report_scores_every_model_and_says_which_were_tuned() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cost_accuracy.py"), "--quick"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    rows = re.findall(r"^(\S+) +(\d+%|-) +(\d+) +(.+?) ([+-]\d+\.\d) +x(\d+\.\d\d)  ([PM]{3}) +"
                      r"(informed|held out)$", out, re.M)
    assert [row[0] for row in rows] == ["alexnet", "resnet50", "gpt2-128"]
    # The step ratio is the predicted over the modelled measured time printed above it.
    for key, *_, ratio, _, _ in rows:
        m = re.search(rf"^{key}: .*modelled rows ([\d,]+) ms, predicted ([\d,]+) ms", out, re.M)
        assert m, key
        measured, predicted = (float(x.replace(",", "")) for x in m.groups())
        assert float(ratio) == pytest.approx(predicted / measured, abs=0.01 + 1 / measured)
    # The table (its header and rows) fits 80 columns.
    table = [line for line in out.splitlines()
             if line.startswith("model ") or line.split(" ")[0] in {row[0] for row in rows}]
    assert len(table) == 4 and all(len(line) <= 80 for line in table)


def test_an_unknown_case_is_one_line_and_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cost_accuracy.py"), "--models", "nope"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 2 and "unknown case(s) nope" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
