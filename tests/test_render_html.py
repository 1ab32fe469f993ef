"""The HTML report, opened in a real headless Chromium (Playwright driving the system browser).

Each report is checked for what a person sees: the charts drew the expected
number of bars, the page made no network request and logged no console
error, hovering shows exact numbers, the table sorts.  A screenshot of each
report is kept under ``artifacts/`` (gitignored).  The browser is launched
once for the module.  A missing browser is a failure, not a skip:
``bash scripts/setup.sh`` installs it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layertime.cli import main
from layertime.errors import LayertimeError
from layertime.render.html import render_html, write_html
from layertime.render.views import compare_view, profile_view
from layertime.render.views.style import fmt_ms
from layertime.results.run import Run
from layertime.store import Store

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

TINY = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(),
                                        nn.Linear(32, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))

def build(num_classes=10):
    return Net(num_classes)
'''

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = (os.environ.get("LAYERTIME_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))
    if not path:
        pytest.fail("no Chromium: the HTML report tests need it; run `bash scripts/setup.sh` "
                    "(apt-get install chromium) or set LAYERTIME_CHROMIUM", pytrace=False)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("model") / "tiny.py"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def run(one_thread: None, model_file: Path) -> Run:
    import layertime

    return layertime.profile(f"{model_file}:build", input_shape=(3, 16, 16), num_classes=10,
                             batch_size=4, steps=2, warmup_steps=0)


@pytest.fixture(scope="module")
def cost(model_file: Path) -> dict[str, Any]:
    from layertime.cost import estimate, get_profile, predict

    c = estimate(f"{model_file}:build", batch_size=4, input_shape=(3, 16, 16), num_classes=10)
    return predict(c, get_profile("v100")).to_dict()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium for the module, with a fresh profile directory."""
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `bash scripts/setup.sh` "
                    "(pip install -e '.[test]')", pytrace=False)
    pw = sync_playwright().start()
    try:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=exe,
            headless=True,
            args=LAUNCH_ARGS,
            viewport={"width": 1366, "height": 800},
        )
    except Exception as e:
        pw.stop()
        pytest.fail(f"Chromium ({exe}) did not start: {e}", pytrace=False)
    try:
        yield ctx
    finally:
        ctx.close()
        pw.stop()


class Page:
    """A report opened in the browser, with every request and console error recorded."""

    def __init__(self, ctx: Any, path: Path) -> None:
        self.url = path.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = ctx.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(
            f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", dialog)
        self.page.goto(self.url)
        self.page.wait_for_selector("html[data-rendered]", timeout=15_000)

    def check_clean(self) -> None:
        assert self.page.get_attribute("html", "data-rendered") == "ok", self.errors
        others = [u for u in self.requests if u != self.url]
        assert others == [], f"the report made network requests: {others}"
        assert self.errors == [], self.errors
        assert self.dialogs == []

    def count(self, selector: str) -> int:
        return int(self.page.locator(selector).count())

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        out = ARTIFACTS / name
        self.page.screenshot(path=str(out), full_page=True)
        assert out.stat().st_size > 10_000
        return out

    def close(self) -> None:
        self.page.close()


def _open(browser: Any, tmp_path: Path, obj: Any, name: str, **kw: Any) -> Page:
    path = tmp_path / name
    write_html(obj, path, **kw)
    return Page(browser, path)


def _step_rows(run: Run) -> int:
    p = run.phases
    return 2 + (p.data_s > 0) + (p.unattributed_s > 0)  # loss, zero_grad, data?, unattributed?


def _shown_kinds(run: Run) -> list[str]:
    return [k for k, v in run.by_kind().items() if v.share or v.params_share]


# -- a profile -------------------------------------------------------------------
@pytest.mark.slow
def test_profile_report_draws_every_bar_and_loads_nothing(browser: Any, run: Run,
                                                          tmp_path: Path) -> None:
    pg = _open(browser, tmp_path, run, "profile.html")
    try:
        pg.check_clean()
        # The answer first: the headline is the page's heading, before any chart.
        assert pg.page.inner_text("h1.headline") == run.headline()
        first = pg.page.evaluate(
            "document.querySelector('h1.headline').compareDocumentPosition("
            "document.querySelector('svg.chart')) & Node.DOCUMENT_POSITION_FOLLOWING")
        assert first
        n_rows = len(run.layers) + _step_rows(run)
        assert pg.count("svg[data-chart=layers] g.bar") == n_rows
        # Model order: the bars' labels follow the run's layers.
        keys = pg.page.eval_on_selector_all("svg[data-chart=layers] g.bar",
                                            "els => els.map(e => e.dataset.key)")
        assert keys[: len(run.layers)] == [r.name for r in run.layers]
        # Forward, backward and update segments where there is time.
        for series in ("forward", "backward", "update", "step"):
            assert pg.count(f"svg[data-chart=layers] rect.seg[data-series={series}]") > 0
        assert pg.count("svg[data-chart=layers] rect.seg[data-series=backward_input]") == 0
        # By kind: time beside parameters, and no FLOP or memory bar (no counts given);
        # the layer kinds' share of saved activations (measured) beside them.
        kinds = _shown_kinds(run)
        layer_kinds = [k for k in kinds if k in {r.kind for r in run.layers}]
        assert pg.count("svg[data-chart=kinds] rect.bar") == 2 * len(kinds) + len(layer_kinds)
        assert pg.count("svg[data-chart=kinds] rect.bar[data-series=saved]") == len(layer_kinds)
        assert pg.count("svg[data-chart=kinds] rect.bar[data-series=flops]") == 0
        assert pg.count("svg[data-chart=kinds] rect.bar[data-series=memory]") == 0
        assert pg.count("svg[data-chart=kind-phases] g.bar") == sum(
            1 for v in run.by_kind().values() if v.time_s)
        # The table: one row per bar, and no FLOP/memory column.
        assert pg.count("#table-rows tbody tr") == n_rows
        headers = pg.page.eval_on_selector_all("#table-rows thead th",
                                               "els => els.map(e => e.textContent)")
        assert "total ms" in headers and "share" in headers
        assert not any("FLOP" in h or "memory" in h for h in headers)
        # Configuration and environment.
        text = pg.page.inner_text("main")
        assert "Configuration" in text and "Environment" in text
        assert run.environment.torch in text and "cpu-self-time" in text
        pg.screenshot("report-profile.png")
    finally:
        pg.close()


@pytest.mark.slow
def test_hover_shows_exact_numbers(browser: Any, run: Run, tmp_path: Path) -> None:
    pg = _open(browser, tmp_path, run, "hover.html")
    try:
        conv = next(r for r in run.layers if r.kind == "conv")
        bar = pg.page.locator(f'svg[data-chart=layers] g.bar[data-key="{conv.name}"] rect.seg')
        bar.first.hover()
        tip = pg.page.locator("#tip")
        assert tip.is_visible()
        text = tip.inner_text()
        assert conv.name in text
        assert f"forward: {fmt_ms(conv.forward_s)} ms" in text
        assert f"backward: {fmt_ms(conv.backward_s)} ms" in text
        assert f"total: {fmt_ms(conv.total_s)} ms" in text
        # A kind's bar: its exact share.
        kt = run.by_kind()["linear"]
        pg.page.locator('svg[data-chart=kinds] g.group[data-key=linear] '
                        'rect.bar[data-series=time]').hover()
        assert f"time: {kt.share * 100:.2f}%" in tip.inner_text()
        pg.check_clean()
    finally:
        pg.close()


@pytest.mark.slow
def test_table_sorts_and_restores_model_order(browser: Any, run: Run, tmp_path: Path) -> None:
    pg = _open(browser, tmp_path, run, "sort.html")
    try:
        def column(i: int) -> list[str]:
            return pg.page.eval_on_selector_all(
                f"#table-rows tbody tr td:nth-child({i + 1})", "els => els.map(e => e.textContent)")

        headers = pg.page.eval_on_selector_all("#table-rows thead th",
                                               "els => els.map(e => e.textContent)")
        total = next(i for i, h in enumerate(headers) if h.startswith("total ms"))
        layer = headers.index("layer")
        original = column(layer)

        def ms(texts: list[str]) -> list[float]:
            return [float(t.replace(",", "")) for t in texts]

        pg.page.locator("#table-rows thead th button", has_text="total ms").click()
        assert ms(column(total)) == sorted(ms(column(total)), reverse=True)
        assert pg.page.get_attribute(f"#table-rows thead th:nth-child({total + 1})",
                                     "aria-sort") == "descending"
        pg.page.locator("#table-rows thead th button", has_text="total ms").click()
        assert ms(column(total)) == sorted(ms(column(total)))
        pg.page.locator("#table-rows thead th button", has_text="layer").click()
        assert column(layer) != original or sorted(original) == original
        pg.page.locator("#table-rows thead th button", has_text="#").click()
        pg.page.locator("#table-rows thead th button", has_text="#").click()
        assert column(layer) == original
        pg.check_clean()
    finally:
        pg.close()


@pytest.mark.slow
def test_joined_with_cost_adds_flops_memory_and_predictions(browser: Any, run: Run,
                                                            cost: dict[str, Any],
                                                            tmp_path: Path) -> None:
    pg = _open(browser, tmp_path, run, "joined.html", cost=cost)
    try:
        pg.check_clean()
        kinds = _shown_kinds(run)
        for series in ("time", "params"):
            assert pg.count(f"svg[data-chart=kinds] rect.bar[data-series={series}]") == len(kinds)
        # FLOP, memory and predicted shares only for kinds with counted rows (not step/zero_grad).
        counted = {r["kind"] for r in cost["layers"]} | {"loss"}
        for series in ("flops", "memory", "predicted"):
            assert pg.count(f"svg[data-chart=kinds] rect.bar[data-series={series}]") == len(
                [k for k in kinds if k in counted])
        headers = pg.page.eval_on_selector_all("#table-rows thead th",
                                               "els => els.map(e => e.textContent)")
        for h in ("FLOPs", "FLOPs %", "memory", "memory %", "predicted ms"):
            assert h in headers, headers
        # Predicted against measured: one point per row that has both, above zero.
        by_name = {r["name"]: r for r in cost["layers"]}
        expected = sum(1 for r in run.layers if r.name in by_name and r.total_s > 0
                       and by_name[r.name]["predicted"]["total_s"] > 0)
        expected += 1 if run.phases.loss_s > 0 and cost["loss"]["predicted"]["total_s"] > 0 else 0
        assert pg.count("svg[data-chart=predicted] circle.pt") == expected
        assert "V100" in pg.page.inner_text("#panel-predicted")
        pg.screenshot("report-profile-with-cost.png")
    finally:
        pg.close()


@pytest.mark.slow
def test_cost_report(browser: Any, cost: dict[str, Any], tmp_path: Path) -> None:
    pg = _open(browser, tmp_path, cost, "cost.html")
    try:
        pg.check_clean()
        assert pg.page.inner_text("h1.headline") == cost["headline"]
        rows = len(cost["layers"]) + 1
        assert pg.count("svg[data-chart=layers] g.bar") == rows
        assert pg.count("svg[data-chart=predicted-layers] g.bar") == rows
        # Backward FLOPs split into input and weight gradients.
        assert pg.count("svg[data-chart=layers] rect.seg[data-series=backward_weight]") > 0
        assert pg.count("svg[data-chart=layers] rect.seg[data-series=backward_input]") > 0
        assert pg.count("#table-rows tbody tr") == rows
        pg.screenshot("report-cost.png")
    finally:
        pg.close()


# -- a sweep and a comparison ---------------------------------------------------------
def _sweep_summary() -> dict[str, Any]:
    points = []
    batches = (1, 4, 16, 64)
    for image in (32, 64):
        for i, b in enumerate(batches):
            linear = 0.6 - 0.15 * i
            conv = 0.2 + 0.16 * i
            kinds = {"conv": conv, "linear": linear, "activation": 0.05, "pool": 0.04,
                     "loss": 0.002, "step": 1 - conv - linear - 0.092, "unattributed": 0.0}
            cfg = {"model": "tiny", "batch_size": b, "image_size": image, "device": "auto",
                   "dtype": "float32", "optimizer": "sgd", "steps": 3, "warmup_steps": 1}
            points.append({"config": cfg, "status": "ok", "run_id": len(points) + 2,
                           "error": None, "step_s": 0.001 * b, "kinds": kinds})
    points.append({"config": {**points[0]["config"], "batch_size": 4096}, "status": "failed",
                   "run_id": 99, "error": "out of memory", "step_s": None, "kinds": None})
    crossovers = [{"group": {"model": "tiny", "image_size": im, "device": "cpu",
                             "dtype": "float32", "optimizer": "sgd"},
                   "batch_size": 5.3, "below": 4, "above": 16} for im in (32, 64)]
    return {"schema": "layertime.sweep/1", "points": points, "crossovers": crossovers}


@pytest.mark.slow
def test_sweep_report_marks_the_crossover(browser: Any, tmp_path: Path) -> None:
    summary = _sweep_summary()
    pg = _open(browser, tmp_path, summary, "sweep.html", title="sweep 1")
    try:
        pg.check_clean()
        shown = 5  # conv, fc, activation, pool, step: loss (0.2%) and unattributed are left out
        charts = pg.page.eval_on_selector_all("svg.chart", "els => els.map(e => e.dataset.chart)")
        # Against batch size, one chart per image size; against image size, one per batch size.
        assert len(charts) == 2 + 4
        first = "svg[data-chart=sweep-0]"
        assert pg.count(f"{first} circle.pt") == shown * 4
        assert pg.count(f"{first} line.marker") == 1
        assert "crossover ≈ 5.3" in pg.page.inner_text("#panel-sweep-0")
        assert pg.count("svg[data-chart=sweep-2] line.marker") == 0  # image-size axis
        assert pg.count("svg[data-chart=sweep-2] circle.pt") == shown * 2
        assert pg.count("#table-points tbody tr") == len(summary["points"])
        assert "crossovers at batch ~5.3 (image 32), ~5.3 (image 64)" in pg.page.inner_text("h1.headline")
        assert "out of memory" in pg.page.inner_text("main")
        pg.screenshot("report-sweep.png")
    finally:
        pg.close()


@pytest.mark.slow
def test_compare_report(browser: Any, run: Run, tmp_path: Path) -> None:
    # The same net at twice the batch: every forward twice as long, the step longer by as much.
    extra = sum(r.forward_s for r in run.layers)
    other = dataclasses.replace(
        run, batch_size=8,
        layers=tuple(dataclasses.replace(r, forward_s=r.forward_s * 2) for r in run.layers),
        phases=dataclasses.replace(run.phases, forward_s=run.phases.forward_s + extra),
        profiled_step_samples_s=tuple(s + extra for s in run.profiled_step_samples_s),
        step_samples_s=tuple(s + extra for s in run.step_samples_s))
    view = compare_view([run, other], ["#1 b4", "#2 b8"])
    pg = _open(browser, tmp_path, view, "compare.html")
    try:
        pg.check_clean()
        kinds = [k for k in run.by_kind() if run.by_kind()[k].time_s]
        assert pg.count("svg[data-chart=kinds] rect.bar") == 2 * len(kinds)
        assert pg.count("svg[data-chart=steps] g.bar") == 2
        assert pg.count("svg[data-chart=layers] rect.bar") == 2 * len(run.layers)
        assert pg.count("#table-rows tbody tr") == len(run.layers)
        pg.screenshot("report-compare.png")
    finally:
        pg.close()


@pytest.mark.slow
def test_layer_benchmark_adds_the_isolated_split(browser: Any, run: Run, tmp_path: Path) -> None:
    layers = [{"name": r.name, "kind": r.kind, "type": r.type, "calls": 1, "inputs": [],
               "forward_s": 0.001, "backward_input_s": 0.002 if i else 0.0,
               "backward_weight_s": 0.003 if r.params else 0.0, "params": r.params,
               "backward_s": 0.0, "total_s": 0.0}
              for i, r in enumerate(run.layers) if r.name]
    bench = {"schema": "layertime.bench/1", "model": run.model, "device": "cpu", "batch_size": 4,
             "input_shape": [3, 16, 16], "dtype": "float32", "warmup": 1, "repeats": 3,
             "total_s": 0.0, "layers": layers,
             "environment": dataclasses.asdict(run.environment), "created": "",
             "in_situ": run.to_dict()}
    pg = _open(browser, tmp_path, bench, "bench.html")
    try:
        pg.check_clean()
        assert pg.count("svg[data-chart=alone] g.bar") == len(layers)
        assert pg.count("svg[data-chart=alone] rect.seg[data-series=backward_weight]") == sum(
            1 for r in layers if r["params"])
        assert pg.count("svg[data-chart=layers] g.bar") == len(run.layers) + _step_rows(run)
    finally:
        pg.close()
    alone = render_html({**bench, "in_situ": None})
    assert '"type":"bench"' in alone


# -- self-contained, escaped ------------------------------------------------------------
def test_report_is_self_contained(run: Run) -> None:
    html = render_html(run)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"<(link|script|img|iframe)[^>]+(src|href)=[\"']?(https?:|//)", html)
    assert "@import" not in html and "url(" not in html
    assert "<script src" not in html
    # Data is inline.
    assert json.dumps(run.headline())[1:-1] in html or run.headline() in html


@pytest.mark.slow
def test_hostile_names_are_text_not_markup(browser: Any, run: Run, tmp_path: Path) -> None:
    evil = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'
    hostile = dataclasses.replace(run, model=evil, layers=tuple(
        dataclasses.replace(r, name=evil + r.name) if r.kind == "conv" else r
        for r in run.layers))
    pg = _open(browser, tmp_path, hostile, "evil.html")
    try:
        pg.check_clean()  # no dialog, no error, no request for "x"
        assert evil in pg.page.inner_text("h1.headline")
        assert pg.count("img") == 0
    finally:
        pg.close()


def test_view_has_no_flop_columns_without_counts(run: Run) -> None:
    view = profile_view(run)
    labels = [c["label"] for c in view["table"]["columns"]]
    assert not any("FLOP" in x or "memory" in x or "predicted" in x for x in labels)
    # Saved activations are measured (the run's memory step), not counted: their bar stays.
    assert [s["key"] for s in view["charts"][0]["series"]] == ["time", "params", "saved"]


def test_counts_without_predictions_get_share_columns(run: Run, cost: dict[str, Any]) -> None:
    counts = {k: v for k, v in cost.items() if k not in ("prediction", "predicted")}
    counts["layers"] = [{k: v for k, v in r.items() if k != "predicted"} for r in cost["layers"]]
    counts["loss"] = {k: v for k, v in cost["loss"].items() if k != "predicted"}
    view = profile_view(run, cost=counts)
    labels = [c["label"] for c in view["table"]["columns"]]
    assert "FLOPs %" in labels and "memory %" in labels and "predicted ms" not in labels
    rows = view["table"]["rows"]
    first = next(r for r in cost["layers"] if r["name"] == run.layers[0].name)
    flops_total = sum(sum(r["flops"].values()) for r in cost["layers"] + [cost["loss"]]
                      if r["name"] in {x.name for x in run.layers} | {"(loss)"})
    col = labels.index("FLOPs %")
    assert rows[0]["cells"][col]["v"] == pytest.approx(sum(first["flops"].values()) / flops_total)
    mem = labels.index("memory")
    m = first["memory_bytes"]
    assert rows[0]["cells"][mem]["v"] == (
        m["weights"] + m["grads"] + m["optimizer_state"] + m["saved_activations"])  # not output


def test_joining_a_different_model_is_an_error(run: Run, cost: dict[str, Any]) -> None:
    other = {**cost, "layers": [{**r, "name": "zz" + r["name"]} for r in cost["layers"]]}
    with pytest.raises(LayertimeError, match="no layer names"):
        profile_view(run, cost=other)


# -- the command line ---------------------------------------------------------------
@pytest.mark.slow
def test_cli_profile_writes_html_plot_and_trace(browser: Any, model_file: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    html, png, trace = tmp_path / "r.html", tmp_path / "r.png", tmp_path / "t.json"
    rc = main(["profile", f"{model_file}:build", "--input-shape", "3,16,16", "--num-classes",
               "10", "-b", "4", "--steps", "1", "--warmup", "0", "--quiet", "--db", str(db),
               "--html", str(html), "--plot", str(png), "--trace", str(trace)])
    assert rc == 0, capsys.readouterr().err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(trace.read_text())["traceEvents"]
    pg = Page(browser, html)
    try:
        pg.check_clean()
    finally:
        pg.close()
    with Store(db) as store:
        (stored,) = store.list()
    # The stored configuration holds no output paths.
    assert not {"html", "plot", "trace"} & set(stored.config)

    again = tmp_path / "again.html"
    assert main(["report", str(stored.id), "--html", str(again), "--db", str(db)]) == 0
    assert again.read_text().count('id="layertime-data"') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["again.html", "r.html", "r.png", "runs.db", "t.json"]
        + [p.name for p in tmp_path.iterdir() if p.name.startswith("runs.db-")])


def test_cli_report_of_stored_sweep_cost_and_comparison(run: Run, cost: dict[str, Any],
                                                        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with Store(db) as store:
        a = store.add("profile", model=run.model, config={"a": 1}, result=run.to_dict())
        b = store.add("profile", model=run.model, config={"b": 2}, result=run.to_dict())
        c = store.add("cost", model=run.model, config={"c": 3}, result=cost)
        s = store.add("sweep", model="tiny", config={}, result=_sweep_summary())
    for ids, name in (([s], "sweep"), ([c], "cost"), ([a, b], "compare"), ([a, c], "joined")):
        out = tmp_path / f"{name}.html"
        assert main(["report", *map(str, ids), "--html", str(out), "--db", str(db)]) == 0
        data = out.read_text()
        kind = {"joined": "profile"}.get(name, name)
        assert f'"type":"{kind}"' in data
    assert "FLOPs %" in (tmp_path / "joined.html").read_text()


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path: Path, run: Run,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "runs.db"
    with Store(db) as store:
        rid = store.add("profile", model=run.model, config={}, result=run.to_dict())
        failed = store.add("profile", model="x", config={"x": 1}, status="failed",
                           error="out of memory")
    before = set(tmp_path.iterdir())

    def err(argv: list[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 1
        text = capsys.readouterr().err
        assert text.startswith("layertime: error: ") and text.count("\n") == 1, text
        return text

    assert "no run 9999" in err(["report", "9999", "--html", str(tmp_path / "x.html"),
                                 "--db", str(db)])
    assert "out of memory" in err(["report", str(failed), "--html", str(tmp_path / "x.html"),
                                   "--db", str(db)])
    assert "no such directory" in err(["report", str(rid), "--html",
                                       str(tmp_path / "missing" / "x.html"), "--db", str(db)])
    assert "is a directory" in err(["report", str(rid), "--html", str(tmp_path), "--db", str(db)])
    assert ".png or .svg" in err(["report", str(rid), "--plot", str(tmp_path / "x.pdf"),
                                  "--db", str(db)])
    assert "needs --html" in err(["report", str(rid), "--db", str(db)])
    # A bad output path fails before any measuring starts.
    assert "no such directory" in err(["profile", "no-such-model-at-all", "--html",
                                       str(tmp_path / "missing" / "x.html"), "--db", str(db)])
    assert set(tmp_path.iterdir()) == before


def test_failed_write_leaves_no_temporary_file(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.mkdir()  # a directory where the file should go: the rename fails
    with pytest.raises(LayertimeError, match="cannot write"):
        write_html(run, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert list(target.iterdir()) == []


def test_screenshot_dir_is_ignored_by_git() -> None:
    ignore = (Path(__file__).resolve().parent.parent / ".gitignore").read_text()
    assert "/artifacts/" in ignore.split()

