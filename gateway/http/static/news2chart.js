// The patient view's NEWS2 history: the score over the selected range as a step line
// coloured by band, with the band lines at 5 (medium) and 7 (high) and their zones
// shaded, from GET /v1/patients/{id}/news2/history (each point scored as it was then).

import { svg, text, timeStep } from "./svg.js";
import { formatClock } from "./vitals.js";

/** The chart's band lines: where the RCP chart's clinical response changes. */
export const BAND_LINES = Object.freeze([
  { score: 5, band: "medium", label: "5 medium" },
  { score: 7, band: "high", label: "7 high" },
]);

/**
 * An SVG chart of `points` ([{ts, score, band, complete}], oldest first) over [from, to]
 * (ms). Incomplete points (a vital missing then) are drawn dashed: a lower bound.
 */
export function news2Chart({ from, to, points, label }) {
  const W = 720;
  const H = 170;
  const m = { l: 46, r: 196, t: 10, b: 24 }; // as the vitals' charts: their time axes line up
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const top = Math.max(10, ...points.map((p) => p.score + 1));
  const x = (t) => m.l + ((Math.min(Math.max(t, from), to) - from) / (to - from)) * pw;
  const y = (v) => m.t + ph - (v / top) * ph;
  const root = svg("svg", { class: "n2chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });

  // Zones first (under everything): medium 5–6, high 7 and up.
  root.append(svg("rect", { class: "n2chart__zone n2chart__zone--medium", x: m.l, width: pw, y: y(7), height: y(5) - y(7) }));
  root.append(svg("rect", { class: "n2chart__zone n2chart__zone--high", x: m.l, width: pw, y: y(top), height: y(7) - y(top) }));
  for (let v = 0; v <= top; v += top > 12 ? 4 : 2) {
    root.append(svg("line", { class: "chart__grid", x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v) }));
    root.append(text(m.l - 6, y(v) + 4, String(v), { class: "chart__tick", "text-anchor": "end" }));
  }
  const step = timeStep(to - from);
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    root.append(svg("line", { class: "chart__grid", x1: x(t), x2: x(t), y1: m.t, y2: m.t + ph }));
    root.append(text(x(t), H - 6, formatClock(t, { seconds: false }), { class: "chart__tick", "text-anchor": "middle" }));
  }
  root.append(svg("rect", { class: "chart__frame", x: m.l, y: m.t, width: pw, height: ph }));
  for (const line of BAND_LINES) {
    root.append(svg("line", { class: `n2chart__band-line n2chart__band-line--${line.band}`, "data-score": line.score, x1: m.l, x2: m.l + pw, y1: y(line.score), y2: y(line.score) }));
    root.append(text(m.l + pw + 6, y(line.score) + 4, line.label, { class: `n2chart__band-label n2chart__band-label--${line.band}` }));
  }

  // The score holds until the next point: a step line, one polyline per run of points
  // with the same band and completeness, so the colour says the band at every instant.
  let run = [];
  const flush = (next) => {
    if (!run.length) return;
    const coords = [];
    for (let i = 0; i < run.length; i += 1) {
      const p = run[i];
      const end = i + 1 < run.length ? run[i + 1].t : next ? next.t : p.t;
      coords.push(`${x(p.t).toFixed(1)},${y(p.score).toFixed(1)}`, `${x(end).toFixed(1)},${y(p.score).toFixed(1)}`);
    }
    if (next) coords.push(`${x(next.t).toFixed(1)},${y(next.score).toFixed(1)}`);
    const { band, complete } = run[0];
    root.append(svg("polyline", { class: `n2chart__line n2chart__line--${band}${complete ? "" : " n2chart__line--incomplete"}`, points: coords.join(" ") }));
    run = [];
  };
  const series = points.map((p) => ({ ...p, t: Date.parse(p.ts) }));
  for (const p of series) {
    if (run.length && (run[0].band !== p.band || run[0].complete !== p.complete)) flush(p);
    run.push(p);
  }
  flush(null);
  const last = series[series.length - 1];
  if (last) root.append(svg("circle", { class: `n2chart__dot n2chart__dot--${last.band}`, cx: x(last.t), cy: y(last.score), r: 3.5 }));
  if (!points.length) {
    root.append(text(m.l + pw / 2, m.t + ph / 2, "No score in this period", { class: "chart__empty", "text-anchor": "middle" }));
  }
  return root;
}
