"""What both framework callbacks share: options, the window's end, and its report.

The library never prints unless asked: a callback prints the table (on rank
0, at the end of the window) and announces each file it wrote only with
``verbose=True``, its default, since adding the callback to a trainer is the
request to see where the time goes; ``verbose=False`` prints nothing and
leaves the result in ``callback.result``.  A report that cannot be written
does not stop the training: it becomes one warning, and the result stays.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from layertime.errors import LayertimeError, LayertimeWarning
from layertime.measure.compiled.detect import (
    compiled_in_place,
    compiled_inner,
    compiled_parts,
    describe_parts,
)
from layertime.measure.window import StepWindow, check_window
from layertime.results.run import Run

#: Default window: a few steps after the start (the first ones carry set-up).
DEFAULT_START_STEP = 5
DEFAULT_STEPS = 10


def compiled_reason(model: Any) -> str | None:
    """Why a model handed to a trainer cannot be timed per layer because of
    ``torch.compile`` (one line), or None: module hooks do not run inside compiled code."""
    if model is None or not hasattr(model, "named_modules"):
        return None
    tail = ("module hooks do not run inside compiled graphs, so layers cannot be timed; "
            "train it uncompiled while profiling (layertime profile --compile attributes "
            "a compiled model)")
    if compiled_inner(model) is not None or compiled_in_place(model):
        return f"torch.compile: the model handed to the trainer is compiled; {tail}"
    parts = compiled_parts(model)
    if parts:
        return f"torch.compile: the model has compiled parts ({describe_parts(parts)}); {tail}"
    return None


class WindowCallback:
    """The framework-independent half of a layertime callback (a mixin).

    Subclasses hold the framework's hooks; they create ``self.window`` when
    training starts, call ``self.window.boundary`` at each optimizer step's
    end, and ``self.finish()`` when the window closes or training ends.
    After that every hook of theirs named in ``_HOOKS`` is replaced, on this
    instance, by the framework's own empty hook: a step after the window runs
    no layertime code.
    """

    #: The framework's callback base class and the hooks this callback defines.
    _BASE: type = object
    _HOOKS: tuple[str, ...] = ()

    def __init__(
        self,
        start_step: int = DEFAULT_START_STEP,
        steps: int = DEFAULT_STEPS,
        *,
        json: str | Path | None = None,
        html: str | Path | None = None,
        plot: str | Path | None = None,
        trace: str | Path | None = None,
        store: bool | str | Path = False,
        verbose: bool = True,
        width: int | None = None,
        name: str | None = None,
    ) -> None:
        # Validate now, before any training: a bad value is one clear error.
        check_window(start_step, steps)
        self.start_step = start_step
        self.steps = steps
        self.outputs: dict[str, Path] = {
            k: Path(v) for k, v in (("json", json), ("html", html), ("plot", plot),
                                    ("trace", trace)) if v is not None
        }
        from layertime.render.output import check_output

        for flag, path in self.outputs.items():
            check_output(path, plot=flag == "plot")
        self.store = store
        self.verbose = verbose
        self.width = width
        self.name = name
        #: The window's Run once it closed (None before, or when nothing was profiled).
        self.result: Run | None = None
        #: Why nothing was profiled (an unsupported strategy, training too short), one line.
        self.skipped: str | None = None
        #: Problems met after measuring (a report that could not be written), one line each.
        self.problems: list[str] = []
        #: Where ``store`` kept the run: its id, or None.
        self.stored_id: int | None = None
        self.window: StepWindow | None = None

    # -- the end ---------------------------------------------------------------
    def _rank_zero(self) -> bool:
        return True

    def _run_meta(self) -> dict[str, Any]:
        """``optimizer``, ``amp`` and ``warnings`` for the Run (per framework)."""
        return {}

    def _source(self) -> str:
        return "callback"

    def _detach(self) -> None:
        """Replace this instance's hooks by the framework's empty ones."""
        for hook in self._HOOKS:
            base = getattr(self._BASE, hook, None)
            if base is not None:
                setattr(self, hook, base.__get__(self, type(self)))

    def skip(self, reason: str) -> None:
        """Profile nothing: say why once (rank 0), and get out of the training's way."""
        self.skipped = reason
        if self.window is not None:
            self.window.close()
        self._detach()
        if self._rank_zero():
            warnings.warn(f"layertime: {reason}", LayertimeWarning, stacklevel=2)

    def finish(self, *, report: bool = True) -> None:
        """Close the window, build the result and (rank 0, when asked) report it."""
        window = self.window
        try:
            if window is not None:
                window.close()
        finally:
            self._detach()
        if window is None or self.skipped is not None:
            return
        if window.profiled_steps == 0:
            self.skipped = (
                f"no step profiled: training stopped before the window (start_step="
                f"{self.start_step}, {self.steps} steps) had a traced step"
            )
            if self._rank_zero():
                warnings.warn(f"layertime: {self.skipped}", LayertimeWarning, stacklevel=2)
            return
        self.result = window.result(**self._run_meta())
        if report and self._rank_zero():
            self._report(self.result)

    def _report(self, run: Run) -> None:
        if self.verbose:
            from rich.console import Console

            from layertime.render.table import render

            console = Console(width=self.width) if self.width else Console()
            console.print(render(run))
        writers: dict[str, Callable[[Run, Path], object]] = {
            "json": lambda r, p: r.save(p),
            "html": _write_html,
            "plot": _write_plot,
            "trace": _write_trace,
        }
        for flag, path in self.outputs.items():
            try:
                writers[flag](run, path)
            except LayertimeError as e:
                self._problem(f"{e} (the result is in callback.result)")
            else:
                self._announce(f"wrote {path} ({flag})")
        if self.store:
            self._store(run)

    def _store(self, run: Run) -> None:
        from layertime.store import Store

        config: Mapping[str, Any] = {
            "source": self._source(), "model": run.model, "start_step": self.start_step,
            "steps": self.steps, "batch_size": run.batch_size, "amp": run.amp,
            "micro_batches": run.micro_batches,
        }
        try:
            path = None if isinstance(self.store, bool) else Path(self.store)
            with Store(path) as store:
                self.stored_id = store.add(
                    "profile", model=run.model, config=config, result=run.to_dict(),
                    batch_size=run.batch_size, device=run.device,
                )
                where = store.path
        except LayertimeError as e:
            self._problem(f"{e} (the result is in callback.result)")
        else:
            self._announce(f"stored as run {self.stored_id} in {where}")

    def _problem(self, line: str) -> None:
        self.problems.append(line)
        warnings.warn(f"layertime: {line}", LayertimeWarning, stacklevel=3)

    def _announce(self, line: str) -> None:
        if self.verbose:
            print(f"layertime: {line}", file=sys.stderr)


def _write_html(run: Run, path: Path) -> None:
    from layertime.render.html import write_html

    write_html(run, path)


def _write_plot(run: Run, path: Path) -> None:
    from layertime.render.plot import write_plot

    write_plot(run, path)


def _write_trace(run: Run, path: Path) -> None:
    from layertime.render.trace import write_trace

    write_trace(run, path)
