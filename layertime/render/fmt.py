"""Number formats shared by the terminal renderers."""

from __future__ import annotations


def ms(s: float | None) -> str:
    """Seconds as milliseconds with two decimals; '-' for none."""
    return "-" if s is None else f"{s * 1e3:,.2f}"


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; '-' for none."""
    return "-" if x is None else f"{x:.1%}"
