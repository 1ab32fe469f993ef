"""Charge the kernels of a ``torch.compile``d training step to (layer, phase): a pure function.

A compiled step's profile has no module ranges inside the compiled code (Dynamo
inlines the modules; hooks installed after compilation would not run there).
What it has, per compiled graph call, is one ``## Call CompiledFxGraph ##``
range whose children are the graph's kernels in the order the generated wrapper
calls them: Inductor's generated kernels (``graph_0_cpp_fused_...`` on the CPU,
with kernel profiling on; on CUDA the Triton kernels appear as device kernels
launched by the range itself) and extern kernels (plain aten ops such as
``aten::convolution``, ``aten::mm``).  The collector (``collector.py``) reads,
for every graph Inductor compiled, the same call order from the generated code
and, for every call site, the post-grad FX nodes it came from (Inductor's
provenance tracking) and the module of each node (Dynamo's ``nn_module_stack``;
AOTAutograd's ``fwd_nn_module_stack`` on backward nodes, linked through the
forward op's sequence number).  This module joins the two, torch-free, so that
tests can feed hand-made events:

* Call ranges are tied to graphs by the compile id in the enclosing
  ``Torch-Compiled Region: <id>`` range (forward) or, for a backward graph, in
  the region around the forward ``CompiledFunction`` op whose sequence number
  the ``CompiledFunctionBackward`` node carries; among candidates the graph
  whose call sites match the most events wins.
* Children of a Call range are matched to call sites in order, generated
  kernels by name and extern kernels by op name, each with its own cursor.
* A matched site's time (the event's inclusive CPU time, or its device time on
  CUDA) goes to the module of its nodes.  A site whose nodes belong to several
  modules is a *fused group*: its time is split across the members in
  proportion to the nodes' counted cost (``NodeInfo.weight``), and the group is
  reported as such.
* ``AccumulateGrad`` nodes run after a compiled backward (which parameter each
  is for is not in the profile) are placed by the shape of the gradient they
  take (recorded input shapes of their ops): on the layer owning a trainable
  parameter of that shape, split equally when several do (same shape, same
  work); the backward phase.
* The compiled regions' own time outside kernels (guard checks, Dynamo's and
  AOTAutograd's wrappers, the generated Python wrapper between kernels, eager
  code between graphs at a graph break) and the compiled wrapper's call itself
  are the step-level row ``compiled_wrapper``: measured, and no layer's.
* Kernels no site matches, sites without provenance (a whole graph's calls
  when it has none) and AccumulateGrad of an unknown shape stay
  ``unattributed``, counted by name so that nothing is hidden.  The rows still
  add up to the profiled step exactly.

The non-compiled rest of the step (loss, zero_grad, optimizer, eager modules) is
charged by :func:`layertime.measure.attribute.attribute_step`, unchanged.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from layertime.measure.attribute import StepCharges, attribute_step
from layertime.measure.compiled.graphs import CallSite, GraphInfo, NodeInfo
from layertime.measure.events import ACCUMULATE_GRAD, BACKWARD_NODE, PHASE, OpEvent

#: Dynamo's range around a compiled frame; the compile id follows ": ".
COMPILED_REGION = "Torch-Compiled Region"
#: Dynamo's guard check before a compiled frame runs.
CACHE_LOOKUP = "TorchDynamo Cache Lookup"
#: AOTAutograd's forward op (its sequence number links the backward node).
COMPILED_FORWARD = "CompiledFunction"
COMPILED_BACKWARD = "CompiledFunctionBackward"
#: The range around one call of an Inductor-compiled graph.
CALL_GRAPH = "## Call CompiledFxGraph"
#: Inductor's C++ kernel events carry the graph's id as a prefix.
_GRAPH_PREFIX = re.compile(r"^graph_\d+_")
#: Renamed compiled regions: attribute_step charges a phase range's subtree to that row.
_UNATTRIBUTED_RANGE = f"{PHASE}unattributed"


@dataclass
class FusedCharge:
    """A kernel fused from several modules' nodes, in one step: its time and the split."""

    graph: str
    kernel: str
    phase: str
    time_s: float
    #: member module -> its share of ``time_s`` (by counted cost); adds up to ``time_s``.
    split: dict[str, float]


@dataclass
class CompiledStep:
    """What one compiled step's attribution found besides the rows."""

    #: graph key -> (phase, time of its calls in this step, of that placed on layers).
    graphs: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    fused: list[FusedCharge] = field(default_factory=list)
    #: Kernel time placed on layers (the sum of the compiled part of the rows).
    placed_s: float = 0.0
    #: Kernel events inside graph calls that no site matched, or whose site has no
    #: provenance or no module: kernel name -> seconds (unattributed).
    unplaced: dict[str, float] = field(default_factory=dict)
    #: Guards, compiled wrappers, eager code between graphs (the compiled wrapper row).
    wrapper_s: float = 0.0
    #: AccumulateGrad nodes after a compiled backward whose parameter could not be
    #: told by shape (unattributed), and those placed on the layers owning a
    #: parameter of the gradient's shape (in the rows, backward).
    accumulate_s: float = 0.0
    accumulate_placed_s: float = 0.0
    #: Call ranges that matched no known graph (no provenance for them).
    unknown_graph_calls: int = 0

    @property
    def unplaced_s(self) -> float:
        return sum(self.unplaced.values())


def strip_graph_prefix(name: str) -> str:
    """``graph_0_cpp_fused_relu_0`` -> ``cpp_fused_relu_0`` (other names unchanged)."""
    return _GRAPH_PREFIX.sub("", name, count=1)


def _is_compiled_root(e: OpEvent) -> bool:
    n = e.name
    return (
        n.startswith(COMPILED_REGION)
        or n == CACHE_LOOKUP
        or n == f"{BACKWARD_NODE}{COMPILED_BACKWARD}"
    )


def _region_id(name: str) -> str | None:
    if not name.startswith(COMPILED_REGION):
        return None
    rest = name[len(COMPILED_REGION) :].lstrip(":").strip()
    return rest or None


class _Tree:
    def __init__(self, events: Sequence[OpEvent]) -> None:
        self.by_id = {e.id: e for e in events}
        kids: dict[int | None, list[OpEvent]] = defaultdict(list)
        for e in events:
            kids[e.parent if e.parent in self.by_id else None].append(e)
        for lst in kids.values():
            lst.sort(key=lambda e: (e.start_us, -e.end_us))
        self.children = kids

    def ancestors(self, e: OpEvent) -> Iterable[OpEvent]:
        p = e.parent
        while p is not None and p in self.by_id:
            a = self.by_id[p]
            yield a
            p = a.parent

    def subtree(self, e: OpEvent) -> list[OpEvent]:
        out, stack = [], [e]
        while stack:
            x = stack.pop()
            out.append(x)
            stack.extend(self.children.get(x.id, ()))
        return out


def _match(
    sites: Sequence[CallSite], cursor: int, event: str, used: set[int] | None = None
) -> int | None:
    """The next site at or after ``cursor`` for ``event``; else (events out of call
    order, as device kernels may come) the first unused one anywhere."""
    for j in range(cursor, len(sites)):
        if sites[j].event == event and (used is None or j not in used):
            return j
    if used is not None:
        for j in range(cursor):
            if sites[j].event == event and j not in used:
                return j
    return None


def _score(graph: GraphInfo, names: Sequence[str]) -> int:
    gen = [s for s in graph.sites if s.generated]
    ext = [s for s in graph.sites if not s.generated]
    cursors = [0, 0]
    hits = 0
    for n in names:
        for i, pool in enumerate((gen, ext)):
            j = _match(pool, cursors[i], n)
            if j is not None:
                cursors[i] = j + 1
                hits += 1
                break
    return hits


def _op_family(op: str) -> str:
    """``aten::scatter_reduce_`` -> ``scatter``: an op's name up to its first underscore."""
    return op.rsplit("::", 1)[-1].strip("_").split("_", 1)[0]


def _members(
    site: CallSite, graph: GraphInfo, module_index: Mapping[str, int],
    splits: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> dict[str, float]:
    """Module -> summed node weight of one call site (views, weightless, join only
    when no node of the site has weight; graph inputs only when the site has
    nothing else).  An extern kernel's provenance may list the nodes feeding it;
    its own op's nodes are used when there are any.  A generated kernel's list
    may name a node an extern kernel computes (a convolution whose input it
    prepares): that node's work is not in it, so it does not count."""
    names = [n for n in site.nodes or () if n in graph.nodes]
    if site.generated:
        done_elsewhere = graph.extern_nodes()
        names = [n for n in names if n not in done_elsewhere] or names
    nodes = [graph.nodes[n] for n in names]
    nodes = [x for x in nodes if x.module is not None and x.module in module_index]
    # Graph inputs count only for a kernel that does nothing but copy inputs.
    nodes = [x for x in nodes if x.op != "placeholder"] or nodes
    if not site.generated:
        own = [x for x in nodes if x.op == site.event]
        if not own and site.borrowed:
            # A fallback without provenance of its own did the work of the borrowed
            # nodes of its op's family (aten::scatter_reduce_ for an aten::scatter_add).
            family = _op_family(site.event)
            own = [x for x in nodes if x.op is not None and _op_family(x.op) == family]
        nodes = own or nodes
    weighted = [x for x in nodes if x.weight > 0]
    out: dict[str, float] = defaultdict(float)
    for x in weighted or nodes:
        w = x.weight if weighted else 1.0
        for m, share in _rows_of(x, splits or {}, module_index):
            out[m] += w * share
    return dict(out)


#: Families of ops whose nodes a module's projections turn into, forward and backward.
_FAMILY = {"mm": "mm", "addmm": "mm", "linear": "mm", "matmul": "mm", "bmm": "bmm",
           "baddbmm": "bmm", "convolution": "conv", "_convolution": "conv",
           "convolution_backward": "conv", "_grouped_mm": "grouped_mm",
           "grouped_mm": "grouped_mm"}


def _family(op: str | None) -> str | None:
    return _FAMILY.get((op or "").split("::")[-1])


def _rows_of(
    x: NodeInfo, splits: Mapping[str, Mapping[str, Mapping[str, float]]],
    module_index: Mapping[str, int],
) -> list[tuple[str, float]]:
    """The rows a node's work goes to: its module's, or, for a matrix multiply or a
    convolution of a module that computes projections itself (``ModuleTable.op_rows``:
    module -> op -> row -> share of that op's FLOPs, from an eager forward), the rows of
    the projections of that op's family, by their shares.  Forward and backward nodes
    are told apart from the module's other work by family only: a module whose core
    also multiplies in that family is not split."""
    assert x.module is not None
    by_op = splits.get(x.module)
    family = _family(x.op)
    if not by_op or family is None:
        return [(x.module, 1.0)]
    rows: dict[str, float] = defaultdict(float)
    for op, shares in by_op.items():
        if _family(op) == family:
            for row, share in shares.items():
                rows[row] += share
    total = sum(rows.values())
    if not total or any(r not in module_index for r in rows):
        return [(x.module, 1.0)]
    return [(r, v / total) for r, v in rows.items()]


def attribute_compiled_step(
    step: OpEvent,
    events: Iterable[OpEvent],
    graphs: Sequence[GraphInfo],
    *,
    module_index: Mapping[str, int],
    root: int = 0,
    device_time: bool = False,
    step_wall_s: float | None = None,
    loop: bool = False,
    kernels: Mapping[int, Sequence[tuple[str, float]]] | None = None,
    shapes: Mapping[int, tuple[int, ...]] | None = None,
    param_modules: Mapping[tuple[int, ...], Sequence[str]] | None = None,
    splits: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
) -> tuple[StepCharges, CompiledStep]:
    """Charge one compiled step (``step`` is its ``layertime::step`` range).

    ``module_index`` maps dotted module names to the run's table indices;
    ``root`` is the model's index, whose range (``layertime::module::<root>``)
    the tracer puts around the compiled wrapper's call.  ``kernels`` gives, on
    CUDA, the device kernels each CPU event launched directly, as
    (name, microseconds); Triton kernels are found there.  ``shapes`` gives
    an event's first input shape where recorded, ``param_modules`` the layers
    owning a trainable parameter of each shape (for AccumulateGrad).  ``splits``
    (``ModuleTable.op_rows``) sends the matrix multiplies of a module that computes
    projections itself to the projections' rows (:func:`_rows_of`); ``module_index``
    must then hold those rows.  Other arguments are as for
    :func:`~layertime.measure.attribute.attribute_step`.
    """
    # Long on purpose (about 260 lines): one pass over one step, whose nested
    # helpers share that step's tree, charges and running totals; its stages
    # (eager attribution, graph calls and their kernels, AccumulateGrad, the
    # itemised rest) are marked below and tested one by one in
    # tests/test_compiled_pure.py.
    evs = list(events)
    if step not in evs:
        evs.append(step)
    tree = _Tree(evs)
    launched = kernels or {}

    # 1. Outermost compiled regions, and AccumulateGrad nodes right after a compiled backward.
    renamed: dict[int, OpEvent] = {}
    roots: list[OpEvent] = []
    for e in evs:
        if _is_compiled_root(e) and not any(_is_compiled_root(a) for a in tree.ancestors(e)):
            roots.append(e)
            renamed[e.id] = replace(e, name=_UNATTRIBUTED_RANGE)
    accumulate: list[OpEvent] = []
    nodes_by_thread: dict[int, list[OpEvent]] = defaultdict(list)
    for e in evs:
        if e.name.startswith(BACKWARD_NODE):
            nodes_by_thread[e.thread].append(e)
    for lst in nodes_by_thread.values():
        lst.sort(key=lambda e: e.start_us)
        after_compiled = False
        for e in lst:
            if ACCUMULATE_GRAD in e.name:
                if after_compiled and e.id not in renamed:
                    accumulate.append(e)
                    renamed[e.id] = replace(e, name=_UNATTRIBUTED_RANGE)
            else:
                after_compiled = e.name == f"{BACKWARD_NODE}{COMPILED_BACKWARD}"

    base = attribute_step(
        step,
        [renamed.get(e.id, e) for e in evs],
        device_time=device_time,
        step_wall_s=step_wall_s,
        loop=loop,
        root_module=root,
    )
    info = CompiledStep()
    unattributed = base.step.get("unattributed", 0.0)

    # The model's own rows hold only the compiled wrapper's call (its code runs
    # inside the graphs, charged below): that is wrapper time.
    for phase in ("forward", "backward"):
        moved = base.modules.pop((root, phase), 0.0)
        unattributed += moved
        info.wrapper_s += moved

    def inclusive_us(e: OpEvent) -> float:
        if not device_time:
            return e.duration_us
        total = 0.0
        for x in tree.subtree(e):
            total += x.device_us
        return total

    def on_thread(kids: Iterable[OpEvent], thread: int) -> list[OpEvent]:
        return [k for k in kids if device_time or k.thread == thread]

    # Per-step totals of the compiled regions (the fallback when nothing is placed).
    compiled_us = sum(inclusive_us(r) for r in roots if device_time or r.thread == step.thread)

    forward_region: dict[tuple[int, int], str | None] = {}
    for e in evs:
        if e.name == COMPILED_FORWARD and e.seq >= 0:
            region: str | None = None
            for a in tree.ancestors(e):
                region = _region_id(a.name)
                if region is not None:
                    break
            forward_region[(e.thread, e.seq)] = region

    placed: dict[tuple[int, str], float] = defaultdict(float)
    spans: dict[tuple[int, str], tuple[float, float]] = {}
    calls: dict[int, int] = defaultdict(int)
    fused: dict[tuple[str, str, str], FusedCharge] = {}
    graph_totals: dict[str, list[float]] = {}
    graph_phase: dict[str, str] = {}

    def charge(idx: int, phase: str, us: float, ev: OpEvent) -> None:
        placed[(idx, phase)] += us
        span = spans.get((idx, phase))
        a, b = ev.start_us, ev.end_us
        spans[(idx, phase)] = (a, b) if span is None else (min(span[0], a), max(span[1], b))

    placed_us = 0.0
    for call in evs:
        if not call.name.startswith(CALL_GRAPH):
            continue
        if not device_time and call.thread != step.thread:
            continue
        backward = None
        cid = None
        for a in tree.ancestors(call):
            if a.name.startswith(BACKWARD_NODE):
                backward = a
                break
            rid = _region_id(a.name)
            if rid is not None:
                cid = rid
                break
        phase = "backward" if backward is not None else "forward"
        if backward is not None:
            cid = forward_region.get((backward.fwd_thread, backward.seq))
            if cid is None:
                cid = forward_region.get((backward.thread, backward.seq))
        kids = on_thread(tree.children.get(call.id, []), call.thread)
        candidates = [g for g in graphs if g.phase == phase and g.compile_id == cid]
        if not candidates:
            candidates = [g for g in graphs if g.phase == phase]
        site_events = {s.event for g in candidates for s in g.sites}
        # (event name, time, event): the graph call's own device kernels, then its
        # children in time order (Inductor's range around each Triton launch has the
        # kernel's name); a child named otherwise ("triton kernel") that launched
        # kernels stands for them.
        items: list[tuple[str, float, OpEvent]] = [
            (n, us, call) for n, us in launched.get(call.id, ())
        ]
        for kid in kids:
            kname = strip_graph_prefix(kid.name)
            if device_time and kname not in site_events and launched.get(kid.id):
                items.extend((n, us, kid) for n, us in launched[kid.id])
                rest = inclusive_us(kid) - sum(us for _, us in launched[kid.id])
                if rest > 0:
                    items.append((kname, rest, kid))
            else:
                items.append((kname, inclusive_us(kid), kid))
        names = [n for n, _, _ in items]
        graph = None
        if candidates:
            scored = [(_score(g, names), i) for i, g in enumerate(candidates)]
            best, i = max(scored)
            graph = candidates[i] if best > 0 else None
        key = graph.key if graph is not None else f"{cid or '?'} {phase}"
        graph_phase[key] = phase
        tot = graph_totals.setdefault(key, [0.0, 0.0])
        tot[0] += inclusive_us(call)
        if graph is None:
            info.unknown_graph_calls += 1
            label = f"(graph {key}: no provenance)"
            info.unplaced[label] = info.unplaced.get(label, 0.0) + inclusive_us(call) * 1e-6
            continue
        if phase == "forward":
            for m, n in graph.calls().items():
                idx = module_index.get(m)
                if idx is not None and idx != root:
                    calls[idx] += n
        gen = [s for s in graph.sites if s.generated]
        ext = [s for s in graph.sites if not s.generated]
        gen_events = {s.event for s in gen}
        cursor = [0, 0]
        used: tuple[set[int], set[int]] = (set(), set())
        for name, us, ev in items:
            pool_i = 0 if name in gen_events else 1
            pool = (gen, ext)[pool_i]
            j = _match(pool, cursor[pool_i], name, used[pool_i])
            if j is None:
                info.unplaced[name] = info.unplaced.get(name, 0.0) + us * 1e-6
                continue
            used[pool_i].add(j)
            cursor[pool_i] = j + 1
            site = pool[j]
            members = _members(site, graph, module_index, splits)
            if not members:
                info.unplaced[site.kernel] = info.unplaced.get(site.kernel, 0.0) + us * 1e-6
                continue
            placed_us += us
            tot[1] += us
            if len(members) == 1:
                (m,) = members
                charge(module_index[m], phase, us, ev)
                continue
            total_w = sum(members.values())
            split = {
                m: us * (w / total_w if total_w > 0 else 1.0 / len(members))
                for m, w in members.items()
            }
            for m, part in split.items():
                charge(module_index[m], phase, part, ev)
            fkey = (key, site.kernel, phase)
            fc = fused.get(fkey)
            if fc is None:
                fused[fkey] = FusedCharge(
                    key, site.kernel, phase, us * 1e-6, {m: v * 1e-6 for m, v in split.items()}
                )
            else:
                fc.time_s += us * 1e-6
                for m, v in split.items():
                    fc.split[m] = fc.split.get(m, 0.0) + v * 1e-6

    owners = param_modules or {}
    known = shapes or {}
    accumulate_us = 0.0
    for a in accumulate:
        if not device_time and a.thread != step.thread:
            continue
        us = inclusive_us(a)
        shape = next((known[x.id] for x in tree.subtree(a) if x.id in known), None)
        cands = [m for m in owners.get(shape, ()) if m in module_index] if shape else []
        if not cands:
            info.accumulate_s += us * 1e-6
            continue
        for m in cands:
            charge(module_index[m], "backward", us / len(cands), a)
        accumulate_us += us
        info.accumulate_placed_s += us * 1e-6

    for (idx, phase), us in placed.items():
        base.modules[(idx, phase)] = base.modules.get((idx, phase), 0.0) + us * 1e-6
        base.spans[("module", idx, phase)] = tuple(  # type: ignore[assignment]
            (t - step.start_us) * 1e-6 for t in spans[(idx, phase)]
        )
    for idx, n in calls.items():
        base.calls[idx] = base.calls.get(idx, 0) + n
    info.placed_s = placed_us * 1e-6
    info.fused = list(fused.values())
    info.graphs = {k: (graph_phase[k], v[0] * 1e-6, v[1] * 1e-6) for k, v in graph_totals.items()}
    if not graph_totals:
        # No Inductor graph calls (another backend): the compiled forward and
        # backward ops are what can be known, per graph.
        for e in evs:
            if not device_time and e.thread != step.thread:
                continue
            if e.name == COMPILED_FORWARD and e.seq >= 0:
                k = f"{forward_region.get((e.thread, e.seq)) or '?'} forward"
            elif e.name == f"{BACKWARD_NODE}{COMPILED_BACKWARD}":
                bid = forward_region.get((e.fwd_thread, e.seq)) or forward_region.get(
                    (e.thread, e.seq)
                )
                k = f"{bid or '?'} backward"
            else:
                continue
            ph, t, p = info.graphs.get(k, (k.rsplit(" ", 1)[1], 0.0, 0.0))
            info.graphs[k] = (ph, t + inclusive_us(e) * 1e-6, p)
            label = f"(graph {k}: no provenance)"
            info.unplaced[label] = info.unplaced.get(label, 0.0) + inclusive_us(e) * 1e-6
    # What the compiled regions hold besides kernels is the compiled wrapper's own
    # time: a row of its own (``compiled_wrapper``), not unattributed.
    info.wrapper_s += max(0.0, compiled_us * 1e-6 - info.placed_s - info.unplaced_s)
    base.step["compiled_wrapper"] = info.wrapper_s
    base.step["unattributed"] = (
        unattributed - (placed_us + accumulate_us) * 1e-6 - info.wrapper_s
    )
    return base, info
