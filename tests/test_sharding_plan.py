"""The sharding description: FSDP units, tensor-parallel plans, the mesh (pure; meta models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layertime.errors import LayertimeError
from layertime.models import ModelRef, resolve
from layertime.modules import ModuleTable
from layertime.workload.sharding import (
    ShardingSpec,
    fsdp_units,
    tp_layers_by_pattern,
    tp_plan,
    unit_of,
)


def _meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return resolve(ModelRef(name) if name.startswith("hf:") else name).build(10)


def _units(model: nn.Module) -> tuple[str, ...]:
    return fsdp_units([(e.name, e.kind, e.type, e.params) for e in ModuleTable(model)])


def test_units_are_transformer_blocks_then_the_root() -> None:
    units = _units(_meta("hf:gpt2"))
    assert units == tuple(f"transformer.h.{i}" for i in range(12)) + ("",)


def test_units_of_a_cnn_are_its_top_level_children_with_parameters() -> None:
    # avgpool holds no parameters: it is no unit (the root holds it).
    assert _units(_meta("alexnet")) == ("features", "classifier", "")


def test_unit_of_is_the_innermost_unit() -> None:
    units = ("a.0", "a.1", "")
    assert unit_of("a.0.fc", units) == "a.0"
    assert unit_of("a.10.fc", units) == ""
    assert unit_of("emb", units) == ""


def test_gpt2_plan_splits_fused_qkv_head_by_head() -> None:
    plan = tp_plan(_meta("hf:gpt2"), 2)
    assert tp_layers_by_pattern(plan.layers) == {
        "transformer.h.*.attn.c_attn": "colwise_qkv",
        "transformer.h.*.attn.c_proj": "rowwise",
        "transformer.h.*.mlp.c_fc": "colwise",
        "transformer.h.*.mlp.c_proj": "rowwise",
    }
    assert len(plan.layers) == 48


def test_llama_plan_is_transformers_own() -> None:
    plan = tp_plan(_meta("hf:tinyllama-1.1b"), 2)
    pats = tp_layers_by_pattern(plan.layers)
    assert pats["model.layers.*.self_attn.o_proj"] == "rowwise"
    assert pats["model.layers.*.mlp.gate_proj"] == "colwise"
    assert "base_model_tp_plan" in plan.source


def test_no_plan_is_one_line_naming_what_is_missing() -> None:
    with pytest.raises(LayertimeError, match="no tensor-parallel plan for alexnet.*--fsdp alone"):
        tp_plan(_meta("alexnet"), 2, "alexnet")


def test_a_tp_size_that_does_not_divide_the_heads_is_refused() -> None:
    # GPT-2 has 12 heads: 8 does not divide them (768 features would be divided).
    with pytest.raises(LayertimeError, match="does not divide"):
        tp_plan(_meta("hf:gpt2"), 8)


@pytest.mark.parametrize(
    ("spec", "world", "mesh"),
    [(ShardingSpec(fsdp=True), 4, (4, 1)), (ShardingSpec(tp=2), 2, (1, 2)),
     (ShardingSpec(fsdp=True, tp=2), 4, (2, 2))],
)
def test_mesh(spec: ShardingSpec, world: int, mesh: tuple[int, int]) -> None:
    assert spec.mesh(world) == mesh
    assert ShardingSpec.from_dict(spec.to_dict()) == spec


def test_bad_meshes_are_refused() -> None:
    with pytest.raises(LayertimeError, match="does not divide 3 ranks"):
        ShardingSpec(fsdp=True, tp=2).mesh(3)
    with pytest.raises(LayertimeError, match="add --fsdp"):
        ShardingSpec(tp=2).mesh(4)
    with pytest.raises(LayertimeError, match="needs --fsdp"):
        ShardingSpec()
