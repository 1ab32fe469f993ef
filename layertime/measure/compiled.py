"""Profile a ``torch.compile``d model: compile apart, then charge its kernels to layers.

What the compiler knows, and how it is read (all scoped to the collector's
``with`` block; configs are restored and handlers removed in ``finally``):

* **Node -> module.**  Every FX node Dynamo traces carries ``nn_module_stack``
  (the modules it was called in, innermost last, keyed by the module object's
  id, ``@k`` for its k-th call); AOTAutograd copies the forward node's stack to
  the backward nodes it derives (``fwd_nn_module_stack``, through the forward
  op's sequence number).  A post-grad pass of ours
  (``torch._inductor.config.post_grad_custom_post_pass``, chained after any the
  user set) reads them from each graph Inductor lowers, with each node's counted
  cost.  It changes nothing in the graph.
* **Kernel -> nodes.**  Inductor's provenance tracking
  (``config.trace.provenance_tracking_level = 1``) writes a debug handle before
  every kernel call in the generated wrapper and emits, through torch's
  structured trace (``torch._logging``'s ``trace_structured``, which reaches any
  handler on the ``torch.__trace`` logger), the generated code and the mapping
  ``cppCodeToPost`` from ``kernel:handle`` to post-grad nodes.  The backward is
  lowered together with the forward
  (``torch._functorch.config.force_non_lazy_backward_lowering``) so that its
  mapping is emitted too.  FX-graph and AOTAutograd caches are off in scope: a
  cache hit would skip lowering and leave no provenance.
* **Kernel events.**  On the CPU, Inductor's C++ kernels appear in the profile
  only with ``config.cpp.enable_kernel_profile`` (on in scope); extern kernels
  are aten ops.  On CUDA, Triton kernels are device kernels launched by the
  graph's ``## Call CompiledFxGraph ##`` range.
* **Compile apart.**  Warm-up runs until a step compiles nothing; compilation
  time is the warm-up steps that compiled minus as many steady steps (measured),
  with Dynamo's own per-frame compile times and recompile reasons from its
  ``compilation_metrics``; graph breaks come from its
  ``dynamo_graph_break_reason`` records.  A measured step in which anything
  compiled is dropped and counted.

Feature detection: each config key is set only where this torch has it; where
provenance cannot be had (a backend other than Inductor, a torch without
provenance tracking, a model compiled before the collector started, a custom
post-grad pass that cannot be chained) the summary says so in one line and the
compiled time stays ``unattributed`` with per-graph totals, never guessed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import re
import statistics
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from layertime.compiled_result import (
    COMPILE_MODES,
    Compilation,
    CompiledSummary,
    FusedGroup,
    GraphBreak,
    GraphTotal,
)
from layertime.errors import LayertimeError
from layertime.measure.attribute import StepCharges
from layertime.measure.compiled_attribute import (
    CallSite,
    CompiledStep,
    GraphInfo,
    NodeInfo,
    attribute_compiled_step,
)
from layertime.measure.events import MODULE, STEP, OpEvent, from_profiler_indexed
from layertime.measure.tracer import ModuleTable
from layertime.result import Run

MODES = COMPILE_MODES
#: The logger torch's structured trace writes to.
TRACE_LOGGER = "torch.__trace"
#: FLOPs per byte at which a node counts as compute-bound when fused nodes'
#: costs are put on one scale (weight = max(bytes, FLOPs / balance)): roughly
#: the machine balance of a CPU core and of a data-centre GPU in fp32.
BALANCE = {"cpu": 10.0, "cuda": 20.0}
#: At most this many warm-up steps while waiting for compilation to settle.
MAX_WARMUP_STEPS = 10

#: Ops inside AccumulateGrad whose first input is the gradient (its shape names the parameter).
_SHAPED_OPS = frozenset({"aten::copy_", "aten::new_empty_strided", "aten::detach", "aten::clone",
                         "aten::add_", "aten::empty_strided"})
_HANDLE = re.compile(r"#\s*\[Provenance debug handles\]\s*(\S+)")
_VIEW_TARGETS = frozenset({operator.getitem})


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


def compiled_inner(model: nn.Module) -> nn.Module | None:
    """The original module inside ``torch.compile(module)``, or None if ``model`` is not one."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else None


def compiled_in_place(model: nn.Module) -> bool:
    """True for a module compiled with ``module.compile()`` (its own call is compiled)."""
    return getattr(model, "_compiled_call_impl", None) is not None


# -- nodes -------------------------------------------------------------------


def _tensor_bytes(val: Any) -> int:
    if isinstance(val, torch.Tensor):
        try:
            return int(val.numel()) * val.element_size()
        except (TypeError, ValueError, RuntimeError):
            return 0  # symbolic sizes: no count
    if isinstance(val, (tuple, list)):
        return sum(_tensor_bytes(v) for v in val)
    return 0


def _val(arg: Any) -> Any:
    if isinstance(arg, torch.fx.Node):
        return arg.meta.get("val")
    if isinstance(arg, (tuple, list)):
        return type(arg)(_val(a) for a in arg)
    return arg


def node_cost(node: torch.fx.Node) -> tuple[int, int]:
    """(FLOPs, bytes) of one post-grad node, as if it ran alone.

    FLOPs from ``torch.utils.flop_counter``'s formulas (matmuls, convolutions);
    bytes are its inputs and output (zero for views and ``getitem``, which move
    nothing).  A formula that cannot take the node's shapes counts no FLOPs.
    """
    from torch.utils.flop_counter import flop_registry

    target = node.target
    if target in _VIEW_TARGETS or getattr(target, "is_view", False):
        moved = 0
    else:
        moved = _tensor_bytes(node.meta.get("val")) + sum(
            _tensor_bytes(a.meta.get("val")) for a in node.all_input_nodes
        )
    flops = 0
    packet = getattr(target, "overloadpacket", None)
    formula = flop_registry.get(packet) if packet is not None else None
    if formula is not None:
        args = [_val(a) for a in node.args]
        kwargs = {k: _val(v) for k, v in node.kwargs.items()}
        try:
            flops = int(formula(*args, **kwargs, out_val=node.meta.get("val")))
        except (TypeError, ValueError, RuntimeError, NotImplementedError, IndexError, KeyError):
            flops = 0
    return flops, moved


_SOURCE_ROOT = re.compile(r"^[A-Za-z_]+\[[^\]]*\]")
_SUBSCRIPT = re.compile(r"\[['\"]?([^'\"\]]+)['\"]?\]")


def module_path(source: str) -> str:
    """Dynamo's module source (``L['self'].features[0]``) as a dotted path (``features.0``)."""
    s = _SOURCE_ROOT.sub("", source, count=1)
    s = re.sub(r"\._(?:modules|parameters|buffers)\[", "[", s)
    s = _SUBSCRIPT.sub(r".\1", s)
    return s.lstrip(".")


class ModuleNames:
    """Resolves ``nn_module_stack`` entries to the model's dotted module names."""

    def __init__(self, model: nn.Module) -> None:
        self.by_id = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
        self.names = set(self.by_id.values())

    def resolve(self, key: str, source: str) -> str | None:
        ident = key.split("@", 1)[0]
        if ident.isdigit() and int(ident) in self.by_id:
            return self.by_id[int(ident)]
        path = module_path(source)
        return path if path in self.names else None


def _innermost(stack: Any) -> tuple[str, str] | None:
    if not isinstance(stack, Mapping) or not stack:
        return None
    key, value = list(stack.items())[-1]
    source = value[0] if isinstance(value, (tuple, list)) and value else str(value)
    return str(key), str(source)


@dataclass
class NodeCapture:
    """One graph as our post-grad pass saw it."""

    phase: str
    nodes: dict[str, NodeInfo]


def capture_nodes(graph: torch.fx.Graph, names: ModuleNames, balance: float) -> NodeCapture:
    """Module, call and cost of every call_function node of a post-grad graph.

    A node with an empty module stack is functional code in the model's own
    ``forward`` (the ``""`` row); one with none at all was made by the compiler
    (a buffer write-back) and takes the module of its first input that has one.
    A graph input takes the module of its first user (op ``placeholder``).
    """
    placeholders = [n.name for n in graph.nodes if n.op == "placeholder"]
    phase = "backward" if any(p.startswith("tangents") for p in placeholders) else "forward"
    out: dict[str, NodeInfo] = {}
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        stack = n.meta.get("nn_module_stack")
        if stack is None:
            stack = n.meta.get("fwd_nn_module_stack")
        module: str | None = None
        call: str | None = None
        inner = _innermost(stack)
        if inner is not None:
            module = names.resolve(*inner)
            call = inner[0]
        elif isinstance(stack, Mapping):
            module, call = "", None
        else:
            for a in n.all_input_nodes:
                got = out.get(a.name)
                if got is not None and got.module is not None:
                    module = got.module
                    break
        flops, moved = node_cost(n)
        if not n.all_input_nodes and moved <= 8:
            moved = 0  # a scalar constant (CSE may share it across layers): no work
        schema = getattr(n.target, "_schema", None)
        op = str(schema.name) if schema is not None else None
        out[n.name] = NodeInfo(module, call, max(float(moved), flops / balance), op)
    # Graph inputs (a kernel may only copy them, e.g. into the layout a conv wants):
    # the module of their first user with one.
    for n in graph.nodes:
        if n.op != "placeholder":
            continue
        user = next(
            (out[u.name].module for u in n.users if u.name in out and out[u.name].module is not None),
            None,
        )
        out[n.name] = NodeInfo(user, None, float(_tensor_bytes(n.meta.get("val"))), "placeholder")
    return NodeCapture(phase, out)


# -- the structured trace -----------------------------------------------------


@dataclass
class _GraphBuild:
    compile_id: str | None
    code: str
    nodes: NodeCapture | None
    mapping: dict[str, Any] | None = None


def _event_name(kernel: str) -> tuple[str, bool]:
    """(profiler event name, generated?) of a call site's kernel name."""
    if kernel.startswith("extern_kernels."):
        return "aten::" + kernel.split(".", 1)[1], False
    name = kernel[len("torch.ops.") :] if kernel.startswith("torch.ops.") else kernel
    if "." in name:
        ns, op = name.split(".")[:2]
        return f"{ns}::{op}", False
    return kernel, True


def call_sites(code: str, mapping: Mapping[str, Any] | None) -> tuple[CallSite, ...]:
    """The kernel calls of a generated wrapper, in order, with their post-grad nodes."""
    start = code.find("def call(")
    body = code[start:] if start >= 0 else code
    post = (mapping or {}).get("cppCodeToPost") or {}
    sites = []
    for m in _HANDLE.finditer(body):
        tag = m.group(1)
        kernel = tag.rsplit(":", 1)[0] if re.search(r":\d+$", tag) else tag
        nodes = post.get(tag, post.get(kernel))
        event, generated = _event_name(kernel)
        sites.append(
            CallSite(kernel, event, generated, tuple(nodes) if isinstance(nodes, list) else None)
        )
    return tuple(sites)


def _compile_id(meta: Mapping[str, Any]) -> str | None:
    f, c = meta.get("frame_id"), meta.get("frame_compile_id")
    return f"{f}/{c}" if f is not None and c is not None else None


def _break_reason(payload: str) -> GraphBreak:
    lines = [ln.strip() for ln in payload.splitlines()]
    location = ""
    reason = ""
    for i, ln in enumerate(lines):
        if ln.startswith("Graph break in user code at "):
            location = ln[len("Graph break in user code at ") :]
        if ln.startswith("Graph Break Reason:"):
            rest = ln[len("Graph Break Reason:") :].strip()
            following = [x for x in lines[i + 1 :] if x]
            reason = following[0] if following else rest
            break
    if not reason:
        reason = next((x for x in lines if x), "unknown")
    return GraphBreak(reason=reason[:200], location=location)


class _Recorder:
    """Our post-grad pass: reads the graph, changes nothing, then runs the user's pass."""

    def __init__(self, capture: ProvenanceCapture, previous: Any) -> None:
        self._capture = capture
        self._previous = previous

    def __call__(self, graph: torch.fx.Graph) -> None:
        if self._previous is not None:
            self._previous(graph)
        self._capture._on_graph(graph)


class _TraceHandler(logging.Handler):
    def __init__(self, capture: ProvenanceCapture) -> None:
        super().__init__(level=logging.DEBUG)
        self._capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "metadata", None)
        if isinstance(meta, Mapping):
            self._capture._on_record(meta, getattr(record, "payload", None))


class ProvenanceCapture:
    """While open: compile with provenance, record every graph, compilation and break.

    Thread-safe counters (Inductor may log from its own threads); read the
    results after the block or between steps.
    """

    def __init__(self, model: nn.Module, device: torch.device, backend: str = "inductor") -> None:
        self._names = ModuleNames(model)
        self._balance = BALANCE.get(device.type, BALANCE["cpu"])
        self.backend = backend
        self._lock = threading.Lock()
        self._stack: contextlib.ExitStack | None = None
        self._pending_nodes: NodeCapture | None = None
        self.builds: list[_GraphBuild] = []
        self.compilations: list[Compilation] = []
        self.breaks: dict[tuple[str, str], int] = {}
        #: Compile-related records seen: a step during which this moves compiled something.
        self.compile_events = 0
        #: Why provenance is unavailable, if it is (one line each).
        self.problems: list[str] = []

    # -- scope ---------------------------------------------------------------
    def __enter__(self) -> ProvenanceCapture:
        stack = contextlib.ExitStack()
        try:
            self._patch(stack)
            logger = logging.getLogger(TRACE_LOGGER)
            handler = _TraceHandler(self)
            level = logger.level
            if not logger.isEnabledFor(logging.DEBUG):
                logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)

            def restore() -> None:
                logger.removeHandler(handler)
                logger.setLevel(level)

            stack.callback(restore)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def _patch(self, stack: contextlib.ExitStack) -> None:
        import torch._inductor.config as ic

        patches: dict[str, Any] = {}
        trace = getattr(ic, "trace", None)
        if self.backend == "inductor":
            if trace is not None and hasattr(trace, "provenance_tracking_level"):
                patches["trace.provenance_tracking_level"] = 1
            else:
                self.problems.append(
                    f"this torch ({torch.__version__}) has no Inductor provenance tracking"
                )
        cpp = getattr(ic, "cpp", None)
        if cpp is not None and hasattr(cpp, "enable_kernel_profile"):
            patches["cpp.enable_kernel_profile"] = True
        if hasattr(ic, "fx_graph_cache"):
            patches["fx_graph_cache"] = False
        if hasattr(ic, "post_grad_custom_post_pass"):
            previous = ic.post_grad_custom_post_pass
            if isinstance(previous, (list, tuple)):
                patches["post_grad_custom_post_pass"] = (*previous, _Recorder(self, None))
            elif previous is None or callable(previous):
                patches["post_grad_custom_post_pass"] = _Recorder(self, previous)
            else:
                self.problems.append("a post-grad custom pass is set that cannot be chained")
        else:
            self.problems.append(f"this torch ({torch.__version__}) has no post-grad pass hook")
        stack.enter_context(ic.patch(patches))
        try:
            import torch._functorch.config as fc
        except ImportError:
            return
        fpatch = {
            k: v
            for k, v in (("force_non_lazy_backward_lowering", True), ("enable_autograd_cache", False))
            if hasattr(fc, k)
        }
        if fpatch:
            stack.enter_context(fc.patch(fpatch))

    # -- callbacks -----------------------------------------------------------
    def _on_graph(self, graph: torch.fx.Graph) -> None:
        nodes = capture_nodes(graph, self._names, self._balance)
        with self._lock:
            self._pending_nodes = nodes

    def _on_record(self, meta: Mapping[str, Any], payload: Any) -> None:
        with self._lock:
            if "inductor_output_code" in meta and isinstance(payload, str):
                self.builds.append(_GraphBuild(_compile_id(meta), payload, self._pending_nodes))
                self._pending_nodes = None
                self.compile_events += 1
                return
            art = meta.get("artifact")
            name = art.get("name") if isinstance(art, Mapping) else None
            if name == "inductor_provenance_tracking_node_mappings" and isinstance(payload, str):
                if self.builds:
                    try:
                        data = json.loads(payload)
                    except ValueError:
                        data = None
                    if isinstance(data, dict):
                        self.builds[-1].mapping = data
                return
            if name == "dynamo_graph_break_reason" and isinstance(payload, str):
                gb = _break_reason(payload)
                key = (gb.reason, gb.location)
                self.breaks[key] = self.breaks.get(key, 0) + 1
                return
            metrics = meta.get("compilation_metrics")
            if isinstance(metrics, Mapping):
                seconds = metrics.get("entire_frame_compile_time_s")
                reason = metrics.get("recompile_reason") or metrics.get("fail_reason")
                self.compilations.append(
                    Compilation(
                        str(metrics.get("compile_id") or _compile_id(meta) or "?"),
                        float(seconds) if isinstance(seconds, (int, float)) else None,
                        str(reason) if reason else None,
                    )
                )
                self.compile_events += 1
                return
            if isinstance(meta.get("bwd_compilation_metrics"), Mapping) or "dynamo_start" in meta:
                self.compile_events += 1

    # -- results -------------------------------------------------------------
    def graphs(self) -> list[GraphInfo]:
        """Every graph lowered so far, with its call sites and nodes."""
        with self._lock:
            builds = list(self.builds)
        out = []
        for b in builds:
            sites = call_sites(b.code, b.mapping)
            phase = b.nodes.phase if b.nodes is not None else "forward"
            nodes = b.nodes.nodes if b.nodes is not None else {}
            out.append(GraphInfo(b.compile_id, phase, sites, nodes))
        return out

    def graph_breaks(self) -> tuple[GraphBreak, ...]:
        with self._lock:
            return tuple(GraphBreak(r, loc, n) for (r, loc), n in self.breaks.items())


# -- the traced step ------------------------------------------------------------


class CompiledTraceSession:
    """``torch.profiler`` around one step of a compiled model, like ``TraceSession``.

    Only the compiled wrapper gets a range (``layertime::module::<root>``),
    from a hook on the wrapper, which Dynamo does not trace; the modules inside
    get none (hooks added after compilation would not run in compiled code, or
    would recompile it).  Keeps, per CPU event, the device kernels it launched.
    """

    def __init__(self, wrapper: nn.Module, root: int, device: torch.device) -> None:
        import os

        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
        self._wrapper = wrapper
        self._label = f"{MODULE}{root}"
        self._handles: list[Any] = []
        self._open: list[Any] = []
        acts = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        # Shapes tell which parameter an AccumulateGrad after a compiled backward is for.
        self._prof = torch.profiler.profile(activities=acts, record_shapes=True)
        self._step_range: Any = None
        self.events: list[OpEvent] = []
        self.kernels: dict[int, list[tuple[str, float]]] = {}
        self.shapes: dict[int, tuple[int, ...]] = {}

    def _install(self) -> None:
        enter = torch.ops.profiler._record_function_enter_new
        exit_ = torch.ops.profiler._record_function_exit._RecordFunction

        def pre(_m: nn.Module, _a: Any) -> None:
            self._open.append(enter(self._label, None))

        def post(_m: nn.Module, _a: Any, _o: Any) -> None:
            if self._open:
                exit_(self._open.pop())

        self._handles.append(self._wrapper.register_forward_pre_hook(pre))
        self._handles.append(self._wrapper.register_forward_hook(post, always_call=True))

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._open.clear()

    def start(self) -> None:
        self._install()
        try:
            self._prof.__enter__()
        except BaseException:
            self._remove()
            raise

    def enter_step(self) -> None:
        self._step_range = torch.ops.profiler._record_function_enter_new(STEP, None)

    def exit_step(self) -> None:
        if self._step_range is not None:
            torch.ops.profiler._record_function_exit._RecordFunction(self._step_range)
            self._step_range = None

    def stop(self) -> list[OpEvent]:
        try:
            self.exit_step()
            self._prof.__exit__(None, None, None)
        finally:
            self._remove()
        raw = list(self._prof.events())
        self.events, index = from_profiler_indexed(raw)
        for e in raw:
            # Keyed like the OpEvents: the ids from_profiler gave (profiler ids
            # are not unique on CUDA).
            new_id = index.get(id(e))
            if new_id is None:
                continue
            if e.name in _SHAPED_OPS:
                first = next((s for s in (getattr(e, "input_shapes", None) or ()) if s), None)
                if first:
                    self.shapes[new_id] = tuple(int(d) for d in first)
            ks = getattr(e, "kernels", None)
            if ks and str(getattr(e, "device_type", "CPU")).endswith("CPU"):
                # Less a range's GPU-side mirror (Kineto's annotation, same name).
                self.kernels[new_id] = [
                    (str(getattr(k, "name", "")), float(getattr(k, "duration", 0.0) or 0.0))
                    for k in ks
                    if str(getattr(k, "name", "")) != str(e.name)
                ]
        return self.events

    def abort(self) -> None:
        try:
            self.exit_step()
            self._prof.__exit__(None, None, None)
        finally:
            self._remove()


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
    ) -> None:
        self.wrapper = wrapper
        self.model = model
        self.table = table
        self.device = device
        self.backend = backend
        self.mode = mode
        self.user_compiled = user_compiled
        self.capture = ProvenanceCapture(model, device, backend)
        self._index = {e.name: e.index for e in table}
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
        backend = _backend_name(wrapper)
        return cls(wrapper, inner, table, device, backend=backend, mode=None, user_compiled=True)

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
        if self.mode == "reduce-overhead" and self.device.type == "cuda":
            return (
                "no kernel provenance per layer under CUDA graphs (mode reduce-overhead): their "
                f"replay launches kernels outside the graph calls; {fallback}"
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


def _backend_name(wrapper: nn.Module) -> str:
    """The backend a user's ``torch.compile`` used, read from Dynamo's wrapper (``inductor``
    when it cannot be read: then a missing provenance is reported as such)."""
    obj: Any = getattr(getattr(wrapper, "dynamo_ctx", None), "callback", None)
    for _ in range(8):
        if obj is None:
            break
        name = getattr(obj, "compiler_name", None)
        if isinstance(name, str) and name:
            return "inductor" if "inductor" in name else name
        nxt = getattr(obj, "_torchdynamo_orig_backend", None)
        if nxt is None or nxt is obj:
            fn = getattr(obj, "__name__", None)
            if isinstance(fn, str) and fn and not fn.startswith("<"):
                return "inductor" if "inductor" in fn else fn
            break
        obj = nxt
    return "inductor"


@contextlib.contextmanager
def collecting(collector: CompiledCollector | None) -> Iterator[None]:
    """``with collecting(c):`` is ``with c:`` when there is a collector, else nothing."""
    if collector is None:
        yield
        return
    with collector:
        yield
