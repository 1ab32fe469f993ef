"""The rows of a profiled run and their totals: per layer (:class:`LayerRow`), per phase
(:class:`Phases`), per kind (:class:`KindTotal`) and per role (:class:`RoleTotal`).

:class:`~layertime.results.run.Run` holds the rows and adds them up through
:func:`kind_totals` and :func:`role_totals`; both give shares of the profiled
step that add up to 1, with the step-level rows (loss, ``step``,
``unattributed``) beside the layers'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from layertime.taxonomy import KIND_LABELS, KINDS, ROLE_LABELS, ROLES, STEP_KINDS


@dataclass(frozen=True)
class LayerRow:
    """Self time of one module in one training step, split by phase.

    ``name`` is the dotted module path (``""`` is the root model); a
    container's row holds only its *self* time, the work its own
    ``forward`` does outside its children (functional calls such as
    ``torch.flatten`` or a residual ``+``).  ``update_s`` is the optimizer's
    work on this module's own parameters.
    """

    name: str
    kind: str
    type: str
    forward_s: float
    backward_s: float
    update_s: float
    params: int
    calls: float
    #: Standard deviation over measured steps of ``total_s``.
    spread_s: float = 0.0
    #: Data-parallel runs only (0 otherwise): gradient synchronisation charged to
    #: this layer (its share, by bytes, of the buckets holding its gradients),
    #: ``comm_exposed_s`` the part the training thread spent on it (in ``total_s``);
    #: the rest was hidden behind backward compute.  ``comm_bytes``: bytes of its
    #: gradients all-reduced per step.  ``rank_spread_s``: max minus min of
    #: ``total_s`` over ranks.
    comm_s: float = 0.0
    comm_exposed_s: float = 0.0
    comm_bytes: int = 0
    rank_spread_s: float = 0.0
    #: What the layer is for in a transformer (placed by ``layertime.roles``):
    #: attention, mlp, embedding, norm, head or other; its block
    #: (``transformer.h.0``) or None.  None in runs saved before roles: such a
    #: row counts as ``other``.
    role: str | None = None
    block: str | None = None
    #: Memory, measured in a step of its own (``layertime/measure/memory/``; 0 when
    #: not measured, and in older files): bytes of the storages this layer's ops saved
    #: for backward (the conventions are in ``layertime/results/memory.py``), of its own
    #: parameters, of their gradients after backward and of their optimizer state.
    saved_bytes: int = 0
    params_bytes: int = 0
    grads_bytes: int = 0
    optimizer_state_bytes: int = 0
    #: Activation checkpointing: the forward this module ran again inside backward (its
    #: recompute, part of ``backward_s``), for the outermost module of a recomputed
    #: region; ``checkpointed``: such a module (its ``saved_bytes`` are the inputs the
    #: checkpoint keeps; its layers save nothing in forward).
    recompute_s: float = 0.0
    checkpointed: bool = False

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s + self.update_s + self.comm_exposed_s

    @property
    def label(self) -> str:
        return self.name or "(model)"


@dataclass(frozen=True)
class Phases:
    """Per-step time of each phase; together they add up to the profiled step."""

    forward_s: float
    backward_s: float
    update_s: float
    loss_s: float
    zero_grad_s: float
    data_s: float
    unattributed_s: float
    #: Data-parallel runs: exposed gradient synchronisation (sum over layers).
    comm_exposed_s: float = 0.0
    #: Framework integrations (Lightning, Hugging Face): gradient clipping, the
    #: LR scheduler's step, and logging (callbacks, loggers, the loop's own
    #: bookkeeping between steps).  0 elsewhere and in older files.
    clip_s: float = 0.0
    scheduler_s: float = 0.0
    logging_s: float = 0.0
    #: Compiled models (``torch.compile``): the compiled call's own time outside its
    #: kernels (Dynamo's guards, Dynamo's and AOTAutograd's wrappers, the generated
    #: Python wrapper between kernels, eager code at graph breaks).  0 elsewhere.
    compiled_wrapper_s: float = 0.0
    #: The optimizer's step as one step-level row, when it could not be split across layers
    #: (``layertime attribute`` of a trace without parameter sizes; ``Run.update_split`` is
    #: then ``"none"``).  0 elsewhere: ``update_s`` holds the layers' shares.
    update_step_s: float = 0.0

    @property
    def step_level_s(self) -> float:
        """The step-level rows other than loss and unattributed (kind ``step``)."""
        return (self.zero_grad_s + self.data_s + self.clip_s + self.scheduler_s
                + self.logging_s + self.compiled_wrapper_s + self.update_step_s)

    @property
    def total_s(self) -> float:
        return (
            self.forward_s
            + self.backward_s
            + self.update_s
            + self.loss_s
            + self.step_level_s
            + self.unattributed_s
            + self.comm_exposed_s
        )


@dataclass(frozen=True)
class KindTotal:
    """Time and parameters of all rows of one kind."""

    kind: str
    time_s: float
    share: float
    params: int
    params_share: float
    forward_s: float = 0.0
    backward_s: float = 0.0
    update_s: float = 0.0
    #: Data-parallel runs: gradient synchronisation of the kind's layers, its
    #: exposed part (included in ``time_s``), and shares of the run's totals.
    comm_s: float = 0.0
    comm_exposed_s: float = 0.0
    comm_share: float = 0.0
    comm_bytes: int = 0
    comm_bytes_share: float = 0.0

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)


#: The role whose rows of a kind are its core, and that kind: attention's score/softmax
#: core, sequence mixing's selective scan.
CORES: dict[str, str] = {"attention": "attention", "mixing": "scan"}


@dataclass(frozen=True)
class RoleTotal:
    """Time and parameters of all rows of one role (``attention``, ``mlp``, ...), or of a
    step-level row (``loss``, ``step``, ``unattributed``: time only).

    ``core_s`` is the attention and sequence-mixing roles' only (:data:`CORES`): the
    self time of the attention role's ``attention``-kind rows (scores, softmax,
    weighted sum), without the projections; of the mixing role's ``scan``-kind rows
    (the selective scan), without its projections and convolution.
    """

    role: str
    time_s: float
    share: float
    params: int
    params_share: float
    forward_s: float = 0.0
    backward_s: float = 0.0
    update_s: float = 0.0
    core_s: float = 0.0
    core_share: float = 0.0
    rows: int = 0

    @property
    def label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)


@dataclass
class _KindSums:
    """Running sums of one kind's rows, while :meth:`Run.by_kind` adds them up."""

    forward_s: float = 0.0
    backward_s: float = 0.0
    update_s: float = 0.0
    params: int = 0
    comm_s: float = 0.0
    comm_exposed_s: float = 0.0
    comm_bytes: int = 0


@dataclass(frozen=True)
class Slice:
    """Where one row's work lay in one traced step (CPU timeline), for traces.

    ``name`` is a layer's dotted path or a step-level row in parentheses
    (``(loss)``, ``(update)``); ``phase`` is forward, backward, update, loss,
    zero_grad or data.  ``start_s``/``end_s`` are from the step's start, and
    span the first to the last op charged to the row; ``self_s`` is its charge.
    """

    step: int
    name: str
    phase: str
    start_s: float
    end_s: float
    self_s: float


def kind_totals(
    layers: Sequence[LayerRow], phases: Phases, total_s: float
) -> dict[str, KindTotal]:
    """Time and parameters per kind (plus ``loss``, ``step`` and ``unattributed``), shares
    of ``total_s`` (the profiled step), in report order."""
    params_total = sum(r.params for r in layers) or 1
    sums: dict[str, _KindSums] = {}
    for r in layers:
        k = sums.setdefault(r.kind, _KindSums())
        k.forward_s += r.forward_s
        k.backward_s += r.backward_s
        k.update_s += r.update_s
        k.params += r.params
        k.comm_s += r.comm_s
        k.comm_exposed_s += r.comm_exposed_s
        k.comm_bytes += r.comm_bytes
    comm_total = sum(r.comm_s for r in layers)
    bytes_total = sum(r.comm_bytes for r in layers)
    p = phases
    if p.loss_s:
        sums.setdefault("loss", _KindSums()).forward_s += p.loss_s
    sums["step"] = _KindSums(forward_s=p.step_level_s)
    sums["unattributed"] = _KindSums(forward_s=p.unattributed_s)
    out: dict[str, KindTotal] = {}
    # Known kinds in report order, then any a newer version wrote (so shares add up).
    order = [k for k in KINDS + STEP_KINDS if k in sums]
    order += [k for k in sums if k not in order]
    for kind in order:
        k = sums[kind]
        t = k.forward_s + k.backward_s + k.update_s + k.comm_exposed_s
        out[kind] = KindTotal(
            kind=kind,
            time_s=t,
            share=t / total_s if total_s else 0.0,
            params=k.params,
            params_share=k.params / params_total,
            forward_s=k.forward_s,
            backward_s=k.backward_s,
            update_s=k.update_s,
            comm_s=k.comm_s,
            comm_exposed_s=k.comm_exposed_s,
            comm_share=k.comm_s / comm_total if comm_total else 0.0,
            comm_bytes=k.comm_bytes,
            comm_bytes_share=k.comm_bytes / bytes_total if bytes_total else 0.0,
        )
    return out


def role_totals(
    layers: Sequence[LayerRow], phases: Phases, total_s: float
) -> dict[str, RoleTotal]:
    """Time and parameters per role (a row without one is ``other``), then ``loss``,
    ``step`` and ``unattributed``; shares of ``total_s`` add up to 1, parameter shares
    over the roles too."""
    params_total = sum(r.params for r in layers) or 1
    sums: dict[str, _KindSums] = {}
    core: dict[str, float] = {}
    rows: dict[str, int] = {}
    for r in layers:
        role = r.role or "other"
        k = sums.setdefault(role, _KindSums())
        k.forward_s += r.forward_s
        k.backward_s += r.backward_s
        k.update_s += r.update_s
        k.comm_exposed_s += r.comm_exposed_s
        k.params += r.params
        rows[role] = rows.get(role, 0) + 1
        if CORES.get(role) == r.kind:
            core[role] = core.get(role, 0.0) + r.total_s
    out: dict[str, RoleTotal] = {}
    # Known roles in report order, then any a newer version wrote (so shares add up).
    for role in [k for k in ROLES if k in sums] + [k for k in sums if k not in ROLES]:
        k = sums[role]
        t = k.forward_s + k.backward_s + k.update_s + k.comm_exposed_s
        c = core.get(role, 0.0)
        out[role] = RoleTotal(
            role=role, time_s=t, share=t / total_s if total_s else 0.0, params=k.params,
            params_share=k.params / params_total, forward_s=k.forward_s,
            backward_s=k.backward_s, update_s=k.update_s, core_s=c,
            core_share=c / total_s if total_s else 0.0, rows=rows[role],
        )
    p = phases
    for role, t in (("loss", p.loss_s), ("step", p.step_level_s),
                    ("unattributed", p.unattributed_s)):
        if t or role != "loss":
            out[role] = RoleTotal(role, t, t / total_s if total_s else 0.0, 0, 0.0, forward_s=t)
    return out
