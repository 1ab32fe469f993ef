"""A small, torch-free view of profiler events, and the names of our ranges.

The tracer turns ``torch.profiler`` output into :class:`OpEvent` records so
that attribution (``attribute.py``) is a pure function that tests can feed
with hand-made events.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: The range around one whole training step.
STEP = "layertime::step"
#: Prefix of the range around one module call; the suffix is its table index.
MODULE = "layertime::module::"
#: Prefix of a step-level phase range: loss, zero_grad, update, backward, data,
#: clip, scheduler, logging (the last three from the framework integrations).
PHASE = "layertime::phase::"
#: torch's own ranges (``torch.optim.Optimizer`` wraps these in record_function).
OPTIMIZER_STEP = "Optimizer.step#"
OPTIMIZER_ZERO_GRAD = "Optimizer.zero_grad#"
#: torch's own range around one ``next()`` of a DataLoader's iterator (the fetch,
#: collation, and waiting for workers): the ``data`` row wherever it appears.
DATALOADER_NEXT = "enumerate(DataLoader)#"
#: The autograd engine's range around one backward node; it carries the
#: sequence number and forward thread of the op that created the node.
BACKWARD_NODE = "autograd::engine::evaluate_function: "
ACCUMULATE_GRAD = "AccumulateGrad"
#: Data-parallel gradient synchronisation on the training thread: our DDP comm
#: hook's range (divide and launch one bucket's all-reduce) and DDP's own
#: ranges around its gradient-bucket copies.
COMM = "layertime::comm"
DDP_REDUCER = ("torch::distributed::reducer::", "torch.distributed.ddp.reducer::")
#: FSDP2's own ranges: ``FSDP::<what>`` (the root unit), ``FSDP::<what> (<unit path>)``,
#: ``FSDP::<pass>_prefetch for <unit path>``.
FSDP_RANGE = "FSDP::"
#: Collective ops: the process group's (``c10d::allreduce_``), the functional
#: collectives' that DTensor uses (``_c10d_functional::all_reduce``) and their wait.
COLLECTIVE_OPS = ("c10d::", "_c10d_functional::", "c10d_functional::")
#: The CPU backend's own event around one collective, on its worker thread.
GLOO_WORK = "gloo:"
#: Kernel names of collectives on a GPU (NCCL's, RCCL's), lower case.
COMM_KERNELS = ("nccl", "rccl")
#: Bytes per element of the dtypes a profiler names for an op's inputs.
_DTYPE_BYTES = {
    "float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "half": 2, "bfloat16": 2,
    "long int": 8, "int": 4, "short int": 2, "signed char": 1, "unsigned char": 1, "bool": 1,
    "c10::Float8_e4m3fn": 1, "c10::Float8_e5m2": 1,
}


@dataclass(frozen=True, slots=True)
class OpEvent:
    """One profiled CPU range: an aten op, an autograd node or one of our ranges.

    ``device_us`` is the GPU kernel time launched directly by this op (its
    own kernels, not its children's); zero on the CPU.
    """

    id: int
    name: str
    thread: int
    start_us: float
    end_us: float
    parent: int | None = None
    seq: int = -1
    fwd_thread: int = 0
    device_us: float = 0.0
    #: A collective op's buffer in bytes (its largest tensor argument; see
    #: :func:`collective_bytes`), when shapes were recorded; else 0.
    nbytes: int = 0

    @property
    def duration_us(self) -> float:
        return self.end_us - self.start_us


def collective_bytes(name: str, shapes: Any, dtypes: Any) -> int:
    """Bytes of a collective op's buffer: its largest tensor argument (the gathered
    output of ``_allgather_base_``, the unreduced input of ``_reduce_scatter_base_``,
    the tensor of an all-reduce).  0 for other ops, or when shapes were not recorded."""
    if not name.startswith(COLLECTIVE_OPS) or not shapes:
        return 0
    best = 0
    for shape, dtype in zip(shapes, dtypes or ()):
        size = _DTYPE_BYTES.get(str(dtype))
        if size is None or not isinstance(shape, (list, tuple)) or not shape:
            continue
        n = 1
        for d in shape:
            n *= int(d)
        best = max(best, n * size)
    return best


#: Kineto activity types that are not ops: the CUDA runtime and driver calls an
#: op makes (``cudaLaunchKernel``, ...) and the profiler's own overhead.  They
#: carry CUPTI's correlation counter as their id, which overlaps op ids.
_NOT_OPS = frozenset(
    {"cuda_runtime", "cuda_driver", "overhead", "cuda_sync", "privateuse1_runtime",
     "privateuse1_driver", "xpu_runtime", "xpu_driver", "hip_runtime", "mtia_runtime"}
)
#: By name, for torch versions whose events carry no activity type.
_RUNTIME_NAME = re.compile(r"^(cuda[A-Z]|cu[A-Z]|hip[A-Z]|nccl[A-Z]|cupti|CUPTI |Activity Buffer)")


def _is_op(e: Any) -> bool:
    """Whether a CPU-side ``FunctionEvent`` is an op or a range (not a runtime call)."""
    return _op_or_range(str(e.name), getattr(e, "activity_type", None),
                        lambda: int(getattr(e, "linked_correlation_id", 0) or 0))


def _op_or_range(name: str, activity: Any, linked: Callable[[], int]) -> bool:
    """The rule of :func:`_is_op`, for either kind of event: by its activity type where
    torch gives one, else not linked to another op (runtime calls are) and not named
    as a runtime call."""
    if activity is not None:
        return str(activity).lower() not in _NOT_OPS
    return linked() <= 0 and not _RUNTIME_NAME.match(name)


@dataclass(frozen=True, slots=True)
class KernelSpan:
    """One device activity (kernel, memcpy, memset) on the profiler's timeline."""

    start_us: float
    end_us: float
    stream: int
    #: A collective's kernel (NCCL's), which runs beside compute on a stream of its own.
    comm: bool = False


def from_profiler(function_events: Iterable[Any]) -> list[OpEvent]:
    """Convert ``torch.profiler.profile().events()`` into :class:`OpEvent` records
    (see :func:`from_profiler_indexed`)."""
    return from_profiler_indexed(function_events)[0]


def from_profiler_indexed(
    function_events: Iterable[Any],
    launched: dict[int, list[tuple[str, float]]] | None = None,
) -> tuple[list[OpEvent], dict[int, int]]:
    """``torch.profiler.profile().events()`` as :class:`OpEvent` records, and the
    id each kept profiler event got (keyed by ``id()`` of the profiler's event).

    Only CPU-side ops and ranges are kept; kernels are folded into the op
    that launched them (:func:`launched_kernels`, given or read here).  Runtime and
    driver calls and profiler overhead are dropped.  Ids are made here, one per
    event, and parents are linked by object identity: profiler ids are not
    unique on CUDA (runtime events carry CUPTI's counter, and older torch
    copies an op's id onto its overhead events), so linking by id could
    count a kernel twice or make an event its own ancestor.
    """
    function_events = list(function_events)
    if launched is None:
        launched = launched_kernels(function_events)
    kept: list[Any] = []
    for e in function_events:
        if getattr(e, "is_async", False) and not str(e.name).startswith(GLOO_WORK):
            continue  # async ranges, but for the CPU backend's collectives (kept as roots)
        device_type = str(getattr(e, "device_type", "CPU"))
        if not device_type.endswith("CPU") or not _is_op(e):
            continue
        kept.append(e)
    index = {id(e): i for i, e in enumerate(kept)}
    out: list[OpEvent] = []
    for i, e in enumerate(kept):
        # The nearest kept ancestor (a dropped runtime event is never a parent of
        # an op, but be safe).
        parent_obj = e.cpu_parent
        while parent_obj is not None and id(parent_obj) not in index:
            parent_obj = parent_obj.cpu_parent
        out.append(
            OpEvent(
                id=i,
                name=str(e.name),
                thread=int(e.thread),
                start_us=float(e.time_range.start),
                end_us=float(e.time_range.end),
                parent=index[id(parent_obj)] if parent_obj is not None else None,
                seq=int(e.sequence_nr),
                fwd_thread=int(e.fwd_thread or 0),
                device_us=(
                    sum(us for _, us in launched.get(id(e), ()))
                    if launched is not None else _own_device_us(e)
                ),
                nbytes=collective_bytes(str(e.name), getattr(e, "input_shapes", None),
                                        getattr(e, "input_dtypes", None)),
            )
        )
    return out, index


#: Names torch's own parser (``_parse_kineto_results``) drops: memory records and
#: the profiler's bookkeeping ops.  :func:`from_kineto` drops them too.
_TORCH_FILTERED = frozenset(
    {"[memory]", "[OutOfMemory]", "profiler::_record_function_enter",
     "profiler::_record_function_enter_new", "profiler::_record_function_exit",
     "aten::is_leaf", "aten::output_nr", "aten::_version"}
)


def from_kineto(result: Any) -> list[OpEvent]:
    """The op events of a CPU-only profile read straight from Kineto's results
    (``prof.profiler.kineto_results``): what :func:`from_profiler` gives from
    ``prof.events()``, without torch building a ``FunctionEvent`` (some forty
    fields) for every event and a tree of them, which cost more than the traced
    step itself on a transformer.

    The result is the same, field for field and in the same order (the tests
    compare both on real profiles), because torch's steps are followed: drop
    the names its parser drops; sort by start, longest first; per thread, an
    event's parent is the innermost open event containing it
    (``EventList._populate_cpu_children``); an only child of the same name as
    its parent is merged into it (``_remove_dup_nodes``: an op re-dispatched to
    itself); then :func:`from_profiler`'s filter.  Device time is zero: this is
    for profiles without device activities (the tracer reads ``prof.events()``
    when there are).
    """
    start0 = result.trace_start_ns()
    events = result.events()
    # Methods newer torch added, looked up once (torch's parser does the same per event).
    cls = type(events[0]) if events else object
    hidden = getattr(cls, "is_hidden_event", None)
    activity = getattr(cls, "activity_type", None)
    # Each candidate: (start_ns, end_ns, name, thread, seq, fwd_thread, is_op, nbytes).
    rows: list[tuple[int, int, str, int, int, int, bool, int]] = []
    for e in events:
        name = e.name()
        if name in _TORCH_FILTERED or (hidden is not None and hidden(e)) or (
            e.is_async() and not name.startswith(GLOO_WORK)
        ):
            continue
        thread = e.start_thread_id()
        if e.end_thread_id() != thread or e.device_type().name != "CPU":
            continue  # torch's async events, and device activities: not in the tree
        if name.startswith("ProfilerStep#"):  # torch's wildcard, as in FunctionEvent.name
            name = "ProfilerStep*"
        is_op = _op_or_range(name, activity(e) if activity is not None else None,
                             e.linked_correlation_id)
        nbytes = (collective_bytes(name, e.shapes(), e.dtypes())
                  if name.startswith(COLLECTIVE_OPS) else 0)
        rows.append((e.start_ns(), e.end_ns(), name, thread, e.sequence_nr(),
                     e.fwd_thread_id() or 0, is_op, nbytes))
    rows.sort(key=lambda r: (r[0], -r[1]))  # stable, as torch's final sort
    parents = _nesting_parents([(r[3], r[0], r[1]) for r in rows])
    alive = _merge_same_name_only_children([r[2] for r in rows], parents)
    ids: dict[int, int] = {}
    out: list[OpEvent] = []
    for i in alive:
        a, b, name, thread, seq, fwd, is_op, nbytes = rows[i]
        if not is_op:
            continue
        parent = parents[i]
        while parent is not None and parent not in ids:  # the nearest kept ancestor
            parent = parents[parent]
        ids[i] = len(out)
        out.append(OpEvent(id=len(out), name=name, thread=thread, start_us=(a - start0) / 1000,
                           end_us=(b - start0) / 1000,
                           parent=None if parent is None else ids[parent], seq=seq,
                           fwd_thread=fwd, nbytes=nbytes))
    return out


#: The methods :func:`from_kineto` needs of Kineto's events (those of torch 1.13 on).
_KINETO_METHODS = ("name", "start_ns", "end_ns", "start_thread_id", "end_thread_id", "is_async",
                   "device_type", "sequence_nr", "fwd_thread_id", "linked_correlation_id",
                   "shapes", "dtypes")


def kineto_readable(result: Any, event_type: Any) -> bool:
    """Whether :func:`from_kineto` can read these results, whose events are of
    ``event_type`` (torch's ``_KinetoEvent``); else read ``prof.events()``.  Judged
    from the class, so that the events are not built twice."""
    return (
        result is not None and event_type is not None
        and hasattr(result, "trace_start_ns") and hasattr(result, "events")
        and all(hasattr(event_type, m) for m in _KINETO_METHODS)
    )


def _nesting_parents(spans: list[tuple[int, int, int]]) -> list[int | None]:
    """Per (thread, start, end) span (sorted by start, longest first), the index of
    the innermost span on its thread that contains it, or None (torch's rule: a
    partial overlap is no parent)."""
    parents: list[int | None] = [None] * len(spans)
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])  # stable: by thread
    stack: list[int] = []
    thread = None
    for i in order:
        t, a, b = spans[i]
        if t != thread:
            thread, stack = t, []
        while stack:
            top = spans[stack[-1]]
            if a >= top[2] or b > top[2]:
                stack.pop()
            else:
                parents[i] = stack[-1]
                break
        stack.append(i)
    return parents


def _merge_same_name_only_children(names: list[str], parents: list[int | None]) -> list[int]:
    """torch's ``EventList._remove_dup_nodes``: an event that is its parent's only child
    and has its name is dropped, its children moved up; repeated until none is left.
    Updates ``parents`` and returns the indices that remain, in order."""
    children: list[list[int]] = [[] for _ in names]
    for i, p in enumerate(parents):
        if p is not None:
            children[p].append(i)
    alive = list(range(len(names)))
    while True:
        dropped = set()
        for i in alive:
            p = parents[i]
            if p is not None and names[p] == names[i] and len(children[p]) == 1:
                children[p] = children[i]
                for c in children[i]:
                    parents[c] = p
                dropped.add(i)
        if not dropped:
            return alive
        alive = [i for i in alive if i not in dropped]


def _own_device_us(e: Any) -> float:
    """Device time of the kernels ``e`` launched itself (not its children's).

    A range (``record_function``) can have a GPU-side mirror of the same name
    (Kineto's GPU user annotation), linked to it like a kernel; it spans the
    range's kernels, which are already charged to the ops that launched them.
    """
    if getattr(e, "kernels", None) is None:
        return float(getattr(e, "self_device_time_total", 0.0) or 0.0)
    return float(sum(us for _, us in own_kernels(e)))


def own_kernels(e: Any) -> list[tuple[str, float]]:
    """The device kernels a profiler event launched itself, as (name, µs), less a
    range's GPU-side mirror (Kineto's annotation of the same name)."""
    return [
        (str(getattr(k, "name", "")), float(getattr(k, "duration", 0.0) or 0.0))
        for k in getattr(e, "kernels", None) or ()
        if str(getattr(k, "name", "")) != str(e.name)
    ]


def _device_side(e: Any) -> bool:
    return not str(getattr(e, "device_type", "CPU")).endswith("CPU") and not getattr(
        e, "is_async", False
    )


def _is_mirror(e: Any, cpu_names: set[str]) -> bool:
    """Whether a device-side event is a GPU-side mirror of a CPU range (Kineto's GPU
    user annotation), not work of its own: by its activity type where torch gives one
    (a Triton kernel has the name of Inductor's range around its launch, and is work);
    else by that name."""
    activity = str(getattr(e, "activity_type", None) or "").lower()
    if activity:
        return "annotation" in activity or bool(getattr(e, "is_user_annotation", False))
    return str(e.name) in cpu_names


def launched_kernels(function_events: Iterable[Any]) -> dict[int, list[tuple[str, float]]] | None:
    """Per CPU event (keyed by ``id()``), the device activities it launched itself, as
    (name, µs), read from the device-side events and their links as torch's own parser
    links them (a device event's ``linked_correlation_id`` is its op's id), mirrors of
    ranges left out by their activity type.  None when the events carry no activity types
    or links (older torch): then each event's own ``kernels`` are read (:func:`own_kernels`),
    where a kernel of the range's own name can only be taken for its mirror."""
    events = list(function_events)
    device = [e for e in events if _device_side(e)]
    if not device or any(
        not getattr(e, "activity_type", None) or not isinstance(
            getattr(e, "linked_correlation_id", None), int)
        for e in device
    ):
        return None
    ops: dict[int, list[Any]] = {}
    for e in events:
        if not _device_side(e) and not getattr(e, "is_async", False) and not getattr(
            e, "linked_correlation_id", 0
        ):
            ops.setdefault(int(e.id), []).append(e)
    out: dict[int, list[tuple[str, float]]] = {}
    for d in device:
        if _is_mirror(d, set()) or d.linked_correlation_id <= 0:
            continue
        us = float(d.time_range.end - d.time_range.start)
        for op in ops.get(d.linked_correlation_id, ()):
            out.setdefault(id(op), []).append((str(d.name), us))
    return out


def device_spans(function_events: Iterable[Any]) -> list[KernelSpan]:
    """Every device-side activity (kernels, copies, memsets) of a profile.

    GPU-side mirrors of CPU ranges (annotations: by activity type, or, where torch
    gives none, by the name of a CPU-side event) are not activities of their own.
    """
    events = list(function_events)
    cpu_names = {
        str(e.name) for e in events if str(getattr(e, "device_type", "CPU")).endswith("CPU")
    }
    out = []
    for e in events:
        if not _device_side(e) or _is_mirror(e, cpu_names):
            continue
        out.append(
            KernelSpan(
                float(e.time_range.start),
                float(e.time_range.end),
                int(getattr(e, "device_resource_id", 0) or 0),
                comm=str(e.name).lower().startswith(COMM_KERNELS),
            )
        )
    return out


def comm_exposed_fraction(spans: Iterable[KernelSpan], start_us: float,
                          end_us: float) -> float | None:
    """Of the collectives' kernel time in ``[start_us, end_us]``, the fraction no compute
    kernel overlapped (it lengthened the step); None when no collective kernel ran."""
    spans = list(spans)
    comm = [s for s in spans if s.comm]
    if not comm:
        return None
    comm_busy = busy_us(comm, start_us, end_us)[0]
    if comm_busy <= 0:
        return None
    both = busy_us(spans, start_us, end_us)[0]
    compute = busy_us([s for s in spans if not s.comm], start_us, end_us)[0]
    return max(0.0, min(1.0, (both - compute) / comm_busy))


def busy_us(spans: Iterable[KernelSpan], start_us: float, end_us: float) -> tuple[float, float]:
    """(union, sum) of the spans' time inside ``[start_us, end_us]``, in µs.

    The union is the time the device was busy; the sum exceeds it when
    kernels overlapped (several streams, communication beside compute).
    """
    parts = sorted(
        (max(s.start_us, start_us), min(s.end_us, end_us))
        for s in spans
        if s.end_us > start_us and s.start_us < end_us
    )
    union = total = 0.0
    cur_a = cur_b = None
    for a, b in parts:
        total += b - a
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                union += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None and cur_a is not None:
        union += cur_b - cur_a
    return union, total
