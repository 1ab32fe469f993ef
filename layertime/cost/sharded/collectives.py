"""The collectives of one sharded training step, counted from the model's layout (pure).

Counting conventions (``docs/cost.md``, "Sharded training"):

* **Tensor parallelism first.**  A parameter of a tensor-parallel layer is split along
  one dimension over the ``tp`` ranks (``workload.sharding.tp_split_dim``); every other
  parameter is whole on every rank.
* **FSDP2 then shards that (TP-local) tensor** over the ``dp`` ranks along its first
  dimension, padded to a multiple of ``dp`` (``torch.chunk``'s split, as FSDP2 pads):
  ``ceil(d0 / dp) * dp * (other dims)`` elements gathered per parameter.
* **Per FSDP unit** (``workload.sharding.fsdp_units``) with parameters, over the ``dp``
  group: an all-gather of its parameters (param dtype) before its forward; again before
  its backward when it reshards after forward (never the root, which FSDP2 keeps
  gathered); a reduce-scatter of the gradients of its trainable parameters (grad dtype)
  after its backward.  ``dp == 1`` issues none.  A unit's collective is charged to its
  layers by the bytes each contributes (its parameters' padded elements).
* **Per tensor-parallel layer**, over the ``tp`` group, the activation-sized all-reduce
  eager TP runs: of a row-wise layer's output in forward, of a column-wise layer's input
  gradient in backward; ``tokens x features x calls x dtype bytes`` (``features``: the
  output features of a row-wise layer, the input features of a column-wise one).
* ``bytes`` is a collective's full tensor; ``wire_bytes`` what each rank sends in a ring:
  ``(n-1)/n`` of it for an all-gather or reduce-scatter, ``2(n-1)/n`` (rounded down) for an
  all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from layertime.results.cost.sharded import Collective


@dataclass(frozen=True)
class ParamLayout:
    """One parameter as a layer owns it: its full shape, the dimension tensor parallelism
    splits (None: whole on every rank), whether it trains."""

    shape: tuple[int, ...]
    tp_dim: int | None = None
    trainable: bool = True

    def local_shape(self, tp: int) -> tuple[int, ...]:
        """The shape one tensor-parallel rank holds."""
        if self.tp_dim is None or tp == 1:
            return self.shape
        s = list(self.shape)
        s[self.tp_dim] //= tp
        return tuple(s)

    def gathered(self, dp: int, tp: int) -> int:
        """Elements of this parameter in its unit's all-gather (FSDP2's padded size)."""
        shape = self.local_shape(tp) or (1,)
        rest = math.prod(shape[1:])
        return math.ceil(shape[0] / dp) * dp * rest

    def local(self, dp: int, tp: int) -> int:
        """Elements one rank holds (its padded FSDP shard of its TP-local tensor)."""
        return self.gathered(dp, tp) // dp


@dataclass(frozen=True)
class LayerLayout:
    """One layer (module) as the sharded step sees it, in ``named_modules`` order."""

    name: str
    kind: str
    type: str
    #: The FSDP unit holding it (``""``: the root).
    unit: str
    #: Its own parameters (a shared one at its first owner only).
    params: tuple[ParamLayout, ...] = ()
    #: Its tensor-parallel style (``colwise``, ``rowwise``, ``colwise_qkv``), if any.
    tp_style: str | None = None
    #: (in, out) features of a tensor-parallel layer.
    features: tuple[int, int] | None = None
    #: Forward calls per step (each issues its all-reduce).
    calls: int = 1
    #: Its compute is split over the tensor-parallel ranks (a parallel layer, or a module
    #: between a column-wise and a row-wise layer: the attention core, the MLP's activation).
    tp_region: bool = False
    role: str | None = None
    block: str | None = None

    @property
    def elements(self) -> int:
        return sum(math.prod(p.shape) for p in self.params)


@dataclass(frozen=True)
class Planned:
    """A collective before timing, and how its bytes split over layers."""

    collective: Collective
    #: Layer name -> bytes of the collective's tensor that are that layer's.
    shares: Mapping[str, int] = field(default_factory=dict)


def wire_bytes(kind: str, nbytes: int, ranks: int) -> int:
    """Bytes each rank sends in a ring collective of a ``nbytes`` tensor."""
    if ranks <= 1:
        return 0
    if kind == "all_reduce":
        return 2 * (ranks - 1) * nbytes // ranks
    return (ranks - 1) * nbytes // ranks


def _collective(kind: str, phase: str, group: str, ranks: int, owner: str,
                shares: Mapping[str, int]) -> Planned:
    n = sum(shares.values())
    return Planned(Collective(kind, phase, group, ranks, owner, n, wire_bytes(kind, n, ranks)),
                   dict(shares))


def plan_collectives(
    layers: Sequence[LayerLayout],
    units: Sequence[str],
    *,
    dp: int,
    tp: int,
    fsdp: bool,
    reshard_after_forward: bool,
    elem_bytes: int,
    tokens: int,
) -> tuple[Planned, ...]:
    """Every collective of one step: per FSDP unit (in ``units`` order) its forward
    all-gather, backward all-gather and reduce-scatter; per tensor-parallel layer its
    forward and backward all-reduces.  ``tokens`` is the per-rank batch x sequence length."""
    out: list[Planned] = []
    if fsdp and dp > 1:
        for unit in units:
            members = [r for r in layers if r.unit == unit]
            gather = {r.name: sum(p.gathered(dp, tp) for p in r.params) * elem_bytes
                      for r in members}
            gather = {k: v for k, v in gather.items() if v}
            grads = {r.name: sum(p.gathered(dp, tp) for p in r.params if p.trainable)
                     * elem_bytes for r in members}
            grads = {k: v for k, v in grads.items() if v}
            if gather:
                out.append(_collective("all_gather", "forward", "dp", dp, unit, gather))
                if reshard_after_forward and unit != "":
                    out.append(_collective("all_gather", "backward", "dp", dp, unit, gather))
            if grads:
                out.append(_collective("reduce_scatter", "backward", "dp", dp, unit, grads))
    if tp > 1:
        for r in layers:
            if r.tp_style is None or r.features is None:
                continue
            fin, fout = r.features
            if r.tp_style == "rowwise":
                n = tokens * fout * r.calls * elem_bytes
                out.append(_collective("all_reduce", "forward", "tp", tp, r.name, {r.name: n}))
            else:
                n = tokens * fin * r.calls * elem_bytes
                out.append(_collective("all_reduce", "backward", "tp", tp, r.name, {r.name: n}))
    return tuple(out)
