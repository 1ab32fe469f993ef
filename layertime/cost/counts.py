"""Count one training step's work per layer by running it, normally on the meta device.

Two modes watch one step of a model whose tensors are usually on the meta
device (shapes without data, so nothing is computed or allocated):

* a ``TorchFunctionMode`` sees every torch call of the forward and the loss;
  after each call it claims the new autograd nodes it created for the
  innermost module running (module pre/post hooks keep that stack);
* a ``TorchDispatchMode`` sees every aten op of forward and backward.  A
  forward op is charged to the innermost module; a backward op to the module
  whose forward created the autograd node running it
  (``torch._C._current_autograd_node``).

Input- versus weight-gradient work is decided by the autograd graph, not by
shapes: a node whose every input edge leads to parameters (``TBackward`` of
a weight, ``AccumulateGrad``) only makes weight gradients; in a node with
both kinds of edge (``AddmmBackward0``, ``MmBackward0``, ``BmmBackward0``, ...)
each op is matched, by storage, to the gradients the node returns, and is
charged to ``backward_weight`` when everything it contributes to is a
parameter's gradient.  ``aten.convolution_backward`` computes both in one
op and is split by its ``output_mask``.  What autograd does not run (no
input gradient of a first layer, no weight gradient of a frozen parameter)
is therefore never counted.

FLOPs come from ``torch.utils.flop_counter.flop_registry`` (2 x MACs); the
convolution weight-gradient formula there ignores groups and is divided by
them here.  Ops with no formula are kept, with their bytes, as
``not_counted``.  The optimizer update is charged per parameter element by
``layertime.cost.update``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from layertime.cost.update import UpdateRule, update_rule
from layertime.errors import LayertimeError
from layertime.modules import ModuleEntry, ModuleTable, training_mode
from layertime.results.cost import (
    CONVENTIONS,
    CostResult,
    LayerCost,
    MemoryBytes,
    OpWork,
    PhaseCounts,
)
from layertime.workload import DTYPES, Batch, WorkloadSpec, main_output

aten = torch.ops.aten

#: Scope index of the loss (step-level work outside the model).
LOSS = -1
#: Name of the loss row (parenthesised so that it never equals a module path).
LOSS_NAME = "(loss)"

#: Ops whose FLOP count is zero by definition: they move or make data.
_NO_ARITHMETIC: frozenset[str] = frozenset(
    "aten." + n
    for n in (
        "copy_ clone _to_copy cat stack constant_pad_nd zeros zeros_like ones ones_like "
        "full full_like fill_ zero_ new_zeros new_ones new_full scalar_tensor index_select "
        "gather index slice_backward select_backward as_strided_scatter slice_scatter "
        "select_scatter diagonal_backward roll flip repeat narrow_copy masked_select "
        "_unsafe_index lift_fresh_copy channel_shuffle pixel_shuffle pixel_unshuffle "
        "native_channel_shuffle col2im im2col"
    ).split()
)
#: Ops that only allocate: nothing moved, nothing computed, not listed.
_ALLOCATION: frozenset[str] = frozenset(
    "aten." + n for n in ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")
)
_CONV_OPS: frozenset[str] = frozenset(
    "aten." + n
    for n in (
        "convolution",
        "_convolution",
        "cudnn_convolution",
        "_slow_conv2d_forward",
        "convolution_overrideable",
        "convolution_backward",
    )
)
_MATMUL_OPS: frozenset[str] = frozenset(
    "aten." + n for n in ("mm", "addmm", "bmm", "baddbmm", "_scaled_mm")
)


def _math_class(name: str) -> str:
    """Which peak an op runs at: convolution, matrix multiply (attention too), or other."""
    if name in _CONV_OPS:
        return "conv"
    if name in _MATMUL_OPS or "attention" in name:
        return "matmul"
    return "other"


def storage_key(t: torch.Tensor) -> int:
    """An identity for a tensor's storage, valid while the storage lives (meta included)."""
    try:
        return int(t.untyped_storage()._cdata)
    except (RuntimeError, NotImplementedError, AttributeError):
        return id(t)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor view covers (expanded dims count once)."""
    n = t.numel()
    if n == 0:
        return 0
    span = 1
    for size, stride in zip(t.shape, t.stride()):
        span += (size - 1) * abs(stride)
    return min(n, span) * t.element_size()


def _distinct_bytes(tensors: Sequence[torch.Tensor]) -> int:
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for t in tensors:
        key: tuple[Any, ...]
        try:
            key = (storage_key(t), t.storage_offset(), tuple(t.shape), t.stride())
        except (RuntimeError, NotImplementedError):
            key = (id(t),)
        if key in seen:
            continue
        seen.add(key)
        total += tensor_bytes(t)
    return total


def _tensors(obj: Any) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(obj)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


def _bind(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    names = [a.name for a in func._schema.arguments]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


@dataclass
class _Tally:
    """Mutable per-(op, phase) sums for one scope; private to one count."""

    calls: int = 0
    flops: int = 0
    bytes_moved: int = 0
    status: str = "formula"
    math: str = "other"


@dataclass
class _Pending:
    """A backward op of a node with both input and weight edges, waiting for the node's result."""

    name: str
    flops: int
    bytes_moved: int
    status: str
    owner: int
    in_keys: frozenset[int]
    out_keys: frozenset[int]
    #: Keeps the outputs alive until the node ends, so their storage keys stay unique.
    keep: list[torch.Tensor] = field(default_factory=list)


class _StepState:
    """Everything one count learns; lives for one ``count_step`` call only."""

    def __init__(self, table: ModuleTable, param_owner: Mapping[int, int]) -> None:
        self.table = table
        self.param_owner = dict(param_owner)  # id(param) -> scope index
        self.param_keys: set[int] = set()
        self.stack: list[int] = []
        self.in_loss = False
        self.in_backward = False
        #: True while making data (the targets), which is not part of the step.
        self.paused = False
        self.node_owner: dict[Any, int] = {}
        self.weight_side: dict[Any, bool] = {}
        self.tallies: dict[int, dict[tuple[str, str], _Tally]] = {}
        self.producer: dict[int, int] = {}
        self.saved_keys: set[int] = set()
        self.saved_bytes: dict[int, int] = {}
        self.output_bytes: dict[int, int] = {}
        self.calls: dict[int, int] = {}
        self.pending: dict[Any, list[_Pending]] = {}

    # -- scopes ------------------------------------------------------------
    def current(self) -> int:
        if self.stack:
            return self.stack[-1]
        return LOSS if self.in_loss else 0

    def charge(
        self, owner: int, name: str, phase: str, flops: int, moved: int, status: str, calls: int = 1
    ) -> None:
        t = self.tallies.setdefault(owner, {}).setdefault((name, phase), _Tally())
        t.calls += calls
        t.flops += flops
        t.bytes_moved += moved
        t.status = status
        t.math = _math_class(name)

    # -- autograd nodes ----------------------------------------------------
    def claim(self, objs: Sequence[Any]) -> None:
        """Give every unclaimed autograd node reachable from ``objs`` to the current scope."""
        owner = self.current()
        for t in objs:
            if not isinstance(t, torch.Tensor):
                continue
            root = t.grad_fn
            if root is None or root in self.node_owner:
                continue
            stack: list[tuple[Any, bool]] = [(root, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    children = [n for n, _ in node.next_functions if n is not None]
                    self.weight_side[node] = bool(children) and all(
                        self.weight_side.get(c, False) for c in children
                    )
                    continue
                if node in self.node_owner:
                    continue
                var = getattr(node, "variable", None)
                if isinstance(var, torch.Tensor):  # AccumulateGrad of a leaf
                    p_owner = self.param_owner.get(id(var))
                    self.node_owner[node] = p_owner if p_owner is not None else owner
                    self.weight_side[node] = p_owner is not None
                    continue
                self.node_owner[node] = owner
                stack.append((node, True))
                for child, _ in node.next_functions:
                    if child is not None and child not in self.node_owner:
                        stack.append((child, False))

    def mixed_nodes(self) -> list[Any]:
        """Nodes with both a weight-side and an input-side edge."""
        out = []
        for node in self.node_owner:
            if self.weight_side.get(node, False) or hasattr(node, "variable"):
                continue
            children = [n for n, _ in node.next_functions if n is not None]
            sides = {self.weight_side.get(n, False) for n in children}
            if sides == {True, False}:
                out.append(node)
        return out

    def resolve_pending(self, node: Any, grads: Sequence[Any]) -> None:
        """Charge a mixed node's ops: weight phase if they feed only parameters' gradients."""
        ops = self.pending.pop(node, [])
        if not ops:
            return
        labels: list[set[bool]] = [set() for _ in ops]

        def mark(key: int, before: int, weight: bool) -> None:
            work = [(key, before)]
            while work:
                k, limit = work.pop()
                for j in range(limit - 1, -1, -1):
                    if k in ops[j].out_keys:
                        if weight not in labels[j]:
                            labels[j].add(weight)
                            work.extend((ik, j) for ik in ops[j].in_keys)
                        break

        for (child, _), g in zip(node.next_functions, grads):
            if child is None or not isinstance(g, torch.Tensor):
                continue
            mark(storage_key(g), len(ops), self.weight_side.get(child, False))
        for op, lab in zip(ops, labels):
            phase = "backward_weight" if lab == {True} else "backward_input"
            self.charge(op.owner, op.name, phase, op.flops, op.bytes_moved, op.status)

    def flush_pending(self) -> None:
        for node in list(self.pending):
            for op in self.pending.pop(node):
                self.charge(
                    op.owner, op.name, "backward_input", op.flops, op.bytes_moved, op.status
                )

    # -- ops ---------------------------------------------------------------
    def on_op(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> None:
        name = str(func._overloadpacket)
        if self.paused or func.is_view or name in _ALLOCATION:
            return
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
        if not self.in_backward:
            owner = self.current()
            for t in outs:
                self.producer[storage_key(t)] = owner
            flops, status = self._flops(func, args, kwargs, out)
            moved = _distinct_bytes(ins) + _distinct_bytes(outs)
            self.charge(owner, name, "forward", flops, moved, status)
            return
        node = torch._C._current_autograd_node()
        owner = self.node_owner.get(node, 0) if node is not None else LOSS
        weight_only = node is not None and self.weight_side.get(node, False)
        if func._overloadpacket is aten.convolution_backward and not weight_only:
            self._conv_backward(owner, func, args, kwargs, out)
            return
        flops, status = self._flops(func, args, kwargs, out)
        moved = _distinct_bytes(ins) + _distinct_bytes(outs)
        if weight_only:
            self.charge(owner, name, "backward_weight", flops, moved, status)
        elif node is not None and node in self.pending:
            self.pending[node].append(
                _Pending(
                    name,
                    flops,
                    moved,
                    status,
                    owner,
                    frozenset(storage_key(t) for t in ins),
                    frozenset(storage_key(t) for t in outs),
                    outs,
                )
            )
        else:
            self.charge(owner, name, "backward_input", flops, moved, status)

    def _flops(
        self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any
    ) -> tuple[int, str]:
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            return int(formula(*args, **kwargs, out_val=out)), "formula"
        if str(func._overloadpacket) in _NO_ARITHMETIC:
            return 0, "none"
        return 0, "not_counted"

    def _conv_backward(
        self, owner: int, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        """Split one ``convolution_backward`` into its input- and weight-gradient parts."""
        b = _bind(func, args, kwargs)
        mask = list(b["output_mask"])
        groups = int(b["groups"])
        formula = flop_registry[aten.convolution_backward]
        names = [a.name for a in func._schema.arguments]
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        name = str(func._overloadpacket)
        grad_out, x, w = b["grad_output"], b["input"], b["weight"]

        def with_mask(m: list[bool]) -> list[Any]:
            return [m if n == "output_mask" else b[n] for n in names]

        if mask[0]:
            f_in = int(formula(*with_mask([True, False, False]), out_val=out))
            moved = _distinct_bytes([grad_out, w]) + tensor_bytes(outs[0])
            self.charge(owner, name, "backward_input", f_in, moved, "formula")
        if mask[1] or mask[2]:
            f_w = 0
            if mask[1]:
                # torch's formula treats every weight-gradient conv as ungrouped:
                # with g groups it counts C_in*C_out instead of C_in*C_out/g per
                # kernel tap and output position, g times the work.
                f_w = int(formula(*with_mask([False, True, False]), out_val=out)) // groups
            written = [t for t, m in zip(outs[1:], mask[1:]) if m and isinstance(t, torch.Tensor)]
            moved = _distinct_bytes([grad_out, x]) + sum(tensor_bytes(t) for t in written)
            self.charge(owner, name, "backward_weight", f_w, moved, "formula")

    # -- memory ------------------------------------------------------------
    def on_save(self, t: torch.Tensor) -> torch.Tensor:
        if not self.in_backward:
            key = storage_key(t)
            if key not in self.param_keys and key not in self.saved_keys:
                self.saved_keys.add(key)
                owner = self.current()
                nbytes = int(t.untyped_storage().nbytes())
                self.saved_bytes[owner] = self.saved_bytes.get(owner, 0) + nbytes
        return t

    def on_output(self, index: int, out: Any) -> None:
        seen: set[int] = set()
        for t in _tensors(out):
            key = storage_key(t)
            if key in seen or self.producer.get(key) != index:
                continue
            seen.add(key)
            self.output_bytes[index] = self.output_bytes.get(index, 0) + tensor_bytes(t)


class _GraphMode(TorchFunctionMode):
    """Claims autograd nodes for the module running when each torch call returns."""

    def __init__(self, state: _StepState) -> None:
        super().__init__()
        self._state = state

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        # Arguments too: an in-place call (x[i] = y) changes its argument's node.
        self._state.claim(_tensors((out, args, kwargs)))
        return out


_IMPLICIT = torch._C.DispatchKey.CompositeImplicitAutograd


def _has_implicit_kernel(func: Any) -> bool:
    return func is not torch.ops.prim.device.default and bool(
        torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _IMPLICIT)
    )


class _OpMode(TorchDispatchMode):
    """Charges every aten op to a scope and phase (see the module docstring)."""

    def __init__(self, state: _StepState) -> None:
        super().__init__()
        self._state = state

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        # An op without a formula that has a C++ CompositeImplicitAutograd
        # kernel is counted through it, as FlopCounterMode does (such ops only
        # reach here when autograd is off).  Python-only decompositions (of
        # native_batch_norm, silu_backward, ...) are not used: the op as
        # dispatched is what a device runs, and what its bytes are counted for.
        if func._overloadpacket not in flop_registry and _has_implicit_kernel(func):
            with self:
                r = func._op_dk(_IMPLICIT, *args, **kwargs)
            return r
        out = func(*args, **kwargs)
        self._state.on_op(func, args, kwargs, out)
        return out


@contextlib.contextmanager
def _module_scopes(state: _StepState) -> Iterator[None]:
    """Hooks on the model's own modules that keep the scope stack; removed on exit."""
    handles: list[Any] = []
    try:
        for entry in state.table:

            def pre(_m: nn.Module, _a: Any, _i: int = entry.index) -> None:
                state.stack.append(_i)
                state.calls[_i] = state.calls.get(_i, 0) + 1

            def post(_m: nn.Module, _a: Any, out: Any, _i: int = entry.index) -> None:
                if state.stack and state.stack[-1] == _i:
                    state.stack.pop()
                state.on_output(_i, out)

            handles.append(entry.module.register_forward_pre_hook(pre))
            handles.append(entry.module.register_forward_hook(post, always_call=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _param_owners(table: ModuleTable) -> dict[int, int]:
    """id(param) -> index of the first module that owns it directly (as ModuleTable counts)."""
    owners: dict[int, int] = {}
    for entry in table:
        for p in entry.module.parameters(recurse=False):
            owners.setdefault(id(p), entry.index)
    return owners


def _device_of(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("meta")


def count_step(
    model: nn.Module,
    workload: WorkloadSpec,
    *,
    label: str,
    training: bool = True,
    warnings: Sequence[str] = (),
) -> CostResult:
    """Count one training step of ``model`` (on the meta device, or real tensors) per layer.

    The step is what :class:`layertime.workload.Workload` runs: forward in
    train mode, the input's loss (cross-entropy, plus auxiliary heads, for
    images), backward, optimizer update.  With ``training=False`` only a
    forward pass in eval mode under ``no_grad`` is counted.  Gradients the
    model already holds are put back afterwards.
    """
    table = ModuleTable(model)
    state = _StepState(table, _param_owners(table))
    params = {id(p): p for p in model.parameters()}
    state.param_keys = {storage_key(p) for p in params.values()}
    device = _device_of(model)
    spec = workload.resolved_input
    gen = torch.Generator(device="cpu").manual_seed(workload.seed)
    batch = spec.batch(
        workload.batch_size, model=model, device=device, dtype=DTYPES[workload.dtype],
        generator=gen,
    )
    trainable = [p for p in params.values() if p.requires_grad]
    if training:
        if not trainable:
            raise LayertimeError("the model has no trainable parameters")
        # The batch's float tensors become leaves that require grad, so that
        # autograd's graph tells activations from parameters (a first layer's
        # node then has an activation edge); backward(inputs=parameters) still
        # computes only what a normal step computes: no gradient for the batch.
        batch = batch.requiring_grad()
    old_grads = {k: p.grad for k, p in params.items()}
    try:
        for p in params.values():
            p.grad = None
        with training_mode(model, train=training), _module_scopes(state), _OpMode(state):
            if training:
                num_classes = _count_training(model, workload, batch, state, trainable)
            else:
                with torch.no_grad():
                    main, _ = main_output(batch.run(model))
                    num_classes = spec.classes(main.shape) if main.dim() >= 2 else None
        with_grad = {k for k, p in params.items() if p.grad is not None}
    finally:
        for k, p in params.items():
            p.grad = old_grads[k]
    return _result(
        state,
        workload,
        label=label,
        training=training,
        with_grad=with_grad,
        loss_type=spec.loss_name,
        num_classes=num_classes,
        device=device,
        warnings=warnings,
    )


def _count_training(
    model: nn.Module,
    workload: WorkloadSpec,
    batch: Batch,
    state: _StepState,
    trainable: Sequence[torch.Tensor],
) -> int | None:
    """Forward, loss and backward under the counting modes; returns the classes scored."""
    spec = workload.resolved_input
    with _GraphMode(state), torch.autograd.graph.saved_tensors_hooks(state.on_save, lambda t: t):
        out = batch.run(model)
        state.in_loss = True
        main, _ = main_output(out)
        num_classes = spec.classes(main.shape) if main.dim() >= 2 else None
        state.paused = True  # making the targets is no work of the step's
        gen = torch.Generator(device="cpu").manual_seed(workload.seed)
        targets = spec.targets(main.shape, batch, gen)
        state.paused = False
        loss = spec.loss(out, targets)
        state.in_loss = False
    state.in_backward = True
    handles = []
    for node in state.mixed_nodes():
        state.pending[node] = []
        handles.append(
            node.register_hook(lambda gi, go, _n=node: state.resolve_pending(_n, gi))
        )
    try:
        torch.autograd.backward(loss, inputs=list(trainable))
    finally:
        for h in handles:
            h.remove()
        state.flush_pending()
        state.in_backward = False
    return num_classes


def _ops_of(tallies: Mapping[tuple[str, str], _Tally]) -> tuple[OpWork, ...]:
    order = {p: i for i, p in enumerate(("forward", "backward_input", "backward_weight", "update"))}
    items = sorted(tallies.items(), key=lambda kv: (order[kv[0][1]], kv[0][0]))
    return tuple(
        OpWork(op, phase, t.calls, t.flops, t.bytes_moved, t.status, t.math)
        for (op, phase), t in items
    )


def _sums(ops: Sequence[OpWork]) -> tuple[PhaseCounts, PhaseCounts]:
    f: dict[str, int] = {}
    b: dict[str, int] = {}
    for w in ops:
        f[w.phase] = f.get(w.phase, 0) + w.flops
        b[w.phase] = b.get(w.phase, 0) + w.bytes_moved
    return PhaseCounts(**f), PhaseCounts(**b)


def _layer_cost(
    state: _StepState, entry: ModuleEntry, rule: UpdateRule, with_grad: set[int]
) -> LayerCost:
    """One module's counts, with its optimizer update charged for the parameters it owns
    that got a gradient (``with_grad``: ids of parameters)."""
    own = [p for p in entry.module.parameters(recurse=False)
           if state.param_owner.get(id(p)) == entry.index]
    # A parameter listed twice in one module is still one parameter.
    own = list({id(p): p for p in own}.values())
    weights = sum(p.numel() * p.element_size() for p in own)
    updated = [p for p in own if id(p) in with_grad]
    grads = sum(p.numel() * p.element_size() for p in updated)
    if updated:
        elements = sum(p.numel() for p in updated)
        state.charge(
            entry.index,
            f"update.{rule.optimizer}",
            "update",
            elements * rule.flops_per_element,
            grads * rule.elements_moved_per_element,
            "formula",
            calls=len(updated),
        )
    ops = _ops_of(state.tallies.get(entry.index, {}))
    flops, moved = _sums(ops)
    return LayerCost(
        name=entry.name,
        kind=entry.kind,
        type=entry.type,
        params=entry.params,
        trainable_params=entry.trainable,
        calls=state.calls.get(entry.index, 0),
        flops=flops,
        bytes_moved=moved,
        memory_bytes=MemoryBytes(
            weights=weights,
            grads=grads,
            optimizer_state=grads * rule.state_per_element,
            saved_activations=state.saved_bytes.get(entry.index, 0),
            output=state.output_bytes.get(entry.index, 0),
        ),
        ops=ops,
    )


def _result(
    state: _StepState,
    workload: WorkloadSpec,
    *,
    label: str,
    training: bool,
    with_grad: set[int],
    device: torch.device,
    loss_type: str,
    num_classes: int | None,
    warnings: Sequence[str],
) -> CostResult:
    rule = update_rule(workload.optimizer)
    layers = [_layer_cost(state, entry, rule, with_grad if training else set())
              for entry in state.table]
    loss_ops = _ops_of(state.tallies.get(LOSS, {}))
    lf, lb = _sums(loss_ops)
    loss = LayerCost(
        name=LOSS_NAME,
        kind="loss",
        type=loss_type if training else "-",
        params=0,
        trainable_params=0,
        calls=1 if training else 0,
        flops=lf,
        bytes_moved=lb,
        memory_bytes=MemoryBytes(saved_activations=state.saved_bytes.get(LOSS, 0)),
        ops=loss_ops,
    )
    return CostResult(
        model=label,
        batch_size=workload.batch_size,
        input_shape=tuple(workload.resolved_input.sample_shape),
        num_classes=num_classes,
        dtype=workload.dtype,
        optimizer=workload.optimizer if training else "-",
        layers=tuple(layers),
        loss=loss,
        tensors="meta" if device.type == "meta" else "real",
        training=training,
        warnings=tuple(warnings),
        conventions=dict(CONVENTIONS),
    )

