"""Memory in the terminal: the lines under a run's table (the peak, what held it, how it
was measured, checkpointed blocks) and the memory rows of a comparison of runs."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from layertime.render.fmt import ms
from layertime.render.layout import Column, Row, lay_out
from layertime.results.memory import (
    SAVED_TOLERANCE,
    MemoryBeside,
    describe_peak,
    fmt_mb,
    top_layers,
)
from layertime.results.run import Run

#: The table's column of saved activations (hidden first when the table is too wide).
SAVED_HEADER = "saved MB"


def has_memory(run: Run) -> bool:
    """Whether the run measured memory (its layers then carry saved bytes)."""
    return run.memory is not None or any(r.saved_bytes for r in run.layers)


def saved_cell(nbytes: int) -> str:
    """A saved-activations cell: MiB, or '-' for none."""
    return fmt_mb(nbytes) if nbytes else "-"


def memory_lines(run: Run) -> list[str]:
    """The peak and what held it, saved activations per sample, checkpointed blocks."""
    m = run.memory
    lines: list[str] = []
    if m is not None:
        where = "" if m.rank is None else f" (rank {m.rank}, the highest of the ranks)"
        lines.append(f"memory{where}: {describe_peak(m)}")
        held = top_layers(m.at_peak.layers)
        if held:
            lines.append("  held most at the peak: " + ", ".join(
                f"{r.name or '(model)'} {fmt_mb(r.total_bytes)} MB" for r in held))
        per = m.saved_bytes / run.batch_size if run.batch_size else 0.0
        lines.append(
            f"  saved for backward: {fmt_mb(m.saved_bytes)} MB in all ({fmt_mb(per, 2)} MB per "
            f"sample at batch {run.batch_size}; the loss {fmt_mb(m.loss_saved_bytes)} MB); "
            "saved MB: what each layer's ops keep for backward, each storage once, "
            "parameters excluded; a storage saved by two layers is charged to the one "
            "whose op allocated it")
        how = "CUDA allocator" if m.method == "cuda-allocator" else "CPU allocator's events"
        lines.append(f"  measured in a step apart from the timed ones ({ms(m.step_s)} ms "
                     f"with recording on), by the {how}"
                     + (f"; reserved peak {fmt_mb(m.reserved_peak_bytes)} MB"
                        if m.reserved_peak_bytes is not None else ""))
        lines.extend(f"  note: {n}" for n in m.notes)
    for rk in run.ranks:
        if rk.peak_bytes:
            lines.append(
                f"  rank {rk.rank} memory: peak {fmt_mb(rk.peak_bytes)} MB, saved "
                f"{fmt_mb(rk.saved_bytes)} MB; parameters {fmt_mb(rk.params_bytes)}, gradients "
                f"{fmt_mb(rk.grads_bytes)}, optimizer state {fmt_mb(rk.optimizer_state_bytes)} MB"
                + (" (its shards)" if run.sharding is not None else ""))
    for r in run.layers:
        if r.checkpointed:
            lines.append(
                f"checkpointed: {r.label} keeps {fmt_mb(r.saved_bytes)} MB (its inputs) and "
                f"runs its forward again in backward: {ms(r.recompute_s)} ms of its layers' "
                "bwd ms")
    return lines


def compare_memory_rows(runs: Sequence[Run]) -> list[Row]:
    """Saved activations and the peak, run by run, each with its ratio to run 1 and the
    ratio of their batch sizes (and sequence lengths), to see how memory scales."""
    if not any(has_memory(r) for r in runs):
        return []

    def saved(r: Run) -> int:
        return r.memory.saved_bytes if r.memory is not None else sum(
            x.saved_bytes for x in r.layers)

    def cells(values: list[int | None]) -> list[str]:
        base = values[0]
        out = []
        for i, v in enumerate(values):
            if v is None:
                out.append("-")
                continue
            ratio = f" x{v / base:.2f}" if i and base else ""
            out.append(f"{fmt_mb(v)} MB{ratio}")
        return out

    rows = [Row(("saved for backward", *cells([saved(r) for r in runs])), gap_before=True),
            Row(("memory peak", *cells([r.memory.peak_bytes if r.memory is not None else None
                                        for r in runs])))]
    b0 = runs[0].batch_size or 1
    rows.append(Row(("batch", *[str(r.batch_size) + (f" x{r.batch_size / b0:.2f}" if i else "")
                                for i, r in enumerate(runs)])))
    if any(r.seq_len for r in runs):
        s0 = runs[0].seq_len or 1
        rows.append(Row(("seq", *[("-" if not r.seq_len else str(r.seq_len)
                                   + (f" x{r.seq_len / s0:.2f}" if i else ""))
                                  for i, r in enumerate(runs)])))
    return rows


def beside_table(rows: Sequence[MemoryBeside], width: int | None = None) -> RenderableType:
    """Measured memory per layer beside the cost model's count (``cost --run RUN.json``):
    saved activations with their ratio, then parameters, gradients and optimizer state;
    under it how many layers the count misses by more than 10%."""
    cols = [Column("layer", align="left", name=True), Column("kind", align="left", drop=2),
            Column("saved MB"), Column("counted MB"), Column("counted/measured"),
            Column("params MB", drop=3), Column("counted", drop=3),
            Column("grads+opt MB", drop=4), Column("counted", drop=4)]

    def mbc(v: int | None) -> str:
        return "-" if v is None else fmt_mb(v, 2)

    def both(a: int | None, b: int | None) -> int | None:
        return None if a is None and b is None else (a or 0) + (b or 0)

    laid_rows = []
    misses = []
    for r in rows:
        ratio = r.saved_ratio
        if ratio is not None and abs(ratio - 1) > SAVED_TOLERANCE and (r.measured_saved or 0) > 0:
            misses.append(r)
        laid_rows.append(Row((
            r.name or "(model)", r.kind, mbc(r.measured_saved), mbc(r.counted_saved),
            "-" if ratio is None else f"x{ratio:.3f}", mbc(r.measured_params),
            mbc(r.counted_params), mbc(both(r.measured_grads, r.measured_optimizer)),
            mbc(both(r.counted_grads, r.counted_optimizer)))))
    total_m = sum(r.measured_saved or 0 for r in rows)
    total_c = sum(r.counted_saved or 0 for r in rows)
    laid_rows.append(Row(("total", "", mbc(total_m), mbc(total_c),
                          f"x{total_c / total_m:.3f}" if total_m else "-", "", "", "", ""),
                         bold=True, gap_before=True))
    parts: list[RenderableType] = [
        Text("memory: measured (the run) beside counted (the cost model, an estimate); "
             "MB = 10^6 bytes", style="bold"),
        lay_out(cols, laid_rows, width).renderable()]
    if misses:
        parts.append(Text(
            f"{len(misses)} layer(s) where the count differs from the measurement by more than "
            f"{SAVED_TOLERANCE:.0%}: " + ", ".join(
                f"{r.name or '(model)'} x{r.saved_ratio:.2f}" for r in misses[:8])
            + (" ..." if len(misses) > 8 else "") + " (docs/cost.md says why)", style="dim"))
    else:
        parts.append(Text(f"every layer's count is within {SAVED_TOLERANCE:.0%} of the "
                          "measurement", style="dim"))
    return Group(*parts)


def scaling_lines(points: Sequence[tuple[dict[str, object], int]]) -> list[str]:
    """How saved activations scale along a sweep: per group of configurations that differ
    only in batch size (or sequence length), the smallest and largest point, their ratio
    beside the axis's ratio, and the bytes per sample (per token for a sequence axis)."""
    out: list[str] = []
    for axis, unit in (("batch_size", "batch"), ("seq_len", "seq")):
        groups: dict[tuple[tuple[str, str], ...], list[tuple[int, int]]] = {}
        for config, saved in points:
            x = config.get(axis)
            if not isinstance(x, int):
                continue
            key = tuple(sorted((k, str(v)) for k, v in config.items() if k != axis))
            groups.setdefault(key, []).append((x, saved))
        for key, pts in groups.items():
            pts = sorted(set(pts))
            if len({x for x, _ in pts}) < 2:
                continue
            (x0, s0), (x1, s1) = pts[0], pts[-1]
            if not s0:
                continue
            batch = dict(key).get("batch_size")
            per = (f"{fmt_mb(s1 / x1, 2)} MB per sample" if axis == "batch_size" else
                   f"{fmt_mb(s1 / (x1 * int(batch)), 3)} MB per token" if batch else "")
            model = dict(key).get("model", "")
            out.append(f"saved for backward ({model}): {fmt_mb(s0)} MB at {unit} {x0} -> "
                       f"{fmt_mb(s1)} MB at {unit} {x1}: x{s1 / s0:.2f} for x{x1 / x0:.2f} "
                       f"the {unit}" + (f"; {per} at {unit} {x1}" if per else ""))
    return out
