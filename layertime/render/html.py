"""The HTML report: one self-contained file that works offline.

Everything is inline: the data (a view from :mod:`layertime.render.views`, as
JSON), the styles and a small hand-written script that draws the charts as
SVG, shows exact numbers on hover and sorts the table.  Nothing is fetched:
a Content-Security-Policy forbids any load from outside the file itself.
The headline is plain HTML, so the answer is there even without scripts.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from layertime.render.views import view_of
from layertime.result import write_text_atomic

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
    return _PAGE.format(
        csp=_CSP,
        title=html.escape(f"layertime {kind}: {view['title']}"),
        kicker=html.escape(f"layertime {kind} · {view['title']}"),
        headline=html.escape(view["headline"]),
        subs=subs,
        css=_CSS,
        data=data,
        js=_JS,
    )


def write_html(obj: Any, path: str | Path, **kw: Any) -> Path:
    """Write the report atomically (a temporary file, then a rename)."""
    p = Path(path)
    text = render_html(obj, **kw)
    write_text_atomic(p, text)
    return p


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="layertime">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main id="app">
<header>
<div class="kicker">{kicker}</div>
<h1 class="headline" id="headline">{headline}</h1>
{subs}
</header>
<noscript><p class="warn">The charts and the table of this report are drawn by its inline
script; allow scripts for this file to see them.</p></noscript>
</main>
<div id="tip" role="tooltip"></div>
<script type="application/json" id="layertime-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""

_CSS = r"""
:root { --ink: #1b2330; --muted: #5d6675; --line: #e2e5ea; --bg: #f5f6f8; --panel: #fff;
  --accent: #1f4e79; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Liberation Sans",
  "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 18px 24px 40px; }
header { margin-bottom: 12px; }
.kicker { color: var(--muted); font-size: 12.5px; letter-spacing: .02em; }
h1.headline { font-size: 21px; line-height: 1.3; margin: 4px 0 6px; font-weight: 650; }
p.sub { margin: 2px 0; color: var(--muted); font-size: 13.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0 14px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 7px 12px; min-width: 120px; }
.card .v { font-size: 17px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .l { font-size: 11.5px; color: var(--muted); }
.grid { display: flex; gap: 14px; align-items: flex-start; }
.grid .col { flex: 5 1 0; min-width: 0; display: flex; flex-direction: column; gap: 14px; }
.grid .col + .col { flex-grow: 7; }
.grid.even .col + .col { flex-grow: 5; }
.fulls { display: flex; flex-direction: column; gap: 14px; margin-top: 14px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 14px 10px; min-width: 0; }
.panel h2 { font-size: 14.5px; margin: 0 0 2px; }
.panel .caption { color: var(--muted); font-size: 12px; margin: 0 0 6px; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; margin: 2px 0 6px; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.legend i { width: 11px; height: 11px; border-radius: 2px; display: inline-block; }
.chart-host { width: 100%; }
.chart-host.scroll { max-height: 78vh; overflow-y: auto; }
svg.chart { display: block; font-size: 11px; overflow: visible; }
svg.chart text { fill: var(--ink); }
svg.chart text.tick, svg.chart text.sub, svg.chart text.axis { fill: var(--muted); }
svg.chart text.val { fill: var(--muted); font-size: 10.5px; font-variant-numeric: tabular-nums; }
svg.chart line.grid { stroke: #eceef1; }
svg.chart line.axisline { stroke: #b9bec6; }
svg.chart .hit { fill: transparent; }
svg.chart .bar:hover .hit, svg.chart .slot:hover .hit { fill: rgba(31, 78, 121, .07); }
svg.chart .muted text.lab { fill: var(--muted); font-style: italic; }
svg.chart line.marker { stroke: #c0392b; stroke-width: 1.5; stroke-dasharray: 5 4; }
svg.chart text.marker { fill: #c0392b; font-weight: 600; }
svg.chart circle.pt { stroke: #fff; stroke-width: 1; }
svg.chart circle.pt:hover { stroke: var(--ink); stroke-width: 2; }
svg.chart path.series { fill: none; stroke-width: 2; }
svg.chart line.diag { stroke: #9aa1ab; stroke-dasharray: 4 4; }
section.tbl { margin-top: 14px; }
.tablewrap { max-height: 72vh; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
table.data { border-collapse: collapse; width: 100%; font-size: 12.5px;
  font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 3px 8px; border-bottom: 1px solid #eef0f3;
  white-space: nowrap; text-align: left; }
table.data th.num, table.data td.num { text-align: right; }
table.data thead th { position: sticky; top: 0; background: #f0f2f5; z-index: 1; padding: 0; }
table.data thead th button { all: unset; box-sizing: border-box; display: block; width: 100%;
  padding: 5px 8px; cursor: pointer; font-weight: 600; }
table.data thead th button:focus-visible { outline: 2px solid var(--accent); }
table.data thead th .arrow { color: var(--accent); margin-left: 3px; }
table.data tbody tr:hover { background: #f3f7fc; }
table.data tr.muted td { color: var(--muted); font-style: italic; }
table.data tfoot td { font-weight: 600; background: #fafbfc; position: sticky; bottom: 0; }
.facts { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 14px;
  margin-top: 14px; align-items: start; }
.facts .panel.full { grid-column: 1 / -1; }
dl.kv { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 2px 14px;
  margin: 6px 0 0; font-size: 12.5px; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; overflow-wrap: anywhere; }
table.cfg { border-collapse: collapse; font-size: 12.5px; margin-top: 6px; }
table.cfg th, table.cfg td { padding: 2px 10px 2px 0; text-align: left; vertical-align: top; }
table.cfg td.diff { font-weight: 600; }
ul.notes { color: var(--muted); font-size: 12.5px; padding-left: 18px; margin: 12px 0 0; }
.warn { background: #fff6e0; border: 1px solid #f0d68a; border-radius: 6px; padding: 6px 10px;
  margin: 8px 0; font-size: 13px; }
.error { background: #fdecea; border: 1px solid #f5b7b1; border-radius: 6px; padding: 8px 10px; }
#tip { position: fixed; display: none; pointer-events: none; z-index: 20; max-width: 460px;
  background: #1b2330; color: #fff; font-size: 12px; line-height: 1.4; padding: 6px 9px;
  border-radius: 5px; white-space: pre-wrap; box-shadow: 0 2px 8px rgba(0,0,0,.25);
  font-variant-numeric: tabular-nums; }
@media (max-width: 1050px) { .grid { flex-direction: column; align-items: stretch; }
  .facts { grid-template-columns: minmax(0, 1fr); } }
@media print { body { background: #fff; } .tablewrap, .chart-host.scroll { max-height: none; }
  #tip { display: none !important; } }
"""

_JS = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("layertime-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var app = document.getElementById("app");
  var tip = document.getElementById("tip");
  var FONT = getComputedStyle(document.body).fontFamily;
  var ctx = document.createElement("canvas").getContext("2d");
  var TIPS = new WeakMap();

  function textW(str, size) {
    ctx.font = (size || 11) + "px " + FONT;
    return ctx.measureText(String(str)).width;
  }
  function h(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function s(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function txt(parent, x, y, str, attrs) {
    var a = {x: x, y: y};
    for (var k in attrs || {}) a[k] = attrs[k];
    var t = s("text", a, parent);
    t.textContent = str;
    return t;
  }
  function setTip(node, lines) { if (lines && lines.length) TIPS.set(node, lines); }
  function ellipsize(str, width, size) {
    str = String(str);
    if (textW(str, size) <= width) return str;
    var lo = 0, hi = str.length;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (textW(str.slice(0, mid) + "…", size) <= width) lo = mid; else hi = mid - 1;
    }
    return str.slice(0, lo) + "…";
  }
  function niceStep(span, n) {
    var raw = span / Math.max(1, n), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var err = raw / mag;
    return mag * (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1);
  }
  function niceTicks(max, n) {
    if (!(max > 0)) max = 1;
    var step = niceStep(max, n), out = [];
    for (var v = 0; v < max + step * 0.999; v += step) out.push(+v.toPrecision(12));
    return out;
  }
  function fmtTick(v) {
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    return String(+v.toPrecision(4));
  }
  var SUP = {"-": "⁻", "0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶",
             "7": "⁷", "8": "⁸", "9": "⁹"};
  function fmtDecade(k) {
    if (k >= -2 && k <= 4) return fmtTick(Math.pow(10, k));
    return "10" + String(k).split("").map(function (ch) { return SUP[ch]; }).join("");
  }
  function fmtVal(v, unit) {
    if (v === null || v === undefined) return "–";
    if (unit === "%") return v.toFixed(1) + "%";
    var a = Math.abs(v);
    if (a > 0 && a < 0.1) return String(+v.toPrecision(3)) + (unit ? " " + unit : "");
    var d = a >= 100 ? 1 : a >= 10 ? 2 : 3;
    return v.toLocaleString("en-US", {minimumFractionDigits: d, maximumFractionDigits: d}) +
      (unit ? " " + unit : "");
  }

  document.addEventListener("mousemove", function (ev) {
    var n = ev.target;
    while (n && n !== document && !TIPS.has(n)) n = n.parentNode;
    if (!n || n === document) { tip.style.display = "none"; return; }
    tip.textContent = TIPS.get(n).join("\n");
    tip.style.display = "block";
    var r = tip.getBoundingClientRect();
    var x = ev.clientX + 14, y = ev.clientY + 14;
    if (x + r.width > window.innerWidth - 6) x = ev.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 6) y = ev.clientY - r.height - 14;
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
  });
  document.addEventListener("mouseleave", function () { tip.style.display = "none"; });
  window.addEventListener("scroll", function () { tip.style.display = "none"; }, true);

  function legend(series) {
    var l = h("div", "legend");
    series.forEach(function (se) {
      var sp = h("span"), i = h("i");
      i.style.background = se.color;
      sp.appendChild(i);
      sp.appendChild(document.createTextNode(se.label));
      l.appendChild(sp);
    });
    return l;
  }
  function svgRoot(c, W, H) {
    return s("svg", {"class": "chart", "data-chart": c.id, width: W, height: H,
      viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": c.title});
  }

  // One horizontal bar per row, split into the series' segments.
  function stacked(c, host) {
    var W = Math.max(320, host.clientWidth), rows = c.rows, series = c.series;
    var rowH = 15, gap = 5, top = 22, bottom = 6;
    var nameW = 0, subW = 0, valW = 0;
    rows.forEach(function (r) {
      nameW = Math.max(nameW, textW(r.label));
      if (r.sublabel) subW = Math.max(subW, textW(r.sublabel));
      valW = Math.max(valW, textW(r.total_text, 10.5));
    });
    var labelW = Math.min(nameW + (subW ? subW + 14 : 0) + 10, W * 0.45);
    var showSub = subW > 0 && labelW - subW - 24 >= Math.min(nameW, 70);
    var nameMax = labelW - 10 - (showSub ? subW + 14 : 0);
    var plotW = Math.max(60, W - labelW - valW - 10);
    var max = 0;
    rows.forEach(function (r) { max = Math.max(max, r.total); });
    var ticks = niceTicks(max, Math.max(2, Math.floor(plotW / 90)));
    var xmax = ticks[ticks.length - 1];
    var H = top + rows.length * (rowH + gap) + bottom;
    var svg = svgRoot(c, W, H);
    ticks.forEach(function (t, k) {
      var x = labelW + t / xmax * plotW;
      s("line", {x1: x, x2: x, y1: top - 4, y2: H - bottom, "class": "grid"}, svg);
      txt(svg, x, top - 9, fmtTick(t) + (k === ticks.length - 1 ? " " + c.unit : ""),
        {"class": "tick", "text-anchor": k === ticks.length - 1 ? "end" : "middle"});
    });
    rows.forEach(function (r, i) {
      var y = top + i * (rowH + gap);
      var g = s("g", {"class": "bar" + (r.muted ? " muted" : ""), "data-key": r.key}, svg);
      s("rect", {x: 0, y: y - gap / 2, width: W, height: rowH + gap, "class": "hit"}, g);
      txt(g, 0, y + rowH / 2, ellipsize(r.label, nameMax), {"class": "lab",
        "dominant-baseline": "central"});
      if (showSub && r.sublabel) txt(g, labelW - 10, y + rowH / 2, r.sublabel, {"class": "sub",
        "text-anchor": "end", "dominant-baseline": "central"});
      var x = labelW;
      series.forEach(function (se) {
        var v = r.values[se.key];
        if (!v) return;
        var w = v / xmax * plotW;
        s("rect", {x: x, y: y, width: w, height: rowH, fill: se.color, "class": "seg",
          "data-series": se.key}, g);
        x += w;
      });
      txt(g, x + 4, y + rowH / 2, r.total_text, {"class": "val", "dominant-baseline": "central"});
      setTip(g, r.tip);
    });
    s("line", {x1: labelW, x2: labelW, y1: top - 4, y2: H - bottom, "class": "axisline"}, svg);
    host.appendChild(svg);
  }

  // One group per row, one bar per series.
  function grouped(c, host) {
    var W = Math.max(320, host.clientWidth), rows = c.rows, series = c.series;
    var nS = series.length, barH = nS > 3 ? 8 : 10, inner = 1, gap = 9, top = 22, bottom = 6;
    var nameW = 0, subW = 0, max = 0;
    rows.forEach(function (r) {
      nameW = Math.max(nameW, textW(r.label));
      if (r.sublabel) subW = Math.max(subW, textW(r.sublabel));
      series.forEach(function (se) {
        var v = r.values[se.key];
        if (v !== null && v !== undefined) max = Math.max(max, v);
      });
    });
    var labelW = Math.min(nameW + (subW ? subW + 14 : 0) + 10, W * 0.4);
    var showSub = subW > 0 && labelW - subW - 24 >= Math.min(nameW, 70);
    var nameMax = labelW - 10 - (showSub ? subW + 14 : 0);
    var valW = textW(fmtVal(Math.max(max, 100), c.unit === "%" ? "%" : ""), 10.5) + 6;
    var plotW = Math.max(60, W - labelW - valW - 8);
    var ticks = c.max && c.unit === "%" ? niceTicks(Math.min(c.max, Math.max(max * 1.05, 1)), 5)
                                        : niceTicks(max, Math.max(2, Math.floor(plotW / 90)));
    var xmax = ticks[ticks.length - 1];
    var groupH = nS * (barH + inner);
    var H = top + rows.length * (groupH + gap) + bottom;
    var svg = svgRoot(c, W, H);
    ticks.forEach(function (t, k) {
      var x = labelW + t / xmax * plotW, last = k === ticks.length - 1;
      s("line", {x1: x, x2: x, y1: top - 4, y2: H - bottom, "class": "grid"}, svg);
      txt(svg, x, top - 9, fmtTick(t) + (c.unit === "%" ? "%" : last ? " " + c.unit : ""),
        {"class": "tick", "text-anchor": last && c.unit !== "%" ? "end" : "middle"});
    });
    rows.forEach(function (r, i) {
      var y0 = top + i * (groupH + gap);
      var g = s("g", {"class": "group", "data-key": r.key}, svg);
      txt(g, 0, y0 + groupH / 2, ellipsize(r.label, nameMax), {"class": "lab",
        "dominant-baseline": "central"});
      if (showSub && r.sublabel) txt(g, labelW - 10, y0 + groupH / 2, r.sublabel, {"class": "sub",
        "text-anchor": "end", "dominant-baseline": "central"});
      series.forEach(function (se, j) {
        var v = r.values[se.key];
        if (v === null || v === undefined) return;
        var y = y0 + j * (barH + inner);
        var slot = s("g", {"class": "slot"}, g);
        s("rect", {x: labelW, y: y - inner / 2, width: plotW + valW, height: barH + inner,
          "class": "hit"}, slot);
        var w = Math.max(0, v / xmax * plotW);
        s("rect", {x: labelW, y: y, width: w, height: barH, fill: se.color, "class": "bar",
          "data-series": se.key}, slot);
        if (v) txt(slot, labelW + w + 4, y + barH / 2, fmtVal(v, c.unit === "%" ? "%" : ""), {"class": "val",
          "dominant-baseline": "central"});
        setTip(slot, (r.tips && r.tips[se.key]) ||
          [r.label + " · " + se.label, fmtVal(v, c.unit)]);
      });
    });
    s("line", {x1: labelW, x2: labelW, y1: top - 4, y2: H - bottom, "class": "axisline"}, svg);
    host.appendChild(svg);
  }

  // Points per series against a numeric x, with vertical markers.
  function lines(c, host) {
    var W = Math.max(360, host.clientWidth), H = 310;
    var m = {l: 50, r: 18, t: 26, b: 44}, pw = W - m.l - m.r, ph = H - m.t - m.b;
    var xs = [];
    c.series.forEach(function (se) { se.points.forEach(function (p) { xs.push(p.x); }); });
    c.markers.forEach(function (mk) { xs.push(mk.x); });
    var log = c.x_scale === "log2";
    var f = log ? function (v) { return Math.log2(v); } : function (v) { return v; };
    var lo = Math.min.apply(null, xs.map(f)), hi = Math.max.apply(null, xs.map(f));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    var pad = (hi - lo) * 0.04; lo -= pad; hi += pad;
    var X = function (v) { return m.l + (f(v) - lo) / (hi - lo) * pw; };
    var ymax = c.y_max || niceTicks(1, 5).pop();
    var Y = function (v) { return m.t + ph - v / ymax * ph; };
    var svg = svgRoot(c, W, H);
    niceTicks(ymax, 5).forEach(function (t) {
      s("line", {x1: m.l, x2: m.l + pw, y1: Y(t), y2: Y(t), "class": "grid"}, svg);
      txt(svg, m.l - 6, Y(t), fmtTick(t) + (c.unit === "%" ? "%" : ""), {"class": "tick",
        "text-anchor": "end", "dominant-baseline": "central"});
    });
    (c.x_ticks || []).forEach(function (t) {
      s("line", {x1: X(t), x2: X(t), y1: m.t + ph, y2: m.t + ph + 4, "class": "axisline"}, svg);
      txt(svg, X(t), m.t + ph + 16, fmtTick(t), {"class": "tick", "text-anchor": "middle"});
    });
    s("line", {x1: m.l, x2: m.l + pw, y1: m.t + ph, y2: m.t + ph, "class": "axisline"}, svg);
    txt(svg, m.l + pw / 2, H - 6, c.x_label + (log ? " (log scale)" : ""), {"class": "axis",
      "text-anchor": "middle"});
    txt(svg, 12, m.t + ph / 2, c.y_label, {"class": "axis", "text-anchor": "middle",
      transform: "rotate(-90 12 " + (m.t + ph / 2) + ")"});
    c.markers.forEach(function (mk) {
      var g = s("g", {"class": "mk"}, svg), x = X(mk.x);
      s("rect", {x: x - 5, y: m.t, width: 10, height: ph, "class": "hit"}, g);
      s("line", {x1: x, x2: x, y1: m.t - 4, y2: m.t + ph, "class": "marker"}, g);
      var right = x > m.l + pw * 0.7;
      txt(g, right ? x - 5 : x + 5, m.t - 10, mk.label, {"class": "marker",
        "text-anchor": right ? "end" : "start"});
      setTip(g, mk.tip);
    });
    c.series.forEach(function (se) {
      var pts = se.points.slice().sort(function (a, b) { return a.x - b.x; });
      var d = pts.map(function (p, i) { return (i ? "L" : "M") + X(p.x) + " " + Y(p.y); });
      if (pts.length > 1) s("path", {d: d.join(" "), stroke: se.color, "class": "series",
        "data-series": se.key}, svg);
      pts.forEach(function (p) {
        var cc = s("circle", {cx: X(p.x), cy: Y(p.y), r: 4, fill: se.color, "class": "pt",
          "data-series": se.key}, svg);
        setTip(cc, p.tip);
      });
    });
    host.appendChild(svg);
  }

  // Points against two log axes with the diagonal.
  function scatter(c, host) {
    var W = Math.min(Math.max(320, host.clientWidth), 620), H = Math.round(Math.min(W * 0.78, 430));
    var m = {l: 56, r: 16, t: 12, b: 42}, pw = W - m.l - m.r, ph = H - m.t - m.b;
    var vals = [];
    c.points.forEach(function (p) { vals.push(p.x, p.y); });
    if (!vals.length) vals = [1, 10];
    var lo = Math.floor(Math.log10(Math.min.apply(null, vals)));
    var hi = Math.ceil(Math.log10(Math.max.apply(null, vals)));
    if (hi <= lo) hi = lo + 1;
    var X = function (v) { return m.l + (Math.log10(v) - lo) / (hi - lo) * pw; };
    var Y = function (v) { return m.t + ph - (Math.log10(v) - lo) / (hi - lo) * ph; };
    var svg = svgRoot(c, W, H);
    var every = Math.max(1, Math.ceil((hi - lo) / Math.max(2, Math.floor(pw / 48))));
    for (var k = lo; k <= hi; k++) {
      var v = Math.pow(10, k);
      s("line", {x1: X(v), x2: X(v), y1: m.t, y2: m.t + ph, "class": "grid"}, svg);
      s("line", {x1: m.l, x2: m.l + pw, y1: Y(v), y2: Y(v), "class": "grid"}, svg);
      if ((k - lo) % every) continue;
      txt(svg, X(v), m.t + ph + 15, fmtDecade(k), {"class": "tick", "text-anchor": "middle"});
      txt(svg, m.l - 6, Y(v), fmtDecade(k), {"class": "tick", "text-anchor": "end",
        "dominant-baseline": "central"});
    }
    var a = Math.pow(10, lo), b = Math.pow(10, hi);
    s("line", {x1: X(a), y1: Y(a), x2: X(b), y2: Y(b), "class": "diag"}, svg);
    s("rect", {x: m.l, y: m.t, width: pw, height: ph, fill: "none", "class": "frame",
      stroke: "#b9bec6"}, svg);
    txt(svg, m.l + pw / 2, H - 6, c.x_label + " (log scale)", {"class": "axis",
      "text-anchor": "middle"});
    txt(svg, 12, m.t + ph / 2, c.y_label + " (log scale)", {"class": "axis",
      "text-anchor": "middle", transform: "rotate(-90 12 " + (m.t + ph / 2) + ")"});
    var colors = {};
    c.series.forEach(function (se) { colors[se.key] = se.color; });
    c.points.forEach(function (p) {
      var cc = s("circle", {cx: X(p.x), cy: Y(p.y), r: 4.5, fill: colors[p.series] || "#888",
        "class": "pt", "data-series": p.series}, svg);
      setTip(cc, p.tip);
    });
    host.appendChild(svg);
  }

  var DRAW = {stacked: stacked, grouped: grouped, lines: lines, scatter: scatter};
  var drawn = [];

  function panelFor(c) {
    var p = h("section", "panel" + (c.layout === "full" ? " full" : ""));
    p.id = "panel-" + c.id;
    p.appendChild(h("h2", null, c.title));
    if (c.caption) p.appendChild(h("p", "caption", c.caption));
    if (c.series && c.series.length) p.appendChild(legend(c.series));
    var host = h("div", "chart-host" + (c.type === "stacked" && c.rows.length > 40 ? " scroll" : ""));
    p.appendChild(host);
    drawn.push({c: c, host: host});
    return p;
  }

  function table(t) {
    var wrap = h("div", "tablewrap"), tb = h("table", "data");
    tb.id = "table-" + t.id;
    var thead = h("thead"), tr = h("tr"), tbody = h("tbody");
    var state = {col: -1, dir: 1};
    var rows = t.rows.map(function (r, i) {
      var row = h("tr", r.muted ? "muted" : null);
      r.cells.forEach(function (c, j) {
        row.appendChild(h("td", t.columns[j].num ? "num" : null, c.t));
      });
      return {el: row, v: r.cells.map(function (c) { return c.v; }), i: i};
    });
    t.columns.forEach(function (col, j) {
      var th = h("th", col.num ? "num" : null), b = h("button", null, col.label);
      b.type = "button";
      b.title = "sort by " + col.label;
      var arrow = h("span", "arrow", "");
      b.appendChild(arrow);
      th.setAttribute("aria-sort", "none");
      b.addEventListener("click", function () {
        state.dir = state.col === j ? -state.dir : (col.num ? -1 : 1);
        state.col = j;
        rows.sort(function (a, b2) {
          var x = a.v[j], y = b2.v[j];
          if (x === null || x === undefined || x === "") return (y === null || y === undefined || y === "") ? a.i - b2.i : 1;
          if (y === null || y === undefined || y === "") return -1;
          var cmp = typeof x === "number" && typeof y === "number" ? x - y
                  : String(x).localeCompare(String(y), "en", {numeric: true});
          return cmp ? cmp * state.dir : a.i - b2.i;
        });
        rows.forEach(function (r) { tbody.appendChild(r.el); });
        Array.prototype.forEach.call(thead.querySelectorAll("th"), function (o) {
          o.setAttribute("aria-sort", "none");
          o.querySelector(".arrow").textContent = "";
        });
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        arrow.textContent = state.dir > 0 ? "▲" : "▼";
      });
      th.appendChild(b);
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    tb.appendChild(thead);
    rows.forEach(function (r) { tbody.appendChild(r.el); });
    tb.appendChild(tbody);
    if (t.foot) {
      var tf = h("tfoot"), ftr = h("tr");
      t.foot.forEach(function (c, j) { ftr.appendChild(h("td", t.columns[j].num ? "num" : null, c)); });
      tf.appendChild(ftr);
      tb.appendChild(tf);
    }
    wrap.appendChild(tb);
    return wrap;
  }

  function facts(sec) {
    var p = h("section", "panel" + (sec.wide ? " full" : ""));
    p.appendChild(h("h2", null, sec.title));
    if (sec.columns) {
      var tb = h("table", "cfg"), hr = h("tr");
      hr.appendChild(h("th", null, ""));
      sec.columns.forEach(function (c) { hr.appendChild(h("th", null, c)); });
      tb.appendChild(hr);
      sec.items.forEach(function (it) {
        var tr = h("tr");
        tr.appendChild(h("th", null, it[0]));
        var differ = it.slice(1).some(function (v) { return v !== it[1]; });
        it.slice(1).forEach(function (v) { tr.appendChild(h("td", differ ? "diff" : null, v)); });
        tb.appendChild(tr);
      });
      p.appendChild(tb);
    } else {
      var dl = h("dl", "kv");
      sec.items.forEach(function (it) {
        dl.appendChild(h("dt", null, it[0]));
        dl.appendChild(h("dd", null, it[1]));
      });
      p.appendChild(dl);
    }
    return p;
  }

  function drawAll() {
    drawn.forEach(function (d) {
      while (d.host.firstChild) d.host.removeChild(d.host.firstChild);
      DRAW[d.c.type](d.c, d.host);
    });
  }

  try {
    (D.warnings || []).forEach(function (w) { app.appendChild(h("div", "warn", w)); });
    if (D.summary && D.summary.length) {
      var cards = h("div", "cards");
      D.summary.forEach(function (c) {
        var card = h("div", "card");
        card.appendChild(h("div", "v", c.value));
        card.appendChild(h("div", "l", c.label));
        if (c.title) card.title = c.title;
        cards.appendChild(card);
      });
      app.appendChild(cards);
    }
    // Half-width charts go to the shorter of two columns as they are drawn; full-width
    // charts follow below.  (Not grid rows: a tall chart would leave a hole beside it.)
    var grid = h("div", "grid" + (D.grid === "even" ? " even" : ""));
    grid.id = "charts";
    var cols = [h("div", "col"), h("div", "col")];
    cols.forEach(function (c) { grid.appendChild(c); });
    app.appendChild(grid);
    var fulls = h("div", "fulls");
    app.appendChild(fulls);
    D.charts.forEach(function (c) {
      var panel = panelFor(c), d = drawn[drawn.length - 1];
      if (c.layout === "full") fulls.appendChild(panel);
      else (cols[0].offsetHeight <= cols[1].offsetHeight ? cols[0] : cols[1]).appendChild(panel);
      DRAW[c.type](c, d.host);
    });
    if (D.table) {
      var ts = h("section", "panel tbl");
      ts.appendChild(h("h2", null, "Table"));
      ts.appendChild(h("p", "caption", "Click a column to sort; click again to reverse. " +
        "Sorting by # restores the original order."));
      ts.appendChild(table(D.table));
      app.appendChild(ts);
    }
    if (D.sections && D.sections.length) {
      var fs = h("div", "facts");
      D.sections.forEach(function (sec) { fs.appendChild(facts(sec)); });
      app.appendChild(fs);
    }
    if (D.notes && D.notes.length) {
      var ul = h("ul", "notes");
      D.notes.forEach(function (n) { ul.appendChild(h("li", null, n)); });
      app.appendChild(ul);
    }
    var timer = null;
    window.addEventListener("resize", function () {
      clearTimeout(timer);
      timer = setTimeout(drawAll, 120);
    });
    document.documentElement.setAttribute("data-rendered", "ok");
  } catch (e) {
    var box = h("div", "error", "This report could not be drawn: " + e);
    app.appendChild(box);
    document.documentElement.setAttribute("data-rendered", "error");
    throw e;
  }
})();
"""
