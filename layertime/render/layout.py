"""Fit a table to a width without breaking a name or cutting a number.

Every terminal table of layertime is laid out here.  Cells are strings made
by :mod:`layertime.render.fmt`; a cell is never wrapped.  When a table is
wider than the width it is given, the columns marked droppable are hidden,
least important first; if it is still too wide, the name column is shortened
in the middle (``encoder.layer.1…output.dense``).  Both are said in a note
under the table, with the width that shows everything.  With no width (output
to a pipe or a file) a table takes the width it needs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.text import Text

#: Spaces between columns, and before the first.
GAP = 2
LEAD = 1
#: A name column is never shortened below this many characters.
MIN_NAME = 14
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """One column: its header, alignment, and how it gives way to a narrow width.

    ``drop``: 0 for a column always shown; higher numbers are hidden first.
    ``name``: the column of layer names (left-aligned; shortened in the middle
    only when hiding columns is not enough).  ``shrink``: a text column (type
    names, never numbers) that may be narrowed to ``min_width``, its cells
    shortened at the end, at this priority among the ``drop`` ones.
    """

    header: str
    align: str = "right"
    drop: int = 0
    name: bool = False
    shrink: int = 0
    min_width: int = 8


@dataclass(frozen=True)
class Row:
    """One line of cells; ``bold`` for group and total lines; ``gap_before``
    leaves a blank line before it (a new group)."""

    cells: tuple[str, ...]
    bold: bool = False
    gap_before: bool = False


@dataclass
class Laid:
    """A laid-out table: its lines (text, bold) and the notes to print under it."""

    lines: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    width: int = 0

    def renderable(self) -> RenderableType:
        parts: list[RenderableType] = [
            Text(line, style="bold" if bold else "") for line, bold in self.lines
        ]
        parts += [Text(n, style="dim") for n in self.notes]
        return Group(*parts)

    def text(self) -> str:
        return "\n".join([line for line, _ in self.lines] + self.notes) + "\n"


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its middle replaced by an ellipsis
    (leading spaces, the indentation of a row, are kept)."""
    if len(text) <= width:
        return text
    indent = len(text) - len(text.lstrip(" "))
    body = text[indent:]
    room = width - indent - 1
    if room < 2:
        return text[:width]
    head = (room + 1) // 2
    tail = room - head
    return " " * indent + body[:head] + ELLIPSIS + (body[-tail:] if tail else "")


def _shorten_end(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + ELLIPSIS


def _total(widths: Sequence[int]) -> int:
    return LEAD + sum(widths) + GAP * (len(widths) - 1) if widths else 0


def lay_out(columns: Sequence[Column], rows: Sequence[Row], width: int | None) -> Laid:
    """Lay ``rows`` out under ``columns`` in at most ``width`` characters (None: any)."""
    cells = [list(r.cells) for r in rows]
    natural = [
        max([len(col.header)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)
    ]
    shown = list(range(len(columns)))
    widths = {i: natural[i] for i in shown}
    hidden: list[int] = []
    if width is not None:
        # Hide and narrow, most dispensable first, until the table fits.
        actions = sorted(
            [(c.drop, i, "hide") for i, c in enumerate(columns) if c.drop > 0]
            + [(c.shrink, i, "shrink") for i, c in enumerate(columns) if c.shrink > 0],
            key=lambda a: (-a[0], -a[1]),
        )
        for _, i, what in actions:
            if _total(list(widths.values())) <= width:
                break
            if i not in widths:
                continue
            if what == "hide":
                del widths[i]
                shown.remove(i)
                hidden.append(i)
            else:
                over = _total(list(widths.values())) - width
                widths[i] = max(columns[i].min_width, len(columns[i].header), widths[i] - over)
        for row_cells in cells:
            for i in shown:
                if columns[i].shrink and len(row_cells[i]) > widths[i]:
                    row_cells[i] = _shorten_end(row_cells[i], widths[i])
    shortened = False
    if width is not None:
        over = _total(list(widths.values())) - width
        name_cols = [i for i in shown if columns[i].name]
        if over > 0 and name_cols:
            i = name_cols[0]
            new = max(MIN_NAME, natural[i] - over)
            if new < natural[i]:
                widths[i] = new
                shortened = any(len(c[i]) > new for c in cells)
    laid = Laid()

    def line(values: Sequence[str]) -> str:
        out = []
        for i, v in zip(shown, values):
            w = widths[i]
            out.append(v.ljust(w) if columns[i].align == "left" else v.rjust(w))
        return (" " * LEAD + (" " * GAP).join(out)).rstrip()

    header = line([columns[i].header for i in shown])
    full = _total(list(widths.values()))
    laid.lines.append((header, True))
    laid.lines.append((" " * LEAD + "─" * (full - LEAD), False))
    for r, row_cells in zip(rows, cells):
        if r.gap_before:
            laid.lines.append(("", False))
        values = []
        for i in shown:
            v = row_cells[i]
            if columns[i].name and len(v) > widths[i]:
                v = shorten_middle(v, widths[i])
            values.append(v)
        laid.lines.append((line(values), r.bold))
    laid.width = full
    natural_total = _total(natural)
    if hidden:
        headers = ", ".join(columns[i].header for i in sorted(hidden))
        n = len(hidden)
        laid.notes.append(
            f"{n} column{'s' if n > 1 else ''} hidden to fit {width} columns ({headers}); "
            f"--width {natural_total} shows {'them' if n > 1 else 'it'}"
        )
    if shortened:
        laid.notes.append(
            f"names shortened in the middle (…) to fit {width} columns; --width "
            f"{natural_total} shows them whole"
        )
    return laid


def to_text(renderable: RenderableType, width: int | None) -> str:
    """Plain text with no colour (tests, reports): prose wraps at ``width``; with
    None nothing wraps, as in a pipe."""
    buf = io.StringIO()
    console = Console(file=buf, width=width or 100_000, color_system=None,
                      force_terminal=False, soft_wrap=width is None)
    console.print(renderable)
    return buf.getvalue()
