"""``layertime attribute``: hand-made traces whose every row is known (fast), the error
cases, gzip, ranks, CUDA kernels, Lightning's ranges, naming by a model, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _traces import NODE, TraceBuilder, training_step, two_steps
from layertime import attribute
from layertime.cli import main
from layertime.errors import BadValue, LayertimeError
from layertime.measure.traces.stream import read_trace
from layertime.results.run import Run

US = 1e-6


def rows(run: Run) -> dict[str, tuple[float, float, float]]:
    """name -> (forward, backward, update) in µs."""
    return {r.name: (round(r.forward_s / US, 6), round(r.backward_s / US, 6),
                     round(r.update_s / US, 6)) for r in run.layers}


def test_every_row_of_a_known_step(tmp_path: Path) -> None:
    run = attribute(two_steps().write(tmp_path / "t.json")).run
    assert run.steps == 2 and run.trace is not None
    assert run.trace.steps == ("ProfilerStep#1", "ProfilerStep#2")
    assert rows(run) == {"": (10, 4, 0), "Linear_0": (20, 15, 10)}
    p = run.phases
    assert (p.loss_s / US, p.zero_grad_s / US, p.data_s / US) == pytest.approx((20, 2, 3))
    assert p.unattributed_s / US == pytest.approx(16)
    assert run.profiled_step_s / US == pytest.approx(100)
    assert p.total_s == pytest.approx(run.profiled_step_s)
    by = {r.name: r for r in run.layers}
    assert by["Linear_0"].kind == "linear" and by["Linear_0"].params == 36
    assert by[""].type == "Net" and by[""].kind == "other"
    assert run.update_split == "parameter-elements" and p.update_step_s == 0
    assert run.step_samples_s == () and run.timing == "cpu-self-time"
    assert (run.batch_size, run.input_shape, run.optimizer) == (4, (8,), "sgd")


def test_without_shapes_the_update_is_one_row_and_said_so(tmp_path: Path) -> None:
    run = attribute(two_steps(shapes=False).write(tmp_path / "t.json")).run
    assert run.update_split == "none"
    assert run.phases.update_step_s / US == pytest.approx(10)
    assert all(r.update_s == 0 for r in run.layers)
    assert run.phases.total_s == pytest.approx(run.profiled_step_s)
    assert any("record_shapes=True" in n for n in run.notes)
    assert run.by_kind()["step"].time_s / US == pytest.approx(15)  # zero_grad, data, update
    from layertime.render.table import render_text

    assert "update (step)" in render_text(run)


def test_a_gzipped_trace_is_the_same(tmp_path: Path) -> None:
    b = two_steps()
    plain = attribute(b.write(tmp_path / "t.json")).run
    gz = attribute(b.write(tmp_path / "t.json.gz", gz=True)).run
    assert rows(gz) == rows(plain) and gz.phases == plain.phases


def test_a_folder_of_two_ranks_gives_each_rank_and_the_merged_run(tmp_path: Path) -> None:
    folder = tmp_path / "tb"
    folder.mkdir()
    for rank in (0, 1):
        b = TraceBuilder(distributedInfo={"backend": "gloo", "rank": rank, "world_size": 2})
        training_step(b, 1, 1000.0)
        # Rank 1's linear is slower by 10 µs in its step (the step is 10 µs longer).
        if rank == 1:
            for e in b.events:
                if e["name"] in ("nn.Module: Linear_0", "aten::linear", "aten::addmm"):
                    e["dur"] += 10
                elif e["ts"] >= 1000 + 26 and not e["name"].startswith("ProfilerStep"):
                    e["ts"] += 10
                elif e["name"].startswith(("ProfilerStep", "nn.Module: Net_0")):
                    e["dur"] += 10
        b.write(folder / f"worker{rank}.{1700000000 + rank}.pt.trace.json")
    found = attribute(folder)
    assert len(found.ranks) == 2 and [r.trace.rank for r in found.ranks] == [0, 1]
    merged = found.run
    assert merged.world_size == 2 and merged.backend == "gloo" and len(merged.ranks) == 2
    lin = {r.name: r for r in merged.layers}["Linear_0"]
    assert lin.forward_s / US == pytest.approx(25)  # 20 and 30
    assert lin.rank_spread_s / US == pytest.approx(10)
    assert merged.phases.total_s == pytest.approx(merged.profiled_step_s)
    assert [round(r.profiled_step_s / US) for r in merged.ranks] == [100, 110]


def test_cuda_kernels_are_charged_through_correlation_ids(tmp_path: Path) -> None:
    b = two_steps(deviceProperties=[{"id": 0, "name": "Test GPU"}])
    for n, t0 in ((1, 1000.0), (2, 1200.0)):
        # addmm launches a 30 µs kernel, the backward mm a 20 µs one; a memset outside ops.
        for corr, at, start, dur in ((10 * n, t0 + 12, t0 + 30, 30), (10 * n + 1, t0 + 63,
                                                                       t0 + 70, 20)):
            b.x("cuda_runtime", "cudaLaunchKernel", at, 1, correlation=corr, **{"External id": 0})
            b.x("kernel", "gemm_kernel", start, dur, tid=7, pid=0, correlation=corr, stream=7,
                device=0)
        b.x("gpu_user_annotation", f"ProfilerStep#{n}", t0, 100, tid=7, pid=0)
        b.x("gpu_memset", "Memset", t0 + 96, 2, tid=7, pid=0, correlation=999, stream=7)
    run = attribute(b.write(tmp_path / "cuda.json")).run
    assert run.timing == "cuda-kernel-time" and run.device == "cuda"
    assert run.environment.device_name == "Test GPU"
    assert rows(run)["Linear_0"][:2] == (30, 20)
    assert rows(run)[""] == (0, 0, 0)
    # The step's wall time is its CPU range (the kernels end inside it): the rest is idle.
    assert run.profiled_step_s / US == pytest.approx(100)
    assert run.phases.unattributed_s / US == pytest.approx(50)
    assert any("outside the trace's ops" in n for n in run.notes)  # the memset


def test_cuda_backward_on_its_own_thread_finds_its_forward(tmp_path: Path) -> None:
    """CUDA's autograd runs backward on a thread of its own: its nodes name the forward
    thread by the profiler's id (1), mapped to the system's tid by sequence numbers."""
    b = two_steps()
    for e in b.events:
        if e["name"].startswith(NODE) or e["name"] in ("aten::mm",
                                                       "torch::autograd::AccumulateGrad"):
            e["tid"] = 5151
    for n, t0 in ((1, 1000.0), (2, 1200.0)):
        b.x("cuda_runtime", "cudaLaunchKernel", t0 + 63, 1, tid=5151, correlation=n)
        b.x("kernel", "gemm_kernel", t0 + 70, 20, tid=7, pid=0, correlation=n, stream=7)
    run = attribute(b.write(tmp_path / "t.json")).run
    assert rows(run)["Linear_0"][:2] == (0, 20)


def test_lightning_ranges_name_layers_and_steps(tmp_path: Path) -> None:
    """Lightning's module ranges give dotted paths; its run_training_batch is the step,
    not ProfilerStep#N (which splits a batch's forward from its backward)."""
    b = TraceBuilder(Framework="pytorch-lightning")
    pl = "[pl][profile]"
    for n, t0 in ((1, 1000.0), (2, 1200.0)):
        s = 100 * n
        b.annotation(f"{pl}[_TrainingEpochLoop].train_dataloader_next", t0, 4)
        b.annotation(f"{pl}run_training_batch", t0 + 5, 90)
        b.annotation(f"{pl}[LightningModule]Lit.optimizer_step", t0 + 6, 88)
        b.annotation("Optimizer.step#SGD.step", t0 + 7, 86)
        b.annotation(f"{pl}[Strategy]SingleDeviceStrategy.training_step", t0 + 8, 30)
        b.annotation("[pl][module]torch.nn.modules.linear.Linear: net.0", t0 + 9, 20)
        b.op("aten::linear", t0 + 10, 18, seq=s, dims=[[4, 8], [4, 8], [4]])
        b.op("aten::addmm", t0 + 11, 16, seq=s + 1)
        b.op("aten::mse_loss", t0 + 31, 5, seq=s + 2)
        b.annotation(f"{pl}[LightningModule]Lit.optimizer_zero_grad", t0 + 40, 2)
        b.annotation(f"{pl}[Strategy]SingleDeviceStrategy.backward", t0 + 44, 30)
        b.node("MseLossBackward0", t0 + 45, 5, seq=s + 2)
        b.node("AddmmBackward0", t0 + 51, 10, seq=s + 1)
        b.node("torch::autograd::AccumulateGrad", t0 + 62, 2)
        b.op("torch::autograd::AccumulateGrad", t0 + 62.5, 1, dims=[[4, 8]])
        b.annotation(f"{pl}[LightningModule]Lit.configure_gradient_clipping", t0 + 76, 2)
        b.op("aten::add_", t0 + 80, 10)  # the update, after the closure
        b.annotation(f"{pl}[LightningModule]Lit.on_train_batch_end", t0 + 96, 2)
    # ProfilerStep#N as Lightning records them: from one training_step's end to the next.
    b.annotation("ProfilerStep#1", 1038, 200)
    run = attribute(b.write(tmp_path / "pl.json")).run
    assert run.trace is not None and run.trace.naming == "lightning"
    assert run.trace.steps == ("run_training_batch 1", "run_training_batch 2")
    assert run.model == "Lit" and run.steps == 2
    assert rows(run) == {"net.0": (20, 12, 18)}
    p = run.phases
    assert p.loss_s / US == pytest.approx(10 + 5)  # training_step less the layer, + its bwd
    # The fetch and the batch's own bookkeeping before the forward are data; the closure's
    # hooks and on_train_batch_end logging, as the live callback charges them.
    assert (p.zero_grad_s / US, p.clip_s / US, p.data_s / US) == pytest.approx((2, 2, 6))
    assert p.logging_s / US == pytest.approx(8)
    assert p.total_s == pytest.approx(run.profiled_step_s)
    assert run.profiled_step_s / US == pytest.approx(98)  # the fetch to the last hook


@pytest.mark.parametrize("cut", ["middle", "gz"])
def test_a_truncated_trace_is_one_line_naming_where(tmp_path: Path, cut: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    text = two_steps().text()
    if cut == "gz":
        import gzip

        data = gzip.compress(text.encode())
        path = tmp_path / "t.json.gz"
        path.write_bytes(data[: len(data) // 2])
    else:
        path = tmp_path / "t.json"
        path.write_text(text[: len(text) // 2])
    assert main(["attribute", str(path), "--no-store"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err
    assert "truncated" in err and "character" in err


def test_a_garbled_trace_says_line_and_column(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    lines = two_steps().text().splitlines()
    lines[40] = lines[40] + " }}garbage"
    path = tmp_path / "t.json"
    path.write_text("\n".join(lines))
    assert main(["attribute", str(path), "--no-store"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 41" in err


@pytest.mark.parametrize("text, says", [
    ("", "empty"), ("hello", "not a Chrome trace"), ('{"a": 1}', "without traceEvents"),
    ('{"traceEvents": [1, 2]}', "expected event 1"), ('[] junk', "after the end"),
])
def test_what_is_not_a_trace(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(BadValue, match=says):
        read_trace(path, lambda e: e)


def test_a_trace_without_module_events_says_how_to_record(tmp_path: Path) -> None:
    b = two_steps()
    b.events = [e for e in b.events if not e["name"].startswith("nn.Module")]
    with pytest.raises(BadValue, match="no module events.*with_stack=True"):
        attribute(b.write(tmp_path / "t.json"))


def test_a_trace_without_steps_says_what_it_saw(tmp_path: Path) -> None:
    b = two_steps()
    b.events = [e for e in b.events if not e["name"].startswith("ProfilerStep")]
    with pytest.raises(BadValue) as e:
        attribute(b.write(tmp_path / "t.json"))
    msg = str(e.value)
    assert "no steps" in msg and "ProfilerStep#N" in msg
    assert "Optimizer.step#SGD.step x2" in msg and "2 modules" in msg


def test_missing_paths_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(BadValue, match="no such file"):
        attribute(tmp_path / "nope.json")
    with pytest.raises(BadValue, match="no trace files"):
        attribute(tmp_path)


def test_model_names_the_class_index_tree(tmp_path: Path) -> None:
    """--model: the trace's Net_0/Linear_0 become the model's dotted paths, with its kinds
    and parameters; a model whose tree differs is one line naming the module."""
    src = tmp_path / "net.py"
    src.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(8, 4)\n"
        "    def forward(self, x):\n"
        "        return self.proj(x.flatten(1)[:, :8]) + 1\n"
        "def build(num_classes=4):\n"
        "    return Net()\n"
        "def other(num_classes=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3))\n")
    path = two_steps().write(tmp_path / "t.json")
    run = attribute(path, f"{src}:build", num_classes=4).run
    assert rows(run) == {"": (10, 4, 0), "proj": (20, 15, 10)}
    by = {r.name: r for r in run.layers}
    assert by["proj"].params == 36 and by["proj"].kind == "linear"
    assert run.trace is not None and run.trace.naming == "model"
    with pytest.raises(LayertimeError, match="cannot map the trace's modules onto"):
        attribute(path, f"{src}:other")


def test_cli_writes_json_html_and_stores_a_run_compare_reads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_steps().write(tmp_path / "t.json")
    db = tmp_path / "runs.db"
    out, html = tmp_path / "run.json", tmp_path / "run.html"
    assert main(["attribute", str(path), "--json", str(out), "--html", str(html),
                 "--db", str(db), "--width", "100"]) == 0
    cap = capsys.readouterr()
    assert "Linear_0" in cap.out and "attributed from 1 trace file" in cap.out
    assert f"wrote {out}" in cap.err and f"wrote {html}" in cap.err and "stored as run 1" in cap.err
    back = Run.load(out)
    assert back.trace is not None and back.trace.files == (str(path),)
    assert html.read_text().lower().startswith("<!doctype html>")
    assert main(["attribute", str(path), "--db", str(db), "-q"]) == 0
    assert main(["compare", "1", "2", "--db", str(db), "--width", "100"]) == 0
    assert "Linear_0" in capsys.readouterr().out


def test_json_round_trip_keeps_the_source(tmp_path: Path) -> None:
    run = attribute(two_steps(shapes=False).write(tmp_path / "t.json")).run
    back = Run.from_json(run.to_json())
    assert back.trace == run.trace and back.phases == run.phases
    d = json.loads(run.to_json())
    assert d["trace"]["naming"] == "class-index" and d["phases"]["update_step_s"] > 0


def test_rank_flag_shows_one_rank(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = two_steps().write(tmp_path / "t.json")
    assert main(["attribute", str(path), "--rank", "3", "--no-store"]) == 2
    assert "hold 1 rank" in capsys.readouterr().err


def test_a_loss_module_called_beside_the_model_is_the_loss_row(tmp_path: Path) -> None:
    """Only the model's modules are rows: a loss module the loop calls after the model's
    forward is ``loss``, as in a live run (its hooks are on the model's modules only)."""
    b = two_steps()
    for t0 in (1000.0, 1200.0):
        b.module("MSELoss_0", t0 + 39.5, 6)
    run = attribute(b.write(tmp_path / "t.json")).run
    assert set(rows(run)) == {"", "Linear_0"}
    assert run.phases.loss_s / US == pytest.approx(20)


def test_model_file_flag_and_its_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "net.py"
    src.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(8, 4)\n"
        "    def forward(self, x):\n"
        "        return self.proj(x.flatten(1)[:, :8]) + 1\n"
        "def build(num_classes=4):\n"
        "    return Net()\n")
    path = two_steps().write(tmp_path / "t.json")
    assert main(["attribute", str(path), "--model-file", f"{src}:build", "--no-store",
                 "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "proj" in out and "names from" in out
    assert main(["attribute", str(path), "--model-file", str(src), "--no-store"]) == 2
    assert "expected FILE.py:FN" in capsys.readouterr().err
    assert main(["attribute", str(path), "--model", "resnet18", "--config", "a=1"]) == 2


def test_html_report_names_the_trace(tmp_path: Path) -> None:
    from layertime.render.views.profile import profile_view

    run = attribute(two_steps().write(tmp_path / "t.json")).run
    view = profile_view(run)
    items = dict(view["sections"][0]["items"])
    assert items["attributed from"].startswith("1 trace file, 2 steps")


def test_fsdp_ranges_charge_their_unit_s_layers(tmp_path: Path) -> None:
    """FSDP2's ranges and collectives are charged as a live sharded run's: to the unit's own
    layers by parameter elements when the layers have the units' paths (--model), else to
    the model's root, said so."""
    src = tmp_path / "net.py"
    src.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(8, 4)\n"
        "    def forward(self, x):\n"
        "        return self.proj(x.flatten(1)[:, :8]) + 1\n"
        "def build(num_classes=4):\n"
        "    return Net()\n")
    b = two_steps(distributedInfo={"backend": "gloo", "rank": 0, "world_size": 2})
    for t0 in (1000.0, 1200.0):
        b.annotation("FSDP::all_gather (proj)", t0 + 6.1, 0.8)
        b.op("c10d::_allgather_base_", t0 + 6.2, 0.6, dims=[[72], [36]],
             types=["float", "float"])
    path = b.write(tmp_path / "t.json")
    run = attribute(path, f"{src}:build").run
    proj = {r.name: r for r in run.layers}["proj"]
    assert proj.comm_exposed_s / US == pytest.approx(0.8)
    (ag,) = run.collectives
    assert (ag.kind, ag.scope, ag.target, ag.bytes) == ("all_gather", "unit", "proj", 288)
    assert run.phases.total_s == pytest.approx(run.profiled_step_s)
    bare = attribute(path).run
    assert {r.name: r for r in bare.layers}[""].comm_exposed_s / US == pytest.approx(0.8)
    assert any("FSDP units' collectives" in n for n in bare.notes)


def test_siblings_of_one_class_are_matched_in_the_model_s_call_order(tmp_path: Path) -> None:
    """Of two dropouts the model defines, its forward calls only the second: the trace's one
    dropout call is that one (call order, watched in the model), not the first defined."""
    src = tmp_path / "net.py"
    src.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = nn.Linear(8, 4)\n"
        "        self.unused = nn.Dropout(0.1)\n"
        "        self.drop = nn.Dropout(0.1)\n"
        "    def forward(self, x):\n"
        "        return self.drop(self.proj(x.flatten(1)[:, :8]) + 1)\n"
        "def build(num_classes=4):\n"
        "    return Net()\n")
    b = two_steps()
    for t0 in (1000.0, 1200.0):
        b.module("Dropout_0", t0 + 26.5, 4)
    run = attribute(b.write(tmp_path / "t.json"), f"{src}:build").run
    # The add (and so its backward) runs inside the dropout call in this trace.
    assert rows(run) == {"": (6, 0, 0), "proj": (20, 15, 10), "drop": (4, 4, 0)}


def _lightning_step(tmp_path: Path, name: str, optimizer_dur_us: float) -> Run:
    """One Lightning batch whose ``Optimizer.step`` range lasts ``optimizer_dur_us`` inside
    ``optimizer_step`` (which ends at 94)."""
    b = TraceBuilder(Framework="pytorch-lightning")
    pl = "[pl][profile]"
    b.annotation(f"{pl}[_TrainingEpochLoop].train_dataloader_next", 0, 4)
    b.annotation(f"{pl}run_training_batch", 5, 90)
    b.annotation(f"{pl}[LightningModule]Lit.optimizer_step", 6, 88)
    b.annotation("Optimizer.step#SGD.step", 7, optimizer_dur_us)
    b.annotation(f"{pl}[Strategy]SingleDeviceStrategy.training_step", 8, 30)
    b.annotation("[pl][module]torch.nn.modules.linear.Linear: net.0", 9, 20)
    b.op("aten::linear", 10, 18, seq=100, dims=[[4, 8], [4, 8], [4]])
    b.op("aten::mse_loss", 31, 5, seq=102)
    b.annotation(f"{pl}[Strategy]SingleDeviceStrategy.backward", 44, 30)
    b.node("AddmmBackward0", 51, 10, seq=100)
    b.op("aten::add_", 80, 10)
    return attribute(b.write(tmp_path / name)).run


def test_a_child_ending_a_rounding_past_its_parent_is_still_nested(tmp_path: Path) -> None:
    """ts and dur are each rounded to the ns in a trace: an Optimizer.step ending 1 ns after
    Lightning's optimizer_step around it (seen in a real trace) is its child, not a
    sibling counted beside it (the step's rows then summed past the step)."""
    exact = _lightning_step(tmp_path, "exact.json", 87.0)
    past = _lightning_step(tmp_path, "past.json", 87.001)
    assert exact.phases.unattributed_s >= 0 and past.phases.unattributed_s >= 0
    assert past.phases.unattributed_s == pytest.approx(exact.phases.unattributed_s, abs=1e-11)
    assert rows(past).keys() == rows(exact).keys()
    for name, times in rows(exact).items():
        assert rows(past)[name] == pytest.approx(times, abs=0.01)
    assert past.phases.update_s == pytest.approx(exact.phases.update_s, abs=1e-11)
