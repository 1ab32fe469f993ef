"""The result of benchmarking each layer alone (``layertime bench-layers``), schema
``layertime.bench/1``: forward, input-gradient and weight-gradient time per leaf layer,
and the in-situ profile of the same configuration beside it.

Times are per training step (each call's median times the layer's calls per
step), so their sum is comparable with the in-situ profile of the same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from layertime.records import build, build_all, check_schema, reading
from layertime.results.environment import Environment
from layertime.results.run import Run

SCHEMA = "layertime.bench/1"


@dataclass(frozen=True)
class RecordedInput:
    """One tensor argument of a module call, as seen inside the model."""

    shape: tuple[int, ...]
    dtype: str
    requires_grad: bool


@dataclass(frozen=True)
class LayerBench:
    """One leaf module measured alone; times are per step (x calls)."""

    name: str
    kind: str
    type: str
    calls: int
    inputs: tuple[RecordedInput, ...]
    forward_s: float
    backward_input_s: float
    backward_weight_s: float
    params: int

    @property
    def backward_s(self) -> float:
        return self.backward_input_s + self.backward_weight_s

    @property
    def total_s(self) -> float:
        return self.forward_s + self.backward_s


@dataclass(frozen=True)
class BenchResult:
    """Every leaf module of a model benchmarked alone."""

    model: str
    device: str
    batch_size: int
    input_shape: tuple[int, ...]
    dtype: str
    warmup: int
    repeats: int
    layers: tuple[LayerBench, ...]
    environment: Environment
    created: str = ""
    #: The in-situ profile of the same configuration, to compare with (``bench-layers``
    #: measures it unless ``--no-compare``); None when not measured.
    in_situ: Run | None = None

    @property
    def total_s(self) -> float:
        return sum(layer.total_s for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers:
            d = asdict(layer)
            d["backward_s"] = layer.backward_s
            d["total_s"] = layer.total_s
            layers.append(d)
        return {
            "schema": SCHEMA,
            "model": self.model,
            "device": self.device,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "total_s": self.total_s,
            "layers": layers,
            "environment": asdict(self.environment),
            "created": self.created,
            "in_situ": self.in_situ.to_dict() if self.in_situ is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchResult:
        """A benchmark from its JSON object; keys this version does not know are ignored."""
        check_schema(d, SCHEMA, "layertime layer benchmark")
        with reading("layertime layer benchmark"):
            return build(
                cls,
                d,
                input_shape=tuple,
                layers=lambda v: build_all(LayerBench, v, inputs=_inputs),
                environment=lambda v: build(Environment, v),
                in_situ=lambda v: Run.from_dict(v) if v else None,
            )


def _inputs(items: Any) -> tuple[RecordedInput, ...]:
    return build_all(RecordedInput, items, shape=tuple)
