// The report view (#report): the alarm-fatigue report of GET /v1/reports/alarms drawn
// as figures and bars: alerts per patient-day by rule and priority, time to acknowledge
// (p50/p90) by priority, nuisance alarms, silences, escalations, the longest
// unacknowledged alert. The figures and their definitions are the gateway's.

import * as api from "./api.js";
import { h, setText } from "./dom.js";
import { svg, text } from "./svg.js";
import { formatDateTime } from "./vitals.js";

const PRIORITIES = ["high", "medium", "low"];

/** Seconds as a person says them: 42 s, 3 min 5 s, 2 h 10 min. */
export function formatSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

const number = (v, digits = 0) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits));

/** Horizontal bars, one per row ({label, value, text, cls}), scaled to the largest. */
function bars(rows, { label }) {
  const W = 720;
  const rowH = 24;
  const left = 250;
  const right = 90;
  const H = Math.max(rowH, rows.length * rowH) + 8;
  const root = svg("svg", { class: "chart report-bars", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  const max = Math.max(...rows.map((r) => r.value), 0) || 1;
  rows.forEach((r, i) => {
    const y = 4 + i * rowH;
    const width = ((W - left - right) * r.value) / max;
    const bar = svg("rect", { class: `report-bar report-bar--${r.cls}`, x: left, y: y + 4, width: Math.max(width, 1), height: rowH - 8, "data-value": r.value });
    const tip = svg("title");
    tip.textContent = `${r.label}: ${r.text}`;
    bar.append(tip);
    root.append(text(left - 8, y + rowH / 2 + 4, r.label, { class: "report-bar__label", "text-anchor": "end" }));
    root.append(bar);
    root.append(text(left + Math.max(width, 1) + 6, y + rowH / 2 + 4, r.text, { class: "report-bar__value" }));
  });
  if (!rows.length) root.append(text(W / 2, rowH / 2 + 6, "No alerts in this period", { class: "chart__empty", "text-anchor": "middle" }));
  return root;
}

export class ReportView {
  /**
   * @param {object} els  section, title, since (radio inputs), ward (select), body
   * @param {{wards: () => string[], labelOf: (rule: string) => string, failed: (e: Error) => void}} hooks
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.isOpen = false;
    this._loading = 0;
    for (const input of els.since) input.addEventListener("change", () => input.checked && this.refresh());
    els.ward.addEventListener("change", () => this.refresh());
  }

  /** Show the report of `ward` ("" = every ward of mine). */
  open(ward) {
    const wards = this.hooks.wards();
    const options = [h("option", { value: "", text: "All my wards" }), ...wards.map((w) => h("option", { value: w, text: w }))];
    this.els.ward.replaceChildren(...options);
    this.els.ward.value = wards.includes(ward) ? ward : "";
    if (!this.isOpen) {
      this.isOpen = true;
      this.els.section.hidden = false;
      this.els.title.focus();
    }
    this.refresh();
  }

  close() {
    this.isOpen = false;
    this.els.section.hidden = true;
  }

  get since() {
    return this.els.since.find((i) => i.checked)?.value ?? "24h";
  }

  async refresh() {
    const run = ++this._loading;
    const ward = this.els.ward.value;
    try {
      const report = await api.alarmReport({ since: this.since, ward });
      if (run !== this._loading || !this.isOpen) return; // superseded
      this._render(report);
    } catch (e) {
      this.hooks.failed(e);
      if (!(e instanceof api.AuthRequired)) this.els.body.replaceChildren(h("p", { class: "empty", text: `Report unavailable: ${e.message}` }));
    }
  }

  _render(r) {
    const t = r.total;
    const figure = (key, name, value) =>
      h("div", { class: "report-figure", "data-figure": key }, [h("dt", { text: name }), h("dd", { text: value })]);
    const figures = h("dl", { class: "report-figures" }, [
      figure("alerts", "Alerts", String(t.alerts)),
      figure("per_patient_day", "Per patient-day", number(t.per_patient_day, 2)),
      figure("ack_p50_s", "Time to acknowledge, median", formatSeconds(t.ack_p50_s)),
      figure("ack_p90_s", "Time to acknowledge, 90th percentile", formatSeconds(t.ack_p90_s)),
      figure("nuisance", "Nuisance alarms (cleared < 60 s, unacknowledged)", String(t.nuisance)),
      figure("silences", "Silences", String(t.silences)),
      figure("escalations", "Escalations", String(t.escalations)),
      figure("unacknowledged", "Never acknowledged", String(t.unacknowledged)),
    ]);
    const byRule = [...r.by_rule].sort(
      (a, b) => PRIORITIES.indexOf(a.priority) - PRIORITIES.indexOf(b.priority) || b.alerts - a.alerts,
    );
    const ruleBars = bars(
      byRule.map((f) => ({
        label: `${this.hooks.labelOf(f.rule)} · ${f.priority}`,
        value: f.per_patient_day ?? f.alerts,
        text: f.per_patient_day === null ? `${f.alerts} alerts` : `${number(f.per_patient_day, 2)} (${f.alerts})`,
        cls: f.priority,
      })),
      { label: "Alerts per patient-day, by rule and priority" },
    );
    const ackRows = r.by_priority
      .filter((f) => f.ack_p50_s !== null)
      .flatMap((f) => [
        { label: `${f.priority} · median`, value: f.ack_p50_s, text: formatSeconds(f.ack_p50_s), cls: f.priority },
        { label: `${f.priority} · 90th percentile`, value: f.ack_p90_s, text: formatSeconds(f.ack_p90_s), cls: f.priority },
      ]);
    const ackBars = bars(ackRows, { label: "Time to acknowledge by priority, median and 90th percentile" });
    const table = h("table", { class: "history report-table" }, [
      h("thead", {}, [
        h("tr", {}, ["Priority", "Alerts", "Per patient-day", "Acknowledged", "Nuisance", "Silences", "Escalations"].map((c) => h("th", { scope: "col", text: c }))),
      ]),
      h(
        "tbody",
        {},
        r.by_priority.map((f) =>
          h("tr", { "data-priority": f.priority }, [
            h("td", {}, [h("span", { class: `badge badge--${f.priority}`, text: f.priority.toUpperCase() })]),
            ...[f.alerts, number(f.per_patient_day, 2), f.acknowledged, f.nuisance, f.silences, f.escalations].map((v) => h("td", { text: String(v) })),
          ]),
        ),
      ),
    ]);
    const l = r.longest_unacknowledged;
    const longest = h("p", { id: "report-longest", class: "report-longest", "data-priority": l?.priority ?? "none" }, [
      l
        ? `${this.hooks.labelOf(l.rule)} (${l.priority}), patient ${l.patient_id}, ward ${l.ward}, raised ${formatDateTime(Date.parse(l.raised_at))}: ` +
          `unacknowledged for ${formatSeconds(l.unacknowledged_s)}${l.still_open ? ", still open" : ""}`
        : "None: every alert was acknowledged or cleared.",
    ]);
    const wards = r.wards === null ? "every ward" : `ward ${r.wards.join(", ")}`;
    this.els.body.replaceChildren(
      h("p", {
        class: "report-period",
        text: `${formatDateTime(Date.parse(r.since))} to ${formatDateTime(Date.parse(r.until))} · ${wards} · ${r.patients} patients, ${number(r.patient_days, 1)} patient-days`,
      }),
      figures,
      h("figure", { class: "trend" }, [h("figcaption", { class: "trend__title", text: "Alerts per patient-day, by rule and priority" }), ruleBars]),
      h("figure", { class: "trend" }, [h("figcaption", { class: "trend__title", text: "Time to acknowledge" }), ackBars]),
      h("h3", { class: "section-title", text: "By priority" }),
      h("div", { class: "history-wrap" }, [table]),
      h("h3", { class: "section-title", text: "Longest unacknowledged" }),
      longest,
    );
    setText(this.els.title, `Alarm report, last ${this.since === "7d" ? "7 days" : "24 hours"}`);
  }
}
