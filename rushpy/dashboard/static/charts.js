"use strict";
/*
 * Hand-written SVG charts of the dashboard (no chart library: the page loads
 * nothing from the network). Exposes window.Charts with three drawing
 * functions; each redraws its <svg> completely from the data it is given.
 *
 * Charts are built as one markup string and assigned with innerHTML: with
 * thousands of points this is much faster than creating nodes one by one.
 * Every piece of data that reaches the markup goes through esc().
 * The viewBox is set to the element's rendered size, so one SVG unit is one
 * CSS pixel and text is never stretched; app.js redraws on resize.
 */
(function () {
  // Same colours as the CSS custom properties in style.css.
  const COLORS = {
    queued: "#6b7280",
    running: "#2563eb",
    finished: "#15803d",
    failed: "#dc2626",
    throughput: "#7c3aed",
    point: "#2563eb",
    best: "#ea580c",
  };
  const STATES = ["queued", "running", "finished", "failed"];
  const MAX_PC_LINES = 2000; // parallel coordinates get unreadable (and slow) beyond this

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);
  }

  function fit(svg, fallbackHeight) {
    const r = svg.getBoundingClientRect();
    const w = Math.max(240, Math.round(r.width || 800));
    const h = Math.max(140, Math.round(r.height || fallbackHeight));
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    return { w, h };
  }

  function message(svg, text) {
    const { w, h } = fit(svg, 200);
    svg.innerHTML = `<text class="empty-msg" x="${w / 2}" y="${h / 2}" text-anchor="middle">${esc(text)}</text>`;
  }

  // Linear map from the domain [d0, d1] onto the range [r0, r1]; a flat domain maps to its middle.
  function scale(d0, d1, r0, r1) {
    if (!(d1 > d0)) return () => (r0 + r1) / 2;
    const k = (r1 - r0) / (d1 - d0);
    return (v) => r0 + (v - d0) * k;
  }

  function extent(values, padFraction) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of values) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (lo === Infinity) return [0, 1];
    if (lo === hi) {
      const pad = Math.abs(lo) * 0.1 || 1;
      return [lo - pad, hi + pad];
    }
    const pad = (hi - lo) * (padFraction || 0);
    return [lo - pad, hi + pad];
  }

  // Round tick values ("1, 2, 5 times a power of ten") covering [lo, hi].
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    const step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

  function timeTicks(t0, t1, count) {
    const span = t1 - t0;
    if (!(span > 0)) return [t0];
    const step = TIME_STEPS.find((s) => span / s <= count) || Math.ceil(span / count / 86400) * 86400;
    const out = [];
    for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) out.push(t);
    return out;
  }

  const pad2 = (n) => String(n).padStart(2, "0");
  // Local wall-clock time of Unix seconds; seconds only when the axis needs them.
  function clock(t, withSeconds) {
    const d = new Date(t * 1000);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    return withSeconds ? `${hm}:${pad2(d.getSeconds())}` : hm;
  }

  function fmtNum(v) {
    if (typeof v !== "number" || !isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return String(Number(v.toPrecision(4)));
  }

  // Formatting used by the tables of app.js as well, so numbers read the same on the whole page.
  // Times are shown in the reader's local time zone; the detail panel adds the date.
  function fmtTime(iso, withDate) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const time = clock(d.getTime() / 1000, true);
    return withDate ? `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${time}` : time;
  }

  function fmtAge(sec) {
    if (sec == null) return "–";
    if (sec < 60) return `${sec.toFixed(1)} s`;
    return sec < 3600 ? `${Math.round(sec / 60)} min` : `${(sec / 3600).toFixed(1)} h`;
  }

  // A task value in a table cell: numbers rounded, anything else as short JSON.
  function fmtValue(v) {
    if (typeof v === "number") return fmtNum(v);
    if (v == null) return "";
    const s = typeof v === "string" ? v : JSON.stringify(v);
    return s.length > 40 ? s.slice(0, 39) + "…" : s;
  }

  // Horizontal grid lines and labels of a y axis at x0, spanning to x1.
  function yAxis(values, y, x0, x1) {
    let s = "";
    for (const v of values) {
      const yy = y(v).toFixed(1);
      s += `<line class="grid" x1="${x0}" x2="${x1}" y1="${yy}" y2="${yy}"/>`;
      s += `<text x="${x0 - 6}" y="${yy}" dy="0.32em" text-anchor="end">${esc(fmtNum(v))}</text>`;
    }
    return s;
  }

  function timeAxis(t0, t1, x, yBottom, width) {
    const values = timeTicks(t0, t1, Math.max(2, Math.floor(width / 90)));
    const withSeconds = t1 - t0 < 600;
    let s = "";
    for (const t of values) {
      s += `<text x="${x(t).toFixed(1)}" y="${yBottom + 16}" text-anchor="middle">${clock(t, withSeconds)}</text>`;
    }
    return s;
  }

  function polyline(pts) {
    let d = "";
    for (let i = 0; i < pts.length; i++) d += (i ? "L" : "M") + pts[i][0].toFixed(1) + " " + pts[i][1].toFixed(1);
    return d;
  }

  /*
   * Throughput (top panel) and tasks per state (bottom panel) over time.
   * buffer: [{t: Unix seconds, throughput: number, counts: {queued, running, finished, failed}}].
   */
  function throughput(svg, buffer) {
    if (!buffer.length) {
      message(svg, "waiting for live summaries…");
      return;
    }
    const { w, h } = fit(svg, 260);
    const m = { l: 56, r: 150, t: 10, b: 24, gap: 28 };
    const panel = (h - m.t - m.b - m.gap) / 2;
    const top = [m.t, m.t + panel];
    const bottom = [m.t + panel + m.gap, h - m.b];
    const last = buffer[buffer.length - 1];
    // At least a minute wide: the first summaries then grow from the right instead of
    // stretching two points over the whole width.
    const t1 = last.t;
    const t0 = Math.min(buffer[0].t, t1 - 60);
    const x = scale(t0, t1, m.l, w - m.r);

    let maxRate = 0;
    let maxCount = 0;
    for (const p of buffer) {
      maxRate = Math.max(maxRate, p.throughput || 0);
      for (const s of STATES) maxCount = Math.max(maxCount, p.counts[s] || 0);
    }
    const yRate = scale(0, maxRate * 1.1 || 1, top[1], top[0]);
    const yCount = scale(0, maxCount * 1.05 || 1, bottom[1], bottom[0]);

    let s = yAxis(ticks(0, maxRate * 1.1 || 1, 3), yRate, m.l, w - m.r);
    s += yAxis(ticks(0, maxCount * 1.05 || 1, 3), yCount, m.l, w - m.r);
    s += `<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${top[1]}" y2="${top[1]}"/>`;
    s += `<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${bottom[1]}" y2="${bottom[1]}"/>`;

    const rate = buffer.map((p) => [x(p.t), yRate(p.throughput || 0)]);
    const area = polyline(rate) + `L${x(t1).toFixed(1)} ${top[1]}L${x(buffer[0].t).toFixed(1)} ${top[1]}Z`;
    s += `<path d="${area}" fill="${COLORS.throughput}" fill-opacity="0.12"/>`;
    s += `<path d="${polyline(rate)}" fill="none" stroke="${COLORS.throughput}" stroke-width="2"/>`;
    s += `<circle cx="${x(t1)}" cy="${yRate(last.throughput || 0)}" r="3" fill="${COLORS.throughput}"/>`;
    for (const st of STATES) {
      const line = buffer.map((p) => [x(p.t), yCount(p.counts[st] || 0)]);
      s += `<path d="${polyline(line)}" fill="none" stroke="${COLORS[st]}" stroke-width="1.8"/>`;
      s += `<circle cx="${x(t1)}" cy="${yCount(last.counts[st] || 0)}" r="3" fill="${COLORS[st]}"/>`;
    }
    s += timeAxis(t0, t1, x, h - m.b, w - m.l - m.r);

    // Legends on the right, with the latest values: the numbers people read first.
    const lx = w - m.r + 14;
    s += `<text class="axis-title" x="${lx}" y="${top[0] + 12}">finished / s</text>`;
    s += `<text x="${lx}" y="${top[0] + 30}" fill="${COLORS.throughput}" style="fill:${COLORS.throughput};font-size:16px;font-weight:600">${esc(fmtNum(last.throughput || 0))}</text>`;
    s += `<text class="axis-title" x="${lx}" y="${bottom[0] + 10}">tasks per state</text>`;
    STATES.forEach((st, i) => {
      const yy = bottom[0] + 28 + i * 16;
      s += `<rect x="${lx}" y="${yy - 8}" width="10" height="3" fill="${COLORS[st]}"/>`;
      s += `<text x="${lx + 16}" y="${yy - 3}">${st} ${esc(last.counts[st] || 0)}</text>`;
    });
    svg.innerHTML = s;
  }

  function isBetter(a, b, dir) {
    return dir === "max" ? a > b : a < b;
  }

  /*
   * One circle per history point (x: finish time, y: the output value) and a
   * step line of the best value so far. Circles carry data-key for clicks.
   */
  function history(svg, points, output, dir) {
    const pts = points.filter((p) => p.outputs && typeof p.outputs[output] === "number");
    if (!pts.length) {
      message(svg, `no numeric values of “${output}” yet`);
      return;
    }
    const { w, h } = fit(svg, 320);
    const m = { l: 64, r: 16, t: 24, b: 28 };
    let [t0, t1] = extent(pts.map((p) => p.t), 0.02);
    if (t1 - t0 < 4) {
      // Tasks finished within a second or two: widen to a few seconds, so the axis has labels.
      const mid = (t0 + t1) / 2;
      [t0, t1] = [mid - 2, mid + 2];
    }
    const [v0, v1] = extent(pts.map((p) => p.outputs[output]), 0.06);
    const x = scale(t0, t1, m.l, w - m.r);
    const y = scale(v0, v1, h - m.b, m.t);

    let s = yAxis(ticks(v0, v1, 5), y, m.l, w - m.r);
    s += `<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}"/>`;
    s += timeAxis(t0, t1, x, h - m.b, w - m.l - m.r);
    s += `<text class="axis-title" x="${m.l}" y="14">${esc(output)}</text>`;

    // Best-so-far as a step function: it holds its value until a better one arrives.
    let best = pts[0].outputs[output];
    let bestKey = pts[0].key;
    let d = `M${x(pts[0].t).toFixed(1)} ${y(best).toFixed(1)}`;
    for (const p of pts) {
      const v = p.outputs[output];
      if (isBetter(v, best, dir)) {
        best = v;
        bestKey = p.key;
        d += `H${x(p.t).toFixed(1)}V${y(v).toFixed(1)}`;
      }
    }
    d += `H${x(pts[pts.length - 1].t).toFixed(1)}`;

    const r = pts.length > 3000 ? 2 : pts.length > 500 ? 2.5 : 3.5;
    let circles = "";
    let bestCircle = "";
    for (const p of pts) {
      const v = p.outputs[output];
      const attrs = `cx="${x(p.t).toFixed(1)}" cy="${y(v).toFixed(1)}" data-key="${esc(p.key)}"`;
      const title = `<title>${esc(p.key)}: ${esc(output)} = ${esc(fmtNum(v))}</title>`;
      if (p.key === bestKey) {
        // Drawn last so the best point is never hidden under others.
        bestCircle = `<circle class="point best" ${attrs} r="${r + 2.5}" fill="${COLORS.best}" stroke="#fff">${title}</circle>`;
      } else {
        circles += `<circle class="point" ${attrs} r="${r}" fill="${COLORS.point}" fill-opacity="0.55">${title}</circle>`;
      }
    }
    s += circles;
    s += `<path class="best-so-far" d="${d}" fill="none" stroke="${COLORS.best}" stroke-width="2"/>`;
    s += bestCircle;
    s += `<text x="${w - m.r}" y="14" text-anchor="end" style="fill:${COLORS.best};font-weight:600">best ${esc(fmtNum(best))}</text>`;
    svg.innerHTML = s;
  }

  // Colour of a line by quality q in [0, 1] (1 = best): pale grey-blue to deep blue.
  function qualityColor(q) {
    const a = [203, 213, 225];
    const b = [29, 78, 216];
    const c = a.map((v, i) => Math.round(v + (b[i] - v) * q));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  /*
   * The numeric inputs against the output: a scatter for one input, parallel
   * coordinates (inputs then output, one path per point, latest 2,000) for more.
   */
  function inputs(svg, points, inputNames, output, dir) {
    const all = points.filter((p) => p.outputs && typeof p.outputs[output] === "number");
    if (!inputNames.length) {
      message(svg, "the tasks have no numeric inputs");
      return;
    }
    if (!all.length) {
      message(svg, `no numeric values of “${output}” yet`);
      return;
    }
    const { w, h } = fit(svg, 300);
    if (inputNames.length === 1) {
      scatter(svg, all, inputNames[0], output, w, h);
      return;
    }
    const pts = all.slice(-MAX_PC_LINES);
    const axes = inputNames.concat([output]);
    const m = { l: 40, r: 40, t: 36, b: 24 };
    const xs = axes.map((_, i) => m.l + ((w - m.l - m.r) * i) / (axes.length - 1));
    const value = (p, name, i) => (i === axes.length - 1 ? p.outputs[name] : p.inputs && p.inputs[name]);
    const ys = axes.map((name, i) => {
      const vals = [];
      for (const p of pts) {
        const v = value(p, name, i);
        if (typeof v === "number") vals.push(v);
      }
      const [lo, hi] = extent(vals, 0);
      return { lo, hi, y: scale(lo, hi, h - m.b, m.t) };
    });

    // Quality q is the rank by output (0 worst, 1 best), not the value: skewed outputs would
    // otherwise paint nearly every line alike. Worst first, so the best lines are drawn on top.
    const sign = dir === "max" ? 1 : -1;
    const ordered = pts.slice().sort((a, b) => sign * (a.outputs[output] - b.outputs[output]))
      .map((p, i, all) => ({ p, q: all.length > 1 ? i / (all.length - 1) : 1 }));
    // Many lines: fade all but the best ones, which are what an optimisation is looking for.
    const opacity = (q) => (pts.length > 300 ? 0.03 + 0.55 * Math.pow(q, 8) : 0.3 + 0.4 * q);

    let s = "";
    axes.forEach((name, i) => {
      const label = name.length > 16 ? name.slice(0, 15) + "…" : name;
      const cls = i === axes.length - 1 ? "pc-output" : "";
      s += `<line class="axis" x1="${xs[i]}" x2="${xs[i]}" y1="${m.t}" y2="${h - m.b}"/>`;
      s += `<text class="axis-title ${cls}" x="${xs[i]}" y="12" text-anchor="middle"><title>${esc(name)}</title>${esc(label)}</text>`;
      s += `<text x="${xs[i]}" y="${m.t - 6}" text-anchor="middle">${esc(fmtNum(ys[i].hi))}</text>`;
      s += `<text x="${xs[i]}" y="${h - m.b + 14}" text-anchor="middle">${esc(fmtNum(ys[i].lo))}</text>`;
    });
    for (const { p, q } of ordered) {
      let d = "";
      let pen = "M"; // a missing value lifts the pen: the line skips that axis
      axes.forEach((name, i) => {
        const v = value(p, name, i);
        if (typeof v !== "number") {
          pen = "M";
          return;
        }
        d += pen + xs[i].toFixed(1) + " " + ys[i].y(v).toFixed(1);
        pen = "L";
      });
      s += `<path class="pc-line" d="${d}" stroke="${qualityColor(q)}" stroke-opacity="${opacity(q).toFixed(3)}" stroke-width="1.2" data-key="${esc(p.key)}"><title>${esc(p.key)}: ${esc(output)} = ${esc(fmtNum(p.outputs[output]))}</title></path>`;
    }
    if (all.length > pts.length) {
      s += `<text x="${w - m.r}" y="${h - 4}" text-anchor="end">latest ${pts.length} of ${all.length} shown</text>`;
    }
    svg.innerHTML = s;
  }

  function scatter(svg, pts, input, output, w, h) {
    const m = { l: 64, r: 16, t: 24, b: 36 };
    const withInput = pts.filter((p) => p.inputs && typeof p.inputs[input] === "number");
    if (!withInput.length) {
      message(svg, `no numeric values of “${input}”`);
      return;
    }
    const [a0, a1] = extent(withInput.map((p) => p.inputs[input]), 0.04);
    const [v0, v1] = extent(withInput.map((p) => p.outputs[output]), 0.06);
    const x = scale(a0, a1, m.l, w - m.r);
    const y = scale(v0, v1, h - m.b, m.t);
    let s = yAxis(ticks(v0, v1, 5), y, m.l, w - m.r);
    s += `<line class="axis" x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}"/>`;
    for (const v of ticks(a0, a1, Math.max(2, Math.floor((w - m.l - m.r) / 80)))) {
      s += `<text x="${x(v).toFixed(1)}" y="${h - m.b + 16}" text-anchor="middle">${esc(fmtNum(v))}</text>`;
    }
    s += `<text class="axis-title" x="${(m.l + w - m.r) / 2}" y="${h - 2}" text-anchor="middle">${esc(input)}</text>`;
    s += `<text class="axis-title" x="${m.l}" y="14">${esc(output)}</text>`;
    const r = withInput.length > 3000 ? 2 : 3;
    for (const p of withInput) {
      const v = p.outputs[output];
      s += `<circle class="scatter-point" cx="${x(p.inputs[input]).toFixed(1)}" cy="${y(v).toFixed(1)}" r="${r}" fill="${COLORS.point}" fill-opacity="0.55" data-key="${esc(p.key)}"><title>${esc(p.key)}: ${esc(input)} = ${esc(fmtNum(p.inputs[input]))}, ${esc(output)} = ${esc(fmtNum(v))}</title></circle>`;
    }
    svg.innerHTML = s;
  }

  window.Charts = { throughput, history, inputs, fmtNum, fmtTime, fmtAge, fmtValue };
})();
