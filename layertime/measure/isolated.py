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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from layertime.errors import LayertimeError, memory_errors
from layertime.kinds import KindObserver, kind_of
from layertime.measure.environment import describe
from layertime.measure.prepare import prepare
from layertime.models import ModelRef
from layertime.modules import training_mode
from layertime.results.bench import BenchResult, LayerBench, RecordedInput
from layertime.workload import DTYPES, Batch, WorkloadOptions, WorkloadSpec, check_input

if TYPE_CHECKING:
    from typing import Unpack


def record_inputs(
    model: nn.Module, x: torch.Tensor | Batch
) -> dict[str, tuple[nn.Module, list[tuple[RecordedInput, ...]]]]:
    """Run one training-mode forward and record each leaf module's tensor inputs per call.

    A leaf given tensors by keyword (transformers' rotary embeddings take
    ``position_ids=``) cannot be run alone from positional inputs: that is a
    one-line error naming it.
    """
    seen: dict[str, tuple[nn.Module, list[tuple[RecordedInput, ...]]]] = {}
    keyword: dict[str, list[str]] = {}
    handles = []
    names: dict[int, str] = {}
    for name, mod in model.named_modules():
        if id(mod) in names or any(True for _ in mod.children()):
            names.setdefault(id(mod), name)
            continue
        names[id(mod)] = name

        def pre(m: nn.Module, args: Any, kwargs: Any, _name: str = name) -> None:
            specs = tuple(
                RecordedInput(tuple(a.shape), str(a.dtype).replace("torch.", ""), a.requires_grad)
                for a in args
                if isinstance(a, torch.Tensor)
            )
            seen.setdefault(_name, (m, []))[1].append(specs)
            tensors = [k for k, v in (kwargs or {}).items() if isinstance(v, torch.Tensor)]
            if tensors:
                keyword.setdefault(_name, tensors)

        handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        _batch(x).run(model)
    finally:
        for h in handles:
            h.remove()
    if keyword:
        name, keys = next(iter(keyword.items()))
        raise LayertimeError(
            f"{name or '(model)'} ({type(seen[name][0]).__name__}) takes tensors by keyword "
            f"({', '.join(keys)}), which layers benchmarked alone are not given: profile this "
            "model with 'layertime profile' instead"
        )
    return seen


def _make_input(spec: RecordedInput, module: nn.Module, device: torch.device) -> torch.Tensor:
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
    specs: tuple[RecordedInput, ...],
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


def _batch(x: torch.Tensor | Batch) -> Batch:
    return x if isinstance(x, Batch) else Batch((x,))


def bench_layers(
    model: nn.Module,
    x: torch.Tensor | Batch,
    *,
    label: str,
    warmup: int = 2,
    repeats: int = 5,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> BenchResult:
    """Benchmark every leaf module of ``model`` alone, at its in-model input shapes.

    ``x`` is the model's input (a tensor, or a whole :class:`Batch`)."""
    if repeats < 1 or warmup < 0:
        raise LayertimeError("repeats must be >= 1 and warmup >= 0")
    first = _batch(x).first
    device = first.device
    progress = on_progress or (lambda done, total, name: None)
    with training_mode(model):
        # Kinds by what each layer computes in the recording forward (layertime.kinds).
        with KindObserver(model) as watched:
            seen = record_inputs(model, x)
        # A module benchmarked alone runs all its own ops: its kind by all of them.
        kinds = {k: f.whole_kind or f.kind for k, f in watched.facts().items()}
        rows: list[LayerBench] = []
        items = list(seen.items())
        for i, (name, (mod, calls)) in enumerate(items):
            progress(i, len(items), name)
            fwd, bin_, bw = bench_module(mod, calls[0], device, warmup=warmup, repeats=repeats)
            n = len(calls)
            rows.append(
                LayerBench(
                    name=name,
                    kind=kinds.get(id(mod)) or kind_of(mod),
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
    dtype = next((p.dtype for p in model.parameters()), first.dtype)
    return BenchResult(
        model=label,
        device=str(device),
        batch_size=int(first.shape[0]),
        input_shape=tuple(int(d) for d in first.shape[1:]),
        dtype=str(dtype).replace("torch.", ""),
        warmup=warmup,
        repeats=repeats,
        layers=tuple(rows),
        environment=describe(device),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def bench_workload(
    workload: WorkloadSpec,
    *,
    warmup: int = 2,
    repeats: int = 5,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> BenchResult:
    """Benchmark each layer of ``workload``'s model alone, on its batch."""
    p = prepare(workload)
    check_input(p.model, p.workload, p.device, p.label)
    gen = torch.Generator(device="cpu").manual_seed(p.workload.seed)
    with memory_errors(p.workload.batch_size, p.device.type):
        batch = p.workload.resolved_input.batch(
            p.workload.batch_size, model=p.model, device=p.device,
            dtype=DTYPES[p.workload.dtype], generator=gen,
        )
        return bench_layers(
            p.model, batch, label=p.label, warmup=warmup, repeats=repeats, on_progress=on_progress
        )


def bench(
    model: str | ModelRef | nn.Module,
    *,
    warmup: int = 2,
    repeats: int = 5,
    on_progress: Callable[[int, int, str], None] | None = None,
    **workload: Unpack[WorkloadOptions],
) -> BenchResult:
    """:func:`bench_workload` with ``layertime.profile``'s keyword options."""
    return bench_workload(
        WorkloadSpec.create(model, **workload),
        warmup=warmup,
        repeats=repeats,
        on_progress=on_progress,
    )
