"""The bookkeeping of one count (:func:`layertime.cost.counts.count_step`): which module
is running, which autograd node belongs to which module, and every op charged to a module
and a phase, with the memory it saves; and the two torch modes and the hooks that feed it.
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
from torch.utils.flop_counter import flop_registry

from layertime.cost.count.attention import SDPA_FUNCTIONS, counted_sdpa
from layertime.cost.count.kernel_choice import KernelTarget
from layertime.cost.count.op_bytes import op_bytes
from layertime.cost.count.op_work import (
    ALLOCATION,
    GROUPED_MM,
    LOSS,
    bind_args,
    distinct_bytes,
    math_class,
    op_flops,
    run_grouped_mm_on_meta,
    storage_key,
    tensor_bytes,
    tensors_in,
)
from layertime.cost.count.op_shapes import (
    Gemm,
    conv_backward_shapes,
    conv_family_bound,
    conv_family_of,
    gemm_shape,
)
from layertime.modules import ModuleTable

aten = torch.ops.aten

__all__ = ["LOSS", "GraphMode", "OpMode", "Pending", "StepState", "Tally", "module_scopes"]


@dataclass
class Tally:
    """Mutable per-(op, phase) sums for one scope; private to one count."""

    calls: int = 0
    flops: int = 0
    bytes_moved: int = 0
    status: str = "formula"
    math: str = "other"
    #: The GEMM shape (M, N, K) of its call with the most FLOPs (None: not a GEMM or conv).
    gemm: Gemm | None = None
    gemm_flops: int = -1
    #: A convolution's family (``op_shapes.conv_family_of``) of that same call.
    conv_family: str | None = None

    def add(self, other: Tally) -> None:
        """Fold another scope's sums for the same (op, phase) into these."""
        self.calls += other.calls
        self.flops += other.flops
        self.bytes_moved += other.bytes_moved
        self.status, self.math = other.status, other.math
        if other.gemm is not None and other.gemm_flops > self.gemm_flops:
            self.gemm, self.gemm_flops = other.gemm, other.gemm_flops
            self.conv_family = other.conv_family


#: Scopes of ops moved out of the module that runs them (:meth:`StepState.own_op_scope`)
#: are numbered from here until the forward's kinds settle them.
MOVED_BASE = 1 << 40


@dataclass
class Pending:
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
    gemm: Gemm | None = None


class StepState:
    """Everything one count learns; lives for one ``count_step`` call only."""

    def __init__(self, table: ModuleTable, param_owner: Mapping[int, int],
                 target: KernelTarget = KernelTarget()) -> None:
        self.table = table
        #: The device whose kernels are counted (SDPA's backend, each op's traffic).
        self.target = target
        #: What was chosen for ops with several kernels: what -> choice -> calls.
        self.choices: dict[str, dict[str, int]] = {}
        #: Each op counted -> the name of the traffic rule it took (``op_bytes.rule_of``).
        self.byte_rules: dict[str, str] = {}
        self.param_owner = dict(param_owner)  # id(param) -> scope index
        self.param_keys: set[int] = set()
        self.stack: list[int] = []
        self.in_loss = False
        self.in_backward = False
        #: True while making data (the targets), which is not part of the step.
        self.paused = False
        self.node_owner: dict[Any, int] = {}
        self.weight_side: dict[Any, bool] = {}
        #: Whether the gradient a node passes on belongs to parameters only: its
        #: weight side, unless its output depends on the batch (a token
        #: embedding's output is an activation, though its node only makes the
        #: table's gradient).
        self.edge_weight: dict[Any, bool] = {}
        #: Storages of the batch's integer tensors (token ids) and of what is
        #: derived from them without autograd, and the nodes made from them.
        self.data_keys: set[int] = set()
        self.data_nodes: set[Any] = set()
        self.tallies: dict[int, dict[tuple[str, str], Tally]] = {}
        #: storage key -> the scope whose op allocated it (an in-place op, or one
        #: writing into its argument, allocates nothing).
        self.producer: dict[int, int] = {}
        #: storage key -> its bytes and the scopes that saved it, in order.
        self.saved: dict[int, tuple[int, list[int]]] = {}
        #: scope -> bytes saved for backward, charged (see :meth:`resolve_saved`).
        self.saved_bytes: dict[int, int] = {}
        self.output_bytes: dict[int, int] = {}
        self.calls: dict[int, int] = {}
        self.pending: dict[Any, list[Pending]] = {}
        #: Ops a module runs with a parameter of its own or of a child it does not call
        #: (``nn.MultiheadAttention``'s ``F.linear`` with ``in_proj_weight`` and with
        #: ``out_proj.weight``): a provisional scope each, (module, holder) -> scope, until
        #: :meth:`settle_own_ops` gives it to the row the measured run gives it.
        self.moved_ops: dict[tuple[int, int], int] = {}
        #: Each provisional scope's module (the one whose forward ran the op).
        self.moved_module: dict[int, int] = {}
        #: storage key of a parameter -> indices of the modules holding it directly.
        self.key_holders: dict[int, list[int]] = {}
        #: module index -> its parent's index.
        self.parent: dict[int, int] = {}
        #: Outputs of moved ops, waiting for autograd to give them their node.
        self.unclaimed: list[tuple[list[torch.Tensor], int]] = []
        #: Nodes claimed for a moved op before the walk reached them: walked, not re-owned.
        self.forced: set[Any] = set()

    def chose(self, what: str, choice: str) -> None:
        """Record a kernel choice (shown with the result: ``CostResult.kernel_choices``)."""
        per = self.choices.setdefault(what, {})
        per[choice] = per.get(choice, 0) + 1

    def moved(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> int:
        """Bytes the op's kernel moves on the target (:mod:`layertime.cost.count.op_bytes`)."""
        nbytes, rule = op_bytes(func, args, kwargs, out, self.target.device)
        self.byte_rules[str(func._overloadpacket)] = rule
        return nbytes

    # -- scopes ------------------------------------------------------------
    def current(self) -> int:
        if self.stack:
            return self.stack[-1]
        return LOSS if self.in_loss else 0

    def charge(
        self, owner: int, name: str, phase: str, flops: int, moved: int, status: str, calls: int = 1,
        gemm: Gemm | None = None, conv_family: str | None = None,
    ) -> None:
        t = self.tallies.setdefault(owner, {}).setdefault((name, phase), Tally())
        t.calls += calls
        t.flops += flops
        t.bytes_moved += moved
        t.status = status
        t.math = math_class(name)
        if gemm is not None and flops > t.gemm_flops:
            t.gemm, t.gemm_flops, t.conv_family = gemm, flops, conv_family

    # -- autograd nodes ----------------------------------------------------
    def claim(self, objs: Sequence[Any]) -> None:
        """Give every unclaimed autograd node reachable from ``objs`` to the current scope."""
        self._claim_moved()
        owner = self.current()
        for t in objs:
            if not isinstance(t, torch.Tensor):
                continue
            root = t.grad_fn
            if root is None or (root in self.node_owner and root not in self.forced):
                continue
            stack: list[tuple[Any, bool]] = [(root, False)]
            while stack:
                node, done = stack.pop()
                if done:
                    children = [n for n, _ in node.next_functions if n is not None]
                    self.weight_side[node] = bool(children) and all(
                        self.edge_weight.get(c, False) for c in children
                    )
                    self.edge_weight[node] = (
                        self.weight_side[node] and node not in self.data_nodes
                    )
                    continue
                if node in self.node_owner and node not in self.forced:
                    continue
                forced = node in self.forced
                self.forced.discard(node)
                var = getattr(node, "variable", None)
                if isinstance(var, torch.Tensor):  # AccumulateGrad of a leaf
                    p_owner = self.param_owner.get(id(var))
                    self.node_owner[node] = p_owner if p_owner is not None else owner
                    self.weight_side[node] = p_owner is not None
                    self.edge_weight[node] = p_owner is not None
                    continue
                if not forced:
                    self.node_owner[node] = owner
                stack.append((node, True))
                for child, _ in node.next_functions:
                    if child is not None and (child not in self.node_owner
                                              or child in self.forced):
                        stack.append((child, False))

    def _claim_moved(self) -> None:
        """Give the nodes autograd made for moved ops' outputs to those ops' scopes."""
        for outs, scope in self.unclaimed:
            for t in outs:
                node = t.grad_fn
                if node is not None and node not in self.node_owner:
                    self.node_owner[node] = scope
                    self.forced.add(node)
        self.unclaimed.clear()

    # -- ops a module runs for another row ---------------------------------
    def set_holders(self, table: ModuleTable) -> None:
        """Which modules hold each parameter directly, and each module's parent."""
        index = {id(e.module): e.index for e in table}
        for e in table:
            for p in e.module.parameters(recurse=False):
                self.key_holders.setdefault(storage_key(p), []).append(e.index)
            for child in e.module.children():
                if id(child) in index:
                    self.parent.setdefault(index[id(child)], e.index)

    def _below(self, child: int, module: int) -> bool:
        seen = 0
        while child in self.parent and seen <= len(self.parent):
            child = self.parent[child]
            if child == module:
                return True
            seen += 1
        return False

    def own_op_scope(self, owner: int, name: str, ins: Sequence[torch.Tensor]) -> int:
        """The scope of a forward op that module ``owner`` runs itself: a provisional one
        when it multiplies or convolves with a parameter the module holds or a child of
        it holds (as :class:`layertime.kinds.KindObserver` sees it), else ``owner``."""
        if owner < 0 or math_class(name) not in ("matmul", "conv"):
            return owner
        holders = [h for t in ins for h in self.key_holders.get(storage_key(t), ())]
        if not holders:
            return owner
        holder = owner if owner in holders else next(
            (h for h in holders if self._below(h, owner)), None)
        if holder is None:
            return owner
        scope = self.moved_ops.setdefault((owner, holder), MOVED_BASE + len(self.moved_ops))
        self.moved_module[scope] = owner
        return scope

    def settle_own_ops(self, table: ModuleTable, part_params: Mapping[int, Sequence[int]]
                       ) -> None:
        """After the forward: each moved op's scope becomes the row the measured run gives
        it (``table``: split by the forward's kinds; its ``own_ops``), else the module
        that ran it; a part's parameters (``part_params``: part index -> ids) are then
        updated in the part's row."""
        parts = {p.part_of: p.index for p in table.parts}
        final: dict[int, int] = {}
        for (module, holder), scope in self.moved_ops.items():
            rows = {r for _, r in table.own_ops.get(module, ())}
            row = parts.get(module) if holder == module else holder
            final[scope] = row if row is not None and row in rows else module
        for scope, row in final.items():
            into = self.tallies.setdefault(row, {})
            for op_phase, t in self.tallies.pop(scope, {}).items():
                into.setdefault(op_phase, Tally()).add(t)
        for node, o in self.node_owner.items():
            if o in final:
                self.node_owner[node] = final[o]
        for storage, o in self.producer.items():
            if o in final:
                self.producer[storage] = final[o]
        for _, savers in self.saved.values():
            savers[:] = list(dict.fromkeys(final.get(o, o) for o in savers))
        for index, ids in part_params.items():
            for pid in ids:
                if pid in self.param_owner:
                    self.param_owner[pid] = index
        self.moved_ops.clear()
        self.moved_module.clear()

    def mixed_nodes(self) -> list[Any]:
        """Nodes with both a weight-side and an input-side edge."""
        out = []
        for node in self.node_owner:
            if self.weight_side.get(node, False) or hasattr(node, "variable"):
                continue
            children = [n for n, _ in node.next_functions if n is not None]
            sides = {self.edge_weight.get(n, False) for n in children}
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
            mark(storage_key(g), len(ops), self.edge_weight.get(child, False))
        for op, lab in zip(ops, labels):
            phase = "backward_weight" if lab == {True} else "backward_input"
            self.charge(op.owner, op.name, phase, op.flops, op.bytes_moved, op.status,
                        gemm=op.gemm)

    def flush_pending(self) -> None:
        for node in list(self.pending):
            for op in self.pending.pop(node):
                self.charge(
                    op.owner, op.name, "backward_input", op.flops, op.bytes_moved, op.status,
                    gemm=op.gemm,
                )

    # -- ops ---------------------------------------------------------------
    def on_op(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> None:
        name = str(func._overloadpacket)
        if self.paused or func.is_view or name in ALLOCATION:
            return
        ins = tensors_in((args, kwargs))
        outs = tensors_in(out)
        if not self.in_backward:
            owner = self.current()
            if not self.in_loss:
                owner = self.own_op_scope(owner, name, ins)
                if owner >= MOVED_BASE:
                    self.unclaimed.append((list(outs), owner))
            in_keys = {storage_key(t) for t in ins}
            for t in outs:
                key = storage_key(t)
                if key not in in_keys:  # a new storage, not its argument written in place
                    self.producer[key] = owner
            flops, status = op_flops(func, args, kwargs, out)
            moved = self.moved(func, args, kwargs, out)
            self.charge(owner, name, "forward", flops, moved, status,
                        gemm=gemm_shape(func, args, kwargs),
                        conv_family=conv_family_of(func, args, kwargs))
            return
        node = torch._C._current_autograd_node()
        owner = self.node_owner.get(node, 0) if node is not None else LOSS
        weight_only = node is not None and self.weight_side.get(node, False)
        if func._overloadpacket is aten.convolution_backward and not weight_only:
            self._conv_backward(owner, func, args, kwargs, out)
            return
        flops, status = op_flops(func, args, kwargs, out)
        moved = self.moved(func, args, kwargs, out)
        gemm = gemm_shape(func, args, kwargs)
        if weight_only:
            self.charge(owner, name, "backward_weight", flops, moved, status, gemm=gemm)
        elif node is not None and node in self.pending:
            self.pending[node].append(
                Pending(
                    name,
                    flops,
                    moved,
                    status,
                    owner,
                    frozenset(storage_key(t) for t in ins),
                    frozenset(storage_key(t) for t in outs),
                    outs,
                    gemm,
                )
            )
        else:
            self.charge(owner, name, "backward_input", flops, moved, status, gemm=gemm)

    def _conv_backward(
        self, owner: int, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        """Split one ``convolution_backward`` into its input- and weight-gradient parts."""
        b = bind_args(func, args, kwargs)
        mask = list(b["output_mask"])
        groups = int(b["groups"])
        formula = flop_registry[aten.convolution_backward]
        names = [a.name for a in func._schema.arguments]
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        name = str(func._overloadpacket)
        self.byte_rules[name] = name  # its own split: each part's operands once
        grad_out, x, w = b["grad_output"], b["input"], b["weight"]
        shapes = conv_backward_shapes(x, w, grad_out, groups)
        family = conv_family_bound(b)

        def with_mask(m: list[bool]) -> list[Any]:
            return [m if n == "output_mask" else b[n] for n in names]

        if mask[0]:
            f_in = int(formula(*with_mask([True, False, False]), out_val=out))
            moved = distinct_bytes([grad_out, w]) + tensor_bytes(outs[0])
            self.charge(owner, name, "backward_input", f_in, moved, "formula",
                        gemm=shapes[0] if shapes else None, conv_family=family)
        if mask[1] or mask[2]:
            f_w = 0
            if mask[1]:
                # torch's formula treats every weight-gradient conv as ungrouped:
                # with g groups it counts C_in*C_out instead of C_in*C_out/g per
                # kernel tap and output position, g times the work.
                f_w = int(formula(*with_mask([False, True, False]), out_val=out)) // groups
            written = [t for t, m in zip(outs[1:], mask[1:]) if m and isinstance(t, torch.Tensor)]
            moved = distinct_bytes([grad_out, x]) + sum(tensor_bytes(t) for t in written)
            self.charge(owner, name, "backward_weight", f_w, moved, "formula",
                        gemm=shapes[1] if shapes else None, conv_family=family)

    # -- memory ------------------------------------------------------------
    def on_save(self, t: torch.Tensor) -> torch.Tensor:
        if not self.in_backward:
            key = storage_key(t)
            if key not in self.param_keys:
                nbytes, savers = self.saved.setdefault(
                    key, (int(t.untyped_storage().nbytes()), []))
                owner = self.current()
                if owner not in savers:
                    savers.append(owner)
        return t

    def resolve_saved(self) -> None:
        """Charge each saved storage once, as the measurement does
        (``layertime/measure/memory/``): to the scope that saved it; when several did,
        to the scope whose op allocated it (the first saver when none did: the batch)."""
        out: dict[int, int] = {}
        for key, (nbytes, savers) in self.saved.items():
            owner = savers[0]
            if len(savers) > 1 and key in self.producer:
                owner = self.producer[key]
            out[owner] = out.get(owner, 0) + nbytes
        self.saved_bytes = out

    def on_output(self, index: int, out: Any) -> None:
        seen: set[int] = set()
        for t in tensors_in(out):
            key = storage_key(t)
            prod = self.producer.get(key)
            if prod is not None:
                prod = self.moved_module.get(prod, prod)  # a moved op's output: its module's
            if key in seen or prod != index:
                continue
            seen.add(key)
            self.output_bytes[index] = self.output_bytes.get(index, 0) + tensor_bytes(t)


class GraphMode(TorchFunctionMode):
    """Claims autograd nodes for the module running when each torch call returns,
    follows what is made from the batch's integer tensors (``data_keys``), and counts
    each scaled dot-product attention call as one op (:mod:`layertime.cost.count.attention`)."""

    def __init__(self, state: StepState) -> None:
        super().__init__()
        self._state = state

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        state = self._state
        if func in SDPA_FUNCTIONS and not state.paused:
            out = counted_sdpa(state, args, kwargs or {})
            state.claim(tensors_in(out))
            return out
        data = bool(state.data_keys) and any(
            storage_key(t) in state.data_keys for t in tensors_in((args, kwargs))
        )
        out = func(*args, **(kwargs or {}))
        if data:
            for t in tensors_in(out):
                if t.grad_fn is not None:
                    state.data_nodes.add(t.grad_fn)
                else:
                    state.data_keys.add(storage_key(t))
        # Arguments too: an in-place call (x[i] = y) changes its argument's node.
        state.claim(tensors_in((out, args, kwargs)))
        return out


_IMPLICIT = torch._C.DispatchKey.CompositeImplicitAutograd


def _has_implicit_kernel(func: Any) -> bool:
    return func is not torch.ops.prim.device.default and bool(
        torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), _IMPLICIT)
    )


class OpMode(TorchDispatchMode):
    """Charges every aten op to a scope and phase (see the module docstring)."""

    def __init__(self, state: StepState) -> None:
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
        if str(func._overloadpacket) in GROUPED_MM and any(
            t.is_meta for t in tensors_in(args)
        ):
            out = run_grouped_mm_on_meta(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        self._state.on_op(func, args, kwargs, out)
        return out


@contextlib.contextmanager
def module_scopes(state: StepState) -> Iterator[None]:
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
