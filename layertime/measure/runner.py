"""Profile a model's training step: warm up, then plain and traced steps.

Plain (unprofiled) steps give the true step time; traced steps give the
per-layer rows; their ratio is the profiler's own overhead.  On the CPU the
two alternate, each traced step in a profiler session of its own, so both
see the same machine conditions.  On CUDA every plain step runs first, then
every traced step in one profiler session (CUPTI's start and teardown
between sessions is slow and fragile); each step is synchronised once at its
end (never per layer), layer times are the GPU kernel times the profiler maps
to each layer's ops, and ``unattributed`` is the GPU's idle time in the
unprofiled step (see :func:`_idle_from_plain`).
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from layertime.environment import describe
from layertime.errors import LayertimeError
from layertime.kinds import KindObserver
from layertime.measure.aggregate import aggregate, shared_notes, timeline
from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.compiled import (
    CompiledCollector,
    CompiledTraceSession,
    CompileOptions,
    collecting,
)
from layertime.measure.events import busy_us
from layertime.measure.tracer import ModuleTable, TraceSession
from layertime.models import target
from layertime.result import Run
from layertime.workload import (
    DTYPES,
    Workload,
    WorkloadConfig,
    check_input,
    is_out_of_memory,
    out_of_memory,
    resolve_device,
    training_mode,
)

#: on_progress(stage, done, total): stage is "warmup" or "measure".
ProgressFn = Callable[[str, int, int], None]
#: At most this many extra warm-up steps for fp16 loss scaling to settle.
MAX_SCALER_WARMUP = 20
#: On CUDA, at least this many unprofiled steps (see measure()).
MIN_CUDA_PLAIN_STEPS = 10


class StepSync(Protocol):
    """What a data-parallel collector (``distributed.CommCollector``) adds to a run:
    the model the step runs (DDP around the measured one), a mark before each
    step, the communication charged into a traced step, agreement on counts."""

    def attach(self, model: nn.Module, table: ModuleTable) -> nn.Module: ...

    def begin_step(self, traced: bool) -> None: ...

    def end_step(self) -> None: ...

    def charge(self, charges: StepCharges, device_time: bool) -> StepCharges: ...

    def agree(self, n: int) -> int: ...


@dataclass(frozen=True)
class MeasureOptions:
    """How many steps to run; ``time_budget_s`` overrides ``steps`` when given."""

    steps: int = 3
    warmup_steps: int = 1
    time_budget_s: float | None = None
    max_steps: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise LayertimeError(f"steps must be at least 1, not {self.steps}")
        if self.warmup_steps < 0:
            raise LayertimeError(f"warmup steps must be >= 0, not {self.warmup_steps}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise LayertimeError(f"time budget must be > 0 seconds, not {self.time_budget_s}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plain_step(work: Workload, sync: StepSync | None = None) -> tuple[float, torch.Tensor]:
    if sync is not None:
        sync.begin_step(traced=False)
    _sync(work.device)
    t0 = time.perf_counter()
    loss = work.step(traced=False)
    _sync(work.device)
    return time.perf_counter() - t0, loss


def _charge(
    work: Workload,
    session: TraceSession | CompiledTraceSession,
    walls: Sequence[float],
    sync: StepSync | None,
    compiled: CompiledCollector | None = None,
) -> list[StepCharges]:
    """Attribute each traced step of a stopped session (one group per step range)."""
    groups = split_steps(session.events)
    if len(groups) != len(walls):
        raise LayertimeError(f"expected {len(walls)} traced step(s), found {len(groups)}")
    cuda = work.device.type == "cuda"
    out = []
    for (step, members), wall in zip(groups, walls):
        if isinstance(session, CompiledTraceSession):
            assert compiled is not None
            charges = compiled.attribute(
                session, step, members, device_time=cuda, step_wall_s=wall if cuda else None
            )
        else:
            busy = None
            if cuda:
                busy = busy_us(session.kernels, step.start_us, step.end_us)[0] * 1e-6
            charges = attribute_step(
                step, members, device_time=cuda, step_wall_s=wall if cuda else None,
                device_busy_s=busy,
            )
        if sync is not None:
            charges = sync.charge(charges, cuda)
        out.append(charges)
    return out


def _timed_in_session(
    work: Workload, session: TraceSession | CompiledTraceSession, sync: StepSync | None
) -> tuple[float, torch.Tensor]:
    """One traced step inside a started session: (synchronised wall time, loss)."""
    if sync is not None:
        sync.begin_step(traced=True)
    _sync(work.device)
    t0 = time.perf_counter()
    session.enter_step()
    loss = work.step(traced=True)
    _sync(work.device)
    session.exit_step()
    wall = time.perf_counter() - t0
    if sync is not None:
        sync.end_step()
    return wall, loss


def _traced_step(
    work: Workload,
    table: ModuleTable,
    sync: StepSync | None = None,
    compiled: CompiledCollector | None = None,
) -> tuple[StepCharges, torch.Tensor]:
    """One traced step in a profiler session of its own (the CPU path, and compiled models)."""
    session: TraceSession | CompiledTraceSession = (
        compiled.session() if compiled is not None else TraceSession(table, work.device)
    )
    _sync(work.device)
    session.start()
    try:
        wall, loss = _timed_in_session(work, session, sync)
    except BaseException:
        session.abort()
        raise
    session.stop()
    return _charge(work, session, [wall], sync, compiled)[0], loss


def _traced_steps(
    work: Workload, table: ModuleTable, n: int, sync: StepSync | None = None
) -> tuple[list[StepCharges], list[torch.Tensor], int]:
    """``n`` traced steps in one profiler session (the CUDA path).

    One session rather than one per step: CUPTI's set-up and teardown
    between sessions that follow each other closely is slow and fragile
    (known crashes and races), and without teardown later steps run
    slower.  One unmeasured step runs first inside the session, so
    CUPTI's lazy start-up is not charged to a measured step.  Returns the
    charges, the losses and how many updates fp16 loss scaling skipped.
    """
    session = TraceSession(table, work.device)
    _sync(work.device)
    session.start()
    walls: list[float] = []
    losses: list[torch.Tensor] = []
    skipped = 0
    try:
        _plain_step(work, sync)
        work.update_skipped()
        for _ in range(n):
            wall, loss = _timed_in_session(work, session, sync)
            walls.append(wall)
            losses.append(loss)
            skipped += work.update_skipped()
    except BaseException:
        session.abort()
        raise
    session.stop()
    return _charge(work, session, walls, sync), losses, skipped


def _warm_up(
    work: Workload, steps: int, progress: ProgressFn, sync: StepSync | None
) -> list[float]:
    """Untimed steps: autotuning, allocator growth, and with fp16 loss scaling,
    until the scale settles (GradScaler starts at 65536 and skips the update of
    every step whose gradients overflow).  Returns the warm-up steps' times."""
    times = []
    for i in range(steps):
        progress("warmup", i, steps)
        times.append(_plain_step(work, sync)[0])
        work.update_skipped()
    if work.scaler is not None:
        # A fresh scaler may need a few halvings; stop at the first step that
        # updated (or after MAX_SCALER_WARMUP, and the run reports what it saw).
        for _ in range(MAX_SCALER_WARMUP):
            _plain_step(work, sync)
            if not work.update_skipped():
                break
    progress("warmup", steps, steps)
    return times


def _idle_from_plain(traced: Sequence[StepCharges], plain_s: float) -> None:
    """On CUDA, make ``unattributed`` the GPU's idle time in the *unprofiled* step.

    A traced step's kernels run as they do unprofiled, but its wall time
    also holds the profiler's and the hooks' host-side delay: when launching
    is the bottleneck, the GPU waits for it, and charging that wait to the
    step would shrink every layer's share.  So each traced step keeps its
    kernel rows, and its idle row becomes the median unprofiled step less
    those kernels (never below zero); the delay shows as the overhead ratio.
    """
    for c in traced:
        # Kernels of ops in no owned range stay unattributed, beside the idle time.
        kernel_s = c.total_s() - c.step.get("unattributed", 0.0) + c.unowned_s
        c.step["unattributed"] = c.unowned_s + max(0.0, plain_s - kernel_s)
        c.step_s = kernel_s + max(0.0, plain_s - kernel_s)


#: Warn when kernels overlap, or exceed the unprofiled step, by more than this share.
_WARN_SHARE = 0.01


def _device_time_warnings(traced: Sequence[StepCharges], plain_s: float) -> list[str]:
    """What the reader must know about CUDA rows: overlapped kernels, slower kernels."""
    out = []
    n = max(1, len(traced))
    overlap = sum(c.overlap_s for c in traced) / n
    step = sum(c.step_s for c in traced) / n
    if overlap > _WARN_SHARE * step:
        out.append(
            f"kernels overlapped on several streams for {overlap * 1e3:.3g} ms per step; "
            "rows are scaled to the device's busy time"
        )
    kernel = sum(c.total_s() - c.step.get("unattributed", 0.0) + c.unowned_s for c in traced) / n
    if plain_s > 0 and kernel > (1 + _WARN_SHARE) * plain_s:
        out.append(
            f"traced steps' kernels took {kernel * 1e3:.3g} ms, more than the unprofiled step "
            f"({plain_s * 1e3:.3g} ms): kernels ran slower while profiled"
        )
    return out


def measure(
    model: nn.Module,
    config: WorkloadConfig,
    device: torch.device,
    *,
    label: str,
    options: MeasureOptions = MeasureOptions(),
    on_progress: ProgressFn | None = None,
    sync: StepSync | None = None,
    compile: CompileOptions | CompiledCollector | None = None,  # noqa: A002 (its natural name)
) -> Run:
    """Profile ``model`` (already on ``device``) under ``config``.

    ``sync`` makes it one rank of a data-parallel run (``distributed.py``).
    ``compile`` runs ``torch.compile(model)`` instead, its kernels charged to
    the layers they came from (``compiled.py``); warm-up then lasts until a
    step compiles nothing, and a measured step that compiles is dropped.  A
    ready :class:`CompiledCollector` (built on ``model`` and ``ModuleTable(model)``)
    may be given instead of options, to see its per-step findings afterwards.
    Compiled steps are traced one profiler session each, on CUDA too.
    """
    progress = on_progress or (lambda stage, done, total: None)
    # The validating forward is also watched, so that kinds follow what each
    # layer computes (layertime.kinds).
    with KindObserver(model) as watched:
        output_shape = check_input(model, config, device, label)
    table = ModuleTable(model, watched.kinds())
    cuda = device.type == "cuda"
    plain: list[float] = []
    traced: list[StepCharges] = []
    losses: list[torch.Tensor] = []
    warm_times: list[float] = []
    skipped = 0
    if compile is not None and sync is not None:
        raise LayertimeError("--compile is not supported with data-parallel runs yet")
    compiled = (
        CompiledCollector.for_options(model, table, device, compile)
        if isinstance(compile, CompileOptions)
        else compile
    )
    with training_mode(model), collecting(compiled):
        try:
            stepped = sync.attach(model, table) if sync is not None else model
            if compiled is not None:
                stepped = compiled.wrapper
            work = Workload(stepped, config, device, output_shape)
            if compiled is not None:
                warm_times = compiled.warm_up(
                    lambda: _plain_step(work, sync)[0],
                    options.warmup_steps,
                    lambda i: progress("warmup", i, max(options.warmup_steps, i + 1)),
                )
            else:
                warm_times = _warm_up(work, options.warmup_steps, progress, sync)
            n = options.steps
            if options.time_budget_s is not None:
                per_pair = 2 * (min(warm_times) if warm_times else 1.0)
                n = max(1, min(options.max_steps, int(options.time_budget_s // per_pair)))
            if sync is not None:
                n = sync.agree(n)
            if cuda and compiled is None:
                # Every plain step before any profiler session (a session can
                # leave CUPTI attached, which slows later steps), then every
                # traced step in one session.  Plain steps are cheap here and
                # their median is every row's reference (the idle time), so
                # take at least MIN_CUDA_PLAIN_STEPS of them.
                n_plain = max(n, MIN_CUDA_PLAIN_STEPS)
                for i in range(n_plain):
                    progress("measure", i, n_plain + n)
                    dt, loss = _plain_step(work, sync)
                    plain.append(dt)
                    losses.append(loss)
                    skipped += work.update_skipped()
                progress("measure", n_plain, n_plain + n)
                charges_list, traced_losses, more = _traced_steps(work, table, n, sync)
                traced.extend(charges_list)
                losses.extend(traced_losses)
                skipped += more
            else:
                # An empty session starts the profiler's own machinery (outside
                # any timed step) so the first traced step is not charged.
                idle: TraceSession | CompiledTraceSession = (
                    compiled.session() if compiled is not None else TraceSession(table, device)
                )
                idle.start()
                idle.abort()
                for i in range(n):
                    # Alternate which of the pair goes first, so a drift in the
                    # machine's speed does not favour either kind of step.
                    for j, traced_turn in enumerate((i % 2 == 1, i % 2 == 0)):
                        progress("measure", 2 * i + j, 2 * n)
                        if traced_turn:
                            charges, loss = _traced_step(work, table, sync, compiled)
                            if compiled is None or compiled.keep_step():
                                traced.append(charges)
                            else:
                                compiled.forget_last()
                        else:
                            dt, loss = _plain_step(work, sync)
                            if compiled is None or compiled.keep_step(dt):
                                plain.append(dt)
                        losses.append(loss)
            progress("measure", 2 * n, 2 * n)
            nan_steps = sum(int(not bool(torch.isfinite(loss).all())) for loss in losses)
        except LayertimeError:
            raise
        except Exception as e:
            if is_out_of_memory(e):
                raise out_of_memory(e, config.batch_size, device) from e
            raise
    if not traced:
        raise LayertimeError("every measured step compiled again: no steady step to report")
    walls: tuple[float, ...] = ()
    if cuda and compiled is None:
        walls = tuple(c.step_s for c in traced)
        _idle_from_plain(traced, statistics.median(plain))
    layers, phases, spread, samples = aggregate(table, traced)
    warnings = []
    if nan_steps:
        warnings.append(f"the loss was NaN or infinite in {nan_steps} of {len(losses)} steps")
    if skipped:
        warnings.append(
            f"fp16 loss scaling skipped the optimizer update in {skipped} of {len(losses)} "
            "measured steps (gradients overflowed)"
        )
    if cuda and compiled is None:
        warnings.extend(_device_time_warnings(traced, statistics.median(plain)))
    run = Run(
        model=label,
        device=str(device),
        batch_size=config.batch_size,
        input_shape=tuple(config.input_shape),
        dtype=config.dtype,
        optimizer=config.optimizer,
        steps=len(traced),
        warmup_steps=len(warm_times),
        step_samples_s=tuple(plain),
        profiled_step_samples_s=samples,
        layers=layers,
        phases=phases,
        environment=describe(device),
        timing="cuda-kernel-time" if device.type == "cuda" else "cpu-self-time",
        amp=config.amp,
        num_classes=(int(output_shape[1]) or None) if config.seq_len else int(output_shape[1]),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        warnings=tuple(warnings),
        phase_spread_s=spread,
        timeline=timeline(table, traced),
        traced_step_samples_s=walls,
        steps_requested=options.steps,
        time_budget_s=options.time_budget_s,
        warmup_step_s=min(warm_times) if warm_times else None,
        seq_len=config.seq_len,
        notes=shared_notes(table),
    )
    return compiled.finish(run) if compiled is not None else run


@dataclass(frozen=True)
class Prepared:
    """A model built and placed on its device, with the workload it will run."""

    model: nn.Module
    config: WorkloadConfig
    device: torch.device
    label: str


def prepare(
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
    seed: int = 0,
    seq_len: int | None = None,
    hf_config: Sequence[str] = (),
) -> Prepared:
    """Resolve, build and place a model; validate the workload (one-line errors).

    ``seq_len`` and ``hf_config`` are for token models (``hf:``, issue 11).
    """
    dev = resolve_device(device)
    tgt = target(model, input_shape, image_size, seq_len=seq_len, hf_config=hf_config)
    shape, label = tgt.input_shape, tgt.label
    config = WorkloadConfig(
        batch_size=batch_size,
        input_shape=shape,
        num_classes=num_classes,
        optimizer=optimizer,
        dtype=dtype,
        amp=amp,
        seed=seed,
        seq_len=tgt.seq_len,
    )
    torch.manual_seed(seed)
    try:
        net = tgt.build(num_classes) if tgt.spec is not None else model
        assert isinstance(net, nn.Module)
        net = net.to(device=dev, dtype=DTYPES[dtype])
    except LayertimeError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(e, batch_size, dev) from e
        raise
    return Prepared(net, config, dev, label)


def profile(
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
    compile: CompileOptions | bool | None = None,  # noqa: A002
    seq_len: int | None = None,
    hf_config: Sequence[str] = (),
) -> Run:
    """Profile a training step of ``model`` (a name or an ``nn.Module``), per layer.

    Token models (``hf:NAME``, or a transformers module with ``seq_len``)
    take ``seq_len`` token ids per sample; ``hf_config`` holds
    ``KEY=VALUE`` overrides of an ``hf:`` model's config.

    ``input_shape`` is one sample's shape (default 3x224x224, or the model's
    own size such as 227 for ``alexnet2012``); ``image_size`` sets H and W
    of a 3-channel image.  ``time_budget_s`` replaces ``steps``: as many
    plain/traced pairs as fit (judged from the warm-up step), at most
    ``max_steps``.  ``compile`` (True or :class:`CompileOptions`) profiles
    ``torch.compile(model)`` instead, per layer through the compiler's provenance.
    Raises :class:`LayertimeError` on bad input.
    """
    options = MeasureOptions(
        steps=steps, warmup_steps=warmup_steps, time_budget_s=time_budget_s, max_steps=max_steps
    )
    p = prepare(
        model,
        batch_size=batch_size,
        input_shape=input_shape,
        image_size=image_size,
        num_classes=num_classes,
        device=device,
        optimizer=optimizer,
        dtype=dtype,
        amp=amp,
        seed=seed,
        seq_len=seq_len,
        hf_config=hf_config,
    )
    compile_options = (
        CompileOptions() if compile is True else compile if isinstance(compile, CompileOptions) else None
    )
    return measure(
        p.model,
        p.config,
        p.device,
        label=p.label,
        options=options,
        on_progress=on_progress,
        compile=compile_options,
    )
