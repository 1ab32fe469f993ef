"""How reports look: the colours and labels of phases, kinds and metrics, and the number
formats the page and the plots show (exactly these strings)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Phase colours (Tableau 10), shared by the page and the plots.
PHASE_COLORS: dict[str, str] = {
    "forward": "#4c78a8",
    "backward": "#f58518",
    "backward_input": "#f58518",
    "backward_weight": "#b5540b",
    "update": "#54a24b",
    "comm": "#b279a2",
    "comm_hidden": "#e2c6da",
    "compute": "#4c78a8",
    "wait": "#e45756",
    "step": "#9d9d9d",
}
PHASE_LABELS: dict[str, str] = {
    "forward": "forward",
    "backward": "backward",
    "backward_input": "backward (input gradient)",
    "backward_weight": "backward (weight gradient)",
    "update": "update",
    "comm": "communication (exposed)",
    "comm_hidden": "communication (hidden behind compute)",
    "compute": "compute (and the rest of the step)",
    "wait": "exposed communication: waiting for the slowest rank",
    "step": "step-level (loss, zero_grad, data, ...)",
}
#: One colour per kind, for lines and points.
KIND_COLORS: dict[str, str] = {
    "conv": "#4c78a8",
    "linear": "#f58518",
    "norm": "#54a24b",
    "activation": "#b279a2",
    "pool": "#72b7b2",
    "dropout": "#ff9da6",
    "embedding": "#9d755d",
    "attention": "#e45756",
    "scan": "#8e6bbf",
    "recurrent": "#eeca3b",
    "loss": "#79706e",
    "other": "#bab0ac",
    "step": "#d3d3d3",
    "unattributed": "#8c8c8c",
}
#: One colour per role of a transformer's layers (``taxonomy.ROLES``), then the
#: step-level rows, for a token sweep's lines.  Attention and the MLP, the two
#: compared, get the two strongest colours.
ROLE_COLORS: dict[str, str] = {
    "attention": "#e45756",
    "mixing": "#f58518",
    "mlp": "#4c78a8",
    "experts": "#72b7b2",
    "router": "#eeca3b",
    "embedding": "#9d755d",
    "norm": "#54a24b",
    "head": "#b279a2",
    "other": "#bab0ac",
    "loss": "#79706e",
    "step": "#d3d3d3",
    "unattributed": "#8c8c8c",
}
#: The metrics of the by-kind chart, in order, with their colours.
METRICS: dict[str, tuple[str, str]] = {
    "time": ("time", "#1f4e79"),
    "params": ("parameters", "#e8a33d"),
    "flops": ("FLOPs", "#8e6bbf"),
    "memory": ("memory", "#3f9c8f"),
    "predicted": ("predicted time (estimate)", "#c95d63"),
    "saved": ("saved activations (measured)", "#2a9d8f"),
}
#: Colours of several runs side by side.
RUN_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b",
              "#9d755d", "#ff9da6", "#bab0ac")

TIMING_NOTES = {
    "cpu-self-time": "Each row is the CPU self time of the ops charged to it; all rows "
    "(layers, loss, zero_grad, data, clip, scheduler, logging, unattributed) add up to the "
    "profiled step.",
    "cuda-kernel-time": "Each row is the GPU kernel time of the ops charged to it; "
    "'unattributed' is the rest of the step's wall time (GPU idle).",
}


def fmt_ms(s: float | None) -> str:
    """Seconds as milliseconds: one decimal from 1 s, three below, three significant digits
    under 0.1 ms (predictions on fast devices), no exponent."""
    if s is None or not math.isfinite(s):
        return "–"
    ms = s * 1e3
    if abs(ms) >= 1000:
        return f"{ms:,.1f}"
    if ms == 0 or abs(ms) >= 0.1:
        return f"{ms:,.3f}"
    return f"{ms:.{2 - math.floor(math.log10(abs(ms)))}f}"


def fmt_pct(x: float | None, digits: int | None = None) -> str:
    """A share as a percentage; by default one decimal, two below 1% (0.04%, not 0.0%)."""
    if x is None or not math.isfinite(x):
        return "–"
    if digits is None:
        digits = 2 if 0 < abs(x) < 0.01 else 1
    return f"{x * 100:.{digits}f}%"


def fmt_int(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{int(n):,}"


def si_scale(n: float) -> tuple[float, str]:
    """The SI prefix (k, M, G, T, P) that ``n`` is shown in, and its scale."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return scale, prefix
    return 1.0, ""


def fmt_count(n: float | None, unit: str = "FLOP") -> str:
    """1.234 GFLOP; plain below a thousand."""
    if n is None:
        return "–"
    if n == 0:
        return "0"
    scale, prefix = si_scale(abs(n))
    return f"{n / scale:,.3f} {prefix}{unit}" if scale > 1 else f"{n:,.0f} {unit}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def fmt_shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


def cell(value: Any, text: str | None = None) -> dict[str, Any]:
    """A table cell: a sort value and the text shown."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"v": value, "t": text if text is not None else ("–" if value is None else str(value))}
