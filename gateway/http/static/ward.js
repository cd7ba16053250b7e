// The ward view: one tile per patient with the newest value of each vital, its age,
// a 15-minute sparkline, and the patient's alert state in colour AND words.

import { tileAlarm } from "./alerts.js";
import { h, setText } from "./dom.js";
import { sparkline } from "./svg.js";
import {
  METRICS,
  SPARK_WINDOW_MS,
  TILE_METRICS,
  formatAge,
  formatValue,
  violates,
} from "./vitals.js";

const STALE_MS = 60_000;

export class WardView {
  /**
   * @param {HTMLElement} container  the tile grid
   * @param {{open: (patientId: string) => void, rulesFor: (metric: string) => object[]}} hooks
   */
  constructor(container, hooks) {
    this.container = container;
    this.hooks = hooks;
    /** @type {Map<string, {root: HTMLElement, status: HTMLElement, cells: Map<string, object>}>} */
    this.tiles = new Map();
    this.ward = "";
  }

  /** Make the tiles match `patients` (sorted by ward, then id). */
  setPatients(patients) {
    const wanted = [...patients].sort((a, b) => a.ward.localeCompare(b.ward) || a.id.localeCompare(b.id));
    const keep = new Set(wanted.map((p) => p.id));
    for (const [id, tile] of this.tiles) {
      if (!keep.has(id)) {
        tile.root.remove();
        this.tiles.delete(id);
      }
    }
    for (const p of wanted) {
      const tile = this.tiles.get(p.id) ?? this._build(p);
      tile.root.dataset.ward = p.ward;
      setText(tile.wardLabel, p.ward);
      this.container.append(tile.root); // re-appending keeps the sorted order
      this.updateVitals(p);
    }
    this.filter(this.ward);
  }

  filter(ward) {
    this.ward = ward;
    for (const tile of this.tiles.values()) tile.root.hidden = Boolean(ward) && tile.root.dataset.ward !== ward;
  }

  visibleCount() {
    return [...this.tiles.values()].filter((t) => !t.root.hidden).length;
  }

  _build(patient) {
    const id = `tile-${patient.id}`;
    const cells = new Map();
    const vitals = h("div", { class: "tile__vitals" });
    for (const metric of TILE_METRICS) {
      const meta = METRICS[metric];
      const value = h("span", { class: "vital__value", text: "—" });
      const age = h("span", { class: "vital__age", text: "" });
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
          spark,
        ],
      );
      vitals.append(cell);
      cells.set(metric, { cell, value, age, spark });
    }
    const wardLabel = h("span", { class: "tile__ward", text: patient.ward });
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
        h("header", { class: "tile__head" }, [h("h3", { class: "tile__name", id: `${id}-name` }, [open]), wardLabel]),
        status,
        vitals,
      ],
    );
    root.addEventListener("click", () => this.hooks.open(patient.id));
    const tile = { root, status, cells, wardLabel };
    this.tiles.set(patient.id, tile);
    return tile;
  }

  /** Values, ages and sparklines of one patient's tile. */
  updateVitals(patient, now = Date.now()) {
    const tile = this.tiles.get(patient.id);
    if (!tile) return;
    for (const [metric, ref] of tile.cells) {
      const reading = patient.latest.get(metric);
      let text = formatValue(metric, reading?.value);
      if (metric === "systolic_bp") {
        const dia = patient.latest.get("diastolic_bp");
        text = `${text}/${formatValue("diastolic_bp", dia?.value)}`;
      }
      setText(ref.value, text);
      const rules = this.hooks.rulesFor(metric);
      const alarming = reading !== undefined && rules.some((r) => violates(r, reading.value));
      ref.cell.classList.toggle("vital--violating", alarming);
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
    this.updateAges(patient, now);
  }

  updateAges(patient, now = Date.now()) {
    const tile = this.tiles.get(patient.id);
    if (!tile) return;
    for (const [metric, ref] of tile.cells) {
      const reading = patient.latest.get(metric);
      const age = reading ? now - reading.ts : null;
      setText(ref.age, age === null ? "no data" : formatAge(age));
      ref.cell.classList.toggle("vital--stale", age === null || age > STALE_MS);
    }
  }

  /** Colour and words for the patient's open alerts (sorted, highest first). */
  updateAlarm(patientId, alerts) {
    const tile = this.tiles.get(patientId);
    if (!tile) return;
    const alarm = tileAlarm(alerts);
    tile.root.dataset.level = alarm.level;
    tile.root.classList.toggle("tile--unacked", alarm.level !== "none" && alarm.unacked);
    tile.status.dataset.level = alarm.level;
    setText(tile.status, alarm.text);
  }
}
