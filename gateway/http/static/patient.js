// The patient view: the last 15 min / 1 / 4 / 12 hours of each vital as a trend chart
// with the alert rules' thresholds drawn in, NEWS2 now with the clinician's observations
// (ACVPU, air or oxygen) to enter, and the patient's alert history.

import * as api from "./api.js";
import { alertLabel, statusText } from "./alerts.js";
import { h, setText } from "./dom.js";
import { news2Chart } from "./news2chart.js";
import { LimitsSection, chartRules, loadLimits } from "./limits.js";
import { trendChart } from "./svg.js";
import { METRICS, formatDateTime, formatLimit, formatValue } from "./vitals.js";

const HOUR = 3_600_000;
// ~240 buckets (90 for 15 min, so a cuff every 20 s still draws one line): detailed
// enough, and one small response each.
const BUCKETS = { 0.25: ["10s", 10_000], 1: ["15s", 15_000], 4: ["60s", 60_000], 12: ["180s", 180_000] };
/** The range a patient opens on: a few minutes of data fill it, not a sliver of 4 h. */
const DEFAULT_HOURS = 0.25;
const rangeText = (hours) => (hours < 1 ? `${hours * 60} min` : `${hours} h`);
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
   * @param {object} els  section, title, subtitle, status, charts, history, empty, range (radio
   *   inputs), news2, form, consciousness, oxygen, result, limits
   * @param {{rulesFor: (metric: string) => object[], failed: (e: Error) => void,
   *          news2Changed: () => void}} hooks
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.patient = null;
    this.hours = DEFAULT_HOURS;
    this._timer = null;
    this._loading = 0;
    this.limits = new LimitsSection(els.limits, { saved: () => this.refresh(), failed: (e) => hooks.failed(e) });
    for (const input of els.range) {
      input.addEventListener("change", () => {
        if (input.checked) {
          this.hours = Number(input.value);
          this.refresh();
        }
      });
    }
    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this._observe();
    });
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
    this.els.form.reset();
    setText(this.els.result, "");
    this._news2(null);
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
    // The patient's own limits: their charts draw these (the ward's if they fail).
    const limits = loadLimits(patient.id).catch(() => null);
    try {
      const [charts, history, news2, scores] = await Promise.all([
        Promise.all(CHARTS.map((c) => this._chart(patient, c, from, to, bucket, bucketMs, limits))),
        api.alertHistory(patient.id),
        api.news2(patient.id).catch(() => null),
        api.news2History(patient.id, this.hours * 60).catch(() => null),
      ]);
      if (run !== this._loading || this.patient !== patient) return; // superseded
      this.els.charts.replaceChildren(...charts);
      this._news2History(scores, from, to);
      this.limits.show(patient.id, await limits);
      this._news2(news2);
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

  /** NEWS2 in words: score and band, what is missing, and what is only assumed. */
  _news2(body) {
    const el = this.els.news2;
    if (!body) {
      el.dataset.band = "none";
      setText(el, "NEWS2 —");
      return;
    }
    el.dataset.band = body.complete ? body.band : "incomplete";
    let text = body.complete
      ? `NEWS2 ${body.score} · ${body.band}`
      : `NEWS2 ≥${body.score} · incomplete: no ${body.missing.join(", ")}`;
    if (body.assumed.length) text += ` · assumed: ${body.assumed.join(", ").replaceAll("_", " ")}`;
    setText(el, text);
  }

  /** The NEWS2 history chart under the vitals, over the same range. */
  _news2History(body, from, to) {
    const box = this.els.section.querySelector("#patient-news2-chart");
    if (!box) return;
    if (!body) {
      box.replaceChildren();
      return;
    }
    const last = body.points[body.points.length - 1];
    box.replaceChildren(
      h("figure", { class: "trend trend--news2" }, [
        h("figcaption", { class: "trend__caption" }, [
          h("span", { class: "trend__title", text: `NEWS2, every ${body.step_s} s` }),
          last ? h("span", { class: "news2-line", "data-band": last.complete ? last.band : "incomplete", text: `${last.complete ? "" : "≥"}${last.score} · ${last.band}` }) : null,
        ]),
        news2Chart({ from, to, points: body.points, label: `NEWS2 score, last ${rangeText(this.hours)}; band lines at 5 (medium) and 7 (high)` }),
      ]),
    );
  }

  async _observe() {
    const patient = this.patient;
    const consciousness = this.els.consciousness.value || undefined;
    const oxygen = this.els.oxygen.value ? this.els.oxygen.value === "oxygen" : undefined;
    if (!patient) return;
    if (consciousness === undefined && oxygen === undefined) {
      setText(this.els.result, "Choose consciousness, breathing or both.");
      return;
    }
    try {
      await api.observe(patient.id, { consciousness, oxygen });
      if (this.patient !== patient) return;
      setText(this.els.result, `Recorded at ${formatDateTime(Date.now())}.`);
      this.els.form.reset();
      this._news2(await api.news2(patient.id));
      this.hooks.news2Changed();
    } catch (e) {
      if (e instanceof api.AuthRequired) this.hooks.failed(e);
      else setText(this.els.result, `Not recorded: ${e.message}`);
    }
  }

  async _chart(patient, spec, from, to, bucket, bucketMs, patientLimits) {
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
    const own = await patientLimits;
    const thresholds = spec.metrics.flatMap((m) => (own ? chartRules(own.rules, m) : this.hooks.rulesFor(m)));
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
        label: `${spec.title}, last ${rangeText(this.hours)}` + (limits.length ? `; limits ${limits.join("; ")}` : ""),
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
          h("td", { text: alertLabel(a) }),
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
