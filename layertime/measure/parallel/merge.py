"""One run from every rank's run of a data-parallel profile (pure)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace

from layertime.errors import LayertimeError
from layertime.results.parallel.data_parallel import BucketRow, LinkEstimate, RankRow
from layertime.results.memory import MemorySummary
from layertime.results.run import LayerRow, Phases, Run
from layertime.results.parallel.sharded import CollectiveRow


def _fmean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else 0.0


def merge_ranks(
    runs: Sequence[Run], *, backend: str | None = None, link: LinkEstimate | None = None
) -> Run:
    """One run from every rank's: rows, phases and samples are means over ranks.

    Means keep the rows adding up (each rank's do).  ``ranks`` keeps every
    rank's step, compute and communication; ``rank_spread_s`` of a layer is
    the max minus min of its ``total_s`` over ranks.
    """
    if not runs:
        raise ValueError("no ranks to merge")
    first = runs[0]
    names = [r.name for r in first.layers]
    for i, run in enumerate(runs[1:], start=1):
        if [r.name for r in run.layers] != names:
            raise LayertimeError(f"rank {i} profiled different layers than rank 0")
    phases = Phases(
        **{k: _fmean([getattr(run.phases, k) for run in runs]) for k in Phases.__dataclass_fields__}
    )
    spread = {
        k: _fmean([run.phase_spread_s.get(k, 0.0) for run in runs]) for k in first.phase_spread_s
    }
    ranks = _rank_rows(runs)
    warnings = list(dict.fromkeys(w for run in runs for w in run.warnings))
    straggler = _straggler(ranks, first.sharding is not None)
    if straggler:
        warnings.append(straggler)
    plain, profiled, traced = _mean_samples(runs)
    return replace(
        first,
        step_samples_s=plain,
        profiled_step_samples_s=profiled,
        traced_step_samples_s=traced,
        layers=_mean_layers(runs),
        phases=phases,
        phase_spread_s=spread,
        warnings=tuple(warnings),
        world_size=len(runs),
        backend=backend if backend is not None else first.backend,
        ranks=ranks,
        buckets=_mean_buckets(runs),
        link=link if link is not None else first.link,
        collectives=_mean_collectives(runs),
        memory=_highest_memory(runs),
    )


def _highest_memory(runs: Sequence[Run]) -> MemorySummary | None:
    """The memory of the rank with the highest peak (the one that runs out first), with
    its rank; every rank's own numbers are in ``ranks``."""
    measured = [(i, run.memory) for i, run in enumerate(runs) if run.memory is not None]
    if not measured:
        return None
    i, m = max(measured, key=lambda im: im[1].peak_bytes)
    return replace(m, rank=i)


def _mean_collectives(runs: Sequence[Run]) -> tuple[CollectiveRow, ...]:
    """Each collective row as the mean over ranks (a rank without it counts 0)."""
    n = len(runs)
    sums: dict[tuple[str, str, str, str], list[float]] = {}
    for run in runs:
        for c in run.collectives:
            acc = sums.setdefault((c.kind, c.phase, c.scope, c.target), [0.0] * 5)
            for i, v in enumerate((c.count, c.bytes, c.exposed_s, c.hidden_s, c.busy_s)):
                acc[i] += v
    return tuple(
        CollectiveRow(kind=k, phase=p, scope=sc, target=t, count=v[0] / n, bytes=round(v[1] / n),
                      exposed_s=v[2] / n, hidden_s=v[3] / n, busy_s=v[4] / n)
        for (k, p, sc, t), v in sorted(sums.items())
    )


def _mean_layers(runs: Sequence[Run]) -> tuple[LayerRow, ...]:
    """Each layer's row as the mean over ranks, with its spread over ranks."""
    layers = []
    for j, base in enumerate(runs[0].layers):
        rows = [run.layers[j] for run in runs]
        layers.append(
            replace(
                base,
                forward_s=_fmean([r.forward_s for r in rows]),
                backward_s=_fmean([r.backward_s for r in rows]),
                update_s=_fmean([r.update_s for r in rows]),
                calls=_fmean([r.calls for r in rows]),
                spread_s=_fmean([r.spread_s for r in rows]),
                comm_s=_fmean([r.comm_s for r in rows]),
                comm_exposed_s=_fmean([r.comm_exposed_s for r in rows]),
                rank_spread_s=max(r.total_s for r in rows) - min(r.total_s for r in rows),
                saved_bytes=round(_fmean([r.saved_bytes for r in rows])),
                params_bytes=round(_fmean([r.params_bytes for r in rows])),
                grads_bytes=round(_fmean([r.grads_bytes for r in rows])),
                optimizer_state_bytes=round(_fmean([r.optimizer_state_bytes for r in rows])),
                recompute_s=_fmean([r.recompute_s for r in rows]),
            )
        )
    return tuple(layers)


def _mean_samples(
    runs: Sequence[Run],
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Plain, profiled and traced step samples as means over ranks, as many as every rank
    has (traced walls only when every rank kept them)."""
    n_plain = min(len(run.step_samples_s) for run in runs)
    n_traced = min(len(run.profiled_step_samples_s) for run in runs)
    traced_walls = all(len(run.traced_step_samples_s) >= n_traced for run in runs)
    return (
        tuple(_fmean([run.step_samples_s[i] for run in runs]) for i in range(n_plain)),
        tuple(_fmean([run.profiled_step_samples_s[i] for run in runs]) for i in range(n_traced)),
        tuple(_fmean([run.traced_step_samples_s[i] for run in runs]) for i in range(n_traced))
        if traced_walls else (),
    )


def _mean_buckets(runs: Sequence[Run]) -> tuple[BucketRow, ...]:
    buckets = []
    for j, b in enumerate(runs[0].buckets):
        same = [run.buckets[j] for run in runs if len(run.buckets) > j]
        buckets.append(
            replace(
                b,
                allreduce_s=_fmean([x.allreduce_s for x in same]),
                comm_s=_fmean([x.comm_s for x in same]),
                exposed_s=_fmean([x.exposed_s for x in same]),
            )
        )
    return tuple(buckets)


def _rank_rows(runs: Sequence[Run]) -> tuple[RankRow, ...]:
    """Each rank's step, compute and communication, and its wait for the slowest rank."""
    compute = [run.profiled_step_s - run.phases.comm_exposed_s for run in runs]
    return tuple(
        RankRow(
            rank=i,
            host=run.environment.host,
            step_s=run.step_s,
            profiled_step_s=run.profiled_step_s,
            compute_s=compute[i],
            comm_s=run.comm_s,
            comm_exposed_s=run.phases.comm_exposed_s,
            wait_s=min(run.phases.comm_exposed_s, max(compute) - compute[i]),
            peak_bytes=run.memory.peak_bytes if run.memory is not None else 0,
            saved_bytes=sum(r.saved_bytes for r in run.layers),
            params_bytes=sum(r.params_bytes for r in run.layers),
            grads_bytes=sum(r.grads_bytes for r in run.layers),
            optimizer_state_bytes=sum(r.optimizer_state_bytes for r in run.layers),
        )
        for i, run in enumerate(runs)
    )


#: A rank whose compute exceeds the fastest rank's by this much is called a straggler.
STRAGGLER_RATIO = 1.2


def _straggler(ranks: Sequence[RankRow], sharded: bool = False) -> str | None:
    if len(ranks) < 2:
        return None
    slow = max(ranks, key=lambda r: r.compute_s)
    fast = min(ranks, key=lambda r: r.compute_s)
    if fast.compute_s > 0 and slow.compute_s > STRAGGLER_RATIO * fast.compute_s:
        return (
            f"rank {slow.rank} ({slow.host}) computes {slow.compute_s / fast.compute_s - 1:.0%} "
            f"longer than rank {fast.rank}: the other ranks wait for it in the "
            f"{'collectives' if sharded else 'all-reduce'}"
        )
    return None
