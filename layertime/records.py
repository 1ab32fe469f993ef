"""Results to JSON and back: one tolerant loader for every result type.

Result JSON is versioned by its ``schema`` (``layertime.run/1``, ...), and a
version may gain fields.  So every reader here ignores keys it does not know,
takes a field's default when the key is absent, and turns any malformed
value into one :class:`~layertime.errors.LayertimeError` line.  JSON has no
NaN or infinity: they are written as ``null`` and read back as NaN.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from layertime.errors import LayertimeError

T = TypeVar("T")


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None, in nested dicts and lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def number(x: Any) -> float:
    """A JSON number back to float; ``null`` (a non-finite value) is NaN."""
    return math.nan if x is None else float(x)


def to_json(data: Mapping[str, Any], indent: int | None = 2) -> str:
    """A result's dict as JSON text, non-finite numbers as ``null``."""
    return json.dumps(finite(dict(data)), indent=indent)


def build(
    cls: type[T],
    d: Mapping[str, Any],
    *,
    absent: Mapping[str, Any] | None = None,
    **convert: Callable[[Any], Any],
) -> T:
    """The dataclass ``cls`` from a JSON object: keys that are not fields are ignored,
    absent fields take their defaults (or ``absent[field]``, for a field that older
    JSON lacks and has no default), and ``convert[field]`` turns a JSON value into
    the field's type (a tuple from a list, a nested result from a dict)."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{cls.__name__} needs a JSON object, not {type(d).__name__}")
    kw: dict[str, Any] = dict(absent or {})
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in d:
            value = d[f.name]
            kw[f.name] = convert[f.name](value) if f.name in convert else value
    return cls(**kw)


def build_all(
    cls: type[T], items: Any, **convert: Callable[[Any], Any]
) -> tuple[T, ...]:
    """A tuple of ``cls`` from a JSON list of objects."""
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"a list of {cls.__name__} needs a JSON list, not {type(items).__name__}")
    return tuple(build(cls, item, absent=None, **convert) for item in items)


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn a missing key or a value of the wrong type, met while reading a ``what``
    (e.g. "layertime run"), into one ``malformed ...`` error line."""
    try:
        yield
    except LayertimeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LayertimeError(f"malformed {what}: {e!r}") from e


def parse_object(text: str, what: str) -> dict[str, Any]:
    """JSON text that must hold one object (a ``what``, for the error)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LayertimeError(f"not JSON: {e}") from e
    if not isinstance(data, dict):
        raise LayertimeError(f"not a {what} (JSON {type(data).__name__}, not an object)")
    return data


def check_schema(d: Any, schema: str, what: str) -> Mapping[str, Any]:
    """``d`` if it is an object of ``schema``, else one error line naming what it is."""
    if not isinstance(d, Mapping):
        raise LayertimeError(f"not a {what} (JSON {type(d).__name__}, not an object)")
    found = d.get("schema")
    if found != schema:
        raise LayertimeError(f"not a {what} (schema {found!r}, expected {schema!r})")
    return d
