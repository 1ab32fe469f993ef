"""The cost table: grouped rows, labelled estimates, conventions, and width handling."""

from __future__ import annotations

import pytest

from layertime.cost import estimate, get_profile, predict
from layertime.render.cost.table import render, render_text
from layertime.render.layout import to_text
from layertime.results.cost.estimate import CostResult
from width_checks import check_fits


@pytest.fixture(scope="module")
def alexnet() -> CostResult:
    return estimate("alexnet", batch_size=16)


def test_rows_grouped_by_kind_with_subtotals(alexnet: CostResult) -> None:
    text = render_text(alexnet, width=150)
    lines = text.splitlines()
    assert lines[0].startswith("conv layers:")
    conv_at = next(i for i, l in enumerate(lines) if l.strip().startswith("conv (5)"))
    fc_at = next(i for i, l in enumerate(lines) if l.strip().startswith("fully connected (3)"))
    assert conv_at < fc_at
    assert "features.0" in lines[conv_at + 1]
    # pure containers with no work of their own are left out
    assert not any(l.strip().startswith("features ") for l in lines)
    assert "training step" in text and "(loss)" in text


def test_first_layer_shows_no_input_gradient(alexnet: CostResult) -> None:
    line = next(l for l in render_text(alexnet, 150).splitlines() if "features.0 " in l)
    cells = line.split()
    # layer, type, params, fwd, bwd-in, ...
    assert cells[4] == "-" and cells[3] != "-"


def test_estimates_are_labelled(alexnet: CostResult) -> None:
    plain = render_text(alexnet, 150)
    assert "ESTIMATES" not in plain and "est. ms" not in plain
    text = render_text(predict(alexnet, get_profile("h100")), 150)
    assert "est. ms" in text and "ESTIMATES, not measurements" in text
    assert "NVIDIA H100 SXM5 80GB" in text and "uncalibrated" in text


def test_conventions_and_not_counted_are_stated(alexnet: CostResult) -> None:
    text = render_text(alexnet, 150)
    assert "FLOPs = 2 x MACs" in text and "what each op's kernel" in text
    assert "not counted (no FLOP formula" in text and "max_pool2d_with_indices" in text
    assert "0.714 GMACs" not in text  # totals are for the batch, not per image
    assert f"{alexnet.macs_forward / 1e9:,.3f} GMACs" in text


@pytest.mark.parametrize("width", [60, 80, 100, 120, None])
def test_fits_any_width_without_cutting_names_or_numbers(alexnet: CostResult,
                                                          width: int | None) -> None:
    for cost in (alexnet, predict(alexnet, get_profile("h100"))):
        text = render_text(cost, None) if width is None else to_text(render(cost, width), None)
        names = [r.label for r in cost.rows if r.ops or r.params]
        check_fits(text, width, names, names_whole=width is None or width >= 80)
        if width is None:
            assert "hidden" not in text and " type " in text and "FLOP/B" in text


def test_narrow_width_hides_the_least_important_columns_and_says_so(alexnet: CostResult) -> None:
    narrow = render_text(alexnet, 80)
    assert "saved MB" not in narrow.splitlines()[1]
    note = next(line for line in narrow.splitlines() if "hidden to fit 80" in line)
    assert "saved MB" in note and "--width" in note
    assert "features.10" in narrow


def test_warnings_are_printed() -> None:
    from torch import nn

    class NeedsData(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.fc(x) if float(x.sum()) < 1e30 else self.fc(x * 0)

    cost = estimate(NeedsData(), batch_size=2, input_shape=(4,), num_classes=3)
    assert "warning: NeedsData cannot run on the meta device" in render_text(cost, 200)


def test_the_kernels_counted_are_shown(alexnet: CostResult) -> None:
    text = render_text(alexnet, 150)
    # counted for this machine's device (no profile): the optimizer's implementation
    assert f"kernels counted for {alexnet.kernel_target}: optimizer: " in text
    assert alexnet.kernel_choices["optimizer"].split(" ")[0] in ("single-tensor", "foreach")
