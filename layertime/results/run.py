"""The immutable result model: one profiled training configuration.

Collectors (``layertime.measure``) build a :class:`Run`; renderers and the
store only read it.  A run round-trips through JSON under the schema
``layertime.run/1`` documented in ``docs/schema.md``.  All times are seconds
per training step (the mean over the measured steps) unless a name says
otherwise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from layertime.files import read_text, write_text_atomic
from layertime.records import build, build_all, check_schema, number, parse_object, reading, to_json
from layertime.results.compiled import CompiledSummary
from layertime.results.parallel.data_parallel import BucketRow, LinkEstimate, RankRow
from layertime.results.environment import Environment
from layertime.results.memory import MemorySummary, memory_totals
from layertime.results.parallel.sharded import COLLECTIVE_KINDS, COLLECTIVE_LABELS, CollectiveRow, ShardLayout
from layertime.results.trace import TraceSource
from layertime.results.rows import (
    KindTotal,
    LayerRow,
    Phases,
    RoleTotal,
    Slice,
    kind_totals,
    role_totals,
)
from layertime.taxonomy import STEP_KINDS

__all__ = ["SCHEMA", "KindTotal", "LayerRow", "Phases", "RoleTotal", "Run", "Slice"]

SCHEMA = "layertime.run/1"
#: The headline adds each named kind's (role's) share of saved activations when, for one
#: of them, it differs from its share of parameters by this much: memory then says what
#: parameters do not (conv layers: few parameters, most activations).
MEMORY_DECIDES = 0.25


def _std(samples: Sequence[float]) -> float:
    return statistics.stdev(samples) if len(samples) > 1 else 0.0


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
    #: compiled and attributed (``layertime.results.compiled``); None for eager runs.
    compiled: CompiledSummary | None = None
    #: Forward/backward passes per step: a step is one optimizer step, and with
    #: gradient accumulation it holds this many micro-batches (each of
    #: ``batch_size``); layers' ``calls`` count every pass.
    micro_batches: int = 1
    #: Token inputs: token ids per sequence (``input_shape`` is ``(seq_len,)``);
    #: None for image inputs.
    seq_len: int | None = None
    #: Facts the reader needs that are not warnings, e.g. tied weights counted once.
    notes: tuple[str, ...] = ()
    #: Sharded runs (FSDP2, tensor parallelism): how the model was sharded, and the
    #: step's collectives by kind, phase and owner (``layertime.results.parallel.sharded``).
    #: Layers' ``comm_*`` fields hold their share; None and () otherwise.
    sharding: ShardLayout | None = None
    collectives: tuple[CollectiveRow, ...] = ()
    #: ``layertime attribute``: the trace files the run was attributed from (its steps are
    #: the trace's profiled steps: ``step_samples_s`` is empty); None for a measured run.
    trace: TraceSource | None = None
    #: Memory, measured in a step of its own (``layertime.results.memory``): the peak,
    #: what was live then, the live bytes over the step; the layers' ``saved_bytes``,
    #: ``params_bytes``, ``grads_bytes`` and ``optimizer_state_bytes`` beside it.  None
    #: when not measured (``--no-memory``, compiled runs, older files).
    memory: MemorySummary | None = None

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
        return kind_totals(self.layers, self.phases, self.profiled_step_s)

    def roles(self) -> dict[str, RoleTotal]:
        """Time and parameters per role (``attention``, ``mlp``, ... as the rows were
        placed), plus ``loss``, ``step`` and ``unattributed``; shares add up to 1."""
        return role_totals(self.layers, self.phases, self.profiled_step_s)

    def is_transformer(self) -> bool:
        """Whether the model has blocks that mix the sequence (attention or a scan) and
        feed-forward layers (an MLP, experts) or more mixing, whose rows took time: a
        transformer, a mixture of experts, a state-space model (Mamba), a hybrid (Jamba)."""
        roles = self.roles()

        def took(role: str) -> bool:
            return role in roles and roles[role].time_s > 0

        mixes = took("attention") or took("mixing")
        return mixes and (took("mlp") or took("experts") or took("mixing"))

    def headline(self) -> str:
        """The one-line answer: the kinds that take the most time, with their parameter share.

        Conv and fully connected layers are named first when the model has
        them, since that is the question the tool exists to answer; then any
        other kind that takes more time than either of them (AlexNet 2012's
        normalisation layers); a model with neither names its two largest
        kinds.  For a model of transformer-like blocks (:meth:`is_transformer`)
        the question is what mixes the sequence against the feed-forward layers,
        and the headline answers it by role instead.
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
        saved = self._saved_shares("kind", {k: kinds[k].params_share for k in chosen})
        parts = []
        for i, k in enumerate(chosen):
            kt = kinds[k]
            noun = f"{kt.label} layers" if k not in ("loss", "other") else kt.label
            time_word = "of step time" if i == 0 else "of time"
            parts.append(
                f"{noun}: {kt.share:.0%} {time_word}, {kt.params_share:.0%} of parameters"
                + (f", {saved.get(k, 0.0):.0%} of saved activations" if saved else "")
            )
        return "; ".join(parts) + self._comm_label(kinds) + f" ({self._config_label()})"

    def _transformer_headline(self, kinds: Mapping[str, KindTotal]) -> str:
        """Each role of the blocks that took time (attention with its score/softmax core,
        sequence mixing with its selective scan, the MLP, MoE experts with their router),
        then embeddings and head together."""
        roles = self.roles()
        parts: list[str] = []
        shown = [r for r in ("attention", "mixing", "mlp", "experts")
                 if r in roles and roles[r].time_s]
        saved = self._saved_shares("role", {r: roles[r].params_share for r in shown})

        def part(noun: str, role: str, rt: RoleTotal, note: str = "") -> None:
            when = "of step time" if not parts else "of time"
            mem = f", {saved.get(role, 0.0):.0%} of saved activations" if saved else ""
            parts.append(f"{noun}: {rt.share:.0%} {when}, {rt.params_share:.0%} of parameters"
                         + mem + note)

        for role in shown:
            rt = roles[role]
            note = ""
            if role == "attention":
                note = f" (its score/softmax core: {rt.core_share:.0%})"
            elif role == "mixing" and rt.core_s:
                note = f" (its selective scan: {rt.core_share:.0%})"
            elif role == "experts" and "router" in roles:
                note = f" (router {roles['router'].share:.0%})"
            part(rt.label, role, rt, note)
        ends = [roles[k] for k in ("embedding", "head") if k in roles]
        if ends:
            share = sum(r.share for r in ends)
            params = sum(r.params_share for r in ends)
            noun = " and ".join(r.label for r in ends)
            parts.append(f"{noun}: {share:.0%} of time, {params:.0%} of parameters")
        return "; ".join(parts) + self._comm_label(kinds) + f" ({self._config_label()})"

    def _saved_shares(self, by: str, params_share: Mapping[str, float]) -> dict[str, float]:
        """Each kind's (role's) share of the saved activations, when memory was measured
        and decides the answer (:data:`MEMORY_DECIDES`); else empty."""
        if self.memory is None:
            return {}
        totals = memory_totals(self.layers, by)
        shares = {k: v.saved_share for k, v in totals.items()}
        if not any(shares.values()):
            return {}
        if any(abs(shares.get(k, 0.0) - p) >= MEMORY_DECIDES for k, p in params_share.items()):
            return shares
        return {}

    def comm_by_kind(self) -> dict[str, tuple[float, float]]:
        """Sharded runs: (exposed, hidden) seconds per collective kind, in report order."""
        out: dict[str, tuple[float, float]] = {}
        for k in COLLECTIVE_KINDS:
            rows = [c for c in self.collectives if c.kind == k and c.scope != "step"]
            if rows:
                out[k] = (sum(c.exposed_s for c in rows), sum(c.hidden_s for c in rows))
        return out

    def _sharded_comm_label(self) -> str:
        """Communication of a sharded step: exposed by kind, and what hid behind compute."""
        step = self.profiled_step_s
        if not step or not self.collectives:
            return ""
        kinds = self.comm_by_kind()
        exposed = sum(e for e, _ in kinds.values())
        hidden = sum(h for _, h in kinds.values())
        parts = ", ".join(
            f"{COLLECTIVE_LABELS[k]} {e / step:.0%}"
            for k, (e, _) in sorted(kinds.items(), key=lambda kv: -kv[1][0]) if e / step >= 0.005
        )
        text = f"; communication: {exposed / step:.0%} exposed"
        if parts:
            text += f" ({parts})"
        if hidden / step >= 0.005:
            text += f", {hidden / step:.0%} more hidden behind compute"
        return text

    def _comm_label(self, kinds: Mapping[str, KindTotal]) -> str:
        """How gradient communication splits between conv and fully connected layers."""
        if self.sharding is not None:
            return self._sharded_comm_label()
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
        if self.sharding is not None:
            ranks = f" per rank, {self.sharding.describe()}"
        compiled = ", compiled" if self.compiled is not None else ""
        micro = f" x {self.micro_batches} accumulated" if self.micro_batches > 1 else ""
        seq = f", seq {self.seq_len}" if self.seq_len is not None else ""
        return (f"{self.model}, batch {self.batch_size}{micro}{ranks}{seq}, {self.device}, "
                f"{dtype}{compiled}")

    # -- JSON --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The run as plain JSON types, schema ``layertime.run/1``."""
        # Long on purpose: one line per documented field (docs/schema.md), in order.
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
            "sharding": (
                {**asdict(self.sharding), "units": list(self.sharding.units),
                 "tp_layers": dict(self.sharding.tp_layers)}
                if self.sharding is not None else None
            ),
            "collectives": [{**asdict(c), "comm_s": c.comm_s} for c in self.collectives],
            "trace": (
                {**asdict(self.trace), "files": list(self.trace.files),
                 "steps": list(self.trace.steps)} if self.trace is not None else None
            ),
            **({"memory": self.memory.to_dict()} if self.memory is not None else {}),
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
        return to_json(self.to_dict(), indent)

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically: a failed write leaves no half file."""
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Run:
        """A run from its JSON object; keys this version does not know are ignored."""
        check_schema(d, SCHEMA, "layertime run")
        with reading("layertime run"):
            return build(
                cls,
                d,
                batch_size=int,
                input_shape=lambda v: tuple(int(x) for x in v),
                steps=int,
                warmup_steps=int,
                step_samples_s=_numbers,
                profiled_step_samples_s=_numbers,
                traced_step_samples_s=_numbers,
                steps_requested=lambda v: None if v is None else int(v),
                time_budget_s=lambda v: None if v is None else number(v),
                warmup_step_s=lambda v: None if v is None else number(v),
                micro_batches=int,
                layers=lambda v: build_all(LayerRow, v),
                phases=lambda v: build(Phases, v),
                environment=lambda v: build(Environment, v),
                warnings=tuple,
                phase_spread_s=dict,
                timeline=lambda v: build_all(Slice, v),
                world_size=int,
                ranks=lambda v: build_all(RankRow, v),
                buckets=lambda v: build_all(BucketRow, v),
                link=lambda v: build(LinkEstimate, v) if v else None,
                prediction=lambda v: dict(v) if v else None,
                compiled=lambda v: CompiledSummary.from_dict(v) if v else None,
                seq_len=lambda v: None if v is None else int(v),
                notes=tuple,
                sharding=lambda v: build(ShardLayout, v, units=tuple, tp_layers=dict)
                if v else None,
                collectives=lambda v: build_all(CollectiveRow, v),
                trace=lambda v: build(TraceSource, v, files=tuple, steps=tuple) if v else None,
                memory=lambda v: MemorySummary.from_dict(v) if v else None,
            )

    @classmethod
    def from_json(cls, text: str) -> Run:
        return cls.from_dict(parse_object(text, "layertime run"))

    @classmethod
    def load(cls, path: str | Path) -> Run:
        return cls.from_json(read_text(path, "run"))

    def with_layers(self, layers: Iterable[LayerRow]) -> Run:
        return replace(self, layers=tuple(layers))


def _numbers(xs: Any) -> tuple[float, ...]:
    return tuple(number(x) for x in xs)
