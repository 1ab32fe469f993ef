"""The ``layertime`` command line: its subcommands and their flags.

Flags that describe the workload are added by one function
(:func:`workload_flags`), so every command that runs or counts a model takes
them with the same names, types, defaults and help; each command picks the
ones that apply to it.
"""

from __future__ import annotations

import argparse
from typing import Any

from layertime.results.compiled import COMPILE_MODES
from layertime.taxonomy import AMP_NAMES, DTYPE_NAMES, OPTIMIZERS

EXIT_USAGE = 2
#: Without --steps or --time-budget: this many pairs, fewer when they would take
#: longer than the budget, judged from the warm-up step (at least one).  A first
#: `layertime profile alexnet` (batch 128, ~1.9 s a step on 2 quiet cores) still
#: gets 3 pairs, and answers in ~17 s; on a loaded machine, where a step takes
#: twice as long, 1 pair keeps it under 30 s.  One pair's shares stay within the
#: benchmark's repeatability: alexnet's conv share over 9 single steps spanned
#: 1.3 points (64.2-65.5%), against 0.5 over three 3-pair profiles and the
#: 3-point target (benchmarks/attribution.py --models alexnet --batch-sizes 128
#: --steps 3).
DEFAULT_STEPS = 3
DEFAULT_BUDGET_S = 12.0
MODEL_HELP = "alexnet, alexnet2012, vgg16, timm:NAME, hf:gpt2, hf:llama, file.py:fn, pkg.mod:fn"
DESCRIPTION = """\
Where does the time of training a neural network go, layer by layer? layertime
runs real training steps (forward, backward, optimizer update) on synthetic data,
charges every op to the layer and phase that caused it, and prints a table whose
rows add up to the step, with the one-line answer on top (in AlexNet: conv or
fully connected layers?). It also counts FLOPs, bytes and memory per layer and
predicts the step on other devices (cost), benchmarks layers alone (bench-layers),
sweeps batch, image and sequence sizes (sweep) and keeps every run in a local store
(runs). Transformers (hf:NAME, --seq-len) answer attention against the MLP."""

EPILOG = "layertime COMMAND --help shows a command's flags; the README has examples."


def shape(text: str) -> tuple[int, ...]:
    try:
        # Every part must be a number: "3,x" or "3,,64" is an error, not (3,) or (3, 64).
        dims = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: expected sizes like 3,224,224")
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: every size must be >= 1")
    return dims


def _whole(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if v < least:
        raise argparse.ArgumentTypeError(f"{v} must be at least {least}")
    return v


def positive_int(text: str) -> int:
    return _whole(text, 1)


def nonneg_int(text: str) -> int:
    return _whole(text, 0)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"layertime: error: {message}\n")


class DefaultsFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or default is False
            or default == []
            or not action.option_strings
        ):
            return text
        return f"{text} (default: {default})"


class SubParser(Parser):
    """A subcommand's parser: also takes ``--debug``, so ``layertime profile X --debug`` works."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )


def workload_flags(
    p: argparse.ArgumentParser,
    *,
    model: bool = True,
    device: bool = True,
    optimizer: bool = True,
    amp: bool = True,
    seed: bool = True,
) -> None:
    """The flags of :class:`~layertime.workload.WorkloadSpec`, the ones a command takes."""
    if model:
        p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--batch-size", "-b", type=positive_int, default=128, metavar="N",
                   help="samples per step (per rank with --ddp)")
    p.add_argument("--image-size", type=positive_int, metavar="N",
                   help="H=W of a 3-channel input (default: the model's own, mostly 224)")
    p.add_argument("--input-shape", type=shape, metavar="C,H,W",
                   help="one sample's shape, e.g. 3,64,64 (default: 3 x the image size)")
    p.add_argument("--seq-len", type=positive_int, metavar="N",
                   help="token ids per sequence (hf: models; default 128)")
    config_flag(p)
    p.add_argument("--num-classes", type=positive_int, default=1000, metavar="N",
                   help="classes of the model's output (image models)")
    if device:
        p.add_argument("--device", default="auto",
                       help="auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N")
    if optimizer:
        p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                       help="sgd: momentum 0.9, weight decay 5e-4; adam, adamw")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES,
                   help="parameters' and inputs' dtype")
    if amp:
        p.add_argument("--amp", choices=AMP_NAMES,
                       help="automatic mixed precision (default: off)")
    if seed:
        p.add_argument("--seed", type=int, default=0, metavar="N",
                       help="seed of the random weights and the synthetic batch")


def config_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="hf: models: override a config field, e.g. num_hidden_layers=2 "
                   "(repeatable)")


def report_flags(p: argparse.ArgumentParser, *, trace: bool = False) -> None:
    p.add_argument("--html", metavar="PATH", help="write a self-contained HTML report")
    p.add_argument("--plot", metavar="PATH", help="write the charts as an image (.png or .svg)")
    if trace:
        p.add_argument("--trace", metavar="PATH", help="write a Chrome trace (open in Perfetto)")


def store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    p.add_argument("--no-store", action="store_true", help="do not keep this run in the database")


def width_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=positive_int, metavar="COLUMNS",
                   help="table width (default: the terminal's; in a pipe, what the table needs)")


def ddp_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ddp", action="store_true",
                   help="one rank of a torchrun job (DistributedDataParallel); batch size per rank")
    p.add_argument("--nproc", type=positive_int, metavar="N",
                   help="start N ranks on this machine with torchrun (implies --ddp)")
    p.add_argument("--ddp-timeout", type=positive_float, default=120.0, metavar="SECONDS",
                   help="a rank that hangs fails the run after this long (default 120)")
    p.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"),
                   help="torch.distributed backend (auto: nccl on CUDA, gloo on the CPU)")
    sharding_flags(p.add_argument_group("sharded training (with --nproc N, or under torchrun)"))


def compile_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true",
                   help="profile torch.compile(model): compiled kernels charged to their layers")
    p.add_argument("--compile-mode", choices=COMPILE_MODES,
                   help="torch.compile mode (implies --compile)")


def comm_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data-parallel what-if (ring all-reduce of DDP's gradient buckets)")
    g.add_argument("--workers", type=positive_int, metavar="N", help="data-parallel workers")
    g.add_argument("--link-gbps", type=positive_float, metavar="G",
                   help="link bandwidth, Gbit/s (sharded: the data-parallel group's; the "
                   "tensor-parallel group's is a device profile's NVLink, else this one)")
    g.add_argument("--link-latency-us", type=float, metavar="US",
                   help="link latency per message, µs (default 5, or the run's measured one)")
    g.add_argument("--bucket-cap-mb", type=positive_float, default=25.0, metavar="MB",
                   help="DDP's bucket cap in MiB (default 25)")
    g.add_argument("--run", metavar="RUN.json", help="a measured run (profile --json): compare "
                   "with its communication, take its compute times, buckets and link "
                   "(MODEL defaults to its)")
    g.add_argument("--comm-json", metavar="PATH", help="write the what-if as JSON "
                   "(layertime.sharded/1 with --fsdp/--tp)")
    s = p.add_argument_group(
        "sharded what-if (FSDP2 and tensor parallelism: each layer's collectives, what hides)")
    s.add_argument("--nproc", type=positive_int, metavar="N",
                   help="ranks, as profile's --nproc: the sharded world size with --fsdp/--tp "
                   "(--workers is the same), DDP's what-if without")
    sharding_flags(s)


def sharding_flags(p: argparse.ArgumentParser | Any) -> None:
    """``--fsdp``, ``--tp K``, ``--reshard-after-forward``: the layout of
    ``layertime.workload.sharding.ShardingSpec``, the same on every command that takes it."""
    p.add_argument("--fsdp", action="store_true",
                   help="FSDP2: shard every transformer block (else each top-level child) and "
                   "the root over the data-parallel ranks")
    p.add_argument("--tp", type=positive_int, metavar="K",
                   help="tensor parallelism over K ranks (the model's column/row-wise plan); "
                   "with --fsdp, 2-D: N = K x M")
    p.add_argument("--reshard-after-forward", action=argparse.BooleanOptionalAction,
                   default=True,
                   help="FSDP2 frees each unit's gathered parameters after its forward and "
                   "gathers them again for its backward (default: on)")


def _profile(sub: Any) -> None:
    p = sub.add_parser("profile", help="measure a training step, layer by layer")
    workload_flags(p)
    p.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help=f"measured plain/traced pairs (default {DEFAULT_STEPS}, fewer if a pair takes over "
        f"{DEFAULT_BUDGET_S / DEFAULT_STEPS:.0f} s)",
    )
    p.add_argument("--warmup", type=nonneg_int, default=1, metavar="N",
                   help="warm-up steps (default 1)")
    p.add_argument(
        "--time-budget", type=positive_float, metavar="SECONDS",
        help="as many pairs as fit in about this long, at most 50 (instead of --steps)"
    )
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (layertime.run/1)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the headline")
    width_flag(p)
    report_flags(p, trace=True)
    store_flags(p)
    ddp_flags(p)
    p.add_argument("--predict", metavar="PROFILE",
                   help="beside the measurement, the roofline estimate on this device profile")
    p.add_argument("--cost", action="store_true",
                   help="beside the measurement, each layer's share of FLOPs and memory")
    p.add_argument("--profiles", metavar="FILE.toml", help="extra device profiles for --predict")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="leave out the two untimed steps that measure memory per layer "
                   "(saved activations, the peak)")
    compile_flags(p)
    p.set_defaults(command_name="profile")


def _sweep(sub: Any) -> None:
    sw = sub.add_parser("sweep", help="profile every combination of the given axes")
    sw.add_argument("models", help="model name(s), comma-separated")
    sw.add_argument("--batch-sizes", required=True, metavar="N,N",
                    help="batch sizes to measure, e.g. 1,8,32,128 (required)")
    sw.add_argument("--image-sizes", metavar="N,N",
                    help="image sizes, e.g. 224,227 (default: each model's own)")
    sw.add_argument("--seq-lens", metavar="N,N",
                    help="token models (hf:...): e.g. 128,256,512,1024")
    config_flag(sw)
    sw.add_argument("--devices", default="auto", help="devices, e.g. cpu,cuda")
    sw.add_argument("--dtypes", default="float32", help="dtypes, e.g. float32,bfloat16")
    sw.add_argument("--optimizers", default="sgd", help="optimizers, e.g. sgd,adamw")
    sw.add_argument("--steps", type=positive_int, default=3,
                    help="measured plain/traced pairs per configuration")
    sw.add_argument("--warmup", type=nonneg_int, default=1,
                    help="warm-up steps per configuration")
    sw.add_argument("--force", action="store_true", help="measure again what is stored")
    sw.add_argument("--json", metavar="PATH", help="write the sweep summary as JSON")
    report_flags(sw)
    width_flag(sw)
    sw.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    sw.set_defaults(command_name="sweep")


def _stored_commands(sub: Any) -> None:
    r = sub.add_parser("runs", help="stored runs, newest first")
    r.add_argument("action", nargs="?", choices=("list", "show", "export"), default="list",
                   help="list (default), show ID, or export (CSV)")
    r.add_argument("id", nargs="?", type=int, help="run id (for show)")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--csv", metavar="PATH", help="export: write CSV here")
    r.add_argument("--limit", type=positive_int, metavar="N",
                   help="only the newest N runs (default: all)")
    width_flag(r)
    r.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    r.set_defaults(command_name="runs")

    c = sub.add_parser("compare", help="two or more stored runs side by side")
    c.add_argument("ids", nargs="+", type=int, metavar="ID", help="stored profile runs")
    width_flag(c)
    c.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    c.set_defaults(command_name="compare")

    rp = sub.add_parser(
        "report", help="HTML report, plot or trace of stored runs (one: a run or sweep; several: "
        "a comparison; a profile and a cost estimate: joined)"
    )
    rp.add_argument("ids", nargs="+", type=int, metavar="ID",
                    help="stored runs (layertime runs lists them)")
    report_flags(rp, trace=True)
    rp.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    rp.set_defaults(command_name="report")


def _attribute(sub: Any) -> None:
    at = sub.add_parser(
        "attribute", help="attribute trace files recorded with torch.profiler, layer by layer",
        description="Attribute Chrome/Kineto traces recorded elsewhere with the stock profiler "
        "(torch.profiler with with_stack=True, or Lightning's PyTorchProfiler): every op of "
        "each ProfilerStep charged to (layer, phase), rows adding up to the step, as profile "
        "does. TRACE is a .json or .json.gz file or a tensorboard_trace_handler folder; "
        "several ranks' files give each rank's run and the merged one.")
    at.add_argument("traces", nargs="+", metavar="TRACE",
                    help="trace files (.json, .json.gz) or folders of them")
    named = at.add_mutually_exclusive_group()
    named.add_argument("--model", metavar="NAME",
                       help="name the layers by this model's dotted paths (any name profile "
                       "takes: " + MODEL_HELP + ")")
    named.add_argument("--model-file", metavar="FILE.py:FN",
                       help="name the layers by the model FN in FILE.py returns")
    config_flag(at)
    at.add_argument("--num-classes", type=positive_int, default=1000, metavar="N",
                    help="classes of --model's output, as it was trained")
    at.add_argument("--seq-len", type=positive_int, metavar="N",
                    help="token ids per sequence to build --model with (hf: models)")
    at.add_argument("--image-size", type=positive_int, metavar="N",
                    help="H=W of the image to build --model with")
    at.add_argument("--rank", type=nonneg_int, metavar="N",
                    help="several ranks' traces: show (and write) rank N's run, not the merged one")
    at.add_argument("--json", metavar="PATH", help="write the result as JSON (layertime.run/1)")
    at.add_argument("--quiet", "-q", action="store_true", help="print only the headline")
    width_flag(at)
    report_flags(at, trace=True)
    store_flags(at)
    at.set_defaults(command_name="attribute")


def _bench_layers(sub: Any) -> None:
    bl = sub.add_parser("bench-layers", help="each layer alone: forward, input- and weight-gradient")
    workload_flags(bl, optimizer=False, amp=False)
    bl.add_argument("--repeats", type=positive_int, default=5, help="timed runs per layer (5)")
    bl.add_argument("--warmup", type=nonneg_int, default=2, help="untimed runs per layer (2)")
    bl.add_argument("--steps", type=positive_int, default=3, help="in-situ profile steps (3)")
    bl.add_argument("--no-compare", action="store_true", help="skip the in-situ profile")
    bl.add_argument("--json", metavar="PATH", help="write the benchmark as JSON")
    width_flag(bl)
    store_flags(bl)
    bl.set_defaults(command_name="bench-layers")


def _cost(sub: Any) -> None:
    co = sub.add_parser(
        "cost", help="count FLOPs, bytes and memory of a training step per layer (no GPU needed)"
    )
    co.add_argument("model", nargs="?", help=MODEL_HELP + " (with --run: the run's, by default)")
    workload_flags(co, model=False, device=False, amp=False, seed=False)
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
    report_flags(co)
    co.add_argument("--quiet", "-q", action="store_true", help="print only the headline")
    width_flag(co)
    comm_flags(co)
    store_flags(co)
    co.set_defaults(command_name="cost")


def _calibrate(sub: Any) -> None:
    ca = sub.add_parser("calibrate", help="measure this machine and save it as a device profile")
    ca.add_argument("--name", help="profile name (default local-cpu or local-<gpu>)")
    ca.add_argument("--out", metavar="PATH",
                    help="TOML file to write (default $XDG_CONFIG_HOME/layertime/devices.toml)")
    ca.add_argument("--matmul-size", type=positive_int, metavar="N",
                    help="largest matmul side (default 2048 on the CPU, 8192 on CUDA)")
    ca.add_argument("--memory-mb", type=positive_float, metavar="MB",
                    help="bytes per buffer of the bandwidth test (default 256 CPU, 1024 CUDA)")
    ca.add_argument("--repeats", type=positive_int, default=5, help="timed runs (best of; 5)")
    ca.add_argument("--no-grid", action="store_true",
                    help="skip the shape grid (GEMM, conv and memory-bound ops by shape, the "
                         "fixed cost per op): peaks only, as before")
    ca.add_argument("--fit", metavar="MODEL",
                    help="also profile MODEL and fit each kind's efficiency to its times")
    ca.add_argument("--from-run", metavar="ID|RUN.json",
                    help="fit to a stored profile run (or a run JSON) instead of profiling")
    ca.add_argument("--min-share", type=float, default=0.01, metavar="FRACTION",
                    help="kinds under this share of the step keep the default (0.01)")
    workload_flags(ca, model=False, amp=False)
    ca.add_argument("--steps", type=positive_int, default=3,
                    help="measured pairs of the --fit profile")
    ca.add_argument("--warmup", type=nonneg_int, default=1, help="warm-up steps of --fit")
    ca.add_argument("--json", metavar="PATH", help="write the measurement (and fit) as JSON")
    width_flag(ca)
    store_flags(ca)
    ca.set_defaults(command_name="calibrate")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags (``command_name`` says which one was given)."""
    from importlib.metadata import PackageNotFoundError, version

    parser = Parser(prog="layertime", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    try:
        ver = version("layertime")
    except PackageNotFoundError:
        ver = "unknown (not installed)"
    parser.add_argument("--version", action="version", version=f"layertime {ver}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=SubParser)
    _profile(sub)
    _attribute(sub)
    _sweep(sub)
    _stored_commands(sub)
    _bench_layers(sub)
    _cost(sub)
    _calibrate(sub)
    sub.add_parser("models", help="list the model names layertime knows").set_defaults(
        command_name="models")
    s = sub.add_parser("show", help="render a saved run (a JSON file) or a stored one (its id)")
    s.add_argument("path", metavar="RUN", help="a JSON file (--json of any command) or a "
                   "stored run's id (layertime runs lists them)")
    width_flag(s)
    s.add_argument("--db", metavar="PATH", help="database (default $LAYERTIME_DB or data dir)")
    s.set_defaults(command_name="show")
    return parser
