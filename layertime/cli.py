"""The ``layertime`` command: maps flags to library calls and renderers, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from layertime.errors import LayertimeError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Without --steps or --time-budget: this many pairs, fewer when they would
#: take longer than the budget (so a default run answers within a minute).
DEFAULT_STEPS = 3
DEFAULT_BUDGET_S = 40.0


def _step_count(args: argparse.Namespace) -> dict[str, Any]:
    """--steps, --time-budget, or the default: 3 pairs within a 40 s budget."""
    if args.steps is not None:
        return {"steps": args.steps}
    if args.time_budget is not None:
        return {"time_budget_s": args.time_budget}
    return {"steps": DEFAULT_STEPS, "time_budget_s": DEFAULT_BUDGET_S, "max_steps": DEFAULT_STEPS}


def _shape(text: str) -> tuple[int, ...]:
    try:
        # Every part must be a number: "3,x" or "3,,64" is an error, not (3,) or (3, 64).
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: expected sizes like 3,224,224")
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: every size must be >= 1")
    return dims


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be at least 1")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} must be at least 0")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


def _token_flags(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """--seq-len (--seq-lens for a sweep) and --config KEY=VALUE, for hf: models (issue 11)."""
    if sweep:
        p.add_argument("--seq-lens", metavar="N,N", help="token models: e.g. 128,256,512,1024")
    else:
        p.add_argument("--seq-len", type=_positive_int, metavar="N",
                       help="token models (hf:...): token ids per sequence (default 128)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="hf: models: override a config field, e.g. num_hidden_layers=2 "
                   "(repeatable)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"layertime: error: {message}\n")


class _SubParser(_Parser):
    """A subcommand's parser: also takes ``--debug``, so ``layertime profile X --debug`` works."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )


DESCRIPTION = """\
Where does the time of training a neural network go, layer by layer? layertime
runs real training steps (forward, backward, optimizer update) on synthetic data,
charges every op to the layer and phase that caused it, and prints a table whose
rows add up to the step, with the one-line answer on top (in AlexNet: conv or
fully connected layers?). It also counts FLOPs, bytes and memory per layer and
predicts the step on other devices (cost), benchmarks layers alone (bench-layers),
sweeps batch and image sizes (sweep) and keeps every run in a local store (runs)."""

EPILOG = "layertime COMMAND --help shows a command's flags; the README has examples."


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    parser = _Parser(prog="layertime", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        ver = version("layertime")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"layertime {ver}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_SubParser)

    p = sub.add_parser("profile", help="measure a training step, layer by layer")
    p.add_argument("model", help="alexnet, alexnet2012, vgg16, timm:NAME, file.py:fn, pkg.mod:fn")
    p.add_argument("--batch-size", "-b", type=_positive_int, default=128)
    p.add_argument("--image-size", type=_positive_int, help="H=W of a 3-channel input")
    p.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 3,64,64")
    p.add_argument("--num-classes", type=_positive_int, default=1000)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    p.add_argument("--amp", choices=("bf16", "fp16"), help="automatic mixed precision")
    p.add_argument(
        "--steps",
        type=_positive_int,
        help=f"measured plain/traced pairs (default {DEFAULT_STEPS}, fewer if a pair takes over "
        f"{DEFAULT_BUDGET_S / DEFAULT_STEPS:.0f} s)",
    )
    p.add_argument("--warmup", type=_nonneg_int, default=1, help="warm-up steps (default 1)")
    p.add_argument(
        "--time-budget", type=_positive_float, metavar="SECONDS", help="measure for about this long"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (layertime.run/1)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the headline")
    p.add_argument("--width", type=_positive_int, help="table width (default: terminal)")
    _report_flags(p, trace=True)
    _store_flags(p)
    _ddp_flags(p)
    p.add_argument("--predict", metavar="PROFILE",
                   help="beside the measurement, the roofline estimate on this device profile")
    p.add_argument("--cost", action="store_true",
                   help="beside the measurement, each layer's share of FLOPs and memory")
    p.add_argument("--profiles", metavar="FILE.toml", help="extra device profiles for --predict")
    _compile_flags(p)
    _token_flags(p)
    p.set_defaults(func=cmd_profile)

    sw = sub.add_parser("sweep", help="profile every combination of the given axes")
    sw.add_argument("models", help="model name(s), comma-separated")
    sw.add_argument("--batch-sizes", required=True, help="e.g. 1,8,32,128")
    sw.add_argument("--image-sizes", help="e.g. 224,227 (default: each model's own)")
    sw.add_argument("--devices", default="auto", help="e.g. cpu,cuda")
    sw.add_argument("--dtypes", default="float32")
    sw.add_argument("--optimizers", default="sgd")
    sw.add_argument("--steps", type=_positive_int, default=3)
    sw.add_argument("--warmup", type=_nonneg_int, default=1)
    sw.add_argument("--force", action="store_true", help="measure again what is stored")
    sw.add_argument("--json", metavar="PATH", help="write the sweep summary as JSON")
    _report_flags(sw)
    sw.add_argument("--width", type=_positive_int)
    sw.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    _token_flags(sw, sweep=True)
    sw.set_defaults(func=cmd_sweep)

    r = sub.add_parser("runs", help="stored runs, newest first")
    r.add_argument("action", nargs="?", choices=("list", "show", "export"), default="list")
    r.add_argument("id", nargs="?", type=int, help="run id (for show)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--csv", metavar="PATH", help="export: write CSV here")
    r.add_argument("--limit", type=_positive_int)
    r.add_argument("--width", type=_positive_int)
    r.add_argument("--db", metavar="PATH")
    r.set_defaults(func=cmd_runs)

    c = sub.add_parser("compare", help="two or more stored runs side by side")
    c.add_argument("ids", nargs="+", type=int)
    c.add_argument("--width", type=_positive_int)
    c.add_argument("--db", metavar="PATH")
    c.set_defaults(func=cmd_compare)

    rp = sub.add_parser(
        "report", help="HTML report, plot or trace of stored runs (one: a run or sweep; several: "
        "a comparison; a profile and a cost estimate: joined)"
    )
    rp.add_argument("ids", nargs="+", type=int, metavar="ID")
    _report_flags(rp, trace=True)
    rp.add_argument("--db", metavar="PATH")
    rp.set_defaults(func=cmd_report)

    bl = sub.add_parser("bench-layers", help="each layer alone: forward, input- and weight-gradient")
    bl.add_argument("model")
    bl.add_argument("--batch-size", "-b", type=_positive_int, default=128)
    bl.add_argument("--image-size", type=_positive_int)
    bl.add_argument("--input-shape", type=_shape)
    bl.add_argument("--num-classes", type=_positive_int, default=1000)
    bl.add_argument("--device", default="auto")
    bl.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    bl.add_argument("--repeats", type=_positive_int, default=5, help="timed runs per layer (5)")
    bl.add_argument("--warmup", type=_nonneg_int, default=2, help="untimed runs per layer (2)")
    bl.add_argument("--steps", type=_positive_int, default=3, help="in-situ profile steps (3)")
    bl.add_argument("--no-compare", action="store_true", help="skip the in-situ profile")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--json", metavar="PATH", help="write the benchmark as JSON")
    bl.add_argument("--width", type=_positive_int)
    _store_flags(bl)
    bl.set_defaults(func=cmd_bench_layers)

    co = sub.add_parser(
        "cost", help="count FLOPs, bytes and memory of a training step per layer (no GPU needed)"
    )
    co.add_argument("model", help="alexnet, alexnet2012, vgg16, timm:NAME, file.py:fn, pkg.mod:fn")
    co.add_argument("--batch-size", "-b", type=_positive_int, default=128)
    co.add_argument("--image-size", type=_positive_int, help="H=W of a 3-channel input")
    co.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 3,64,64")
    co.add_argument("--num-classes", type=_positive_int, default=1000)
    co.add_argument("--optimizer", default="sgd", choices=("sgd", "adam", "adamw"))
    co.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    co.add_argument(
        "--freeze", action="append", default=[], metavar="MODULE",
        help="parameters under this module path get no gradient (repeatable)",
    )
    co.add_argument(
        "--device-profile", metavar="NAME", help="predict times on this device (roofline estimate)"
    )
    co.add_argument(
        "--profiles", metavar="FILE.toml", help="extra device profiles ([devices.NAME] tables)"
    )
    co.add_argument(
        "--tf32", choices=("torch", "on", "off"), default="torch",
        help="float32 conv/matmul on TF32 tensor cores: torch's defaults (conv on, matmul off)",
    )
    co.add_argument("--json", metavar="PATH", help="write the result as JSON (layertime.cost/1)")
    _report_flags(co)
    co.add_argument("--quiet", "-q", action="store_true", help="print only the headline")
    co.add_argument("--width", type=_positive_int, help="table width (default: terminal)")
    _comm_flags(co)
    _store_flags(co)
    _token_flags(co)
    co.set_defaults(func=cmd_cost)

    ca = sub.add_parser("calibrate", help="measure this machine and save it as a device profile")
    ca.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    ca.add_argument("--name", help="profile name (default local-cpu or local-<gpu>)")
    ca.add_argument("--out", metavar="PATH",
                    help="TOML file to write (default $XDG_CONFIG_HOME/layertime/devices.toml)")
    ca.add_argument("--matmul-size", type=_positive_int, metavar="N",
                    help="largest matmul side (default 2048 on the CPU, 8192 on CUDA)")
    ca.add_argument("--memory-mb", type=_positive_float, metavar="MB",
                    help="bytes per buffer of the bandwidth test (default 256 CPU, 1024 CUDA)")
    ca.add_argument("--repeats", type=_positive_int, default=5, help="timed runs (best of; 5)")
    ca.add_argument("--fit", metavar="MODEL",
                    help="also profile MODEL and fit each kind's efficiency to its times")
    ca.add_argument("--from-run", metavar="ID|RUN.json",
                    help="fit to a stored profile run (or a run JSON) instead of profiling")
    ca.add_argument("--min-share", type=float, default=0.01, metavar="FRACTION",
                    help="kinds under this share of the step keep the default (0.01)")
    ca.add_argument("--batch-size", "-b", type=_positive_int, default=128)
    for flag, kw in (
                     ("--image-size", {"type": _positive_int}),
                     ("--input-shape", {"type": _shape}),
                     ("--num-classes", {"type": _positive_int, "default": 1000}),
                     ("--optimizer", {"default": "sgd", "choices": ("sgd", "adam", "adamw")}),
                     ("--dtype", {"default": "float32",
                                  "choices": ("float32", "float64", "bfloat16")}),
                     ("--steps", {"type": _positive_int, "default": 3}),
                     ("--warmup", {"type": _nonneg_int, "default": 1}),
                     ("--seed", {"type": int, "default": 0})):
        ca.add_argument(flag, **kw)  # type: ignore[arg-type]
    ca.add_argument("--json", metavar="PATH", help="write the measurement (and fit) as JSON")
    ca.add_argument("--width", type=_positive_int)
    _store_flags(ca)
    ca.set_defaults(func=cmd_calibrate)

    m = sub.add_parser("models", help="list the model names layertime knows")
    m.set_defaults(func=cmd_models)

    s = sub.add_parser("show", help="render a saved run (JSON)")
    s.add_argument("path")
    s.add_argument("--width", type=_positive_int)
    s.set_defaults(func=cmd_show)
    return parser


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def _table_width(args: argparse.Namespace) -> int | None:
    """--width, else the terminal's width; None when stdout is a pipe or a file
    (tables then take the width they need, nothing wraps)."""
    if getattr(args, "width", None):
        return int(args.width)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return None


def _console(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """A console for stdout at the table width: wrapping prose at a terminal's width,
    never wrapping in a pipe."""
    from rich.console import Console

    width = _table_width(args)
    if width is None:
        return Console(width=100_000, soft_wrap=True)
    return Console(width=width)


def cmd_profile(args: argparse.Namespace) -> int:
    from layertime.measure.runner import profile
    from layertime.render.table import render

    _check_report_paths(args)
    compile_options = _compile_options(args)
    if compile_options is not None and (args.ddp or args.nproc):
        print("layertime: error: --compile cannot be combined with --ddp/--nproc yet", file=sys.stderr)
        return EXIT_USAGE
    if args.nproc:
        return _launch_ranks(args)
    cost = _profile_cost(args)  # before measuring: a bad profile name fails at once
    if args.ddp:
        profile = _ddp_profile(args)  # noqa: F811 (one rank of a data-parallel run)
    with _progress(not args.quiet and sys.stderr.isatty()) as on_progress:
        run = profile(
            args.model,
            batch_size=args.batch_size,
            input_shape=args.input_shape,
            image_size=args.image_size,
            num_classes=args.num_classes,
            device=args.device,
            optimizer=args.optimizer,
            dtype=args.dtype,
            amp=args.amp,
            warmup_steps=args.warmup,
            seed=args.seed,
            on_progress=on_progress,
            **_step_count(args),
            **({"compile": compile_options} if compile_options is not None else {}),
            **_token_args(args),
        )
    if run is None:  # a rank other than 0: rank 0 reports for all
        return 0
    joined = None
    if cost is not None:
        from dataclasses import replace

        from layertime.cost import MathMode, predict
        from layertime.cost.compare import join
        from layertime.cost.devices import find_profile

        if args.predict:
            # Again with the math settings the run recorded (TF32 for conv/matmul).
            device = find_profile(args.predict, args.profiles)
            cost = predict(cost, device, mode=MathMode.of_run(run.environment))
        joined = join(run, cost)
        run = replace(run, prediction=joined.to_dict())
    if args.json:
        run.save(args.json)
    if args.quiet:
        print(run.headline())
        if joined is not None:
            print(joined.headline())
    else:
        _console(args).print(render(run, _table_width(args)))
        if joined is not None:
            from layertime.render.predict_table import render as render_joined

            _console(args).print(render_joined(joined, _table_width(args)))
    if not args.no_store:
        config = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
        with _store(args.db) as store:
            rid = store.add(
                "profile",
                model=run.model,
                config=config,
                result=run.to_dict(),
                batch_size=run.batch_size,
                device=run.device,
            )
        if not args.quiet:
            print(f"stored as run {rid} in {store.path}", file=sys.stderr)
    _write_reports(args, run, **({"cost": cost} if cost is not None else {}))
    return 0


def _profile_cost(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``profile --predict NAME`` / ``--cost``: the cost estimate of the same configuration."""
    if args.profiles and not args.predict:
        raise LayertimeError("--profiles needs --predict PROFILE")
    if not (args.predict or args.cost):
        return None
    from layertime.cost import estimate, predict
    from layertime.cost.devices import find_profile

    device = find_profile(args.predict, args.profiles) if args.predict else None
    cost = estimate(args.model, batch_size=args.batch_size, input_shape=args.input_shape,
                    image_size=args.image_size, num_classes=args.num_classes,
                    optimizer=args.optimizer, dtype=args.dtype, **_token_args(args))
    return predict(cost, device) if device is not None else cost


def _token_args(args: argparse.Namespace) -> dict[str, Any]:
    """--seq-len and --config as library keywords (only when given: image runs are unchanged)."""
    out: dict[str, Any] = {}
    if getattr(args, "seq_len", None) is not None:
        out["seq_len"] = args.seq_len
    if getattr(args, "config", None):
        out["hf_config"] = tuple(args.config)
    return out


#: argparse fields that are presentation or plumbing, not configuration.
_NOT_CONFIG = {"func", "debug", "json", "quiet", "width", "db", "no_store", "command",
               "html", "plot", "trace", "raw_argv", "ddp_timeout"}


def _compile_flags(p: argparse.ArgumentParser) -> None:
    from layertime.compiled_result import COMPILE_MODES

    p.add_argument("--compile", action="store_true",
                   help="profile torch.compile(model): compiled kernels charged to their layers")
    p.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile mode (implies --compile)")


def _compile_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``--compile``/``--compile-mode``: the CompileOptions, or None for an eager run."""
    if not (args.compile or args.compile_mode):
        return None
    from layertime.measure.compiled import CompileOptions

    return CompileOptions(mode=args.compile_mode)


def _ddp_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ddp", action="store_true",
                   help="one rank of a torchrun job (DistributedDataParallel); batch size per rank")
    p.add_argument("--nproc", type=_positive_int, metavar="N",
                   help="start N ranks on this machine with torchrun (implies --ddp)")
    p.add_argument("--ddp-timeout", type=_positive_float, default=120.0, metavar="SECONDS",
                   help="a rank that hangs fails the run after this long (default 120)")
    p.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"),
                   help="torch.distributed backend (auto: nccl on CUDA, gloo on the CPU)")


def _ddp_profile(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from functools import partial

    from layertime.measure.distributed import profile_ddp

    return partial(profile_ddp, backend=args.backend, timeout_s=args.ddp_timeout)


def _launch_ranks(args: argparse.Namespace) -> int:
    from layertime.measure.launch import launch, worker_argv

    out = launch(args.nproc, worker_argv(args.raw_argv))
    if out.returncode == 0:
        sys.stderr.write(out.log)
        return 0
    if args.debug:
        sys.stderr.write(out.log)
    print(f"layertime: error: {out.error}", file=sys.stderr)
    return out.returncode


def _report_flags(p: argparse.ArgumentParser, *, trace: bool = False) -> None:
    p.add_argument("--html", metavar="PATH", help="write a self-contained HTML report")
    p.add_argument("--plot", metavar="PATH", help="write the charts as an image (.png or .svg)")
    if trace:
        p.add_argument(
            "--trace", metavar="PATH", help="write a Chrome trace (open in Perfetto)"
        )


def _check_report_paths(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written before any long work."""
    from layertime.render.output import check_output

    for flag in ("html", "plot", "trace"):
        path = getattr(args, flag, None)
        if path:
            check_output(path, plot=flag == "plot")


def _write_reports(args: argparse.Namespace, obj: object, **kw: object) -> None:
    """Write the --html/--plot/--trace files of ``obj``, each atomically."""
    if getattr(args, "html", None):
        from layertime.render.html import write_html

        write_html(obj, args.html, **kw)
    if getattr(args, "plot", None):
        from layertime.render.plot import write_plot

        write_plot(obj, args.plot, **kw)
    if getattr(args, "trace", None):
        from layertime.render.trace import write_trace
        from layertime.result import Run

        if not isinstance(obj, Run):
            raise LayertimeError("--trace needs one profile run")
        write_trace(obj, args.trace)


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    p.add_argument("--no-store", action="store_true", help="do not keep this run in the database")


def _store(path: str | None):  # type: ignore[no-untyped-def]
    from layertime.store import Store

    return Store(path)


def cmd_sweep(args: argparse.Namespace) -> int:
    from layertime.render.compare import sweep_table
    from layertime.result import write_text_atomic
    from layertime.sweep import SweepAxes, parse_axis, run_sweep

    axes = SweepAxes(
        models=parse_axis(args.models, "models", kind=str),
        batch_sizes=parse_axis(args.batch_sizes, "batch-sizes"),
        image_sizes=parse_axis(args.image_sizes, "image-sizes") if args.image_sizes else (None,),
        devices=parse_axis(args.devices, "devices", kind=str),
        dtypes=parse_axis(args.dtypes, "dtypes", kind=str),
        optimizers=parse_axis(args.optimizers, "optimizers", kind=str),
        steps=args.steps,
        warmup_steps=args.warmup,
        seq_lens=parse_axis(args.seq_lens, "seq-lens") if args.seq_lens else (None,),
        hf_config=tuple(args.config),
    )
    _check_report_paths(args)
    with _store(args.db) as store, _sweep_progress(sys.stderr.isatty()) as progress:
        result = run_sweep(axes, store, force=args.force, on_progress=progress)
    _console(args).print(sweep_table(result, _table_width(args)))
    if args.json:
        import json
        from pathlib import Path

        write_text_atomic(Path(args.json), json.dumps(result.summary(), indent=2) + "\n")
    _write_reports(args, result.summary(), title=f"sweep {result.sweep_id}")
    return 0


@contextmanager
def _sweep_progress(enabled: bool) -> Iterator[Callable[[int, int, str, float | None], None]]:
    if not enabled:
        yield lambda done, total, label, eta: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} configurations"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("sweep", total=1)

        def update(done: int, total: int, label: str, eta: float | None) -> None:
            bar.update(task, completed=done, total=total, description=label)

        yield update


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from layertime.render.compare import runs_csv, runs_table
    from layertime.render.table import render
    from layertime.result import Run, write_text_atomic

    with _store(args.db) as store:
        if args.action == "show":
            if args.id is None:
                raise LayertimeError("runs show needs a run id")
            stored = store.get(args.id)
            if args.json:
                print(json.dumps({**stored.summary(), "config": stored.config,
                                  "result": stored.result}, indent=2))
            elif stored.kind == "profile" and stored.result:
                _console(args).print(render(Run.from_dict(stored.result), _table_width(args)))
            elif stored.kind == "cost" and stored.result:
                from layertime.cost.result import CostResult
                from layertime.render.cost_table import render as render_cost

                _console(args).print(render_cost(CostResult.from_dict(stored.result),
                                                 _table_width(args)))
            else:
                print(json.dumps({**stored.summary(), "config": stored.config,
                                  "result": stored.result}, indent=2))
            return 0
        runs = store.list(limit=args.limit)
    if args.action == "export":
        text = runs_csv(runs)
        if args.csv:
            from pathlib import Path

            write_text_atomic(Path(args.csv), text)
        else:
            sys.stdout.write(text)
        return 0
    if args.json:
        print(json.dumps([r.summary() for r in runs], indent=2))
    else:
        _console(args).print(runs_table(runs, _table_width(args)))
    return 0


def cmd_bench_layers(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from layertime.measure.isolated import bench
    from layertime.measure.runner import profile
    from layertime.render.bench_table import bench_table
    from layertime.result import write_text_atomic

    if args.model.strip().startswith("hf:"):
        raise LayertimeError("bench-layers takes image models only for now; "
                             "profile hf: models with 'layertime profile'")
    model_opts = dict(
        batch_size=args.batch_size,
        input_shape=args.input_shape,
        image_size=args.image_size,
        num_classes=args.num_classes,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
    )
    with _progress(sys.stderr.isatty()) as on_progress:
        result = bench(
            args.model,
            warmup=args.warmup,
            repeats=args.repeats,
            on_progress=lambda done, total, name: on_progress("layers alone", done, total),
            **model_opts,
        )
        situ = None
        if not args.no_compare:
            situ = profile(args.model, steps=args.steps, on_progress=on_progress, **model_opts)
    _console(args).print(bench_table(result, situ, _table_width(args)))
    data = {**result.to_dict(), "in_situ": situ.to_dict() if situ else None}
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(data, indent=2) + "\n")
    if not args.no_store:
        config = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
        with _store(args.db) as store:
            store.add("bench-layers", model=result.model, config=config, result=data,
                      batch_size=result.batch_size, device=result.device)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from layertime.render.compare import compare_table
    from layertime.result import Run

    if len(args.ids) < 2:
        raise LayertimeError("compare needs two run ids or more")
    runs, labels = [], []
    with _store(args.db) as store:
        for rid in args.ids:
            stored = store.get(rid)
            if stored.kind != "profile" or not stored.result:
                raise LayertimeError(f"run {rid} is a {stored.kind} run ({stored.status}), "
                                     "not a finished profile")
            run = Run.from_dict(stored.result)
            runs.append(run)
            labels.append(f"#{rid} {run.model} b{run.batch_size} {run.device}")
    _console(args).print(compare_table(runs, labels, _table_width(args)))
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from layertime.cost import MathMode, estimate, predict
    from layertime.cost.devices import find_profile
    from layertime.render.cost_table import render

    _check_report_paths(args)
    if args.profiles and not args.device_profile:
        raise LayertimeError("--profiles needs --device-profile NAME to choose one")
    profile = find_profile(args.device_profile, args.profiles) if args.device_profile else None
    cost = estimate(
        args.model,
        batch_size=args.batch_size,
        input_shape=args.input_shape,
        image_size=args.image_size,
        num_classes=args.num_classes,
        optimizer=args.optimizer,
        dtype=args.dtype,
        frozen=args.freeze,
        **_token_args(args),
    )
    if profile is not None:
        tf32 = {"torch": MathMode(), "on": MathMode(True, True), "off": MathMode(False, False)}
        cost = predict(cost, profile, mode=tf32[args.tf32])
    if args.json:
        cost.save(args.json)
    if args.quiet:
        print(cost.headline())
    else:
        _console(args).print(render(cost, _table_width(args)))
    _write_reports(args, cost)
    if args.workers or args.run:
        _comm_what_if(args, cost)
    if not args.no_store:
        config = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
        with _store(args.db) as store:
            rid = store.add("cost", model=cost.model, config=config, result=cost.to_dict(),
                            batch_size=cost.batch_size, device=args.device_profile)
        if not args.quiet and sys.stderr.isatty():
            print(f"stored as run {rid} in {store.path}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from layertime.cost import calibrate as cal_mod
    from layertime.result import Run, write_text_atomic
    from layertime.workload import resolve_device

    if args.json:
        from layertime.render.output import check_output

        check_output(args.json)
    if not 0 <= args.min_share < 1:
        raise LayertimeError(f"--min-share must be in [0, 1), not {args.min_share}")
    path = cal_mod.check_profile_file(args.out)
    device = resolve_device(args.device)
    if args.fit:
        from layertime.models import resolve

        resolve(args.fit)  # an unknown name fails before any measuring
    name = args.name or cal_mod.default_name(device)
    run = None
    if args.from_run:
        if args.from_run.isdigit():
            with _store(args.db) as store:
                stored = store.get(int(args.from_run))
            if stored.kind != "profile" or not stored.result:
                raise LayertimeError(f"run {stored.id} is a {stored.kind} run "
                                     f"({stored.status}), not a finished profile")
            run = Run.from_dict(stored.result)
        else:
            run = Run.load(args.from_run)
        if args.fit and args.fit != run.model:
            raise LayertimeError(f"the run is of {run.model}, not {args.fit}")
    with _progress(sys.stderr.isatty()) as on_progress:
        cal = cal_mod.calibrate(device, matmul_size=args.matmul_size, memory_mb=args.memory_mb,
                                repeats=args.repeats,
                                on_progress=lambda what: on_progress(what, 0, 1))
        if args.fit and run is None:
            from layertime.measure.runner import profile

            run = profile(args.fit, batch_size=args.batch_size, input_shape=args.input_shape,
                          image_size=args.image_size, num_classes=args.num_classes,
                          device=str(device), optimizer=args.optimizer, dtype=args.dtype,
                          steps=args.steps, warmup_steps=args.warmup, seed=args.seed,
                          on_progress=on_progress)
            if not args.no_store:
                with _store(args.db) as store:
                    config = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
                    store.add("profile", model=run.model, config=config, result=run.to_dict(),
                              batch_size=run.batch_size, device=run.device)
    fit, warnings = None, list[str]()
    if run is not None:
        prof, fit, warnings = cal_mod.fit_to_run(cal, name, run, model=args.fit,
                                                 min_share=args.min_share)
    else:
        prof = cal_mod.to_profile(cal, name)
    written = cal_mod.save_profile(prof, path, fit, comment=f"written by layertime calibrate "
                                   f"{cal.created}: measured on this machine, not a datasheet")
    from layertime.render.predict_table import calibration_report

    _console(args).print(calibration_report(cal, fit, warnings, name, written,
                                            _table_width(args)),
                               soft_wrap=True)
    if args.json:
        data = {"calibration": cal.to_dict(), "profile": name, "path": str(written),
                "fit": fit.to_dict() if fit is not None else None}
        write_text_atomic(Path(args.json), json.dumps(data, indent=2) + "\n")
    return 0


def _comm_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data-parallel what-if (ring all-reduce of DDP's gradient buckets)")
    g.add_argument("--workers", type=_positive_int, metavar="N", help="data-parallel workers")
    g.add_argument("--link-gbps", type=_positive_float, metavar="G", help="link bandwidth, Gbit/s")
    g.add_argument("--link-latency-us", type=float, metavar="US",
                   help="link latency per message, µs (default 5, or the run's measured one)")
    g.add_argument("--bucket-cap-mb", type=_positive_float, default=25.0, metavar="MB",
                   help="DDP's bucket cap in MiB (default 25)")
    g.add_argument("--run", metavar="RUN.json", help="a measured run (profile --json): compare "
                   "with its communication, take its compute times, buckets and link")
    g.add_argument("--comm-json", metavar="PATH", help="write the what-if as JSON")


def _comm_what_if(args: argparse.Namespace, cost) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    from layertime.cost.comm import DEFAULT_LATENCY_US, Link, from_cost, from_run
    from layertime.render.comm import render as render_comm
    from layertime.result import Run, write_text_atomic

    run = Run.load(args.run) if args.run else None
    link = None
    if args.link_gbps:
        latency = args.link_latency_us
        if latency is None:
            latency = run.link.latency_us if run is not None and run.link else DEFAULT_LATENCY_US
        link = Link(args.link_gbps, latency)
    elif args.link_latency_us is not None:
        raise LayertimeError("--link-latency-us needs --link-gbps")
    caps = {"cap_bytes": int(args.bucket_cap_mb * 2**20)}
    if run is not None:
        pred = from_run(run, args.workers, link, **caps)
    else:
        if link is None:
            raise LayertimeError("give --link-gbps G (and --workers N) for the what-if")
        pred = from_cost(cost, args.workers, link, **caps)
    if args.comm_json:
        write_text_atomic(Path(args.comm_json), json.dumps(pred.to_dict(), indent=2) + "\n")
    if args.quiet:
        print(pred.headline())
    else:
        _console(args).print(render_comm(pred, _table_width(args)))


def cmd_report(args: argparse.Namespace) -> int:
    """Reports of stored runs: one run or sweep, a comparison, or a profile joined with a cost."""
    from layertime.result import Run

    if not (args.html or args.plot or args.trace):
        raise LayertimeError("report needs --html PATH, --plot PATH or --trace PATH")
    _check_report_paths(args)
    with _store(args.db) as store:
        stored = [store.get(rid) for rid in args.ids]
    for st in stored:
        if st.result is None:
            why = f": {st.error}" if st.error else ""
            raise LayertimeError(f"run {st.id} ({st.kind}, {st.status}) has no result{why}")
    kinds = sorted(st.kind for st in stored)
    kw: dict[str, object] = {}
    traced: list[tuple[int, Run]] = []
    if len(stored) == 1 and kinds[0] in ("sweep", "cost"):
        obj: object = stored[0].result
        if kinds[0] == "sweep":
            kw = {"title": f"sweep {stored[0].id}", "status": stored[0].status}
    elif len(stored) == 1 and kinds[0] == "profile":
        obj = Run.from_dict(stored[0].result)
        traced = [(stored[0].id, obj)]
    elif len(stored) == 1 and kinds[0] == "bench-layers":
        obj = stored[0].result
        if stored[0].result.get("in_situ"):
            traced = [(stored[0].id, Run.from_dict(stored[0].result["in_situ"]))]
    elif len(stored) == 1:
        raise LayertimeError(f"run {stored[0].id} is a {kinds[0]} run: no report for it yet")
    elif kinds == ["cost", "profile"]:
        prof = next(st for st in stored if st.kind == "profile")
        obj = Run.from_dict(prof.result)
        kw = {"cost": next(st for st in stored if st.kind == "cost").result}
        traced = [(prof.id, obj)]
    else:
        for st in stored:
            if st.kind != "profile":
                raise LayertimeError(f"run {st.id} is a {st.kind} run; a comparison needs "
                                     "finished profiles (or one profile and one cost estimate)")
        from layertime.render.views import compare_view

        runs = [Run.from_dict(st.result) for st in stored]
        traced = [(st.id, r) for st, r in zip(stored, runs)]
        obj = compare_view(runs, [f"#{i} {r.model} b{r.batch_size} {r.device}" for i, r in traced])
    if args.trace and not traced:
        raise LayertimeError(f"--trace needs profile runs; run {stored[0].id} is a "
                             f"{stored[0].kind} run")
    trace, args.trace = args.trace, None
    _write_reports(args, obj, **kw)
    if trace:
        from layertime.render.trace import write_trace

        write_trace([r for _, r in traced], trace,
                    [f"#{i} {r.model} b{r.batch_size} {r.device}" for i, r in traced])
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from layertime.models import available

    for name in available():
        print(name)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from layertime.render.table import render
    from layertime.result import Run

    _console(args).print(render(Run.load(args.path), _table_width(args)))
    return 0


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
    parser = build_parser()
    args = parser.parse_args(argv)
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return rc
    except LayertimeError as e:
        if args.debug:
            raise
        print(f"layertime: error: {e}", file=sys.stderr)
        return EXIT_ERROR
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
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"layertime: internal error: {type(e).__name__}: {first} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
