"""Isolated layer benchmarks, like ``caffe time`` but with backward split in two.

Each leaf module is run alone at the input shapes it sees inside the model
(recorded by one forward of the whole model), with warm-up and repeats:

* ``forward_s``: the module's forward;
* ``backward_input_s``: ``autograd.grad`` of the output with respect to the
  inputs only, so autograd computes just the input gradient (zero when the
  input needs no gradient in the model, as for the first layer);
* ``backward_weight_s``: ``autograd.grad`` with respect to the parameters only
  (zero for frozen or parameterless modules).

Each figure is the median over ``repeats`` and is multiplied by the number of
calls per step, so the sum is comparable with the in-situ profile; it leaves
out what only exists in the model (containers' own code, the loss, the
optimizer, cache effects between layers), which is what the comparison shows.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from layertime.environment import describe
from layertime.errors import LayertimeError
from layertime.kinds import kind_of
from layertime.result import Environment

SCHEMA = "layertime.bench/1"


@dataclass(frozen=True)
class InputSpec:
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
    inputs: tuple[InputSpec, ...]
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        if d.get("schema") != SCHEMA:
            raise LayertimeError(f"not a layertime layer benchmark (schema {d.get('schema')!r})")
        fields = set(LayerBench.__dataclass_fields__)
        layers = []
        for row in d["layers"]:
            kw = {k: v for k, v in row.items() if k in fields}
            kw["inputs"] = tuple(
                InputSpec(tuple(i["shape"]), i["dtype"], i["requires_grad"]) for i in row["inputs"]
            )
            layers.append(LayerBench(**kw))
        return cls(
            model=d["model"],
            device=d["device"],
            batch_size=d["batch_size"],
            input_shape=tuple(d["input_shape"]),
            dtype=d["dtype"],
            warmup=d["warmup"],
            repeats=d["repeats"],
            layers=tuple(layers),
            environment=Environment(**d["environment"]),
            created=d.get("created", ""),
        )


def record_inputs(
    model: nn.Module, x: torch.Tensor
) -> dict[str, tuple[nn.Module, list[tuple[InputSpec, ...]]]]:
    """Run one training-mode forward and record each leaf module's tensor inputs per call."""
    seen: dict[str, tuple[nn.Module, list[tuple[InputSpec, ...]]]] = {}
    handles = []
    names: dict[int, str] = {}
    for name, mod in model.named_modules():
        if id(mod) in names or any(True for _ in mod.children()):
            names.setdefault(id(mod), name)
            continue
        names[id(mod)] = name

        def pre(m: nn.Module, args: Any, _name: str = name) -> None:
            specs = tuple(
                InputSpec(tuple(a.shape), str(a.dtype).replace("torch.", ""), a.requires_grad)
                for a in args
                if isinstance(a, torch.Tensor)
            )
            seen.setdefault(_name, (m, []))[1].append(specs)

        handles.append(mod.register_forward_pre_hook(pre))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _make_input(spec: InputSpec, module: nn.Module, device: torch.device) -> torch.Tensor:
    dtype = getattr(torch, spec.dtype)
    if dtype.is_floating_point:
        return torch.randn(spec.shape, dtype=dtype, device=device, requires_grad=spec.requires_grad)
    high = int(getattr(module, "num_embeddings", 2))
    return torch.randint(0, high, spec.shape, dtype=dtype, device=device)


def _timed(
    fn: Callable[[Any], Any],
    device: torch.device,
    warmup: int,
    repeats: int,
    prepare: Callable[[], Any],
) -> float:
    """Median seconds of ``fn(prepare())`` over ``repeats``, after ``warmup`` runs.

    ``prepare`` runs outside the timed region (fresh inputs, a fresh graph).
    """
    samples = []
    for i in range(warmup + repeats):
        state = prepare()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn_out = fn(state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        del fn_out
        if i >= warmup:
            samples.append(dt)
    return statistics.median(samples)


def bench_module(
    module: nn.Module,
    specs: tuple[InputSpec, ...],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
) -> tuple[float, float, float]:
    """(forward_s, backward_input_s, backward_weight_s) of one module call alone."""
    base = [_make_input(s, module, device) for s in specs]
    params = [p for p in module.parameters() if p.requires_grad]

    def fresh_inputs() -> list[torch.Tensor]:
        # Clones are non-leaf, so in-place modules (ReLU(inplace=True)) work.
        return [b.clone() for b in base]

    def forward(inputs: list[torch.Tensor]) -> Any:
        return module(*inputs)

    def graph() -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        inputs = fresh_inputs()
        out = module(*inputs)
        if not isinstance(out, torch.Tensor):
            raise LayertimeError(f"{type(module).__name__} returns {type(out).__name__}")
        return out, inputs, torch.randn_like(out)

    fwd = _timed(forward, device, warmup, repeats, fresh_inputs)
    grad_inputs = [i for i, s in enumerate(specs) if s.requires_grad]
    bwd_in = bwd_w = 0.0
    if grad_inputs:

        def back_input(state: tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]) -> Any:
            out, inputs, g = state
            leaves = [inputs[i] for i in grad_inputs]
            return torch.autograd.grad(out, leaves, g, allow_unused=True)

        bwd_in = _timed(back_input, device, warmup, repeats, graph)
    if params:

        def back_weight(state: tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]) -> Any:
            out, _, g = state
            return torch.autograd.grad(out, params, g, allow_unused=True)

        bwd_w = _timed(back_weight, device, warmup, repeats, graph)
    return fwd, bwd_in, bwd_w


def bench_layers(
    model: nn.Module,
    x: torch.Tensor,
    *,
    label: str,
    warmup: int = 2,
    repeats: int = 5,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> BenchResult:
    """Benchmark every leaf module of ``model`` alone, at its in-model input shapes."""
    if repeats < 1 or warmup < 0:
        raise LayertimeError("repeats must be >= 1 and warmup >= 0")
    device = x.device
    modes = [(m, m.training) for m in model.modules()]
    progress = on_progress or (lambda done, total, name: None)
    try:
        model.train()
        seen = record_inputs(model, x)
        rows: list[LayerBench] = []
        items = list(seen.items())
        for i, (name, (mod, calls)) in enumerate(items):
            progress(i, len(items), name)
            fwd, bin_, bw = bench_module(mod, calls[0], device, warmup=warmup, repeats=repeats)
            n = len(calls)
            rows.append(
                LayerBench(
                    name=name,
                    kind=kind_of(mod),
                    type=type(mod).__name__,
                    calls=n,
                    inputs=calls[0],
                    forward_s=fwd * n,
                    backward_input_s=bin_ * n,
                    backward_weight_s=bw * n,
                    params=sum(p.numel() for p in mod.parameters(recurse=False)),
                )
            )
        progress(len(items), len(items), "done")
    finally:
        for m, mode in modes:
            m.training = mode
    return BenchResult(
        model=label,
        device=str(device),
        batch_size=int(x.shape[0]),
        input_shape=tuple(int(d) for d in x.shape[1:]),
        dtype=str(x.dtype).replace("torch.", ""),
        warmup=warmup,
        repeats=repeats,
        layers=tuple(rows),
        environment=describe(device),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def compare_in_situ(bench: BenchResult, layers: Sequence[Any]) -> list[tuple[str, float, float]]:
    """(name, isolated fwd+bwd s, in-situ fwd+bwd s) for each benchmarked layer."""
    situ = {row.name: row.forward_s + row.backward_s for row in layers}
    return [(b.name, b.total_s, situ.get(b.name, 0.0)) for b in bench.layers]


def bench(
    model: str | nn.Module,
    *,
    warmup: int = 2,
    repeats: int = 5,
    on_progress: Callable[[int, int, str], None] | None = None,
    **workload: Any,
) -> BenchResult:
    """Benchmark each layer of ``model`` alone; ``workload`` takes :func:`~layertime.profile`'s
    model options (batch_size, input_shape, image_size, num_classes, device, dtype, seed)."""
    from layertime.measure.runner import prepare
    from layertime.workload import DTYPES, check_input, is_out_of_memory, out_of_memory

    p = prepare(model, **workload)
    check_input(p.model, p.config, p.device, p.label)
    gen = torch.Generator(device="cpu").manual_seed(p.config.seed)
    try:
        x = torch.randn(
            (p.config.batch_size, *p.config.input_shape), generator=gen, dtype=DTYPES[p.config.dtype]
        ).to(p.device)
        return bench_layers(
            p.model, x, label=p.label, warmup=warmup, repeats=repeats, on_progress=on_progress
        )
    except LayertimeError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(e, p.config.batch_size, p.device) from e
        raise
