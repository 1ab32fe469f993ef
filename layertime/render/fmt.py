"""Number formats shared by every renderer: compact, never cut, units in the headers.

Times are shown in milliseconds to three significant digits (whole
milliseconds from 100 ms up: ``1,302``, ``27.1``, ``8.51``, ``0.373``); a
value that rounds to zero at that precision is ``0``, never ``-0.00``.
Shares are percentages with one decimal.  Counts (parameters) are compact
(``61.1M``, ``23.3k``); the JSON keeps every exact value.
"""

from __future__ import annotations

import math

#: Below this many milliseconds a time prints as 0.
_ZERO_MS = 0.0005


def ms(s: float | None) -> str:
    """Seconds as milliseconds, three significant digits; '-' for none."""
    return "-" if s is None else num(s * 1e3, zero=_ZERO_MS)


def num(v: float | None, zero: float = 0.0) -> str:
    """Three significant digits, whole numbers (with thousands commas) from 100 up;
    '0' at or below ``zero`` in magnitude; '-' for none."""
    if v is None:
        return "-"
    a = abs(v)
    if a <= zero:
        return "0"
    if a >= 99.95:
        return f"{v:,.0f}"
    return _sig3(v)


def _sig3(v: float) -> str:
    """Three significant digits below 100, trailing zeros kept (0.500, 4.10, 27.0)."""
    a = abs(v)
    digits = 2 - math.floor(math.log10(a)) if a > 0 else 2
    text = f"{v:.{max(0, digits)}f}"
    # Rounding can add a digit (9.996 -> 10.00): format the rounded value again.
    r = abs(float(text))
    if r > 0 and 2 - math.floor(math.log10(r)) < digits:
        text = f"{float(text):.{max(0, 2 - math.floor(math.log10(r)))}f}"
    return text


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; '-' for none; no '-0.0%'."""
    if x is None:
        return "-"
    if abs(x) < 0.0005:
        return "0.0%"
    return f"{x:.1%}"


def count(n: int | None) -> str:
    """A count, compact: 999, 23.3k, 2.47M, 61.1M, 1.2G; '-' for none or zero."""
    if not n:
        return "-"
    a = abs(n)
    if a < 1000:
        return str(n)
    # The smallest unit whose value rounds below 1000 (999.7k is 1.00M), G at most.
    div, unit = next(((d, u) for d, u in ((1e3, "k"), (1e6, "M")) if a / d < 999.5),
                     (1e9, "G"))
    return num(n / div) + unit


def ratio(x: float | None) -> str:
    """A ratio like x1.02 (two decimals); '-' for none."""
    return "-" if x is None else f"x{x:.2f}"
