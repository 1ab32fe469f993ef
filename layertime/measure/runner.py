"""Profile a model's training step: warm up, then alternate plain and traced steps.

Plain (unprofiled) steps give the true step time; traced steps give the
per-layer rows.  Alternating them in one run keeps both under the same
machine conditions, and their ratio is the profiler's own overhead.  On CUDA
each step is synchronised once at its end (never per layer) and layer times
are the GPU kernel times the profiler maps to each layer's ops.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from layertime.environment import describe
from layertime.errors import LayertimeError
from layertime.measure.aggregate import aggregate, timeline
from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.compiled import (
    CompiledCollector,
    CompiledTraceSession,
    CompileOptions,
    collecting,
)
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


class StepSync(Protocol):
    """What a data-parallel collector (``distributed.CommCollector``) adds to a run:
    the model the step runs (DDP around the measured one), a mark before each
    step, the communication charged into a traced step, agreement on counts."""

    def attach(self, model: nn.Module, table: ModuleTable) -> nn.Module: ...

    def begin_step(self, traced: bool) -> None: ...

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


def _traced_step(
    work: Workload,
    table: ModuleTable,
    sync: StepSync | None = None,
    compiled: CompiledCollector | None = None,
) -> tuple[StepCharges, torch.Tensor]:
    if sync is not None:
        sync.begin_step(traced=True)
    session: TraceSession | CompiledTraceSession = (
        compiled.session() if compiled is not None else TraceSession(table, work.device)
    )
    _sync(work.device)
    session.start()
    try:
        t0 = time.perf_counter()
        session.enter_step()
        loss = work.step(traced=True)
        _sync(work.device)
        session.exit_step()
        wall = time.perf_counter() - t0
    except BaseException:
        session.abort()
        raise
    events = session.stop()
    groups = split_steps(events)
    if len(groups) != 1:
        raise LayertimeError(f"expected one traced step, found {len(groups)}")
    step, members = groups[0]
    cuda = work.device.type == "cuda"
    if compiled is not None:
        assert isinstance(session, CompiledTraceSession)
        charges = compiled.attribute(
            session, step, members, device_time=cuda, step_wall_s=wall if cuda else None
        )
    else:
        charges = attribute_step(
            step, members, device_time=cuda, step_wall_s=wall if cuda else None
        )
    if sync is not None:
        charges = sync.charge(charges, cuda)
    return charges, loss


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
    """
    progress = on_progress or (lambda stage, done, total: None)
    output_shape = check_input(model, config, device, label)
    table = ModuleTable(model)
    nan_steps = 0
    plain: list[float] = []
    traced: list[StepCharges] = []
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
            # Warm-up: autotuning, allocator growth; none of it is kept.  An
            # empty profiler session starts the profiler's own machinery
            # (outside any timed step) so the first traced step is not charged.
            warm_total = options.warmup_steps
            warm_times = []
            if compiled is not None:
                warm_times = compiled.warm_up(
                    lambda: _plain_step(work, sync)[0],
                    options.warmup_steps,
                    lambda i: progress("warmup", i, max(warm_total, i + 1)),
                )
                warm_total = len(warm_times)
            for i in range(options.warmup_steps if compiled is None else 0):
                progress("warmup", i, warm_total)
                warm_times.append(_plain_step(work, sync)[0])
            progress("warmup", warm_total, warm_total)
            idle: TraceSession | CompiledTraceSession = (
                compiled.session() if compiled is not None else TraceSession(table, device)
            )
            idle.start()
            idle.abort()
            n = options.steps
            if options.time_budget_s is not None:
                per_pair = 2 * (min(warm_times) if warm_times else 1.0)
                n = max(1, min(options.max_steps, int(options.time_budget_s // per_pair)))
            if sync is not None:
                n = sync.agree(n)
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
                    nan_steps += int(not bool(torch.isfinite(loss).all()))
            progress("measure", 2 * n, 2 * n)
        except LayertimeError:
            raise
        except Exception as e:
            if is_out_of_memory(e):
                raise out_of_memory(e, config.batch_size, device) from e
            raise
    if not traced:
        raise LayertimeError("every measured step compiled again: no steady step to report")
    layers, phases, spread, samples = aggregate(table, traced)
    warnings = []
    if nan_steps:
        warnings.append(f"the loss was NaN or infinite in {nan_steps} of {2 * len(plain)} steps")
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
        num_classes=int(output_shape[1]),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        warnings=tuple(warnings),
        phase_spread_s=spread,
        timeline=timeline(table, traced),
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
) -> Prepared:
    """Resolve, build and place a model; validate the workload (one-line errors)."""
    dev = resolve_device(device)
    tgt = target(model, input_shape, image_size)
    shape, label = tgt.input_shape, tgt.label
    config = WorkloadConfig(
        batch_size=batch_size,
        input_shape=shape,
        num_classes=num_classes,
        optimizer=optimizer,
        dtype=dtype,
        amp=amp,
        seed=seed,
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
) -> Run:
    """Profile a training step of ``model`` (a name or an ``nn.Module``), per layer.

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
