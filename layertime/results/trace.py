"""Where a run attributed from trace files came from (``Run.trace``): the files, the steps
found in them, how the modules were named, what the trace recorded.

Torch-free, like the rest of the result model; JSON in ``docs/schema.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How a trace's modules got their names: the Python tracer's ``Class_N`` tree, a model
#: layertime built (``--model``: dotted paths), or Lightning's ranges (dotted paths).
NAMINGS = ("class-index", "model", "lightning")


@dataclass(frozen=True)
class TraceSource:
    """The trace files a run was attributed from, and what they held."""

    files: tuple[str, ...]
    #: The steps attributed, as the trace names them (``ProfilerStep#3``, or Lightning's
    #: ``run_training_batch`` ranges numbered in trace order).
    steps: tuple[str, ...]
    #: One of :data:`NAMINGS`.
    naming: str
    #: ``--model``: the model whose module tree named the layers.
    model: str | None = None
    #: What the profiler recorded, when the file says (its ``with_stack`` and
    #: ``record_shapes`` fields; Lightning's files do not always).
    with_stack: bool | None = None
    record_shapes: bool | None = None
    #: The rank that recorded it (``distributedInfo``), None for one process or a merged run.
    rank: int | None = None

    def describe(self) -> str:
        """E.g. ``2 files, 3 steps (ProfilerStep#2 .. ProfilerStep#4), names from hf:gpt2``."""
        n = len(self.files)
        steps = (f"{self.steps[0]} .. {self.steps[-1]}" if len(self.steps) > 1
                 else self.steps[0] if self.steps else "none")
        naming = {"class-index": "names from the module tree (Class_N)",
                  "lightning": "names from Lightning's module ranges"}.get(
            self.naming, f"names from {self.model or 'the model'}")
        return (f"{n} trace file{'s' if n != 1 else ''}, {len(self.steps)} "
                f"step{'s' if len(self.steps) != 1 else ''} ({steps}), {naming}")
