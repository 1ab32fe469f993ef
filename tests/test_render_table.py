"""The terminal table: an exact golden rendering of a hand-made run, and its structure.

To regenerate the golden file after an intended change in the rendering, run
``LAYERTIME_UPDATE_GOLDEN=1 python -m pytest tests/test_render_table.py``
(the test then fails once, on purpose), check the new file by eye and commit it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from width_checks import check_fits

import factories
from factories import environment, layer
from layertime.render.fmt import count as fmt_count
from layertime.render.table import render_text
from layertime.results.run import Run
from layertime.taxonomy import KIND_LABELS, KINDS

GOLDEN = Path(__file__).parent / "golden" / "table_small.txt"

ENV = environment(device_name="Test CPU 9000", torch="2.14.1", torchvision="0.29.1",
                  python="3.11.7", platform="Linux-test", host="golden", threads=4)

MS = 1e-3

# name, kind, type, forward ms, backward ms, update ms, params, calls
ROWS = [
    ("", "other", "SmallNet", 0.125, 0.0, 0.0, 0, 1),
    ("features.0", "conv", "Conv2d", 10.0, 20.0, 1.0, 34_944, 1),
    ("features.1", "activation", "ReLU", 0.5, 0.25, 0.0, 0, 1),
    ("features.2", "norm", "LocalResponseNorm", 1.5, 2.25, 0.0, 0, 1),
    ("features.3", "pool", "MaxPool2d", 0.75, 0.5, 0.0, 0, 1),
    ("features.4", "conv", "Conv2d", 5.0, 8.0, 2.0, 307_392, 1),
    ("features.5", "activation", "ReLU", 0.25, 0.125, 0.0, 0, 1),
    ("classifier.0", "dropout", "Dropout", 0.375, 0.125, 0.0, 0, 1),
    ("classifier.1", "linear", "Linear", 3.0, 4.0, 6.0, 4_097_000, 1),
    ("classifier.2", "linear", "Linear", 0.5, 0.75, 0.25, 40_970, 2),
]
LOSS_MS, ZERO_GRAD_MS, DATA_MS, UNATTRIBUTED_MS = 2.0, 0.5, 1.25, 0.0


def make_run(
    loss_ms: float = LOSS_MS,
    zero_grad_ms: float = ZERO_GRAD_MS,
    data_ms: float = DATA_MS,
    unattributed_ms: float = UNATTRIBUTED_MS,
    rows: list[tuple] = ROWS,  # type: ignore[type-arg]
) -> Run:
    return factories.run(
        [layer(name, kind, f * MS, b * MS, u * MS, params, float(calls), type=typ)
         for name, kind, typ, f, b, u, params, calls in rows],
        loss_s=loss_ms * MS,
        zero_grad_s=zero_grad_ms * MS,
        data_s=data_ms * MS,
        unattributed_s=unattributed_ms * MS,
        # Two profiled steps whose mean is exactly what the rows add up to.
        profiled=lambda total: (total - 0.5 * MS, total + 0.5 * MS),
        plain=(0.050, 0.052, 0.060),
        model="smallnet",
        batch_size=16,
        input_shape=(3, 64, 64),
        environment=ENV,
        num_classes=1000,
        created="2026-01-01T00:00:00+00:00",
        warnings=("the loss was NaN or infinite in 1 of 4 steps",),
    )


def test_rendering_matches_golden_file() -> None:
    text = render_text(make_run(), width=120)
    if os.environ.get("LAYERTIME_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
        pytest.fail(f"rewrote {GOLDEN}; check it by eye, then rerun without the variable")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing (see this module's docstring)"
    expected = GOLDEN.read_text()
    assert text == expected, "the table rendering changed; see this module's docstring"


def _table_lines(text: str) -> list[list[str]]:
    """The table's body rows, each split into its cells (two or more spaces apart)."""
    out = []
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2:
            out.append(cells)
    return out


def _ms(cell: str) -> float:
    return float(cell.replace(",", ""))


def _close(cell: str, value_ms: float) -> bool:
    """A printed time (three significant digits) against the exact one."""
    return _ms(cell) == pytest.approx(value_ms, rel=0.005, abs=0.0005)


def test_kinds_are_grouped_in_order_with_subtotals() -> None:
    run = make_run()
    text = render_text(run, width=120)
    lines = text.splitlines()
    header = re.compile(r"^ (\S.*?) \((\d+)\)\s{2,}")
    # A kind's header, then its layer rows (indented by two), then a blank line.
    groups: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        m = header.match(line)
        if m and not line.startswith("   "):
            current = m.group(1)
            groups[current] = []
            count = int(m.group(2))
            continue
        if current is not None:
            if line.startswith("   ") and line.strip():
                groups[current].append(line)
            else:
                assert len(groups[current]) == count, (current, groups[current])
                current = None
    expected_kinds = [k for k in KINDS if any(r.kind == k for r in run.layers)]
    assert list(groups) == [KIND_LABELS[k] for k in expected_kinds]

    for kind in expected_kinds:
        label = KIND_LABELS[kind]
        rows = [r for r in run.layers if r.kind == kind]
        body = groups[label]
        assert [ln.split()[0] for ln in body] == [r.label for r in rows]
        # Each row's total ms is its own; the header's is their sum.
        for ln, r in zip(body, rows):
            cells = re.split(r"\s{2,}", ln.strip())
            assert _close(cells[5], r.total_s / MS)
        head = next(ln for ln in lines if ln.startswith(f" {label} ("))
        cells = re.split(r"\s{2,}", head.strip())
        subtotal = sum(r.total_s for r in rows) / MS
        assert _close(cells[4], subtotal), (label, head)
        assert _close(cells[1], sum(r.forward_s for r in rows) / MS)
        params = sum(r.params for r in rows)
        assert cells[6] == fmt_count(params)


def _step_rows(text: str) -> dict[str, list[str]]:
    return {c[0]: c for c in _table_lines(text) if c[0].endswith("(step)")}


def test_unattributed_row_always_present() -> None:
    zero = _step_rows(render_text(make_run(unattributed_ms=0.0), width=120))
    assert zero["unattributed (step)"][1:] == ["0", "0.0%"]
    some = _step_rows(render_text(make_run(unattributed_ms=3.5), width=120))
    assert some["unattributed (step)"][1] == "3.50"


def test_data_row_only_when_there_is_data_time() -> None:
    assert "data (step)" in _step_rows(render_text(make_run(data_ms=1.25), width=120))
    without = _step_rows(render_text(make_run(data_ms=0.0), width=120))
    assert "data (step)" not in without
    assert {"loss (step)", "zero_grad (step)", "unattributed (step)"} <= set(without)


def test_profiled_step_row_is_the_sum_of_all_rows() -> None:
    run = make_run(unattributed_ms=0.75)
    cells = next(c for c in _table_lines(render_text(run, width=120)) if c[0] == "profiled step")
    assert _close(cells[4], run.profiled_step_s / MS)
    assert cells[5] == "100.0%"
    assert cells[6] == fmt_count(run.params)
    total = sum(r.total_s for r in run.layers) + sum(
        dataclasses.astuple(run.phases)[3:]  # loss, zero_grad, data, unattributed
    )
    assert total == pytest.approx(run.profiled_step_s, rel=1e-12)


def test_render_text_has_no_colour_codes_and_respects_width() -> None:
    for width in (60, 80, 100, 120, 200):
        text = render_text(make_run(), width=width)
        assert "\x1b[" not in text
        assert max(len(line) for line in text.splitlines()) <= width
        from layertime.render.layout import to_text
        from layertime.render.table import render

        check_fits(to_text(render(make_run(), width), None), width,
                   [r.label for r in make_run().layers], names_whole=width >= 80)


def test_piped_output_takes_the_width_it_needs() -> None:
    text = render_text(make_run(), width=None)
    check_fits(text, None, [r.label for r in make_run().layers], names_whole=True)
    # Nothing hidden, nothing wrapped: the headline is one line and every column is there.
    assert "hidden" not in text
    assert text.splitlines()[0].endswith("float32)")
    assert "params" in text and "calls" in text


def test_hidden_columns_are_named_with_the_width_that_shows_them() -> None:
    text = render_text(make_run(), width=80)
    note = next(line for line in text.splitlines() if "hidden" in line)
    m = re.search(r"--width (\d+)", note)
    assert m is not None and "calls" in note
    wide = render_text(make_run(), width=int(m.group(1)))
    assert "hidden" not in wide
