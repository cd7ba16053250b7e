// The ward view: one tile per patient with the newest value of each vital, its age,
// a 15-minute sparkline, NEWS2, and the patient's alert state in colour AND words.
// Tiles are ordered by urgency (urgency.js); a move is animated (FLIP), so the eye can
// follow a patient who rises. With many patients the tiles turn compact: 40 fit a
// 1920×1080 screen.

import { tileAlarm } from "./alerts.js";
import { h, setText } from "./dom.js";
import { sparkline } from "./svg.js";
import { compareUrgency, urgencyOf } from "./urgency.js";
import {
  METRICS,
  SPARK_WINDOW_MS,
  TILE_METRICS,
  formatAge,
  formatValue,
  violates,
} from "./vitals.js";

/** More visible tiles than this and the grid turns compact (no sparklines, smaller type). */
export const COMPACT_FROM = 12;
const MOVE_MS = 450;

/** "NEWS2 5 · medium"; an incomplete score is a lower bound and says so. */
export function news2Text(item) {
  if (!item) return "NEWS2 —";
  if (!item.complete) return `NEWS2 ≥${item.score} · incomplete`;
  return `NEWS2 ${item.score} · ${item.band}`;
}

export class WardView {
  /**
   * @param {HTMLElement} container  the tile grid
   * @param {{open: (patientId: string) => void, rulesFor: (metric: string) => object[]}} hooks
   */
  constructor(container, hooks) {
    this.container = container;
    this.hooks = hooks;
    /** @type {Map<string, object>} patient id -> tile parts */
    this.tiles = new Map();
    this.ward = "";
    this._reorderPending = false;
  }

  /** Make the tiles match `patients`, in urgency order. */
  setPatients(patients) {
    const keep = new Set(patients.map((p) => p.id));
    for (const [id, tile] of this.tiles) {
      if (!keep.has(id)) {
        tile.root.remove();
        this.tiles.delete(id);
      }
    }
    for (const p of patients) {
      const tile = this.tiles.get(p.id) ?? this._build(p);
      tile.root.dataset.ward = p.ward;
      setText(tile.wardLabel, p.ward);
      if (!tile.root.isConnected) this.container.append(tile.root);
    }
    this.filter(this.ward); // first: the density decides whether sparklines are drawn
    for (const p of patients) this.updateVitals(p);
    this._reorder(false);
  }

  filter(ward) {
    this.ward = ward;
    for (const tile of this.tiles.values()) tile.root.hidden = Boolean(ward) && tile.root.dataset.ward !== ward;
    this.container.dataset.density = this.visibleCount() > COMPACT_FROM ? "compact" : "comfortable";
  }

  visibleCount() {
    return [...this.tiles.values()].filter((t) => !t.root.hidden).length;
  }

  /** Patient ids in urgency order (what the grid shows, once a pending move is done). */
  order() {
    return [...this.tiles.entries()]
      .map(([id, tile]) => ({ id, urgency: urgencyOf(tile.alerts, tile.news2) }))
      .sort(compareUrgency)
      .map((x) => x.id);
  }

  _build(patient) {
    const id = `tile-${patient.id}`;
    const cells = new Map();
    const vitals = h("div", { class: "tile__vitals" });
    for (const metric of TILE_METRICS) {
      const meta = METRICS[metric];
      const value = h("span", { class: "vital__value", text: "—" });
      const age = h("span", { class: "vital__age", text: "" });
      const signal = h("span", { class: "vital__signal", text: "NO SIGNAL", hidden: true });
      const spark = h("div", { class: "vital__spark" });
      const cell = h(
        "div",
        { class: `vital vital--${meta.cls} vital--${metric}`, "data-metric": metric },
        [
          h("div", { class: "vital__head" }, [
            h("abbr", { class: "vital__label", title: meta.name, text: meta.label }),
            h("span", { class: "vital__unit", text: meta.unit }),
            age,
          ]),
          value,
          signal,
          spark,
        ],
      );
      vitals.append(cell);
      cells.set(metric, { cell, value, age, signal, spark });
    }
    const wardLabel = h("span", { class: "tile__ward", text: patient.ward });
    const news2 = h("span", { class: "tile__news2", "data-band": "none", text: news2Text(null) });
    const status = h("p", { class: "tile__status", "data-level": "none", text: "No active alerts" });
    const open = h("button", {
      type: "button",
      class: "tile__open",
      "aria-label": `Open patient ${patient.id}`,
      text: patient.id,
    });
    const root = h(
      "article",
      { class: "tile", id, "data-patient": patient.id, "data-level": "none", "aria-labelledby": `${id}-name` },
      [
        h("header", { class: "tile__head" }, [
          h("h3", { class: "tile__name", id: `${id}-name` }, [open]),
          wardLabel,
          news2,
        ]),
        status,
        vitals,
      ],
    );
    root.addEventListener("click", () => this.hooks.open(patient.id));
    const tile = { root, status, cells, wardLabel, news2El: news2, alerts: [], news2: null };
    this.tiles.set(patient.id, tile);
    return tile;
  }

  /** Values, ages and sparklines of one patient's tile. */
  updateVitals(patient, now = Date.now()) {
    const tile = this.tiles.get(patient.id);
    if (!tile) return;
    const compact = this.container.dataset.density === "compact";
    for (const [metric, ref] of tile.cells) {
      const reading = patient.latest.get(metric);
      let text = formatValue(metric, reading?.value);
      if (metric === "systolic_bp") {
        const dia = patient.latest.get("diastolic_bp");
        text = `${text}/${formatValue("diastolic_bp", dia?.value)}`;
      }
      setText(ref.value, text);
      const rules = this.hooks.rulesFor(metric);
      ref.alarming = reading !== undefined && rules.some((r) => violates(r, reading.value));
      // Compact tiles hide sparklines: drawing 200 of them every 5 s is wasted work.
      if (compact) {
        if (ref.spark.firstChild) ref.spark.replaceChildren();
      } else {
        ref.spark.replaceChildren(
          sparkline(patient.points(metric, now), {
            from: now - SPARK_WINDOW_MS,
            to: now,
            span: METRICS[metric].span,
            thresholds: rules,
            cls: `spark--${METRICS[metric].cls}`,
          }),
        );
      }
    }
    this.updateAges(patient, now);
  }

  /** Ages, and NO SIGNAL for a vital older than twice its usual interval: its last
   * value greyed (never red, never normal-looking) and how old it is. */
  updateAges(patient, now = Date.now()) {
    const tile = this.tiles.get(patient.id);
    if (!tile) return;
    for (const [metric, ref] of tile.cells) {
      const { age, lost } = patient.signal(metric, now);
      setText(ref.age, age === null ? "no data" : lost ? `${formatAge(age)} ago` : formatAge(age));
      ref.signal.hidden = !lost;
      ref.cell.classList.toggle("vital--nosignal", lost);
      ref.cell.classList.toggle("vital--nodata", age === null);
      ref.cell.classList.toggle("vital--violating", Boolean(ref.alarming) && !lost);
    }
  }

  /** Colour and words for the patient's open alerts (sorted, highest first). */
  updateAlarm(patientId, alerts) {
    const tile = this.tiles.get(patientId);
    if (!tile) return;
    const alarm = tileAlarm(alerts);
    tile.alerts = alerts;
    tile.root.dataset.level = alarm.level;
    tile.root.classList.toggle("tile--unacked", alarm.level !== "none" && alarm.unacked);
    tile.root.classList.toggle("tile--escalated", alarm.escalation > 0);
    tile.status.dataset.level = alarm.level;
    setText(tile.status, alarm.text);
    this._scheduleReorder();
  }

  /** The patient's NEWS2 worklist item ({score, band, complete, missing}) or null. */
  setNews2(patientId, item) {
    const tile = this.tiles.get(patientId);
    if (!tile) return;
    const before = tile.news2;
    tile.news2 = item;
    tile.news2El.dataset.band = item ? (item.complete ? item.band : "incomplete") : "none";
    setText(tile.news2El, news2Text(item));
    tile.news2El.title = item && !item.complete ? `Missing: ${item.missing.join(", ")}` : "";
    if (before?.band !== item?.band || before?.score !== item?.score) this._scheduleReorder();
  }

  // Many changes arrive together (a resume, a poll): move once, after them.
  _scheduleReorder() {
    if (this._reorderPending) return;
    this._reorderPending = true;
    requestAnimationFrame(() => {
      this._reorderPending = false;
      this._reorder(true);
    });
  }

  /** Put the tiles in urgency order; with `animate`, each moved tile glides from where
   * it was (FLIP: first, last, invert, play) unless the user asked for less motion. */
  _reorder(animate) {
    const wanted = this.order().map((id) => this.tiles.get(id).root);
    const current = [...this.container.children];
    if (wanted.length === current.length && wanted.every((el, i) => el === current[i])) return;
    const reduce = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    const first = animate && !reduce ? new Map(wanted.map((el) => [el, el.getBoundingClientRect()])) : null;
    this.container.append(...wanted);
    if (!first) return;
    for (const el of wanted) {
      const was = first.get(el);
      const now = el.getBoundingClientRect();
      const dx = was.left - now.left;
      const dy = was.top - now.top;
      if (el.hidden || (dx === 0 && dy === 0)) continue;
      // The Web Animations API: allowed by the page's CSP, unlike a style attribute.
      el.animate([{ transform: `translate(${dx}px, ${dy}px)` }, { transform: "none" }], {
        duration: MOVE_MS,
        easing: "cubic-bezier(.2, .7, .2, 1)",
      });
    }
  }
}
