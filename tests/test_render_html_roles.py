"""A transformer's HTML report in headless Chromium (issue 11): roles and blocks on the page.

The browser, the page helper and their rules (no request leaves the file, no console
error) are those of ``test_render_html``.  Screenshots and the plot of a GPT-2 run are kept
under ``artifacts/`` (gitignored), to look at as a newcomer would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from _tiny_transformers import tiny
from layertime.cli import main
from layertime.render.views import profile_view
from layertime.render.views.roles import CORE_LABEL
from layertime.results.run import Run
from layertime.results.sweep import SweepResult
from layertime.sweep import SweepPoint, seq_crossovers
from test_render_html import ARTIFACTS, Page, _open, browser
from test_sweep_seq import cfg, token_run

__all__ = ["browser"]  # the module's Chromium (a fixture of test_render_html)

pytestmark = pytest.mark.slow

GPT2 = ["hf:gpt2", *[a for kv in tiny("gpt2") for a in ("--config", kv)], "--seq-len", "16",
        "-b", "2"]


@pytest.fixture(scope="module")
def gpt2(one_thread: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GPT-2 profiled and counted from the command line: its run, report and plot."""
    d = tmp_path_factory.mktemp("gpt2")
    out = {k: d / name for k, name in (("run", "run.json"), ("html", "run.html"),
                                       ("png", "run.png"), ("cost", "cost.json"),
                                       ("cost_html", "cost.html"))}
    assert main(["profile", *GPT2, "--steps", "1", "--warmup", "0", "--quiet", "--no-store",
                 "--json", str(out["run"]), "--html", str(out["html"]),
                 "--plot", str(out["png"])]) == 0
    assert main(["cost", *GPT2, "--device-profile", "h100", "--quiet", "--no-store",
                 "--json", str(out["cost"]), "--html", str(out["cost_html"])]) == 0
    return out


def _texts(pg: Page, selector: str) -> list[str]:
    return list(pg.page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)"))


def test_a_transformer_profile_shows_roles_then_layers_and_blocks(browser: Any,
                                                                  gpt2: dict[str, Path]) -> None:
    run = Run.load(gpt2["run"])
    view = profile_view(run)
    roles = next(c for c in view["charts"] if c["id"] == "roles")
    pg = Page(browser, gpt2["html"])
    try:
        pg.check_clean()
        assert pg.page.inner_text("h1.headline") == run.headline()
        # The answer first: the first chart is the share by role (then, in two columns,
        # the layers beside the blocks and kinds).
        charts = pg.page.eval_on_selector_all("svg.chart", "els => els.map(e => e.dataset.chart)")
        assert charts[0] == "roles"
        memory = ["memory-layers", "memory-step", "memory-peak"] if run.memory else []  # issue 20
        assert sorted(charts) == sorted(["roles", "layers", "blocks", "kinds", "kind-phases"]
                                        + memory)
        assert pg.count("svg[data-chart=roles] g.group") == len(roles["rows"])
        labels = _texts(pg, "svg[data-chart=roles] g.group text.lab")
        assert labels[:3] == ["attention", CORE_LABEL, "MLP"]
        # Time beside parameters for each role; the core has no parameters of its own.
        assert pg.count("svg[data-chart=roles] rect.bar[data-series=time]") == len(roles["rows"])
        # Hovering the core says it is part of attention.
        pg.page.locator("svg[data-chart=roles] g.group[data-key=attention-core] "
                        "rect.bar[data-series=time]").hover()
        tip = pg.page.inner_text("#tip")
        assert CORE_LABEL in tip and "included in attention's bar" in tip
        att = run.roles()["attention"]
        assert f"time: {att.core_share * 100:.2f}%" in tip
        # Time per block: one bar per block, forward, backward and update stacked.
        assert _texts(pg, "svg[data-chart=blocks] g.bar text.lab") == ["transformer.h.0",
                                                                         "transformer.h.1"]
        for phase in ("forward", "backward", "update"):
            assert pg.count(f"svg[data-chart=blocks] rect.seg[data-series={phase}]") == 2
        # The table: a role column beside the kind, one role per layer.
        headers = _texts(pg, "#table-rows thead th")
        col = headers.index("role")
        assert headers[col - 1] == "kind"
        cells = _texts(pg, f"#table-rows tbody tr td:nth-child({col + 1})")
        assert cells[: len(run.layers)] == [
            {"mlp": "MLP", "embedding": "embeddings", "norm": "norms"}.get(r.role or "", r.role)
            for r in run.layers]
        text = pg.page.inner_text("main")
        assert "Roles (layertime.roles)" in text and "tied weights" in text
        pg.page.mouse.move(0, 0)  # the tip away: the screenshot shows the page as it opens
        shot = pg.screenshot("report-profile-gpt2.png")
    finally:
        pg.close()
    png = ARTIFACTS / "plot-profile-gpt2.png"
    shutil.copyfile(gpt2["png"], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.is_file()


def test_a_token_cost_report_shows_role_shares_and_flops_per_block(browser: Any,
                                                                   gpt2: dict[str, Path]) -> None:
    cost = json.loads(gpt2["cost"].read_text())
    pg = Page(browser, gpt2["cost_html"])
    try:
        pg.check_clean()
        assert pg.page.inner_text("h1.headline") == cost["headline"]
        for series in ("flops", "params", "memory", "predicted"):
            assert pg.count(f"svg[data-chart=roles] rect.bar[data-series={series}]") > 0
        assert pg.count("svg[data-chart=blocks] g.bar") == 2
        assert "role" in _texts(pg, "#table-rows thead th")
        pg.screenshot("report-cost-gpt2.png")
    finally:
        pg.close()


def test_a_seq_sweep_report_marks_where_attention_overtakes_the_mlp(browser: Any,
                                                                     tmp_path: Path) -> None:
    # Attention 0.2 -> 0.8 of the step between seq 128 and 512: even at 256 in log2(seq).
    points = [SweepPoint(cfg(seq), "ok", i, token_run(seq, att, 1 - att))
              for i, (seq, att) in enumerate(((64, 0.1), (128, 0.2), (512, 0.8), (1024, 0.9)))]
    result = SweepResult(1, tuple(points), (), tuple(seq_crossovers(points)))
    pg = _open(browser, tmp_path, result.summarised(), "sweep-seq.html", title="sweep 1")
    try:
        pg.check_clean()
        assert "attention overtakes the MLP at sequence length ~256 (interpolated)" in \
            pg.page.inner_text("h1.headline")
        assert pg.count("svg[data-chart=sweep-0] line.marker") == 1
        assert "crossover ≈ 256 (interpolated)" in pg.page.inner_text("#panel-sweep-0")
        assert pg.count("svg[data-chart=sweep-0] circle.pt[data-series=attention]") == 4
        assert "seq" in _texts(pg, "#table-points thead th")
        pg.screenshot("report-sweep-seq.png")
    finally:
        pg.close()
