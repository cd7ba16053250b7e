// The open alerts as the dashboard stream reports them: pure state, no DOM, no I/O.
//
// Each stream `alert` event carries the alert's whole current state, so applying
// events in event-id order is all it takes; an alert leaves the book when it is
// both cleared and acknowledged (`cleared_ack`), or closed because its device was
// revoked (`cleared_ack` with `closed_reason` "device_revoked" and `closed_by`).

export const PRIORITY_RANK = Object.freeze({ high: 3, medium: 2, low: 1 });

export const STATUS_TEXT = Object.freeze({
  active_unack: "Active · not acknowledged",
  active_ack: "Active · acknowledged",
  cleared_unack: "Cleared · acknowledge to dismiss",
  cleared_ack: "Cleared · acknowledged",
});

/** The status as words; an alert closed by its device's revocation says so, and by whom. */
export function statusText(alert) {
  if (alert.closed_reason === "device_revoked") return `Closed · device revoked by ${alert.closed_by}`;
  return STATUS_TEXT[alert.status] ?? alert.status;
}

export function isActive(alert) {
  return alert.status === "active_unack" || alert.status === "active_ack";
}

export function needsAck(alert) {
  return alert.status === "active_unack" || alert.status === "cleared_unack";
}

/** What clinicians read for an alert's rule: its label, else the rule's name. */
export function alertLabel(alert) {
  return alert.label || alert.rule;
}

export function isSilenced(alert, now = Date.now()) {
  return Boolean(alert.silenced_until) && Date.parse(alert.silenced_until) > now;
}

export function isOffline(alert) {
  return alert.rule === "device-offline";
}

/** Highest priority first, then the newest raised first. */
export function compareAlerts(a, b) {
  return (
    PRIORITY_RANK[b.priority] - PRIORITY_RANK[a.priority] ||
    Date.parse(b.raised_at) - Date.parse(a.raised_at) ||
    b.id - a.id
  );
}

export class AlertBook {
  constructor() {
    /** @type {Map<number, object>} alert id -> alert (as sent by the gateway) */
    this.alerts = new Map();
    /** @type {Map<number, number>} alert id -> event id of the state we hold */
    this.versions = new Map();
  }

  clear() {
    this.alerts.clear();
    this.versions.clear();
  }

  /**
   * Apply one `alert` event. Returns what changed, or null for an event older than
   * the state already held: {alert, previous, isNew, closed, deviceRevoked}; the
   * last says the device list changed too (the patient may have no device left).
   */
  apply(event) {
    const alert = event.alert;
    const held = this.versions.get(alert.id);
    if (held !== undefined && held >= event.event_id) return null;
    const previous = this.alerts.get(alert.id) ?? null;
    const closed = alert.status === "cleared_ack";
    if (closed) {
      this.alerts.delete(alert.id);
      // Keep the version: a late replay of an older event must not resurrect it.
      this.versions.set(alert.id, event.event_id);
    } else {
      this.alerts.set(alert.id, alert);
      this.versions.set(alert.id, event.event_id);
    }
    return {
      alert,
      previous,
      isNew: previous === null && !closed && held === undefined,
      closed,
      deviceRevoked: closed && alert.closed_reason === "device_revoked",
    };
  }

  get(id) {
    return this.alerts.get(id) ?? null;
  }

  /** Open alerts (optionally of one ward), in panel order. */
  open(ward = "") {
    const all = [...this.alerts.values()];
    return (ward ? all.filter((a) => a.ward === ward) : all).sort(compareAlerts);
  }

  forPatient(patientId) {
    return [...this.alerts.values()].filter((a) => a.patient_id === patientId).sort(compareAlerts);
  }

  wards() {
    return new Set([...this.alerts.values()].map((a) => a.ward).filter(Boolean));
  }
}

/** Panel order within a patient: needing acknowledgement first, the most escalated,
 * then highest priority, then newest. */
export function comparePanel(a, b) {
  return (
    Number(needsAck(b)) - Number(needsAck(a)) ||
    (b.escalation ?? 0) - (a.escalation ?? 0) ||
    compareAlerts(a, b)
  );
}

/**
 * The panel's groups: one per patient, [{patientId, ward, alerts}], the group whose
 * most urgent alert comes first in `comparePanel` first. So every group with an alert
 * to acknowledge is above every group without one, and inside a group the same holds.
 */
export function panelGroups(alerts) {
  const groups = new Map();
  for (const alert of [...alerts].sort(comparePanel)) {
    const group = groups.get(alert.patient_id) ?? { patientId: alert.patient_id, ward: alert.ward, alerts: [] };
    group.alerts.push(alert);
    groups.set(alert.patient_id, group);
  }
  return [...groups.values()];
}

/**
 * What a patient's tile says about its alerts: the highest priority among active
 * alerts (falling back to cleared-but-unacknowledged ones), and the text to show.
 */
export function tileAlarm(alerts) {
  const active = alerts.filter(isActive);
  if (active.length) {
    const top = active[0].priority; // alerts come sorted by compareAlerts
    const rules = active.filter((a) => a.priority === top).map(alertLabel);
    const unacked = active.some((a) => a.priority === top && a.status === "active_unack");
    const escalation = Math.max(0, ...alerts.filter(needsAck).map((a) => a.escalation ?? 0));
    const more = active.length - rules.length;
    const text =
      (escalation ? `ESCALATED ×${escalation} · ` : "") +
      `${top.toUpperCase()} ALERT${unacked ? "" : " (acknowledged)"}: ${rules.join(", ")}` +
      (more > 0 ? ` +${more} more` : "");
    return { level: top, unacked, escalation, text };
  }
  const cleared = alerts.filter((a) => a.status === "cleared_unack");
  if (cleared.length) {
    return {
      level: "cleared",
      unacked: true,
      escalation: 0,
      text: `CLEARED, NOT ACKNOWLEDGED: ${cleared.map(alertLabel).join(", ")}`,
    };
  }
  return { level: "none", unacked: false, escalation: 0, text: "No active alerts" };
}
