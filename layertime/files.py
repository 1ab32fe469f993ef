"""Files the library writes and reads: atomic writes, and text read back with one-line errors.

Every file is written to a temporary name beside its target (our own name,
not ``mkstemp``'s, whose 0600 mode would stick) and renamed over it, so a
failure leaves nothing half-written.
"""

from __future__ import annotations

import os
from pathlib import Path

from layertime.errors import LayertimeError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    tmp: Path | None = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:  # type: ignore[arg-type]
            f.write(data)
        os.replace(tmp, target)  # type: ignore[arg-type]
        tmp = None
    except OSError as e:
        raise LayertimeError(f"cannot write {target}: {e.strerror or e}") from e
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, as :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; a missing or unreadable file is a one-line error."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        raise LayertimeError(f"cannot read {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise LayertimeError(f"not a layertime {what}: {p} is not UTF-8 text") from e
