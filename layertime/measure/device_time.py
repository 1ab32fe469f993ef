"""CUDA rows: the GPU's idle time taken from the unprofiled steps, and what the reader
must be told about device time (overlapping kernels, kernels slower while profiled).

Used by :mod:`layertime.measure.runner` after all traced steps ran in one profiler
session; pure functions of the steps' charges.
"""

from __future__ import annotations

from collections.abc import Sequence

from layertime.measure.attribute import StepCharges


def idle_from_plain(traced: Sequence[StepCharges], plain_s: float) -> None:
    """On CUDA, make ``unattributed`` the GPU's idle time in the *unprofiled* step.

    A traced step's kernels run as they do unprofiled, but its wall time
    also holds the profiler's and the hooks' host-side delay: when launching
    is the bottleneck, the GPU waits for it, and charging that wait to the
    step would shrink every layer's share.  So each traced step keeps its
    kernel rows, and its idle row becomes the median unprofiled step less
    those kernels (never below zero); the delay shows as the overhead ratio.
    """
    for c in traced:
        # Kernels of ops in no owned range stay unattributed, beside the idle time.
        kernel_s = c.total_s() - c.step.get("unattributed", 0.0) + c.unowned_s
        c.step["unattributed"] = c.unowned_s + max(0.0, plain_s - kernel_s)
        c.step_s = kernel_s + max(0.0, plain_s - kernel_s)


#: Warn when kernels overlap, or exceed the unprofiled step, by more than this share.
_WARN_SHARE = 0.01


def device_time_warnings(traced: Sequence[StepCharges], plain_s: float) -> list[str]:
    """What the reader must know about CUDA rows: overlapped kernels, slower kernels."""
    out = []
    n = max(1, len(traced))
    overlap = sum(c.overlap_s for c in traced) / n
    step = sum(c.step_s for c in traced) / n
    if overlap > _WARN_SHARE * step:
        out.append(
            f"kernels overlapped on several streams for {overlap * 1e3:.3g} ms per step; "
            "rows are scaled to the device's busy time"
        )
    kernel = sum(c.total_s() - c.step.get("unattributed", 0.0) + c.unowned_s for c in traced) / n
    if plain_s > 0 and kernel > (1 + _WARN_SHARE) * plain_s:
        out.append(
            f"traced steps' kernels took {kernel * 1e3:.3g} ms, more than the unprofiled step "
            f"({plain_s * 1e3:.3g} ms): kernels ran slower while profiled"
        )
    return out
