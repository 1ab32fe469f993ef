"""``layertime attribute TRACE ...``: trace files recorded elsewhere, attributed as
``profile`` attributes its own steps; then the table, the files and the store."""

from __future__ import annotations

import argparse
import sys

from layertime.cli.common import (
    check_report_paths,
    console,
    open_store,
    stored_config,
    table_width,
    wrote,
    write_reports,
)
from layertime.errors import BadValue


def cmd_attribute(args: argparse.Namespace) -> int:
    from layertime.measure.traces import attribute
    from layertime.render.table import render

    check_report_paths(args)
    if args.config and not (args.model or "").startswith("hf:"):
        raise BadValue("--config KEY=VALUE applies to an hf: --model only")
    model = args.model
    if args.model_file:
        if ":" not in args.model_file.rsplit("/", 1)[-1]:
            raise BadValue(f"--model-file {args.model_file!r}: expected FILE.py:FN, the "
                           "function that builds the model")
        model = args.model_file
    found = attribute(args.traces, model, config=tuple(args.config),
                      num_classes=args.num_classes, seq_len=args.seq_len,
                      image_size=args.image_size)
    run = found.run
    if args.rank is not None:
        if args.rank >= len(found.ranks):
            raise BadValue(f"--rank {args.rank}: the traces hold {len(found.ranks)} rank(s)")
        run = found.ranks[args.rank]
    if args.json:
        run.save(args.json)
        wrote(args, args.json)
    if args.quiet:
        print(run.headline())
    else:
        console(args).print(render(run, table_width(args)))
    if not args.no_store:
        with open_store(args.db) as store:
            rid = store.add("profile", model=run.model, config=stored_config(args),
                            result=run.to_dict(), batch_size=run.batch_size, device=run.device)
        if not args.quiet:
            print(f"stored as run {rid} in {store.path}", file=sys.stderr)
    write_reports(args, run)
    return 0
