"""Hand-made results for tests: one factory each, consistent by construction.

``run(layers, loss_s=...)`` makes a :class:`Run` whose phases are the sums of
its rows plus the step-level times given, and whose profiled step is their
total (unless ``profiled`` says otherwise), so every derived number of a
real run holds.  Any field of the result can be overridden by keyword.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from layertime.results.environment import Environment
from layertime.results.run import LayerRow, Phases, Run

#: A row as (name, kind, forward_s, backward_s, update_s, params), or a ready LayerRow.
RowSpec = LayerRow | tuple[Any, ...]


def environment(**overrides: Any) -> Environment:
    """A test machine: a CPU named "Test CPU" on host "host", one thread."""
    fields: dict[str, Any] = dict(device="cpu", device_name="Test CPU", torch="2.x",
                                  torchvision=None, python="3.11", platform="linux",
                                  host="host", threads=1)
    fields.update(overrides)
    return Environment(**fields)


def layer(name: str, kind: str, forward_s: float, backward_s: float = 0.0,
          update_s: float = 0.0, params: int = 0, calls: float = 1.0, *,
          type: str | None = None, **extra: Any) -> LayerRow:
    """One row; its type defaults to the kind's name in title case."""
    return LayerRow(name, kind, type if type is not None else kind.title(), forward_s,
                    backward_s, update_s, params, calls, **extra)


def run(
    layers: Sequence[RowSpec],
    *,
    loss_s: float = 0.0,
    zero_grad_s: float = 0.0,
    data_s: float = 0.0,
    unattributed_s: float = 0.0,
    comm_exposed_s: float = 0.0,
    clip_s: float = 0.0,
    scheduler_s: float = 0.0,
    logging_s: float = 0.0,
    profiled: Sequence[float] | Callable[[float], Sequence[float]] | None = None,
    plain: Sequence[float] | None = None,
    **fields: Any,
) -> Run:
    """A consistent run of ``layers``: its phases add up from the rows and the step-level
    times; ``profiled`` (samples, or a function of the total) defaults to the total once,
    ``plain`` to the profiled samples."""
    rows = tuple(r if isinstance(r, LayerRow) else layer(*r) for r in layers)
    phases = Phases(
        forward_s=sum(r.forward_s for r in rows),
        backward_s=sum(r.backward_s for r in rows),
        update_s=sum(r.update_s for r in rows),
        loss_s=loss_s,
        zero_grad_s=zero_grad_s,
        data_s=data_s,
        unattributed_s=unattributed_s,
        comm_exposed_s=comm_exposed_s,
        clip_s=clip_s,
        scheduler_s=scheduler_s,
        logging_s=logging_s,
    )
    total = phases.total_s
    samples = tuple(profiled(total) if callable(profiled) else profiled or (total,))
    base: dict[str, Any] = dict(
        model="testnet",
        device="cpu",
        batch_size=4,
        input_shape=(3, 8, 8),
        dtype="float32",
        optimizer="sgd",
        steps=len(samples),
        warmup_steps=1,
        step_samples_s=tuple(plain) if plain is not None else samples,
        profiled_step_samples_s=samples,
        layers=rows,
        phases=phases,
        environment=environment(),
        timing="cpu-self-time",
        num_classes=10,
    )
    base.update(fields)
    return Run(**base)
