// The alert panel: open alerts, highest priority and newest first, each with its
// values, limit, age and an Acknowledge button. An alert that is both cleared and
// acknowledged fades out, then leaves.

import { needsAck, statusText } from "./alerts.js";
import { h, setText } from "./dom.js";
import { formatAge, formatClock, formatLimit, formatValue, metricLabel, metricUnit } from "./vitals.js";

const FADE_MS = 1200;

function raisedText(alert, now) {
  const age = formatAge(now - Date.parse(alert.raised_at));
  return age === "now" ? "raised just now" : `raised ${age} ago`;
}

export class AlertPanel {
  /**
   * @param {HTMLOListElement} list
   * @param {{ack: (id: number) => boolean, open: (patientId: string) => void}} hooks
   */
  constructor(list, hooks) {
    this.list = list;
    this.hooks = hooks;
    /** @type {Map<number, object>} alert id -> card parts */
    this.cards = new Map();
    this.canAck = false;
  }

  /** Show exactly `alerts` (already filtered and sorted). */
  render(alerts) {
    const keep = new Set(alerts.map((a) => a.id));
    for (const [id, card] of this.cards) {
      if (!keep.has(id)) {
        card.root.remove(); // filtered out, not closed: no fade
        this.cards.delete(id);
      }
    }
    let cursor = null; // the card after which the next one belongs
    for (const alert of alerts) {
      let card = this.cards.get(alert.id);
      if (!card || card.fading) {
        card = this._build(alert);
        this.cards.set(alert.id, card);
      }
      this._fill(card, alert);
      const expected = cursor ? cursor.root.nextElementSibling : this.list.firstElementChild;
      if (expected !== card.root) {
        if (cursor) cursor.root.after(card.root);
        else this.list.prepend(card.root);
      }
      cursor = card;
    }
  }

  /** The alert is closed (cleared and acknowledged, or its device revoked): fade its
   * card out, saying how it closed, then drop it. */
  closed(alert) {
    const card = this.cards.get(alert.id);
    if (card) this._fade(alert.id, card, alert);
  }

  setConnected(connected) {
    this.canAck = connected;
    for (const card of this.cards.values()) this._ackState(card);
  }

  showError(alertId, detail) {
    const card = this.cards.get(alertId);
    if (!card) return;
    card.pending = false;
    card.error.hidden = false;
    setText(card.error, `Not acknowledged: ${detail}`);
    this._ackState(card);
  }

  tick(now = Date.now()) {
    for (const card of this.cards.values()) {
      if (card.alert) setText(card.age, raisedText(card.alert, now));
    }
  }

  _build(alert) {
    const parts = {
      badge: h("span", { class: "badge" }),
      rule: h("span", { class: "alert__rule" }),
      patient: h("button", { type: "button", class: "alert__patient" }),
      ward: h("span", { class: "alert__ward" }),
      values: h("p", { class: "alert__values" }),
      limit: h("p", { class: "alert__limit" }),
      status: h("span", { class: "alert__status" }),
      age: h("span", { class: "alert__age" }),
      ack: h("button", { type: "button", class: "alert__ack", text: "Acknowledge" }),
      error: h("p", { class: "alert__error", role: "alert", hidden: true }),
    };
    const root = h("li", { class: "alert", "data-alert-id": alert.id }, [
      h("div", { class: "alert__head" }, [parts.badge, parts.rule]),
      h("p", { class: "alert__who" }, [parts.patient, parts.ward]),
      parts.values,
      parts.limit,
      h("p", { class: "alert__meta" }, [parts.status, parts.age]),
      h("div", { class: "alert__actions" }, [parts.ack]),
      parts.error,
    ]);
    const card = { root, ...parts, alert: null, pending: false, fading: false };
    parts.patient.addEventListener("click", () => this.hooks.open(card.alert.patient_id));
    parts.ack.addEventListener("click", () => {
      if (!card.alert || card.pending) return;
      card.error.hidden = true;
      card.pending = this.hooks.ack(card.alert.id);
      if (!card.pending) this.showError(card.alert.id, "not connected, try again when connected");
      this._ackState(card);
    });
    return card;
  }

  _fill(card, alert) {
    const changed = card.alert?.status !== alert.status;
    card.alert = alert;
    if (changed) card.pending = false;
    const { root } = card;
    root.dataset.priority = alert.priority;
    root.dataset.status = alert.status;
    root.dataset.rule = alert.rule;
    root.dataset.patient = alert.patient_id;
    setText(card.badge, alert.priority.toUpperCase());
    card.badge.className = `badge badge--${alert.priority}`;
    setText(card.rule, alert.rule);
    setText(card.patient, alert.patient_id);
    card.patient.setAttribute("aria-label", `Open patient ${alert.patient_id}`);
    setText(card.ward, alert.ward ? ` · ${alert.ward}` : "");
    if (alert.metric) {
      const unit = metricUnit(alert.metric);
      const fmt = (v) => `${formatValue(alert.metric, v)} ${unit}`.trim();
      setText(card.values, `${metricLabel(alert.metric)} ${fmt(alert.last_value)} · worst ${fmt(alert.worst_value)}`);
      setText(card.limit, `Limit: ${formatLimit(alert.metric, alert.direction, alert.threshold)}`);
      card.limit.hidden = false;
    } else if (alert.rule !== "device-offline") {
      // A NEWS2 rule's alert: its values are scores; the band is the patient's now.
      const incomplete = alert.news2_complete === false ? ", incomplete" : "";
      setText(card.values, `NEWS2 ${alert.last_value} · worst ${alert.worst_value} (${alert.news2_band ?? "?"}${incomplete})`);
      card.limit.hidden = true;
    } else {
      setText(card.values, `Device ${alert.device_id} stopped sending`);
      card.limit.hidden = true;
    }
    let status = statusText(alert);
    if (alert.acked_by) status = `${status} by ${alert.acked_by} at ${formatClock(Date.parse(alert.acked_at))}`;
    setText(card.status, `${status} · `);
    setText(card.age, raisedText(alert, Date.now()));
    card.ack.setAttribute(
      "aria-label",
      `Acknowledge ${alert.priority} alert ${alert.rule} for patient ${alert.patient_id}`,
    );
    this._ackState(card);
  }

  _ackState(card) {
    const alert = card.alert;
    const wanted = alert !== null && needsAck(alert) && !card.fading;
    card.ack.hidden = !wanted;
    card.ack.disabled = !this.canAck || card.pending;
    setText(card.ack, card.pending ? "Acknowledging…" : "Acknowledge");
    card.ack.title = this.canAck ? "" : "Reconnecting: acknowledge once connected";
  }

  _fade(id, card, closed) {
    if (card.fading) return;
    card.fading = true;
    this.cards.delete(id);
    card.root.classList.add("alert--leaving");
    card.ack.hidden = true;
    if (closed.closed_reason) setText(card.status, `${statusText(closed)} · `);
    else if (card.alert) setText(card.status, "Cleared and acknowledged · ");
    setTimeout(() => card.root.remove(), FADE_MS);
  }
}
