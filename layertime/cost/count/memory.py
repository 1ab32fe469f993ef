"""The largest batch that fits, by a measured run's bytes per sample when one exists, else by
the cost model's memory estimate (for out-of-memory hints).

A training step's memory is, to first order, a fixed part (weights, their
gradients, optimizer state) plus saved activations that grow with the batch:
the estimate at batch 1 and 2 gives both (``MemoryBytes.total``), and the
batch that fits in ``free_bytes`` follows.  It is an estimate: the real peak
also holds the allocator's slack and temporary buffers (measured on an H200:
peak / estimate = 1.01 to 1.09 for alexnet, resnet50 and vgg16).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from layertime.results.memory import per_sample_bytes
from layertime.results.run import Run
from layertime.workload.spec import WorkloadSpec

#: Of the free memory, the share a hint plans to use (room for the estimate's misses).
HEADROOM = 0.85


@dataclass(frozen=True)
class BatchFit:
    """What the cost model says of memory: per sample, fixed, and the batch that fits."""

    per_sample_bytes: int
    fixed_bytes: int
    free_bytes: int
    batch_size: int  # 0 when even one sample does not fit
    #: What the numbers rest on: "" for the cost model's estimate, else the measured run
    #: (e.g. "run 12 at batch 32").
    measured: str = ""


def batch_that_fits(workload: WorkloadSpec, free_bytes: int) -> BatchFit:
    """The largest batch whose estimated memory is within ``HEADROOM`` of ``free_bytes``."""
    from layertime.cost import estimate_workload

    one = estimate_workload(replace(workload, batch_size=1)).memory_bytes.total
    two = estimate_workload(replace(workload, batch_size=2)).memory_bytes.total
    per = max(1, two - one)
    fixed = max(0, one - per)
    fits = int((HEADROOM * free_bytes - fixed) // per)
    return BatchFit(per, fixed, free_bytes, max(0, fits))


def measured_fit(run: Run, free_bytes: int, label: str = "") -> BatchFit | None:
    """The largest batch that fits by a measured run: its peak less its parameters,
    gradients and optimizer state, over its batch, is the bytes per sample (None when
    the run did not measure memory)."""
    if run.memory is None:
        return None
    fixed = sum(r.params_bytes + r.grads_bytes + r.optimizer_state_bytes for r in run.layers)
    per = per_sample_bytes(run.memory, run.batch_size, fixed)
    if per is None:
        return None
    fits = int((HEADROOM * free_bytes - fixed) // per)
    return BatchFit(per, fixed, free_bytes, max(0, fits),
                    measured=label or f"a run at batch {run.batch_size}")


def hint_text(fit: BatchFit, asked: int) -> str:
    """The hint, one clause: the measurement or estimate it rests on, and the batch to try."""
    gb = 1e9
    if fit.measured:
        basis = (f"{fit.measured} measured {_size(fit.per_sample_bytes)} per sample at its "
                 f"peak plus {_size(fit.fixed_bytes)} for weights, gradients and optimizer "
                 "state")
    else:
        basis = (f"the cost model estimates {_size(fit.per_sample_bytes)} per sample plus "
                 f"{_size(fit.fixed_bytes)} for weights, gradients and optimizer state")
    free = f"{fit.free_bytes / gb:.3g} GB free"
    what = "measured" if fit.measured else "an estimate"
    if fit.batch_size < 1:
        return f"{basis}: even batch 1 needs more than the {free} ({what})"
    if fit.batch_size >= asked:
        # The estimate says it fits: something the model does not count holds memory.
        return (f"{basis}, so batch {asked} should fit in the {free}; something else holds "
                f"memory: try --batch-size {max(1, asked // 2)}")
    return (f"{basis}, so about batch {fit.batch_size} fits in the {free} ({what}): "
            f"try --batch-size {fit.batch_size}")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.3g} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.3g} MB"
