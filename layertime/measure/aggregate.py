"""Turn per-step charges into the rows of a :class:`~layertime.results.run.Run`."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from layertime.measure.attribute import CommCharge, StepCharges
from layertime.modules import SharedParam
from layertime.results.run import LayerRow, Phases, Slice
from layertime.results.parallel.sharded import CollectiveRow
from layertime.roles import Placement


class Entry(Protocol):
    """What rows are made of, per module: ``ModuleEntry`` (a live model's) or a trace's."""

    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def params(self) -> int: ...
    @property
    def trainable(self) -> int: ...
    @property
    def part_of(self) -> int | None: ...


class Table(Protocol):
    """The modules rows are made for: ``ModuleTable``, or a trace's table."""

    @property
    def shared(self) -> tuple[SharedParam, ...]: ...
    def __iter__(self) -> Iterator[Entry]: ...
    def rows(self) -> Sequence[Entry]: ...
    def placements(self) -> dict[str, Placement]: ...


#: A layer with no gradient synchronisation (not a data-parallel run).
_NO_COMM = CommCharge(0.0, 0.0)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _std(xs: Sequence[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def split_update(charges: StepCharges, table: Table) -> dict[int, float]:
    """Split the optimizer step's measured time across modules by trainable elements.

    The update is elementwise over each parameter (and its optimizer state), so
    its cost is linear in elements; a fused or foreach optimizer runs one
    kernel for all layers, which no profiler can split any finer.
    """
    rows = table.rows()
    total = sum(e.trainable for e in rows)
    update = charges.step.get("update", 0.0)
    if total == 0 or update == 0.0:
        return {}
    return {e.index: update * e.trainable / total for e in rows if e.trainable}


def shared_notes(table: Table) -> tuple[str, ...]:
    """One note per module that uses another's parameters (tied weights), for ``Run.notes``."""
    out: dict[tuple[str, str], int] = {}
    for sp in table.shared:
        out[(sp.user, sp.owner)] = out.get((sp.user, sp.owner), 0) + sp.numel
    return tuple(
        f"{user or '(model)'} shares {n:,} parameters with {owner or '(model)'} (tied weights): "
        f"counted once, with their optimizer update, at {owner or '(model)'}; "
        f"{user or '(model)'}'s rows hold its own compute"
        for (user, owner), n in out.items()
    )


def timeline(table: Table, steps: Sequence[StepCharges]) -> tuple[Slice, ...]:
    """One slice per attributed (row, phase) per step, in time order within a step."""
    names = {e.index: e.name for e in table.rows()}
    out: list[Slice] = []
    for i, c in enumerate(steps):
        step_slices = []
        exposed = {ch.key: ch.exposed_s for ch in c.collective_charges}
        for owner, (start, end) in c.spans.items():
            if owner[0] == "module":
                idx, phase = owner[1], owner[2]
                charge = c.modules.get((idx, phase), 0.0)
                step_slices.append(Slice(i, names[idx], phase, start, end, charge))
            elif owner[0] == "comm":
                # A sharded step's collectives, on a track of their own.
                scope, target, kind = owner[1], owner[2], owner[3]
                who = (names.get(int(target), str(target)) if scope == "layer"
                       else f"unit {target or '(root)'}" if scope == "unit" else f"({target})")
                step_slices.append(Slice(i, f"{kind} {who}", "comm", start, end,
                                         exposed.get(owner[1:], 0.0)))
            elif owner[1] != "unattributed":
                row = owner[1]
                step_slices.append(Slice(i, f"({row})", row, start, end, c.step.get(row, 0.0)))
        step_slices.sort(key=lambda sl: (sl.start_s, -sl.end_s))
        out.extend(step_slices)
    return tuple(out)


def _exposed(charges: StepCharges) -> float:
    """Exposed communication charged to layers (a ``comm`` row with no layers to
    carry it, which cannot happen with DDP, stays unattributed)."""
    return sum(c.exposed_s for c in charges.comm.values())


def aggregate(
    table: Table, steps: Sequence[StepCharges], *,
    placements: Mapping[str, Placement] | None = None, unsplit_update: bool = False,
) -> tuple[tuple[LayerRow, ...], Phases, dict[str, float], tuple[float, ...]]:
    """Mean rows over steps, their spread, the phases and the per-step totals.

    Returns ``(layers, phases, phase_spread_s, profiled_step_samples_s)``.
    ``placements`` (layer name -> role and block) replaces ``layertime.roles``' placing
    of the table's names (a trace's tree is placed on other names).  ``unsplit_update``:
    the optimizer step is one step-level row (``Phases.update_step_s``), not split across
    layers (a trace that does not say how large each layer's parameters are).
    """
    n = len(steps)
    if n == 0:
        raise ValueError("no profiled steps to aggregate")
    per_step_update = [{} if unsplit_update else split_update(c, table) for c in steps]
    entries = table.rows()
    placed = dict(placements) if placements is not None else table.placements()
    rows: list[LayerRow] = []
    for entry in entries:
        fwd = [c.modules.get((entry.index, "forward"), 0.0) for c in steps]
        bwd = [c.modules.get((entry.index, "backward"), 0.0) for c in steps]
        upd = [u.get(entry.index, 0.0) for u in per_step_update]
        # A part runs in its module's calls.
        called = entry.index if entry.part_of is None else entry.part_of
        calls = [c.calls.get(called, 0) for c in steps]
        comm = [c.comm.get(entry.index, _NO_COMM) for c in steps]
        if not any(calls) and entry.params == 0 and not any(fwd) and not any(bwd) and \
                not any(cc.comm_s for cc in comm):
            continue  # never ran, holds nothing (a unit's own module that never ran keeps
            # its unit's communication when no layer of it holds parameters)
        totals = [f + b + u + cc.exposed_s for f, b, u, cc in zip(fwd, bwd, upd, comm)]
        rows.append(
            LayerRow(
                name=entry.name,
                kind=entry.kind,
                type=entry.type,
                forward_s=_mean(fwd),
                backward_s=_mean(bwd),
                update_s=_mean(upd),
                params=entry.params,
                calls=_mean([float(c) for c in calls]),
                spread_s=_std(totals),
                comm_s=_mean([cc.comm_s for cc in comm]),
                comm_exposed_s=_mean([cc.exposed_s for cc in comm]),
                comm_bytes=max((c.comm_bytes.get(entry.index, 0) for c in steps), default=0),
                role=placed[entry.name].role,
                block=placed[entry.name].block,
                recompute_s=_mean([c.recompute.get(entry.index, 0.0) for c in steps]),
                checkpointed=any(entry.index in c.recompute for c in steps),
            )
        )
    # An update with no trainable parameters to carry it stays step-level (unattributed,
    # or its own row when it is not split at all).
    leftover_update = [
        0.0 if unsplit_update else c.step.get("update", 0.0) - sum(u.values())
        for c, u in zip(steps, per_step_update)
    ]
    series = {
        "forward_s": [sum(v for (i, p), v in c.modules.items() if p == "forward") for c in steps],
        "backward_s": [sum(v for (i, p), v in c.modules.items() if p == "backward") for c in steps],
        "update_s": [sum(u.values()) for u in per_step_update],
        "loss_s": [c.step.get("loss", 0.0) for c in steps],
        "zero_grad_s": [c.step.get("zero_grad", 0.0) for c in steps],
        "data_s": [c.step.get("data", 0.0) for c in steps],
        "clip_s": [c.step.get("clip", 0.0) for c in steps],
        "scheduler_s": [c.step.get("scheduler", 0.0) for c in steps],
        "logging_s": [c.step.get("logging", 0.0) for c in steps],
        "compiled_wrapper_s": [c.step.get("compiled_wrapper", 0.0) for c in steps],
        "unattributed_s": [
            c.step.get("unattributed", 0.0) + lo + c.step.get("comm", 0.0) - _exposed(c)
            for c, lo in zip(steps, leftover_update)
        ],
        "comm_exposed_s": [_exposed(c) for c in steps],
        "update_step_s": [c.step.get("update", 0.0) if unsplit_update else 0.0 for c in steps],
    }
    phases = Phases(**{k: _mean(v) for k, v in series.items()})
    spread = {k: _std(v) for k, v in series.items()}
    samples = tuple(c.step_s for c in steps)
    return tuple(rows), phases, spread, samples


def collective_rows(table: Table, steps: Sequence[StepCharges]) -> tuple[CollectiveRow, ...]:
    """The step's collectives by (kind, phase, scope, owner): means over traced steps (a
    collective absent from a step counts 0 there), layers named by path."""
    names = {e.index: e.name for e in table}
    n = len(steps)
    sums: dict[tuple[str, str, str, str], list[float]] = {}
    for c in steps:
        for ch in c.collective_charges:
            scope, target, kind, phase = ch.key
            who = names.get(int(target), str(target)) if scope == "layer" else str(target)
            acc = sums.setdefault((kind, phase, scope, who), [0.0] * 5)
            for i, v in enumerate((ch.count, ch.nbytes, ch.exposed_s, ch.hidden_s, ch.busy_s)):
                acc[i] += v
    # FSDP1 gathers with tensor lists, which record no shapes: a unit's all-gather moves
    # the flat buffer its reduce-scatter reads, so its bytes per call are taken from that.
    per_call = {t: v[1] / v[0] for (k, _, sc, t), v in sums.items()
                if k == "reduce_scatter" and sc == "unit" and v[0] and v[1]}
    for (k, _, sc, t), acc in sums.items():
        if k == "all_gather" and sc == "unit" and acc[0] and not acc[1] and t in per_call:
            acc[1] = per_call[t] * acc[0]
    rows = [
        CollectiveRow(kind=k, phase=p, scope=sc, target=t, count=v[0] / n,
                      bytes=round(v[1] / n), exposed_s=v[2] / n, hidden_s=v[3] / n,
                      busy_s=v[4] / n)
        for (k, p, sc, t), v in sums.items()
    ]
    return tuple(sorted(rows, key=lambda r: (r.kind, r.phase, r.scope, r.target)))
