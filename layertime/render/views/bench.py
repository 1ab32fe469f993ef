"""The view of layers benchmarked alone (``layertime.bench/1``): forward, input gradient and
weight gradient measured apart, per leaf layer.

A benchmark that carries the in-situ profile of the same configuration is
shown as that profile's report, with the isolated split added as its own
chart (never mixed into the in-situ bars).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from layertime.render.views.charts import bar, chart, phase_series, table, view
from layertime.render.views.profile import profile_view
from layertime.render.views.style import PHASE_LABELS, cell, fmt_int, fmt_ms
from layertime.results.bench import BenchResult, LayerBench
from layertime.taxonomy import kind_label

_PARTS = ("forward", "backward_input", "backward_weight")


def _parts(layer: LayerBench) -> dict[str, float]:
    return {"forward": layer.forward_s, "backward_input": layer.backward_input_s,
            "backward_weight": layer.backward_weight_s}


def bench_view(bench: BenchResult) -> dict[str, Any]:
    """Each leaf layer run alone (with the in-situ profile's report, when it was measured)."""
    alone = _alone_chart(bench)
    if bench.in_situ is not None:
        situ = profile_view(bench.in_situ)
        situ["charts"].append(alone)
        situ["notes"].append("The 'each layer alone' chart is a separate measurement "
                             "(layertime bench-layers); the other charts are the in-situ profile.")
        return situ
    by_kind: dict[str, float] = {}
    for layer in bench.layers:
        by_kind[layer.kind] = by_kind.get(layer.kind, 0.0) + layer.total_s
    total = sum(by_kind.values()) or 1.0
    top = sorted(by_kind, key=lambda k: -by_kind[k])[:2]
    headline = "layers alone: " + "; ".join(
        f"{kind_label(k)} layers {by_kind[k] / total:.0%} of the summed time" for k in top) + (
        f" ({bench.model}, batch {bench.batch_size}, {bench.device})")
    config = {"model": bench.model, "device": bench.device, "batch_size": bench.batch_size,
              "input_shape": list(bench.input_shape), "dtype": bench.dtype,
              "warmup": bench.warmup, "repeats": bench.repeats, "created": bench.created}
    return view(
        "bench", f"{bench.model} · batch {bench.batch_size} · layers alone", headline,
        summary=[{"label": "layers", "value": fmt_int(len(bench.layers)), "title": ""},
                 {"label": "summed time", "value": f"{fmt_ms(total)} ms", "title": ""}],
        charts=[alone],
        table=_table(bench),
        sections=[{"title": "Configuration", "items": [[k, str(v)] for k, v in config.items()]},
                  {"title": "Environment", "items": [
                      [k, str(v)] for k, v in asdict(bench.environment).items() if v is not None]}],
        notes=[],
        warnings=[],
    )


def _alone_chart(bench: BenchResult) -> dict[str, Any]:
    bars = []
    for layer in bench.layers:
        vals = _parts(layer)
        total = sum(vals.values())
        tip = [f"{layer.name}  ({layer.type}, {kind_label(layer.kind)}), alone"]
        tip += [f"{PHASE_LABELS[k]}: {fmt_ms(v)} ms" for k, v in vals.items()]
        tip += [f"total: {fmt_ms(total)} ms (× {layer.calls} calls)"]
        bars.append(bar(layer.name, layer.name or "(model)", layer.type,
                        {k: v * 1e3 for k, v in vals.items()}, total * 1e3, fmt_ms(total),
                        False, tip))
    used = [k for k in _PARTS if any(b["values"][k] for b in bars)]
    return chart(
        "alone", "stacked", "Each layer alone: forward, input gradient, weight gradient",
        f"Isolated benchmark: each leaf layer run by itself on its recorded input, "
        f"median of {bench.repeats} runs, ms per step. Not the in-situ "
        "profile: no neighbours, no optimizer.",
        unit="ms", layout="half", series=phase_series(used), rows=bars,
    )


def _table(bench: BenchResult) -> dict[str, Any]:
    cols = [("#", True), ("layer", False), ("type", False), ("kind", False), ("fwd ms", True),
            ("bwd input ms", True), ("bwd weight ms", True), ("total ms", True), ("params", True),
            ("calls", True)]
    body = []
    for i, layer in enumerate(bench.layers):
        cells = [cell(i, str(i)), cell(layer.name or "(model)"), cell(layer.type),
                 cell(kind_label(layer.kind))]
        cells += [cell(v, fmt_ms(v)) for v in _parts(layer).values()]
        cells += [cell(layer.total_s, fmt_ms(layer.total_s)),
                  cell(layer.params, fmt_int(layer.params)), cell(layer.calls)]
        body.append({"cells": cells, "muted": False, "kind": layer.kind})
    return table(cols, body, None)
