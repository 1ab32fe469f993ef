"""The ``layertime`` command: maps flags to library calls and renderers, nothing more.

:mod:`~layertime.cli.parser` holds the subcommands and their flags,
:mod:`~layertime.cli.measure` the commands that measure or count,
:mod:`~layertime.cli.stored` those that read stored runs, and
:mod:`~layertime.cli.common` what they share.  Heavy libraries (torch) are
imported only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from layertime.cli.parser import EXIT_USAGE, build_parser
from layertime.errors import BadValue, LayertimeError, first_line

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _command(name: str, argv: list[str]) -> Callable[[argparse.Namespace], int]:
    from layertime.cli import attribute, measure, stored

    return {
        "profile": lambda args: measure.cmd_profile(args, argv),
        "attribute": attribute.cmd_attribute,
        "sweep": measure.cmd_sweep,
        "bench-layers": measure.cmd_bench_layers,
        "cost": measure.cmd_cost,
        "calibrate": measure.cmd_calibrate,
        "runs": stored.cmd_runs,
        "compare": stored.cmd_compare,
        "report": stored.cmd_report,
        "models": stored.cmd_models,
        "show": stored.cmd_show,
    }[name]


def _closed_pipe() -> int:
    """The reader went away (``layertime models | head``): end quietly, status 0.

    stdout is pointed at /dev/null so the interpreter's final flush does not
    raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    try:
        rc = int(_command(args.command_name, raw)(args))
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return rc
    except LayertimeError as e:
        if args.debug:
            raise
        print(f"layertime: error: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, BadValue) else EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("layertime: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _closed_pipe()
    except Exception as e:
        if args.debug:
            raise
        first = first_line(e) if str(e).strip() else ""
        print(
            f"layertime: internal error: {type(e).__name__}: {first} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
