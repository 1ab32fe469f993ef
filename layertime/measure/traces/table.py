"""The table of a trace's modules: what ``ModuleTable`` is to a live run, built from the
module calls a trace holds (or, with ``--model``, the model's own table; ``mapping.py``).

Names.  The Python tracer names a module ``Class_N`` (the N-th instance of its class), so a
trace alone gives a tree of those: the root (the model, ``""``) and below it
``GPT2Model_0.GPT2Block_2.GPT2Attention_2``.  Lightning's ranges give the dotted paths
themselves.  Kinds come from each module's own ops (``op_kinds.py``).  Parameters: the
elements of the gradients accumulated into each module's parameters in backward
(``AccumulateGrad``'s input shapes, when the trace recorded shapes), else unknown (0).

Roles and blocks are placed by ``layertime.roles`` on the tree's names with each segment
relative to its siblings (``GPT2Block_2`` -> the third ``GPT2Block`` under its parent, a
class alone when it is its parent's only one), so that a model's repeated blocks are blocks
and its single ``GPT2Model`` is not mistaken for one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from layertime.measure.traces.convert import TraceModule
from layertime.measure.traces.op_kinds import kind_from_ops
from layertime.roles import Placement, place


@dataclass(frozen=True)
class TraceEntry:
    """One module of the trace (the fields ``ModuleEntry`` has, less the module object)."""

    index: int
    name: str
    kind: str
    type: str
    params: int
    trainable: int
    #: Always None: a trace has no part rows (``ModuleEntry.part_of``).
    part_of: int | None = None


class TraceTable:
    """The trace's modules, by index (0 is the model); iterable like ``ModuleTable``."""

    def __init__(self, entries: Sequence[TraceEntry],
                 placements: Mapping[str, Placement] | None = None) -> None:
        self.entries = tuple(entries)
        #: Tied weights cannot be told from a trace: none are listed.
        self.shared: tuple[()] = ()
        self._placements = dict(placements or {})

    def __iter__(self) -> Iterator[TraceEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def rows(self) -> list[TraceEntry]:
        """Every row's entry (a trace has no part rows)."""
        return list(self.entries)

    def placements(self) -> dict[str, Placement]:
        """Role and block of every entry, by name."""
        if self._placements:
            return self._placements
        return place([(e.name, e.kind, e.type) for e in self.entries])


def tree_names(modules: Sequence[TraceModule]) -> tuple[list[str], list[str]]:
    """Each module's dotted name (root ``""``), and the same with sibling-relative segments
    (for roles); ``modules[0]`` is the root."""
    if not modules:
        return [], []
    by_key = {m.key: m for m in modules}
    root = modules[0].key
    siblings: dict[str | None, list[TraceModule]] = {}
    for m in modules:
        siblings.setdefault(m.parent, []).append(m)
    relative: dict[str, str] = {}
    for group in siblings.values():
        per_class: dict[str, list[TraceModule]] = {}
        for m in group:
            per_class.setdefault(m.cls, []).append(m)
        for cls, ms in per_class.items():
            for k, m in enumerate(ms):
                relative[m.key] = cls if len(ms) == 1 else f"{cls}_{k}"

    def path(m: TraceModule, seg: Mapping[str, str]) -> str:
        parts = []
        cur: TraceModule | None = m
        while cur is not None and cur.key != root:
            parts.append(seg[cur.key])
            cur = by_key.get(cur.parent) if cur.parent is not None else None
        return ".".join(reversed(parts))

    own = {m.key: m.key for m in modules}
    return [path(m, own) for m in modules], [path(m, relative) for m in modules]


def trace_table(modules: Sequence[TraceModule], own_ops: Mapping[int, Mapping[str, int]],
                trainable: Mapping[int, int], *, dotted: bool = False) -> TraceTable:
    """The table of a trace's modules (see the module doc).  ``dotted``: the modules' keys
    are dotted paths already (Lightning's ranges), used as names as they are."""
    parents = {m.parent for m in modules}
    if dotted:
        names = ["" if i == 0 and m.parent is None and not m.key else m.key
                 for i, m in enumerate(modules)]
        relative = names
    else:
        names, relative = tree_names(modules)
    entries = []
    for i, m in enumerate(modules):
        kind = kind_from_ops(own_ops.get(i, {}), m.cls, leaf=m.key not in parents)
        n = int(trainable.get(i, 0))
        entries.append(TraceEntry(i, names[i], kind, m.cls, n, n))
    placed = place([(r, e.kind, e.type) for r, e in zip(relative, entries)])
    back = dict(zip(relative, names))
    placements: dict[str, Placement] = {}
    for r, e in zip(relative, entries):
        block = placed[r].block
        placements[e.name] = Placement(placed[r].role, back.get(block, block) if block else None)
    return TraceTable(entries, placements)
