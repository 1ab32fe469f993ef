"""Charge every profiled op of a training step to exactly one (owner, phase).

The method, in full:

* Forward: a module's calls are wrapped in ``layertime::module::<i>`` ranges
  (forward hooks, removed afterwards).  An op is charged to the innermost
  module range around it, so a container keeps only its *self* time: the
  functional code in its own ``forward``.  A module called twice gets two
  ranges and ``calls == 2``.
* Backward: the autograd engine wraps each node it runs in
  ``autograd::engine::evaluate_function: <Node>``, which carries the
  sequence number of the forward op that created the node.  The node, and
  every op it runs, is charged to the owner of that forward op, in the
  backward phase (several ops can record one number, since an op records
  the counter's next value whether or not it creates a node; the last one
  before the counter moves is the creator).  This needs no backward hooks, so it holds for the first
  layer (whose input needs no gradient), in-place activations, shared
  modules and anything else autograd can differentiate.  Forward work
  recomputed during backward (activation checkpointing) runs inside module
  ranges nested in a backward node and is charged to that module's backward.
  ``AccumulateGrad`` nodes carry no forward sequence number; the engine runs
  each one right after the node that produced its gradient, so it is charged
  to that node's owner.
* Update and zero_grad: torch's optimizer wraps ``step`` and ``zero_grad`` in
  ranges of its own; their time is charged to the step-level ``update`` and
  ``zero_grad`` rows (the caller splits ``update`` across layers).
* Data: torch's DataLoader wraps each ``next()`` of its iterator in a range of
  its own (the fetch, collation, waiting for workers); its time is ``data``.
* Phase ranges (``layertime::phase::<row>``) charge what they hold to a
  step-level row, unless a module range, a backward node or another range
  inside claims it; the framework integrations mark clip, scheduler and
  logging (callbacks, loggers, the loop's bookkeeping) this way.
* Self time: on the CPU each event's self time is its duration minus its
  children's, so the rows partition the step range exactly; whatever is in no
  owned range (the step's own gaps, engine bookkeeping) is ``unattributed``.
  On CUDA the rows are the GPU kernel time launched by each owner's ops and
  ``unattributed`` is the rest of the step's wall time (GPU idle).
* Data-parallel gradient synchronisation on the training thread (our DDP comm
  hook's range, DDP's bucket copies) is the step-level ``comm`` row; the
  collector in ``parallel/ddp_comm.py`` adds the wait for the all-reduce after
  backward to it and splits it across layers.
* Sharded training (FSDP2, tensor parallelism): FSDP2's own ranges
  (``FSDP::all_gather (<unit>)``, ...) and every collective op (``c10d::*``,
  ``_c10d_functional::*``, and their waits) are charged to a *communication owner*:
  ``(scope, target, kind, phase)`` where scope is ``unit`` (an FSDP unit, named by
  its range; FSDP1's ranges name none: scope ``fsdp1``, the module they run in), ``layer`` (the layer whose range or backward node holds the op: a
  tensor-parallel layer) or ``step`` (a step row, e.g. the optimizer's).  Their
  training-thread time goes to :attr:`StepCharges.collectives`; each collective call
  (an outermost collective op) to :attr:`StepCharges.collective_calls`; the CPU
  backend's own events on its worker threads (``gloo:*``) to
  :attr:`StepCharges.backend_busy`.  ``parallel/sharded_comm.py`` then charges them to
  layers, exposed and hidden.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from layertime.errors import LayertimeError
from layertime.measure.events import (
    ACCUMULATE_GRAD,
    BACKWARD_NODE,
    COLLECTIVE_OPS,
    COMM,
    DATALOADER_NEXT,
    DDP_REDUCER,
    FSDP_RANGE,
    GLOO_WORK,
    MODULE,
    OPTIMIZER_STEP,
    OPTIMIZER_ZERO_GRAD,
    PHASE,
    STEP,
    OpEvent,
)

#: An owner is ("module", index, phase), ("step", row), or a communication owner
#: ("comm", scope, target, kind, phase) (see the module doc and :data:`CommKey`).
Owner = tuple
UNATTRIBUTED: Owner = ("step", "unattributed")
#: A communication owner without its tag: (scope, target, kind, phase); scope is
#: "unit" (target: an FSDP unit's path), "layer" (a module index) or "step" (a row).
CommKey = tuple[str, "str | int", str, str]
_FSDP_NAME = re.compile(
    r"^FSDP::(?P<what>\w+?)(?: for (?P<target>\S*))?(?: \((?P<unit>[^)]*)\))?(?: \[.*\])?$"
)
#: FSDP2's ranges by what they do: their all-gather (and its copies, and prefetching
#: it), their reduce-scatter, and the rest of FSDP's work (hooks, resharding).
_FSDP_KIND = {
    "all_gather": "all_gather", "all_gather_copy_out": "all_gather",
    "forward_prefetch": "all_gather", "backward_prefetch": "all_gather",
    "post_backward_reduce": "reduce_scatter", "post_backward_rs_wait": "reduce_scatter",
}
#: FSDP1's (``FullyShardedDataParallel``) ranges: ``FullyShardedDataParallel.<what>``.
FSDP1_RANGE = "FullyShardedDataParallel."
_FSDP1_KIND = {
    "_pre_forward": "all_gather", "_pre_backward_hook": "all_gather",
    "_post_backward_hook": "reduce_scatter", "_pre_backward_prefetch": "all_gather",
}
#: Collective ops by what they compute (the name's last part, without c10d's ``_``).
_OP_KIND = (
    ("reduce_scatter", "reduce_scatter"), ("allgather", "all_gather"),
    ("all_gather", "all_gather"), ("allreduce", "all_reduce"), ("all_reduce", "all_reduce"),
    ("alltoall", "all_to_all"), ("all_to_all", "all_to_all"), ("broadcast", "broadcast"),
)
#: Functional collectives return at once; a ``wait_tensor`` op waits for them later.
FUNCTIONAL_OPS = ("_c10d_functional::", "c10d_functional::")
#: A collective op that waits for one launched before (it is no call of its own).
_WAIT_OPS = ("wait_tensor", "wait")


def fsdp_owner_of(name: str, phase: str) -> Owner | None:
    """The communication owner of one of FSDP2's ranges, or None for another name."""
    m = _FSDP_NAME.match(name)
    if m is None:
        return None
    what = m.group("what")
    unit = m.group("target") if m.group("target") is not None else (m.group("unit") or "")
    return ("comm", "unit", unit, _FSDP_KIND.get(what, "fsdp"), phase)


def collective_kind(name: str) -> str:
    """What a collective op computes: all_gather, reduce_scatter, all_reduce, ... or other."""
    op = name.split("::", 1)[-1].strip("_").lower()
    for key, kind in _OP_KIND:
        if key in op:
            return kind
    return "other"


def is_wait(name: str) -> bool:
    return name.split("::", 1)[-1].strip("_") in _WAIT_OPS


@dataclass(frozen=True)
class CollectiveCall:
    """One collective launched on the training thread (an outermost collective op):
    its owner, when it ran there (µs on the profiler's clock), its buffer's bytes."""

    key: CommKey
    start_us: float
    end_us: float
    nbytes: int
    name: str
STEP_ROWS = (
    "loss", "zero_grad", "data", "update", "clip", "scheduler", "logging", "unattributed"
)


@dataclass(frozen=True)
class CommCharge:
    """A layer's gradient synchronisation in one step: all of it, and the exposed part
    (the training thread waited for it)."""

    comm_s: float
    exposed_s: float


@dataclass(frozen=True)
class BucketCharge:
    """One DDP gradient bucket in one step: its bytes, which modules' gradients it holds,
    its all-reduce's wall time, its share of the communication busy time, the exposed part."""

    index: int
    bytes: int
    #: module index -> bytes of its gradients in this bucket.
    modules: dict[int, int]
    allreduce_s: float
    comm_s: float
    exposed_s: float


@dataclass(frozen=True)
class CollectiveCharge:
    """One communication owner's collectives in one step, charged: how many calls, their
    bytes, the training thread's time on them (exposed), the backend's time beside the
    thread's compute (hidden), and the backend's own time."""

    key: CommKey
    count: int
    nbytes: int
    exposed_s: float
    hidden_s: float
    busy_s: float


@dataclass
class StepCharges:
    """What one profiled step cost, per owner, in seconds."""

    step_s: float
    #: (module index, phase) -> seconds, phase in {"forward", "backward"}.
    modules: dict[tuple[int, str], float] = field(default_factory=dict)
    #: step-level row -> seconds: loss, zero_grad, data, update, clip,
    #: scheduler, logging, unattributed (and comm when data-parallel,
    #: compiled_wrapper for a compiled model: see ``compiled/attribute.py``).
    step: dict[str, float] = field(default_factory=dict)
    #: module index -> forward calls in this step (recomputation not counted).
    calls: dict[int, int] = field(default_factory=dict)
    #: owner -> (first start, last end) in seconds from the step's start, on
    #: the CPU timeline: where each row's work lies, for traces.
    spans: dict[Owner, tuple[float, float]] = field(default_factory=dict)
    #: Data-parallel only (filled by ``parallel/ddp_comm.charge_step``): module
    #: index -> its communication; the exposed parts add up to ``step["comm"]``.
    #: module index -> gradient bytes all-reduced.
    comm: dict[int, CommCharge] = field(default_factory=dict)
    comm_bytes: dict[int, int] = field(default_factory=dict)
    buckets: list[BucketCharge] = field(default_factory=list)
    #: CUDA only: kernel time beyond the device's busy time (kernels of several
    #: streams overlapping); the rows were scaled down by it to the busy time.
    overlap_s: float = 0.0
    #: CUDA only: kernel time of ops in no owned range (part of ``unattributed``).
    unowned_s: float = 0.0
    #: Sharded runs (see the module doc): training-thread seconds per communication
    #: owner, until ``parallel/sharded_comm.py`` charges them (then empty); the calls;
    #: the backend's own events (name, start, end in seconds from the step's start);
    #: the training thread's intervals in communication (seconds from the step's start).
    collectives: dict[CommKey, float] = field(default_factory=dict)
    collective_calls: list[CollectiveCall] = field(default_factory=list)
    backend_busy: list[tuple[str, float, float]] = field(default_factory=list)
    comm_intervals: list[tuple[float, float]] = field(default_factory=list)
    #: CUDA: collectives' kernel time that compute kernels overlapped, per owner.
    device_hidden: dict[CommKey, float] = field(default_factory=dict)
    #: After charging: one entry per communication owner of this step.
    collective_charges: list[CollectiveCharge] = field(default_factory=list)
    #: Activation checkpointing: module index -> seconds of forward work it ran again
    #: inside backward, for the outermost module of each recomputed region (already in
    #: the backward rows of its layers; said apart so a checkpointed block's cost shows).
    recompute: dict[int, float] = field(default_factory=dict)

    def total_s(self) -> float:
        return (sum(self.modules.values()) + sum(self.step.values())
                + sum(self.collectives.values()))


def _children_index(events: Sequence[OpEvent]) -> dict[int | None, list[OpEvent]]:
    children: dict[int | None, list[OpEvent]] = defaultdict(list)
    ids = {e.id for e in events}
    for e in events:
        parent = e.parent if e.parent in ids else None
        children[parent].append(e)
    for lst in children.values():
        lst.sort(key=lambda e: (e.start_us, -e.end_us))
    return children


def split_steps(events: Sequence[OpEvent]) -> list[tuple[OpEvent, list[OpEvent]]]:
    """Group events by the ``layertime::step`` range they belong to.

    Events on the step's own thread belong to it by nesting; events on other
    threads (CUDA's autograd thread) by their start time.
    """
    children = _children_index(events)
    roots = children[None]
    steps = sorted((e for e in roots if e.name == STEP), key=lambda e: e.start_us)
    groups: list[tuple[OpEvent, list[OpEvent]]] = [(s, []) for s in steps]

    def subtree(root: OpEvent) -> list[OpEvent]:
        out, stack = [], [root]
        while stack:
            e = stack.pop()
            out.append(e)
            stack.extend(children.get(e.id, ()))
        return out

    for s, members in groups:
        members.extend(subtree(s))
    for r in roots:
        if r.name == STEP:
            continue
        for s, members in groups:
            if s.thread != r.thread and s.start_us <= r.start_us <= s.end_us:
                members.extend(subtree(r))
                break
    return groups


def _passes(evs: Sequence[OpEvent], root_module: int) -> list[tuple[float, float, str]]:
    """The forward and backward passes of a step: ``(start_us, end_us, kind)`` in time order.

    A forward pass is one call of the root module (or, when it never ran, one
    outermost module call) outside any backward; a backward pass is a run of
    backward nodes (or a ``backward`` phase range) with no forward between.
    """
    by_id = {e.id: e for e in evs}

    def ancestors(e: OpEvent) -> Iterable[OpEvent]:
        p = by_id.get(e.parent) if e.parent is not None else None
        while p is not None:
            yield p
            p = by_id.get(p.parent) if p.parent is not None else None

    backward: list[tuple[float, float]] = []
    roots: list[tuple[float, float]] = []
    outer: list[tuple[float, float]] = []
    for e in evs:
        if e.name.startswith(BACKWARD_NODE) or e.name == f"{PHASE}backward":
            backward.append((e.start_us, e.end_us))
        elif e.name.startswith(MODULE):
            up = list(ancestors(e))
            if any(a.name.startswith(BACKWARD_NODE) for a in up):
                continue  # recomputation inside backward (checkpointing)
            if e.name == f"{MODULE}{root_module}":
                roots.append((e.start_us, e.end_us))
            if not any(a.name.startswith(MODULE) for a in up):
                outer.append((e.start_us, e.end_us))
    forward = roots or outer
    marks = sorted(
        [(a, b, "forward") for a, b in forward] + [(a, b, "backward") for a, b in backward]
    )
    blocks: list[tuple[float, float, str]] = []
    for a, b, kind in marks:
        if blocks and blocks[-1][2] == kind and (kind == "backward" or a < blocks[-1][1]):
            # Consecutive backward nodes are one pass; overlapping forwards are one.
            blocks[-1] = (blocks[-1][0], max(blocks[-1][1], b), kind)
        else:
            blocks.append((a, b, kind))
    return blocks


def attribute_step(
    step: OpEvent,
    events: Iterable[OpEvent],
    *,
    device_time: bool = False,
    step_wall_s: float | None = None,
    loop: bool = False,
    root_module: int = 0,
    device_busy_s: float | None = None,
    after_backward: str = "unattributed",
    comm_exposed_fraction: float | None = None,
    owners: dict[int, Owner] | None = None,
) -> StepCharges:
    """Charge the events of one step (``step`` is its ``layertime::step`` range).

    ``device_time`` selects CUDA kernel time instead of CPU self time; then
    ``step_wall_s`` (the step's wall time, synchronised) is required, and
    ``device_busy_s`` (the union of the step's kernel intervals) bounds the
    rows: when kernels overlapped (several streams), the sum of kernel times
    exceeds the busy time, and every row is scaled by busy / sum, which
    shares each overlapped moment among the kernels running in it.
    ``loop`` is for a user's own training loop, where the loss, zero_grad and
    data loading have no ranges of ours: work in no range before the model's
    forward is ``data``, between its forward and the backward is ``loss``.
    With several forward/backward passes in one step (gradient accumulation)
    each pass is segmented so: work between one backward and the next forward
    is ``data``; work after the step's last backward is ``after_backward``
    (``unattributed`` unless the caller knows what runs there, e.g. ``clip``).
    The model's forward is the ``root_module``'s calls, or, when it never ran
    (a Lightning ``training_step`` calling a child), the outermost module calls.
    ``comm_exposed_fraction`` (CUDA, sharded): the part of the collectives' kernel time
    that no compute kernel overlapped; only that part stays in the rows, the rest is
    :attr:`StepCharges.device_hidden` (hidden behind compute).
    ``owners``, when given, is filled with each charged event's owner (by event id).
    """
    evs = [e for e in events]
    if step not in evs:
        evs.append(step)
    if after_backward not in STEP_ROWS:
        raise LayertimeError(f"unknown step row {after_backward!r}")
    walk = _Walk(step, evs, device_time=device_time, loop=loop, root_module=root_module,
                 after_backward=after_backward)
    walk.owners = owners
    roots = sorted(walk.children[None], key=lambda e: (e.start_us, e.thread != step.thread))
    backend: list[tuple[str, float, float]] = []
    for root in roots:
        if not device_time and root.thread != step.thread:
            # CPU self time is wall time on the step's thread; work on other
            # threads overlaps it and would be counted twice.  The CPU backend's
            # collectives run there: kept as their busy time.
            if root.name.startswith(GLOO_WORK):
                backend.append((root.name, (root.start_us - step.start_us) * 1e-6,
                                (root.end_us - step.start_us) * 1e-6))
            continue
        walk.visit(root)
    out = walk.result()
    out.backend_busy = backend
    if device_time:
        if step_wall_s is None:
            raise ValueError("device_time attribution needs the step's wall time")
        out.step_s = step_wall_s
        if comm_exposed_fraction is not None and out.collectives:
            f = comm_exposed_fraction
            out.device_hidden = {k: v * (1.0 - f) for k, v in out.collectives.items()}
            out.collectives = {k: v * f for k, v in out.collectives.items()}
        kernel_s = out.total_s()
        if device_busy_s is not None and kernel_s > device_busy_s > 0.0:
            scale = device_busy_s / kernel_s
            out.modules = {k: v * scale for k, v in out.modules.items()}
            out.step = {k: v * scale for k, v in out.step.items()}
            out.overlap_s = kernel_s - device_busy_s
        out.unowned_s = out.step.get("unattributed", 0.0)
    else:
        out.step_s = step.duration_us * 1e-6
    # Whatever the rows do not explain (GPU idle on CUDA; clamped rounding on
    # the CPU) is unattributed, so the rows add up to the step by construction.
    out.step["unattributed"] += out.step_s - out.total_s()
    return out


class _Walk:
    """One step's event tree walked in time order, each event charged to its owner."""

    def __init__(
        self, step: OpEvent, evs: Sequence[OpEvent], *, device_time: bool, loop: bool,
        root_module: int, after_backward: str,
    ) -> None:
        self.step = step
        self.children = _children_index(evs)
        self.device_time = device_time
        self.loop = loop
        self.after_backward = after_backward
        self.seq_owner: dict[tuple[int, int], Owner] = {}
        self.last_backward_owner: dict[int, Owner] = {}
        self.charges: dict[Owner, float] = defaultdict(float)
        #: Recomputed forward (module ranges inside backward) per outermost module, µs.
        self.recompute: dict[int, float] = defaultdict(float)
        self.spans: dict[Owner, tuple[float, float]] = {}
        self.calls: dict[int, int] = defaultdict(int)
        #: Sharded runs: the kind of the last collective launched, per thread (for
        #: its wait); the calls; the training thread's outermost intervals in comm.
        self.last_kind: dict[int, str] = {}
        self._evs = evs
        #: FSDP2's ranges name their units (``FSDP::all_gather (layers.3)``) once its lazy
        #: init has set their paths; a model sharded under a framework may have none set.
        fsdp = [ev.name for ev in evs if ev.name.startswith(FSDP_RANGE)]
        self.fsdp_unnamed = bool(fsdp) and not any(" (" in n or " for " in n for n in fsdp)
        self._bwd_nodes: list[OpEvent] | None = None
        self._bwd_starts: list[float] = []
        #: Functional collectives launched and not yet waited for, per thread, oldest first.
        self.pending: dict[int, list[CommKey]] = {}
        self.collective_calls: list[CollectiveCall] = []
        self.comm_intervals: list[tuple[float, float]] = []
        #: When given: event id -> its owner, as charged.
        self.owners: dict[int, Owner] | None = None
        # Loop mode: the step's forward and backward passes, in time order.
        self.blocks = _passes(evs, root_module) if loop else []

    def unit_by_module(self, e: OpEvent, inherited: Owner, in_backward: bool, kind: str,
                       pre_backward: bool) -> Owner:
        """An FSDP range that names no unit (FSDP1's always; FSDP2's when its units' names
        were not set): the module it runs in names it (scope ``fsdp1``, resolved to the unit
        holding that module when charged); a pre-backward hook runs before its unit's
        backward, wherever the engine calls it, so its unit is the one whose backward node
        comes next."""
        phase = self.phase_at(e.start_us, in_backward)
        if inherited[0] == "comm":
            return (*inherited[:3], kind if kind != "fsdp" else inherited[3], inherited[4])
        if pre_backward and phase == "backward":
            nxt = self.next_backward_module(e.end_us)
            if nxt is not None:
                return ("comm", "fsdp1", nxt, kind, "backward")
        if inherited[0] == "module":
            return ("comm", "fsdp1", inherited[1], kind, inherited[2])
        return ("comm", "fsdp1", -1, kind, phase)

    def next_backward_module(self, t_us: float) -> int | None:
        """The module whose backward node runs first at or after ``t_us`` (FSDP1)."""
        if self._bwd_nodes is None:
            self._bwd_nodes = sorted(
                (e for e in self._evs if e.name.startswith(BACKWARD_NODE)
                 and ACCUMULATE_GRAD not in e.name), key=lambda e: e.start_us)
            self._bwd_starts = [e.start_us for e in self._bwd_nodes]
        for e in self._bwd_nodes[bisect.bisect_left(self._bwd_starts, t_us):]:
            fwd = self.seq_owner.get((e.fwd_thread, e.seq))
            if fwd is not None and fwd[0] == "module":
                return int(fwd[1])
        return None

    def phase_at(self, t_us: float, in_backward: bool) -> str:
        """The pass a moment outside any backward node belongs to: backward inside one or
        (a user's loop, with no phase ranges) from a backward pass until the next forward,
        where FSDP's post-backward callback runs."""
        if in_backward:
            return "backward"
        kind = "forward"
        for a, _, k in self.blocks:
            if a > t_us:
                break
            kind = k
        return kind

    def segment_owner(self, t_us: float) -> Owner:
        """Loop mode: the step-level row a moment outside our ranges belongs to."""
        prev = None
        for i, b in enumerate(self.blocks):
            if b[0] > t_us:
                break
            prev = i
        if prev is None:
            return ("step", "data")
        _, end, kind = self.blocks[prev]
        if t_us < end:
            return UNATTRIBUTED
        if kind == "forward":
            return ("step", "loss")
        if any(b[2] == "forward" for b in self.blocks[prev + 1 :]):
            return ("step", "data")
        return ("step", self.after_backward)

    def own(self, e: OpEvent, inherited: Owner, in_backward: bool) -> tuple[Owner, bool]:
        """Who an event belongs to (and whether it is in the backward), from its range name."""
        name = e.name
        if name == STEP:
            return UNATTRIBUTED, False
        if name.startswith(MODULE):
            idx = int(name[len(MODULE) :])
            if not in_backward:
                self.calls[idx] += 1
            return ("module", idx, "backward" if in_backward else "forward"), in_backward
        if name.startswith(BACKWARD_NODE):
            if ACCUMULATE_GRAD in name:
                return self.last_backward_owner.get(e.thread, UNATTRIBUTED), True
            fwd = self.seq_owner.get((e.fwd_thread, e.seq))
            if fwd is None:
                owner = UNATTRIBUTED
            elif fwd[0] == "module":
                owner = ("module", fwd[1], "backward")
            elif fwd[0] == "comm":
                owner = (*fwd[:4], "backward")  # e.g. FSDP's post-backward hook node
            else:
                owner = fwd
            self.last_backward_owner[e.thread] = owner
            return owner, True
        if name.startswith(PHASE):
            phase = name[len(PHASE) :]
            if phase == "backward":
                return UNATTRIBUTED, True
            if phase in STEP_ROWS:
                return ("step", phase), in_backward
            raise LayertimeError(f"unknown phase range {name!r}")
        if name.startswith(OPTIMIZER_STEP):
            return ("step", "update"), in_backward
        if name.startswith(OPTIMIZER_ZERO_GRAD):
            return ("step", "zero_grad"), in_backward
        if name.startswith(DATALOADER_NEXT):
            return ("step", "data"), in_backward
        if name == COMM or name.startswith(DDP_REDUCER):
            return ("step", "comm"), in_backward
        if name.startswith(FSDP_RANGE):
            fsdp = fsdp_owner_of(name, self.phase_at(e.start_us, in_backward))
            if fsdp is not None and not self.fsdp_unnamed:
                return fsdp, in_backward
            if fsdp is not None:  # FSDP2 without its units' names (see __init__)
                what = name[len(FSDP_RANGE):].split(" ", 1)[0]
                return self.unit_by_module(e, inherited, in_backward, fsdp[3],
                                           what.startswith("pre_backward")), in_backward
        if name.startswith(FSDP1_RANGE):
            what = name[len(FSDP1_RANGE):]
            return self.unit_by_module(e, inherited, in_backward, _FSDP1_KIND.get(what, "fsdp"),
                                       what.startswith("_pre_backward")), in_backward
        if name.startswith(COLLECTIVE_OPS):
            return self.collective_owner(e, inherited, in_backward), in_backward
        return inherited, in_backward

    def collective_owner(self, e: OpEvent, inherited: Owner, in_backward: bool) -> Owner:
        """The communication owner of a collective op, from the owner it runs under."""
        if inherited == ("step", "comm"):
            return inherited  # DDP's own all-reduce, in our hook's range
        if is_wait(e.name):
            # A functional collective's wait: charged with the call it waits for (the
            # oldest not yet waited for), wherever the tensor was first used.
            pending = self.pending.get(e.thread)
            if pending:
                return ("comm", *pending.pop(0))
        wait = is_wait(e.name)
        kind = self.last_kind.get(e.thread, "other") if wait else collective_kind(e.name)
        if not wait:
            self.last_kind[e.thread] = kind
        phase = self.phase_at(e.start_us, in_backward)
        if inherited[0] == "comm":
            # Inside one of FSDP's ranges (or another collective op): its unit, the
            # op's own kind (FSDP's hybrid sharding all-reduces inside its reduce).
            return ("comm", inherited[1], inherited[2], kind if not wait else inherited[3],
                    inherited[4])
        if inherited[0] == "module":
            return ("comm", "layer", inherited[1], kind, inherited[2])
        return ("comm", "step", inherited[1], kind, phase)

    def self_time_us(self, e: OpEvent, kids: Sequence[OpEvent]) -> float:
        if self.device_time:
            return e.device_us
        return max(0.0, e.duration_us - sum(k.duration_us for k in kids if k.thread == e.thread))

    def visit(self, root: OpEvent) -> None:
        """Charge ``root`` and everything under it (depth first, children in time order)."""
        stack: list[tuple[OpEvent, Owner, bool, bool, int | None]] = [
            (root, UNATTRIBUTED, False, False, None)]
        while stack:
            e, inh, in_bwd, in_call, recomputed = stack.pop()
            owner, in_bwd = self.own(e, inh, in_bwd)
            if recomputed is None and in_bwd and e.name.startswith(MODULE):
                recomputed = owner[1]  # a module's forward run again in backward
            if owner[0] == "comm":
                if inh[0] != "comm":
                    self.comm_intervals.append((e.start_us, e.end_us))
                if not in_call and e.name.startswith(COLLECTIVE_OPS) and not is_wait(e.name):
                    self.collective_calls.append(
                        CollectiveCall(owner[1:], e.start_us, e.end_us, e.nbytes, e.name)
                    )
                    if e.name.startswith(FUNCTIONAL_OPS):
                        self.pending.setdefault(e.thread, []).append(owner[1:])
                    in_call = True
            if self.loop and e.parent == self.step.id and owner == UNATTRIBUTED and \
                    not e.name.startswith((MODULE, BACKWARD_NODE, PHASE)):
                owner = self.segment_owner(e.start_us)
            if self.owners is not None:
                self.owners[e.id] = owner
            if e.seq >= 0 and not e.fwd_thread and not e.name.startswith(BACKWARD_NODE):
                # An op records the thread's *next* sequence number whether or
                # not it creates a node; the counter moves only when one is
                # created.  So the last op seen with a number is its creator
                # (or nested in it), and later writers win.  A node's own
                # range (it carries a forward thread) is no forward op: it
                # must not overwrite the number it was looked up by.
                self.seq_owner[(e.thread, e.seq)] = owner
            kids = self.children.get(e.id, [])
            if self.loop and e is self.step and not self.device_time:
                self._charge_gaps(e, kids)
            else:
                us = self.self_time_us(e, kids)
                self.charges[owner] += us
                if recomputed is not None:
                    self.recompute[recomputed] += us
            span = self.spans.get(owner)
            if span is None:
                self.spans[owner] = (e.start_us, e.end_us)
            else:
                self.spans[owner] = (min(span[0], e.start_us), max(span[1], e.end_us))
            # Push in reverse so children are visited in time order.
            for k in reversed(kids):
                stack.append((k, owner, in_bwd, in_call, recomputed))

    def _charge_gaps(self, e: OpEvent, kids: Sequence[OpEvent]) -> None:
        """Loop mode: the step's own gaps go to the segment they fall in."""
        cursor = e.start_us
        for k in kids:
            if k.start_us > cursor:
                self.charges[self.segment_owner(cursor)] += k.start_us - cursor
            cursor = max(cursor, k.end_us)
        if e.end_us > cursor:
            self.charges[self.segment_owner(cursor)] += e.end_us - cursor

    def result(self) -> StepCharges:
        """The charges in seconds, by module and phase or by step-level row (step_s unset)."""
        out = StepCharges(step_s=0.0)
        start = self.step.start_us
        for owner, us in self.charges.items():
            s = us * 1e-6
            if owner[0] == "module":
                key = (owner[1], owner[2])
                out.modules[key] = out.modules.get(key, 0.0) + s
            elif owner[0] == "comm":
                out.collectives[owner[1:]] = out.collectives.get(owner[1:], 0.0) + s
            else:
                out.step[owner[1]] = out.step.get(owner[1], 0.0) + s
        for row in ("loss", "zero_grad", "data", "update", "unattributed"):
            out.step.setdefault(row, 0.0)  # the rows every step has; the others when charged
        out.calls = dict(self.calls)
        out.recompute = {i: us * 1e-6 for i, us in self.recompute.items()}
        out.spans = {o: ((a - start) * 1e-6, (b - start) * 1e-6) for o, (a, b) in self.spans.items()}
        out.collective_calls = [
            replace(c, start_us=(c.start_us - start) * 1e-6, end_us=(c.end_us - start) * 1e-6)
            for c in self.collective_calls
        ]
        out.comm_intervals = [((a - start) * 1e-6, (b - start) * 1e-6)
                              for a, b in self.comm_intervals]
        return out
