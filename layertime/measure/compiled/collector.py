"""Profile a ``torch.compile``d model: compile apart, then charge its kernels to layers.

The collector (:class:`CompiledCollector`) joins three parts, each scoped to its
``with`` block:

* **What the compiler knows** (:mod:`~layertime.measure.compiled.capture`): for
  each graph Inductor lowers, its kernel calls in order, the FX nodes behind each
  call (Inductor's provenance tracking) and each node's module (Dynamo's
  ``nn_module_stack``) and counted cost.
* **Kernel events** (:mod:`~layertime.measure.compiled.session`).  On the CPU,
  Inductor's C++ kernels appear in the profile only with
  ``config.cpp.enable_kernel_profile`` (on in scope); extern kernels are aten
  ops.  On CUDA, each Triton kernel is launched inside a range of its own name
  (Inductor's, under the graph's ``## Call CompiledFxGraph ##`` range; older torch
  launches them from that range itself), its device time read from the kernel the
  range launched (``events.launched_kernels``).
* **The join** (:mod:`~layertime.measure.compiled.attribute`), a pure function.

**Compile apart.**  Warm-up runs until a step compiles nothing; compilation
time is the warm-up steps that compiled minus as many steady steps (measured).
A measured step in which anything compiled is dropped and counted.

Feature detection: each config key is set only where this torch has it; where
provenance cannot be had (a backend other than Inductor, a torch without
provenance tracking, a model compiled before the collector started, a custom
post-grad pass that cannot be chained) the summary says so in one line and the
compiled time stays ``unattributed`` with per-graph totals, never guessed.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from layertime.errors import LayertimeError
from layertime.measure.attribute import StepCharges
from layertime.measure.compiled.attribute import CompiledStep, attribute_compiled_step
from layertime.measure.compiled.capture import BALANCE, ProvenanceCapture
from layertime.measure.compiled.detect import (
    backend_name,
    compiled_inner,
    inductor_options,
    mode_options,
    user_mode,
    uses_cuda_graphs,
)
from layertime.measure.compiled.graphs import GraphInfo
from layertime.measure.compiled.session import CompiledTraceSession
from layertime.measure.events import OpEvent
from layertime.modules import ModuleTable
from layertime.results.compiled import COMPILE_MODES, CompiledSummary, FusedGroup, GraphTotal
from layertime.results.run import Run

MODES = COMPILE_MODES
#: At most this many warm-up steps while waiting for compilation to settle.
MAX_WARMUP_STEPS = 10


@dataclass(frozen=True)
class CompileOptions:
    """How ``layertime profile --compile`` compiles the model (``torch.compile`` arguments)."""

    mode: str | None = None
    backend: str = "inductor"
    fullgraph: bool = False
    dynamic: bool | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise LayertimeError(f"unknown compile mode {self.mode!r} (choose {', '.join(MODES)})")

    def compile(self, model: nn.Module) -> nn.Module:
        """``torch.compile(model, ...)`` with these options (compiles lazily, at the first call)."""
        mode = None if self.mode in (None, "default") else self.mode
        out = torch.compile(
            model, backend=self.backend, mode=mode, fullgraph=self.fullgraph, dynamic=self.dynamic
        )
        assert isinstance(out, nn.Module)
        return out


# -- the collector -------------------------------------------------------------


@dataclass
class _Tally:
    steps: list[CompiledStep] = field(default_factory=list)


class CompiledCollector:
    """Everything a compiled run adds: the capture, the warm-up, attribution, the summary.

    ``wrapper`` is what the step calls (``torch.compile(model)``); ``table`` is
    the original model's module table, so layer names match an eager run.
    Use as a context manager around compilation and the measured steps.
    """

    def __init__(
        self,
        wrapper: nn.Module,
        model: nn.Module,
        table: ModuleTable,
        device: torch.device,
        *,
        backend: str = "inductor",
        mode: str | None = None,
        user_compiled: bool = False,
        cuda_graphs: bool | None = None,
    ) -> None:
        self.wrapper = wrapper
        self.model = model
        self.table = table
        self.device = device
        self.backend = backend
        self.mode = mode
        self.user_compiled = user_compiled
        #: Whether Inductor records CUDA graphs here (their replay runs kernels outside
        #: the graph calls): from the mode's options unless told.
        self.cuda_graphs = (
            backend == "inductor" and uses_cuda_graphs(mode)
            if cuda_graphs is None else cuda_graphs
        )
        self.capture = ProvenanceCapture(model, device, backend)
        self._index = {e.name: e.index for e in table.rows()}
        self._root = table.entries[0].index if len(table) else 0
        self._mark = 0
        self._tally = _Tally()
        self._compile_times: list[float] = []
        self._steady: list[float] = []
        self.dropped = 0
        self._graphs: list[GraphInfo] = []
        self._graphs_at = -1
        owners: dict[tuple[int, ...], list[str]] = {}
        for entry in table:
            for p in entry.module.parameters(recurse=False):
                if p.requires_grad:
                    owners.setdefault(tuple(p.shape), []).append(entry.name)
        self._param_modules = {k: sorted(set(v)) for k, v in owners.items()}

    @classmethod
    def for_options(
        cls, model: nn.Module, table: ModuleTable, device: torch.device, options: CompileOptions
    ) -> CompiledCollector:
        """Compile ``model`` with ``options`` (lazily) and collect for it."""
        return cls(
            options.compile(model), model, table, device, backend=options.backend, mode=options.mode
        )

    @classmethod
    def for_user_model(cls, wrapper: nn.Module, table: ModuleTable, device: torch.device) -> CompiledCollector:
        """A model the user compiled (``torch.compile(model)``); ``table`` is of the inner model."""
        inner = compiled_inner(wrapper)
        if inner is None:
            raise LayertimeError("not a torch.compile'd module")
        backend = backend_name(wrapper)
        mode = user_mode(wrapper)
        options = inductor_options(wrapper)
        # The wrapper's options hold its mode's; where they cannot be read, the mode's.
        cuda_graphs = backend == "inductor" and uses_cuda_graphs(
            None, options if options is not None else mode_options(mode)
        )
        return cls(wrapper, inner, table, device, backend=backend, mode=mode,
                   user_compiled=True, cuda_graphs=cuda_graphs)

    def __enter__(self) -> CompiledCollector:
        self.capture.__enter__()
        self._mark = self.capture.compile_events
        return self

    def __exit__(self, *exc: object) -> None:
        self.capture.__exit__(*exc)

    # -- steps ---------------------------------------------------------------
    def session(self) -> CompiledTraceSession:
        return CompiledTraceSession(self.wrapper, self._root, self.device)

    def compiled_since_mark(self) -> bool:
        """Whether anything compiled since the last call (and move the mark)."""
        now = self.capture.compile_events
        changed = now != self._mark
        self._mark = now
        return changed

    def warm_up(
        self,
        step: Callable[[], float],
        min_steps: int,
        on_step: Callable[[int], None] | None = None,
    ) -> list[float]:
        """Run steps until one compiles nothing (at least ``min_steps``, at most
        ``MAX_WARMUP_STEPS`` more); returns every warm-up step's wall time."""
        times: list[float] = []
        compiled_flags: list[bool] = []
        self.compiled_since_mark()
        for i in range(max(min_steps, 1) + MAX_WARMUP_STEPS):
            if on_step is not None:
                on_step(i)
            times.append(step())
            compiled_flags.append(self.compiled_since_mark())
            if i + 1 >= min_steps and not compiled_flags[-1] and len(times) >= 2:
                break
        self._compile_times += [t for t, c in zip(times, compiled_flags) if c]
        self._steady += [t for t, c in zip(times, compiled_flags) if not c]
        return times

    def warm_step(self, wall_s: float) -> None:
        """After a warm-up step the caller ran itself (a user's loop): note whether it compiled."""
        (self._compile_times if self.compiled_since_mark() else self._steady).append(wall_s)

    def keep_step(self, wall_s: float | None = None) -> bool:
        """After a measured step: False (and counted) if something compiled during it."""
        if self.compiled_since_mark():
            self.dropped += 1
            if wall_s is not None:
                self._compile_times.append(wall_s)
            return False
        if wall_s is not None:
            self._steady.append(wall_s)
        return True

    def _current_graphs(self) -> list[GraphInfo]:
        n = len(self.capture.builds)
        if n != self._graphs_at:
            self._graphs = self.capture.graphs()
            self._graphs_at = n
        return self._graphs

    def attribute(
        self,
        session: CompiledTraceSession,
        step: OpEvent,
        members: Sequence[OpEvent],
        *,
        device_time: bool,
        step_wall_s: float | None,
        loop: bool = False,
    ) -> StepCharges:
        """Charge one traced step (as ``attribute_step`` does) and keep what else it found."""
        charges, info = attribute_compiled_step(
            step,
            members,
            self._current_graphs(),
            module_index=self._index,
            root=self._root,
            device_time=device_time,
            step_wall_s=step_wall_s,
            loop=loop,
            kernels=session.kernels if device_time else None,
            shapes=session.shapes,
            param_modules=self._param_modules,
            splits=self.table.op_rows,
        )
        self._tally.steps.append(info)
        self.on_attributed(session, step, members, charges, info)
        return charges

    def on_attributed(
        self,
        session: CompiledTraceSession,
        step: OpEvent,
        members: Sequence[OpEvent],
        charges: StepCharges,
        info: CompiledStep,
    ) -> None:
        """Called after each traced step is attributed; a subclass may look at the
        raw events (benchmarks compare with an independent classification)."""

    def forget_last(self) -> None:
        """Drop the last attributed step (it was discarded)."""
        if self._tally.steps:
            self._tally.steps.pop()

    # -- summary ---------------------------------------------------------------
    def summary(self) -> CompiledSummary:
        steps = self._tally.steps
        n = len(steps) or 1
        graphs: dict[str, list[float]] = {}
        phases: dict[str, str] = {}
        fused: dict[tuple[str, str, str], list[Any]] = {}
        unplaced: dict[str, float] = {}
        for s in steps:
            for k, (ph, t, p) in s.graphs.items():
                g = graphs.setdefault(k, [0.0, 0.0])
                g[0] += t / n
                g[1] += p / n
                phases[k] = ph
            for fc in s.fused:
                key = (fc.graph, fc.kernel, fc.phase)
                acc = fused.setdefault(key, [0.0, {}])
                acc[0] += fc.time_s / n
                for m, v in fc.split.items():
                    acc[1][m] = acc[1].get(m, 0.0) + v / n
            for k, v in s.unplaced.items():
                unplaced[k] = unplaced.get(k, 0.0) + v / n
        groups = tuple(
            FusedGroup(kernel, graph, phase, tuple(sorted(split)), t, dict(split))
            for (graph, kernel, phase), (t, split) in sorted(fused.items(), key=lambda kv: -kv[1][0])
        )
        placed = sum(s.placed_s for s in steps) / n
        steady = statistics.median(self._steady) if self._steady else None
        compile_s = (
            sum(t - steady for t in self._compile_times) if steady is not None and self._compile_times else None
        )
        return CompiledSummary(
            backend=self.backend,
            mode=self.mode,
            provenance=placed > 0,
            message=self._message(steps, placed),
            compile_s=compile_s,
            compile_steps=len(self._compile_times),
            compilations=tuple(self.capture.compilations),
            graph_breaks=self.capture.graph_breaks(),
            graphs=tuple(
                GraphTotal(k, phases[k], v[0], v[1]) for k, v in sorted(graphs.items())
            ),
            fused_groups=groups,
            split_rule=(
                "by counted cost of the members' nodes: bytes of memory-bound nodes, FLOPs of "
                f"compute-bound ones at {BALANCE.get(self.device.type, BALANCE['cpu']):g} "
                "FLOP/byte (an estimate)"
            ),
            placed_s=placed,
            unplaced_s=sum(unplaced.values()),
            unplaced_kernels=dict(sorted(unplaced.items(), key=lambda kv: -kv[1])),
            wrapper_s=sum(s.wrapper_s for s in steps) / n,
            accumulate_s=sum(s.accumulate_s for s in steps) / n,
            accumulate_placed_s=sum(s.accumulate_placed_s for s in steps) / n,
            dropped_steps=self.dropped,
        )

    def _message(self, steps: Sequence[CompiledStep], placed: float) -> str | None:
        fallback = "compiled time is shown per graph (unattributed), not per layer"
        if self.backend != "inductor":
            return f"no kernel provenance: backend {self.backend!r} is not Inductor; {fallback}"
        if self.capture.problems:
            return f"no kernel provenance: {self.capture.problems[0]}; {fallback}"
        if self.cuda_graphs and self.device.type == "cuda":
            return (
                f"no kernel provenance per layer under CUDA graphs (mode {self.mode or 'default'} "
                "records them): their replay launches kernels outside the graph calls; "
                f"{fallback}"
            )
        if not self.capture.builds and steps:
            if self.user_compiled:
                return (
                    "no kernel provenance: the model was compiled before layertime started "
                    f"(enter the Profiler before its first call); {fallback}"
                )
            return (
                "no kernel provenance: nothing was compiled while layertime watched (another "
                f"instance of this model may have been compiled earlier in this process); {fallback}"
            )
        if steps and placed == 0:
            return f"no kernel provenance: no kernel event matched a provenance record; {fallback}"
        return None

    def finish(self, run: Run) -> Run:
        """The run with its compiled summary (and a warning when steps were dropped)."""
        summary = self.summary()
        warnings = list(run.warnings)
        if summary.dropped_steps:
            warnings.append(
                f"{summary.dropped_steps} measured step(s) dropped: they compiled "
                "(a recompilation; see compiled.compilations)"
            )
        return replace(run, compiled=summary, warnings=tuple(warnings))


@contextlib.contextmanager
def collecting(collector: CompiledCollector | None) -> Iterator[None]:
    """``with collecting(c):`` is ``with c:`` when there is a collector, else nothing."""
    if collector is None:
        yield
        return
    with collector:
        yield
