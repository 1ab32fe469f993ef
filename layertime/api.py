"""The public API's one addition over the layers below: a :class:`Profiler` that can also
print its result as a table (collectors never render, so the renderer is joined here)."""

from __future__ import annotations

from layertime.measure import loop
from layertime.render.table import render_text


class Profiler(loop.Profiler):
    """:class:`layertime.measure.loop.Profiler` (profile your own training loop), with
    :meth:`report`."""

    def report(self, width: int = 120) -> str:
        """The result as a plain-text table (headline first)."""
        return render_text(self.result(), width=width)
