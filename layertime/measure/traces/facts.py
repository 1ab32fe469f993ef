"""What a trace says about where and how it was recorded: the machine (its host, its
devices), what the profiler recorded, and the model's input (batch size, sample shape,
sequence length, dtype) from the shapes of its first layer's op."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from layertime.measure.traces.convert import Converted
from layertime.results.environment import Environment

_DTYPES = {"float": "float32", "double": "float64", "c10::BFloat16": "bfloat16",
           "c10::Half": "float16", "bfloat16": "bfloat16", "half": "float16"}


def recorded(meta: dict[str, Any], key: str) -> bool | None:
    """A trace file's own flag (``with_stack``, ``record_shapes``), None when absent."""
    v = meta.get(key)
    return bool(v) if isinstance(v, (int, bool)) else None


def environment(meta: dict[str, Any], cuda: bool) -> Environment:
    """Where the trace was recorded, as far as it says (its host and devices)."""
    props = meta.get("deviceProperties")
    name = "CPU"
    if cuda and isinstance(props, list) and props and isinstance(props[0], dict):
        name = str(props[0].get("name", "GPU"))
    elif cuda:
        name = "GPU"
    return Environment(
        device="cuda" if cuda else "cpu", device_name=name, torch="unknown (recorded elsewhere)",
        torchvision=None, python="unknown", platform="unknown",
        host=str(meta.get("host_name", "unknown")), threads=0,
    )


def input_facts(conv: Converted) -> tuple[int, tuple[int, ...], int | None, str]:
    """(batch size, one sample's shape, sequence length, dtype) from the first shaped op in
    the model's forward: token ids (an integer input) give batch and sequence; else the
    first input of two or more dimensions gives the batch and the sample's shape.  Zero,
    (), None and float32 when the trace recorded no shapes."""
    for eid in sorted(conv.shapes):
        e = conv.events[eid]
        dims, types = conv.shapes[eid]
        if not isinstance(dims, list) or e.name.startswith(("c10d", "record_param", "torch::")):
            continue
        types = types if isinstance(types, list) else []
        pairs = list(zip(dims, types + [""] * (len(dims) - len(types))))
        ints = [d for d, t in pairs if t in ("long int", "int") and isinstance(d, list)
                and len(d) == 2]
        if ints:
            return int(ints[0][0]), (int(ints[0][1]),), int(ints[0][1]), _dtype(pairs)
        big = [d for d, _ in pairs if isinstance(d, list) and len(d) >= 2]
        if big:
            return int(big[0][0]), tuple(int(x) for x in big[0][1:]), None, _dtype(pairs)
    return 0, (), None, "float32"


def _dtype(pairs: Sequence[tuple[Any, Any]]) -> str:
    for _, t in pairs:
        if str(t) in _DTYPES:
            return _DTYPES[str(t)]
    return "float32"
