"""What a compiled run adds to the table and the HTML report: compilation, graph breaks,
fused groups with their split, and what ``unattributed`` holds (read-only renderers)."""

from __future__ import annotations

from typing import Any

from layertime.render.fmt import ms as _ms
from layertime.results.compiled import CompiledSummary
from layertime.results.run import Run

#: Fused groups listed in the table (the largest); the JSON has all.
MAX_GROUPS = 8


def _compile_line(c: CompiledSummary) -> str:
    mode = c.mode or "default"
    took = (
        f"compilation {c.compile_s:.1f} s in {c.compile_steps} warm-up step(s), outside the "
        "measured steps"
        if c.compile_s is not None
        else "compilation time not measured"
    )
    frames = [x for x in c.compilations]
    recompiles = [x for x in frames if x.reason]
    parts = [f"compiled: torch.compile backend {c.backend}, mode {mode}; {took}"]
    if frames:
        parts.append(f"{len(frames)} frame compilation(s)")
    if recompiles:
        parts.append(f"{len(recompiles)} recompilation(s): " + "; ".join(
            f"{x.compile_id}: {x.reason}" for x in recompiles[:3]
        ))
    return ", ".join(parts)


def _break_lines(c: CompiledSummary) -> list[str]:
    if not c.graph_breaks:
        return ["graph breaks: none"]
    lines = [f"graph breaks: {sum(g.count for g in c.graph_breaks)}"]
    for g in c.graph_breaks:
        where = f" at {g.location}" if g.location else ""
        lines.append(f"  {g.reason}{where}")
    return lines


def _group_lines(c: CompiledSummary) -> list[str]:
    if not c.fused_groups:
        return []
    lines = [f"fused groups ({len(c.fused_groups)}; in the rows each group's time is split "
             f"across its member layers {c.split_rule}):"]
    for g in c.fused_groups[:MAX_GROUPS]:
        split = ", ".join(
            f"{m or '(model)'} {_ms(s)}" for m, s in sorted(g.split_s.items(), key=lambda kv: -kv[1])
        )
        lines.append(f"  {_ms(g.time_s)} ms {g.phase} {g.kernel} [{' + '.join(m or '(model)' for m in g.members)}]"
                     f" split: {split}")
    if len(c.fused_groups) > MAX_GROUPS:
        rest = sum(g.time_s for g in c.fused_groups[MAX_GROUPS:])
        lines.append(f"  ... {len(c.fused_groups) - MAX_GROUPS} more, {_ms(rest)} ms")
    return lines


def _unattributed_line(c: CompiledSummary) -> str:
    line = (
        f"compiled kernels placed on layers {_ms(c.placed_s)} ms; the compiled wrapper row "
        f"holds guards and wrappers {_ms(c.wrapper_s)} ms; unattributed holds kernels without "
        f"provenance {_ms(c.unplaced_s)} ms, gradient accumulation after compiled backward "
        f"{_ms(c.accumulate_s)} ms"
    )
    if c.accumulate_placed_s:
        line += (f"; {_ms(c.accumulate_placed_s)} ms of gradient accumulation placed on layers "
                 "by gradient shape")
    if c.unplaced_kernels:
        top = ", ".join(f"{k} {_ms(v)}" for k, v in list(c.unplaced_kernels.items())[:3])
        line += f" (largest unplaced: {top})"
    return line


def compiled_summary_lines(c: CompiledSummary) -> list[str]:
    lines = [_compile_line(c)]
    if c.message:
        lines.append(c.message)
    lines.extend(_break_lines(c))
    lines.extend(_group_lines(c))
    lines.append(_unattributed_line(c))
    if not c.provenance and c.graphs:
        lines.append("per-graph totals: " + ", ".join(
            f"{g.graph} {_ms(g.time_s)} ms" for g in c.graphs
        ))
    return lines


def compiled_lines(run: Run) -> list[str]:
    """Lines under the table of a compiled run (none for an eager run)."""
    return compiled_summary_lines(run.compiled) if run.compiled is not None else []


def compiled_section(c: CompiledSummary) -> dict[str, Any]:
    """The HTML report's section for a compiled run (``c`` is the run's ``compiled``)."""
    items: list[list[str]] = [["compiled", _compile_line(c)]]
    if c.message:
        items.append(["provenance", c.message])
    for i, line in enumerate(_break_lines(c)):
        items.append(["graph breaks" if i == 0 else "", line.strip()])
    for i, line in enumerate(_group_lines(c)):
        items.append(["fused groups" if i == 0 else "", line.strip()])
    items.append(["unattributed", _unattributed_line(c)])
    for g in c.graphs:
        items.append([f"graph {g.graph}", f"{_ms(g.time_s)} ms per step, {_ms(g.placed_s)} ms placed"])
    return {"title": "Compiled model", "wide": True, "items": items}
