"""Shard a model as a :class:`~layertime.workload.sharding.ShardingSpec` says: the device
mesh, the tensor-parallel plan (``parallelize_module``), then FSDP2 (``fully_shard``) on
each unit and the root.

Tensor parallelism comes first and FSDP shards what it leaves, over the mesh's
data-parallel dimension (torchtitan's order for 2-D).  Column- and row-wise ``nn.Linear``
layers use torch's own styles; transformers' ``Conv1D`` (GPT-2), whose weight is stored
(in, out), gets the same styles with the dimensions swapped, and GPT-2's fused
query/key/value projection is split head by head (each rank's columns are its heads'
queries, keys and values, so the local ``split`` of the attention still yields q, k, v:
its ``split_size`` is set to the local width, as Megatron's GPT-2 does).  The model
computes the same function as unsharded; :func:`layout_of` describes what was done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)

from layertime.errors import LayertimeError
from layertime.modules import ModuleTable
from layertime.results.parallel.sharded import ShardLayout
from layertime.workload.sharding import ShardingSpec, TpPlan, fsdp_units, tp_layers_by_pattern, tp_plan


def make_mesh(spec: ShardingSpec, world_size: int, device_type: str) -> DeviceMesh:
    """The device mesh: ``("dp", "tp")`` for 2-D, else one dimension named by the mode."""
    dp, tp = spec.mesh(world_size)
    if spec.mode == "fsdp+tp":
        return init_device_mesh(device_type, (dp, tp), mesh_dim_names=("dp", "tp"))
    name = "tp" if spec.mode == "tp" else "dp"
    return init_device_mesh(device_type, (world_size,), mesh_dim_names=(name,))


def _param(module: nn.Module, name: str) -> torch.Tensor | None:
    p = getattr(module, name, None)
    return p if isinstance(p, torch.Tensor) else None


def _distribute(module: nn.Module, name: str, value: torch.Tensor, mesh: DeviceMesh,
                placement: Shard | Replicate) -> None:
    """Replace parameter ``name`` by ``value`` distributed over ``mesh``."""
    old = _param(module, name)
    requires_grad = bool(old.requires_grad) if old is not None else True
    module.register_parameter(
        name, nn.Parameter(distribute_tensor(value.detach(), mesh, [placement]),
                           requires_grad=requires_grad)
    )


class _Conv1DColwise(ColwiseParallel):
    """Column-wise for ``Conv1D`` (weight ``(in, out)``): weight ``Shard(1)``, bias ``Shard(0)``.
    ``heads_of`` > 0 splits a fused q/k/v projection head by head (see the module doc)."""

    def __init__(self, fused_qkv: bool = False) -> None:
        super().__init__()
        self.fused_qkv = fused_qkv

    def _partition(self, name: str, module: nn.Module, mesh: DeviceMesh) -> None:
        weight, bias = _param(module, "weight"), _param(module, "bias")
        assert weight is not None
        if self.fused_qkv:
            perm = _qkv_order(int(weight.shape[1]), mesh.size())
            weight = weight.detach()[:, perm]
            bias = bias.detach()[perm] if bias is not None else None
        _distribute(module, "weight", weight, mesh, Shard(1))
        if bias is not None:
            _distribute(module, "bias", bias, mesh, Shard(0))

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return distribute_module(
            module, device_mesh, self._partition,
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            partial(self._prepare_output_fn, self.output_layouts, self.use_local_output),
        )


class _Conv1DRowwise(RowwiseParallel):
    """Row-wise for ``Conv1D``: weight ``Shard(0)`` (its input features), bias replicated."""

    def _partition(self, name: str, module: nn.Module, mesh: DeviceMesh) -> None:
        weight, bias = _param(module, "weight"), _param(module, "bias")
        assert weight is not None
        _distribute(module, "weight", weight, mesh, Shard(0))
        if bias is not None:
            _distribute(module, "bias", bias, mesh, Replicate())

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        self.desired_input_layouts = (Shard(-1),)
        return distribute_module(
            module, device_mesh, self._partition,
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            partial(self._prepare_output_fn, self.output_layouts, self.use_local_output),
        )


def _qkv_order(width: int, ranks: int) -> torch.Tensor:
    """Column order of a fused ``[q | k | v]`` projection (``width`` = 3E) that gives each
    of ``ranks`` contiguous shards ``[q_r | k_r | v_r]``, its heads' slices of each."""
    e = width // 3
    local = e // ranks
    idx = [
        part * e + r * local + j
        for r in range(ranks) for part in range(3) for j in range(local)
    ]
    return torch.tensor(idx, dtype=torch.long)


def _style(module: nn.Module, style: str) -> ParallelStyle:
    conv1d = type(module).__name__ == "Conv1D"
    if style == "colwise_qkv":
        return _Conv1DColwise(fused_qkv=True)
    if style == "colwise":
        return _Conv1DColwise() if conv1d else ColwiseParallel()
    if style == "rowwise":
        return _Conv1DRowwise() if conv1d else RowwiseParallel()
    raise LayertimeError(f"unknown tensor-parallel style {style!r}")


def _apply_tp(model: nn.Module, plan: TpPlan, mesh: DeviceMesh) -> None:
    modules = dict(model.named_modules())
    styles = {name: _style(modules[name], style) for name, style in plan.layers.items()}
    parallelize_module(model, mesh, styles)
    for name, style in plan.layers.items():
        if style == "colwise_qkv":
            # The attention splits c_attn's output into q, k, v by its split_size:
            # each rank now holds 3 x (E / tp) columns, its heads' q, k and v.
            attn = modules[name.rsplit(".", 1)[0]]
            attn.split_size = int(attn.split_size) // mesh.size()  # type: ignore[operator]


@dataclass(frozen=True)
class Sharded:
    """A model sharded in place, its mesh and what was done (:class:`ShardLayout`)."""

    model: nn.Module
    mesh: DeviceMesh
    layout: ShardLayout


def shard_model(
    model: nn.Module, spec: ShardingSpec, world_size: int, device: torch.device, label: str = ""
) -> Sharded:
    """Apply ``spec`` to ``model`` (in place: it is layertime's own built model) on every rank.

    Raises :class:`LayertimeError` when the model has no tensor-parallel plan or a size
    the mesh does not divide.
    """
    mesh = make_mesh(spec, world_size, device.type)
    dp, tp = spec.mesh(world_size)
    plan: TpPlan | None = None
    if tp > 1:
        plan = tp_plan(model, tp, label)
        _apply_tp(model, plan, mesh["tp"])
    units: tuple[str, ...] = ()
    if spec.fsdp:
        table = ModuleTable(model)
        units = fsdp_units([(e.name, e.kind, e.type, e.params) for e in table])
        dp_mesh = mesh["dp"]
        modules = dict(model.named_modules())
        for name in units:
            # None is FSDP2's own default: reshard every unit but the root, whose
            # parameters its backward needs first.
            fully_shard(modules[name], mesh=dp_mesh,
                        reshard_after_forward=None if spec.reshard_after_forward else False)
    return Sharded(model, mesh, layout_of(model, spec, world_size, units, plan))


def layout_of(
    model: nn.Module, spec: ShardingSpec, world_size: int, units: tuple[str, ...],
    plan: TpPlan | None,
) -> ShardLayout:
    """What :func:`shard_model` (or the user) did, as plain data for the result."""
    dp, tp = spec.mesh(world_size)
    return ShardLayout(
        mode=spec.mode,
        world_size=world_size,
        dp=dp,
        tp=tp,
        reshard_after_forward=spec.reshard_after_forward,
        units=units,
        tp_layers=tp_layers_by_pattern(plan.layers) if plan is not None else {},
        tp_plan=plan.source if plan is not None else None,
    )


def _unit_names(model: nn.Module) -> tuple[str, ...]:
    """The FSDP units of a model the user sharded, inner first, the root ``""`` last: FSDP2's
    sharded modules, or FSDP1's ``FullyShardedDataParallel`` wrappers (whose outermost may
    sit outside the model, as under Lightning: the root holds what no inner unit does)."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    names = [n for n, m in model.named_modules()
             if isinstance(m, (FSDPModule, FullyShardedDataParallel))]
    if names and "" not in names:
        names.append("")
    return tuple(sorted(names, key=lambda n: (n == "", -n.count("."))))


def _tp_layers(model: nn.Module, fsdp: bool) -> dict[str, str]:
    """Linear layers whose weight is a DTensor sharded over a tensor-parallel mesh
    dimension (named ``tp``, or any dimension when FSDP is not used): column-wise when
    its output features are split, row-wise when its input features are."""
    from torch.distributed.tensor import DTensor

    out: dict[str, str] = {}
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, DTensor) or not (isinstance(m, nn.Linear) or _is_conv1d(m)):
            continue
        dims = w.device_mesh.mesh_dim_names or ("tp",) * w.device_mesh.ndim
        tp = [p for p, d in zip(w.placements, dims)
              if isinstance(p, Shard) and ("tp" in d or not fsdp)]
        if tp:
            out_dim = 1 if _is_conv1d(m) else 0
            out[name] = "colwise" if tp[0].dim == out_dim else "rowwise"
    return out


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D"


def detect_layout(model: nn.Module, world_size: int) -> ShardLayout | None:
    """The layout of a model the user sharded themselves (``fully_shard`` and/or
    ``parallelize_module``), or None for a model that is not sharded.  The tensor-parallel
    size is that of a mesh dimension named ``tp`` (all ranks without FSDP)."""
    units = _unit_names(model)
    tp_layers = _tp_layers(model, fsdp=bool(units))
    if not units and not tp_layers:
        return None
    tp = 1
    if tp_layers and not units:
        tp = world_size
    for p in model.parameters():
        mesh = getattr(p, "device_mesh", None)
        if mesh is not None and mesh.mesh_dim_names and "tp" in mesh.mesh_dim_names:
            tp = int(mesh.size(mesh.mesh_dim_names.index("tp")))
            break
    mode = "fsdp+tp" if units and tp > 1 else "fsdp" if units else "tp"
    return ShardLayout(mode=mode, world_size=world_size, dp=world_size // tp, tp=tp,
                       reshard_after_forward=None, units=units,
                       tp_layers=tp_layers_by_pattern(tp_layers), tp_plan="the user's")
