"""A model its user sharded, profiled inside their loop (``layertime.Profiler``) or a
framework's window (the Lightning and Hugging Face callbacks): its layout, read from the
model once it has run, and the charging of each traced step's collectives.

The layout comes from the model (``shard.detect_layout``): FSDP2's units, FSDP1's
wrappers (``FullyShardedDataParallel``, as Lightning's ``FSDPStrategy`` and accelerate
use them), tensor-parallel layers.  Without a process group nothing is sharded and the
charging still runs (a collective a user calls in a step is charged like any other).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from layertime.measure.aggregate import collective_rows
from layertime.measure.attribute import StepCharges
from layertime.measure.parallel.shard import detect_layout
from layertime.measure.parallel.sharded import unit_maps
from layertime.measure.parallel.sharded_comm import charge_collectives
from layertime.modules import ModuleTable
from layertime.results.run import Run
from layertime.results.parallel.sharded import ShardLayout


def world_size() -> int | None:
    """The process group's size when one is initialised, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return int(dist.get_world_size())


def backend_name() -> str | None:
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


class LoopSharding:
    """The sharding of a model seen from a loop: :meth:`read` once its table is final,
    then :meth:`charge` each traced step and :meth:`finish` the run."""

    def __init__(self) -> None:
        self.layout: ShardLayout | None = None
        self._maps: tuple[Any, Any, Any] = ({}, {}, {})
        self._read = False

    @property
    def read_done(self) -> bool:
        return self._read

    @property
    def record_shapes(self) -> bool:
        """Traced steps of a sharded model record shapes, for the collectives' bytes."""
        return self.layout is not None

    def read(self, model: nn.Module, table: ModuleTable) -> None:
        """Read the layout (after the model's first step: FSDP sets up lazily)."""
        self._read = True
        world = world_size()
        if world is None:
            return
        self.layout = detect_layout(model, world)
        if self.layout is not None:
            self._maps = unit_maps(table, self.layout.units)

    def charge(self, charges: StepCharges) -> StepCharges:
        return charge_collectives(charges, *self._maps)

    def finish(self, run: Run, table: ModuleTable, traced: list[StepCharges]) -> Run:
        """``run`` with the layout, the step's collectives and the ranks' count."""
        if self.layout is None:
            return run
        return replace(run, world_size=self.layout.world_size, sharding=self.layout,
                       collectives=collective_rows(table, traced), backend=backend_name())
