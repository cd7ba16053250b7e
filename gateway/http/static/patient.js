// The patient view: the last 1/4/12 hours of each vital as a trend chart with the
// alert rules' thresholds drawn in, and the patient's alert history.

import * as api from "./api.js";
import { statusText } from "./alerts.js";
import { h, setText } from "./dom.js";
import { trendChart } from "./svg.js";
import { METRICS, formatDateTime, formatLimit, formatValue } from "./vitals.js";

const HOUR = 3_600_000;
// ~240 buckets whatever the range: detailed enough, and one small response each.
const BUCKETS = { 1: ["15s", 15_000], 4: ["60s", 60_000], 12: ["180s", 180_000] };
const CHARTS = [
  { metrics: ["heart_rate"], title: "Heart rate" },
  { metrics: ["spo2"], title: "SpO₂" },
  { metrics: ["resp_rate"], title: "Respiration rate" },
  { metrics: ["systolic_bp", "diastolic_bp"], title: "Blood pressure (systolic / diastolic)" },
  { metrics: ["temperature"], title: "Temperature" },
];
const REFRESH_MS = 30_000;

export class PatientView {
  /**
   * @param {object} els  section, title, subtitle, status, charts, history, empty, range (radio inputs)
   * @param {{rulesFor: (metric: string) => object[], failed: (e: Error) => void}} hooks
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.patient = null;
    this.hours = 4;
    this._timer = null;
    this._loading = 0;
    for (const input of els.range) {
      input.addEventListener("change", () => {
        if (input.checked) {
          this.hours = Number(input.value);
          this.refresh();
        }
      });
    }
  }

  get isOpen() {
    return this.patient !== null;
  }

  open(patient) {
    this.patient = patient;
    this.els.section.hidden = false;
    setText(this.els.title, `Patient ${patient.id}`);
    setText(this.els.subtitle, `Ward ${patient.ward} · device ${patient.devices.join(", ") || "—"}`);
    for (const input of this.els.range) input.checked = Number(input.value) === this.hours;
    this.els.charts.replaceChildren();
    this.els.history.replaceChildren();
    this.refresh();
    clearInterval(this._timer);
    this._timer = setInterval(() => this.refresh(), REFRESH_MS);
    this.els.title.focus();
  }

  close() {
    this.patient = null;
    clearInterval(this._timer);
    this._timer = null;
    this.els.section.hidden = true;
  }

  /** Its tile's alarm text, kept in step with the ward view. */
  setAlarm(alarm) {
    this.els.status.dataset.level = alarm.level;
    setText(this.els.status, alarm.text);
  }

  async refresh() {
    const patient = this.patient;
    if (!patient) return;
    const run = ++this._loading;
    const to = Date.now();
    const from = to - this.hours * HOUR;
    const [bucket, bucketMs] = BUCKETS[this.hours];
    try {
      const [charts, history] = await Promise.all([
        Promise.all(CHARTS.map((c) => this._chart(patient, c, from, to, bucket, bucketMs))),
        api.alertHistory(patient.id),
      ]);
      if (run !== this._loading || this.patient !== patient) return; // superseded
      this.els.charts.replaceChildren(...charts);
      this._history(history.items);
    } catch (e) {
      this.hooks.failed(e);
    }
  }

  /** Called on every alert event of this patient: the history table follows live. */
  alertChanged() {
    clearTimeout(this._historyTimer);
    this._historyTimer = setTimeout(async () => {
      if (!this.patient) return;
      try {
        this._history((await api.alertHistory(this.patient.id)).items);
      } catch (e) {
        this.hooks.failed(e);
      }
    }, 300);
  }

  async _chart(patient, spec, from, to, bucket, bucketMs) {
    const series = await Promise.all(
      spec.metrics.map(async (metric) => {
        const body = await api.summary({ patientId: patient.id, metric, since: from, until: to, bucket });
        return {
          cls: METRICS[metric].cls + (metric === "diastolic_bp" ? "-dia" : ""),
          buckets: body.buckets.map((b) => ({
            t: Date.parse(b.start) + bucketMs / 2,
            min: b.min,
            max: b.max,
            mean: b.mean,
          })),
        };
      }),
    );
    const primary = spec.metrics[0];
    const thresholds = spec.metrics.flatMap((m) => this.hooks.rulesFor(m));
    const now = spec.metrics
      .map((m) => patient.latest.get(m))
      .map((r, i) => formatValue(spec.metrics[i], r?.value))
      .join("/");
    const limits = thresholds.map((r) => `${r.name}: ${formatLimit(r.metric, r.direction, r.threshold)}`);
    return h("figure", { class: "trend" }, [
      h("figcaption", { class: "trend__caption" }, [
        h("span", { class: "trend__title", text: spec.title }),
        h("span", { class: `trend__now trend__now--${METRICS[primary].cls}`, text: `${now} ${METRICS[primary].unit}` }),
      ]),
      trendChart({
        from,
        to,
        series,
        thresholds,
        span: METRICS[primary].span,
        digits: METRICS[primary].digits,
        bucketMs,
        label: `${spec.title}, last ${this.hours} h` + (limits.length ? `; limits ${limits.join("; ")}` : ""),
      }),
    ]);
  }

  _history(items) {
    const rows = [...items].sort((a, b) => Date.parse(b.raised_at) - Date.parse(a.raised_at)).slice(0, 100);
    this.els.empty.hidden = rows.length > 0;
    this.els.history.replaceChildren(
      ...rows.map((a) =>
        h("tr", { "data-alert-id": a.id, "data-status": a.status }, [
          h("td", { text: formatDateTime(Date.parse(a.raised_at)) }),
          h("td", {}, [h("span", { class: `badge badge--${a.priority}`, text: a.priority.toUpperCase() })]),
          h("td", { text: a.rule }),
          h("td", {
            text: a.metric
              ? `${formatValue(a.metric, a.worst_value)} (${formatLimit(a.metric, a.direction, a.threshold)})`
              : "—",
          }),
          h("td", { text: statusText(a) }),
          h("td", { text: a.cleared_at ? formatDateTime(Date.parse(a.cleared_at)) : "—" }),
          h("td", { text: a.acked_by ? `${a.acked_by}, ${formatDateTime(Date.parse(a.acked_at))}` : "—" }),
        ]),
      ),
    );
  }
}
