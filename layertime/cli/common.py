"""What the commands share: the workload and step count from flags, the stored
configuration, progress bars, consoles, the store, and the report files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from layertime.cli.parser import DEFAULT_BUDGET_S, DEFAULT_STEPS
from layertime.errors import BadValue, LayertimeError, OutOfMemory

if TYPE_CHECKING:  # the commands import torch only when they run, so --help stays fast
    from layertime.measure.runner import MeasureOptions
    from layertime.store import Store
    from layertime.workload import WorkloadSpec

#: argparse fields that are presentation or plumbing, not configuration.
NOT_CONFIG = {"debug", "json", "quiet", "width", "db", "no_store", "command",
              "html", "plot", "trace", "ddp_timeout", "command_name"}


def workload_of(args: argparse.Namespace, model: str | None = None) -> WorkloadSpec:
    """The workload the flags describe (flags a command lacks take their defaults); an
    ``hf:`` model's ``--config`` overrides travel with its name (``ModelRef``)."""
    from layertime.models import ModelRef
    from layertime.workload import WorkloadSpec

    return WorkloadSpec.create(
        ModelRef(model if model is not None else args.model, tuple(args.config)),
        batch_size=args.batch_size,
        input_shape=args.input_shape,
        image_size=args.image_size,
        seq_len=args.seq_len,
        num_classes=args.num_classes,
        device=getattr(args, "device", "auto"),
        optimizer=getattr(args, "optimizer", "sgd"),
        dtype=args.dtype,
        amp=getattr(args, "amp", None),
        seed=getattr(args, "seed", 0),
    )


def oom_with_hint(e: OutOfMemory, workload: WorkloadSpec, db: str | None = None) -> OutOfMemory:
    """The out-of-memory error again, its batch hint for this machine's free memory from
    the bytes per sample a stored run of the same configuration measured (any batch
    size), else from the cost model's memory estimate (kept as it was when both fail)."""
    from layertime.cost.count.memory import batch_that_fits, hint_text, measured_fit
    from layertime.measure.environment import free_memory_bytes
    from layertime.workload import resolve_device

    try:
        free = free_memory_bytes(resolve_device(workload.device))
        if free is None or not e.batch_size:
            return e
        fit = None
        found = _measured_run(workload, e.device_type, db)
        if found is not None:
            fit = measured_fit(found[1], free, f"run {found[0]} at batch {found[1].batch_size}")
        if fit is None:
            fit = batch_that_fits(workload, free)
    except LayertimeError:
        return e
    return e.with_hint(hint_text(fit, e.batch_size))


def _measured_run(workload: WorkloadSpec, device_type: str,
                  db: str | None) -> tuple[int, Any] | None:
    """The newest stored profile of this workload (any batch size) on this kind of device
    that measured memory: (its id, its Run), or None."""
    import sqlite3

    from layertime.results.run import Run

    want = workload.to_dict()
    keys = ("model", "model_config", "input", "dtype", "amp", "optimizer")
    try:
        with open_store(db) as store:
            stored = store.list(kind="profile", limit=200)
    except (LayertimeError, OSError, sqlite3.Error):
        return None
    for s in stored:
        got = (s.config or {}).get("workload") or {}
        if s.status != "ok" or not s.result or "memory" not in s.result or \
                not str(s.device or "").startswith(device_type) or \
                any(got.get(k) != want.get(k) for k in keys):
            continue
        try:
            return s.id, Run.from_dict(s.result)
        except LayertimeError:
            continue
    return None


def measure_options(args: argparse.Namespace) -> MeasureOptions:
    """--steps, --time-budget, or the default: up to 3 pairs within a 12 s budget;
    --no-memory leaves out the memory steps."""
    from layertime.measure.runner import MeasureOptions

    memory = getattr(args, "memory", True)
    if args.steps is not None:
        return MeasureOptions(steps=args.steps, warmup_steps=args.warmup, memory=memory)
    if args.time_budget is not None:
        return MeasureOptions(warmup_steps=args.warmup, time_budget_s=args.time_budget,
                              memory=memory)
    return MeasureOptions(steps=DEFAULT_STEPS, warmup_steps=args.warmup,
                          time_budget_s=DEFAULT_BUDGET_S, max_steps=DEFAULT_STEPS, memory=memory)


def stored_config(args: argparse.Namespace, workload: WorkloadSpec | None = None) -> dict[str, Any]:
    """What the store keeps as a run's configuration: its flags, and its workload."""
    config = {k: v for k, v in vars(args).items() if k not in NOT_CONFIG}
    if workload is not None:
        config["workload"] = workload.to_dict()
    return config


def open_store(path: str | None) -> Store:
    from layertime.store import Store

    return Store(path)


def table_width(args: argparse.Namespace) -> int | None:
    """--width, else the terminal's width; None when stdout is a pipe or a file
    (tables then take the width they need, nothing wraps)."""
    if getattr(args, "width", None):
        return int(args.width)
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size().columns
    return None


def console(args: argparse.Namespace) -> Any:
    """A console for stdout at the table width: wrapping prose at a terminal's width,
    never wrapping in a pipe."""
    from rich.console import Console

    width = table_width(args)
    if width is None:
        return Console(width=100_000, soft_wrap=True)
    return Console(width=width)


def compile_options(args: argparse.Namespace) -> Any:
    """``--compile``/``--compile-mode``: the CompileOptions, or None for an eager run."""
    if not (getattr(args, "compile", False) or getattr(args, "compile_mode", None)):
        return None
    from layertime.measure.compiled.collector import CompileOptions

    return CompileOptions(mode=args.compile_mode)


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage (warm-up, measure) on stderr, or nothing."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def sweep_progress(enabled: bool) -> Iterator[Callable[[int, int, str, float | None], None]]:
    """One progress bar over a sweep's configurations, or nothing."""
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


def check_report_paths(args: argparse.Namespace) -> None:
    """Refuse an output path that cannot be written before any long work."""
    from layertime.render.output import check_output

    for flag in ("html", "plot", "trace"):
        path = getattr(args, flag, None)
        if path:
            check_output(path, plot=flag == "plot")


def wrote(args: argparse.Namespace, path: object) -> None:
    """Say on stderr that a file was written (``wrote PATH``), unless --quiet."""
    if not getattr(args, "quiet", False):
        print(f"wrote {path}", file=sys.stderr)


def write_reports(args: argparse.Namespace, obj: object, *, trace: bool = True,
                  **kw: object) -> None:
    """Write the --html/--plot (and, unless ``trace`` is False, --trace) files of ``obj``."""
    if getattr(args, "html", None):
        from layertime.render.html import write_html

        write_html(obj, args.html, **kw)
        wrote(args, args.html)
    if getattr(args, "plot", None):
        from layertime.render.plot import write_plot

        write_plot(obj, args.plot, **kw)
        wrote(args, args.plot)
    if trace and getattr(args, "trace", None):
        from layertime.render.trace import write_trace
        from layertime.results.run import Run

        if not isinstance(obj, Run):
            raise BadValue("--trace needs one profile run")
        write_trace(obj, args.trace)
        wrote(args, args.trace)


def write_json(args: argparse.Namespace, path: str, data: Any) -> None:
    """``data`` as indented JSON, written atomically, and said (``wrote PATH``)."""
    import json

    from layertime.files import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    wrote(args, path)
