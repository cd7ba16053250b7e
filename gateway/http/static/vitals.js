// Vital-sign metadata, formatting, and the per-patient model the views draw from.

export const METRICS = Object.freeze({
  heart_rate: { label: "HR", name: "Heart rate", unit: "bpm", digits: 0, span: 20, cls: "hr" },
  spo2: { label: "SpO₂", name: "Oxygen saturation", unit: "%", digits: 0, span: 6, cls: "spo2" },
  resp_rate: { label: "RR", name: "Respiration rate", unit: "rpm", digits: 0, span: 8, cls: "rr" },
  systolic_bp: { label: "NIBP", name: "Blood pressure", unit: "mmHg", digits: 0, span: 30, cls: "bp" },
  diastolic_bp: { label: "DIA", name: "Diastolic pressure", unit: "mmHg", digits: 0, span: 20, cls: "bp" },
  temperature: { label: "Temp", name: "Temperature", unit: "°C", digits: 1, span: 1.5, cls: "temp" },
});

/** The vitals a tile shows, in order; blood pressure shows systolic/diastolic together. */
export const TILE_METRICS = Object.freeze(["heart_rate", "spo2", "resp_rate", "systolic_bp", "temperature"]);

/**
 * How often each vital is expected when the device's own cadence is not known yet
 * (ms). Continuous sensors report about once a second; 5 s leaves room for the
 * gateway's throttling and batching. A cuff and a thermometer are spot checks, often
 * every 15 min on a ward. Once a device has sent a few readings live, the median of its
 * last gaps replaces these (see `Patient.expectedInterval`), never below 5 s.
 */
export const EXPECTED_INTERVAL_MS = Object.freeze({
  heart_rate: 5_000,
  spo2: 5_000,
  resp_rate: 5_000,
  systolic_bp: 900_000,
  diastolic_bp: 900_000,
  temperature: 900_000,
});
export const MIN_INTERVAL_MS = 5_000;
/** A vital older than this many expected intervals shows NO SIGNAL. */
export const NO_SIGNAL_INTERVALS = 2;
const CADENCE_GAPS = 5; // the last gaps kept per vital; 3 are needed before they count

/** How much history a tile's sparkline covers. */
export const SPARK_WINDOW_MS = 15 * 60 * 1000;

export function formatValue(metric, value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toFixed(METRICS[metric]?.digits ?? 1);
}

export function metricLabel(metric) {
  return METRICS[metric]?.label ?? metric ?? "device";
}

export function metricUnit(metric) {
  return METRICS[metric]?.unit ?? "";
}

/** "now", "12 s", "4 min", "2 h", "3 d": short enough for a tile. */
export function formatAge(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 2) return "now";
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

const pad = (n) => String(n).padStart(2, "0");

export function formatClock(ms, { seconds = true } = {}) {
  const d = new Date(ms);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

export function formatDateTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${formatClock(ms)}`;
}

/** "below 92 %" for a rule or an alert (both carry direction and threshold). */
export function formatLimit(metric, direction, threshold) {
  if (threshold === null || threshold === undefined) return "";
  return `${direction} ${formatValue(metric, threshold)} ${metricUnit(metric)}`.trim();
}

export function violates(rule, value) {
  return rule.direction === "below" ? value < rule.threshold : value > rule.threshold;
}

/** One patient: where they are, and what their devices last said. */
export class Patient {
  constructor(id, ward) {
    this.id = id;
    this.ward = ward;
    this.devices = [];
    /** @type {Map<string, {value: number, ts: number}>} metric -> newest reading */
    this.latest = new Map();
    /** @type {Map<string, Array<[number, number]>>} metric -> [ts ms, value], oldest first */
    this.series = new Map();
    /** @type {Map<string, number[]>} metric -> the last gaps between live readings (ms) */
    this.gaps = new Map();
  }

  /** Record a reading; returns false if it is older than the one already shown. */
  observe(metric, ts, value, now = Date.now()) {
    const held = this.latest.get(metric);
    const newer = !held || ts >= held.ts;
    if (newer) this.latest.set(metric, { value, ts });
    if (held && ts > held.ts) {
      const gaps = this.gaps.get(metric) ?? [];
      gaps.push(ts - held.ts);
      if (gaps.length > CADENCE_GAPS) gaps.shift();
      this.gaps.set(metric, gaps);
    }
    const points = this.series.get(metric) ?? [];
    if (!points.length || ts > points[points.length - 1][0]) points.push([ts, value]);
    this.series.set(metric, trim(points, now));
    return newer;
  }

  /** Put history (older than anything live) in front of the live points. */
  setHistory(metric, history, now = Date.now()) {
    const live = this.series.get(metric) ?? [];
    const first = live.length ? live[0][0] : Infinity;
    const merged = history.filter(([t]) => t < first).concat(live);
    this.series.set(metric, trim(merged, now));
  }

  /** The vital's usual gap (ms): the median of its last live gaps, or the default. */
  expectedInterval(metric) {
    const gaps = this.gaps.get(metric) ?? [];
    if (gaps.length < 3) return EXPECTED_INTERVAL_MS[metric] ?? MIN_INTERVAL_MS;
    const sorted = [...gaps].sort((a, b) => a - b);
    return Math.max(MIN_INTERVAL_MS, sorted[Math.floor(sorted.length / 2)]);
  }

  /** {age, lost}: lost when the newest value is older than twice the usual gap. */
  signal(metric, now = Date.now()) {
    const reading = this.latest.get(metric);
    if (!reading) return { age: null, lost: false };
    const age = now - reading.ts;
    return { age, lost: age > NO_SIGNAL_INTERVALS * this.expectedInterval(metric) };
  }

  points(metric, now = Date.now()) {
    return trim(this.series.get(metric) ?? [], now);
  }
}

function trim(points, now) {
  const from = now - SPARK_WINDOW_MS;
  let i = 0;
  while (i < points.length && points[i][0] < from) i += 1;
  return i ? points.slice(i) : points;
}
