"""The user's model as layertime sees it: its distinct modules, and its train/eval mode
changed for a block only.

Every collector (the tracer, the cost counter, the isolated benchmarks)
indexes modules through one :class:`ModuleTable`, so rows made by any of
them name and kind a module the same way, and join on ``name``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

from torch import nn

from layertime.kinds import ModuleFacts, kind_of
from layertime.roles import Placement, Traits, place


def class_name(module: nn.Module) -> str:
    """The module's own class name: FSDP2's ``fully_shard`` swaps a module's class for a
    subclass named ``FSDP<Class>`` (of ``FSDPModule`` and the class), which says nothing
    the sharding description does not."""
    cls = type(module)
    bases = cls.__bases__
    if len(bases) == 2 and bases[0].__name__ == "FSDPModule" and \
            cls.__name__ == f"FSDP{bases[1].__name__}":
        return bases[1].__name__
    return cls.__name__


@dataclass(frozen=True)
class ModuleEntry:
    """One distinct module of the model, by its first dotted path."""

    index: int
    name: str
    module: nn.Module
    kind: str
    type: str
    #: Parameters owned directly (not by children), counted once if shared.
    params: int
    #: Elements of directly owned parameters that require a gradient.
    trainable: int
    #: What a watched forward showed of it that roles read (None: not watched).
    traits: Traits | None = None
    #: A part's entry (see :class:`ModuleTable`): the index of the module it is part of.
    part_of: int | None = None


@dataclass(frozen=True)
class SharedParam:
    """A parameter held by more than one module (tied weights): counted at ``owner`` only."""

    owner: str
    user: str
    numel: int


class ModuleTable:
    """The model's distinct modules, indexed in ``named_modules`` order (root first).

    ``kinds`` (``id(module)`` -> kind, from :class:`layertime.kinds.KindObserver`)
    overrides the class-based kind of the modules it names; ``facts`` (the
    observer's :meth:`~layertime.kinds.KindObserver.facts`) does too, and adds what
    roles read (:attr:`ModuleEntry.traits`) and the *parts*: a module that computes
    projections with its own parameters beside something else (``nn.MultiheadAttention``'s
    ``in_proj_weight`` beside its attention core) gets a second row, an entry in
    :attr:`parts` named ``<module>.(<parameters>)`` of the projections' kind, holding
    those parameters (the module's own entry no longer counts them); ops of a module's
    forward computed with a child's parameters go to the child's row
    (:attr:`own_ops`).  Parts are rows only: iterating the table gives modules.
    ``split=False`` keeps every module's time whole (no parts, no ops moved), each
    module of its whole kind.  The profile and the cost count both split.
    A parameter that several modules hold (a tied LM head) is counted once, at its
    first owner; ``shared`` lists the others.
    """

    def __init__(
        self,
        model: nn.Module,
        kinds: Mapping[int, str] | None = None,
        *,
        facts: Mapping[int, ModuleFacts] | None = None,
        split: bool = True,
    ) -> None:
        entries: list[ModuleEntry] = []
        owner_of: dict[int, str] = {}
        shared: list[SharedParam] = []
        flat = _fsdp1_sizes(model)
        numel: dict[int, tuple[int, bool]] = {}
        for i, (name, mod) in enumerate(model.named_modules()):
            params = trainable = 0
            if id(mod) in flat:
                params, trainable = flat[id(mod)]
            for p in mod.parameters(recurse=False):
                if id(mod) in flat or hasattr(p, "_param_infos"):
                    # FSDP1: its flat buffer is its unit's parameters, and theirs are
                    # views of this rank's shard: the sizes are the buffer's record.
                    continue
                if id(p) in owner_of:
                    if owner_of[id(p)] != name:
                        shared.append(SharedParam(owner_of[id(p)], name, p.numel()))
                    continue
                owner_of[id(p)] = name
                numel[id(p)] = (p.numel(), p.requires_grad)
                params += p.numel()
                if p.requires_grad:
                    trainable += p.numel()
            fact = facts.get(id(mod)) if facts else None
            kind = (fact.kind if split else fact.whole_kind or fact.kind) if fact is not None \
                else (kinds.get(id(mod)) if kinds else None)
            traits = None
            if fact is not None:
                # Fused experts multiply by one stacked matrix per expert (a conv's
                # weight is 3-D too, but it convolves).
                stacked = next((int(p.shape[0]) for p in mod.parameters(recurse=False)
                                if p.dim() >= 3), None) if fact.kind == "linear" else None
                traits = Traits(fact.order, fact.routes_over, fact.out_dim, fact.mixes,
                                stacked)
            entries.append(ModuleEntry(
                i, name, mod, kind or kind_of(mod), class_name(mod), params, trainable,
                traits,
            ))
        index = {id(e.module): e.index for e in entries}
        parts: list[ModuleEntry] = []
        own_ops: dict[int, tuple[tuple[str, int], ...]] = {}
        op_rows: dict[str, dict[str, dict[str, float]]] = {}
        for e in list(entries):
            fact = facts.get(id(e.module)) if facts and split else None
            if fact is None or not fact.ops:
                continue
            part: ModuleEntry | None = None
            if fact.part_kind is not None and fact.part_name is not None:
                ids = set(fact.part_params)
                mine = [numel[x] for x in ids if x in numel and owner_of.get(x) == e.name]
                n = sum(c for c, _ in mine)
                t = sum(c for c, g in mine if g)
                part = ModuleEntry(
                    len(entries) + len(parts), f"{e.name}.({fact.part_name})" if e.name
                    else f"({fact.part_name})", e.module, fact.part_kind, e.type, n, t,
                    Traits(fact.part_order), e.index,
                )
                parts.append(part)
                entries[e.index] = replace(e, params=e.params - n, trainable=e.trainable - t)
            targets = []
            flops: dict[str, dict[str, float]] = {}
            names = {x.index: x.name for x in entries}
            if part is not None:
                names[part.index] = part.name
            for op in fact.ops:
                row = part.index if op.holder is None and part is not None else (
                    index.get(op.holder) if op.holder is not None else None)
                if row is None:
                    continue
                targets.append((op.op, row))
                by_row = flops.setdefault(op.op, {})
                by_row[names[row]] = by_row.get(names[row], 0.0) + max(op.flops, 1)
            if targets:
                own_ops[e.index] = tuple(targets)
                op_rows[e.name] = {
                    op: {r: f / sum(by_row.values()) for r, f in by_row.items()}
                    for op, by_row in flops.items()
                }
        self.entries: tuple[ModuleEntry, ...] = tuple(entries)
        self.parts: tuple[ModuleEntry, ...] = tuple(parts)
        #: module index -> the ops of its own forward that belong to another row, in the
        #: order they run: (op as the profiler names it after ``aten::``, that row's index).
        self.own_ops: dict[int, tuple[tuple[str, int], ...]] = own_ops
        #: The same by name, for a compiled run (whose kernels cannot be told apart in
        #: order): module -> op -> row -> the row's share of that op's FLOPs.
        self.op_rows: dict[str, dict[str, dict[str, float]]] = op_rows
        self.shared: tuple[SharedParam, ...] = tuple(shared)

    def placements(self) -> dict[str, Placement]:
        """Every row's role and block (:func:`layertime.roles.place`), by name."""
        rows = self.rows()
        return place([(e.name, e.kind, e.type) for e in rows],
                     {e.name: e.traits for e in rows if e.traits is not None})

    def rows(self) -> list[ModuleEntry]:
        """Every row's entry: each module, its part right after it."""
        by_owner: dict[int, list[ModuleEntry]] = {}
        for p in self.parts:
            assert p.part_of is not None
            by_owner.setdefault(p.part_of, []).append(p)
        out: list[ModuleEntry] = []
        for e in self.entries:
            out.append(e)
            out.extend(by_owner.get(e.index, ()))
        return out

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ModuleEntry]:
        return iter(self.entries)


def _fsdp1_sizes(model: nn.Module) -> dict[int, tuple[int, int]]:
    """FSDP1 (``FullyShardedDataParallel`` with ``use_orig_params``): ``id(module)`` ->
    (parameters, trainable) of the modules whose parameters its flat buffers hold, read
    from each buffer's record of what it holds (whole sizes, not this rank's shard)."""
    out: dict[int, tuple[int, int]] = {}
    # The wrapper's ``_flat_param`` (with original parameters kept, the module's own
    # parameters are those views, not the buffer).
    flats = [getattr(m, "_flat_param", None) for m in model.modules()
             if type(m).__name__ == "FullyShardedDataParallel"]
    for p in flats:
        if p is None:
            continue
        infos = getattr(p, "_param_infos", None)
        numels = getattr(p, "_numels", None)
        if infos is None or numels is None:
            continue
        for info, n in zip(infos, numels):
            mod = getattr(info, "module", None)
            if mod is None:
                continue
            params, trainable = out.get(id(mod), (0, 0))
            out[id(mod)] = (params + int(n), trainable + (int(n) if p.requires_grad else 0))
    return out


@contextmanager
def training_mode(model: nn.Module, train: bool = True) -> Iterator[None]:
    """Put the model in train mode (``train=False``: eval mode) for the block, then give
    every module back its own mode (a frozen norm layer in a training model stays in eval)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train(train)
        yield
    finally:
        for m, mode in modes:
            m.training = mode
