// "Limits for this patient": the patient's overrides of the ward's alert rules, each
// beside the ward default with its reason, and their SpO₂ scale; also the patient's
// effective rules, from which the patient view draws its charts' limit lines.

import * as api from "./api.js";
import { h } from "./dom.js";
import { formatLimit } from "./vitals.js";

/**
 * The patient's effective rules and settings, fetched together.
 * @returns {Promise<{rules: object[], settings: object}>}
 */
export async function loadLimits(patientId) {
  const [rules, settings] = await Promise.all([api.patientRules(patientId), api.patientSettings(patientId)]);
  return { rules: rules.rules, settings };
}

/** The limit lines a chart of `metric` draws: threshold rules in force for the patient. */
export function chartRules(rules, metric) {
  return rules.filter((r) => r.metric && r.metric === metric && !r.disabled);
}

function ruleText(rule) {
  const name = rule.label || rule.name;
  const ward = rule.default;
  if (rule.disabled) {
    return `${name}: off for this patient (ward: ${formatLimit(rule.metric, rule.direction, rule.threshold)})`;
  }
  const mine = [formatLimit(rule.metric, rule.direction, rule.threshold)];
  const theirs = [formatLimit(rule.metric, rule.direction, ward.threshold)];
  if (rule.for_s !== ward.for_s) {
    mine.push(`for ${rule.for_s} s`);
    theirs.push(`for ${ward.for_s} s`);
  }
  if (rule.clear_margin !== ward.clear_margin) {
    mine.push(`clears ${rule.clear_margin} back`);
    theirs.push(`clears ${ward.clear_margin} back`);
  }
  return `${name}: ${mine.join(", ")} (ward: ${theirs.join(", ")})`;
}

/**
 * The section's content: one item per overridden rule (with its reason), the SpO₂ scale
 * when it is 2, or a line saying the ward's limits apply.
 * @param {{rules: object[], settings: object} | null} limits  null: could not be loaded
 */
export function limitsContent(limits) {
  if (!limits) return [h("p", { class: "empty", text: "Limits for this patient could not be loaded." })];
  const items = limits.rules
    .filter((r) => r.override)
    .map((r) =>
      h("li", { class: "limits__item", "data-rule": r.name, "data-disabled": String(r.disabled) }, [
        h("span", { class: "limits__rule", text: ruleText(r) }),
        r.override.reason ? h("span", { class: "limits__reason", text: ` — ${r.override.reason}` }) : null,
        r.override.applied ? null : h("span", { class: "limits__stale", text: " (not applied: the ward rule changed)" }),
      ]),
    );
  if (limits.settings.spo2_scale === 2) {
    items.unshift(h("li", { class: "limits__item", "data-rule": "spo2_scale", text: "NEWS2 SpO₂ scale 2 (hypercapnic respiratory failure)" }));
  }
  if (!items.length) return [h("p", { class: "empty", text: "The ward's limits apply to this patient." })];
  return [h("ul", { class: "limits__list" }, items)];
}

function limitOf(rule) {
  const o = rule.override;
  if (!o) return "";
  const value = rule.direction === "below" ? o.below : o.above;
  return value === null || value === undefined ? "" : String(value);
}

/**
 * The section: the list above, and a form to change the patient's limits (their whole
 * settings document, as `PUT …/settings` takes it). A refresh of the view redraws the
 * list, but leaves the form alone while it is open, so nobody's typing is lost.
 */
export class LimitsSection {
  /** @param {HTMLElement} el  @param {{saved: () => void, failed: (e: Error) => void}} hooks */
  constructor(el, hooks) {
    this.el = el;
    this.hooks = hooks;
    this.list = h("div", { class: "limits__now" });
    this.edit = h("details", { class: "limits__edit" });
    this.patientId = null;
    this.limits = null;
    el.replaceChildren(this.list, this.edit);
  }

  show(patientId, limits) {
    const other = patientId !== this.patientId;
    this.patientId = patientId;
    this.limits = limits;
    this.list.replaceChildren(...limitsContent(limits));
    if (other) this.edit.open = false;
    if (!this.edit.open) this._form();
  }

  _form() {
    const limits = this.limits;
    this.edit.hidden = !limits;
    if (!limits) return;
    const rows = limits.rules
      .filter((r) => r.kind === "threshold")
      .map((r) => {
        const ward = r.default ?? r;
        return h("tr", { "data-rule": r.name }, [
          h("th", { scope: "row", text: r.label || r.name }),
          h("td", { text: formatLimit(r.metric, r.direction, ward.threshold) }),
          h("td", {}, [
            h("input", {
              type: "number",
              step: "any",
              name: "limit",
              value: limitOf(r),
              placeholder: String(ward.threshold),
              "aria-label": `${r.label || r.name}: ${r.direction} for this patient`,
            }),
          ]),
          h("td", {}, [
            h("input", { type: "checkbox", name: "off", checked: r.disabled, "aria-label": `${r.label || r.name}: off` }),
          ]),
          h("td", {}, [
            h("input", {
              type: "text",
              name: "reason",
              maxlength: 500,
              value: r.override?.reason ?? "",
              "aria-label": `${r.label || r.name}: reason`,
            }),
          ]),
        ]);
      });
    const scale = h("select", { name: "spo2_scale", "aria-label": "NEWS2 SpO₂ scale" }, [
      h("option", { value: "1", text: "1", selected: limits.settings.spo2_scale === 1 }),
      h("option", { value: "2", text: "2 (hypercapnic respiratory failure)", selected: limits.settings.spo2_scale === 2 }),
    ]);
    const result = h("span", { class: "limits__result", role: "status" });
    const form = h("form", { class: "limits__form", autocomplete: "off" }, [
      h("label", {}, ["NEWS2 SpO₂ scale ", scale]),
      h("table", { class: "limits__table" }, [
        h("thead", {}, [
          h("tr", {}, ["Rule", "Ward", "This patient", "Off", "Reason"].map((t) => h("th", { scope: "col", text: t }))),
        ]),
        h("tbody", {}, rows),
      ]),
      h("button", { class: "btn", type: "submit", text: "Save limits" }),
      result,
    ]);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this._save(form, result);
    });
    this.edit.replaceChildren(h("summary", { text: "Change limits for this patient" }), form);
  }

  /** The whole document from the form: what is left empty keeps the ward's value. */
  _document(form) {
    const overrides = {};
    for (const rule of this.limits.rules.filter((r) => r.kind === "threshold")) {
      const row = form.querySelector(`tr[data-rule="${CSS.escape(rule.name)}"]`);
      const limit = row.querySelector("input[name=limit]").value.trim();
      const reason = row.querySelector("input[name=reason]").value.trim();
      const kept = rule.override ?? {};
      if (row.querySelector("input[name=off]").checked) {
        overrides[rule.name] = { disabled: true, reason };
        continue;
      }
      const o = {};
      if (limit !== "") o[rule.direction] = Number(limit);
      // for_s and clear_margin are not edited here: an override's stay as they were.
      if (kept.for_s !== null && kept.for_s !== undefined) o.for_s = kept.for_s;
      if (kept.clear_margin !== null && kept.clear_margin !== undefined) o.clear_margin = kept.clear_margin;
      if (Object.keys(o).length) overrides[rule.name] = { ...o, reason };
    }
    return { spo2_scale: Number(form.elements.spo2_scale.value), overrides };
  }

  async _save(form, result) {
    const patientId = this.patientId;
    try {
      await api.putPatientSettings(patientId, this._document(form));
      if (patientId !== this.patientId) return;
      this.edit.open = false;
      this.hooks.saved();
    } catch (e) {
      if (e instanceof api.AuthRequired) this.hooks.failed(e);
      else result.textContent = `Not saved: ${e.body?.param ? `${e.body.param}: ` : ""}${e.message}`;
    }
  }
}
