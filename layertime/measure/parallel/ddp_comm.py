"""DDP's communication hook, and the charging of a traced step's gradient all-reduce.

The hook (:class:`CommCollector`) does what DDP's default ``allreduce_hook``
does (divide the bucket by the world size, all-reduce it) and records, per
bucket and step, which layers' gradients it holds (bytes, by parameter
identity), when its all-reduce was launched and when it completed.

Charging a traced step (:func:`charge_step`, pure):

* On the training thread, DDP's work is the profiler's ``comm`` row
  (``attribute.py``): copying gradients into buckets and back, and our hook
  (dividing and launching).  It is split across layers by gradient bytes.
* The asynchronous part of each all-reduce runs from its launch to its
  completion; buckets in flight together share that busy time equally
  (:func:`partition_busy`), so the per-bucket times add up to the time
  communication was under way.  What lies after backward compute ended
  (marked by an autograd final callback queued when the last bucket is
  launched, which runs just before DDP's own wait) is *exposed*: the
  training thread waited for it.  On the CPU that wait is self time of the
  backward phase, so it is moved from ``unattributed`` to ``comm``.  The rest
  overlapped backward compute: *hidden*.
* A layer's ``comm_s`` is its byte share of each bucket holding its gradients
  plus its share of the on-thread work; ``comm_exposed_s`` the exposed part,
  which is in the layer's ``total_s``.  Hidden time is not: it overlapped
  compute that its rows already hold, so rows still add up to the step.

On CUDA the times are taken with CUDA events (GPU time) and the exposed part
is the wait after backward compute; rows there are kernel times, so the
comm kernels' own time is not added to them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.attribute import BucketCharge, CommCharge, StepCharges
from layertime.measure.parallel.health import Heartbeat
from layertime.measure.events import COMM
from layertime.modules import ModuleTable
from layertime.results.parallel.data_parallel import BucketRow


def partition_busy(
    intervals: Sequence[tuple[float, float]], split_s: float
) -> list[tuple[float, float]]:
    """Share the union of ``intervals`` among them; return (before, after ``split_s``) each.

    Each elementary segment of the timeline goes in equal parts to the
    intervals covering it, so the results add up to the union's length.
    """
    points = sorted({p for iv in intervals for p in iv} | {split_s})
    out = [[0.0, 0.0] for _ in intervals]
    for a, b in zip(points, points[1:]):
        if b <= a:
            continue
        active = [i for i, (s, e) in enumerate(intervals) if s <= a and e >= b]
        if not active:
            continue
        share = (b - a) / len(active)
        slot = 1 if a >= split_s else 0
        for i in active:
            out[i][slot] += share
    return [(x, y) for x, y in out]


@dataclass(frozen=True)
class BucketTimes:
    """One bucket's all-reduce in one step, in seconds from the step's start."""

    index: int
    bytes: int
    #: module index -> bytes of its gradients in this bucket.
    modules: dict[int, int]
    #: When the hook was entered, when the all-reduce was launched, when it completed.
    start_s: float
    launched_s: float
    done_s: float


@dataclass(frozen=True)
class StepComm:
    """A traced step's finished buckets, and when backward compute ended."""

    buckets: tuple[BucketTimes, ...]
    compute_end_s: float


def charge_step(charges: StepCharges, comm: StepComm, device_time: bool) -> StepCharges:
    """``charges`` with the step's communication added (see the module doc)."""
    recs = comm.buckets
    if not recs:
        return charges
    parts = partition_busy([(b.launched_s, b.done_s) for b in recs], comm.compute_end_s)
    # Kernel-time rows (CUDA): the all-reduce kernels overlap compute; only the
    # wait after backward is step time of ours.
    on_thread = 0.0 if device_time else charges.step.get("comm", 0.0)
    wait = sum(after for _, after in parts)
    room = charges.step.get("unattributed", 0.0) + (
        charges.step.get("comm", 0.0) if device_time else 0.0
    )
    scale = min(1.0, max(0.0, room) / wait) if wait > 0 else 0.0
    total_bytes = sum(b.bytes for b in recs) or 1
    busy: dict[int, float] = {}
    exposed: dict[int, float] = {}
    nbytes: dict[int, int] = {}
    buckets = []
    for b, (before, after) in zip(recs, parts):
        for idx, n in b.modules.items():
            f = n / b.bytes if b.bytes else 0.0
            busy[idx] = busy.get(idx, 0.0) + (before + after) * f
            exposed[idx] = exposed.get(idx, 0.0) + after * scale * f
            nbytes[idx] = nbytes.get(idx, 0) + n
        buckets.append(BucketCharge(b.index, b.bytes, dict(b.modules), b.done_s - b.start_s,
                                    before + after, after * scale))
    share = {idx: on_thread * n / total_bytes for idx, n in nbytes.items()}
    step = dict(charges.step)
    if device_time:
        step["unattributed"] = room - wait * scale
    else:
        step["unattributed"] = step.get("unattributed", 0.0) - wait * scale
    step["comm"] = on_thread + wait * scale
    return replace(
        charges,
        step=step,
        comm={i: CommCharge(busy[i] + share[i], exposed[i] + share[i]) for i in busy},
        comm_bytes=nbytes,
        buckets=buckets,
    )


def bucket_rows(charged: Sequence[StepCharges], names: dict[int, str]) -> tuple[BucketRow, ...]:
    """Mean per bucket over traced steps (DDP keeps its buckets after the first step)."""
    by_index: dict[int, list[BucketCharge]] = {}
    for c in charged:
        for b in c.buckets:
            by_index.setdefault(b.index, []).append(b)
    return tuple(
        BucketRow(
            index=i,
            bytes=int(bs[0].bytes),
            layers={names.get(m, str(m)): int(n) for m, n in bs[0].modules.items()},
            allreduce_s=statistics.fmean(b.allreduce_s for b in bs),
            comm_s=statistics.fmean(b.comm_s for b in bs),
            exposed_s=statistics.fmean(b.exposed_s for b in bs),
        )
        for i, bs in sorted(by_index.items())
    )


class _CpuClock:
    def reset(self) -> None:
        pass

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, mark: Any) -> float:
        return float(mark)


class _CudaClock:
    """GPU time: events recorded on the current stream, resolved after the step's sync."""

    def __init__(self) -> None:
        self._ref: Any = None

    def reset(self) -> None:
        self._ref = torch.cuda.Event(enable_timing=True)
        self._ref.record()

    def mark(self) -> Any:
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def seconds(self, mark: Any) -> float:
        mark.synchronize()
        return float(self._ref.elapsed_time(mark)) * 1e-3


@dataclass
class _Launch:
    """One bucket's all-reduce as the hook saw it, in its clock's marks."""

    index: int
    bytes: int
    modules: dict[int, int]
    start: Any
    launched: Any
    done: Any = None


class CommCollector:
    """DDP's communication hook, recording each bucket's all-reduce (see the module doc).

    It is the runner's ``StepSync``: it wraps the model in DDP, lines the ranks
    up before each step, and charges each traced step's communication.
    """

    def __init__(
        self, world_size: int, device: torch.device, heartbeat: Heartbeat | None = None
    ) -> None:
        self.world_size = world_size
        self.device = device
        self.heartbeat = heartbeat
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        self._clock: _CpuClock | _CudaClock = (
            _CudaClock() if device.type == "cuda" else _CpuClock()
        )
        self._owner: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._launches: list[_Launch] = []
        self._compute_end: Any = None
        #: Traced steps resolved by ``end_step`` and not yet charged, oldest first.
        self._pending: list[StepComm] = []
        self._step = 0
        #: Every traced step's charges, as returned by :meth:`charge`.
        self.charged: list[StepCharges] = []

    # StepSync ---------------------------------------------------------------
    #: DDP's buckets are known from the hook: no shapes needed.
    record_shapes = False

    def attach(self, model: nn.Module, table: ModuleTable) -> nn.Module:
        """Wrap ``model`` in DDP with our hook; layers keep the names of ``model``."""
        for e in table:
            self._names[e.index] = e.name
            for p in e.module.parameters(recurse=False):
                self._owner.setdefault(id(p), e.index)
        if not any(p.requires_grad for p in model.parameters()):
            raise LayertimeError("the model has no trainable parameters: nothing to all-reduce")
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)

        def hook(state, bucket):  # type: ignore[no-untyped-def]
            # Unannotated: DDP checks a hook's annotations, and postponed ones are strings.
            return self._hook(state, bucket)

        self.ddp.register_comm_hook(None, hook)
        return self.ddp

    def begin_step(self, traced: bool) -> None:
        # Line the ranks up before the step is timed: skew from a profiler's
        # start or a rank's event parsing would otherwise land in the first
        # collective and be charged as exposed communication.
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()
        self._launches = []
        self._compute_end = None
        self._step += 1
        self._clock.reset()
        if self.heartbeat is not None:
            self.heartbeat.mark(self._step, 0)

    def agree(self, n: int) -> int:
        """The smallest step count any rank chose (a time budget differs per rank)."""
        t = torch.tensor([n], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    def _hook(self, state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        with torch.profiler.record_function(COMM):
            start = self._clock.mark()
            if self.heartbeat is not None:
                self.heartbeat.stage = 1
            modules: dict[int, int] = {}
            for p in bucket.parameters():
                idx = self._owner.get(id(p), 0)
                modules[idx] = modules.get(idx, 0) + p.numel() * p.element_size()
            if bucket.is_last():
                # Final callbacks run in order once the graph is done; DDP
                # queues its wait for the buckets right after this one.
                torch.autograd.Variable._execution_engine.queue_callback(self._mark_compute_end)
            buf = bucket.buffer()
            buf.div_(self.world_size)
            fut = dist.all_reduce(buf, async_op=True).get_future()
            rec = _Launch(bucket.index(), sum(modules.values()), modules, start, self._clock.mark())
            self._launches.append(rec)

        def done(f: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
            rec.done = self._clock.mark()
            return f.value()[0]

        return fut.then(done)

    def _mark_compute_end(self) -> None:
        self._compute_end = self._clock.mark()

    def end_step(self) -> None:
        """Resolve this traced step's bucket times now, after its sync: the
        charges may be computed later (on CUDA, after several traced steps)."""
        self._pending.append(self._resolve())

    def _resolve(self) -> StepComm:
        """The step's finished buckets and the end of backward's compute, on the step's clock."""
        clock = self._clock
        buckets = tuple(
            BucketTimes(b.index, b.bytes, b.modules, clock.seconds(b.start),
                        clock.seconds(b.launched), clock.seconds(b.done))
            for b in self._launches
            if b.done is not None
        )
        if not buckets:
            return StepComm((), 0.0)
        end = (
            clock.seconds(self._compute_end)
            if self._compute_end is not None
            else max(b.launched_s for b in buckets)
        )
        return StepComm(buckets, end)

    def charge(self, charges: StepCharges, device_time: bool) -> StepCharges:
        """Add a traced step's communication to ``charges`` (see the module doc);
        steps are charged in the order :meth:`end_step` saw them."""
        comm = self._pending.pop(0) if self._pending else self._resolve()
        out = charge_step(charges, comm, device_time)
        if comm.buckets:
            self.charged.append(out)
        return out

    def bucket_rows(self) -> tuple[BucketRow, ...]:
        """Mean per bucket over traced steps, named by layer."""
        return bucket_rows(self.charged, self._names)
