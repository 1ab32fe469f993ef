"""The sharded-training what-if (``layertime cost --fsdp/--tp``): the collectives of one
training step under FSDP2 and/or tensor parallelism, per collective and per layer, and
which of them hide behind compute.

:mod:`layertime.cost.sharded` makes it (how it counts and times is documented there and
in ``docs/cost.md``); the terminal table and ``--comm-json`` read it.  JSON schema
``layertime.sharded/1`` (``docs/schema.md``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layertime.files import read_text, write_text_atomic
from layertime.records import build, build_all, check_schema, parse_object, reading, to_json
from layertime.results.parallel.comm import Link
from layertime.results.parallel.sharded import COLLECTIVE_LABELS

SCHEMA = "layertime.sharded/1"

#: The collectives counted, in table order (kinds of ``results.parallel.sharded``, where a
#: measured run's are); FSDP's run on the data-parallel group (``dp``), tensor
#: parallelism's all-reduces on the tensor-parallel group (``tp``).
COUNTED_KINDS: tuple[str, ...] = ("all_gather", "reduce_scatter", "all_reduce")
COUNTED_LABELS: Mapping[str, str] = {**COLLECTIVE_LABELS, "all_reduce": "TP all-reduce"}


@dataclass(frozen=True)
class Collective:
    """One collective of a training step.

    ``owner`` is the FSDP unit it gathers or reduces (``""``: the root) or the
    tensor-parallel layer that issues it.  ``bytes`` is the full size of its tensor (a
    unit's gathered parameters, its unreduced gradients, an all-reduced activation),
    ``wire_bytes`` what each rank sends in the ring: ``(n-1)/n`` of it for an all-gather or
    a reduce-scatter, ``2(n-1)/n`` for an all-reduce.  ``seconds`` (None: no link given),
    ``exposed_s`` (None: no compute times), ``start_s`` on the step's timeline.
    """

    kind: str
    phase: str
    group: str
    ranks: int
    owner: str
    bytes: int
    wire_bytes: int
    seconds: float | None = None
    exposed_s: float | None = None
    start_s: float | None = None

    @property
    def hidden_s(self) -> float | None:
        if self.seconds is None or self.exposed_s is None:
            return None
        return max(0.0, self.seconds - self.exposed_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "phase": self.phase, "group": self.group, "ranks": self.ranks,
            "owner": self.owner, "bytes": self.bytes, "wire_bytes": self.wire_bytes,
            "seconds": self.seconds, "exposed_s": self.exposed_s, "hidden_s": self.hidden_s,
            "start_s": self.start_s,
        }


@dataclass(frozen=True)
class ShardedLayer:
    """One layer of a sharded step: what it holds, the collectives charged to it (an FSDP
    unit's by the layer's share of the unit's bytes, a tensor-parallel one to the layer
    that issues it) and its compute per rank.

    ``params`` are its own parameter elements unsharded, ``local_params`` what one rank
    holds after tensor parallelism and FSDP (FSDP pads each parameter's first dimension to
    a multiple of the data-parallel size).  Times are None where they cannot be predicted
    (no link, no compute times).  ``measured_*``: the measured run's, when the what-if is
    for the layout that run measured.
    """

    name: str
    kind: str
    type: str
    unit: str
    params: int
    local_params: int
    tp_style: str | None = None
    role: str | None = None
    block: str | None = None
    comm_bytes: int = 0
    wire_bytes: int = 0
    comm_s: float | None = None
    exposed_s: float | None = None
    forward_s: float | None = None
    backward_s: float | None = None
    update_s: float | None = None
    measured_comm_s: float | None = None
    measured_exposed_s: float | None = None

    @property
    def hidden_s(self) -> float | None:
        if self.comm_s is None or self.exposed_s is None:
            return None
        return max(0.0, self.comm_s - self.exposed_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "type": self.type, "unit": self.unit,
            "params": self.params, "local_params": self.local_params,
            "tp_style": self.tp_style, "role": self.role, "block": self.block,
            "comm_bytes": self.comm_bytes, "wire_bytes": self.wire_bytes,
            "comm_s": self.comm_s, "exposed_s": self.exposed_s, "hidden_s": self.hidden_s,
            "forward_s": self.forward_s, "backward_s": self.backward_s,
            "update_s": self.update_s, "measured_comm_s": self.measured_comm_s,
            "measured_exposed_s": self.measured_exposed_s,
        }


@dataclass(frozen=True)
class CollectiveTotal:
    """All collectives of one kind in a step."""

    kind: str
    count: int
    bytes: int
    wire_bytes: int
    seconds: float | None
    exposed_s: float | None

    @property
    def label(self) -> str:
        return COUNTED_LABELS.get(self.kind, self.kind)

    @property
    def hidden_s(self) -> float | None:
        if self.seconds is None or self.exposed_s is None:
            return None
        return max(0.0, self.seconds - self.exposed_s)


@dataclass(frozen=True)
class LayerGroup:
    """Layers that differ only in their block number (``model.layers.*.mlp.down_proj``)."""

    pattern: str
    layers: int
    comm_bytes: int
    wire_bytes: int
    comm_s: float | None
    exposed_s: float | None
    tp_style: str | None = None

    @property
    def hidden_s(self) -> float | None:
        if self.comm_s is None or self.exposed_s is None:
            return None
        return max(0.0, self.comm_s - self.exposed_s)


def pattern_of(name: str) -> str:
    """A layer's name with its numbered segments as ``*`` (``layers.3.mlp`` -> ``layers.*.mlp``)."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)", "*", name)


def _link_dict(link: Link | None) -> dict[str, Any] | None:
    if link is None:
        return None
    return {"bandwidth_gbps": link.bandwidth_gbps, "latency_us": link.latency_us,
            "source": link.source}


def _link(d: Any) -> Link | None:
    return None if d is None else build(Link, d)


def _ms(s: float) -> str:
    """Seconds as milliseconds: three significant digits below 100 ms, whole ones above."""
    v = s * 1e3
    if abs(v) >= 99.95:
        return f"{v:,.0f}"
    if v == 0:
        return "0"
    return f"{v:.{max(0, 2 - math.floor(math.log10(abs(v))))}f}"


def _sum(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None)


@dataclass(frozen=True)
class ShardedCost:
    """The collectives of one sharded training step, and the step they make.

    ``world_size = dp x tp``; ``batch_size`` is per data-parallel rank (the ranks of one
    tensor-parallel group share a batch).  ``compute_s`` is one rank's compute per step
    (None without compute times), ``compute_source`` where it comes from (``roofline:
    DEVICE`` or ``measured run``).  The step is ``compute_s + exposed_s``.
    """

    model: str
    batch_size: int
    dtype: str
    world_size: int
    dp: int
    tp: int
    fsdp: bool
    reshard_after_forward: bool
    units: tuple[str, ...]
    collectives: tuple[Collective, ...]
    layers: tuple[ShardedLayer, ...]
    seq_len: int | None = None
    dp_link: Link | None = None
    tp_link: Link | None = None
    tp_plan_source: str | None = None
    compute_s: float | None = None
    compute_source: str | None = None
    measured_step_s: float | None = None
    measured_comm_s: float | None = None
    measured_exposed_s: float | None = None
    notes: tuple[str, ...] = ()
    conventions: Mapping[str, str] = field(default_factory=dict)

    # -- totals ---------------------------------------------------------------

    @property
    def description(self) -> str:
        """``FSDP over 64 ranks``, ``TP over 8 ranks`` or ``FSDP 8 x TP 8``."""
        reshard = "" if self.reshard_after_forward or not self.fsdp else ", no reshard after forward"
        if self.fsdp and self.tp > 1:
            return f"FSDP {self.dp} x TP {self.tp}{reshard}"
        if self.fsdp:
            return f"FSDP over {self.dp} ranks{reshard}"
        return f"TP over {self.tp} ranks"

    @property
    def comm_bytes(self) -> int:
        return sum(c.bytes for c in self.collectives)

    @property
    def wire_bytes(self) -> int:
        return sum(c.wire_bytes for c in self.collectives)

    @property
    def comm_s(self) -> float | None:
        return _sum([c.seconds for c in self.collectives])

    @property
    def exposed_s(self) -> float | None:
        return _sum([c.exposed_s for c in self.collectives])

    @property
    def hidden_s(self) -> float | None:
        comm, exposed = self.comm_s, self.exposed_s
        return None if comm is None or exposed is None else max(0.0, comm - exposed)

    @property
    def step_s(self) -> float | None:
        exposed = self.exposed_s
        return None if self.compute_s is None or exposed is None else self.compute_s + exposed

    def by_collective(self) -> dict[str, CollectiveTotal]:
        """Totals per collective kind, in :data:`COUNTED_KINDS` order (kinds present)."""
        out: dict[str, CollectiveTotal] = {}
        for kind in COUNTED_KINDS:
            cs = [c for c in self.collectives if c.kind == kind]
            if cs:
                out[kind] = CollectiveTotal(
                    kind, len(cs), sum(c.bytes for c in cs), sum(c.wire_bytes for c in cs),
                    _sum([c.seconds for c in cs]), _sum([c.exposed_s for c in cs]))
        return out

    def groups(self) -> list[LayerGroup]:
        """Layers with communication, grouped by :func:`pattern_of`, most exposed first
        (most communication, then most bytes, when times are unknown)."""
        acc: dict[str, list[ShardedLayer]] = {}
        for r in self.layers:
            if r.comm_bytes:
                acc.setdefault(pattern_of(r.name), []).append(r)
        out = [
            LayerGroup(p, len(rs), sum(r.comm_bytes for r in rs), sum(r.wire_bytes for r in rs),
                       _sum([r.comm_s for r in rs]), _sum([r.exposed_s for r in rs]),
                       rs[0].tp_style)
            for p, rs in acc.items()
        ]
        out.sort(key=lambda g: (-(g.exposed_s or 0.0), -(g.comm_s or 0.0), -g.wire_bytes))
        return out

    def chief(self, n: int = 2) -> list[tuple[str, float]]:
        """The ``n`` layer groups that cause most of the exposed communication (else of the
        communication, else of the bytes), with their share of it."""
        groups = self.groups()
        exposed, comm = self.exposed_s, self.comm_s
        if exposed:
            pairs = [(g.pattern, (g.exposed_s or 0.0) / exposed) for g in groups]
        elif comm:
            pairs = [(g.pattern, (g.comm_s or 0.0) / comm) for g in groups]
        else:
            total = self.wire_bytes or 1
            pairs = [(g.pattern, g.wire_bytes / total) for g in groups]
        return [(p or "(model)", s) for p, s in pairs[:n] if s > 0]

    def link_label(self) -> str:
        """``400 Gbit/s`` or ``400 Gbit/s (TP: 3,600 Gbit/s)``; ``no link`` when none."""
        if self.dp_link is None and self.tp_link is None:
            return "no link"
        main = self.dp_link if self.dp > 1 and self.dp_link is not None else self.tp_link
        assert main is not None
        text = f"{main.bandwidth_gbps:,.4g} Gbit/s"
        if (self.dp > 1 and self.tp > 1 and self.tp_link is not None
                and self.tp_link != self.dp_link):
            text += f" (TP: {self.tp_link.bandwidth_gbps:,.4g} Gbit/s)"
        return text

    def headline(self) -> str:
        where = f"{self.world_size} ranks ({self.description})"
        kinds = self.by_collective()
        chief = ", ".join(f"{p} ({s:.0%})" for p, s in self.chief())
        chiefly = f", chiefly {chief}" if chief else ""
        exposed, comm = self.exposed_s, self.comm_s
        if exposed is not None and self.compute_s is not None:
            split = ", ".join(f"{k.label} {_ms(k.exposed_s or 0.0)}"
                              for k in kinds.values() if k.exposed_s)
            hidden = self.hidden_s or 0.0
            step = self.step_s or 0.0
            return (
                f"{self.model}: at {where} over {self.link_label()} the exposed communication "
                f"would be {_ms(exposed)} ms per step"
                f"{' (' + split + ')' if split else ''}{chiefly}; "
                f"{_ms(hidden)} ms more hidden behind compute; step {_ms(step)} ms "
                f"= compute {_ms(self.compute_s)} + exposed {_ms(exposed)}"
            )
        if comm is not None:
            split = ", ".join(f"{k.label} {_ms(k.seconds or 0.0)}" for k in kinds.values())
            return (
                f"{self.model}: at {where} over {self.link_label()} the communication would be "
                f"{_ms(comm)} ms per step ({split}){chiefly}; what hides behind compute "
                "needs --device-profile NAME or --run RUN.json"
            )
        split = ", ".join(f"{k.label} {k.wire_bytes / 2**30:,.2f}" for k in kinds.values())
        return (
            f"{self.model}: at {where} each rank sends {self.wire_bytes / 2**30:,.2f} GiB per "
            f"step ({split}){chiefly}; times need --link-gbps G (or a device profile's link)"
        )

    # -- JSON -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "dtype": self.dtype,
            "world_size": self.world_size,
            "dp": self.dp,
            "tp": self.tp,
            "fsdp": self.fsdp,
            "reshard_after_forward": self.reshard_after_forward,
            "description": self.description,
            "units": list(self.units),
            "tp_plan_source": self.tp_plan_source,
            "dp_link": _link_dict(self.dp_link),
            "tp_link": _link_dict(self.tp_link),
            "compute_s": self.compute_s,
            "compute_source": self.compute_source,
            "comm_bytes": self.comm_bytes,
            "wire_bytes": self.wire_bytes,
            "comm_s": self.comm_s,
            "exposed_s": self.exposed_s,
            "hidden_s": self.hidden_s,
            "step_s": self.step_s,
            "measured_step_s": self.measured_step_s,
            "measured_comm_s": self.measured_comm_s,
            "measured_exposed_s": self.measured_exposed_s,
            "collective_kinds": {
                k: {"count": t.count, "bytes": t.bytes, "wire_bytes": t.wire_bytes,
                    "seconds": t.seconds, "exposed_s": t.exposed_s, "hidden_s": t.hidden_s}
                for k, t in self.by_collective().items()
            },
            "collectives": [c.to_dict() for c in self.collectives],
            "layers": [r.to_dict() for r in self.layers],
            "notes": list(self.notes),
            "conventions": dict(self.conventions),
            "headline": self.headline(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return to_json(self.to_dict(), indent)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShardedCost:
        with reading("layertime sharded what-if"):
            check_schema(d, SCHEMA, "layertime sharded what-if")
            return build(
                cls, d,
                units=tuple,
                collectives=lambda v: build_all(Collective, v),
                layers=lambda v: build_all(ShardedLayer, v),
                dp_link=_link,
                tp_link=_link,
                notes=tuple,
                conventions=dict,
            )

    @classmethod
    def from_json(cls, text: str) -> ShardedCost:
        return cls.from_dict(parse_object(text, "layertime sharded what-if"))

    @classmethod
    def load(cls, path: str | Path) -> ShardedCost:
        return cls.from_json(read_text(path, "sharded what-if"))
