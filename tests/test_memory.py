"""Memory per layer, measured (issue 20): hand arithmetic on small real models.

Bytes are storage bytes, float32 unless said: a tensor of n elements is 4n bytes.
Each profile here is tiny (one traced step, no warm-up), so the whole file runs in
seconds; the AlexNet check is slow.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import layertime
from layertime.measure.attribute import attribute_step
from layertime.measure.events import BACKWARD_NODE, MODULE, STEP, OpEvent
from layertime.results.run import Run


def _profile(model: nn.Module, shape: tuple[int, ...], batch: int, classes: int,
             **kw: Any) -> Run:
    torch.manual_seed(0)
    return layertime.profile(model, batch_size=batch, input_shape=shape, num_classes=classes,
                             device="cpu", steps=1, warmup_steps=0, **kw)


def _saved(run: Run) -> dict[str, int]:
    return {r.name: r.saved_bytes for r in run.layers}


def _rows_add_up(run: Run) -> None:
    p = run.phases
    rows = sum(r.total_s for r in run.layers)
    assert rows + p.loss_s + p.step_level_s + p.unattributed_s == \
        pytest.approx(run.profiled_step_s, rel=1e-9)


def _no_hooks_left(model: nn.Module) -> None:
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None


def test_a_linear_saves_exactly_its_input(one_thread: None) -> None:
    # Linear(1024, 4096) at batch 64 in float32 saves its input: 64 x 1024 x 4 bytes
    # = 262,144 (its weight is a parameter, never a saved activation).
    model = nn.Linear(1024, 4096)
    run = _profile(model, (1024,), 64, 4096)
    assert 64 * 1024 * 4 == 262_144
    assert _saved(run)[""] == 262_144
    fc = run.layers[0]
    assert fc.params_bytes == fc.grads_bytes == (1024 * 4096 + 4096) * 4
    assert fc.optimizer_state_bytes == fc.params_bytes  # SGD's momentum buffers
    m = run.memory
    assert m is not None and m.method == "cpu-allocator"
    # The loss saves the log-probabilities (64 x 4096) and the targets (64 int64).
    assert m.loss_saved_bytes >= 64 * 4096 * 4 + 64 * 8
    assert m.saved_bytes == 262_144 + m.loss_saved_bytes
    assert m.at_peak.total_bytes == m.peak_bytes
    assert m.peak_bytes >= 3 * fc.params_bytes  # weights, gradients, momentum
    _rows_add_up(run)
    _no_hooks_left(model)


def test_a_gelu_saves_its_input_and_the_next_layer_the_gelus_output(one_thread: None) -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 10))
    saved = _saved(_profile(model, (16,), 4, 10))
    assert saved["0"] == 4 * 16 * 4  # the batch
    assert saved["1"] == 4 * 32 * 4  # GELU: its input (the first Linear's output)
    assert saved["2"] == 4 * 32 * 4  # the GELU's output, saved by the second Linear alone


class _ViewOfWeight(nn.Module):
    """Uses its weight through views only: a transpose, a row, a reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() * self.weight[0] + x @ self.weight.reshape(8, 8)


def test_a_parameters_view_is_never_counted(one_thread: None) -> None:
    run = _profile(_ViewOfWeight(), (8,), 4, 8)
    # The ops save x (the batch: one storage, 4 x 8 floats) and the product x @ w.t()
    # (for the multiplication by the row); the transposed weight, the row and the
    # reshaped weight are the parameter's storage and are left out.
    assert _saved(run)[""] == 4 * 8 * 4 + 4 * 8 * 4


def test_an_inplace_relus_saved_output_is_counted_once(one_thread: None) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    run = _profile(model, (3, 8, 8), 2, 10)
    saved = _saved(run)
    out = 2 * 4 * 8 * 8 * 4
    # The conv's output is written in place by the ReLU and saved by the ReLU (its
    # result) and the pool (its input): counted once, charged to the conv that
    # allocated it.  The conv also keeps its input, the batch.
    assert saved["0"] == 2 * 3 * 8 * 8 * 4 + out
    assert saved["1"] == 0
    assert saved["2"] == 2 * 4 * 4 * 4 * 8  # the pool's indices (int64)
    assert saved["4"] == 2 * 4 * 4 * 4 * 4  # the pooled output, flattened (a view)
    assert run.memory is not None
    assert sum(saved.values()) + run.memory.loss_saved_bytes == run.memory.saved_bytes


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 64)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.block = _Block()
        self.head = nn.Linear(16, 10)
        self.reentrant = reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        return self.head(h)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # eval-mode check
@pytest.mark.parametrize("reentrant", [False, True])
def test_a_checkpointed_block_keeps_its_inputs_and_its_layers_save_nothing(
        one_thread: None, reentrant: bool) -> None:
    model = _Checkpointed(reentrant)
    run = _profile(model, (8,), 4, 10)
    saved = _saved(run)
    rows = {r.name: r for r in run.layers}
    # The block keeps its input (the stem's output, 4 x 16 floats), nothing else.
    assert saved["block"] == 4 * 16 * 4
    assert saved["block.fc1"] == saved["block.act"] == saved["block.fc2"] == 0
    assert rows["block"].checkpointed and not rows["stem"].checkpointed
    # Its forward ran again in backward, charged there.
    assert rows["block"].recompute_s > 0
    assert rows["block.fc1"].backward_s > 0
    assert rows["block.fc1"].calls == 1  # the recompute is not a call
    assert saved["stem"] == 4 * 8 * 4 and saved["head"] == 4 * 16 * 4
    _rows_add_up(run)
    _no_hooks_left(model)


def test_without_memory_nothing_is_measured(one_thread: None) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.manual_seed(0)
    from layertime.measure.runner import MeasureOptions, profile_workload
    from layertime.workload import WorkloadSpec

    run = profile_workload(WorkloadSpec.create(model, batch_size=2, input_shape=(8,),
                                               num_classes=2, device="cpu"),
                           MeasureOptions(steps=1, warmup_steps=0, memory=False))
    from layertime.render.table import render_text

    assert run.memory is None and not any(r.saved_bytes or r.params_bytes for r in run.layers)
    assert "saved MB" not in render_text(run) and "memory" not in run.to_dict()


def test_the_peak_and_what_is_live_then(one_thread: None) -> None:
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
    run = _profile(model, (256,), 32, 10)
    m = run.memory
    assert m is not None
    cats = m.at_peak
    assert cats.total_bytes == m.peak_bytes
    params = sum(r.params_bytes for r in run.layers)
    assert cats.parameters_bytes == params
    assert m.peak_when in ("forward", "end of forward", "early backward", "backward",
                           "optimizer step", "zero_grad", "other")
    assert 0 <= m.peak_at_s <= m.step_s * 1.01
    assert m.timeline and max(p.bytes for p in m.timeline) <= m.peak_bytes
    assert any(p.layer is not None for p in m.timeline)
    assert {mk.label for mk in m.marks} >= {"forward end", "backward end", "peak"}
    # Layers at the peak: their parameters add up to the category.
    assert sum(r.params_bytes for r in cats.layers) == cats.parameters_bytes
    back = Run.from_json(run.to_json())
    assert back.memory == m and back.layers == run.layers


def test_the_user_loop_profiler_measures_memory_in_two_steps_of_its_own(
        one_thread: None) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(4, 16), torch.randint(0, 10, (4,))
    with layertime.Profiler(model, opt, warmup_steps=1) as prof:
        for _ in range(5):  # warm-up, 2 memory steps, plain, traced
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            prof.step()
    run = prof.result()
    assert run.steps == 1 and len(run.step_samples_s) == 1
    assert _saved(run)["1"] == 4 * 32 * 4
    rows = {r.name: r for r in run.layers}
    # Adam: m and v, and a float32 step count per parameter (weight, bias).
    assert rows["0"].optimizer_state_bytes == 2 * rows["0"].params_bytes + 2 * 4
    assert run.memory is not None
    _no_hooks_left(model)


def test_recomputed_forward_in_backward_is_counted_apart() -> None:
    # A module range (index 2) inside a backward node: a checkpoint's recompute.
    evs = [
        OpEvent(1, STEP, 1, 0.0, 100.0),
        OpEvent(2, f"{MODULE}2", 1, 0.0, 10.0, parent=1),
        OpEvent(3, "aten::mm", 1, 1.0, 9.0, parent=2, seq=5),
        OpEvent(4, f"{BACKWARD_NODE}MmBackward0", 1, 20.0, 60.0, parent=1, seq=5,
                fwd_thread=1),
        OpEvent(5, f"{MODULE}2", 1, 21.0, 41.0, parent=4),
        OpEvent(6, f"{MODULE}3", 1, 22.0, 32.0, parent=5),
        OpEvent(7, "aten::mm", 1, 42.0, 50.0, parent=4),
    ]
    charges = attribute_step(evs[0], evs)
    # The recompute: module 2's range in backward, 20 us, with module 3 inside it.
    assert charges.recompute == {2: pytest.approx(20e-6)}
    assert charges.calls == {2: 1}
    assert charges.modules[(3, "backward")] == pytest.approx(10e-6)


@pytest.mark.slow
def test_alexnets_conv_layers_save_more_than_its_fully_connected_layers() -> None:
    run = layertime.profile("alexnet", batch_size=8, device="cpu", steps=1, warmup_steps=0)
    by_kind: dict[str, int] = {}
    for r in run.layers:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + r.saved_bytes
    assert by_kind["conv"] > by_kind["linear"] > 0
    # ... and hold far fewer parameters.
    params = {k: sum(r.params_bytes for r in run.layers if r.kind == k) for k in by_kind}
    assert params["conv"] < params["linear"]
    # conv1 keeps the batch (8 x 3 x 224 x 224 floats) and its own output (8 x 64 x 55 x
    # 55), which the in-place ReLU and the pool both save.
    assert _saved(run)["features.0"] == 4 * 8 * (3 * 224 * 224 + 64 * 55 * 55)
    assert "of saved activations" in run.headline()


_NET = '''
import torch.nn as nn

def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, num_classes))
'''


def test_profile_then_cost_run_puts_the_count_beside_the_measurement(
        one_thread: None, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from layertime.cli import main

    net = tmp_path / "net.py"
    net.write_text(_NET)
    out = tmp_path / "run.json"
    model = f"{net}:build"
    assert main(["profile", model, "--input-shape", "3,8,8", "--num-classes", "10",
                 "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
                 "--json", str(out), "--no-store", "--width", "200"]) == 0
    text = capsys.readouterr().out
    assert "saved MB" in text and "memory: peak" in text
    run = Run.load(out)
    assert run.memory is not None
    # The batch norm saves its input (the conv's output), its batch mean and inverse std
    # (4 channels each), and its own output, which the in-place ReLU and the pool both
    # save: charged to the batch norm that allocated it.  Its running statistics are
    # buffers: not saved activations.
    saved = _saved(run)
    assert saved["1"] == 2 * (2 * 4 * 8 * 8 * 4) + 2 * 4 * 4 and saved["2"] == 0
    assert main(["cost", "--run", str(out), "--no-store", "--width", "200"]) == 0
    text = capsys.readouterr().out
    assert "measured (the run) beside counted" in text
    assert "every layer's count is within 10% of the measurement" in text
    # --no-memory: no column, no memory in the JSON.
    assert main(["profile", model, "--input-shape", "3,8,8", "--num-classes", "10",
                 "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
                 "--json", str(out), "--no-store", "--no-memory"]) == 0
    assert "saved MB" not in capsys.readouterr().out and Run.load(out).memory is None


class _OutOfMemoryWhenWatched(nn.Module):
    """Runs out of memory only under saved-tensor hooks: in the memory step, as a model
    at the edge of the device's memory might with the profiler's own."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch._C._autograd._top_saved_tensors_default_hooks(False) is not None:
            raise RuntimeError("CPU out of memory: tried to allocate 1 GB")
        return self.fc(x)


def test_a_memory_step_out_of_memory_keeps_the_timed_steps(one_thread: None) -> None:
    model = _OutOfMemoryWhenWatched()
    run = _profile(model, (4,), 2, 2)
    assert run.memory is None and run.steps == 1
    assert any(w.startswith("memory was not measured: its step ran out of memory")
               for w in run.warnings)
    _no_hooks_left(model)
