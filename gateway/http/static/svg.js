// Inline SVG built with DOM APIs: a tile's sparkline and the patient view's charts.
// Everything is attributes and classes (no style attributes: the page's CSP forbids them).

import { formatClock, formatValue } from "./vitals.js";

const NS = "http://www.w3.org/2000/svg";

export function svg(name, attrs = {}, children = []) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const child of children) node.append(child);
  return node;
}

export function text(x, y, content, attrs = {}) {
  const node = svg("text", { x, y, ...attrs });
  node.textContent = content;
  return node;
}

/** [low, high] covering `values`, at least `span` wide, padded a little. */
function yRange(values, span) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < span) {
    const mid = (hi + lo) / 2;
    lo = mid - span / 2;
    hi = mid + span / 2;
  }
  const pad = (hi - lo) * 0.08;
  return [lo - pad, hi + pad];
}

/** Split a time series where readings stop for longer than `gap` ms. */
function segments(points, gap) {
  const out = [];
  let current = [];
  for (const p of points) {
    if (current.length && p[0] - current[current.length - 1][0] > gap) {
      out.push(current);
      current = [];
    }
    current.push(p);
  }
  if (current.length) out.push(current);
  return out;
}

/**
 * A sparkline of [ts, value] points over [from, to], with dashed lines for the
 * rule thresholds that fall inside its range.
 */
export function sparkline(points, { from, to, span, thresholds = [], cls = "" }) {
  const W = 120;
  const H = 30;
  const root = svg("svg", {
    class: `spark ${cls}`,
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    "aria-hidden": "true",
    focusable: "false",
  });
  if (!points.length) return root;
  const [lo, hi] = yRange(points.map((p) => p[1]), span);
  const x = (t) => ((t - from) / (to - from)) * W;
  const y = (v) => H - ((v - lo) / (hi - lo)) * H;
  for (const th of thresholds) {
    if (th.threshold > lo && th.threshold < hi) {
      root.append(
        svg("line", {
          class: `spark__limit spark__limit--${th.priority}`,
          x1: 0,
          x2: W,
          y1: y(th.threshold),
          y2: y(th.threshold),
          "vector-effect": "non-scaling-stroke",
        }),
      );
    }
  }
  for (const seg of segments(points, 90_000)) {
    const coords = seg.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.append(
      svg("polyline", { class: "spark__line", points: coords, "vector-effect": "non-scaling-stroke" }),
    );
  }
  const [lt, lv] = points[points.length - 1];
  root.append(svg("circle", { class: "spark__dot", cx: x(lt), cy: y(lv), r: 1.6 }));
  return root;
}

/** A 1, 2 or 5 × 10^n step giving about `count` intervals over [lo, hi]. */
function niceStep(lo, hi, count) {
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

export function timeStep(rangeMs) {
  const hour = 3_600_000;
  if (rangeMs <= hour) return 15 * 60_000;
  if (rangeMs <= 4 * hour) return hour;
  return 2 * hour;
}

/**
 * A trend chart over [from, to]: per series a min–max band and a mean line from
 * summary buckets ({t, min, max, mean}), rule thresholds drawn in as labelled dashes.
 */
export function trendChart({ from, to, series, thresholds = [], span, digits, label, bucketMs }) {
  const W = 720;
  const H = 190;
  const m = { l: 46, r: 196, t: 10, b: 24 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const root = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": label,
  });
  const values = series.flatMap((s) => s.buckets.flatMap((b) => [b.min, b.max]));
  const limits = thresholds.map((t) => t.threshold);
  const [rawLo, rawHi] = yRange(values.length ? [...values, ...limits] : limits.length ? limits : [0], span);
  const yStep = niceStep(rawLo, rawHi, 4);
  const lo = Math.floor(rawLo / yStep) * yStep;
  const hi = Math.ceil(rawHi / yStep) * yStep;
  const x = (t) => m.l + ((t - from) / (to - from)) * pw;
  const y = (v) => m.t + ph - ((v - lo) / (hi - lo)) * ph;
  const fmt = (v) => Number(v).toFixed(yStep < 1 ? Math.max(digits, 1) : 0);

  // Grid: a line per value step and per time step.
  for (let i = 0, v = lo; v <= hi + yStep / 2; i += 1, v = lo + i * yStep) {
    root.append(svg("line", { class: "chart__grid", x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v) }));
    root.append(text(m.l - 6, y(v) + 4, fmt(v), { class: "chart__tick", "text-anchor": "end" }));
  }
  const step = timeStep(to - from);
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    root.append(svg("line", { class: "chart__grid", x1: x(t), x2: x(t), y1: m.t, y2: m.t + ph }));
    root.append(
      text(x(t), H - 6, formatClock(t, { seconds: false }), { class: "chart__tick", "text-anchor": "middle" }),
    );
  }
  root.append(svg("rect", { class: "chart__frame", x: m.l, y: m.t, width: pw, height: ph }));

  for (const s of series) {
    for (const seg of segments(s.buckets.map((b) => [b.t, b]), bucketMs * 2.5)) {
      const top = seg.map(([t, b]) => `${x(t).toFixed(1)},${y(b.max).toFixed(1)}`);
      const bottom = seg.map(([t, b]) => `${x(t).toFixed(1)},${y(b.min).toFixed(1)}`).reverse();
      root.append(svg("polygon", { class: `chart__band chart__band--${s.cls}`, points: [...top, ...bottom].join(" ") }));
      const mean = seg.map(([t, b]) => `${x(t).toFixed(1)},${y(b.mean).toFixed(1)}`).join(" ");
      root.append(svg("polyline", { class: `chart__line chart__line--${s.cls}`, points: mean }));
    }
  }

  for (const th of thresholds) {
    const yy = y(th.threshold);
    const name = th.label ?? th.name;
    // The limit and the rule's label; the priority is the line's colour (and its
    // tooltip), never a word beside the limit ("< 41 high" read as a high limit).
    const line = svg("line", { class: `chart__limit chart__limit--${th.priority}`, x1: m.l, x2: m.l + pw, y1: yy, y2: yy });
    const tip = svg("title");
    tip.textContent = `${name}: ${th.priority} priority`;
    line.append(tip);
    root.append(line);
    const sign = th.direction === "below" ? "<" : ">";
    root.append(
      text(m.l + pw + 6, yy + 4, `${sign} ${formatValue(th.metric, th.threshold)} ${name}`, {
        class: `chart__limit-label chart__limit-label--${th.priority}`,
      }),
    );
  }
  if (!values.length) {
    root.append(text(m.l + pw / 2, m.t + ph / 2, "No readings in this period", { class: "chart__empty", "text-anchor": "middle" }));
  }
  return root;
}
