"""Compiled models end to end on the CPU: real ``torch.compile`` (Inductor) of tiny nets.

Each compilation takes seconds here, so every net is tiny and each compiled
run is shared by the tests that read it.  The assertions are about
attribution (which layers got time, in which phase), sums, fused splits,
counts and messages, never about how long anything took.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import layertime
from layertime.measure.compiled.collector import CompileOptions
from layertime.render.table import render_text
from layertime.results.run import Run

pytestmark = pytest.mark.slow

SHAPE = (3, 8, 8)


class Chain(nn.Module):
    """conv -> bn -> relu -> flatten -> linear: Inductor fuses bn and relu (and their backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.relu(self.bn(self.conv(x))), 1))


class Twice(nn.Module):
    """One Linear called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(3 * 8 * 8, 3 * 8 * 8)
        self.act = nn.Tanh()
        self.head = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return self.head(self.shared(self.act(self.shared(x))))


class Broken(nn.Module):
    """A graph break between the conv part and the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv(x))
        torch._dynamo.graph_break()
        return self.fc(torch.flatten(x, 1))


class SharedAct(nn.Module):
    """One ReLU registered twice: ``act`` after the conv, and ``head.1`` in a Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(4 * 8 * 8, 32), self.act, nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.act(self.conv(x)), 1))


@pytest.fixture(autouse=True)
def _fresh_dynamo(one_thread: None) -> Iterator[None]:
    """Each test starts from Dynamo's empty cache: a second instance of a class whose
    forward was compiled before could reuse that graph, and nothing would compile."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _profile(net: nn.Module, options: CompileOptions | bool = True) -> Run:
    torch.manual_seed(0)
    return layertime.profile(
        net, batch_size=4, input_shape=SHAPE, num_classes=10, device="cpu", steps=2,
        compile=options,
    )


@pytest.fixture(scope="module")
def chain_run() -> Run:
    return _profile(Chain())


def _row(run: Run, name: str) -> layertime.LayerRow:
    return next(r for r in run.layers if r.name == name)


def test_chain_every_layer_gets_forward_and_backward_time(chain_run: Run) -> None:
    c = chain_run.compiled
    assert c is not None and c.provenance and c.message is None
    for name in ("conv", "bn", "relu", "fc"):
        row = _row(chain_run, name)
        assert row.forward_s > 0, name
        assert row.backward_s > 0, name
    assert c.unplaced_s == 0 and not c.unplaced_kernels
    assert c.graph_breaks == ()
    assert {g.phase for g in c.graphs} == {"forward", "backward"}
    assert all(g.placed_s > 0 for g in c.graphs)


def test_chain_known_fusion_is_a_group_of_bn_and_relu(chain_run: Run) -> None:
    c = chain_run.compiled
    assert c is not None
    forward = [g for g in c.fused_groups if g.phase == "forward"]
    assert any({"bn", "relu"} <= set(g.members) for g in forward)
    backward = [g for g in c.fused_groups if g.phase == "backward"]
    assert any({"bn", "relu"} <= set(g.members) for g in backward)


def test_fused_split_adds_up_to_each_group(chain_run: Run) -> None:
    c = chain_run.compiled
    assert c is not None and c.fused_groups
    for g in c.fused_groups:
        assert set(g.split_s) == set(g.members)
        assert sum(g.split_s.values()) == pytest.approx(g.time_s, rel=1e-9)
        assert all(v >= 0 for v in g.split_s.values())


def test_rows_add_up_to_the_profiled_step(chain_run: Run) -> None:
    assert chain_run.phases.total_s == pytest.approx(chain_run.profiled_step_s, rel=1e-9)
    # The compiled call's own time outside kernels is a row of its own, not unattributed.
    c = chain_run.compiled
    assert c is not None and c.wrapper_s > 0
    assert chain_run.phases.compiled_wrapper_s == pytest.approx(c.wrapper_s, rel=1e-9)
    assert "compiled wrapper (step)" in render_text(chain_run, width=100)
    kinds = chain_run.by_kind()
    assert sum(k.share for k in kinds.values()) == pytest.approx(1.0)


def test_compilation_is_measured_apart(chain_run: Run) -> None:
    c = chain_run.compiled
    assert c is not None
    assert c.compile_steps >= 1 and c.compile_s is not None and c.compile_s > 0
    assert [x.compile_id for x in c.compilations][:1] and all(x.reason is None for x in c.compilations)
    assert c.dropped_steps == 0
    assert chain_run.warmup_steps >= 2  # the compiling step and one that compiled nothing
    assert len(chain_run.step_samples_s) == 2 and len(chain_run.profiled_step_samples_s) == 2


def test_compiled_run_round_trips_and_renders(chain_run: Run) -> None:
    again = Run.from_json(chain_run.to_json())
    assert again.compiled == chain_run.compiled
    assert "compiled" in json.loads(chain_run.to_json())
    text = render_text(chain_run, width=200)
    assert "compiled: torch.compile backend inductor" in text
    assert "fused groups" in text
    assert "compiled)" in chain_run.headline()


def test_module_called_twice_counts_two_calls() -> None:
    run = _profile(Twice())
    shared = _row(run, "shared")
    assert shared.calls == 2
    assert shared.forward_s > 0 and shared.backward_s > 0
    assert _row(run, "head").calls == 1
    assert run.compiled is not None and run.compiled.unplaced_s == 0


def test_graph_break_is_listed_and_both_graphs_are_attributed() -> None:
    run = _profile(Broken())
    c = run.compiled
    assert c is not None
    assert len(c.graph_breaks) == 1
    assert "graph_break" in c.graph_breaks[0].reason
    forward = [g for g in c.graphs if g.phase == "forward"]
    assert len(forward) == 2
    for name in ("conv", "fc"):
        row = _row(run, name)
        assert row.forward_s > 0 and row.backward_s > 0, name
    assert c.unplaced_s == 0
    assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)


def test_without_provenance_one_line_and_per_graph_totals() -> None:
    run = _profile(Chain(), CompileOptions(backend="aot_eager"))
    c = run.compiled
    assert c is not None and not c.provenance
    assert c.message is not None and "\n" not in c.message
    assert c.message.startswith("no kernel provenance: backend 'aot_eager' is not Inductor")
    assert c.graphs and all(g.time_s > 0 and g.placed_s == 0 for g in c.graphs)
    for row in run.layers:
        assert row.forward_s == 0, row.name
    # Only gradient accumulation (placed by gradient shape) reaches the layers.
    assert sum(r.backward_s for r in run.layers) == pytest.approx(c.accumulate_placed_s)
    assert run.phases.unattributed_s >= sum(g.time_s for g in c.graphs) * 0.999
    assert c.message in render_text(run, width=300)


def _loop(model: nn.Module, net: nn.Module, steps: int = 6) -> Run:
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(4, *SHAPE)
    y = torch.randint(0, 10, (4,))
    with layertime.Profiler(model, opt, warmup_steps=1) as prof:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            prof.step()
    return prof.result()


def test_profiler_with_a_user_compiled_model() -> None:
    net = Chain()
    run = _loop(torch.compile(net), net)
    c = run.compiled
    assert c is not None and c.provenance and c.message is None
    assert run.model == "Chain"
    assert [r.name for r in run.layers][:2] == ["", "conv"]
    assert _row(run, "bn").forward_s > 0 and _row(run, "fc").backward_s > 0
    assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)
    assert run.phases.loss_s > 0  # the loop's segments still work around the compiled call


def test_profiler_says_when_the_model_was_compiled_before_it_started() -> None:
    net = Chain()
    compiled = torch.compile(net)
    compiled(torch.randn(4, *SHAPE)).sum().backward()  # compiled outside the Profiler
    run = _loop(compiled, net, steps=4)
    c = run.compiled
    assert c is not None and not c.provenance
    assert c.message is not None and "compiled before layertime started" in c.message


def test_cli_compile_flags(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "layertime", "profile", "alexnet", "--compile-mode", "fastest"],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2 and "--compile-mode" in bad.stderr
    both = subprocess.run(
        [sys.executable, "-m", "layertime", "profile", "alexnet", "--compile", "--ddp"],
        capture_output=True, text=True, timeout=120,
    )
    assert both.returncode == 2 and "--compile cannot be combined" in both.stderr


def test_html_report_has_the_compiled_section(chain_run: Run) -> None:
    from layertime.render.html import render_html

    page = render_html(chain_run)
    assert "Compiled model" in page and "fused groups" in page


def test_compare_gives_per_kind_and_per_layer_ratios(chain_run: Run) -> None:
    from rich.console import Console

    from layertime.render.compare import compare_table
    from layertime.render.fmt import ms

    eager = layertime.profile(Chain(), batch_size=4, input_shape=SHAPE, num_classes=10,
                              device="cpu", steps=1)
    console = Console(width=200, record=True, color_system=None)
    console.print(compare_table([eager, chain_run], ["eager", "compiled"]))
    text = console.export_text()
    # Each ratio is the compiled run's time over the eager run's, for that kind or layer.
    kind = {k: v.time_s for k, v in chain_run.by_kind().items()}
    base = {k: v.time_s for k, v in eager.by_kind().items()}
    conv = next(line for line in text.splitlines() if line.strip().startswith("conv "))
    assert conv.split()[-1] == f"x{kind['conv'] / base['conv']:.2f})", conv
    assert f"({ms(base['conv'])} ms)" in conv and f"({ms(kind['conv'])} ms " in conv
    bn_eager = next(r for r in eager.layers if r.name == "bn").total_s
    bn = _row(chain_run, "bn").total_s
    layer = next(line for line in text.splitlines() if line.strip().startswith("bn "))
    assert layer.split()[-2:] == [ms(bn), f"x{bn / bn_eager:.2f}"], layer
    step = next(line for line in text.splitlines()
                if line.split()[:1] == ["step"] and not line.strip().startswith("step ("))
    assert step.split()[-1] == f"x{chain_run.step_s / eager.step_s:.2f}"


def test_a_module_registered_under_two_names_keeps_its_compiled_time() -> None:
    run = _profile(SharedAct())
    names = [r.name for r in run.layers]
    assert "act" in names and "head.1" not in names  # one row, the module table's name
    act = _row(run, "act")
    assert act.forward_s > 0 and act.backward_s > 0
    assert act.calls == 2  # once by each name
    c = run.compiled
    assert c is not None and c.unplaced_s == 0 and not c.unplaced_kernels
    assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)


def test_a_dynamic_model_is_not_specialised_by_the_provenance_pass() -> None:
    """Counting a node's cost must not guard on symbolic sizes (``int(sym)`` would): a
    ``dynamic=True`` model compiles once for every batch size, as it does without us."""
    from layertime.measure.compiled.capture import ProvenanceCapture

    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    compiled = torch.compile(net, dynamic=True)
    capture = ProvenanceCapture(net, torch.device("cpu"))
    with capture:
        for batch in (3, 5, 7):
            compiled(torch.randn(batch, 8)).sum().backward()
    assert [c.reason for c in capture.compilations] == [None]  # no recompilation
    graphs = capture.graphs()
    assert {g.phase for g in graphs} == {"forward", "backward"}
    mm = [n for g in graphs for n in g.nodes.values() if n.op in ("aten::addmm", "aten::mm")]
    assert mm and all(n.weight > 0 for n in mm)  # counted, at the example's sizes


def test_profile_of_a_user_compiled_model_goes_through_the_compiled_path() -> None:
    torch.manual_seed(0)
    run = layertime.profile(torch.compile(Chain()), batch_size=4, input_shape=SHAPE,
                            num_classes=10, device="cpu", steps=1)
    c = run.compiled
    assert c is not None and c.provenance and c.message is None
    assert run.model == "Chain" and [r.name for r in run.layers][:2] == ["", "conv"]
    assert _row(run, "bn").forward_s > 0 and _row(run, "fc").backward_s > 0
    assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)


class Pooled(nn.Module):
    """conv -> relu -> overlapping max-pool (as resnet's stem) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def test_max_pool_backward_is_placed_on_the_pool() -> None:
    """On the CPU with more than one thread Inductor computes a max-pool's backward (a
    scatter_add) with aten.scatter_reduce_, called without provenance: it lands on the
    pool, not in unattributed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # one thread: a generated kernel does the scatter instead
    try:
        run = _profile(Pooled())
    finally:
        torch.set_num_threads(threads)
    c = run.compiled
    assert c is not None and c.unplaced_s == 0 and not c.unplaced_kernels, c.unplaced_kernels
    pool = _row(run, "pool")
    assert pool.forward_s > 0 and pool.backward_s > 0
    assert run.phases.total_s == pytest.approx(run.profiled_step_s, rel=1e-9)


class PatchTransformer(nn.Module):
    """Pixels as tokens through torch's encoder layer: nn.MultiheadAttention computes its
    projections itself, with its own in_proj_weight and with out_proj.weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc(self.embed(torch.flatten(x, 2).transpose(1, 2))).mean(1))


def test_compiled_multihead_attention_projections_are_fully_connected_rows() -> None:
    run = _profile(PatchTransformer())
    att = "enc.layers.0.self_attn"
    core, part, out = _row(run, att), _row(run, f"{att}.(in_proj)"), _row(run, f"{att}.out_proj")
    assert (core.kind, part.kind, out.kind) == ("attention", "linear", "linear")
    assert part.role == "attention" and part.params == 3 * 16 * 16 + 3 * 16
    assert part.forward_s > 0 and part.backward_s > 0 and out.forward_s > 0
    assert run.roles()["attention"].core_s < run.roles()["attention"].time_s
