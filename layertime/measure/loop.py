"""Profile the user's own training loop, with their data, loss and optimizer.

::

    with layertime.Profiler(model, optimizer) as prof:
        for x, y in loader:
            ...  # the usual step
            prof.step()
    print(prof.result().headline())

(``layertime.Profiler`` adds ``report()``, the result as a table.)

``model`` may be ``torch.compile(module)`` (create the Profiler before its
first call, so that compilation happens inside it): its compiled kernels are
then charged to the layers they came from (``compiled/collector.py``), a step in which
anything compiled is dropped, and the result says how it was compiled.

A model the user sharded (FSDP2's ``fully_shard``, ``parallelize_module``) in their own
torchrun script is profiled the same way on every rank: the layout is read from the
model, each traced step's collectives are charged to layers (``parallel/sharded_comm.py``),
``result()`` is this rank's run and ``gather()`` (called on every rank) gives rank 0 the
merged one.  A DDP-wrapped model's gradient all-reduce is left unattributed here.

``prof.step()`` marks the end of one step.  After ``warmup_steps``, with
``memory=True`` (the default), two steps measure memory per layer and the step's
peak (``memory/``: a priming step and the measured one, never timed; torch may
say once that a block "of unknown size was allocated before the profiling
started": the priming step is there so that the measured one frees only blocks
the profiler saw).  Then steps alternate between plain (only timed) and traced
(per-layer rows), so the profiler's overhead is measured in the same run.  A step spans from one
``prof.step()`` to the next, so data loading shows up (as ``data``: the work
before the model's forward), and so does the loss (between the forward and
the backward).
"""

from __future__ import annotations

import datetime as _dt
import time
from types import TracebackType
from typing import Any, Self

import torch
from torch import nn

from layertime.errors import LayertimeError
from layertime.kinds import KindObserver
from layertime.measure.aggregate import aggregate, shared_notes, timeline
from layertime.measure.attribute import StepCharges, attribute_step, split_steps
from layertime.measure.compiled.collector import CompiledCollector
from layertime.measure.compiled.detect import (
    compiled_in_place,
    compiled_inner,
    compiled_parts,
    describe_parts,
)
from layertime.measure.compiled.session import CompiledTraceSession
from layertime.measure.environment import describe
from layertime.measure.memory import MemoryMeasurement, MemorySession, with_memory
from layertime.measure.parallel.in_loop import LoopSharding, backend_name, world_size
from layertime.measure.tracer import TraceSession
from layertime.modules import ModuleTable, class_name
from layertime.results.run import Run


class Profiler:
    """Context manager that profiles every ``every``-th step of a training loop.

    ``max_profiled_steps`` stops tracing after that many traced steps (plain
    steps are still timed); the model's hooks exist only during traced steps.
    ``memory=False`` leaves out the two memory steps after the warm-up.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        warmup_steps: int = 1,
        every: int = 2,
        max_profiled_steps: int | None = None,
        name: str | None = None,
        memory: bool = True,
    ) -> None:
        if warmup_steps < 0:
            raise LayertimeError(f"warmup_steps must be >= 0, not {warmup_steps}")
        if every < 2:
            raise LayertimeError(f"every must be >= 2 (one plain step per traced one), not {every}")
        if compiled_in_place(model):
            raise LayertimeError(
                "a module compiled in place (module.compile()) cannot be profiled per layer; "
                "pass torch.compile(module) instead"
            )
        #: The module inside ``torch.compile(module)``, whose layers are the rows.
        self._inner = compiled_inner(model)
        parts = compiled_parts(self._inner if self._inner is not None else model)
        if parts:
            raise LayertimeError(
                f"the model has compiled parts ({describe_parts(parts)}: torch.compile or "
                ".compile() inside the model), and module hooks cannot time layers inside "
                "compiled code: build the model uncompiled and pass torch.compile(model) to "
                "the Profiler"
            )
        self.model = model
        self._compiled: CompiledCollector | None = None
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.every = every
        self.max_profiled_steps = max_profiled_steps
        self.name = name or class_name(self._inner if self._inner is not None else model)
        #: Memory steps (a priming and a measured one) right after the warm-up; not for
        #: a compiled model (its saved tensors are the compiled graph's).
        self.memory = memory and self._inner is None
        self._memory_steps = 2 if self.memory else 0
        self._memory_session: MemorySession | None = None
        self._memory: MemoryMeasurement | None = None
        try:
            first = next(model.parameters())
            self.device = first.device
            self.dtype = str(first.dtype).replace("torch.", "")
        except StopIteration:
            self.device = torch.device("cpu")
            self.dtype = "float32"
        self._table: ModuleTable | None = None
        self._index = 0
        self._session: TraceSession | CompiledTraceSession | None = None
        self._t0 = 0.0
        self._plain: list[float] = []
        self._traced: list[StepCharges] = []
        self._input_shape: tuple[int, ...] | None = None
        self._shape_hook: Any = None
        self._active = False
        self._watch: KindObserver | None = None
        self._seq_len: int | None = None
        #: A sharded model's layout and its units' layers (None: not sharded).
        self._sharding = LoopSharding()

    # -- context -----------------------------------------------------------
    def __enter__(self) -> Self:
        self._table = ModuleTable(self._inner if self._inner is not None else self.model)
        if self._inner is not None:
            self._compiled = CompiledCollector.for_user_model(self.model, self._table, self.device)
            self._compiled.__enter__()
        try:
            self._shape_hook = self.model.register_forward_pre_hook(
                self._capture_shape, with_kwargs=True
            )
            self._active = True
            if self.warmup_steps > 0 and self._compiled is None:
                # Kinds by what each layer computes (layertime.kinds): the first,
                # warm-up step is watched, and only it (it is never measured).
                self._watch = KindObserver(self.model).__enter__()
            self._begin()
        except BaseException:
            self._close_compiled()
            raise
        return self

    def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.__exit__(None, None, None)
            self._table = ModuleTable(self.model, facts=watch.facts())
            self._sharding.read(self.model, self._table)

    def _close_compiled(self) -> None:
        if self._compiled is not None:
            self._compiled.__exit__(None, None, None)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The step in progress never finished: discard it.
        try:
            if self._watch is not None:
                self._watch.__exit__(None, None, None)
                self._watch = None
            if self._session is not None:
                self._session.abort()
            if self._memory_session is not None:
                self._memory_session.abort()
        finally:
            self._session = None
            self._memory_session = None
            self._active = False
            if self._shape_hook is not None:
                self._shape_hook.remove()
                self._shape_hook = None
            self._close_compiled()

    def _capture_shape(self, _mod: nn.Module, args: Any, kwargs: Any) -> None:
        if self._input_shape is not None:
            return
        first = args[0] if args else (kwargs or {}).get("input_ids")
        if isinstance(first, torch.Tensor):
            self._input_shape = tuple(first.shape)
            # Token ids (a transformers model's input_ids): batch x sequence.
            if first.dim() == 2 and not first.is_floating_point():
                self._seq_len = int(first.shape[1])

    # -- steps -------------------------------------------------------------
    def _is_memory(self, index: int) -> bool:
        """Whether step ``index`` is one of the two memory steps (after the warm-up)."""
        return self.warmup_steps <= index < self.warmup_steps + self._memory_steps

    def _is_traced(self, index: int) -> bool:
        start = self.warmup_steps + self._memory_steps
        if index < start:
            return False
        if self.max_profiled_steps is not None and len(self._traced) >= self.max_profiled_steps:
            return False
        return (index - start) % self.every == self.every - 1

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _begin(self) -> None:
        assert self._table is not None
        self._sync()
        if self._compiled is not None:
            self._compiled.compiled_since_mark()  # a step that compiles is not kept
        if self._is_memory(self._index):
            self._begin_memory()
            self._t0 = time.perf_counter()
        elif self._is_traced(self._index):
            if not self._sharding.read_done and self._watch is None and \
                    self._index == self.warmup_steps:
                self._sharding.read(self.model, self._table)  # no warm-up step watched it
            self._session = (
                self._compiled.session()
                if self._compiled is not None
                else TraceSession(self._table, self.device,
                                  record_shapes=self._sharding.record_shapes)
            )
            self._session.start()
            self._t0 = time.perf_counter()
            self._session.enter_step()
        else:
            self._t0 = time.perf_counter()

    def _begin_memory(self) -> None:
        """The first memory step starts the session (it primes it), the second is measured."""
        if self._index == self.warmup_steps:
            assert self._table is not None
            if not self._sharding.read_done and self._watch is None:
                self._sharding.read(self.model, self._table)
            self._memory_session = MemorySession(self.model, self._table, self.device,
                                                 self.optimizer)
            self._memory_session.start()
        elif self._memory_session is not None:
            self._memory_session.begin_step()

    def _end_memory(self) -> None:
        session = self._memory_session
        if session is None or self._index != self.warmup_steps + 1:
            return
        self._memory_session = None
        try:
            session.end_step()
        except BaseException:
            session.abort()
            raise
        self._memory = session.stop()

    def _end(self) -> None:
        self._sync()
        wall = time.perf_counter() - self._t0
        if self._is_memory(self._index):
            self._end_memory()
            return
        session, self._session = self._session, None
        if session is not None:
            session.exit_step()
            events = session.stop()
            groups = split_steps(events)
            if len(groups) == 1:
                step, members = groups[0]
                cuda = self.device.type == "cuda"
                if isinstance(session, CompiledTraceSession) and self._compiled is not None:
                    charges = self._compiled.attribute(
                        session,
                        step,
                        members,
                        device_time=cuda,
                        step_wall_s=wall if cuda else None,
                        loop=True,
                    )
                    if self._compiled.keep_step():
                        self._traced.append(charges)
                    else:
                        self._compiled.forget_last()
                else:
                    charges = attribute_step(
                        step,
                        members,
                        device_time=cuda,
                        step_wall_s=wall if cuda else None,
                        loop=True,
                    )
                    self._traced.append(self._sharding.charge(charges))
        elif self._index >= self.warmup_steps:
            if self._compiled is None or self._compiled.keep_step(wall):
                self._plain.append(wall)
        elif self._compiled is not None:
            self._compiled.warm_step(wall)

    def step(self) -> None:
        """Mark the end of a training step (call it once per iteration)."""
        if not self._active:
            raise LayertimeError("Profiler.step() called outside its 'with' block")
        self._stop_watching()
        self._end()
        self._index += 1
        self._begin()

    # -- results -----------------------------------------------------------
    @property
    def profiled_steps(self) -> int:
        return len(self._traced)

    def result(self) -> Run:
        """The run so far; needs at least one traced step."""
        if not self._traced or self._table is None:
            raise LayertimeError(
                f"no profiled step yet: {self._index} step(s) done; traced steps start after "
                f"{self.warmup_steps} warm-up step(s)"
                + (f" and {self._memory_steps} memory steps" if self._memory_steps else "")
                + f" and come every {self.every} steps"
            )
        layers, phases, spread, samples = aggregate(self._table, self._traced)
        if self._memory is not None:
            layers = with_memory(layers, self._table, self._memory)
        shape = self._input_shape or ()
        run = Run(
            model=self.name,
            device=str(self.device),
            batch_size=int(shape[0]) if shape else 0,
            input_shape=tuple(int(d) for d in shape[1:]),
            dtype=self.dtype,
            optimizer=type(self.optimizer).__name__.lower() if self.optimizer else "none",
            steps=len(self._traced),
            warmup_steps=self.warmup_steps,
            step_samples_s=tuple(self._plain),
            profiled_step_samples_s=samples,
            layers=layers,
            phases=phases,
            environment=describe(self.device),
            timing="cuda-kernel-time" if self.device.type == "cuda" else "cpu-self-time",
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            phase_spread_s=spread,
            timeline=timeline(self._table, self._traced),
            seq_len=self._seq_len,
            notes=shared_notes(self._table),
            memory=self._memory.summary if self._memory is not None else None,
        )
        run = self._sharding.finish(run, self._table, self._traced)
        return self._compiled.finish(run) if self._compiled is not None else run

    def gather(self) -> Run | None:
        """Every rank's run merged on rank 0 (None on the others): rows are means over
        ranks, ``ranks`` each rank's step and communication.  A collective call: every
        rank must call it; outside a process group it is :meth:`result`."""
        run = self.result()
        if world_size() is None:
            return run
        import torch.distributed as dist

        from layertime.measure.parallel.merge import merge_ranks

        rank, world = dist.get_rank(), dist.get_world_size()
        gathered: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(run, gathered, dst=0)
        if gathered is None:
            return None
        return merge_ranks([r for r in gathered if r is not None], backend=backend_name())

