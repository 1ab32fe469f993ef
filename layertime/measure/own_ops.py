"""Split a module's own time by what its ops compute: a pure pass over a traced step's events.

A module that computes projections itself (``nn.MultiheadAttention`` calls
``F.linear`` with its own ``in_proj_weight`` and with ``out_proj.weight``, a
child it never calls; Mamba's mixer calls ``F.conv1d`` with ``conv1d.weight``)
would otherwise keep their time in its own row, beside its attention core or
scan.  The kind observer saw which of its own ops computed with a parameter,
in the order they ran, and which row each belongs to
(:attr:`layertime.modules.ModuleTable.own_ops`: a child's row, or the module's
part, a row of its own).  Here each such op, in every call of the module, is
wrapped in a module range of that row, as if the row's module had been called
around it: ``attribute_step`` then charges the op, the backward nodes it
created (by their sequence numbers) and the gradients they accumulate to that
row, forward and backward, with no change to its rules.

The op is found by name among the module's own events (not in a child
module's range), the k-th event of a name in a call matching the k-th op of
that name the observer saw (cyclically, if a call ran more); the range wraps
the outermost event around it in the module's own code that holds no other op
of the module's list (``aten::linear`` around ``aten::addmm``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace

from layertime.measure.events import MODULE, OpEvent

_ATEN = "aten::"


def split_own_ops(
    events: Sequence[OpEvent], own_ops: Mapping[int, Sequence[tuple[str, int]]]
) -> list[OpEvent]:
    """``events`` with a range ``layertime::module::<row>`` around each op that belongs
    to another row (``own_ops``: module index -> (op name, row index) in run order)."""
    if not own_ops:
        return list(events)
    by_id = {e.id: e for e in events}
    children: dict[int, list[OpEvent]] = defaultdict(list)
    for e in events:
        if e.parent is not None and e.parent in by_id:
            children[e.parent].append(e)
    for kids in children.values():
        kids.sort(key=lambda e: (e.start_us, -e.end_us))
    next_id = max((e.id for e in events), default=0) + 1
    reparent: dict[int, int] = {}
    added: list[OpEvent] = []
    for call in events:
        if not call.name.startswith(MODULE):
            continue
        try:
            idx = int(call.name[len(MODULE):])
        except ValueError:
            continue
        ops = own_ops.get(idx)
        if not ops:
            continue
        targets: dict[str, list[int]] = defaultdict(list)
        for op, row in ops:
            targets[_ATEN + op].append(row)
        # The module's own events in time order, each with its path below the call.
        own: list[tuple[OpEvent, tuple[OpEvent, ...]]] = []
        stack: list[tuple[OpEvent, tuple[OpEvent, ...]]] = [
            (k, (k,)) for k in reversed(children.get(call.id, []))
        ]
        while stack:
            e, path = stack.pop()
            if e.name.startswith(MODULE):
                continue  # a child module's call: its ops are its own
            own.append((e, path))
            stack.extend((k, path + (k,)) for k in reversed(children.get(e.id, [])))
        marked = [(e, path) for e, path in own if e.name in targets]
        # How many marked events each event on their paths holds.
        holds: dict[int, int] = defaultdict(int)
        for _, path in marked:
            for anc in path:
                holds[anc.id] += 1
        counts: dict[str, int] = defaultdict(int)
        for e, path in marked:
            rows = targets[e.name]
            row = rows[counts[e.name] % len(rows)]
            counts[e.name] += 1
            # The outermost event on the path that holds no other marked event.
            unit = next((anc for anc in path if holds[anc.id] == 1), e)
            if unit.id in reparent:
                continue
            rng = OpEvent(next_id, f"{MODULE}{row}", unit.thread, unit.start_us, unit.end_us,
                          parent=unit.parent)
            next_id += 1
            added.append(rng)
            reparent[unit.id] = rng.id
    if not added:
        return list(events)
    out = [replace(e, parent=reparent[e.id]) if e.id in reparent else e for e in events]
    return out + added
