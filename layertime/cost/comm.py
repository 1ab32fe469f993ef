"""What-if for data-parallel training: gradient all-reduce time per layer, and the step.

Pure formulas, no torch.  DDP all-reduces gradients in buckets; each bucket
is one ring all-reduce over N workers on a link of bandwidth ``B`` and
per-message latency ``a``::

    t(bucket) = 2(N-1)/N x bytes / B  +  2(N-1) x a

A layer's communication is its byte share of each bucket holding its
gradients.  Buckets are DDP's, as measured when a measured data-parallel
run is given; otherwise they follow DDP's rule: gradients in the order they
become ready in backward (the reverse of the layers' order), a bucket closes
once it holds at least its cap: 1 MiB for the first, 25 MiB after
(``bucket_cap_mb``); one layer's gradients are kept together here, where DDP
splits by parameter.

The step: buckets are all-reduced one after another on the link as they
become ready during backward (a bucket is ready when the backward of its
last layer in backward order is done); what is left after backward compute
ends is exposed::

    step = compute + max(0, end of the last all-reduce - end of backward)

Compute times come from a measured run (its rows, scaled to its unprofiled
step) or from the cost model's roofline prediction; without either, only
the communication is predicted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layertime.errors import LayertimeError
from layertime.results.parallel.comm import Bucket, CommPrediction, LayerComm, Link

#: Bytes per element of each parameter dtype layertime trains in.
DTYPE_BYTES: Mapping[str, int] = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
#: DDP's defaults: ``bucket_cap_mb=25`` and a first bucket of 1 MiB.
BUCKET_CAP_BYTES = 25 * 2**20
FIRST_BUCKET_BYTES = 2**20


def ring_allreduce_s(nbytes: int, workers: int, link: Link) -> float:
    """Seconds for one ring all-reduce of ``nbytes`` over ``workers`` on ``link``."""
    if workers < 1:
        raise LayertimeError(f"workers must be at least 1, not {workers}")
    if workers == 1 or nbytes <= 0:
        return 0.0
    n = workers
    return 2 * (n - 1) / n * nbytes / link.bytes_per_s + 2 * (n - 1) * link.latency_us * 1e-6


def ring_gather_s(nbytes: int, ranks: int, link: Link) -> float:
    """Seconds for one ring all-gather (or reduce-scatter) whose full tensor is ``nbytes``
    over ``ranks`` on ``link``: each rank sends ``(n-1)/n`` of it, in ``n-1`` steps::

        t = (n-1)/n x bytes / B  +  (n-1) x a
    """
    if ranks < 1:
        raise LayertimeError(f"ranks must be at least 1, not {ranks}")
    if ranks == 1 or nbytes <= 0:
        return 0.0
    n = ranks
    return (n - 1) / n * nbytes / link.bytes_per_s + (n - 1) * link.latency_us * 1e-6


def assign_buckets(
    ready: Sequence[tuple[str, int]],
    cap_bytes: int = BUCKET_CAP_BYTES,
    first_cap_bytes: int = FIRST_BUCKET_BYTES,
) -> tuple[Bucket, ...]:
    """DDP's bucketing of (layer, gradient bytes) given in gradient-ready order."""
    if cap_bytes <= 0 or first_cap_bytes <= 0:
        raise LayertimeError("bucket caps must be > 0 bytes")
    out: list[Bucket] = []
    current: dict[str, int] = {}
    size, limit = 0, min(first_cap_bytes, cap_bytes)
    for name, n in ready:
        if n <= 0:
            continue
        current[name] = current.get(name, 0) + n
        size += n
        if size >= limit:
            out.append(Bucket(len(out), current))
            current, size, limit = {}, 0, cap_bytes
    if current:
        out.append(Bucket(len(out), current))
    return tuple(out)


@dataclass(frozen=True)
class LayerInput:
    """What the what-if needs of a layer, in forward (``named_modules``) order."""

    name: str
    kind: str
    grad_bytes: int
    #: Backward compute time of the layer, seconds (None: unknown).
    backward_s: float | None = None
    #: Measured communication (a data-parallel run): all of it, and its exposed part.
    measured_s: float | None = None
    measured_exposed_s: float | None = None


def simulate_step(
    buckets: Sequence[Bucket],
    bucket_s: Sequence[float],
    backward_ready: Sequence[tuple[str, float]],
) -> tuple[float, float]:
    """(exposed seconds, backward seconds): buckets all-reduced in order, one at a time.

    ``backward_ready`` is (layer, backward seconds) in backward order; a
    bucket can start once every layer in it is done and the bucket before
    it has finished.
    """
    done_at: dict[str, float] = {}
    t = 0.0
    for name, s in backward_ready:
        t += max(0.0, s)
        done_at[name] = t
    backward_end = t
    end = 0.0
    for b, s in zip(buckets, bucket_s):
        ready = max((done_at.get(name, backward_end) for name in b.layers), default=0.0)
        end = max(ready, end) + s
    return max(0.0, end - backward_end), backward_end


def predict_comm(
    model: str,
    layers: Sequence[LayerInput],
    workers: int,
    link: Link,
    *,
    buckets: Sequence[Bucket] | None = None,
    measured_bucket_s: Sequence[float] | None = None,
    compute_s: float | None = None,
    compute_source: str | None = None,
    measured_step_s: float | None = None,
    measured_world_size: int | None = None,
    cap_bytes: int = BUCKET_CAP_BYTES,
    first_cap_bytes: int = FIRST_BUCKET_BYTES,
    notes: Sequence[str] = (),
) -> CommPrediction:
    """Predict per-bucket and per-layer all-reduce time, and the step when compute is known.

    ``layers`` are in forward order; ``buckets`` (measured) override DDP's rule.
    """
    if workers < 1:
        raise LayertimeError(f"workers must be at least 1, not {workers}")
    ready = [(r.name, r.grad_bytes) for r in reversed(layers)]
    source = "measured (DDP)" if buckets else "DDP's rule"
    bks = tuple(buckets) if buckets else assign_buckets(ready, cap_bytes, first_cap_bytes)
    bucket_s = tuple(ring_allreduce_s(b.bytes, workers, link) for b in bks)
    per_layer: dict[str, float] = {}
    where: dict[str, list[int]] = {}
    for b, s in zip(bks, bucket_s):
        for name, n in b.layers.items():
            per_layer[name] = per_layer.get(name, 0.0) + (s * n / b.bytes if b.bytes else 0.0)
            where.setdefault(name, []).append(b.index)
    rows = tuple(
        LayerComm(
            name=r.name,
            kind=r.kind,
            grad_bytes=r.grad_bytes,
            buckets=tuple(where.get(r.name, ())),
            predicted_s=per_layer.get(r.name, 0.0),
            measured_s=r.measured_s,
            measured_exposed_s=r.measured_exposed_s,
        )
        for r in layers
        if r.grad_bytes > 0 or r.name in per_layer
    )
    exposed = None
    if compute_s is not None and all(r.backward_s is not None for r in layers):
        exposed, _ = simulate_step(
            bks, bucket_s, [(r.name, float(r.backward_s or 0.0)) for r in reversed(layers)]
        )
    return CommPrediction(
        model=model,
        workers=workers,
        link=link,
        buckets=bks,
        bucket_s=bucket_s,
        measured_bucket_s=tuple(measured_bucket_s) if measured_bucket_s is not None else None,
        bucket_source=source,
        layers=rows,
        compute_s=compute_s if exposed is not None else None,
        exposed_s=exposed,
        compute_source=compute_source if exposed is not None else None,
        measured_step_s=measured_step_s,
        measured_world_size=measured_world_size,
        notes=tuple(notes),
    )


# -- adapters: a measured run, a cost result -------------------------------------


def from_run(
    run: Any,
    workers: int | None = None,
    link: Link | None = None,
    *,
    cap_bytes: int = BUCKET_CAP_BYTES,
    first_cap_bytes: int = FIRST_BUCKET_BYTES,
) -> CommPrediction:
    """The what-if from a measured :class:`~layertime.results.run.Run` (data-parallel or not).

    Compute is the run's unprofiled step less its exposed communication (the
    rows' compute share, so profiler overhead is not added); backward times
    are its rows scaled the same way.  A data-parallel run gives its buckets,
    its measured communication per layer and, without ``link``, its link.
    """
    n = workers if workers is not None else run.world_size
    if n is None or n < 1:
        raise LayertimeError("give --workers N")
    if link is None:
        if run.link is None:
            raise LayertimeError("give --link-gbps (the run has no measured link)")
        link = Link(run.link.bandwidth_gbps, run.link.latency_us, "measured in the run")
    elem = DTYPE_BYTES.get(run.dtype, 4)
    measured = run.comm_s > 0
    exposed = run.phases.comm_exposed_s
    profiled = run.profiled_step_s
    compute_profiled = profiled - exposed
    # Profiled rows carry the profiler's overhead; scale them to the unprofiled step.
    scale = run.step_s / profiled if profiled > 0 and math.isfinite(run.step_s) else 1.0
    compute = compute_profiled * scale
    layers = [
        LayerInput(
            name=r.name,
            kind=r.kind,
            grad_bytes=r.comm_bytes if r.comm_bytes else r.params * elem,
            backward_s=r.backward_s * scale,
            measured_s=r.comm_s if measured else None,
            measured_exposed_s=r.comm_exposed_s if measured else None,
        )
        for r in run.layers
    ]
    buckets = None
    measured_bucket_s = None
    same = run.buckets and n == run.world_size
    if run.buckets:
        buckets = [Bucket(b.index, dict(b.layers)) for b in run.buckets]
        measured_bucket_s = [b.allreduce_s for b in run.buckets] if same else None
    notes = [
        f"compute {compute * 1e3:,.1f} ms: the unprofiled step less the exposed communication"
    ]
    if measured and n != run.world_size:
        notes.append(
            f"measured values are for {run.world_size} ranks, the prediction for {n} workers"
        )
    return predict_comm(
        run.model,
        layers,
        n,
        link,
        buckets=buckets,
        measured_bucket_s=measured_bucket_s,
        compute_s=compute,
        compute_source="measured run",
        measured_step_s=run.step_s if measured and n == run.world_size else None,
        measured_world_size=run.world_size if measured else None,
        cap_bytes=cap_bytes,
        first_cap_bytes=first_cap_bytes,
        notes=notes,
    )


def from_cost(
    cost: Any,
    workers: int,
    link: Link,
    *,
    cap_bytes: int = BUCKET_CAP_BYTES,
    first_cap_bytes: int = FIRST_BUCKET_BYTES,
) -> CommPrediction:
    """The what-if from a :class:`~layertime.results.cost.estimate.CostResult` (gradient bytes from
    trainable parameters; compute from its roofline prediction when it has one)."""
    elem = DTYPE_BYTES.get(cost.dtype, 4)
    predicted = cost.prediction is not None
    layers = [
        LayerInput(
            name=r.name,
            kind=r.kind,
            grad_bytes=r.trainable_params * elem,
            backward_s=(r.predicted.backward_s if r.predicted is not None else 0.0)
            if predicted
            else None,
        )
        for r in cost.layers
    ]
    compute = None
    if predicted and cost.predicted is not None:
        compute = cost.predicted.total_s
    return predict_comm(
        cost.model,
        layers,
        workers,
        link,
        compute_s=compute,
        compute_source=f"roofline: {cost.prediction.device}" if predicted else None,
        cap_bytes=cap_bytes,
        first_cap_bytes=first_cap_bytes,
        notes=() if predicted else ("no step time: give --device-profile NAME or --run RUN.json",),
    )
