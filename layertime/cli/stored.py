"""The commands that read what is stored or saved: ``runs``, ``compare``, ``report``,
``show`` and ``models``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from layertime.cli.common import (
    check_report_paths,
    console,
    open_store,
    table_width,
    write_reports,
    wrote,
)
from layertime.errors import BadValue, LayertimeError

if TYPE_CHECKING:
    from layertime.results.stored import StoredRun
    from layertime.results.sweep import SweepResult
    from layertime.store import Store


def cmd_runs(args: argparse.Namespace) -> int:
    from layertime.render.compare import runs_csv, runs_table

    with open_store(args.db) as store:
        if args.action == "show":
            if args.id is None:
                raise LayertimeError("runs show needs a run id")
            stored = store.get(args.id)
            _show_stored(stored, args, store)
            return 0
        runs = store.list(limit=args.limit)
    if args.action == "export":
        text = runs_csv(runs)
        if args.csv:
            from layertime.files import write_text_atomic

            write_text_atomic(args.csv, text)
            wrote(args, args.csv)
        else:
            sys.stdout.write(text)
        return 0
    if args.json:
        print(json.dumps([r.summary() for r in runs], indent=2))
    else:
        console(args).print(runs_table(runs, table_width(args)))
    return 0


def _show_stored(stored: StoredRun, args: argparse.Namespace, store: Store) -> None:
    """One stored run rendered as when it was measured: a profile's, a cost estimate's,
    a layer benchmark's or a sweep's table; with --json (or another kind), its JSON."""
    width = table_width(args)
    result = stored.result or {}
    kind = stored.kind if result and not getattr(args, "json", False) else None
    if kind == "profile":
        from layertime.render.table import render
        from layertime.results.run import Run

        console(args).print(render(Run.from_dict(result), width))
    elif kind == "cost":
        from layertime.render.cost.table import render as render_cost
        from layertime.results.cost.estimate import CostResult

        console(args).print(render_cost(CostResult.from_dict(result), width))
    elif kind == "bench-layers":
        from layertime.render.bench_table import bench_table
        from layertime.results.bench import BenchResult

        bench = BenchResult.from_dict(result)
        console(args).print(bench_table(bench, bench.in_situ, width))
    elif kind == "sweep":
        from layertime.render.compare import sweep_table

        console(args).print(sweep_table(_stored_sweep(stored, store), width))
    else:
        print(json.dumps({**stored.summary(), "config": stored.config,
                          "result": stored.result}, indent=2))


def _stored_sweep(stored: StoredRun, store: Store) -> SweepResult:
    """A stored sweep with each configuration's run read back from the store."""
    from layertime.results.run import Run
    from layertime.results.sweep import SweepPoint, SweepResult, SweepSummary

    summary = SweepSummary.from_dict(stored.result or {})
    points = []
    for p in summary.points:
        run = None
        if p.run_id is not None and p.status in ("ok", "skipped"):
            row = store.get(p.run_id)
            run = Run.from_dict(row.result) if row.result else None
        points.append(SweepPoint(p.config, p.status, p.run_id, run, p.error))
    return SweepResult(stored.id, tuple(points), summary.crossovers)


def cmd_compare(args: argparse.Namespace) -> int:
    from layertime.render.compare import compare_table
    from layertime.render.reports import run_label
    from layertime.results.run import Run

    if len(args.ids) < 2:
        raise LayertimeError("compare needs two run ids or more")
    runs, labels = [], []
    with open_store(args.db) as store:
        for rid in args.ids:
            stored = store.get(rid)
            if stored.kind != "profile" or not stored.result:
                raise LayertimeError(f"run {rid} is a {stored.kind} run ({stored.status}), "
                                     "not a finished profile")
            run = Run.from_dict(stored.result)
            runs.append(run)
            labels.append(run_label(rid, run))
    console(args).print(compare_table(runs, labels, table_width(args)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Reports of stored runs: one run or sweep, a comparison, or a profile joined with a cost."""
    from layertime.render.reports import report_of

    if not (args.html or args.plot or args.trace):
        raise LayertimeError("report needs --html PATH, --plot PATH or --trace PATH")
    check_report_paths(args)
    with open_store(args.db) as store:
        stored = [store.get(rid) for rid in args.ids]
    report = report_of(stored)
    if args.trace and not report.traced:
        raise BadValue(f"--trace needs profile runs; run {stored[0].id} is a "
                             f"{stored[0].kind} run")
    cost = report.options.get("cost")
    if cost is not None:  # a profile joined with a cost estimate: say any mismatch here too
        from layertime.cost.compare import join
        from layertime.results.run import Run

        assert isinstance(report.subject, Run)
        for w in join(report.subject, cost).warnings:  # type: ignore[arg-type]
            print(f"warning: {w}", file=sys.stderr)
    write_reports(args, report.subject, trace=False, **report.options)
    if args.trace:
        from layertime.render.trace import write_trace

        write_trace([r for _, r in report.traced], args.trace,
                    [label for label, _ in report.traced])
        wrote(args, args.trace)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from layertime.models import available

    for name in available():
        print(name)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """A saved run (a JSON file) or a stored one (its id) rendered as when it was measured."""
    from pathlib import Path

    if args.path.isdigit() and not Path(args.path).exists():
        with open_store(args.db) as store:
            _show_stored(store.get(int(args.path)), args, store)
        return 0
    from layertime.render.table import render
    from layertime.results.run import Run

    console(args).print(render(Run.load(args.path), table_width(args)))
    return 0
