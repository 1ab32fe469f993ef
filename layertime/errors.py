"""The one exception type the library raises for bad input or failed runs."""

from __future__ import annotations


class LayertimeError(Exception):
    """A problem the user can fix: the message is one line, without a traceback."""


class OutOfMemory(LayertimeError):
    """The workload did not fit in the device's memory."""


class LayertimeWarning(UserWarning):
    """Something layertime could not measure, said once; the training it watched goes on."""


class MissingExtra(LayertimeError, ImportError):
    """An optional framework an integration needs is not installed (names the extra)."""
