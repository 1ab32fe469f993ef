"""The HTML report: one self-contained file that works offline.

Everything is inline: the data (a view from :mod:`layertime.render.views`, as
JSON), the styles and a small hand-written script that draws the charts as
SVG, shows exact numbers on hover and sorts the table.  Nothing is fetched:
a Content-Security-Policy forbids any load from outside the file itself.
The headline is plain HTML, so the answer is there even without scripts.
The page, its styles and its script are package files in
``layertime/render/assets/`` (``report.html``, ``report.css``, ``report.js``).
"""

from __future__ import annotations

import functools
import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from layertime.files import write_text_atomic
from layertime.render.views import view_of

TYPE_LABELS = {
    "profile": "profile",
    "cost": "cost estimate",
    "sweep": "sweep",
    "compare": "comparison",
    "bench": "layer benchmark",
}

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'")


def render_html(obj: Any, **kw: Any) -> str:
    """The report of ``obj`` (a Run, cost, sweep summary, or a ready view) as one HTML page."""
    view = view_of(obj, **kw)
    data = json.dumps(view, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    # Inside <script>, "</script>" or "<!--" in a string would end or confuse the element.
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    kind = TYPE_LABELS.get(view["type"], view["type"])
    subs = "".join(f'<p class="sub">{html.escape(s)}</p>' for s in view.get("subheadlines", ()))
    return _asset("report.html").format(
        csp=_CSP,
        title=html.escape(f"layertime {kind}: {view['title']}"),
        kicker=html.escape(f"layertime {kind} · {view['title']}"),
        headline=html.escape(view["headline"]),
        subs=subs,
        css=_asset("report.css"),
        data=data,
        js=_asset("report.js"),
    )


def write_html(obj: Any, path: str | Path, **kw: Any) -> Path:
    """Write the report atomically (a temporary file, then a rename)."""
    p = Path(path)
    text = render_html(obj, **kw)
    write_text_atomic(p, text)
    return p


@functools.lru_cache(maxsize=None)
def _asset(name: str) -> str:
    """A file of the page (``assets/``), read once."""
    return resources.files("layertime.render").joinpath("assets", name).read_text(encoding="utf-8")
