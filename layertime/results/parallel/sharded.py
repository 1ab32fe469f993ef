"""What a sharded run adds to its result (``Run.sharding``, ``Run.collectives``): how the
model was sharded, and every collective of the step, grouped.

Torch-free, like the rest of the result model; JSON in ``docs/schema.md``.

Counting conventions.  ``bytes`` of a collective is the size of its full buffer: the
gathered output of an all-gather, the unreduced input of a reduce-scatter, the tensor of
an all-reduce (nccl-tests' "size"; the link carries (N-1)/N of it per rank for an
all-gather or reduce-scatter, 2(N-1)/N for a ring all-reduce).  ``exposed_s`` is time the
training thread spent on the collective (launching, copying in and out, waiting): it
lengthened the step and is in the rows; ``hidden_s`` is time the collective ran while the
thread computed (not in the rows: that compute is).  ``busy_s`` is the backend's own time
for the collectives (gloo's worker threads on the CPU, NCCL's kernels on CUDA).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Kinds of collective a row can be, in report order; ``fsdp`` is FSDP2's own work
#: around them (resharding, gradient accumulation, hooks' bookkeeping).
COLLECTIVE_KINDS = (
    "all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast", "fsdp", "other",
)
COLLECTIVE_LABELS: Mapping[str, str] = {
    "all_gather": "all-gather",
    "reduce_scatter": "reduce-scatter",
    "all_reduce": "all-reduce",
    "all_to_all": "all-to-all",
    "broadcast": "broadcast",
    "fsdp": "FSDP bookkeeping",
    "other": "other collectives",
}


@dataclass(frozen=True)
class ShardLayout:
    """How the model was sharded: the mode, the mesh, FSDP's units and TP's layers.

    ``units`` are the modules ``fully_shard`` was applied to, inner first, the root
    (``""``) last; a unit's collectives are charged to its own layers (those not in an
    inner unit) by parameter elements.  ``tp_layers`` maps module paths (``*`` for
    block numbers) to their style.  ``reshard_after_forward`` is None when not known
    (a model the user sharded).
    """

    mode: str
    world_size: int
    dp: int
    tp: int
    reshard_after_forward: bool | None
    units: tuple[str, ...] = ()
    tp_layers: Mapping[str, str] = field(default_factory=dict)
    tp_plan: str | None = None

    def describe(self) -> str:
        """E.g. ``FSDP over 4 ranks`` or ``FSDP 2 x TP 2``."""
        if self.mode == "fsdp":
            text = f"FSDP over {self.dp} ranks"
        elif self.mode == "tp":
            text = f"TP over {self.tp} ranks"
        else:
            text = f"FSDP {self.dp} x TP {self.tp}"
        if self.reshard_after_forward is False:
            text += ", no reshard after forward"
        return text


@dataclass(frozen=True)
class CollectiveRow:
    """The collectives of one kind, phase and owner in one step (means over traced steps,
    and over ranks in a merged run).

    ``scope`` is ``unit`` (an FSDP unit: ``target`` is its path, ``""`` the root),
    ``layer`` (a layer that issued it itself, as tensor-parallel layers do) or ``step``
    (outside any layer: the optimizer step, gradient clipping).
    """

    kind: str
    phase: str
    scope: str
    target: str
    count: float
    bytes: int
    exposed_s: float
    hidden_s: float
    busy_s: float = 0.0

    @property
    def comm_s(self) -> float:
        return self.exposed_s + self.hidden_s

    @property
    def label(self) -> str:
        return COLLECTIVE_LABELS.get(self.kind, self.kind)
