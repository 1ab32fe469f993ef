"""Properties of attribution over randomly built small CNNs (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from layertime.measure.runner import MeasureOptions, measure
from layertime.taxonomy import KINDS
from layertime.workload import WorkloadSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class BlockSpec:
    channels: int
    bn: bool
    relu: str  # "none", "relu", "inplace"
    pool: bool


@dataclass(frozen=True)
class NetSpec:
    size: int
    blocks: tuple[BlockSpec, ...]
    nested: bool  # blocks in Sequentials of their own, or all flat
    batch: int
    classes: int
    optimizer: str


blocks = st.builds(
    BlockSpec,
    channels=st.integers(1, 6),
    bn=st.booleans(),
    relu=st.sampled_from(["none", "relu", "inplace"]),
    pool=st.booleans(),
)
nets = st.builds(
    NetSpec,
    size=st.integers(8, 16),
    blocks=st.lists(blocks, min_size=1, max_size=4).map(tuple),
    nested=st.booleans(),
    batch=st.integers(2, 4),
    classes=st.integers(2, 6),
    optimizer=st.sampled_from(["sgd", "adam", "adamw"]),
)


def build(spec: NetSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    c, size = 3, spec.size
    for b in spec.blocks:
        block: list[nn.Module] = [nn.Conv2d(c, b.channels, 3, padding=1)]
        c = b.channels
        if b.bn:
            block.append(nn.BatchNorm2d(c))
        if b.relu != "none":
            block.append(nn.ReLU(inplace=b.relu == "inplace"))
        if b.pool and size >= 2:
            block.append(nn.MaxPool2d(2))
            size //= 2
        if spec.nested:
            layers.append(nn.Sequential(*block))
        else:
            layers.extend(block)
    layers += [nn.Flatten(), nn.Linear(c * size * size, spec.classes)]
    return nn.Sequential(*layers)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(nets)
def test_random_cnns_attribute_consistently(spec: NetSpec) -> None:
    torch.manual_seed(0)
    model = build(spec)
    config = WorkloadSpec.create(
        "test",
        batch_size=spec.batch,
        input_shape=(3, spec.size, spec.size),
        num_classes=spec.classes,
        optimizer=spec.optimizer,
    )
    r = measure(
        model, config, torch.device("cpu"), label="random",
        options=MeasureOptions(steps=1, warmup_steps=0),
    )
    by_name = {row.name: row for row in r.layers}
    assert len(by_name) == len(r.layers), "one row per distinct module"

    # no negative time anywhere
    for row in r.layers:
        assert row.forward_s >= 0 and row.backward_s >= 0 and row.update_s >= 0, row
        assert row.kind in KINDS, row
    p = r.phases
    for name in ("loss_s", "zero_grad_s", "data_s", "unattributed_s", "update_s"):
        assert getattr(p, name) >= 0, name

    # the sums hold
    layers = sum(row.total_s for row in r.layers)
    assert layers + p.loss_s + p.zero_grad_s + p.data_s + p.unattributed_s == pytest.approx(
        r.profiled_step_s, rel=1e-9
    )
    assert p.total_s == pytest.approx(r.profiled_step_s, rel=1e-9)
    assert sum(row.backward_s for row in r.layers) == pytest.approx(p.backward_s, rel=1e-9)
    assert sum(k.share for k in r.by_kind().values()) == pytest.approx(1.0, rel=1e-9)

    # every module with parameters has a row, with all its parameters
    for name, module in model.named_modules():
        own = sum(q.numel() for q in module.parameters(recurse=False))
        if own:
            assert name in by_name, name
            assert by_name[name].params == own
            # it was trained: forward, its own backward nodes, its update
            assert by_name[name].calls == 1
            assert by_name[name].forward_s > 0
            assert by_name[name].backward_s > 0, f"{name} got no backward"
            assert by_name[name].update_s > 0
    assert r.params == sum(q.numel() for q in model.parameters())

    # every module was called once; containers have no functional code, so
    # they own no backward node (the engine's work is never misfiled to them)
    for name, module in model.named_modules():
        assert by_name[name].calls == 1, name
        if isinstance(module, nn.Sequential):
            assert by_name[name].backward_s == 0.0, name
            assert by_name[name].update_s == 0.0, name
