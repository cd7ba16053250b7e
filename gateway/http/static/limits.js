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
