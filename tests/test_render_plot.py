"""PNG and SVG plots (matplotlib): the report's charts, bar for bar, written atomically."""

from __future__ import annotations

import dataclasses
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import factories
from factories import environment, layer
from layertime.errors import LayertimeError
from layertime.render.output import check_output, plot_format
from layertime.render.plot import render_plot, write_plot
from layertime.render.views import compare_view
from layertime.results.run import Run, Slice

MS = 1e-3

ENV = environment(torch="2.14.1", torchvision="0.29.1", python="3.11.7", platform="Linux-test",
                  host="test", threads=2)

# name, kind, type, forward ms, backward ms, update ms, params
ROWS = [
    ("", "other", "SmallNet", 0.1, 0.0, 0.0, 0),
    ("features.0", "conv", "Conv2d", 10.0, 20.0, 1.0, 34_944),
    ("features.1", "activation", "ReLU", 0.5, 0.25, 0.0, 0),
    ("features.2", "pool", "MaxPool2d", 1.5, 2.0, 0.0, 0),
    ("classifier.0", "dropout", "Dropout", 0.2, 0.1, 0.0, 0),
    ("classifier.1", "linear", "Linear", 4.0, 8.0, 30.0, 4_000_000),
    ("classifier.2", "linear", "Linear", 1.0, 2.0, 3.0, 40_000),
]


def make_run(batch: int = 16, scale: float = 1.0) -> Run:
    return factories.run(
        [layer(n, k, f * MS * scale, b * MS * scale, u * MS, p, type=t)
         for n, k, t, f, b, u, p in ROWS],
        loss_s=0.5 * MS, zero_grad_s=0.4 * MS, unattributed_s=0.1 * MS,
        model="smallnet", batch_size=batch, input_shape=(3, 32, 32), warmup_steps=0,
        environment=ENV, num_classes=None,
        timeline=(Slice(0, "features.0", "forward", 0.0, 0.01, 0.01),),
    )


SWEEP = {
    "schema": "layertime.sweep/1",
    "points": [
        {"config": {"model": "smallnet", "batch_size": b, "image_size": None, "device": "auto",
                    "dtype": "float32", "optimizer": "sgd"},
         "status": "ok", "run_id": i, "error": None, "step_s": 0.01 * b,
         "kinds": {"conv": c, "linear": 0.9 - c, "activation": 0.05, "step": 0.05}}
        for i, (b, c) in enumerate(((1, 0.2), (8, 0.4), (64, 0.7)))
    ],
    "crossovers": [{"group": {"model": "smallnet", "image_size": None, "device": "cpu",
                              "dtype": "float32", "optimizer": "sgd"},
                    "batch_size": 11.3, "below": 8, "above": 64}],
}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def _svg_ids(data: bytes) -> list[str]:
    root = ET.fromstring(data)
    return [e.get("id", "") for e in root.iter() if e.get("id")]


def test_png_of_a_profile(tmp_path: Path) -> None:
    out = write_plot(make_run(), tmp_path / "breakdown.png")
    w, h = _png_size(out.read_bytes())
    assert 1500 <= w <= 2500 and 600 <= h <= 4000  # a slide-sized figure at 160 dpi
    assert [p.name for p in tmp_path.iterdir()] == ["breakdown.png"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # a normal file, not a private temp


def test_svg_has_every_bar_of_the_report(tmp_path: Path) -> None:
    run = make_run()
    data = write_plot(run, tmp_path / "breakdown.svg").read_bytes()
    ids = _svg_ids(data)
    # Per layer: one stacked bar per row (layers, then loss, zero_grad, unattributed).
    rows = {int(m.group(1)) for i in ids if (m := re.match(r"layers-bar-(\d+)-", i))}
    assert rows == set(range(len(run.layers) + 3))
    assert any(i.startswith("layers-bar-1-backward") for i in ids)
    # By kind: time beside parameters, one bar each per kind shown.
    kinds = [k for k, v in run.by_kind().items() if v.share or v.params_share]
    for series in ("time", "params"):
        assert sum(1 for i in ids if i.startswith(f"kinds-bar-{series}-")) == len(kinds)
    assert not any(i.startswith("kinds-bar-flops") for i in ids)
    text = data.decode()
    assert "Share by kind" in text and "Time per layer, in model order" in text
    assert "features.0" in text  # text stays text (svg.fonttype none)
    assert "<dc:date>" not in text  # reproducible: no timestamp


def test_sweep_plot_marks_the_crossover(tmp_path: Path) -> None:
    data = write_plot(SWEEP, tmp_path / "sweep.svg").read_bytes()
    ids = _svg_ids(data)
    assert sum(1 for i in ids if i.startswith("sweep-0-series-")) == 4
    assert "sweep-0-marker" in ids
    assert "crossover ≈ 11.3" in data.decode()
    _png_size(write_plot(SWEEP, tmp_path / "sweep.png").read_bytes())


def test_comparison_plot(tmp_path: Path) -> None:
    a, b = make_run(16), make_run(64, scale=3.0)
    data = write_plot(compare_view([a, b], ["b16", "b64"]), tmp_path / "c.svg").read_bytes()
    ids = _svg_ids(data)
    assert {i for i in ids if re.match(r"steps-bar-\d+-forward", i)} == {
        "steps-bar-0-forward", "steps-bar-1-forward"}
    assert sum(1 for i in ids if i.startswith("layers-bar-r1-")) == len(a.layers)


def test_cost_plot(tmp_path: Path) -> None:
    layer = {"name": "fc", "kind": "linear", "type": "Linear", "params": 10,
             "flops": {"forward": 200, "backward_input": 200, "backward_weight": 200,
                       "update": 30},
             "bytes_moved": {"forward": 8, "backward_input": 8, "backward_weight": 8,
                             "update": 8},
             "memory_bytes": {"weights": 40, "grads": 40, "optimizer_state": 40,
                              "saved_activations": 64, "output": 8}}
    loss = {**layer, "name": "", "kind": "loss", "type": "CrossEntropyLoss", "params": 0,
            "flops": {"forward": 0}, "memory_bytes": {"saved_activations": 4}}
    cost = {"schema": "layertime.cost/1", "model": "m", "batch_size": 2, "input_shape": [4],
            "dtype": "float32", "optimizer": "sgd", "headline": "fully connected: 100% of FLOPs",
            "layers": [layer], "loss": loss}
    ids = _svg_ids(render_plot(cost, "svg"))
    assert {i for i in ids if i.startswith("layers-bar-0-")} == {
        "layers-bar-0-forward", "layers-bar-0-backward_input", "layers-bar-0-backward_weight",
        "layers-bar-0-update"}


def test_format_from_suffix_and_bad_paths(tmp_path: Path) -> None:
    assert plot_format("a.PNG") == "png" and plot_format("b.svg") == "svg"
    for bad in ("a.pdf", "a", "a.png.txt"):
        with pytest.raises(LayertimeError, match=r"\.png or \.svg"):
            plot_format(bad)
    run = make_run()
    with pytest.raises(LayertimeError, match=r"\.png or \.svg"):
        write_plot(run, tmp_path / "x.jpg")
    with pytest.raises(LayertimeError, match="cannot write"):
        write_plot(run, tmp_path / "missing" / "x.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(LayertimeError, match="cannot write"):
        write_plot(run, tmp_path / "dir.png")
    assert [p.name for p in tmp_path.iterdir()] == ["dir.png"]
    with pytest.raises(LayertimeError, match="no such directory"):
        check_output(tmp_path / "missing" / "x.html")
    with pytest.raises(LayertimeError, match="directory"):
        check_output(tmp_path / "dir.png", plot=True)


@pytest.mark.slow
def test_plotting_leaves_pyplot_alone() -> None:
    """The CLI imports no matplotlib; a plot imports no pyplot and switches no backend,
    so plots work headless and beside a notebook's own figures alike."""
    code = ("import sys, layertime.cli; assert 'matplotlib' not in sys.modules, 'cli'; "
            "sys.path.insert(0, 'tests'); from test_render_plot import make_run; "
            "from layertime.render.plot import render_plot; render_plot(make_run(), 'png'); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; print('ok')")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_sweep_panels_line_up_and_their_titles_do_not_meet() -> None:
    """Two panels side by side: the same widths, one figure-wide legend, titles apart."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from layertime.render.plot import figure

    two_sizes = {
        "schema": "layertime.sweep/1",
        "points": [
            {"config": {"model": "smallnet", "batch_size": b, "image_size": img,
                        "device": "cpu", "dtype": "float32", "optimizer": "sgd"},
             "status": "ok", "run_id": i, "error": None, "step_s": 0.01 * b,
             "kinds": {"conv": c, "linear": 0.9 - c, "activation": 0.05, "step": 0.05}}
            for i, (img, b, c) in enumerate(
                (img, b, c) for img in (64, 224) for b, c in ((1, 0.2), (8, 0.4), (64, 0.7)))
        ],
    }
    fig = figure(two_sizes, title="sweep 3")

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert len(axes) >= 4
    assert not any(ax.get_legend() for ax in axes)  # the legend is the figure's, above
    # Pixel boxes (each column is a subfigure: its own coordinates).
    boxes = {ax: ax.get_window_extent(renderer) for ax in axes}
    widths = sorted({round(b.width) for b in boxes.values()})
    assert widths[-1] - widths[0] <= 2, widths  # every panel equally wide
    lefts = sorted({round(b.x0) for b in boxes.values()})
    assert len(lefts) == 2  # two columns, each aligned
    left_col = [ax for ax in axes if round(boxes[ax].x0) == lefts[0]]
    right_col = [ax for ax in axes if round(boxes[ax].x0) == lefts[1]]
    pairs = 0
    for left in left_col:
        for right in right_col:
            if abs(boxes[left].y1 - boxes[right].y1) < 3:  # the same row: tops line up
                title = left._left_title
                assert title.get_window_extent(renderer).x1 < boxes[right].x0, title.get_text()
                pairs += 1
    assert pairs >= 2  # rows line up across the columns


# -- transformers: roles and blocks (issue 11) -----------------------------------------------
def _legends_fit(fig: object) -> list[tuple[float, float]]:
    """Draws ``fig``; each legend's right edge and its column's, in pixels, after checking
    that every visible panel kept a real width (no legend squeezed it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    out = []
    for ax in fig.get_axes():  # type: ignore[attr-defined]
        if not ax.get_visible():
            continue
        assert ax.get_window_extent(renderer).width > 1.0 * fig.dpi, ax.get_title(loc="left")
        leg = ax.get_legend()
        if leg is not None:
            out.append((leg.get_window_extent(renderer).x1, ax.get_figure(root=False).bbox.x1))
    return out


def test_a_transformer_plot_draws_the_role_and_block_charts(tmp_path: Path) -> None:
    run = factories.transformer_run()
    ids = _svg_ids(write_plot(run, tmp_path / "gpt.svg").read_bytes())
    # Share by role: time and parameters for each of the 9 groups (the core has 0 params).
    assert sum(1 for i in ids if i.startswith("roles-bar-time-")) == 9
    assert sum(1 for i in ids if i.startswith("roles-bar-params-")) == 9
    # Time per block: two blocks, forward, backward and update each.
    assert {i for i in ids if i.startswith("blocks-bar-")} == {
        f"blocks-bar-{b}-{p}" for b in (0, 1) for p in ("forward", "backward", "update")}
    assert any(i.startswith("layers-bar-") for i in ids)
    w, h = _png_size(write_plot(run, tmp_path / "gpt.png").read_bytes())
    assert w >= 1200 and h > w * 0.7


def test_legends_stay_inside_their_column_and_leave_panels_their_width() -> None:
    """A legend wider than its panel wraps to fewer columns (the step-level entry of a
    CNN's charts; four metrics beside a transformer's roles) instead of running into the
    next panel or squeezing the panels of its column."""
    from layertime.render.plot import figure

    for obj in (make_run(), factories.transformer_run()):
        fits = _legends_fit(figure(obj))
        assert fits
        for right, edge in fits:
            assert right <= edge, (right, edge)


def test_a_seq_sweep_plot_marks_the_interpolated_crossover_under_one_legend() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from layertime.render.plot import figure
    from layertime.results.sweep import SweepResult
    from layertime.sweep import SweepPoint, seq_crossovers
    from test_sweep_seq import cfg, token_run

    points = [SweepPoint({**cfg(seq), "batch_size": b}, "ok", i,
                         dataclasses.replace(token_run(seq, att, 1 - att), batch_size=b))
              for i, (b, seq, att) in enumerate(
                  (b, seq, att) for b in (1, 4) for seq, att in ((128, 0.2), (512, 0.8)))]
    fig = figure(SweepResult(1, tuple(points), (), tuple(seq_crossovers(points))))
    FigureCanvasAgg(fig).draw()
    axes = [ax for ax in fig.get_axes() if ax.get_visible()]
    assert len(axes) == 2 + 2  # against length per batch size, against batch per length
    assert not any(ax.get_legend() for ax in axes)  # one legend, the figure's, on top
    marked = [t.get_text() for ax in axes for t in ax.texts]
    assert marked == ["crossover ≈ 256 (interpolated)"] * 2
    assert [ax.get_title(loc="left").split(" · ")[1] for ax in axes[:2]] == ["batch 1",
                                                                             "batch 4"]
