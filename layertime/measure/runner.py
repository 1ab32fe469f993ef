"""Profile a model's training step: warm up, then plain and traced steps.

Plain (unprofiled) steps give the true step time; traced steps give the
per-layer rows; their ratio is the profiler's own overhead.  On the CPU the
two alternate, each traced step in a profiler session of its own, so both
see the same machine conditions.  On CUDA every plain step runs first, then
every traced step in one profiler session (CUPTI's start and teardown
between sessions is slow and fragile); each step is synchronised once at its
end (never per layer), layer times are the GPU kernel times the profiler maps
to each layer's ops, and ``unattributed`` is the GPU's idle time in the
unprofiled step (see :func:`~layertime.measure.device_time.idle_from_plain`).
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from layertime.errors import LayertimeError, is_out_of_memory, memory_errors, oom_detail
from layertime.kinds import KindObserver
from layertime.measure.aggregate import aggregate, shared_notes, timeline
from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.compiled.collector import CompiledCollector, CompileOptions, collecting
from layertime.measure.compiled.detect import (
    compiled_in_place,
    compiled_inner,
    compiled_parts,
    describe_parts,
)
from layertime.measure.compiled.session import CompiledTraceSession
from layertime.measure.device_time import device_time_warnings, idle_from_plain
from layertime.measure.environment import describe
from layertime.measure.events import busy_us, comm_exposed_fraction
from layertime.measure.memory import (
    MemoryMeasurement,
    MemorySession,
    run_memory_step,
    with_memory,
)
from layertime.measure.prepare import prepare
from layertime.measure.tracer import TraceSession, phase
from layertime.models import ModelRef
from layertime.modules import ModuleTable, training_mode
from layertime.results.run import Run
from layertime.workload import Workload, WorkloadOptions, WorkloadSpec, check_input

if TYPE_CHECKING:
    from typing import Unpack

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

    @property
    def record_shapes(self) -> bool:
        """Whether traced steps record ops' input shapes (for the bytes of collectives)."""
        ...


@dataclass(frozen=True)
class MeasureOptions:
    """How many steps to run; ``time_budget_s`` overrides ``steps`` when given.
    ``memory``: measure memory per layer in two more steps of its own, after the timed
    ones (``layertime/measure/memory/``); never in a timed step."""

    steps: int = 3
    warmup_steps: int = 1
    time_budget_s: float | None = None
    max_steps: int = 50
    memory: bool = True

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


def _session(table: ModuleTable, device: torch.device, sync: StepSync | None) -> TraceSession:
    return TraceSession(table, device, record_shapes=sync is not None and sync.record_shapes)


def _plain_step(work: Workload, sync: StepSync | None = None) -> tuple[float, torch.Tensor]:
    if sync is not None:
        sync.begin_step(traced=False)
    _sync(work.device)
    t0 = time.perf_counter()
    loss = work.step()
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
            busy = exposed = None
            if cuda:
                busy = busy_us(session.kernels, step.start_us, step.end_us)[0] * 1e-6
                exposed = comm_exposed_fraction(session.kernels, step.start_us, step.end_us)
            charges = attribute_step(
                step, members, device_time=cuda, step_wall_s=wall if cuda else None,
                device_busy_s=busy, comm_exposed_fraction=exposed,
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
    loss = work.step(phase)
    _sync(work.device)
    session.exit_step()
    wall = time.perf_counter() - t0
    if sync is not None:
        sync.end_step()
    return wall, loss


def trace_step(
    work: Workload,
    session: TraceSession | CompiledTraceSession,
    sync: StepSync | None = None,
) -> tuple[float, torch.Tensor]:
    """One step of ``work`` traced in ``session``, a profiler session of its own: started,
    then stopped with its events read, or aborted if the step raises.  Returns the step's
    synchronised wall time and its loss."""
    _sync(work.device)
    session.start()
    try:
        wall, loss = _timed_in_session(work, session, sync)
    except BaseException:
        session.abort()
        raise
    session.stop()
    return wall, loss


def _traced_step(
    work: Workload,
    table: ModuleTable,
    sync: StepSync | None = None,
    compiled: CompiledCollector | None = None,
) -> tuple[StepCharges, torch.Tensor]:
    """One traced step in a profiler session of its own (the CPU path, and compiled models)."""
    session: TraceSession | CompiledTraceSession = (
        compiled.session() if compiled is not None else _session(table, work.device, sync)
    )
    wall, loss = trace_step(work, session, sync)
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
    session = _session(table, work.device, sync)
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


def _uncompiled(
    model: nn.Module, label: str, compile: object  # noqa: A002
) -> tuple[nn.Module, str, nn.Module | None]:
    """(the model to build the rows of, its label, the user's ``torch.compile`` wrapper or
    None); one line for what cannot be profiled per layer."""
    wrapper = None
    inner = compiled_inner(model)
    if compiled_in_place(model):
        raise LayertimeError(
            "a module compiled in place (module.compile()) cannot be profiled per layer: "
            "pass the uncompiled module with compile=True (layertime profile --compile)"
        )
    if inner is not None:
        if compile is not None:
            raise LayertimeError(
                "the model is already compiled (torch.compile): pass it without compile=, "
                "or the uncompiled model with compile="
            )
        if label == type(model).__name__:
            label = type(inner).__name__
        wrapper, model = model, inner
    parts = compiled_parts(model)
    if parts:
        raise LayertimeError(
            f"the model has compiled parts ({describe_parts(parts)}: torch.compile or "
            ".compile() inside the model), and module hooks cannot time layers inside "
            "compiled code: build it uncompiled and pass compile=True (layertime profile "
            "--compile) to compile the whole model"
        )
    return model, label, wrapper


def measure(
    model: nn.Module,
    workload: WorkloadSpec,
    device: torch.device,
    *,
    label: str,
    options: MeasureOptions = MeasureOptions(),
    on_progress: ProgressFn | None = None,
    sync: StepSync | None = None,
    compile: CompileOptions | CompiledCollector | None = None,  # noqa: A002 (its natural name)
) -> Run:
    """Profile ``model`` (already built and on ``device``) running ``workload``.

    ``workload.input`` must be resolved (:func:`prepare` does it);
    ``sync`` makes it one rank of a data-parallel run (``parallel/ddp.py``).
    ``compile`` runs ``torch.compile(model)`` instead, its kernels charged to
    the layers they came from (``compiled/collector.py``); warm-up then lasts until a
    step compiles nothing, and a measured step that compiles is dropped.  A
    ready :class:`CompiledCollector` (built on ``model`` and ``ModuleTable(model)``)
    may be given instead of options, to see its per-step findings afterwards.
    Compiled steps are traced one profiler session each, on CUDA too.

    A model the user compiled (``torch.compile(model)``) is profiled through the compiled
    path, its rows the inner model's layers; a model with compiled parts inside (a
    submodule compiled, ``block.compile()``) is refused: module hooks cannot time layers
    inside compiled code.
    """
    progress = on_progress or (lambda stage, done, total: None)
    model, label, user_wrapper = _uncompiled(model, label, compile)
    workload = workload.with_input(workload.resolved_input.for_model(model))
    # The validating forward is watched too, so that kinds follow what each layer
    # computes (layertime.kinds).
    with KindObserver(model) as watched:
        output_shape = check_input(model, workload, device, label)
    table = ModuleTable(model, facts=watched.facts())
    if compile is not None and sync is not None:
        raise LayertimeError("--compile is not supported with data-parallel runs yet")
    compiled = (
        CompiledCollector.for_options(model, table, device, compile)
        if isinstance(compile, CompileOptions)
        else CompiledCollector.for_user_model(user_wrapper, table, device)
        if user_wrapper is not None
        else compile
    )
    with training_mode(model), collecting(compiled), \
            memory_errors(workload.batch_size, device.type):
        stepped = sync.attach(model, table) if sync is not None else model
        if compiled is not None:
            stepped = compiled.wrapper
        work = Workload(stepped, workload, device, output_shape)
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
        if device.type == "cuda" and compiled is None:
            steps = _cuda_steps(work, table, n, progress, sync)
        else:
            steps = _paired_steps(work, table, n, progress, sync, compiled)
        steps.warm = warm_times
        nan_steps = sum(int(not bool(torch.isfinite(loss).all())) for loss in steps.losses)
        if options.memory and compiled is None and steps.traced:
            try:
                steps.memory = memory_step(work, model, table, sync)
            except Exception as e:  # the timed steps are kept: only memory is lost
                if not is_out_of_memory(e):
                    raise
                steps.memory_lost = f"memory was not measured: its step ran out of memory " \
                    f"({oom_detail(e)})"
                _release(device)
    if not steps.traced:
        raise LayertimeError("every measured step compiled again: no steady step to report")
    run = _run(workload, device, label, options, table, steps, nan_steps, output_shape,
               one_session=compiled is None)
    return compiled.finish(run) if compiled is not None else run


def _release(device: torch.device) -> None:
    """Give the allocator's cached blocks back after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def memory_step(work: Workload, model: nn.Module, table: ModuleTable,
                sync: StepSync | None = None) -> MemoryMeasurement:
    """Memory per layer and the step's peak, in a priming and a measured step of their
    own (``measure/memory/``), after the timed steps so that none of them is touched.

    The gradients are set to None first, so that nothing the profiler did not see being
    allocated is freed inside its session.
    """
    work.optimizer.zero_grad(set_to_none=True)
    inputs = [*work.batch.tensors, *([work.targets] if isinstance(work.targets, torch.Tensor)
                                      else [])]
    session = MemorySession(model, table, work.device, work.optimizer, inputs)

    def prime() -> None:
        _plain_step(work, sync)
        work.update_skipped()

    def measured() -> None:
        if sync is not None:
            sync.begin_step(traced=False)
        work.step(phase)
        work.update_skipped()

    return run_memory_step(session, prime, measured)


@dataclass
class _Steps:
    """What the measured steps gave: plain wall times, traced charges, losses, how many
    updates fp16 loss scaling skipped, and the warm-up steps' wall times."""

    plain: list[float]
    traced: list[StepCharges]
    losses: list[torch.Tensor]
    skipped: int = 0
    warm: list[float] = field(default_factory=list)
    memory: MemoryMeasurement | None = None
    #: Why memory was not measured, when its step failed (the timed steps are kept).
    memory_lost: str | None = None


def _cuda_steps(
    work: Workload, table: ModuleTable, n: int, progress: ProgressFn, sync: StepSync | None
) -> _Steps:
    """Every plain step before any profiler session (a session can leave CUPTI attached,
    which slows later steps), then every traced step in one session.  Plain steps are
    cheap here and their median is every row's reference (the idle time), so take at
    least MIN_CUDA_PLAIN_STEPS of them."""
    out = _Steps([], [], [])
    n_plain = max(n, MIN_CUDA_PLAIN_STEPS)
    for i in range(n_plain):
        progress("measure", i, n_plain + n)
        dt, loss = _plain_step(work, sync)
        out.plain.append(dt)
        out.losses.append(loss)
        out.skipped += work.update_skipped()
    progress("measure", n_plain, n_plain + n)
    charges, losses, skipped = _traced_steps(work, table, n, sync)
    out.traced.extend(charges)
    out.losses.extend(losses)
    out.skipped += skipped
    progress("measure", 2 * n, 2 * n)
    return out


def _paired_steps(
    work: Workload,
    table: ModuleTable,
    n: int,
    progress: ProgressFn,
    sync: StepSync | None,
    compiled: CompiledCollector | None = None,
) -> _Steps:
    """``n`` pairs of a plain and a traced step, alternating which goes first, each traced
    step in a profiler session of its own (the CPU path; compiled models on any device,
    where a step that compiled again is dropped)."""
    out = _Steps([], [], [])
    # An empty session starts the profiler's own machinery (outside any timed
    # step) so the first traced step is not charged.
    idle: TraceSession | CompiledTraceSession = (
        compiled.session() if compiled is not None else _session(table, work.device, sync)
    )
    idle.start()
    idle.abort()
    for i in range(n):
        # Alternate which of the pair goes first, so a drift in the machine's
        # speed does not favour either kind of step.
        for j, traced_turn in enumerate((i % 2 == 1, i % 2 == 0)):
            progress("measure", 2 * i + j, 2 * n)
            if traced_turn:
                charges, loss = _traced_step(work, table, sync, compiled)
                if compiled is None or compiled.keep_step():
                    out.traced.append(charges)
                else:
                    compiled.forget_last()
            else:
                dt, loss = _plain_step(work, sync)
                if compiled is None or compiled.keep_step(dt):
                    out.plain.append(dt)
            out.losses.append(loss)
    progress("measure", 2 * n, 2 * n)
    return out


def _run(
    workload: WorkloadSpec,
    device: torch.device,
    label: str,
    options: MeasureOptions,
    table: ModuleTable,
    steps: _Steps,
    nan_steps: int,
    output_shape: torch.Size,
    *,
    one_session: bool = True,
) -> Run:
    """The measured steps as a :class:`Run`.  On CUDA with ``one_session`` (all traced
    steps in one profiler session; not a compiled model's), the idle time comes from the
    plain steps and the traced walls are kept apart."""
    cuda = device.type == "cuda" and one_session
    traced, plain, n_losses = steps.traced, steps.plain, len(steps.losses)
    walls: tuple[float, ...] = ()
    if cuda:
        walls = tuple(c.step_s for c in traced)
        idle_from_plain(traced, statistics.median(plain))
    layers, phases, spread, samples = aggregate(table, traced)
    if steps.memory is not None:
        layers = with_memory(layers, table, steps.memory)
    warnings = []
    if nan_steps:
        warnings.append(f"the loss was NaN or infinite in {nan_steps} of {n_losses} steps")
    if steps.skipped:
        warnings.append(
            f"fp16 loss scaling skipped the optimizer update in {steps.skipped} of {n_losses} "
            "measured steps (gradients overflowed)"
        )
    if cuda:
        warnings.extend(device_time_warnings(traced, statistics.median(plain)))
    if steps.memory_lost:
        warnings.append(steps.memory_lost)
    spec = workload.resolved_input
    return Run(
        model=label,
        device=str(device),
        batch_size=workload.batch_size,
        input_shape=tuple(spec.sample_shape),
        dtype=workload.dtype,
        optimizer=workload.optimizer,
        steps=len(traced),
        warmup_steps=len(steps.warm),
        step_samples_s=tuple(plain),
        profiled_step_samples_s=samples,
        layers=layers,
        phases=phases,
        environment=describe(device),
        timing="cuda-kernel-time" if device.type == "cuda" else "cpu-self-time",
        amp=workload.amp,
        num_classes=spec.classes(output_shape),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        warnings=tuple(warnings),
        phase_spread_s=spread,
        timeline=timeline(table, traced),
        traced_step_samples_s=walls,
        steps_requested=options.steps,
        time_budget_s=options.time_budget_s,
        warmup_step_s=min(steps.warm) if steps.warm else None,
        seq_len=spec.sequence_length,
        notes=shared_notes(table),
        memory=steps.memory.summary if steps.memory is not None else None,
    )


def profile_workload(
    workload: WorkloadSpec,
    options: MeasureOptions = MeasureOptions(),
    *,
    on_progress: ProgressFn | None = None,
    compile: CompileOptions | bool | None = None,  # noqa: A002
) -> Run:
    """Profile a training step of ``workload``, per layer (the spec form of :func:`profile`).

    ``compile`` (True or :class:`CompileOptions`) profiles ``torch.compile(model)``
    instead, per layer through the compiler's provenance.
    """
    p = prepare(workload)
    compile_options = (
        CompileOptions() if compile is True else compile if isinstance(compile, CompileOptions)
        else None
    )
    return measure(
        p.model, p.workload, p.device, label=p.label, options=options, on_progress=on_progress,
        compile=compile_options,
    )


def profile(
    model: str | ModelRef | nn.Module,
    *,
    steps: int = 3,
    warmup_steps: int = 1,
    time_budget_s: float | None = None,
    max_steps: int = 50,
    on_progress: ProgressFn | None = None,
    compile: CompileOptions | bool | None = None,  # noqa: A002
    **workload: Unpack[WorkloadOptions],
) -> Run:
    """Profile a training step of ``model`` (a name, a :class:`ModelRef` carrying an
    ``hf:`` model's config overrides, or an ``nn.Module``), per layer.

    ``workload`` takes :meth:`WorkloadSpec.create`'s options: ``batch_size``
    (128), ``input_shape`` (one sample's shape; default 3x224x224, or the
    model's own size such as 227 for ``alexnet2012``) or ``image_size`` (H
    and W of a 3-channel image) or ``seq_len`` (token ids; default 128 for
    ``hf:`` models) or ``input``, ``num_classes``, ``device``,
    ``optimizer``, ``dtype``, ``amp``, ``seed``.  ``time_budget_s`` replaces
    ``steps``: as many plain/traced pairs as fit (judged from the warm-up
    step), at most ``max_steps``.  ``compile`` (True or :class:`CompileOptions`)
    profiles ``torch.compile(model)`` instead, per layer through the compiler's
    provenance.  Raises :class:`LayertimeError` on bad input.
    """
    options = MeasureOptions(
        steps=steps, warmup_steps=warmup_steps, time_budget_s=time_budget_s, max_steps=max_steps
    )
    return profile_workload(
        WorkloadSpec.create(model, **workload), options, on_progress=on_progress, compile=compile
    )
