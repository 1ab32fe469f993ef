
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
