"""The public API's additions over the layers below, where a collector meets a renderer
(collectors never render): a :class:`Profiler` that can also print its result as a table,
and :func:`trace_handler`, ``torch.profiler``'s ``on_trace_ready`` that attributes each
cycle's trace and prints it."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from layertime.measure import loop
from layertime.render.html import write_html
from layertime.render.plot import write_plot
from layertime.render.table import render_text
from layertime.results.run import Run


class Profiler(loop.Profiler):
    """:class:`layertime.measure.loop.Profiler` (profile your own training loop), with
    :meth:`report`."""

    def report(self, width: int = 120) -> str:
        """The result as a plain-text table (headline first)."""
        return render_text(self.result(), width=width)


class TraceHandler:
    """``on_trace_ready`` for ``torch.profiler.profile``: each active cycle's trace attributed
    per layer (``layertime attribute``), its table printed, its files written.

    ::

        with torch.profiler.profile(schedule=torch.profiler.schedule(wait=1, warmup=1,
                                    active=3), with_stack=True, record_shapes=True,
                                    on_trace_ready=layertime.trace_handler(model=model)) as p:
            for batch in loader:
                ...  # the usual step
                p.step()

    ``model`` (the ``nn.Module`` being trained, or a name layertime can build) names the
    rows by its dotted paths.  ``dir`` keeps each cycle's Chrome trace there (as
    ``tensorboard_trace_handler(dir)`` does), else it goes to a temporary file that is
    removed.  ``json``, ``html``, ``plot``: files to write for each cycle (a cycle after
    the first gets ``-<n>`` before the suffix).  ``verbose`` prints the table and each
    written file (to stdout; False prints nothing).  Every cycle's run is in ``runs``.
    """

    def __init__(self, model: Any = None, *, html: str | None = None, json: str | None = None,
                 plot: str | None = None, dir: str | None = None,  # noqa: A002
                 worker_name: str | None = None, verbose: bool = True, width: int = 120) -> None:
        self.model = model
        self.html, self.json, self.plot = html, json, plot
        self.dir = dir
        self.worker_name = worker_name
        self.verbose = verbose
        self.width = width
        self.runs: list[Run] = []

    def __call__(self, prof: Any) -> None:
        from layertime.measure.traces import attribute

        with tempfile.TemporaryDirectory(prefix="layertime-trace-") as tmp:
            folder = Path(self.dir) if self.dir else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            worker = self.worker_name or f"{socket.gethostname()}_{os.getpid()}"
            path = folder / f"{worker}.{time.time_ns()}.pt.trace.json"
            prof.export_chrome_trace(str(path))
            if self.dir and self.verbose:
                print(f"wrote {path}")
            run = attribute(path, self.model).run
        self.runs.append(run)
        if self.verbose:
            print(render_text(run, width=self.width))
        n = len(self.runs)
        for target, write in ((self.json, lambda p: run.save(p)),
                              (self.html, lambda p: write_html(run, p)),
                              (self.plot, lambda p: write_plot(run, p))):
            if target:
                out = _numbered(target, n)
                write(out)
                if self.verbose:
                    print(f"wrote {out}")

    @property
    def result(self) -> Run | None:
        """The last cycle's run (None before the first)."""
        return self.runs[-1] if self.runs else None


def trace_handler(model: Any = None, **options: Any) -> TraceHandler:
    """``torch.profiler.profile(on_trace_ready=layertime.trace_handler(model=...))``: see
    :class:`TraceHandler`."""
    return TraceHandler(model, **options)


def _numbered(path: str, n: int) -> str:
    """``a.html`` for the first cycle, ``a-2.html`` for the second, ..."""
    if n == 1:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{n}{p.suffix}"))
