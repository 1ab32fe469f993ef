"""How a model is sharded across ranks: which modules are FSDP2 units, which layers are
tensor-parallel and how, on which mesh.  A pure description, read by the collectors that
apply it (``measure/parallel/shard.py``) and by the cost model that counts it
(``cost/``), so that a measured and a predicted sharded step mean the same layout.

* **FSDP units** (:func:`fsdp_units`): every transformer block the roles find
  (``roles.blocks_of``), else every top-level child that holds parameters (a CNN's
  ``features`` and ``classifier``), then the root, which holds what is left (embeddings,
  final norm, head).  Each unit's parameters are all-gathered before its forward (and its
  backward, when it resharded after forward) and its gradients reduce-scattered after its
  backward, as one collective per unit.
* **Tensor-parallel plan** (:func:`tp_plan`): a Hugging Face model's own declared plan
  (``config.base_model_tp_plan``) where it uses only column- and row-wise linear layers
  (Llama, Mistral, Qwen2 and most decoder models declare one); GPT-2's blocks by
  layertime's own plan (its fused ``c_attn`` split head by head, ``Conv1D`` weights stored
  transposed).  Anything else is refused with one line naming what is missing.
* **The mesh**: ``world_size = dp x tp``; with ``tp > 1`` and FSDP, a 2-D mesh whose
  inner dimension is tensor-parallel (ranks of one node), outer data-parallel (FSDP).

Refusals are :class:`~layertime.errors.BadValue` (a ``LayertimeError``): one line, and
exit status 2 on the command line, as for any bad flag value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from layertime.errors import BadValue
from layertime.roles import blocks_of

#: Tensor-parallel styles layertime applies: column-wise (output features split across
#: ranks, input replicated), row-wise (input features split, output all-reduced), and
#: GPT-2's fused query/key/value projection split column-wise head by head.
TP_STYLES = ("colwise", "rowwise", "colwise_qkv")


@dataclass(frozen=True)
class ShardingSpec:
    """FSDP2 (``fsdp``) and/or tensor parallelism over ``tp`` ranks.

    ``reshard_after_forward`` frees each unit's gathered parameters after its forward
    (they are all-gathered again for its backward), FSDP2's default; the root unit is
    never resharded after forward (FSDP2 keeps it, as its backward comes first).
    """

    fsdp: bool = False
    tp: int = 1
    reshard_after_forward: bool = True

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise BadValue(f"--tp must be at least 1, not {self.tp}")
        if not self.fsdp and self.tp == 1:
            raise BadValue("a sharded run needs --fsdp, --tp K (K >= 2), or both")

    @property
    def mode(self) -> str:
        """``fsdp``, ``tp`` or ``fsdp+tp`` (2-D)."""
        if self.fsdp and self.tp > 1:
            return "fsdp+tp"
        return "fsdp" if self.fsdp else "tp"

    def mesh(self, world_size: int) -> tuple[int, int]:
        """``(dp, tp)``: the data-parallel (FSDP) and tensor-parallel sizes of the mesh."""
        if world_size < 1:
            raise BadValue(f"the world size must be at least 1, not {world_size}")
        if world_size % self.tp:
            raise BadValue(
                f"--tp {self.tp} does not divide {world_size} ranks (N must be K x M)"
            )
        dp = world_size // self.tp
        if not self.fsdp and dp > 1:
            raise BadValue(
                f"--tp {self.tp} on {world_size} ranks leaves {dp} data-parallel replicas: "
                f"add --fsdp for 2-D ({dp} x {self.tp}), or use --nproc {self.tp}"
            )
        return dp, self.tp

    def describe(self, world_size: int) -> str:
        """E.g. ``FSDP over 4 ranks`` or ``FSDP 2 x TP 2`` (with resharding said)."""
        dp, tp = self.mesh(world_size)
        reshard = "" if self.reshard_after_forward else ", no reshard after forward"
        if self.mode == "fsdp":
            return f"FSDP over {dp} ranks{reshard}"
        if self.mode == "tp":
            return f"TP over {tp} ranks"
        return f"FSDP {dp} x TP {tp}{reshard}"

    def to_dict(self) -> dict[str, Any]:
        return {"fsdp": self.fsdp, "tp": self.tp,
                "reshard_after_forward": self.reshard_after_forward}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardingSpec:
        return cls(bool(d.get("fsdp", False)), int(d.get("tp", 1)),
                   bool(d.get("reshard_after_forward", True)))


def fsdp_units(layers: Sequence[tuple[str, str, str, int]]) -> tuple[str, ...]:
    """The modules to shard, inner first and the root (``""``) last, from ``(name, kind,
    type, own parameters)`` of every module in ``named_modules`` order.

    Transformer blocks where the roles find them, else top-level children holding
    parameters (directly or below them).  Nested units are fine for FSDP2: each unit
    owns the parameters of its subtree not owned by a unit inside it.
    """
    blocks = blocks_of([(n, k, t) for n, k, t, _ in layers])
    units: list[str] = []
    for name, *_ in layers:
        b = blocks.get(name)
        if b is not None and b not in units:
            units.append(b)
    if not units:
        holding: dict[str, int] = {}
        for name, _, _, params in layers:
            if name:
                top = name.split(".")[0]
                holding[top] = holding.get(top, 0) + params
        units = [n for n, _, _, _ in layers if n and "." not in n and holding.get(n, 0) > 0]
    return (*units, "")


def unit_of(name: str, units: Sequence[str]) -> str:
    """The innermost unit holding module ``name`` (the root ``""`` holds everything)."""
    best = ""
    for u in units:
        if u and (name == u or name.startswith(u + ".")) and len(u) > len(best):
            best = u
    return best


@dataclass(frozen=True)
class TpPlan:
    """Which layers are tensor-parallel, and how: dotted module path -> a style of
    :data:`TP_STYLES`.  ``source`` says where the plan comes from."""

    layers: Mapping[str, str]
    source: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def _generic(name: str) -> str:
    """A module path with its numbered segments as ``*`` (``layers.3.mlp`` -> ``layers.*.mlp``)."""
    return ".".join("*" if s.isdigit() else s for s in name.split("."))


def _hf_config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def _is_conv1d(m: nn.Module) -> bool:
    """transformers' ``Conv1D``: a linear layer whose weight is stored (in, out)."""
    w = getattr(m, "weight", None)
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and w is not None and w.dim() == 2


def _features(m: nn.Module) -> tuple[int, int]:
    """(in, out) features of a linear layer (``nn.Linear`` or ``Conv1D``)."""
    w = m.weight
    assert isinstance(w, torch.Tensor)
    if _is_conv1d(m):
        return int(w.shape[0]), int(w.shape[1])
    return int(w.shape[1]), int(w.shape[0])


def linear_features(m: nn.Module) -> tuple[int, int]:
    """(in, out) features of a linear layer of a plan (``nn.Linear`` or ``Conv1D``)."""
    return _features(m)


def tp_split_dim(m: nn.Module, param: str, style: str) -> int | None:
    """The dimension of parameter ``param`` (``weight`` or ``bias``) of a ``style`` layer
    that tensor parallelism splits across ranks, or None when every rank holds all of it
    (a row-wise layer's bias, added after the all-reduce).  ``Conv1D`` stores its weight
    (in, out), ``nn.Linear`` (out, in)."""
    if style not in TP_STYLES:
        raise BadValue(f"unknown tensor-parallel style {style!r}")
    rowwise = style == "rowwise"
    if param == "bias":
        return None if rowwise else 0
    if param != "weight":
        return None
    if _is_conv1d(m):
        return 0 if rowwise else 1
    return 1 if rowwise else 0


def _gpt2_plan(model: nn.Module) -> dict[str, str]:
    """GPT-2 blocks: fused c_attn split head by head, c_proj row-wise, c_fc column-wise."""
    out: dict[str, str] = {}
    for name, m in model.named_modules():
        c_attn = getattr(m, "c_attn", None)
        if c_attn is not None and _is_conv1d(c_attn) and hasattr(m, "split_size"):
            if getattr(m, "is_cross_attention", False) or hasattr(m, "q_attn"):
                continue
            out[f"{name}.c_attn"] = "colwise_qkv"
            if _is_conv1d(getattr(m, "c_proj", nn.Identity())):
                out[f"{name}.c_proj"] = "rowwise"
        c_fc = getattr(m, "c_fc", None)
        if c_fc is not None and _is_conv1d(c_fc) and _is_conv1d(getattr(m, "c_proj", nn.Identity())):
            out[f"{name}.c_fc"] = "colwise"
            out[f"{name}.c_proj"] = "rowwise"
    return out


def _declared_plan(model: nn.Module) -> tuple[dict[str, str], str] | None:
    """A transformers model's own ``base_model_tp_plan``, resolved to module paths."""
    config = _hf_config(model)
    plan = getattr(config, "base_model_tp_plan", None) if config is not None else None
    if not plan:
        return None
    unknown = sorted({f"{style} ({pat})" for pat, style in plan.items()
                      if style not in ("colwise", "rowwise")})
    if unknown:
        raise BadValue(
            f"{type(model).__name__}'s tensor-parallel plan (config.base_model_tp_plan) uses "
            f"styles layertime does not apply: {', '.join(unknown[:3])}; "
            "layertime applies column- and row-wise linear layers only"
        )
    prefix = getattr(model, "base_model_prefix", "")
    out: dict[str, str] = {}
    for name, _ in model.named_modules():
        rel = name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name
        style = plan.get(_generic(rel))
        if style is not None:
            out[name] = style
    model_type = getattr(config, "model_type", type(model).__name__)
    return out, f"transformers' plan for {model_type} (config.base_model_tp_plan)"


def _check_divisible(model: nn.Module, layers: Mapping[str, str], tp: int) -> None:
    modules = dict(model.named_modules())
    for name, style in layers.items():
        m = modules[name]
        if not (isinstance(m, nn.Linear) or _is_conv1d(m)):
            raise BadValue(
                f"tensor-parallel layer {name} is a {type(m).__name__}, not a linear layer"
            )
        fin, fout = _features(m)
        n = fin if style == "rowwise" else fout // 3 if style == "colwise_qkv" else fout
        if n % tp:
            side = "input" if style == "rowwise" else "output"
            raise BadValue(
                f"--tp {tp} does not divide {name}'s {n} {side} features"
            )
    config = _hf_config(model)
    for key in ("num_attention_heads", "num_key_value_heads", "n_head"):
        heads = getattr(config, key, None) if config is not None else None
        if isinstance(heads, int) and heads % tp:
            raise BadValue(f"--tp {tp} does not divide the model's {key}={heads}")


def tp_plan(model: nn.Module, tp: int, label: str = "") -> TpPlan:
    """The tensor-parallel plan of ``model`` over ``tp`` ranks, or one line saying what is
    missing (a model with no known plan, a size ``tp`` does not divide)."""
    name = label or type(model).__name__
    gpt2 = _gpt2_plan(model)
    if gpt2:
        plan = TpPlan(gpt2, "layertime's plan for GPT-2 blocks (c_attn split head by head)")
    else:
        declared = _declared_plan(model)
        if declared is None or not declared[0]:
            raise BadValue(
                f"--tp: no tensor-parallel plan for {name}: layertime knows GPT-2 blocks and "
                "transformers models that declare config.base_model_tp_plan (Llama-style "
                "q/k/v/o and gate/up/down projections); use --fsdp alone"
            )
        plan = TpPlan(declared[0], declared[1])
    _check_divisible(model, plan.layers, tp)
    return plan


def tp_layers_by_pattern(layers: Mapping[str, str]) -> dict[str, str]:
    """The plan written with ``*`` for block numbers (for display and JSON)."""
    out: dict[str, str] = {}
    for name, style in layers.items():
        out.setdefault(re.sub(r"\.\d+\.", ".*.", name), style)
    return out
