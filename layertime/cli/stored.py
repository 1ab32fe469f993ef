"""The commands that read what is stored or saved: ``runs``, ``compare``, ``report``,
``show`` and ``models``."""

from __future__ import annotations

import argparse
import json
import sys

from layertime.cli.common import (
    check_report_paths,
    console,
    open_store,
    table_width,
    write_reports,
)
from layertime.errors import LayertimeError


def cmd_runs(args: argparse.Namespace) -> int:
    from layertime.render.compare import runs_csv, runs_table

    with open_store(args.db) as store:
        if args.action == "show":
            if args.id is None:
                raise LayertimeError("runs show needs a run id")
            stored = store.get(args.id)
            _show_stored(stored, args)
            return 0
        runs = store.list(limit=args.limit)
    if args.action == "export":
        text = runs_csv(runs)
        if args.csv:
            from layertime.files import write_text_atomic

            write_text_atomic(args.csv, text)
        else:
            sys.stdout.write(text)
        return 0
    if args.json:
        print(json.dumps([r.summary() for r in runs], indent=2))
    else:
        console(args).print(runs_table(runs, table_width(args)))
    return 0


def _show_stored(stored: object, args: argparse.Namespace) -> None:
    """One stored run: its table (a profile, a cost estimate), else its JSON."""
    from layertime.results.stored import StoredRun

    assert isinstance(stored, StoredRun)
    if not args.json and stored.kind == "profile" and stored.result:
        from layertime.render.table import render
        from layertime.results.run import Run

        console(args).print(render(Run.from_dict(stored.result), table_width(args)))
    elif not args.json and stored.kind == "cost" and stored.result:
        from layertime.render.cost_table import render as render_cost
        from layertime.results.cost import CostResult

        console(args).print(render_cost(CostResult.from_dict(stored.result), table_width(args)))
    else:
        print(json.dumps({**stored.summary(), "config": stored.config,
                          "result": stored.result}, indent=2))


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
        raise LayertimeError(f"--trace needs profile runs; run {stored[0].id} is a "
                             f"{stored[0].kind} run")
    write_reports(args, report.subject, trace=False, **report.options)
    if args.trace:
        from layertime.render.trace import write_trace

        write_trace([r for _, r in report.traced], args.trace,
                    [label for label, _ in report.traced])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from layertime.models import available

    for name in available():
        print(name)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from layertime.render.table import render
    from layertime.results.run import Run

    console(args).print(render(Run.load(args.path), table_width(args)))
    return 0
