"""The immutable cost model of one training step: counts per layer, and optional predictions.

Collectors (``layertime.cost.count.counts``) build a :class:`CostResult`;
``layertime.cost.roofline`` adds predictions by returning a new one;
renderers only read it.  It round-trips through JSON under the schema
``layertime.cost/1`` (``docs/cost.md``).  Counts are per training step
(one forward, one backward, one optimizer update of the whole batch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from layertime.files import read_text, write_text_atomic
from layertime.records import build, check_schema, parse_object, reading, to_json
from layertime.results.cost.roles import (
    BlockCost,
    RoleCost,
    block_costs,
    role_costs,
    transformer_headline,
)
from layertime.results.cost.rows import LayerCost, MemoryBytes, PhaseCounts, PhaseTimes
from layertime.taxonomy import KIND_LABELS, KINDS

SCHEMA = "layertime.cost/1"

#: The conventions every count follows; printed under tables and stored in JSON.
CONVENTIONS: dict[str, str] = {
    "flops": (
        "FLOPs = 2 x multiply-accumulates (MACs); torchvision's 'GFLOPS' are GMACs. "
        "Matmul, convolution and attention ops are counted with torch.utils.flop_counter's "
        "formulas (convolution weight gradients corrected for groups); other ops with "
        "arithmetic are listed as not counted, never silently dropped."
    ),
    "backward": (
        "backward counts what autograd runs in the step: no input gradient for a layer "
        "whose input needs none (the first layer), no weight gradient for frozen "
        "parameters; each backward op is charged to the layer whose forward created "
        "its autograd node, and to backward_weight when it only produces parameter "
        "gradients, else to backward_input."
    ),
    "update": (
        "update FLOPs and bytes are per parameter element for the optimizer's "
        "steady-state step as the target's implementation runs it (single-tensor on the "
        "CPU, foreach on CUDA: each pass reads and writes its tensors; fused: each tensor "
        "once); calls are the kernels launched (sqrt and divide count as one FLOP, scalar "
        "work is ignored)."
    ),
    "bytes": (
        "bytes moved are what each op's kernel moves on the target device, one formula per "
        "op (layertime/cost/count/op_bytes.py): each pass of a kernel reads or writes a tensor "
        "once (batch norm in training reads its input twice forward, and its input and "
        "gradient twice backward on CUDA; a fill before a scatter writes the whole output; "
        "nll_loss and embedding read only the elements they pick); nothing stays cached "
        "between ops; views move nothing."
    ),
    "memory": (
        "saved_activations: storages autograd keeps for backward, charged to the first "
        "layer that saves them, parameters excluded; output: returned tensors that the "
        "layer's own ops wrote last (a container passing on a child's output owns none)."
    ),
    "attention": (
        "a scaled dot-product attention call (torch.nn.functional.scaled_dot_product_attention) "
        "is counted as the backend the target device runs, chosen by torch's rules "
        "(kernel_choices). The math path is counted op by op (Q K^T and P V by bmm, the "
        "causal mask, softmax, dropout: full S x S work and traffic, its S x S tensors "
        "saved). A fused kernel (flash, memory-efficient, cuDNN, the CPU's flash) is one "
        "op: forward 2*B*H*Sq*Sk*(Dqk+Dv) FLOPs (Q K^T and P V: 4*B*H*S^2*D), backward five "
        "matmuls (Q K^T recomputed, dO V^T, P^T dO, dS K, Q^T dS: 10*B*H*S^2*D), both halved "
        "with is_causal=True; it moves q, k, v, the output (and their gradients) and saves "
        "them with a float32 log-sum-exp per query row. Hand-written attention is counted "
        "op by op."
    ),
    "prediction": (
        "predicted times are roofline estimates, not measurements: per op the larger of "
        "FLOPs / (peak x compute efficiency of the layer's kind) and bytes / (bandwidth "
        "x memory efficiency), plus the profile's kernel latency for each kernel the op "
        "launches (0 unless the profile gives one); no overlap between ops. With a "
        "calibrated shape grid, matrix products and convolutions run at the grid's rate at "
        "their (M, N, K), memory-bound ops at its rate for their size (an op timed alone by "
        "calibrate on its own measured curve, at the bytes per call counted here, or the "
        "elements for bernoulli_; any other on its class's curve: copy, reduce, add), and "
        "the latency is the grid's fixed cost per op."
    ),
}


@dataclass(frozen=True)
class KindCost:
    """Parameters, FLOPs, bytes and predicted time of all rows of one kind, with shares."""

    kind: str
    layers: int
    params: int
    params_share: float
    macs_forward: int
    flops: PhaseCounts
    flops_share: float
    bytes_moved: PhaseCounts
    predicted_s: float | None = None
    predicted_share: float | None = None

    @property
    def label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)


@dataclass(frozen=True)
class Prediction:
    """How predictions were made: the device profile, efficiencies and math modes used."""

    device: str
    device_name: str
    source: str
    peak_tflops: Mapping[str, float]
    memory_bandwidth_gb_per_s: float
    compute_efficiency: Mapping[str, float]
    memory_efficiency: Mapping[str, float]
    #: The peak each math class used, e.g. {"conv": "tf32", "matmul": "fp32", "other": "fp32"}.
    math_peaks: Mapping[str, str]
    memory_gb: float | None = None
    efficiency_source: str = "defaults (uncalibrated)"
    #: Seconds added per kernel launched (0: no launch term), and whose kernels were counted.
    kernel_latency_s: float = 0.0
    kernels: str = "cuda"
    #: The shape grid the prediction looked op rates up on (its source), None without one;
    #: how many op lookups were made and how many fell outside the grid (clamped to its edge).
    grid_source: str | None = None
    grid_lookups: int = 0
    grid_clamped: int = 0
    #: Of the memory-bound ops' lookups, how many took the op's own measured curve (the
    #: grid's ``op_curves``: batch norm, pooling, softmax, ``bernoulli_`` ...) and how many
    #: a class curve (copy, reduce, add).  0 in files written before op curves.
    grid_op_curve_lookups: int = 0
    grid_class_curve_lookups: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "device_name": self.device_name,
            "source": self.source,
            "peak_tflops": dict(self.peak_tflops),
            "memory_bandwidth_gb_per_s": self.memory_bandwidth_gb_per_s,
            "memory_gb": self.memory_gb,
            "compute_efficiency": dict(self.compute_efficiency),
            "memory_efficiency": dict(self.memory_efficiency),
            "efficiency_source": self.efficiency_source,
            "math_peaks": dict(self.math_peaks),
            "kernel_latency_s": self.kernel_latency_s,
            "kernels": self.kernels,
            "grid_source": self.grid_source,
            "grid_lookups": self.grid_lookups,
            "grid_clamped": self.grid_clamped,
            "grid_op_curve_lookups": self.grid_op_curve_lookups,
            "grid_class_curve_lookups": self.grid_class_curve_lookups,
            "label": "estimate",
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prediction:
        mem = d.get("memory_gb")
        return cls(
            device=str(d["device"]),
            device_name=str(d["device_name"]),
            source=str(d.get("source", "")),
            peak_tflops={k: float(v) for k, v in d["peak_tflops"].items()},
            memory_bandwidth_gb_per_s=float(d["memory_bandwidth_gb_per_s"]),
            compute_efficiency={k: float(v) for k, v in d["compute_efficiency"].items()},
            memory_efficiency={k: float(v) for k, v in d["memory_efficiency"].items()},
            math_peaks={k: str(v) for k, v in d["math_peaks"].items()},
            memory_gb=float(mem) if mem is not None else None,
            efficiency_source=str(d.get("efficiency_source", "")),
            kernel_latency_s=float(d.get("kernel_latency_s", 0.0)),
            kernels=str(d.get("kernels", "cuda")),
            grid_source=None if d.get("grid_source") is None else str(d["grid_source"]),
            grid_lookups=int(d.get("grid_lookups", 0)),
            grid_clamped=int(d.get("grid_clamped", 0)),
            grid_op_curve_lookups=int(d.get("grid_op_curve_lookups", 0)),
            grid_class_curve_lookups=int(d.get("grid_class_curve_lookups", 0)),
        )


@dataclass(frozen=True)
class CostResult:
    """The counted cost of one training step of one model configuration."""

    model: str
    batch_size: int
    input_shape: tuple[int, ...]
    num_classes: int | None
    dtype: str
    optimizer: str
    layers: tuple[LayerCost, ...]
    #: The loss (step-level work that belongs to no layer), as a row of kind ``loss``.
    loss: LayerCost
    #: "meta" when counted without real tensors, "real" after a fallback.
    tensors: str = "meta"
    #: True for a training step; False for a forward pass only (eval mode, no grad).
    training: bool = True
    warnings: tuple[str, ...] = ()
    prediction: Prediction | None = None
    conventions: Mapping[str, str] = field(default_factory=lambda: dict(CONVENTIONS))
    #: Token inputs: token ids per sequence; None for image inputs.
    seq_len: int | None = None
    #: The device whose kernels were counted ("cpu", "cuda sm90", ...); "" in results
    #: written before it was recorded.
    kernel_target: str = ""
    #: Ops with several kernels and the one counted, e.g. {"attention": "math path
    #: (dropout 0.1 on cpu) x12", "optimizer": "single-tensor sgd: ..."}.
    kernel_choices: Mapping[str, str] = field(default_factory=dict)

    def kernel_lines(self) -> list[str]:
        """One line per kernel choice, ``attention: math path (dropout 0.1 on cpu)``."""
        return [f"{what}: {choice}" for what, choice in self.kernel_choices.items()]

    # -- derived -----------------------------------------------------------
    @property
    def rows(self) -> tuple[LayerCost, ...]:
        """Layers, then the loss row."""
        return (*self.layers, self.loss)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def macs_forward(self) -> int:
        return sum(r.macs_forward for r in self.rows)

    @property
    def flops(self) -> PhaseCounts:
        total = PhaseCounts()
        for r in self.rows:
            total = total + r.flops
        return total

    @property
    def bytes_moved(self) -> PhaseCounts:
        total = PhaseCounts()
        for r in self.rows:
            total = total + r.bytes_moved
        return total

    @property
    def memory_bytes(self) -> MemoryBytes:
        total = MemoryBytes()
        for r in self.rows:
            total = total + r.memory_bytes
        return total

    @property
    def predicted(self) -> PhaseTimes | None:
        if self.prediction is None:
            return None
        total = PhaseTimes()
        for r in self.rows:
            if r.predicted is not None:
                total = total + r.predicted
        return total

    def not_counted(self) -> dict[str, int]:
        """Ops with arithmetic but no FLOP formula, with their calls over the step."""
        out: dict[str, int] = {}
        for r in self.rows:
            for w in r.ops:
                if w.flop_status == "not_counted":
                    out[w.op] = out.get(w.op, 0) + w.calls
        return dict(sorted(out.items()))

    def by_kind(self) -> dict[str, KindCost]:
        """Totals per kind (the loss row is kind ``loss``), with shares of the step."""
        params_total = self.params or 1
        flops_total = self.flops.total or 1
        pred = self.predicted
        pred_total = pred.total_s if pred is not None else 0.0
        groups: dict[str, list[LayerCost]] = {}
        for r in self.rows:
            groups.setdefault(r.kind, []).append(r)
        out: dict[str, KindCost] = {}
        for kind in [k for k in KINDS if k in groups] + [k for k in groups if k not in KINDS]:
            rows = groups[kind]
            flops = PhaseCounts()
            moved = PhaseCounts()
            for r in rows:
                flops = flops + r.flops
                moved = moved + r.bytes_moved
            params = sum(r.params for r in rows)
            p_s: float | None = None
            p_share: float | None = None
            if pred is not None:
                p_s = sum(r.predicted.total_s for r in rows if r.predicted is not None)
                p_share = p_s / pred_total if pred_total else 0.0
            out[kind] = KindCost(
                kind=kind,
                layers=len(rows),
                params=params,
                params_share=params / params_total,
                macs_forward=sum(r.macs_forward for r in rows),
                flops=flops,
                flops_share=flops.total / flops_total,
                bytes_moved=moved,
                predicted_s=p_s,
                predicted_share=p_share,
            )
        return out

    def by_role(self) -> dict[str, RoleCost]:
        """Totals per role (as each layer was placed), the loss row as ``loss``; shares of
        the step."""
        pred = self.predicted
        return role_costs(self.layers, self.loss,
                          predicted_total_s=pred.total_s if pred is not None else None)

    def blocks(self) -> dict[str, BlockCost]:
        """Per transformer block: FLOPs and the activations saved for backward."""
        return block_costs(self.layers)

    def is_transformer(self) -> bool:
        """Whether the model has blocks that mix the sequence (attention or a scan) and
        feed-forward layers (an MLP, experts) or more mixing, as :meth:`Run.is_transformer`."""
        roles = self.by_role()
        mixes = "attention" in roles or "mixing" in roles
        return mixes and any(k in roles for k in ("mlp", "experts", "mixing"))

    def headline(self) -> str:
        """One line: the share of FLOPs (and predicted time) of conv and fully connected
        layers, or for a transformer (attention and MLP layers) of attention and the MLP."""
        if self.is_transformer():
            where = f", estimated for {self.prediction.device}" if self.prediction else ""
            seq = f", seq {self.seq_len}" if self.seq_len is not None else ""
            return transformer_headline(
                self.by_role(), training=self.training, flops_total=self.flops.total,
                where=f"{self.model}, batch {self.batch_size}{seq}{where}",
            )
        kinds = self.by_kind()
        if "conv" in kinds and "linear" in kinds:
            chosen = ["conv", "linear"]
        else:
            chosen = sorted(kinds, key=lambda k: -kinds[k].flops.total)[:2]
        what = "training FLOPs" if self.training else "forward FLOPs"
        parts = []
        for i, k in enumerate(chosen):
            kc = kinds[k]
            noun = f"{kc.label} layers" if k not in ("loss", "other") else kc.label
            text = f"{noun}: {kc.flops_share:.0%} of {what if i == 0 else 'FLOPs'}"
            if kc.predicted_share is not None:
                text += f", {kc.predicted_share:.0%} of predicted time"
            text += f", {kc.params_share:.0%} of parameters"
            parts.append(text)
        where = f", estimated for {self.prediction.device}" if self.prediction else ""
        return "; ".join(parts) + f" ({self.model}, batch {self.batch_size}{where})"

    # -- JSON --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON types, schema ``layertime.cost/1``."""
        kinds: dict[str, Any] = {}
        for k, v in self.by_kind().items():
            kd: dict[str, Any] = {
                "layers": v.layers,
                "params": v.params,
                "params_share": v.params_share,
                "macs_forward": v.macs_forward,
                "flops": v.flops.to_dict(),
                "flops_total": v.flops.total,
                "flops_share": v.flops_share,
                "bytes_moved": v.bytes_moved.to_dict(),
            }
            if v.predicted_s is not None:
                kd["predicted_s"] = v.predicted_s
                kd["predicted_share"] = v.predicted_share
            kinds[k] = kd
        pred = self.predicted
        d: dict[str, Any] = {
            "schema": SCHEMA,
            "model": self.model,
            "batch_size": self.batch_size,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "dtype": self.dtype,
            "optimizer": self.optimizer,
            "training": self.training,
            "tensors": self.tensors,
            "headline": self.headline(),
            "params": self.params,
            "macs_forward": self.macs_forward,
            "flops": self.flops.to_dict(),
            "bytes_moved": self.bytes_moved.to_dict(),
            "memory_bytes": self.memory_bytes.to_dict(),
            "not_counted": self.not_counted(),
            "layers": [r.to_dict() for r in self.layers],
            "loss": self.loss.to_dict(),
            "kinds": kinds,
            "conventions": dict(self.conventions),
            "warnings": list(self.warnings),
            "seq_len": self.seq_len,
            "kernel_target": self.kernel_target,
            "kernel_choices": dict(self.kernel_choices),
            "roles": {
                k: {
                    "layers": v.layers,
                    "params": v.params,
                    "params_share": v.params_share,
                    "flops": v.flops.to_dict(),
                    "flops_total": v.flops.total,
                    "flops_share": v.flops_share,
                    "core_flops": v.core_flops,
                    "saved_activations_bytes": v.saved_activations,
                    **({"predicted_s": v.predicted_s, "predicted_share": v.predicted_share}
                       if v.predicted_s is not None else {}),
                }
                for k, v in self.by_role().items()
            },
            "blocks": {
                b: {"flops": v.flops, "saved_activations_bytes": v.saved_activations,
                    "params": v.params}
                for b, v in self.blocks().items()
            },
        }
        if self.prediction is not None and pred is not None:
            d["prediction"] = self.prediction.to_dict()
            d["predicted"] = pred.to_dict()
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return to_json(self.to_dict(), indent)

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically."""
        write_text_atomic(path, self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostResult:
        """A cost result from its JSON object; keys this version does not know are ignored."""
        check_schema(d, SCHEMA, "layertime cost")
        with reading("layertime cost"):
            return build(
                cls,
                d,
                absent={"num_classes": None},
                model=str,
                batch_size=int,
                input_shape=lambda v: tuple(int(x) for x in v),
                dtype=str,
                optimizer=str,
                layers=lambda v: tuple(LayerCost.from_dict(r) for r in v),
                loss=LayerCost.from_dict,
                tensors=str,
                training=bool,
                warnings=lambda v: tuple(str(w) for w in v),
                prediction=lambda v: Prediction.from_dict(v) if v is not None else None,
                conventions=dict,
                seq_len=lambda v: None if v is None else int(v),
                kernel_target=str,
                kernel_choices=lambda v: {str(k): str(c) for k, c in dict(v).items()},
            )

    @classmethod
    def from_json(cls, text: str) -> CostResult:
        return cls.from_dict(parse_object(text, "layertime cost"))

    @classmethod
    def load(cls, path: str | Path) -> CostResult:
        return cls.from_json(read_text(path, "cost"))

    def with_layers(self, layers: Sequence[LayerCost], loss: LayerCost) -> CostResult:
        return replace(self, layers=tuple(layers), loss=loss)
