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
``layertime.cost.count.update``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from layertime.cost.count.kernel_choice import (
    KernelTarget,
    foreach_launches,
    optimizer_impl,
    target_of_device,
)
from layertime.cost.count.op_work import storage_key
from layertime.cost.count.step_state import LOSS, GraphMode, OpMode, StepState, Tally, module_scopes
from layertime.cost.count.update import UpdateRule, update_rule
from layertime.errors import LayertimeError
from layertime.kinds import KindObserver
from layertime.modules import ModuleEntry, ModuleTable, training_mode
from layertime.results.cost.estimate import CONVENTIONS, CostResult
from layertime.results.cost.rows import LayerCost, MemoryBytes, OpWork, PhaseCounts
from layertime.roles import Placement
from layertime.workload import DTYPES, Batch, WorkloadSpec, main_output

#: Name of the loss row (parenthesised so that it never equals a module path).
LOSS_NAME = "(loss)"


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
    kernel_target: KernelTarget | None = None,
) -> CostResult:
    """Count one training step of ``model`` (on the meta device, or real tensors) per layer.

    Ops with several kernels (SDPA's backends, the optimizer's implementations) and each
    op's memory traffic are counted as ``kernel_target`` runs them (default: the workload's
    device, :func:`layertime.cost.kernel_choice.target_of_device`).

    The step is what :class:`layertime.workload.Workload` runs: forward in
    train mode, the input's loss (cross-entropy, plus auxiliary heads, for
    images), backward, optimizer update.  With ``training=False`` only a
    forward pass in eval mode under ``no_grad`` is counted.  Gradients the
    model already holds are put back afterwards.
    """
    table = ModuleTable(model)
    if kernel_target is None:
        kernel_target = target_of_device(workload.device)
    state = StepState(table, _param_owners(table), kernel_target)
    state.set_holders(table)
    params = {id(p): p for p in model.parameters()}
    # Parameters, buffers and their views are held anyway: never saved activations.
    state.param_keys = {storage_key(p) for p in [*params.values(), *model.buffers()]}
    device = _device_of(model)
    spec = workload.resolved_input.for_model(model)
    workload = workload.with_input(spec)
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
    # Integer tensors of the batch (token ids) need no gradient: what is made from
    # them is followed, so that an embedding's output counts as an activation.
    state.data_keys = {storage_key(t) for t in batch.tensors if not t.is_floating_point()}
    old_grads = {k: p.grad for k, p in params.items()}
    try:
        for p in params.values():
            p.grad = None
        # Kinds by what each layer computes in this forward (layertime.kinds).
        watched = KindObserver(model)
        with training_mode(model, train=training), module_scopes(state), OpMode(state):
            if training:
                num_classes = _count_training(model, workload, batch, state, trainable, watched)
            else:
                with torch.no_grad(), watched:
                    main, _ = main_output(batch.run(model))
                num_classes = spec.classes(main.shape) if main.dim() >= 2 else None
        # Rows as the measured run has them: a module's projections computed with its own
        # parameters are a part of it, those with a child's parameters the child's.
        facts = watched.facts()
        state.table = ModuleTable(model, facts=facts)
        state.settle_own_ops(state.table, {
            p.index: facts[id(p.module)].part_params for p in state.table.parts})
        state.resolve_saved()
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
        params=list(params.values()),
    )


def _count_training(
    model: nn.Module,
    workload: WorkloadSpec,
    batch: Batch,
    state: StepState,
    trainable: Sequence[torch.Tensor],
    watched: KindObserver,
) -> int | None:
    """Forward (``watched``), loss and backward under the counting modes; returns the
    classes scored."""
    spec = workload.resolved_input
    with GraphMode(state), torch.autograd.graph.saved_tensors_hooks(state.on_save, lambda t: t):
        with watched:
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


def _ops_of(tallies: Mapping[tuple[str, str], Tally]) -> tuple[OpWork, ...]:
    order = {p: i for i, p in enumerate(("forward", "backward_input", "backward_weight", "update"))}
    items = sorted(tallies.items(), key=lambda kv: (order[kv[0][1]], kv[0][0]))
    return tuple(
        OpWork(op, phase, t.calls, t.flops, t.bytes_moved, t.status, t.math, t.gemm,
               t.conv_family)
        for (op, phase), t in items
    )


def _sums(ops: Sequence[OpWork]) -> tuple[PhaseCounts, PhaseCounts]:
    f: dict[str, int] = {}
    b: dict[str, int] = {}
    for w in ops:
        f[w.phase] = f.get(w.phase, 0) + w.flops
        b[w.phase] = b.get(w.phase, 0) + w.bytes_moved
    return PhaseCounts(**f), PhaseCounts(**b)


def update_launches(rule: UpdateRule, owners: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Kernels the update launches, per layer: ``owners`` lists the updated parameters in
    the optimizer's order as (layer index, elements).  Single-tensor: each pass once per
    tensor; foreach and fused: each pass once per chunk of tensors
    (:func:`layertime.cost.kernel_choice.foreach_launches`), charged to the layer whose
    tensor starts the launch."""
    out: dict[int, int] = {}
    if rule.implementation == "single_tensor":
        for layer, _ in owners:
            out[layer] = out.get(layer, 0) + len(rule.passes)
        return out
    numels = [n for _, n in owners]
    for p in rule.passes:
        for start in foreach_launches(numels, p.depth):
            layer = owners[start][0]
            out[layer] = out.get(layer, 0) + 1
    return out


def _layer_cost(
    state: StepState, entry: ModuleEntry, rule: UpdateRule, with_grad: set[int],
    placed: Placement, launches: Mapping[int, int],
) -> LayerCost:
    """One module's counts, with its optimizer update charged for the parameters it owns
    that got a gradient (``with_grad``: ids of parameters); ``launches``: the update's
    kernels per layer (:func:`update_launches`)."""
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
            rule.op,
            "update",
            elements * rule.flops_per_element,
            grads * rule.elements_moved_per_element,
            "formula",
            calls=launches.get(entry.index, 0),
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
        role=placed.role,
        block=placed.block,
    )


def _result(
    state: StepState,
    workload: WorkloadSpec,
    *,
    label: str,
    training: bool,
    with_grad: set[int],
    device: torch.device,
    loss_type: str,
    num_classes: int | None,
    warnings: Sequence[str],
    params: Sequence[torch.Tensor] = (),
) -> CostResult:
    impl = optimizer_impl(state.target)
    rule = update_rule(workload.optimizer, impl)
    placed = state.table.placements()
    updated = with_grad if training else set()
    owners = [(state.param_owner[id(p)], p.numel()) for p in params
              if id(p) in updated and id(p) in state.param_owner]
    launches = update_launches(rule, owners)
    if training:
        state.chose("optimizer", rule.describe())
    layers = [_layer_cost(state, entry, rule, updated, placed[entry.name], launches)
              for entry in state.table.rows()]
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
        seq_len=workload.resolved_input.sequence_length,
        kernel_target=state.target.describe(),
        kernel_choices={
            what: "; ".join(c + (f" x{n}" if n > 1 else "") for c, n in per.items())
            for what, per in state.choices.items()
        },
    )

