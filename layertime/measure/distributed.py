"""Data-parallel profiling: every rank of a DDP run profiles its own steps.

torchrun (``torch.distributed.run``) starts the ranks; each one runs the
single-process profile (``runner.measure``) with the model wrapped in
``DistributedDataParallel`` and a :class:`CommCollector` registered as DDP's
communication hook.  The hook does what DDP's default ``allreduce_hook``
does (divide the bucket by the world size, all-reduce it) and records, per
bucket and step, which layers' gradients it holds (bytes, by parameter
identity), when its all-reduce was launched and when it completed.

Charging a traced step (``CommCollector.charge``):

* On the training thread, DDP's work is the profiler's ``comm`` row
  (``attribute.py``): copying gradients into buckets and back, and our hook
  (dividing and launching).  It is split across layers by gradient bytes.
* The asynchronous part of each all-reduce runs from its launch to its
  completion; buckets in flight together share that busy time equally, so the
  per-bucket times add up to the time communication was under way.  What lies
  after backward compute ended (marked by an autograd final callback queued
  when the last bucket is launched, which runs just before DDP's own wait) is
  *exposed*: the training thread waited for it.  On the CPU that wait is self
  time of the backward phase, so it is moved from ``unattributed`` to ``comm``.
  The rest overlapped backward compute: *hidden*.
* A layer's ``comm_s`` is its byte share of each bucket holding its gradients
  plus its share of the on-thread work; ``comm_exposed_s`` the exposed part,
  which is in the layer's ``total_s``.  Hidden time is not: it overlapped
  compute that its rows already hold, so rows still add up to the step.

On CUDA the times are taken with CUDA events (GPU time) and the exposed part
is the wait after backward compute; rows there are kernel times, so the
comm kernels' own time is not added to them.

After measuring, each rank times two all-reduces outside any step (the
link's latency and bandwidth in the ring model), then rank 0 gathers every
rank's run and merges them (:func:`merge_ranks`): rows are means over ranks,
``ranks`` keeps each rank's step, compute and exposed communication, so a
straggler (the rank the others wait for) is visible.

Failures: the process group has a bounded timeout; a heartbeat thread
publishes each rank's progress in torchrun's store, so a rank whose
collective fails can say which rank died (heartbeat stopped) or hung
(behind it).  Under ``layertime profile --nproc`` (``launch.py``) each rank
also writes a small status file the launcher reads.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.attribute import StepCharges
from layertime.measure.events import COMM
from layertime.measure.runner import MeasureOptions, ProgressFn, measure, prepare
from layertime.measure.tracer import ModuleTable
from layertime.result import (
    BucketRow,
    LayerRow,
    LinkEstimate,
    Phases,
    RankRow,
    Run,
    write_text_atomic,
)

#: Set by the ``--nproc`` launcher: a folder where each rank writes ``rank<N>.json``.
STATUS_DIR_ENV = "LAYERTIME_DDP_STATUS_DIR"
#: Seconds between heartbeats in the store.
HEARTBEAT_S = 0.5
#: Stages of a step, in order, for "which rank is behind".
STAGES = ("computing", "in the gradient all-reduce")
#: Tensor sizes of the link measurement: one element, and DDP's bucket cap (25 MiB).
LINK_SMALL_BYTES = 4
LINK_LARGE_BYTES = 25 * 1024 * 1024


# -- time partition (pure) ---------------------------------------------------


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


# -- the collector ----------------------------------------------------------


@dataclass
class _Bucket:
    """One bucket's all-reduce in one step, as the hook saw it."""

    index: int
    bytes: int
    #: module index -> bytes of its gradients in this bucket
    modules: dict[int, int]
    start: Any
    launched: Any
    done: Any = None


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


class Heartbeat:
    """This rank's progress (step, stage) published in the rendezvous store by a daemon thread.

    A rank whose collective fails reads everyone's heartbeat twice: a rank
    whose count did not move is dead; one behind in (step, stage) hung.
    """

    def __init__(self, store: Any, rank: int, world_size: int, status: StatusFile | None) -> None:
        self._store = store
        self.rank = rank
        self.world_size = world_size
        self._status = status
        self.step = 0
        self.stage = 0
        self._beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="layertime-heartbeat", daemon=True)

    def start(self) -> None:
        self._publish()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def mark(self, step: int, stage: int) -> None:
        """Where this rank is now (the status file is written at once, the store at the next beat)."""
        self.step, self.stage = step, stage
        if self._status is not None:
            self._status.progress(step, stage)

    def _publish(self) -> None:
        self._beats += 1
        value = json.dumps({"beats": self._beats, "step": self.step, "stage": self.stage})
        try:
            self._store.set(f"layertime/heartbeat/{self.rank}", value)
        except Exception:  # the store is gone: the launcher will say why
            pass
        if self._status is not None:
            self._status.progress(self.step, self.stage)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._publish()

    def read(self) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {}
        for r in range(self.world_size):
            key = f"layertime/heartbeat/{r}"
            try:
                if self._store.check([key]):
                    out[r] = json.loads(self._store.get(key))
            except Exception:
                pass
        return out


class CommCollector:
    """DDP's communication hook, recording each bucket's all-reduce (see the module doc)."""

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
        self._buckets: list[_Bucket] = []
        self._compute_end: Any = None
        self._pending: list[
            tuple[list[_Bucket], list[tuple[float, float]], list[float], float]
        ] = []
        self._step = 0
        #: Every traced step's charges, as returned by :meth:`charge`.
        self.charged: list[StepCharges] = []

    # StepSync ---------------------------------------------------------------
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
        self._buckets = []
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
            rec = _Bucket(
                bucket.index(), sum(modules.values()), modules, start, self._clock.mark()
            )
            self._buckets.append(rec)

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

    def _resolve(self) -> tuple[list[_Bucket], list[tuple[float, float]], list[float], float]:
        """The step's finished buckets, their (launched, done) and start seconds, and
        when backward's compute ended, on the step's clock."""
        recs = [b for b in self._buckets if b.done is not None]
        if not recs:
            return [], [], [], 0.0
        clock = self._clock
        spans = [(clock.seconds(b.launched), clock.seconds(b.done)) for b in recs]
        starts = [clock.seconds(b.start) for b in recs]
        end = (
            clock.seconds(self._compute_end)
            if self._compute_end is not None
            else max(s for s, _ in spans)
        )
        return recs, spans, starts, end

    def charge(self, charges: StepCharges, device_time: bool) -> StepCharges:
        """Add a traced step's communication to ``charges`` (see the module doc);
        steps are charged in the order :meth:`end_step` saw them."""
        recs, spans, starts, end = self._pending.pop(0) if self._pending else self._resolve()
        if not recs:
            return charges
        parts = partition_busy(spans, end)
        on_thread = charges.step.get("comm", 0.0)
        if device_time:
            # Kernel-time rows: the all-reduce kernels overlap compute; only the
            # wait after backward is step time of ours.
            on_thread = 0.0
        wait = sum(after for _, after in parts)
        room = charges.step.get("unattributed", 0.0) + (
            charges.step.get("comm", 0.0) if device_time else 0.0
        )
        scale = min(1.0, max(0.0, room) / wait) if wait > 0 else 0.0
        total_bytes = sum(b.bytes for b in recs) or 1
        comm: dict[int, list[float]] = {}
        nbytes: dict[int, int] = {}
        buckets = []
        for b, (before, after), (s, e), b_start in zip(recs, parts, spans, starts):
            exposed = after * scale
            for idx, n in b.modules.items():
                f = n / b.bytes if b.bytes else 0.0
                c = comm.setdefault(idx, [0.0, 0.0])
                c[0] += (before + after) * f
                c[1] += exposed * f
                nbytes[idx] = nbytes.get(idx, 0) + n
            allreduce = e - b_start
            buckets.append((b.index, b.bytes, dict(b.modules), allreduce, before + after, exposed))
        for idx, n in nbytes.items():
            c = comm[idx]
            c[0] += on_thread * n / total_bytes
            c[1] += on_thread * n / total_bytes
        exposed_total = on_thread + wait * scale
        step = dict(charges.step)
        if device_time:
            step["unattributed"] = room - wait * scale
        else:
            step["unattributed"] = step.get("unattributed", 0.0) - wait * scale
        step["comm"] = exposed_total
        out = replace(
            charges,
            step=step,
            comm={i: (c[0], c[1]) for i, c in comm.items()},
            comm_bytes=nbytes,
            buckets=buckets,
        )
        self.charged.append(out)
        return out

    def bucket_rows(self) -> tuple[BucketRow, ...]:
        """Mean per bucket over traced steps (DDP keeps its buckets after the first step)."""
        acc: dict[int, list[Any]] = {}
        for c in self.charged:
            for index, nbytes, modules, allreduce, busy, exposed in c.buckets:
                a = acc.setdefault(index, [nbytes, modules, [], [], []])
                a[2].append(allreduce)
                a[3].append(busy)
                a[4].append(exposed)
        return tuple(
            BucketRow(
                index=i,
                bytes=int(a[0]),
                layers={self._names.get(m, str(m)): int(n) for m, n in a[1].items()},
                allreduce_s=statistics.fmean(a[2]),
                comm_s=statistics.fmean(a[3]),
                exposed_s=statistics.fmean(a[4]),
            )
            for i, a in sorted(acc.items())
        )


# -- link measurement ---------------------------------------------------------


def _time_allreduce(t: torch.Tensor, reps: int) -> float:
    times = []
    for _ in range(reps):
        dist.barrier()
        if t.is_cuda:
            torch.cuda.synchronize(t.device)
        t0 = time.perf_counter()
        dist.all_reduce(t)
        if t.is_cuda:
            torch.cuda.synchronize(t.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_link(world_size: int, device: torch.device, reps: int = 5) -> LinkEstimate | None:
    """Latency and bandwidth of an all-reduce, fitted to the ring model from two sizes.

    ``t(B) = 2(N-1)/N x B / bandwidth + 2(N-1) x latency``: a one-element
    all-reduce gives the latency, a 25 MiB one (DDP's bucket cap) the bandwidth.
    """
    if world_size < 2:
        return None
    small = torch.zeros(LINK_SMALL_BYTES // 4, dtype=torch.float32, device=device)
    large = torch.zeros(LINK_LARGE_BYTES // 4, dtype=torch.float32, device=device)
    _time_allreduce(small, 2)
    _time_allreduce(large, 1)
    t_small = _time_allreduce(small, reps)
    t_large = _time_allreduce(large, max(2, reps // 2))
    n = world_size
    latency = t_small / (2 * (n - 1))
    moved = 2 * (n - 1) / n * (LINK_LARGE_BYTES - LINK_SMALL_BYTES)
    bw_bytes = moved / max(t_large - t_small, 1e-9)
    return LinkEstimate(
        bandwidth_gbps=bw_bytes * 8 / 1e9,
        latency_us=latency * 1e6,
        method=(
            f"all-reduce of {LINK_SMALL_BYTES} B and {LINK_LARGE_BYTES // 2**20} MiB "
            f"outside any step, median of {reps}, fitted to the ring model"
        ),
    )


# -- merging ranks (pure) -----------------------------------------------------


def _fmean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else 0.0


def merge_ranks(
    runs: Sequence[Run], *, backend: str | None = None, link: LinkEstimate | None = None
) -> Run:
    """One run from every rank's: rows, phases and samples are means over ranks.

    Means keep the rows adding up (each rank's do).  ``ranks`` keeps every
    rank's step, compute and communication; ``rank_spread_s`` of a layer is
    the max minus min of its ``total_s`` over ranks.
    """
    if not runs:
        raise ValueError("no ranks to merge")
    first = runs[0]
    names = [r.name for r in first.layers]
    for i, run in enumerate(runs[1:], start=1):
        if [r.name for r in run.layers] != names:
            raise LayertimeError(f"rank {i} profiled different layers than rank 0")
    layers = []
    for j, base in enumerate(first.layers):
        rows = [run.layers[j] for run in runs]
        layers.append(
            replace(
                base,
                forward_s=_fmean([r.forward_s for r in rows]),
                backward_s=_fmean([r.backward_s for r in rows]),
                update_s=_fmean([r.update_s for r in rows]),
                calls=_fmean([r.calls for r in rows]),
                spread_s=_fmean([r.spread_s for r in rows]),
                comm_s=_fmean([r.comm_s for r in rows]),
                comm_exposed_s=_fmean([r.comm_exposed_s for r in rows]),
                rank_spread_s=max(r.total_s for r in rows) - min(r.total_s for r in rows),
            )
        )
    phase_names = list(Phases.__dataclass_fields__)
    phases = Phases(
        **{k: _fmean([getattr(run.phases, k) for run in runs]) for k in phase_names}
    )
    spread = {
        k: _fmean([run.phase_spread_s.get(k, 0.0) for run in runs]) for k in first.phase_spread_s
    }
    n_plain = min(len(run.step_samples_s) for run in runs)
    n_traced = min(len(run.profiled_step_samples_s) for run in runs)
    buckets = []
    for j, b in enumerate(first.buckets):
        same = [run.buckets[j] for run in runs if len(run.buckets) > j]
        buckets.append(
            replace(
                b,
                allreduce_s=_fmean([x.allreduce_s for x in same]),
                comm_s=_fmean([x.comm_s for x in same]),
                exposed_s=_fmean([x.exposed_s for x in same]),
            )
        )
    compute = [run.profiled_step_s - run.phases.comm_exposed_s for run in runs]
    ranks = tuple(
        RankRow(
            rank=i,
            host=run.environment.host,
            step_s=run.step_s,
            profiled_step_s=run.profiled_step_s,
            compute_s=compute[i],
            comm_s=run.comm_s,
            comm_exposed_s=run.phases.comm_exposed_s,
            wait_s=min(run.phases.comm_exposed_s, max(compute) - compute[i]),
        )
        for i, run in enumerate(runs)
    )
    warnings = list(dict.fromkeys(w for run in runs for w in run.warnings))
    straggler = _straggler(ranks)
    if straggler:
        warnings.append(straggler)
    return replace(
        first,
        step_samples_s=tuple(
            _fmean([run.step_samples_s[i] for run in runs]) for i in range(n_plain)
        ),
        profiled_step_samples_s=tuple(
            _fmean([run.profiled_step_samples_s[i] for run in runs]) for i in range(n_traced)
        ),
        traced_step_samples_s=tuple(
            _fmean([run.traced_step_samples_s[i] for run in runs]) for i in range(n_traced)
        ) if all(len(run.traced_step_samples_s) >= n_traced for run in runs) else (),
        layers=tuple(layers),
        phases=phases,
        phase_spread_s=spread,
        warnings=tuple(warnings),
        world_size=len(runs),
        backend=backend if backend is not None else first.backend,
        ranks=ranks,
        buckets=tuple(buckets),
        link=link if link is not None else first.link,
    )


#: A rank whose compute exceeds the fastest rank's by this much is called a straggler.
STRAGGLER_RATIO = 1.2


def _straggler(ranks: Sequence[RankRow]) -> str | None:
    if len(ranks) < 2:
        return None
    slow = max(ranks, key=lambda r: r.compute_s)
    fast = min(ranks, key=lambda r: r.compute_s)
    if fast.compute_s > 0 and slow.compute_s > STRAGGLER_RATIO * fast.compute_s:
        return (
            f"rank {slow.rank} ({slow.host}) computes {slow.compute_s / fast.compute_s - 1:.0%} "
            f"longer than rank {fast.rank}: the other ranks wait for it in the all-reduce"
        )
    return None


# -- status files for the launcher ------------------------------------------------


class StatusFile:
    """``rank<N>.json`` in the launcher's folder: pid, state, progress, error."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = folder / f"rank{rank}.json"
        self.data: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "state": "running"}
        self._lock = threading.Lock()
        self._last: tuple[int, int] | None = None

    @classmethod
    def from_env(cls, rank: int) -> StatusFile | None:
        folder = os.environ.get(STATUS_DIR_ENV)
        return cls(Path(folder), rank) if folder else None

    def write(self, **fields: Any) -> None:
        with self._lock:
            self.data.update(fields)
            try:
                write_text_atomic(self.path, json.dumps(self.data))
            except LayertimeError:
                pass

    def progress(self, step: int, stage: int) -> None:
        if self._last != (step, stage):
            self._last = (step, stage)
            self.write(step=step, stage=stage)


# -- one rank's profile ---------------------------------------------------------------


@dataclass(frozen=True)
class RankEnv:
    """What torchrun tells a worker."""

    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> RankEnv:
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise LayertimeError(
                "--ddp runs under torchrun (torchrun --nproc-per-node 2 -m layertime profile "
                "MODEL --ddp), or use --nproc N to start the ranks on this machine"
            )
        try:
            return cls(
                int(os.environ["RANK"]),
                int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", "0")),
            )
        except ValueError as e:
            raise LayertimeError(f"bad torchrun environment: {e}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _is_comm_failure(e: BaseException) -> bool:
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "socket", "peer")
    )


def explain_failure(
    e: BaseException, heartbeat: Heartbeat | None, rank: int, timeout_s: float
) -> str:
    """One line naming the rank that died or hung, from the heartbeats, when it can."""
    what = _first_line(e)
    if heartbeat is None:
        return f"rank {rank}: communication failed: {what}"
    me = (heartbeat.step, heartbeat.stage)
    first = heartbeat.read()
    time.sleep(3 * HEARTBEAT_S)
    second = heartbeat.read()
    others = [r for r in range(heartbeat.world_size) if r != rank]
    dead = [
        r for r in others
        if r not in second or second[r].get("beats") == first.get(r, {}).get("beats")
    ]
    if dead:
        r = dead[0]
        step = second.get(r, {}).get("step")
        during = f" during step {step}" if step else ""
        return (
            f"rank {r} died{during} (its heartbeat stopped); rank {rank} lost it: {what}"
        )
    behind = [
        r for r in others if (second[r].get("step", 0), second[r].get("stage", 0)) < me
    ]
    if behind:
        r = behind[0]
        st = second[r]
        stage = STAGES[st.get("stage", 0)] if st.get("stage", 0) < len(STAGES) else "?"
        return (
            f"rank {r} stopped responding in step {st.get('step')} ({stage}); rank {rank} "
            f"gave up after the {timeout_s:g} s timeout (--ddp-timeout)"
        )
    return f"rank {rank}: communication failed in step {me[0]}: {what}"


def _resolve_device(device: str, local_rank: int) -> str:
    if device == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{local_rank}"
    return device


def profile_ddp(
    model: str | nn.Module,
    *,
    batch_size: int = 128,
    input_shape: Sequence[int] | None = None,
    image_size: int | None = None,
    num_classes: int = 1000,
    device: str = "auto",
    optimizer: str = "sgd",
    dtype: str = "float32",
    amp: str | None = None,
    steps: int = 3,
    warmup_steps: int = 1,
    time_budget_s: float | None = None,
    max_steps: int = 50,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
    backend: str = "auto",
    timeout_s: float = 120.0,
    seq_len: int | None = None,
    hf_config: Sequence[str] = (),
) -> Run | None:
    """Profile this rank of a torchrun job; rank 0 returns the merged run, others None.

    ``batch_size`` is per rank.  ``backend`` is gloo or nccl (auto: nccl on
    CUDA, gloo on the CPU); ``timeout_s`` bounds every collective, so a rank
    that hangs fails the run.  Raises :class:`LayertimeError` with one line
    that names the failed rank.
    """
    env = RankEnv.from_env()
    if not timeout_s > 0:
        raise LayertimeError(f"--ddp-timeout must be > 0 seconds, not {timeout_s}")
    status = StatusFile.from_env(env.rank)
    if status is not None:
        status.write(state="running")
    options = MeasureOptions(
        steps=steps, warmup_steps=warmup_steps, time_budget_s=time_budget_s, max_steps=max_steps
    )
    heartbeat: Heartbeat | None = None
    try:
        p = prepare(
            model,
            batch_size=batch_size,
            input_shape=input_shape,
            image_size=image_size,
            num_classes=num_classes,
            device=_resolve_device(device, env.local_rank),
            optimizer=optimizer,
            dtype=dtype,
            amp=amp,
            seed=seed,
            seq_len=seq_len,
            hf_config=hf_config,
        )
        name = backend if backend != "auto" else ("nccl" if p.device.type == "cuda" else "gloo")
        if name not in ("gloo", "nccl"):
            raise LayertimeError(f"unknown backend {backend!r} (choose gloo or nccl)")
        if name == "nccl" and p.device.type != "cuda":
            raise LayertimeError("the nccl backend needs --device cuda")
        if p.device.type == "cuda":
            torch.cuda.set_device(p.device)
        dist.init_process_group(name, timeout=_dt.timedelta(seconds=timeout_s))
        try:
            store = dist.distributed_c10d._get_default_store()
        except Exception:
            store = None
        if store is not None:
            heartbeat = Heartbeat(store, env.rank, env.world_size, status)
            heartbeat.start()
        collector = CommCollector(env.world_size, p.device, heartbeat)
        run = measure(
            p.model,
            p.config,
            p.device,
            label=p.label,
            options=options,
            on_progress=on_progress if env.rank == 0 else None,
            sync=collector,
        )
        run = replace(run, buckets=collector.bucket_rows())
        link = measure_link(env.world_size, p.device)
        gathered: list[Any] | None = [None] * env.world_size if env.rank == 0 else None
        dist.gather_object(run, gathered, dst=0)
        result = (
            merge_ranks([r for r in gathered if r is not None], backend=name, link=link)
            if gathered is not None
            else None
        )
        if result is not None and len(result.ranks) != env.world_size:
            raise LayertimeError(f"gathered {len(result.ranks)} of {env.world_size} ranks")
    except LayertimeError as e:
        if status is not None:
            status.write(state="error", comm=False, message=str(e))
        raise LayertimeError(f"rank {env.rank}: {e}") from e
    except Exception as e:
        if not _is_comm_failure(e):
            if status is not None:
                status.write(state="error", comm=False, message=f"{type(e).__name__}: {_first_line(e)}")
            raise
        message = explain_failure(e, heartbeat, env.rank, timeout_s)
        if status is not None:
            status.write(state="error", comm=True, message=message)
        raise LayertimeError(message) from e
    finally:
        if heartbeat is not None:
            heartbeat.stop()
    if status is not None:
        status.write(state="ok")
    dist.destroy_process_group()
    return result
