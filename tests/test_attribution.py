"""Attribution on real (tiny) nets: the profiler's own events, charged per layer.

Each test asserts structure (which row exists, which is zero, which is not,
what adds up to what), never a wall-clock limit: this machine is noisy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import pytest

from layertime.errors import LayertimeError
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.events import ACCUMULATE_GRAD, BACKWARD_NODE, MODULE, PHASE, OpEvent
from layertime.measure.runner import MeasureOptions, measure, trace_step
from layertime.measure.tracer import TraceSession
from layertime.modules import ModuleTable, training_mode
from layertime.results.run import LayerRow, Run
from layertime.taxonomy import KINDS
from layertime.workload import Workload, WorkloadSpec, check_input

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # the eval-mode shape check runs under no_grad; reentrant checkpoint says so
    pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad"),
]

CPU = torch.device("cpu")
LOSS = "(loss)"


def config(shape=(3, 8, 8), batch=2, classes=10, optimizer="sgd") -> WorkloadSpec:
    return WorkloadSpec.create(
        "test",
        batch_size=batch, input_shape=shape, num_classes=classes, optimizer=optimizer
    )


def check_sums(r: Run) -> None:
    """(g): the rows add up to the profiled step, and the phases to the same."""
    p = r.phases
    layers = sum(row.total_s for row in r.layers)
    total = layers + p.loss_s + p.zero_grad_s + p.data_s + p.unattributed_s
    assert total == pytest.approx(r.profiled_step_s, rel=1e-9)
    assert p.total_s == pytest.approx(r.profiled_step_s, rel=1e-9)
    assert sum(row.forward_s for row in r.layers) == pytest.approx(p.forward_s, rel=1e-9)
    assert sum(row.backward_s for row in r.layers) == pytest.approx(p.backward_s, rel=1e-9)
    assert sum(row.update_s for row in r.layers) == pytest.approx(p.update_s, rel=1e-9)
    assert sum(k.share for k in r.by_kind().values()) == pytest.approx(1.0, rel=1e-9)
    for row in r.layers:
        assert row.forward_s >= 0 and row.backward_s >= 0 and row.update_s >= 0, row
        assert row.kind in KINDS
    assert p.loss_s > 0 and p.zero_grad_s >= 0 and p.data_s == 0.0
    names = [row.name for row in r.layers]
    assert len(names) == len(set(names)), names


def run(model: nn.Module, steps: int = 1, warmup: int = 0, **kw) -> Run:
    torch.manual_seed(0)
    r = measure(
        model,
        config(**kw),
        CPU,
        label=type(model).__name__,
        options=MeasureOptions(steps=steps, warmup_steps=warmup),
    )
    check_sums(r)
    assert r.steps == steps
    return r


def rows(r: Run) -> dict[str, LayerRow]:
    return {row.name: row for row in r.layers}


# -- trace-level helpers: the events themselves ---------------------------------------


class Traced:
    """One traced training step of a model: its table, events and charges."""

    def __init__(self, model: nn.Module, **kw) -> None:
        torch.manual_seed(0)
        cfg = config(**kw)
        out_shape = check_input(model, cfg, CPU, "test")
        self.table = ModuleTable(model)
        self.index = {e.name: e.index for e in self.table}
        with training_mode(model):
            work = Workload(model, cfg, CPU, out_shape)
            work.step()  # a plain step first, as measure() does
            session = TraceSession(self.table, CPU)
            trace_step(work, session)
            events = session.events
        [(self.step, self.events)] = split_steps(events)
        self.by_id = {e.id: e for e in self.events}
        self.charges: StepCharges = attribute_step(self.step, self.events)
        assert self.charges.total_s() == pytest.approx(self.charges.step_s, rel=1e-9)

    def children(self, e: OpEvent) -> list[OpEvent]:
        return sorted((k for k in self.events if k.parent == e.id), key=lambda k: k.start_us)

    def ancestors(self, e: OpEvent) -> list[OpEvent]:
        out = []
        while e.parent in self.by_id:
            e = self.by_id[e.parent]
            out.append(e)
        return out

    def phase(self, name: str) -> OpEvent:
        [e] = [e for e in self.events if e.name == f"{PHASE}{name}"]
        return e

    def module_ranges(self, name: str, *, in_backward: bool) -> list[OpEvent]:
        label = f"{MODULE}{self.index[name]}"
        return [
            e
            for e in self.events
            if e.name == label
            and any(a.name.startswith(BACKWARD_NODE) for a in self.ancestors(e)) == in_backward
        ]

    def fwd(self, name: str) -> float:
        return self.charges.modules.get((self.index[name], "forward"), 0.0)

    def bwd(self, name: str) -> float:
        return self.charges.modules.get((self.index[name], "backward"), 0.0)

    def expected_backward(self, owner_of_node: Callable[[str], str]) -> dict[str, float]:
        """What each owner's backward must be, from the engine's ranges alone.

        ``owner_of_node`` maps a node name (``ConvolutionBackward0``) to the
        module name that created it, or LOSS.  AccumulateGrad follows the node
        before it.  Only for nets without module ranges inside the backward.
        """
        out: dict[str, float] = defaultdict(float)
        last = None
        for e in self.children(self.phase("backward")):
            if not e.name.startswith(BACKWARD_NODE):
                continue
            node = e.name[len(BACKWARD_NODE) :]
            if ACCUMULATE_GRAD in node:
                assert last is not None, "AccumulateGrad before any node"
                owner = last
            else:
                owner = last = owner_of_node(node)
            out[owner] += e.duration_us * 1e-6
        return dict(out)

    def check_backward(self, owner_of_node: Callable[[str], str]) -> None:
        expected = self.expected_backward(owner_of_node)
        for name, idx in self.index.items():
            got = self.charges.modules.get((idx, "backward"), 0.0)
            assert got == pytest.approx(expected.get(name, 0.0), rel=1e-9, abs=1e-12), name
        loss_phase = self.phase("loss").duration_us * 1e-6
        assert self.charges.step["loss"] == pytest.approx(
            loss_phase + expected.get(LOSS, 0.0), rel=1e-9
        )


def node_map(mapping: dict[str, str]) -> Callable[[str], str]:
    full = {"NllLossBackward0": LOSS, "LogSoftmaxBackward0": LOSS, **mapping}

    def owner(node: str) -> str:
        assert node in full, f"unexpected backward node {node}"
        return full[node]

    return owner


# -- nets -----------------------------------------------------------------------------


def plain_net(inplace: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


class Normalize(nn.Module):
    """Input preprocessing: ops on a tensor that needs no grad, no node created."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Counter(nn.Module):
    """Bookkeeping after the last layer: a buffer update, no node created."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n.add_(1)
        return x


class Residual(nn.Module):
    """A container with functional code of its own: F.relu and a residual +."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x)) + x


class FlattenHead(nn.Module):
    """Root container that flattens with torch.flatten, not a module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(Residual(), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.body(self.stem(x)), 1))


# -- (a) the first layer gets backward time ------------------------------------------


def test_first_layer_gets_backward_time() -> None:
    r = run(plain_net())
    row = rows(r)["0"]
    assert row.backward_s > 0
    assert row.forward_s > 0 and row.update_s > 0
    assert row.calls == 1


def test_first_layer_backward_is_exactly_its_nodes() -> None:
    t = Traced(plain_net())
    t.check_backward(
        node_map(
            {
                "ConvolutionBackward0": "0",
                "ReluBackward0": "1",
                "ViewBackward0": "2",
                "AddmmBackward0": "3",
                "TBackward0": "3",
            }
        )
    )
    assert t.bwd("0") > 0
    assert t.bwd("") == 0.0  # a Sequential with no code of its own owns no node


def test_no_grad_preprocessing_does_not_steal_the_first_layers_backward() -> None:
    """Ops that create no node still record a sequence number; the node belongs
    to the op that created it (the conv), not the first op with that number."""
    model = nn.Sequential(Normalize(), *plain_net(), Counter())
    r = run(model)
    rs = rows(r)
    assert rs["0"].backward_s == 0.0 and rs["0"].forward_s > 0
    assert rs["5"].backward_s == 0.0 and rs["5"].forward_s > 0
    assert rs["1"].backward_s > 0
    t = Traced(nn.Sequential(Normalize(), *plain_net(), Counter()))
    t.check_backward(
        node_map(
            {
                "ConvolutionBackward0": "1",
                "ReluBackward0": "2",
                "ViewBackward0": "3",
                "AddmmBackward0": "4",
                "TBackward0": "4",
            }
        )
    )


# -- (b) a module called twice ------------------------------------------------------


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(x))
        x = self.act(self.conv(x))
        return self.fc(x.flatten(1))


def test_module_called_twice_has_two_calls_and_one_row() -> None:
    r = run(Twice())
    names = [row.name for row in r.layers]
    assert sorted(names) == ["", "act", "conv", "fc"]
    rs = rows(r)
    assert rs["conv"].calls == 2 and rs["act"].calls == 2
    assert rs["fc"].calls == 1 and rs[""].calls == 1
    assert rs["conv"].backward_s > 0 and rs["act"].backward_s > 0
    assert rs["conv"].params == 3 * 3 * 9 + 3


def test_module_called_twice_gets_both_backward_nodes() -> None:
    t = Traced(Twice())
    assert t.charges.calls[t.index["conv"]] == 2
    assert len(t.module_ranges("conv", in_backward=False)) == 2
    t.check_backward(
        node_map(
            {
                "ConvolutionBackward0": "conv",
                "ReluBackward0": "act",
                "ViewBackward0": "",  # x.flatten(1) in the root's own forward
                "AddmmBackward0": "fc",
                "TBackward0": "fc",
            }
        )
    )


# -- (c) a module shared by two parents --------------------------------------------


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        shared = nn.Conv2d(3, 3, 3, padding=1)
        self.a = nn.Sequential(shared, nn.ReLU())
        self.b = nn.Sequential(shared, nn.ReLU())
        self.fc = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.b(self.a(x)), 1))


def test_shared_module_appears_once_under_its_first_path() -> None:
    model = Shared()
    r = run(model)
    rs = rows(r)
    assert "a.0" in rs and "b.0" not in rs
    assert rs["a.0"].calls == 2
    assert rs["a.0"].params == 3 * 3 * 9 + 3
    assert rs["a.0"].backward_s > 0
    assert rs["a.1"].calls == 1 and rs["b.1"].calls == 1
    assert rs["a"].calls == 1 and rs["b"].calls == 1
    assert r.params == sum(p.numel() for p in model.parameters())


def test_shared_module_backward_is_exactly_its_nodes() -> None:
    t = Traced(Shared())
    relus = iter(["b.1", "a.1"])  # the backward runs in reverse

    def owner(node: str) -> str:
        if node == "ReluBackward0":
            return next(relus)
        return node_map(
            {
                "ConvolutionBackward0": "a.0",
                "ViewBackward0": "",
                "AddmmBackward0": "fc",
                "TBackward0": "fc",
            }
        )(node)

    t.check_backward(owner)


# -- (d) functional code in a container ----------------------------------------------


def test_container_functional_ops_get_a_self_row_forward_and_backward() -> None:
    r = run(FlattenHead())
    rs = rows(r)
    # torch.flatten in the root, F.relu and + in the residual block
    for name in ("", "body.0"):
        assert rs[name].forward_s > 0, name
        assert rs[name].backward_s > 0, name
        assert rs[name].kind == "other" and rs[name].params == 0
    # a Sequential with no code of its own owns no backward node
    assert rs["body"].backward_s == 0.0
    assert rs["body.0.conv"].backward_s > 0


def test_container_backward_is_exactly_its_nodes() -> None:
    t = Traced(FlattenHead())
    t.check_backward(_flatten_head_owner(t))


def _flatten_head_owner(t: Traced) -> Callable[[str], str]:
    convs = iter(["body.0.conv", "stem"])
    base = node_map(
        {
            "AddmmBackward0": "fc",
            "TBackward0": "fc",
            "ViewBackward0": "",
            "NativeBatchNormBackward0": "body.1",
            "AddBackward0": "body.0",
            "ReluBackward0": "body.0",
        }
    )

    def owner(node: str) -> str:
        return next(convs) if node == "ConvolutionBackward0" else base(node)

    return owner


# -- (e) in-place activations ------------------------------------------------------


def test_inplace_relu_gets_backward_time() -> None:
    r = run(plain_net(inplace=True))
    rs = rows(r)
    assert rs["1"].backward_s > 0
    assert rs["0"].backward_s > 0
    t = Traced(plain_net(inplace=True))
    t.check_backward(
        node_map(
            {
                "ConvolutionBackward0": "0",
                "ReluBackward0": "1",
                "ViewBackward0": "2",
                "AddmmBackward0": "3",
                "TBackward0": "3",
            }
        )
    )


# -- (f) activation checkpointing -----------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Checkpointed(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blk = Block()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = checkpoint(self.blk, x, use_reentrant=self.reentrant)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_checkpointed_block_calls_are_not_double_counted(reentrant: bool) -> None:
    r = run(Checkpointed(reentrant))
    rs = rows(r)
    for name in ("", "stem", "blk", "blk.conv", "blk.bn", "fc"):
        assert rs[name].calls == 1, name
    for name in ("blk.conv", "blk.bn", "blk"):
        assert rs[name].forward_s > 0 and rs[name].backward_s > 0, name


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_checkpoint_recomputation_is_charged_to_the_blocks_backward(reentrant: bool) -> None:
    t = Traced(Checkpointed(reentrant))
    for name in ("blk", "blk.conv", "blk.bn"):
        assert t.charges.calls[t.index[name]] == 1, name
        [forward] = t.module_ranges(name, in_backward=False)
        [recompute] = t.module_ranges(name, in_backward=True)
        assert recompute.start_us > t.phase("backward").start_us
        if name != "blk":
            # A leaf's forward charge is exactly its forward range; its
            # recomputation is in its backward charge, beside its own nodes.
            assert t.fwd(name) == pytest.approx(forward.duration_us * 1e-6, rel=1e-9)
            assert t.bwd(name) > recompute.duration_us * 1e-6
        else:
            inner = sum(k.duration_us for k in t.children(recompute) if k.name.startswith(MODULE))
            assert t.bwd(name) >= (recompute.duration_us - inner) * 1e-6 * (1 - 1e-9)
    # the stem and the head are not recomputed, and keep their own nodes
    for name in ("stem", "fc"):
        assert t.module_ranges(name, in_backward=True) == []
        assert t.bwd(name) > 0


# -- (h) hooks removed, modes restored --------------------------------------------------


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def hooks_of(model: nn.Module) -> dict[tuple[str, str], int]:
    return {
        (name, d): len(getattr(m, d))
        for name, m in model.named_modules()
        for d in HOOK_DICTS
        if len(getattr(m, d, {}))
    }


def test_no_hooks_left_and_eval_mode_restored() -> None:
    model = FlattenHead()
    model.eval()
    bn = model.body[1]
    before = int(bn.num_batches_tracked)
    run(model)
    assert hooks_of(model) == {}
    assert not model.training
    assert all(not m.training for m in model.modules())
    # ...but the step itself ran in train mode (batch norm counted its batches)
    assert int(bn.num_batches_tracked) > before


def test_mixed_modes_and_user_hooks_are_kept() -> None:
    model = FlattenHead()
    model.train()
    model.body[1].eval()  # a frozen batch norm inside a training model
    seen = []
    handle = model.stem.register_forward_hook(lambda m, i, o: seen.append(1))
    modes = {name: m.training for name, m in model.named_modules()}
    run(model)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert hooks_of(model) == {("stem", "_forward_hooks"): 1}
    assert seen  # the user's hook still ran during the measured steps
    handle.remove()
    assert hooks_of(model) == {}


class FailsInTraining(nn.Module):
    """Passes the eval-mode shape check, then fails in the training step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.training:
            raise RuntimeError("boom in training")
        return self.fc(x.flatten(1))


def test_hooks_removed_and_mode_restored_after_an_error_mid_step() -> None:
    model = FailsInTraining().eval()
    # The model's own error, as one line naming the step (the original is its cause).
    with pytest.raises(LayertimeError, match="a training step failed.*boom in training"):
        measure(model, config(), CPU, label="f", options=MeasureOptions(1, 0))
    assert hooks_of(model) == {}
    assert not model.training and not model.conv.training
    # and the profiler is not left running: a next measurement works
    r = run(plain_net())
    assert r.steps == 1


# -- (g) the sums, over several nets and steps ---------------------------------------


@pytest.mark.parametrize(
    "make",
    [plain_net, FlattenHead, Twice, Shared, lambda: Checkpointed(True)],
    ids=["plain", "flatten-head", "twice", "shared", "checkpoint"],
)
def test_rows_add_up_to_the_profiled_step(make: Callable[[], nn.Module]) -> None:
    r = run(make(), steps=2, optimizer="adam")
    assert len(r.profiled_step_samples_s) == 2
    assert r.profiled_step_s > 0
    # every module with parameters has a row; modules nobody calls have none
    model_rows = rows(r)
    assert all(row.update_s > 0 for row in model_rows.values() if row.params)


def test_trace_rows_add_up_to_the_step_range() -> None:
    t = Traced(FlattenHead())
    c = t.charges
    assert c.step_s == pytest.approx(t.step.duration_us * 1e-6)
    assert sum(c.modules.values()) + sum(c.step.values()) == pytest.approx(c.step_s, rel=1e-9)
    assert c.step["update"] == pytest.approx(t.phase("update").duration_us * 1e-6)
    assert c.step["zero_grad"] == pytest.approx(t.phase("zero_grad").duration_us * 1e-6)


# -- (i) unattributed stays small -----------------------------------------------------


def test_unattributed_is_a_small_part_of_a_real_step() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 10),
    )
    r = run(model, steps=2, warmup=1, shape=(3, 32, 32), batch=8)
    assert r.phases.unattributed_s >= 0
    assert r.phases.unattributed_s < 0.2 * r.profiled_step_s, (
        r.phases,
        r.profiled_step_samples_s,
    )
    # most of the step is in the layers' own rows
    layers = sum(row.total_s for row in r.layers)
    assert layers > 0.5 * r.profiled_step_s


# -- a module that computes projections itself ------------------------------------------


class PatchTransformer(nn.Module):
    """Pixels as tokens through torch's own encoder layer (nn.MultiheadAttention inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(2).transpose(1, 2))
        return self.fc(self.enc(tokens).mean(1))


def test_multihead_attention_projections_are_fully_connected_rows() -> None:
    r = run(PatchTransformer())
    rs = rows(r)
    att = "enc.layers.0.self_attn"
    core, part, out = rs[att], rs[f"{att}.(in_proj)"], rs[f"{att}.out_proj"]
    # The core: scores, softmax, weighted sum; no parameters of its own left.
    assert (core.kind, core.role, core.params) == ("attention", "attention", 0)
    assert core.forward_s > 0
    # in_proj_weight and in_proj_bias: a part of the module, fully connected.
    assert (part.kind, part.role, part.params, part.calls) == ("linear", "attention",
                                                               3 * 16 * 16 + 3 * 16, 1)
    assert part.forward_s > 0 and part.backward_s > 0 and part.update_s > 0
    # out_proj, never called as a module, holds its matmul, forward and backward.
    assert (out.kind, out.calls) == ("linear", 1)
    assert out.forward_s > 0 and out.backward_s > 0
    assert rs["enc.layers.0.linear1"].role == "mlp" and rs["enc.layers.0.linear2"].role == "mlp"
    total = r.roles()["attention"]
    assert total.core_s == pytest.approx(core.total_s, rel=1e-9) and total.core_s < total.time_s
