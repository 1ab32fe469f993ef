"""What the compiler says about each graph it compiled: its kernel calls in order (call
sites), the post-grad FX nodes behind each call, and each node's module and counted cost.

:mod:`~layertime.measure.compiled.capture` fills these in while compiling;
:mod:`~layertime.measure.compiled.attribute` joins them with a traced step's events.
Plain, torch-free records, so that tests can make them by hand.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeInfo:
    """One post-grad FX node: the module it came from and its counted cost.

    ``module`` is a dotted path as in ``named_modules()`` (``""`` is the model
    itself: functional code in its own ``forward``), or None when unknown.
    ``call`` tells calls of one module apart (a module called twice in a graph
    has two); ``weight`` is the node's cost on one scale (see ``collector.py``;
    zero for views, which move nothing); ``op`` its aten op (``aten::mm``).
    """

    module: str | None
    call: str | None = None
    weight: float = 1.0
    op: str | None = None


@dataclass(frozen=True)
class CallSite:
    """One kernel call in a compiled graph's generated wrapper, in call order.

    ``kernel`` is its name in the wrapper code (``cpp_fused_relu_0``,
    ``extern_kernels.convolution``); ``event`` the name of its profiler event
    (``cpp_fused_relu_0`` once the ``graph_N_`` prefix is stripped, or
    ``aten::convolution``).  ``nodes`` are its post-grad FX nodes, None when
    provenance gave none for it.
    """

    kernel: str
    event: str
    generated: bool
    nodes: tuple[str, ...] | None
    #: The call has no provenance of its own: ``nodes`` are those of the tracked kernel
    #: that wrote its input buffers (see ``capture.call_sites``).
    borrowed: bool = False


@dataclass(frozen=True)
class GraphInfo:
    """One graph Inductor compiled: its call sites in order and its nodes."""

    compile_id: str | None
    phase: str
    sites: tuple[CallSite, ...]
    nodes: Mapping[str, NodeInfo]

    @property
    def key(self) -> str:
        return f"{self.compile_id or '?'} {self.phase}"

    def extern_nodes(self) -> frozenset[str]:
        """Nodes an extern kernel computes (its own op's nodes): a generated kernel whose
        provenance lists one (it feeds or reads it) does none of that node's work."""
        out: set[str] = set()
        for s in self.sites:
            if not s.generated:
                out.update(n for n in s.nodes or () if n in self.nodes and self.nodes[n].op == s.event)
        return frozenset(out)

    def calls(self) -> dict[str, int]:
        """Module -> calls per execution of this graph (distinct call keys)."""
        keys: dict[str, set[str]] = defaultdict(set)
        for info in self.nodes.values():
            if info.module is not None and info.call is not None:
                keys[info.module].add(info.call)
        return {m: len(k) for m, k in keys.items()}
