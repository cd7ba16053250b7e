// The alert panel: open alerts grouped by patient, alerts to acknowledge before
// acknowledged ones (alerts.js `panelGroups`). Each card shows the alert's label, its
// priority and its limit as three separate things, an Acknowledge and a Silence button,
// and escalation in words and colour. A group with several alerts to acknowledge has
// "Acknowledge all"; an alert that is both cleared and acknowledged fades out, then leaves.

import { alertLabel, isActive, isSilenced, needsAck, panelGroups, statusText } from "./alerts.js";
import { h, setText } from "./dom.js";
import { formatAge, formatClock, formatLimit, formatValue, metricLabel, metricUnit } from "./vitals.js";

const FADE_MS = 1200;

function raisedText(alert, now) {
  const age = formatAge(now - Date.parse(alert.raised_at));
  return age === "now" ? "raised just now" : `raised ${age} ago`;
}

/** "2 min", "90 s": what a silence button offers. */
export function silenceText(seconds) {
  return seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`;
}

export class AlertPanel {
  /**
   * @param {HTMLOListElement} list
   * @param {{ack: (id: number) => boolean, silence: (id: number) => boolean,
   *          silenceSeconds: () => number, open: (patientId: string) => void}} hooks
   */
  constructor(list, hooks) {
    this.list = list;
    this.hooks = hooks;
    /** @type {Map<number, object>} alert id -> card parts */
    this.cards = new Map();
    /** @type {Map<string, object>} patient id -> group parts */
    this.groups = new Map();
    this.canAck = false;
  }

  /** Show exactly `alerts` (already filtered), grouped and ordered. */
  render(alerts) {
    const keep = new Set(alerts.map((a) => a.id));
    for (const [id, card] of this.cards) {
      if (!keep.has(id)) {
        card.root.remove(); // filtered out, not closed: no fade
        this.cards.delete(id);
      }
    }
    const wantedGroups = panelGroups(alerts);
    const wantedIds = new Set(wantedGroups.map((g) => g.patientId));
    for (const [id, group] of this.groups) {
      if (!wantedIds.has(id)) this._dropGroup(id, group);
    }
    let groupCursor = null;
    for (const spec of wantedGroups) {
      let group = this.groups.get(spec.patientId);
      if (!group || group.leaving) {
        group = this._buildGroup(spec);
        this.groups.set(spec.patientId, group);
      }
      setText(group.ward, spec.ward ? ` · ${spec.ward}` : "");
      place(this.list, group, groupCursor);
      groupCursor = group;
      let cursor = null;
      for (const alert of spec.alerts) {
        let card = this.cards.get(alert.id);
        if (!card || card.fading) {
          card = this._build(alert);
          this.cards.set(alert.id, card);
        }
        this._fill(card, alert);
        place(group.list, card, cursor);
        cursor = card;
      }
      group.alerts = spec.alerts;
      this._groupState(group);
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
    for (const group of this.groups.values()) this._groupState(group);
  }

  showError(alertId, detail) {
    const card = this.cards.get(alertId);
    if (!card) return;
    card.pending = false;
    card.silencing = false;
    card.error.hidden = false;
    setText(card.error, `Not done: ${detail}`);
    this._ackState(card);
  }

  /** Acknowledge every open alert in `alerts` that needs it; how many were sent. */
  ackAll(alerts) {
    let sent = 0;
    for (const alert of alerts) {
      const card = this.cards.get(alert.id);
      if (card && this._ack(card)) sent += 1;
    }
    return sent;
  }

  tick(now = Date.now()) {
    for (const card of this.cards.values()) {
      if (!card.alert) continue;
      setText(card.age, raisedText(card.alert, now));
      this._silenceState(card, now); // a silence that ends shows at once
    }
  }

  _buildGroup(spec) {
    const patient = h("button", {
      type: "button",
      class: "alert-group__patient",
      "aria-label": `Open patient ${spec.patientId}`,
      text: spec.patientId,
    });
    const ward = h("span", { class: "alert-group__ward" });
    const ackAll = h("button", { type: "button", class: "alert-group__ack btn btn--quiet" });
    const list = h("ol", { class: "alert-group__list" });
    const root = h("li", { class: "alert-group", "data-patient": spec.patientId }, [
      h("div", { class: "alert-group__head" }, [h("span", {}, [patient, ward]), ackAll]),
      list,
    ]);
    const group = { root, ward, ackAll, list, alerts: [], leaving: false };
    patient.addEventListener("click", () => this.hooks.open(spec.patientId));
    ackAll.addEventListener("click", () => this.ackAll(group.alerts));
    return group;
  }

  _groupState(group) {
    const waiting = group.alerts.filter((a) => needsAck(a) && !this.cards.get(a.id)?.pending).length;
    group.ackAll.hidden = waiting < 2 || group.leaving;
    group.ackAll.disabled = !this.canAck;
    setText(group.ackAll, `Acknowledge all ${waiting} for this patient`);
    group.root.dataset.unacked = String(group.alerts.some(needsAck));
  }

  _dropGroup(id, group) {
    this.groups.delete(id);
    group.leaving = true;
    group.ackAll.hidden = true;
    // Its cards may be fading out: the group goes with the last of them.
    if (!group.list.firstElementChild) group.root.remove();
    else setTimeout(() => group.root.remove(), FADE_MS);
  }

  _build(alert) {
    const parts = {
      badge: h("span", { class: "badge" }),
      label: h("span", { class: "alert__label" }),
      escalated: h("p", { class: "alert__escalated", hidden: true }),
      values: h("p", { class: "alert__values" }),
      limit: h("p", { class: "alert__limit" }),
      status: h("span", { class: "alert__status" }),
      age: h("span", { class: "alert__age" }),
      silenced: h("p", { class: "alert__silenced", hidden: true }),
      ack: h("button", { type: "button", class: "alert__ack", text: "Acknowledge" }),
      silence: h("button", { type: "button", class: "alert__silence btn btn--quiet" }),
      error: h("p", { class: "alert__error", role: "alert", hidden: true }),
    };
    const root = h("li", { class: "alert", "data-alert-id": alert.id }, [
      h("div", { class: "alert__head" }, [parts.badge, parts.label]),
      parts.escalated,
      parts.values,
      parts.limit,
      h("p", { class: "alert__meta" }, [parts.status, parts.age]),
      parts.silenced,
      h("div", { class: "alert__actions" }, [parts.ack, parts.silence]),
      parts.error,
    ]);
    const card = { root, ...parts, alert: null, pending: false, silencing: false, fading: false };
    parts.ack.addEventListener("click", () => this._ack(card));
    parts.silence.addEventListener("click", () => {
      if (!card.alert || card.silencing) return;
      card.error.hidden = true;
      card.silencing = this.hooks.silence(card.alert.id);
      if (!card.silencing) this.showError(card.alert.id, "not connected, try again when connected");
      this._silenceState(card);
    });
    return card;
  }

  _ack(card) {
    if (!card.alert || card.pending || !needsAck(card.alert)) return false;
    card.error.hidden = true;
    card.pending = this.hooks.ack(card.alert.id);
    if (!card.pending) this.showError(card.alert.id, "not connected, try again when connected");
    this._ackState(card);
    const group = this.groups.get(card.alert.patient_id);
    if (group) this._groupState(group);
    return card.pending;
  }

  _fill(card, alert) {
    if (card.alert?.status !== alert.status) card.pending = false;
    if (card.alert?.silenced_until !== alert.silenced_until) card.silencing = false;
    card.alert = alert;
    const { root } = card;
    root.dataset.priority = alert.priority;
    root.dataset.status = alert.status;
    root.dataset.rule = alert.rule;
    root.dataset.patient = alert.patient_id;
    root.dataset.escalation = String(alert.escalation ?? 0);
    // Label, priority and limit: three things, never run together ("< 41 high").
    setText(card.badge, alert.priority.toUpperCase());
    card.badge.className = `badge badge--${alert.priority}`;
    card.badge.title = `${alert.priority} priority`;
    setText(card.label, alertLabel(alert));
    const escalated = (alert.escalation ?? 0) > 0 && needsAck(alert);
    card.escalated.hidden = !escalated;
    setText(card.escalated, `ESCALATED ×${alert.escalation}: nobody has acknowledged it`);
    root.classList.toggle("alert--escalated", escalated);
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
    const label = alertLabel(alert);
    card.ack.setAttribute("aria-label", `Acknowledge ${alert.priority} alert ${label} for patient ${alert.patient_id}`);
    card.silence.setAttribute("aria-label", `Silence ${alert.priority} alert ${label} for patient ${alert.patient_id}`);
    this._ackState(card);
  }

  _ackState(card) {
    const alert = card.alert;
    const wanted = alert !== null && needsAck(alert) && !card.fading;
    card.ack.hidden = !wanted;
    card.ack.disabled = !this.canAck || card.pending;
    setText(card.ack, card.pending ? "Acknowledging…" : "Acknowledge");
    card.ack.title = this.canAck ? "" : "Reconnecting: acknowledge once connected";
    this._silenceState(card);
  }

  /** Silence: offered on an active alert nobody acknowledged, while its sound is on. */
  _silenceState(card, now = Date.now()) {
    const alert = card.alert;
    if (!alert) return;
    const silenced = isSilenced(alert, now);
    card.silenced.hidden = !silenced;
    if (silenced) {
      const by = alert.silenced_by ? ` by ${alert.silenced_by}` : "";
      setText(card.silenced, `Sound silenced${by} until ${formatClock(Date.parse(alert.silenced_until))}`);
    }
    card.root.classList.toggle("alert--silenced", silenced);
    card.silence.hidden = card.fading || silenced || !(isActive(alert) && alert.status === "active_unack");
    card.silence.disabled = !this.canAck || card.silencing;
    setText(card.silence, card.silencing ? "Silencing…" : `Silence ${silenceText(this.hooks.silenceSeconds())}`);
  }

  _fade(id, card, closed) {
    if (card.fading) return;
    card.fading = true;
    this.cards.delete(id);
    card.root.classList.add("alert--leaving");
    card.ack.hidden = true;
    card.silence.hidden = true;
    if (closed.closed_reason) setText(card.status, `${statusText(closed)} · `);
    else if (card.alert) setText(card.status, "Cleared and acknowledged · ");
    setTimeout(() => card.root.remove(), FADE_MS);
  }
}

/** Put `item.root` right after `after.root` (first in `parent` when null), moving it
 * only if it is elsewhere: nodes not placed (fading cards) drift to the end. */
function place(parent, item, after) {
  const expected = after ? after.root.nextElementSibling : parent.firstElementChild;
  if (expected === item.root) return;
  if (after) after.root.after(item.root);
  else parent.prepend(item.root);
}
