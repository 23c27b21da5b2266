// ijr-report's page scripts: small SVG charts, the interactive runs table (sort, filter, select) and parallel
// coordinates, with the selected runs highlighted in the trajectory charts. Hand-written and embedded in the page
// (no CDN, no library: the page must open offline); about 300 lines, read top to bottom.
"use strict";
const IJR = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                   "#7f7f7f", "#bcbd22"];

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  // a numeric array as run_pages.packed writes it ({f32: base64} or {i32: base64}), or a plain list
  function unpack(v) {
    if (Array.isArray(v)) return v;
    const key = v.f32 !== undefined ? "f32" : "i32";
    const text = atob(v[key]);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return Array.from(key === "f32" ? new Float32Array(bytes.buffer) : new Int32Array(bytes.buffer));
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
  }

  function extent(values, log) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) {
      if (v === null || !Number.isFinite(v) || (log && v <= 0)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo === Infinity) return [0, 1];
    if (lo === hi) return log ? [lo / 2, hi * 2] : [lo - 1, hi + 1];
    return [lo, hi];
  }

  function frame(host, title, w, h) {
    const svg = el("svg", {width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: "chart"}, host);
    el("text", {x: w / 2, y: 12, "text-anchor": "middle", class: "chart-title"}, svg).textContent = title;
    return svg;
  }

  // series: [{name, x: [], y: [], color, dash, width, opacity}]; marks: [{x, label}]
  function lineChart(host, spec) {
    spec = {...spec, series: spec.series.map(s => ({...s, x: unpack(s.x), y: unpack(s.y)}))};
    const w = spec.w || 300, h = spec.h || 190, m = {l: 46, r: 8, t: 18, b: 26};
    const svg = frame(host, spec.title || "", w, h);
    const xs = spec.series.flatMap(s => s.x), ys = spec.series.flatMap(s => s.y);
    const [x0, x1] = extent(xs, false);
    const positive = ys.filter(v => v !== null && Number.isFinite(v));
    const log = spec.logY && positive.length && positive.every(v => v > 0) &&
                Math.max(...positive) / Math.min(...positive) >= 30;
    const [y0, y1] = extent(ys, log);
    const ty = v => log ? Math.log10(v) : v;
    const sx = v => m.l + (v - x0) / (x1 - x0 || 1) * (w - m.l - m.r);
    const sy = v => h - m.b - (ty(v) - ty(y0)) / (ty(y1) - ty(y0) || 1) * (h - m.t - m.b);
    el("rect", {x: m.l, y: m.t, width: w - m.l - m.r, height: h - m.t - m.b, class: "plot-area"}, svg);
    for (const [v, anchor] of [[y0, "end"], [y1, "end"]]) {
      el("text", {x: m.l - 3, y: sy(v) + 3, "text-anchor": anchor, class: "tick"}, svg).textContent = fmt(v);
    }
    for (const v of [x0, x1]) {
      el("text", {x: sx(v), y: h - m.b + 12, "text-anchor": "middle", class: "tick"}, svg).textContent = fmt(v);
    }
    el("text", {x: (m.l + w - m.r) / 2, y: h - 3, "text-anchor": "middle", class: "tick"}, svg).textContent =
      spec.xlabel || "step";
    for (const mark of spec.marks || []) {
      if (mark.x === null || !Number.isFinite(mark.x)) continue;
      el("line", {x1: sx(mark.x), x2: sx(mark.x), y1: m.t, y2: h - m.b, class: "mark"}, svg);
      el("title", {}, svg).textContent = mark.label;
    }
    const lines = [];
    spec.series.forEach((s, i) => {
      let d = "", pen = false;
      for (let k = 0; k < s.x.length; k++) {
        const y = s.y[k];
        if (y === null || !Number.isFinite(y) || (log && y <= 0)) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${sx(s.x[k]).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = true;
      }
      const path = el("path", {d, fill: "none", stroke: s.color || PALETTE[i % PALETTE.length],
                               "stroke-width": s.width || 1.3, "stroke-dasharray": s.dash || "",
                               opacity: s.opacity === undefined ? 1 : s.opacity, "data-run": s.run ?? ""}, svg);
      el("title", {}, path).textContent = s.name || "";
      lines.push(path);
    });
    return lines;
  }

  function colour(v, lo, hi) {  // diverging blue-white-red around 0 when the range straddles it, else viridis-ish
    if (v === null || !Number.isFinite(v)) return "#eee";
    if (lo < 0 && hi > 0) {
      const t = v / Math.max(-lo, hi);
      const c = Math.round(255 * (1 - Math.abs(t)));
      return t >= 0 ? `rgb(255,${c},${c})` : `rgb(${c},${c},255)`;
    }
    const t = (v - lo) / (hi - lo || 1);
    return `hsl(${260 - 200 * t},70%,${25 + 45 * t}%)`;
  }

  function heatmap(host, spec) {
    const n = spec.matrix.length, k = spec.matrix[0].length, cell = Math.max(6, Math.min(22, 200 / Math.max(n, k)));
    const w = k * cell + 12, h = n * cell + 24;
    const svg = frame(host, spec.title || "", Math.max(w, 120), h);
    const [lo, hi] = extent(spec.matrix.flat(), false);
    spec.matrix.forEach((row, i) => row.forEach((v, j) => {
      const r = el("rect", {x: 6 + j * cell, y: 18 + i * cell, width: cell, height: cell, fill: colour(v, lo, hi)},
                   svg);
      el("title", {}, r).textContent = `[${i}, ${j}] ${fmt(v)}`;
    }));
  }

  function scatter(host, spec) {
    const w = spec.w || 300, h = spec.h || 220, m = {l: 40, r: 8, t: 18, b: 22};
    const svg = frame(host, spec.title || "", w, h);
    const [x0, x1] = extent(spec.x, false), [y0, y1] = extent(spec.y, false), [c0, c1] = extent(spec.c, false);
    el("rect", {x: m.l, y: m.t, width: w - m.l - m.r, height: h - m.t - m.b, class: "plot-area"}, svg);
    spec.x.forEach((x, i) => {
      const t = (spec.c[i] - c0) / (c1 - c0 || 1);
      el("circle", {cx: m.l + (x - x0) / (x1 - x0 || 1) * (w - m.l - m.r),
                    cy: h - m.b - (spec.y[i] - y0) / (y1 - y0 || 1) * (h - m.t - m.b), r: 2.2,
                    fill: `rgb(${Math.round(40 + 200 * t)},60,${Math.round(240 - 200 * t)})`}, svg);
    });
    el("text", {x: w / 2, y: h - 4, "text-anchor": "middle", class: "tick"}, svg).textContent = spec.xlabel || "";
  }

  // ------------------------------------------------------------------ the runs table
  function cellValue(td) {
    const raw = td.getAttribute("data-v");
    if (raw === null) return td.textContent;
    const num = Number(raw);
    return raw === "" ? NaN : num;
  }

  function sortTable(table, col, descending) {
    const body = table.tBodies[0];
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
      const bothNumbers = typeof x === "number" && typeof y === "number";
      let c;
      if (bothNumbers) {
        if (Number.isNaN(x) && Number.isNaN(y)) c = 0;
        else if (Number.isNaN(x)) return 1;  // missing values last, either way
        else if (Number.isNaN(y)) return -1;
        else c = x - y;
      } else c = String(x).localeCompare(String(y), undefined, {numeric: true});
      return descending ? -c : c;
    });
    rows.forEach(r => body.appendChild(r));
    table.querySelectorAll("th").forEach((th, i) => th.setAttribute("aria-sort",
      i === col ? (descending ? "descending" : "ascending") : "none"));
  }

  function matches(text, query) {  // "0.1", ">0.5", "<=200", "!=x", or a substring
    const q = query.trim();
    if (!q) return true;
    const m = q.match(/^(<=|>=|<|>|=|!=)\s*(-?[\d.eE+-]+)$/);
    if (m) {
      const v = Number(text), t = Number(m[2]);
      if (!Number.isFinite(v)) return false;
      return {"<": v < t, ">": v > t, "<=": v <= t, ">=": v >= t, "=": v === t, "!=": v !== t}[m[1]];
    }
    if (q.startsWith("!")) return !text.toLowerCase().includes(q.slice(1).toLowerCase());
    return text.toLowerCase().includes(q.toLowerCase());
  }

  function applyFilters(table) {
    const inputs = Array.from(table.querySelectorAll("thead input.filter"));
    let shown = 0;
    for (const row of table.tBodies[0].rows) {
      const ok = inputs.every(input => {
        const td = row.cells[Number(input.dataset.col)];
        return matches(td.getAttribute("data-v") ?? td.textContent, input.value);
      });
      row.hidden = !ok;
      if (ok) shown++;
    }
    const count = document.getElementById(table.id + "-count");
    if (count) count.textContent = `${shown} of ${table.tBodies[0].rows.length} runs shown`;
    document.dispatchEvent(new CustomEvent("ijr-filter", {detail: {table}}));
  }

  function selectedRuns(table) {
    return new Set(Array.from(table.querySelectorAll("tbody input.pick:checked")).map(c => c.value));
  }

  function visibleRuns(table) {
    return new Set(Array.from(table.tBodies[0].rows).filter(r => !r.hidden).map(r => r.dataset.run));
  }

  function interactiveTable(table) {
    table.querySelectorAll("thead tr.names th").forEach((th, col) => {
      if (th.classList.contains("nosort")) return;
      th.tabIndex = 0;
      th.addEventListener("click", () => sortTable(table, col, th.getAttribute("aria-sort") === "ascending"));
    });
    table.querySelectorAll("thead input.filter").forEach(input =>
      input.addEventListener("input", () => applyFilters(table)));
    table.addEventListener("change", e => {
      if (e.target.classList.contains("pick")) {
        document.dispatchEvent(new CustomEvent("ijr-select", {detail: {runs: selectedRuns(table)}}));
      }
    });
    applyFilters(table);
  }

  // ------------------------------------------------------------------ parallel coordinates
  function parallel(host, data, table) {
    const axes = data.axes, w = Math.max(520, 110 * axes.length), h = 260, m = {t: 30, b: 28};
    const svg = frame(host, "parallel coordinates (one line per run; selected runs in red)", w, h);
    const x = i => 40 + i * (w - 80) / Math.max(axes.length - 1, 1);
    const scales = axes.map(a => {
      const [lo, hi] = extent(a.values, false);
      return v => h - m.b - (v - lo) / (hi - lo || 1) * (h - m.t - m.b);
    });
    axes.forEach((a, i) => {
      el("line", {x1: x(i), x2: x(i), y1: m.t, y2: h - m.b, class: "axis"}, svg);
      el("text", {x: x(i), y: h - 8, "text-anchor": "middle", class: "tick"}, svg).textContent = a.name;
      const [lo, hi] = extent(a.values, false);
      el("text", {x: x(i) + 3, y: m.t - 3, class: "tick"}, svg).textContent = fmt(hi);
      el("text", {x: x(i) + 3, y: h - m.b + 10, class: "tick"}, svg).textContent = fmt(lo);
    });
    const lines = data.runs.map((run, r) => {
      let d = "", pen = false;
      axes.forEach((a, i) => {
        const v = a.values[r];
        if (v === null || !Number.isFinite(v)) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${scales[i](v).toFixed(1)}`;
        pen = true;
      });
      const p = el("path", {d, class: "pc-line", "data-run": run}, svg);
      el("title", {}, p).textContent = run;
      return p;
    });
    return lines;
  }

  // ------------------------------------------------------------------ highlight the selected runs everywhere
  function highlight(runs, visible) {
    document.querySelectorAll("[data-run]").forEach(node => {
      const run = node.getAttribute("data-run");
      if (!run || node.tagName === "TR") return;
      node.classList.toggle("picked", runs.has(run));
      node.classList.toggle("faded", visible !== null && !visible.has(run));
    });
  }

  function explorer() {
    const table = document.getElementById("runs-table");
    const source = document.getElementById("ijr-explorer-data");
    if (!table || !source) return;
    const data = JSON.parse(source.textContent);
    interactiveTable(table);
    parallel(document.getElementById("parallel"), data.parallel, table);
    const host = document.getElementById("overlay");
    for (const chart of data.overlay) {
      lineChart(host, {title: chart.title, logY: chart.logY, w: 380, h: 220,
                       series: chart.series.map(s => ({...s, color: "#4c72b0", opacity: 0.35, width: 1}))});
    }
    const refresh = () => highlight(selectedRuns(table), visibleRuns(table));
    document.addEventListener("ijr-select", refresh);
    document.addEventListener("ijr-filter", refresh);
    refresh();
  }

  function runPage() {
    const source = document.getElementById("ijr-run-data");
    if (!source) return;
    const data = JSON.parse(source.textContent);
    const host = document.getElementById("trajectories");
    for (const chart of data.charts) lineChart(host, chart);
    const arrays = document.getElementById("arrays");
    for (const a of data.arrays) {
      const box = document.createElement("div");
      box.className = "array";
      arrays.appendChild(box);
      if (a.kind === "heatmaps") a.steps.forEach((step, i) =>
        heatmap(box, {title: `${a.name} @ step ${step}`, matrix: a.matrices[i]}));
      else if (a.kind === "lines") lineChart(box, {title: a.name, series: a.series, w: 360});
      else if (a.kind === "scatter") scatter(box, {title: a.name, x: a.x, y: a.y, c: a.c, xlabel: a.xlabel});
    }
  }

  return {lineChart, heatmap, scatter, sortTable, applyFilters, explorer, runPage, fmt, matches};
})();
window.addEventListener("DOMContentLoaded", () => { IJR.explorer(); IJR.runPage(); });
