"""Writing report files: checked up front, written atomically (temporary file, then rename)."""

from __future__ import annotations

import os
from pathlib import Path

from layertime.errors import LayertimeError


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` through a temporary file in the same folder and a rename."""
    # A name of our own beside the target (not mkstemp: its 0600 mode would stick).
    tmp: Path | None = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    assert tmp is not None
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise LayertimeError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def check_output(path: str | Path, *, plot: bool = False) -> None:
    """Fail early (before a long measurement) if ``path`` clearly cannot be written."""
    p = Path(path)
    if plot:
        from layertime.render.plot import plot_format

        plot_format(p)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise LayertimeError(f"cannot write {p}: it is a directory")
    if not parent.is_dir():
        raise LayertimeError(f"cannot write {p}: no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LayertimeError(f"cannot write {p}: {parent} is not writable")
