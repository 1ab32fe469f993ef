"""The user's model as layertime sees it: its distinct modules, and its train/eval mode
changed for a block only.

Every collector (the tracer, the cost counter, the isolated benchmarks)
indexes modules through one :class:`ModuleTable`, so rows made by any of
them name and kind a module the same way, and join on ``name``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn

from layertime.kinds import kind_of


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


@dataclass(frozen=True)
class SharedParam:
    """A parameter held by more than one module (tied weights): counted at ``owner`` only."""

    owner: str
    user: str
    numel: int


class ModuleTable:
    """The model's distinct modules, indexed in ``named_modules`` order (root first).

    ``kinds`` (``id(module)`` -> kind, from :class:`layertime.kinds.KindObserver`)
    overrides the class-based kind of the modules it names.  A parameter that
    several modules hold (a tied LM head) is counted once, at its first owner;
    ``shared`` lists the others.
    """

    def __init__(self, model: nn.Module, kinds: Mapping[int, str] | None = None) -> None:
        entries: list[ModuleEntry] = []
        owner_of: dict[int, str] = {}
        shared: list[SharedParam] = []
        flat = _fsdp1_sizes(model)
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
                params += p.numel()
                if p.requires_grad:
                    trainable += p.numel()
            kind = kinds.get(id(mod)) if kinds else None
            entries.append(ModuleEntry(
                i, name, mod, kind or kind_of(mod), class_name(mod), params, trainable
            ))
        self.entries: tuple[ModuleEntry, ...] = tuple(entries)
        self.shared: tuple[SharedParam, ...] = tuple(shared)

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
