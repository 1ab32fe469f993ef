"""The immutable result model: one profiled training configuration.

Collectors (``layertime.measure``) build a :class:`Run`; renderers and the
store only read it.  A run round-trips through JSON under the schema
``layertime.run/1`` documented in ``docs/schema.md``.  All times are seconds
per training step (the mean over the measured steps) unless a name says
otherwise.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from layertime.compiled_result import CompiledSummary
from layertime.errors import LayertimeError

SCHEMA = "layertime.run/1"

#: Layer kinds, in the order reports list them.  ``linear`` is shown to
#: people as "fully connected".
KINDS: tuple[str, ...] = (
    "conv",
    "linear",
    "norm",
    "activation",
    "pool",
    "dropout",
    "embedding",
    "attention",
    "recurrent",
    "loss",
    "other",
)
#: Pseudo-kinds for step-level work that belongs to no layer.
STEP_KINDS: tuple[str, ...] = ("step", "unattributed")

KIND_LABELS: dict[str, str] = {
    "conv": "conv",
    "linear": "fully connected",
    "norm": "normalisation",
    "activation": "activation",
    "pool": "pool",
    "dropout": "dropout",
    "embedding": "embedding",
    "attention": "attention",
    "recurrent": "recurrent",
    "loss": "loss",
    "other": "other",
    "step": "step (data, zero_grad, clip, scheduler, logging)",
    "unattributed": "unattributed",
}

#: Step-level phases (rows that belong to no layer), in display order.
STEP_PHASES: tuple[str, ...] = (
    "loss", "zero_grad", "data", "clip", "scheduler", "logging", "unattributed"
)


def _std(samples: Sequence[float]) -> float:
    return statistics.stdev(samples) if len(samples) > 1 else 0.0


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
    #: What the layer is for in a transformer (``layertime.roles``): attention,
    #: mlp, embedding, norm, head or other; its block (``transformer.h.0``) or
    #: None.  None in runs saved before roles (``Run.roles`` places them then).
    role: str | None = None
    block: str | None = None

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

    @property
    def step_level_s(self) -> float:
        """The step-level rows other than loss and unattributed (kind ``step``)."""
        return self.zero_grad_s + self.data_s + self.clip_s + self.scheduler_s + self.logging_s

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


@dataclass(frozen=True)
class RoleTotal:
    """Time and parameters of all rows of one role (``layertime.roles``).

    ``core_s`` is the attention role only: the self time of its ``attention``
    kind rows (scores, softmax, weighted sum), without the projections.
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
        from layertime.roles import ROLE_LABELS

        return ROLE_LABELS.get(self.role, self.role)


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


@dataclass(frozen=True)
class Environment:
    """Where a run was measured."""

    device: str
    device_name: str
    torch: str
    torchvision: str | None
    python: str
    platform: str
    host: str
    threads: int
    cuda: str | None = None
    cudnn: int | None = None
    #: The math settings the run used (they change which kernels run):
    #: ``torch.backends.cudnn.benchmark``, and whether float32 convolutions
    #: and matmuls may use TF32 tensor cores.  None in runs saved before them.
    cudnn_benchmark: bool | None = None
    conv_tf32: bool | None = None
    matmul_tf32: bool | None = None


@dataclass(frozen=True)
class RankRow:
    """One rank of a data-parallel run, to spot a straggler.

    ``compute_s`` is the profiled step minus its exposed communication: the
    rank that computes longest makes every other rank wait in the all-reduce.
    """

    rank: int
    host: str
    step_s: float
    profiled_step_s: float
    compute_s: float
    comm_s: float
    comm_exposed_s: float
    #: Of ``comm_exposed_s``, the estimated wait for the slowest rank's compute
    #: (its ``compute_s`` minus this rank's): imbalance, not the network.
    wait_s: float = 0.0


@dataclass(frozen=True)
class BucketRow:
    """One DDP gradient bucket, as measured (means over traced steps and ranks).

    ``allreduce_s`` is the all-reduce's wall time from its launch to its
    completion; ``comm_s`` its share of the communication busy time (buckets
    in flight together share it equally), ``exposed_s`` the part of that after
    backward compute ended.  ``layers`` maps layer name to gradient bytes.
    """

    index: int
    bytes: int
    layers: Mapping[str, int]
    allreduce_s: float
    comm_s: float
    exposed_s: float


@dataclass(frozen=True)
class LinkEstimate:
    """A link measured with all-reduces outside any step, in the ring model's terms."""

    bandwidth_gbps: float
    latency_us: float
    method: str = ""


@dataclass(frozen=True)
class Run:
    """One profiled configuration: its rows, phases, steps and environment."""

    model: str
    device: str
    batch_size: int
    input_shape: tuple[int, ...]
    dtype: str
    optimizer: str
    steps: int
    warmup_steps: int
    #: Wall time of each unprofiled step, in run order.
    step_samples_s: tuple[float, ...]
    #: Wall time of each profiled step (what the rows add up to), in run order.
    profiled_step_samples_s: tuple[float, ...]
    layers: tuple[LayerRow, ...]
    phases: Phases
    environment: Environment
    #: How times were taken: "cpu-self-time" or "cuda-kernel-time".
    timing: str
    amp: str | None = None
    num_classes: int | None = None
    created: str = ""
    warnings: tuple[str, ...] = ()
    #: How ``update_s`` was split across layers (stated, never implied).
    update_split: str = "parameter-elements"
    #: Spread of per-step phase totals (std over steps), keyed like ``phases``.
    phase_spread_s: Mapping[str, float] = field(default_factory=dict)
    #: One slice per attributed (row, phase) per traced step.
    timeline: tuple[Slice, ...] = ()
    #: Data-parallel runs (``world_size`` > 1 or ``backend`` set): the rows are
    #: means over ranks, ``ranks`` one summary per rank, ``buckets`` DDP's
    #: gradient buckets, ``link`` the all-reduce bandwidth and latency measured.
    world_size: int = 1
    backend: str | None = None
    ranks: tuple[RankRow, ...] = ()
    buckets: tuple[BucketRow, ...] = ()
    link: LinkEstimate | None = None
    #: ``profile --predict``/``--cost``: the run joined with a cost estimate by layer
    #: name (``layertime.cost.compare.Comparison.to_dict()``, schema
    #: ``layertime.prediction/1``); predicted numbers are estimates.
    prediction: Mapping[str, Any] | None = None
    #: CUDA runs: the wall time of each traced step (profiler and hooks
    #: included).  There the rows add up to each traced step's kernel time plus
    #: the GPU's idle time in the unprofiled step, so ``profiled_step_samples_s``
    #: is not the traced wall; the overhead is measured on these.  Empty when
    #: the two are the same (CPU runs).
    traced_step_samples_s: tuple[float, ...] = ()
    #: What was asked of the measurement, so a reader sees why fewer steps were
    #: taken: the traced steps asked for, the time budget (seconds) that may
    #: have cut them, and the fastest warm-up step the budget was judged by.
    steps_requested: int | None = None
    time_budget_s: float | None = None
    warmup_step_s: float | None = None
    #: ``profile --compile`` / a ``torch.compile``d model in ``Profiler``: how it was
    #: compiled and attributed (``layertime.compiled_result``); None for eager runs.
    compiled: CompiledSummary | None = None
    #: Forward/backward passes per step: a step is one optimizer step, and with
    #: gradient accumulation it holds this many micro-batches (each of
    #: ``batch_size``); layers' ``calls`` count every pass.
    micro_batches: int = 1
    #: Token models (``hf:``): token ids per sequence (``input_shape`` is
    #: ``(seq_len,)``); None for image models.
    seq_len: int | None = None
    #: Facts the reader needs that are not warnings, e.g. tied weights counted once.
    notes: tuple[str, ...] = ()

    # -- derived quantities (never stored separately, so never inconsistent)
    @property
    def step_s(self) -> float:
        """Median unprofiled step, seconds."""
        return statistics.median(self.step_samples_s) if self.step_samples_s else math.nan

    @property
    def step_spread_s(self) -> float:
        return _std(self.step_samples_s)

    @property
    def profiled_step_s(self) -> float:
        """Mean profiled step, seconds: exactly what the rows add up to."""
        s = self.profiled_step_samples_s
        return sum(s) / len(s) if s else math.nan

    @property
    def overhead_ratio(self) -> float:
        """Median traced step over median unprofiled step (wall times)."""
        traced = self.traced_step_samples_s or self.profiled_step_samples_s
        if not self.step_samples_s or not traced:
            return math.nan
        return statistics.median(traced) / self.step_s

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def comm_s(self) -> float:
        """Gradient synchronisation per step, hidden and exposed (0 unless data-parallel)."""
        return sum(r.comm_s for r in self.layers)

    @property
    def comm_bytes(self) -> int:
        return sum(r.comm_bytes for r in self.layers)

    def by_kind(self) -> dict[str, KindTotal]:
        """Time and parameters per kind (plus ``step`` and ``unattributed``).

        Shares are fractions of the profiled step and add up to 1.
        """
        total = self.profiled_step_s
        params_total = self.params or 1
        acc: dict[str, list[float]] = {}
        params: dict[str, int] = {}
        comm: dict[str, list[float]] = {}
        for r in self.layers:
            a = acc.setdefault(r.kind, [0.0, 0.0, 0.0])
            a[0] += r.forward_s
            a[1] += r.backward_s
            a[2] += r.update_s
            params[r.kind] = params.get(r.kind, 0) + r.params
            c = comm.setdefault(r.kind, [0.0, 0.0, 0.0])
            c[0] += r.comm_s
            c[1] += r.comm_exposed_s
            c[2] += r.comm_bytes
        comm_total, bytes_total = self.comm_s, self.comm_bytes
        p = self.phases
        if p.loss_s:
            acc.setdefault("loss", [0.0, 0.0, 0.0])[0] += p.loss_s
        acc["step"] = [p.step_level_s, 0.0, 0.0]
        acc["unattributed"] = [p.unattributed_s, 0.0, 0.0]
        order = [k for k in KINDS + STEP_KINDS if k in acc]
        out: dict[str, KindTotal] = {}
        for k in order:
            f, b, u = acc[k]
            cs, ce, cb = comm.get(k, (0.0, 0.0, 0.0))
            t = f + b + u + ce
            out[k] = KindTotal(
                kind=k,
                time_s=t,
                share=t / total if total else 0.0,
                params=params.get(k, 0),
                params_share=params.get(k, 0) / params_total,
                forward_s=f,
                backward_s=b,
                update_s=u,
                comm_s=cs,
                comm_exposed_s=ce,
                comm_share=cs / comm_total if comm_total else 0.0,
                comm_bytes=int(cb),
                comm_bytes_share=cb / bytes_total if bytes_total else 0.0,
            )
        return out

    def placements(self) -> dict[str, tuple[str, str | None]]:
        """Layer name -> (role, block): as measured, or placed now for runs saved before roles."""
        if all(r.role is not None for r in self.layers):
            return {r.name: (str(r.role), r.block) for r in self.layers}
        from layertime.roles import roles_of

        placed = roles_of(self.layers)
        return {
            r.name: (r.role, r.block) if r.role is not None else
            (placed[r.name].role, placed[r.name].block)
            for r in self.layers
        }

    def roles(self) -> dict[str, RoleTotal]:
        """Time and parameters per role, plus ``loss``, ``step`` and ``unattributed``.

        Shares are fractions of the profiled step and add up to 1, as in
        :meth:`by_kind`; parameter shares add up to 1 over the roles.
        """
        from layertime.roles import ROLES

        total = self.profiled_step_s
        params_total = self.params or 1
        placed = self.placements()
        acc: dict[str, list[float]] = {}
        for r in self.layers:
            role = placed[r.name][0]
            a = acc.setdefault(role, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            a[0] += r.forward_s
            a[1] += r.backward_s
            a[2] += r.update_s
            a[6] += r.comm_exposed_s
            a[3] += r.params
            if role == "attention" and r.kind == "attention":
                a[4] += r.total_s
            a[5] += 1
        p = self.phases
        step_rows = {"loss": p.loss_s, "step": p.zero_grad_s + p.data_s,
                     "unattributed": p.unattributed_s}
        out: dict[str, RoleTotal] = {}
        for role in ROLES:
            if role not in acc:
                continue
            f, b, u, n, core, rows, comm = acc[role]
            t = f + b + u + comm
            out[role] = RoleTotal(
                role=role, time_s=t, share=t / total if total else 0.0, params=int(n),
                params_share=n / params_total, forward_s=f, backward_s=b, update_s=u,
                core_s=core, core_share=core / total if total else 0.0, rows=int(rows),
            )
        for role, t in step_rows.items():
            if t or role != "loss":
                out[role] = RoleTotal(role, t, t / total if total else 0.0, 0, 0.0, forward_s=t)
        return out

    def is_transformer(self) -> bool:
        """Whether the model has both attention and MLP layers that took time."""
        roles = self.roles()
        return all(k in roles and roles[k].time_s > 0 for k in ("attention", "mlp"))

    def _transformer_headline(self, kinds: Mapping[str, KindTotal]) -> str:
        """Attention against the MLP, then embeddings and head together."""
        roles = self.roles()
        att, mlp = roles["attention"], roles["mlp"]
        parts = [
            f"attention: {att.share:.0%} of step time, {att.params_share:.0%} of parameters "
            f"(its score/softmax core: {att.core_share:.0%})",
            f"MLP: {mlp.share:.0%} of time, {mlp.params_share:.0%} of parameters",
        ]
        ends = [roles[k] for k in ("embedding", "head") if k in roles]
        if ends:
            share = sum(r.share for r in ends)
            params = sum(r.params_share for r in ends)
            noun = " and ".join(r.label for r in ends)
            parts.append(f"{noun}: {share:.0%} of time, {params:.0%} of parameters")
        return "; ".join(parts) + self._comm_label(kinds) + f" ({self._config_label()})"

    def headline(self) -> str:
        """The one-line answer: the kinds that take the most time, with their parameter share.

        Conv and fully connected layers are named first when the model has
        them, since that is the question the tool exists to answer; then any
        other kind that takes more time than either of them (AlexNet 2012's
        normalisation layers); a model with neither names its two largest
        kinds.  For a transformer (attention and MLP layers that took time,
        ``is_transformer``) the question is attention against the MLP, and
        the headline answers it by role instead.
        """
        kinds = {k: v for k, v in self.by_kind().items() if k not in STEP_KINDS}
        if not kinds:
            return f"no layers measured ({self._config_label()})"
        if self.is_transformer():
            return self._transformer_headline(kinds)
        by_time = sorted(kinds, key=lambda k: -kinds[k].time_s)
        chosen: list[str] = [k for k in ("conv", "linear") if k in kinds]
        if not chosen:
            chosen = by_time[:2]
        else:
            floor = min(kinds[k].time_s for k in chosen)
            larger = [k for k in by_time if k not in chosen and kinds[k].time_s > floor]
            if len(chosen) == 1 and not larger:
                larger = [k for k in by_time if k not in chosen][:1]
            chosen += larger
        parts = []
        for i, k in enumerate(chosen):
            kt = kinds[k]
            noun = f"{kt.label} layers" if k not in ("loss", "other") else kt.label
            time_word = "of step time" if i == 0 else "of time"
            parts.append(
                f"{noun}: {kt.share:.0%} {time_word}, {kt.params_share:.0%} of parameters"
            )
        return "; ".join(parts) + self._comm_label(kinds) + f" ({self._config_label()})"

    def _comm_label(self, kinds: Mapping[str, KindTotal]) -> str:
        """How gradient communication splits between conv and fully connected layers."""
        if not self.comm_s:
            return ""
        split = ", ".join(
            f"{kinds[k].comm_share:.0%} {kinds[k].label}" for k in ("conv", "linear") if k in kinds
        )
        exposed = self.phases.comm_exposed_s
        step = self.profiled_step_s
        return (
            f"; gradient all-reduce over {self.world_size} ranks: {split}"
            f" ({exposed / step if step else 0.0:.0%} of the step exposed)"
        )

    def _config_label(self) -> str:
        dtype = self.dtype if not self.amp else f"amp {self.amp}"
        ranks = f" per rank x {self.world_size} ranks" if self.world_size > 1 else ""
        compiled = ", compiled" if self.compiled is not None else ""
        micro = f" x {self.micro_batches} accumulated" if self.micro_batches > 1 else ""
        seq = f", seq {self.seq_len}" if self.seq_len is not None else ""
        return (f"{self.model}, batch {self.batch_size}{micro}{ranks}{seq}, {self.device}, "
                f"{dtype}{compiled}")

    # -- JSON --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The run as plain JSON types, schema ``layertime.run/1``."""
        kinds = {
            k: {
                "time_s": v.time_s,
                "share": v.share,
                "forward_s": v.forward_s,
                "backward_s": v.backward_s,
                "update_s": v.update_s,
                "params": v.params,
                "params_share": v.params_share,
                "comm_s": v.comm_s,
                "comm_exposed_s": v.comm_exposed_s,
                "comm_share": v.comm_share,
                "comm_bytes": v.comm_bytes,
                "comm_bytes_share": v.comm_bytes_share,
            }
            for k, v in self.by_kind().items()
        }
        layers = []
        for r in self.layers:
            d = asdict(r)
            d["total_s"] = r.total_s
            layers.append(d)
        return {
            "schema": SCHEMA,
            "model": self.model,
            "device": self.device,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "dtype": self.dtype,
            "amp": self.amp,
            "optimizer": self.optimizer,
            "steps": self.steps,
            "warmup_steps": self.warmup_steps,
            "timing": self.timing,
            "update_split": self.update_split,
            "step_s": self.step_s,
            "step_spread_s": self.step_spread_s,
            "step_samples_s": list(self.step_samples_s),
            "profiled_step_s": self.profiled_step_s,
            "profiled_step_samples_s": list(self.profiled_step_samples_s),
            "traced_step_samples_s": list(self.traced_step_samples_s),
            "steps_requested": self.steps_requested,
            "time_budget_s": self.time_budget_s,
            "warmup_step_s": self.warmup_step_s,
            "micro_batches": self.micro_batches,
            "overhead_ratio": self.overhead_ratio,
            "headline": self.headline(),
            "params": self.params,
            "layers": layers,
            "phases": asdict(self.phases),
            "phase_spread_s": dict(self.phase_spread_s),
            "kinds": kinds,
            "environment": asdict(self.environment),
            "created": self.created,
            "warnings": list(self.warnings),
            "timeline": [asdict(sl) for sl in self.timeline],
            "world_size": self.world_size,
            "backend": self.backend,
            "comm_s": self.comm_s,
            "comm_bytes": self.comm_bytes,
            "ranks": [asdict(r) for r in self.ranks],
            "buckets": [{**asdict(b), "layers": dict(b.layers)} for b in self.buckets],
            "link": asdict(self.link) if self.link is not None else None,
            **({"prediction": dict(self.prediction)} if self.prediction is not None else {}),
            **({"compiled": self.compiled.to_dict()} if self.compiled is not None else {}),
            "seq_len": self.seq_len,
            "notes": list(self.notes),
            "roles": {
                k: {
                    "time_s": v.time_s,
                    "share": v.share,
                    "forward_s": v.forward_s,
                    "backward_s": v.backward_s,
                    "update_s": v.update_s,
                    "params": v.params,
                    "params_share": v.params_share,
                    "core_s": v.core_s,
                    "core_share": v.core_share,
                    "rows": v.rows,
                }
                for k, v in self.roles().items()
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(_finite(self.to_dict()), indent=indent)

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically: a failed write leaves no half file."""
        write_text_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Run:
        if not isinstance(d, Mapping):
            raise LayertimeError(f"not a layertime run (JSON {type(d).__name__}, not an object)")
        schema = d.get("schema")
        if schema != SCHEMA:
            raise LayertimeError(f"not a layertime run (schema {schema!r}, expected {SCHEMA!r})")
        try:
            layer_fields = {f for f in LayerRow.__dataclass_fields__}
            phase_fields = {f for f in Phases.__dataclass_fields__}
            layers = tuple(
                LayerRow(**{k: v for k, v in row.items() if k in layer_fields})
                for row in d["layers"]
            )
            return cls(
                model=d["model"],
                device=d["device"],
                batch_size=int(d["batch_size"]),
                input_shape=tuple(int(x) for x in d["input_shape"]),
                dtype=d["dtype"],
                optimizer=d["optimizer"],
                steps=int(d["steps"]),
                warmup_steps=int(d["warmup_steps"]),
                step_samples_s=tuple(_num(x) for x in d["step_samples_s"]),
                profiled_step_samples_s=tuple(_num(x) for x in d["profiled_step_samples_s"]),
                traced_step_samples_s=tuple(_num(x) for x in d.get("traced_step_samples_s", ())),
                steps_requested=_opt_int(d.get("steps_requested")),
                time_budget_s=_opt_num(d.get("time_budget_s")),
                warmup_step_s=_opt_num(d.get("warmup_step_s")),
                micro_batches=int(d.get("micro_batches", 1)),
                layers=layers,
                phases=Phases(**{k: v for k, v in d["phases"].items() if k in phase_fields}),
                environment=Environment(**d["environment"]),
                timing=d["timing"],
                amp=d.get("amp"),
                num_classes=d.get("num_classes"),
                created=d.get("created", ""),
                warnings=tuple(d.get("warnings", ())),
                update_split=d.get("update_split", "parameter-elements"),
                phase_spread_s=dict(d.get("phase_spread_s", {})),
                timeline=tuple(Slice(**sl) for sl in d.get("timeline", ())),
                world_size=int(d.get("world_size", 1)),
                backend=d.get("backend"),
                ranks=tuple(RankRow(**r) for r in d.get("ranks", ())),
                buckets=tuple(BucketRow(**b) for b in d.get("buckets", ())),
                link=LinkEstimate(**d["link"]) if d.get("link") else None,
                prediction=dict(d["prediction"]) if d.get("prediction") else None,
                compiled=CompiledSummary.from_dict(d["compiled"]) if d.get("compiled") else None,
                seq_len=int(d["seq_len"]) if d.get("seq_len") is not None else None,
                notes=tuple(d.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LayertimeError(f"malformed layertime run: {e!r}") from e

    @classmethod
    def from_json(cls, text: str) -> Run:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayertimeError(f"not JSON: {e}") from e
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Run:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise LayertimeError(f"cannot read {p}: {e.strerror}") from e
        except UnicodeDecodeError as e:
            raise LayertimeError(f"not a layertime run: {p} is not UTF-8 text") from e
        return cls.from_json(text)

    def with_layers(self, layers: Iterable[LayerRow]) -> Run:
        return replace(self, layers=tuple(layers))


def _num(x: Any) -> float:
    """A JSON number back to float; ``null`` (a non-finite value) is NaN."""
    return math.nan if x is None else float(x)


def _opt_num(x: Any) -> float | None:
    return None if x is None else _num(x)


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def _finite(obj: Any) -> Any:
    """Replace NaN and infinities by None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise LayertimeError(f"cannot write {path}: {e.strerror}") from e
