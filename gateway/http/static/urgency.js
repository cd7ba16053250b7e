// The ward's order: the patient who most needs someone first. Pure, no DOM.
//
// Keys, most significant first: an unacknowledged high-priority alert; escalation
// (how many times); the highest other active alert (acknowledged high, then medium;
// low-priority alerts do not move a tile); the NEWS2 band (low-medium, a single 3,
// outranks low) and score; then the bed/patient id, in natural order ("bed-9" before
// "bed-10"). Only alert state and NEWS2 move a tile, never a vital's value, so steady
// data keeps a steady order.

import { PRIORITY_RANK, isActive, needsAck } from "./alerts.js";

export const BAND_RANK = Object.freeze({ low: 0, "low-medium": 1, medium: 2, high: 3 });

/** The sort key of one patient from its open alerts and its NEWS2 item (or null). */
export function urgencyOf(alerts, news2) {
  const active = alerts.filter(isActive);
  const rank = Math.max(0, ...active.map((a) => PRIORITY_RANK[a.priority] ?? 0));
  return {
    unackedHigh: alerts.some((a) => a.priority === "high" && a.status === "active_unack") ? 1 : 0,
    escalation: Math.max(0, ...alerts.filter(needsAck).map((a) => a.escalation ?? 0)),
    alert: rank >= PRIORITY_RANK.medium ? rank : 0,
    band: news2 ? BAND_RANK[news2.band] ?? 0 : -1,
    score: news2 ? news2.score : -1,
  };
}

const collator = new Intl.Collator("en", { numeric: true });

/** For Array.sort over {id, urgency}: the most urgent first. */
export function compareUrgency(a, b) {
  const x = a.urgency;
  const y = b.urgency;
  return (
    y.unackedHigh - x.unackedHigh ||
    y.escalation - x.escalation ||
    y.alert - x.alert ||
    y.band - x.band ||
    y.score - x.score ||
    collator.compare(a.id, b.id)
  );
}
