"""Read what the compiler knows while it compiles: each graph's kernel calls, the FX
nodes behind every call, and each node's module and counted cost (part of
:mod:`layertime.measure.compiled.collector`; everything here is scoped to the capture's ``with``
block: configs are restored and handlers removed in ``finally``).

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
* **Compilations.**  Dynamo's own per-frame compile times and recompile reasons
  come from its ``compilation_metrics``; graph breaks from its
  ``dynamo_graph_break_reason`` records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layertime.measure.compiled.graphs import CallSite, GraphInfo, NodeInfo
from layertime.results.compiled import Compilation, GraphBreak

#: The logger torch's structured trace writes to.
TRACE_LOGGER = "torch.__trace"
#: FLOPs per byte at which a node counts as compute-bound when fused nodes'
#: costs are put on one scale (weight = max(bytes, FLOPs / balance)): roughly
#: the machine balance of a CPU core and of a data-centre GPU in fp32.
BALANCE = {"cpu": 10.0, "cuda": 20.0}

_HANDLE = re.compile(r"#\s*\[Provenance debug handles\]\s*(\S+)")
_VIEW_TARGETS = frozenset({operator.getitem})


# -- nodes -------------------------------------------------------------------


def _hint(x: Any) -> int:
    """An int, or a symbolic size's hint (its value in the example being compiled).

    Never ``int(sym)``: that guards on the value, which specialises a ``dynamic=True``
    model to the example's sizes (a recompilation for every new size).  A size
    without a hint counts as 0.
    """
    if isinstance(x, torch.SymInt):
        from torch.fx.experimental import symbolic_shapes

        # The no-guard hint: optimization_hint in newer torch, hint_int before.
        hint = getattr(symbolic_shapes, "optimization_hint", None) or getattr(
            symbolic_shapes, "hint_int", None
        )
        if hint is not None:
            return int(hint(x, fallback=0))
        value = x.node.hint
        return int(value) if value is not None else 0
    return int(x)


def _symbolic(t: torch.Tensor) -> bool:
    return any(isinstance(d, torch.SymInt) for d in (*t.shape, *t.stride()))


def _tensor_bytes(val: Any) -> int:
    if isinstance(val, torch.Tensor):
        try:
            return _hint(val.numel()) * val.element_size()
        except (TypeError, ValueError, RuntimeError):
            return 0  # no count
    if isinstance(val, (tuple, list)):
        return sum(_tensor_bytes(v) for v in val)
    return 0


def _concrete(val: Any) -> Any:
    """``val`` with symbolic sizes replaced by their hints (a meta tensor of the hinted
    shape for a tensor), so that a FLOP formula computes on ints and guards nothing."""
    if isinstance(val, torch.SymInt):
        return _hint(val)
    if isinstance(val, torch.Tensor) and _symbolic(val):
        return torch.empty_strided(
            [_hint(d) for d in val.shape], [_hint(s) for s in val.stride()],
            dtype=val.dtype, device="meta",
        )
    if isinstance(val, (tuple, list)):
        return type(val)(_concrete(v) for v in val)
    return val


def _val(arg: Any) -> Any:
    if isinstance(arg, torch.fx.Node):
        return _concrete(arg.meta.get("val"))
    if isinstance(arg, (tuple, list)):
        return type(arg)(_val(a) for a in arg)
    return _concrete(arg)


def node_cost(node: torch.fx.Node) -> tuple[int, int]:
    """(FLOPs, bytes) of one post-grad node, as if it ran alone.

    FLOPs from ``torch.utils.flop_counter``'s formulas (matmuls, convolutions);
    bytes are its inputs and output (zero for views and ``getitem``, which move
    nothing).  A formula that cannot take the node's shapes counts no FLOPs.  Symbolic
    sizes (``dynamic=True``) count at their hints, and are never guarded on.
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
            flops = _hint(formula(*args, **kwargs, out_val=_concrete(node.meta.get("val"))))
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
    """Resolves ``nn_module_stack`` entries to the model's dotted module names.

    A module registered under several names (a shared activation reused inside a
    ``Sequential``) has one row, under its first name in ``named_modules()`` order as
    in :class:`~layertime.modules.ModuleTable`; every path to it resolves to that name.
    """

    def __init__(self, model: nn.Module) -> None:
        self.by_id: dict[int, str] = {}
        #: Every path to a module -> the module's first name.
        self.names: dict[str, str] = {}
        for name, m in model.named_modules(remove_duplicate=False):
            first = self.by_id.setdefault(id(m), name)
            self.names[name] = first

    def resolve(self, key: str, source: str) -> str | None:
        ident = key.split("@", 1)[0]
        if ident.isdigit() and int(ident) in self.by_id:
            return self.by_id[int(ident)]
        return self.names.get(module_path(source))


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
            # Dynamo counts calls per path (``@k``): a module reached by two paths has
            # the same key on each, so the path tells those calls apart.
            call = f"{inner[0]} {inner[1]}"
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


#: A call of an aten op (or another registered op) in the generated wrapper, at the start
#: of a statement: ``aten.scatter_reduce_.two(buf1, ...)``, ``buf2 = torch.ops.aten.x.default(``.
_OP_CALL = re.compile(r"^\s*(?:\w+\s*=\s*)?((?:aten|torch\.ops\.\w+)\.\w+(?:\.\w+)?)\(")
_KERNEL_CALL = re.compile(r"^\s*(?:\w+\s*=\s*)?([A-Za-z_][\w.]*)\((.*)$")
_BUFFER = re.compile(r"\bbuf\d+\b")


def call_sites(code: str, mapping: Mapping[str, Any] | None) -> tuple[CallSite, ...]:
    """The kernel calls of a generated wrapper, in order, with their post-grad nodes.

    Inductor writes a provenance handle before each kernel call it tracks.  A few
    fallbacks it calls without one (``aten.scatter_reduce_`` for a ``scatter_add``, as in
    max-pool's backward on the CPU) work on buffers that the tracked kernel before them
    wrote (their inputs, prepared there): such a call borrows that kernel's nodes
    (``CallSite.borrowed``), so that it lands on the same layers; without such a kernel
    its nodes are unknown (None).
    """
    start = code.find("def call(")
    body = code[start:] if start >= 0 else code
    post = (mapping or {}).get("cppCodeToPost") or {}
    sites: list[CallSite] = []
    #: Buffers each site's call took (an output it wrote is among them).
    took: list[set[str]] = []
    pending: CallSite | None = None
    for line in body.splitlines():
        m = _HANDLE.search(line)
        if m is not None:
            tag = m.group(1)
            kernel = tag.rsplit(":", 1)[0] if re.search(r":\d+$", tag) else tag
            nodes = post.get(tag, post.get(kernel))
            event, generated = _event_name(kernel)
            pending = CallSite(
                kernel, event, generated, tuple(nodes) if isinstance(nodes, list) else None
            )
            sites.append(pending)
            took.append(set())
            continue
        if line.lstrip().startswith("#"):
            continue
        call = _KERNEL_CALL.match(line)
        if pending is not None:
            if call is not None:  # the tracked kernel's own call: its buffers
                took[-1].update(_BUFFER.findall(call.group(2)))
                pending = None
            continue
        op = _OP_CALL.match(line)
        if op is None:
            continue
        args = set(_BUFFER.findall(line[op.end() :]))
        source = next((i for i in range(len(sites) - 1, -1, -1) if took[i] & args), None)
        event, _ = _event_name(op.group(1))
        borrowed = sites[source].nodes if source is not None else None
        sites.append(CallSite(op.group(1), event, False, borrowed, borrowed is not None))
        took.append(args)
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
