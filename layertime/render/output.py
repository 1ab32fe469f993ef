"""Report files (``--html``, ``--plot``, ``--trace``): their paths checked before any long
work, so a measurement is never lost to a path that cannot be written."""

from __future__ import annotations

import os
from pathlib import Path

from layertime.errors import LayertimeError

#: Image formats a plot can be written in, by file suffix.
PLOT_FORMATS = {".png": "png", ".svg": "svg"}


def plot_format(path: str | Path) -> str:
    """``png`` or ``svg`` from the path's suffix; anything else is an error."""
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_FORMATS:
        raise LayertimeError(
            f"cannot plot to {path}: the file name must end in .png or .svg"
            + (f", not {suffix}" if suffix else "")
        )
    return PLOT_FORMATS[suffix]


def check_output(path: str | Path, *, plot: bool = False) -> None:
    """Fail early (before a long measurement) if ``path`` clearly cannot be written."""
    p = Path(path)
    if plot:
        plot_format(p)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise LayertimeError(f"cannot write {p}: it is a directory")
    if not parent.is_dir():
        raise LayertimeError(f"cannot write {p}: no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LayertimeError(f"cannot write {p}: {parent} is not writable")
