"""The one exception type the library raises for bad input or failed runs, and the
helpers that turn other exceptions into it (first lines, out-of-memory)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class LayertimeError(Exception):
    """A problem the user can fix: the message is one line, without a traceback."""


class BadValue(LayertimeError):
    """A flag's or an argument's value is wrong (an unknown model, device or profile
    name, a malformed list): the command line exits 2 for it, as argparse does."""


class OutOfMemory(LayertimeError):
    """The workload did not fit in the device's memory.

    ``batch_size`` and ``device_type`` say what did not fit and ``detail`` is
    the allocator's own words, so a caller that knows the workload can offer a
    better batch size (:func:`layertime.cost.memory.batch_hint`).
    """

    def __init__(self, message: str, batch_size: int = 0, device_type: str = "",
                 detail: str = "") -> None:
        super().__init__(message)
        self.batch_size = batch_size
        self.device_type = device_type
        self.detail = detail

    @classmethod
    def of(cls, batch_size: int, device_type: str, detail: str, hint: str) -> OutOfMemory:
        """The one-line message: what did not fit, the allocator's words, what to try."""
        return cls(f"batch {batch_size} does not fit in {device_type} memory ({detail}); {hint}",
                   batch_size, device_type, detail)

    def with_hint(self, hint: str) -> OutOfMemory:
        """The same error with another hint (one that knows the workload)."""
        return OutOfMemory.of(self.batch_size, self.device_type, self.detail, hint)


class LayertimeWarning(UserWarning):
    """Something layertime could not measure, said once; the training it watched goes on."""


class MissingExtra(LayertimeError, ImportError):
    """An optional framework an integration needs is not installed (names the extra)."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (cut at ``limit`` characters), or its type."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0]
    return line[:limit] if limit is not None else line


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says the device (or the host) ran out of memory."""
    torch = sys.modules.get("torch")  # an exception of torch's means torch is loaded
    if torch is not None and isinstance(e, torch.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg or "not enough memory" in msg
    )


#: Sentences of torch's out-of-memory messages that give advice, not facts.
_OOM_ADVICE = ("If reserved", "See documentation", "Including non-PyTorch", "Of the allocated",
               "Process ", "This error", "Please ")


def oom_detail(e: BaseException) -> str:
    """What the allocator said, in one line and whole sentences: how much it tried to
    allocate and how much there was, without torch's advice that follows."""
    text = " ".join(str(e).split())
    if not text:
        return type(e).__name__
    sentences = [s for s in text.replace(". ", ".\n").splitlines() if s]
    kept = [s for s in sentences if not s.startswith(_OOM_ADVICE)]
    return " ".join(kept or sentences[:1]).rstrip(".")


def out_of_memory(e: BaseException, batch_size: int, device_type: str) -> OutOfMemory:
    """The one-line error for a batch that does not fit, with a smaller batch to try
    (half of it: a caller that knows the workload can do better, see OutOfMemory)."""
    detail = oom_detail(e)
    if batch_size > 1:
        return OutOfMemory.of(batch_size, device_type, detail, f"try --batch-size {batch_size // 2}")
    return OutOfMemory(f"batch {batch_size} does not fit in {device_type} memory ({detail})",
                       batch_size, device_type, detail)


@contextmanager
def memory_errors(batch_size: int, device_type: str) -> Iterator[None]:
    """Turn an out-of-memory error raised in the block into :class:`OutOfMemory`;
    a :class:`LayertimeError` and any other error pass unchanged."""
    try:
        yield
    except LayertimeError:
        raise
    except Exception as e:
        if is_out_of_memory(e):
            raise out_of_memory(e, batch_size, device_type) from e
        raise
