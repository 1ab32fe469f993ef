"""A trace's kept events as layertime's own :class:`~layertime.measure.events.OpEvent`
records, so that the live attribution (``attribute.py``) runs on them unchanged.

What is translated, and how:

* **Nesting.**  Per thread (``pid``, ``tid``), an event's parent is the innermost event
  that contains it, as torch's own tree is built (``EventList._populate_cpu_children``; a
  partial overlap is no parent).  The Python tracer's module calls, the ops and the ranges
  are nested together, so an op's module is the innermost module call around it.
* **Module calls** (``nn.Module: Class_N``, or Lightning's ``[pl][module]`` ranges) become
  ``layertime::module::<i>`` ranges: ``i`` indexes the distinct modules (``Class_N`` is
  one module instance: the Python tracer numbers instances per class).  The model's root
  is index 0: the outermost module whose calls took longest.
* **Steps**: ``ProfilerStep#N`` (torch's range around each ``prof.step()`` interval) is
  ``layertime::step``; Lightning's steps come from ``lightning.py``.
* **Backward**: backward nodes (``autograd::engine::evaluate_function: ...``) carry the
  forward op's sequence number and the profiler's id of the forward thread (``Fwd thread
  id``, a small number, while ``tid`` is the system's).  Each profiler thread id is mapped
  to the thread whose forward ops hold the same sequence numbers (a vote over every node),
  so the live rule (a node belongs to the owner of the forward op with its number) holds.
* **Kernels**: a device activity's ``correlation`` names the runtime call that launched
  it; its time goes to the op around that call (``OpEvent.device_us``), as torch links
  kernels to ops.  Activities whose launch is not in the trace are counted apart.
* **Collectives**: a ``c10d::*`` op's bytes come from its input shapes, else from the
  ``record_param_comms`` event inside it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from layertime.measure.events import (
    BACKWARD_NODE,
    COLLECTIVE_OPS,
    MODULE,
    STEP,
    KernelSpan,
    OpEvent,
    collective_bytes,
)
from layertime.measure.traces.records import BACKEND, DEVICE, OP, RANGE, RUNTIME, TraceEvent
from layertime.measure.traces.records import MODULE as MODULE_CALL

#: ``record_param_comms``' dtype names (c10's ScalarType) -> bytes per element.
_COMMS_DTYPE_BYTES = {"Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4,
                      "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "Float8_e4m3fn": 1,
                      "Float8_e5m2": 1}
STEP_PREFIX = "ProfilerStep#"


@dataclass
class TraceModule:
    """One distinct module of the trace: its key (``Linear_3``, or a dotted path), class,
    the module it was first called from (None: outermost), and its calls' total µs."""

    key: str
    cls: str
    parent: str | None
    first_us: float
    total_us: float = 0.0
    calls: int = 0


@dataclass
class Launch:
    """One device activity with the moment (CPU clock) its launch was made."""

    launch_us: float
    span: KernelSpan


@dataclass
class Parsed:
    """One rank's events nested, with their threads and the modules they call."""

    cpu: list[TraceEvent]
    devices: list[TraceEvent]
    thread: list[int]
    #: Indices into ``cpu`` by start, longest first; each one's enclosing event (-1: none).
    order: list[int]
    parent: list[int]
    #: The profiler's forward-thread ids -> thread keys.
    forward_threads: dict[int, int]
    #: Every distinct module called, the root (the model) first, then by first call.
    modules: list[TraceModule]

    def model_modules(self) -> list[TraceModule]:
        """The root and the modules called inside it (a loss module or a wrapper's own
        modules called beside the model are not the model's)."""
        if not self.modules:
            return []
        keep = {self.modules[0].key}
        out = [self.modules[0]]
        for m in self.modules[1:]:  # parents are first called before their children
            if m.parent in keep:
                keep.add(m.key)
                out.append(m)
        return out


@dataclass
class Converted:
    """One rank's trace as op events, with what the table and the run need besides."""

    events: list[OpEvent]
    #: The modules that are rows, by index (0 is the model's root).
    modules: list[TraceModule]
    #: Module index -> the names of the ops its forward ran itself, with how often.
    own_ops: dict[int, Counter[str]] = field(default_factory=dict)
    #: Device activities, with when they were launched.
    launches: list[Launch] = field(default_factory=list)
    #: Device activities whose launch is not in the trace (µs).
    unlinked_device_us: float = 0.0
    #: op event id -> (dims, types) for the ops whose shapes were kept.
    shapes: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    #: Names of the ranges seen, and how many ops: for the message when no step is found.
    range_names: Counter[str] = field(default_factory=Counter)
    ops: int = 0
    #: The optimizer's class, from ``Optimizer.step#SGD.step``.
    optimizer: str | None = None
    #: Each step range's start (µs) and the name the trace gave it (``ProfilerStep#3``).
    step_names: list[tuple[float, str]] = field(default_factory=list)


def _thread_keys(events: Sequence[TraceEvent]) -> dict[tuple[Any, Any], int]:
    """(pid, tid) -> a positive int: the tid itself when it is one and unique."""
    pairs = list(dict.fromkeys((e.pid, e.tid) for e in events if e.what not in (DEVICE,)))
    tids = Counter(t for _, t in pairs)
    out: dict[tuple[Any, Any], int] = {}
    used: set[int] = set()
    for p, t in pairs:
        if isinstance(t, int) and t > 0 and tids[t] == 1:
            out[(p, t)] = t
            used.add(t)
    nxt = max(used, default=0) + 1
    for pair in pairs:
        if pair not in out:
            while nxt in used:
                nxt += 1
            out[pair] = nxt
            used.add(nxt)
    return out


def _forward_threads(events: Sequence[TraceEvent], thread: Sequence[int]) -> dict[int, int]:
    """The profiler's forward-thread ids (``Fwd thread id``) -> our thread keys, by which
    thread's forward ops hold the sequence numbers each id's backward nodes name."""
    seq_threads: dict[int, set[int]] = defaultdict(set)
    nodes: list[tuple[int, int]] = []
    for i, e in enumerate(events):
        if e.seq < 0 or e.what != OP:
            continue
        if e.fwd > 0:
            if e.name.startswith(BACKWARD_NODE):
                nodes.append((e.fwd, e.seq))
        elif e.fwd == 0:
            seq_threads[e.seq].add(thread[i])
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    for k, seq in nodes:
        for t in seq_threads.get(seq, ()):
            votes[k][t] += 1
    forward = {t for ts in seq_threads.values() for t in ts}
    out = {}
    for k in {k for k, _ in nodes}:
        if votes[k]:
            out[k] = votes[k].most_common(1)[0][0]
        elif len(forward) == 1:
            out[k] = next(iter(forward))
    return out


#: A trace writes ``ts`` and ``dur`` each rounded to the nanosecond, so a child's end can
#: come out 1 ns past its parent's: still nested (read as a partial overlap, the child was
#: charged beside its parent, and a Lightning step's rows summed past the step).
_ROUNDING_US = 0.002


def _nest(events: Sequence[TraceEvent], thread: Sequence[int], order: Sequence[int]) -> list[int]:
    """Per event, the index of the innermost event on its thread that contains it, or -1.
    ``order`` sorts the events by start, longest first (one stack per thread); an end up
    to :data:`_ROUNDING_US` past the parent's still nests."""
    parent = [-1] * len(events)
    stacks: dict[int, list[int]] = {}
    for i in order:
        stack = stacks.get(thread[i])
        if stack is None:
            stack = stacks[thread[i]] = []
        e = events[i]
        ts, end = e.ts, e.end
        while stack:
            top = events[stack[-1]]
            if ts >= top.end or end > top.end + _ROUNDING_US:
                stack.pop()
            else:
                parent[i] = stack[-1]
                break
        stack.append(i)
    return parent


def parse(events: list[TraceEvent]) -> Parsed:
    """Nest one rank's events per thread, map its forward threads, list its modules."""
    cpu: list[TraceEvent] = []
    devices: list[TraceEvent] = []
    for e in events:
        (devices if e.what == DEVICE else cpu).append(e)
    keys = _thread_keys(cpu)
    thread = [keys[(e.pid, e.tid)] for e in cpu]
    # One order for everything: by start, longest first, so a parent comes before its
    # children (ids follow it, as the live tracer's do).
    order = sorted(range(len(cpu)), key=[(e.ts, -e.end) for e in cpu].__getitem__)
    parent = _nest(cpu, thread, order)
    return Parsed(cpu, devices, thread, order, parent, _forward_threads(cpu, thread),
                  _modules(cpu, parent))


def convert(parsed: Parsed, modules: Sequence[TraceModule], index: dict[str, int]) -> Converted:
    """The parsed events as op events (see the module doc): a call of a module in
    ``index`` is a ``layertime::module::<index>`` range; calls of other modules are left
    out (their ops belong to what holds them).  ``modules`` are the rows, by index."""
    cpu, devices, thread, order, parent = (parsed.cpu, parsed.devices, parsed.thread,
                                           parsed.order, parsed.parent)
    fwd_map = parsed.forward_threads
    out = Converted(events=[], modules=list(modules))
    ids: dict[int, int] = {}  # index into cpu -> op event id (runtime calls get none)
    runtime_op: dict[int, tuple[int | None, float]] = {}
    for i in order:
        e = cpu[i]
        p = parent[i]
        while p >= 0 and p not in ids:
            p = parent[p]
        if e.what == RUNTIME:
            runtime_op[e.corr] = (ids[p] if p >= 0 else None, e.ts)
            continue
        if e.what == MODULE_CALL and e.name not in index:
            continue
        if e.what == RANGE:
            out.range_names[e.name] += 1
        ids[i] = len(ids)
    device_us: dict[int, float] = defaultdict(float)
    for d in devices:
        found = runtime_op.get(d.corr)
        span = KernelSpan(d.ts, d.end, int(d.tid) if isinstance(d.tid, int) else 0)
        if found is None:
            out.unlinked_device_us += d.end - d.ts
            continue
        op, launch = found
        out.launches.append(Launch(launch, span))
        if op is None:
            out.unlinked_device_us += d.end - d.ts
        else:
            device_us[op] += d.end - d.ts
    comms = _comms_bytes(cpu, parent)
    backend = sorted((e for e in cpu if e.what == BACKEND and e.dims), key=lambda e: e.ts)
    ops = out.events
    for i in order:
        j = ids.get(i)
        if j is None:
            continue
        e = cpu[i]
        p = parent[i]
        while p >= 0 and p not in ids:
            p = parent[p]
        name = e.name
        what = e.what
        nbytes = 0
        if what == OP:
            out.ops += 1
            if e.dims is not None or e.comms is not None:
                out.shapes[j] = (e.dims, e.types)
            if name.startswith(COLLECTIVE_OPS):
                nbytes = (collective_bytes(name, e.dims, e.types) or comms.get(i, 0)
                          or _list_bytes(name, e, backend))
        elif what == MODULE_CALL:
            name = f"{MODULE}{index[e.name]}"
        elif what == RANGE and (name.startswith(STEP_PREFIX) or name == STEP):
            out.step_names.append((e.ts, name if name != STEP else e.cls or "step"))
            name = STEP
        elif what == RANGE and name.startswith("Optimizer.step#") and out.optimizer is None:
            out.optimizer = name[len("Optimizer.step#"):].split(".", 1)[0]
        ops.append(OpEvent(id=j, name=name, thread=thread[i], start_us=e.ts, end_us=e.end,
                           parent=ids[p] if p >= 0 else None,
                           seq=e.seq if what == OP else -1,
                           fwd_thread=fwd_map.get(e.fwd, 0) if e.fwd > 0 else 0,
                           device_us=device_us.get(j, 0.0), nbytes=nbytes))
    out.own_ops = _own_ops(ops)
    return out


def _comms_bytes(cpu: Sequence[TraceEvent], parent: Sequence[int]) -> dict[int, int]:
    """Collective op (index into ``cpu``) -> bytes, from the ``record_param_comms`` events
    nested in it (the largest of their in and out messages)."""
    out: dict[int, int] = {}
    for j, e in enumerate(cpu):
        if e.comms is None:
            continue
        p = parent[j]
        while p >= 0 and not cpu[p].name.startswith(COLLECTIVE_OPS):
            p = parent[p]
        if p >= 0:
            n_in, n_out, dtype = e.comms
            size = max(n_in, n_out) * _COMMS_DTYPE_BYTES.get(dtype, 0)
            out[p] = max(out.get(p, 0), size)
    return out


def _list_bytes(name: str, op: TraceEvent, backend: Sequence[TraceEvent]) -> int:
    """Bytes of a collective over a list of tensors (``TensorList``: the shapes say no
    dtype), from the first backend event after it that moves as many elements."""
    dims = op.dims
    if not (isinstance(dims, list) and dims and isinstance(dims[0], list) and dims[0]
            and all(isinstance(d, list) for d in dims[0])):
        return 0
    numel = sum(_numel(d) for d in dims[0])
    for b in backend:
        if b.ts >= op.ts and b.dims and isinstance(b.dims[0], list) and _numel(b.dims[0]) == numel:
            return collective_bytes(name, b.dims, b.types)
    return 0


def _numel(shape: Any) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _modules(cpu: Sequence[TraceEvent], parent: Sequence[int]) -> list[TraceModule]:
    """The distinct modules, root first, then by first call."""
    found: dict[str, TraceModule] = {}
    for i in sorted((i for i, e in enumerate(cpu) if e.what == MODULE_CALL),
                    key=lambda i: cpu[i].ts):
        e = cpu[i]
        m = found.get(e.name)
        if m is None:
            p = parent[i]
            while p >= 0 and cpu[p].what != MODULE_CALL:
                p = parent[p]
            cls = e.cls if e.cls is not None else e.name.rsplit("_", 1)[0]
            m = found[e.name] = TraceModule(e.name, cls, cpu[p].name if p >= 0 else None, e.ts)
        m.total_us += e.end - e.ts
        m.calls += 1
    mods = list(found.values())
    outer = [m for m in mods if m.parent is None]
    if not outer:
        return []
    root = max(outer, key=lambda m: m.total_us)
    return [root] + [m for m in mods if m is not root]


def _own_ops(events: Sequence[OpEvent]) -> dict[int, Counter[str]]:
    """Module index -> the names of the ops its forward ran itself (in no child module and
    no backward node), with how often.  ``events`` in id order (parents first)."""
    out: dict[int, Counter[str]] = {}
    ctx: dict[int, int | None] = {}  # event id -> the module its children run in (-1: backward)
    for e in events:
        inherited = ctx.get(e.parent) if e.parent is not None else None
        if inherited == -1 or e.name.startswith(BACKWARD_NODE):
            ctx[e.id] = -1
        elif e.name.startswith(MODULE):
            ctx[e.id] = int(e.name[len(MODULE):])
        else:
            ctx[e.id] = inherited
            if inherited is not None:
                out.setdefault(inherited, Counter())[e.name.split("::", 1)[-1]] += 1
    return out
