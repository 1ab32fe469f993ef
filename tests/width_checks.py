"""Checks every terminal table must pass at any width (shared by the renderers' tests)."""

from __future__ import annotations

import re
from collections.abc import Iterable

#: An ellipsis touching a digit: a number was cut.
_CUT_NUMBER = re.compile(r"\d…|…[\d,.]")


def check_fits(text: str, width: int | None, names: Iterable[str], *,
               names_whole: bool = True) -> None:
    """Lines within ``width``; no number cut; every name whole (or the shortening said).

    Give the text as rendered *without* wrapping (``to_text(x, None)``): table
    lines (they start with a space) must fit by themselves; prose lines (headline,
    notes) are wrapped at words by the terminal and may be longer here.
    """
    lines = text.splitlines()
    if width is not None:
        too_long = [line for line in lines if line.startswith(" ") and len(line) > width]
        assert not too_long, too_long[:3]
    cut = [line for line in lines if _CUT_NUMBER.search(line)]
    assert not cut, cut[:3]
    shortened = any("shortened in the middle" in line for line in lines)
    for name in names:
        if names_whole or not shortened:
            assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", text, re.M), name


def only_announcements(err: str) -> bool:
    """stderr holds nothing but the lines that say what was written or stored."""
    return all(line.startswith(("wrote ", "stored as ")) for line in err.splitlines())
