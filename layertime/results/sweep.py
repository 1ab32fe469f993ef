"""The result of a sweep: each configuration's outcome, and where conv and fully
connected layers trade places (along the batch axis) or attention and the MLP (along
the sequence axis of a token sweep).

A :class:`SweepResult` holds the measured runs themselves; what the store
keeps of it, and what a report of a stored sweep reads, is its
:class:`SweepSummary` (schema ``layertime.sweep/1``): per configuration its
status, step time and each kind's share (and each role's, in a token sweep).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from layertime.records import build, build_all, check_schema, reading
from layertime.results.run import Run

SCHEMA = "layertime.sweep/1"


@dataclass(frozen=True)
class SweepPoint:
    """One configuration's outcome."""

    config: dict[str, Any]
    status: str  # "ok", "failed" or "skipped" (already stored)
    run_id: int | None
    run: Run | None
    error: str | None = None


@dataclass(frozen=True)
class Crossover:
    """The batch size below which fully connected layers take more time than conv layers."""

    group: dict[str, Any]
    batch_size: float
    below: int
    above: int
    interpolated: bool = True

    def describe(self) -> str:
        label = ", ".join(f"{k} {v}" for k, v in self.group.items() if v is not None)
        return (
            f"crossover at batch ~{self.batch_size:.1f} (interpolated between {self.below} "
            f"and {self.above}; {label}): below it fully connected layers take more time "
            "than conv layers"
        )


@dataclass(frozen=True)
class SeqCrossover:
    """The sequence length where attention and the MLP trade places: above it,
    attention takes more time than the MLP (``attention_above``), or less."""

    group: dict[str, Any]
    seq_len: float
    below: int
    above: int
    interpolated: bool = True
    #: Which way they cross: True when attention leads above ``seq_len`` (the usual
    #: case: attention's work grows with the square of the length).
    attention_above: bool = True

    def describe(self) -> str:
        label = ", ".join(f"{k} {v}" for k, v in self.group.items() if v is not None)
        if self.attention_above:
            what, after = "attention overtakes the MLP", "attention layers take more"
        else:
            what, after = "the MLP overtakes attention", "MLP layers take more"
        return (
            f"{what} at seq ~{self.seq_len:.0f} (interpolated between {self.below} and "
            f"{self.above}; {label}): above it {after} time than "
            + ("MLP layers" if self.attention_above else "attention layers")
        )


@dataclass(frozen=True)
class SummaryPoint:
    """One configuration as a stored sweep keeps it: no rows, each kind's share of the step."""

    config: dict[str, Any]
    status: str
    run_id: int | None = None
    error: str | None = None
    step_s: float | None = None
    #: kind -> share of the profiled step; None for a configuration that failed.
    kinds: dict[str, float] | None = None
    #: Token sweeps: role -> share of the profiled step (None for image sweeps).
    roles: dict[str, float] | None = None
    #: Memory, when measured: bytes saved for backward in the step, and its peak.
    saved_bytes: int | None = None
    peak_bytes: int | None = None


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep's stored row holds (``layertime.sweep/1``)."""

    points: tuple[SummaryPoint, ...]
    crossovers: tuple[Crossover, ...] = ()
    seq_crossovers: tuple[SeqCrossover, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        tokens = any(p.config.get("seq_len") is not None for p in self.points)
        return {
            "schema": SCHEMA,
            "points": [
                {
                    "config": p.config,
                    "status": p.status,
                    "run_id": p.run_id,
                    "error": p.error,
                    "step_s": p.step_s,
                    "kinds": p.kinds,
                    **({"roles": p.roles} if tokens else {}),
                    **({"saved_bytes": p.saved_bytes, "peak_bytes": p.peak_bytes}
                       if p.saved_bytes is not None else {}),
                }
                for p in self.points
            ],
            "crossovers": [
                {"group": c.group, "batch_size": c.batch_size, "below": c.below, "above": c.above}
                for c in self.crossovers
            ],
            **({"seq_crossovers": [
                {"group": c.group, "seq_len": c.seq_len, "below": c.below, "above": c.above,
                 "attention_above": c.attention_above}
                for c in self.seq_crossovers
            ]} if tokens else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepSummary:
        """A summary from its JSON object; keys this version does not know are ignored."""
        check_schema(d, SCHEMA, "layertime sweep")
        with reading("layertime sweep"):
            return build(
                cls,
                d,
                points=lambda v: build_all(SummaryPoint, v or [], config=lambda c: dict(c or {})),
                crossovers=lambda v: build_all(Crossover, v or [], group=lambda g: dict(g or {})),
                seq_crossovers=lambda v: build_all(SeqCrossover, v or [],
                                                   group=lambda g: dict(g or {})),
            )


@dataclass(frozen=True)
class SweepResult:
    """Every configuration of a sweep, with its run when it finished."""

    sweep_id: int | None
    points: tuple[SweepPoint, ...]
    crossovers: tuple[Crossover, ...] = field(default_factory=tuple)
    seq_crossovers: tuple[SeqCrossover, ...] = field(default_factory=tuple)

    def summarised(self) -> SweepSummary:
        """The summary the store keeps: statuses, step times and kind shares."""
        return SweepSummary(
            points=tuple(
                SummaryPoint(
                    config=p.config,
                    status=p.status,
                    run_id=p.run_id,
                    error=p.error,
                    step_s=p.run.step_s if p.run else None,
                    kinds={k: v.share for k, v in p.run.by_kind().items()} if p.run else None,
                    roles={k: v.share for k, v in p.run.roles().items()}
                    if p.run and p.config.get("seq_len") is not None else None,
                    saved_bytes=p.run.memory.saved_bytes
                    if p.run and p.run.memory is not None else None,
                    peak_bytes=p.run.memory.peak_bytes
                    if p.run and p.run.memory is not None else None,
                )
                for p in self.points
            ),
            crossovers=self.crossovers,
            seq_crossovers=self.seq_crossovers,
        )

    def summary(self) -> dict[str, Any]:
        """What the sweep's own stored row holds (the summary's JSON)."""
        return self.summarised().to_dict()
