"""What a run of a ``torch.compile``d model adds to its result (``Run.compiled``).

Torch-free, like the rest of the result model.  The layer rows of a compiled
run already hold the compiled kernels' time (a fused kernel's time split across
its member layers); this object says how it got there: the compilations and
their cost, graph breaks, each fused group with its split, per-graph totals,
what the compiled wrapper row holds (guards and wrappers), and which parts of
``unattributed`` are kernels without provenance and gradient accumulation.  JSON: the ``compiled`` object of
``layertime.run/1`` (docs/schema.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from layertime.records import build, build_all, reading

#: ``torch.compile`` modes layertime accepts (``profile --compile-mode``).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Compilation:
    """One Dynamo frame compilation (a recompile has a ``reason``)."""

    compile_id: str
    seconds: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class GraphBreak:
    """A graph break: where, why, how many times it was met while compiling."""

    reason: str
    location: str = ""
    count: int = 1


@dataclass(frozen=True)
class GraphTotal:
    """One compiled graph's time per step and the part of it placed on layers."""

    graph: str
    phase: str
    time_s: float
    placed_s: float


@dataclass(frozen=True)
class FusedGroup:
    """A kernel fused from several layers' nodes; mean time per step.

    ``split_s`` is its time split across the member layers in proportion to
    their nodes' counted cost (``split_rule`` of the summary): an estimate, not
    a measurement; the layer rows hold these parts.
    """

    kernel: str
    graph: str
    phase: str
    members: tuple[str, ...]
    time_s: float
    split_s: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CompiledSummary:
    """How a compiled run was compiled and attributed (means per traced step)."""

    backend: str
    mode: str | None
    #: True when kernels were charged to layers through Inductor's provenance.
    provenance: bool
    #: One line when provenance was unavailable or partial (what was done instead).
    message: str | None = None
    #: Measured: wall time of the warm-up steps that compiled, minus as many steady steps.
    compile_s: float | None = None
    compile_steps: int = 0
    compilations: tuple[Compilation, ...] = ()
    graph_breaks: tuple[GraphBreak, ...] = ()
    graphs: tuple[GraphTotal, ...] = ()
    fused_groups: tuple[FusedGroup, ...] = ()
    split_rule: str = ""
    #: Compiled kernel time placed on layers.
    placed_s: float = 0.0
    #: Parts of ``phases.unattributed_s``: kernels without provenance (by name),
    #: AccumulateGrad after a compiled backward whose parameter its shape did not tell.
    unplaced_s: float = 0.0
    unplaced_kernels: Mapping[str, float] = field(default_factory=dict)
    #: Guards, Dynamo's and AOTAutograd's wrappers, the generated wrapper between
    #: kernels, eager glue between graphs: ``phases.compiled_wrapper_s`` (in runs saved
    #: before that row, a part of ``phases.unattributed_s``).
    wrapper_s: float = 0.0
    accumulate_s: float = 0.0
    #: AccumulateGrad after a compiled backward placed on layers by gradient shape
    #: (in the rows; split equally among layers owning a parameter of that shape).
    accumulate_placed_s: float = 0.0
    #: Steps measured and then dropped because a (re)compilation happened in them.
    dropped_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fused_groups"] = [
            {**asdict(g), "members": list(g.members), "split_s": dict(g.split_s)}
            for g in self.fused_groups
        ]
        d["unplaced_kernels"] = dict(self.unplaced_kernels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CompiledSummary:
        """Read the ``compiled`` object; unknown keys are ignored (fields may be added)."""
        with reading("compiled summary"):
            return build(
                cls,
                d,
                compilations=lambda v: build_all(Compilation, v),
                graph_breaks=lambda v: build_all(GraphBreak, v),
                graphs=lambda v: build_all(GraphTotal, v),
                fused_groups=lambda v: build_all(FusedGroup, v, members=tuple, split_s=dict),
                unplaced_kernels=dict,
            )

    def split_by_layer(self) -> dict[str, float]:
        """Layer name -> the part of its time that comes from splitting fused groups."""
        out: dict[str, float] = {}
        for g in self.fused_groups:
            for m, s in g.split_s.items():
                out[m] = out.get(m, 0.0) + s
        return out
