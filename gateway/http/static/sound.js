// The alarm's sound: which tone is due (pure: alerts and a clock in, a decision out),
// and a thin Web Audio layer that plays or stops what the decision says.
//
// In the spirit of IEC 60601-1-8: what sounds is the highest priority among alerts
// that are active, unacknowledged and not silenced. Acknowledging (someone owns it) or
// clearing ends its sound; silencing pauses it until `silenced_until`, after which it
// sounds again if still active and unacknowledged; an escalation sounds at once. Each
// priority has its own burst: high a fast burst of ten pulses (3 + 2, 3 + 2) repeated
// often, medium three slower pulses repeated less often, low two soft pulses, rarely.
// Pitches differ too, so a listener can tell them apart without counting.

import { PRIORITY_RANK, isSilenced } from "./alerts.js";

/**
 * One tone per priority: pulse onsets within a burst (s), each pulse's length (s), its
 * pitch (Hz) and loudness, and how often the burst repeats while the alarm lasts (ms).
 * The high burst lasts 2.55 s, the medium 0.9 s, the low 0.62 s.
 */
export const TONES = Object.freeze({
  high: Object.freeze({
    onsets: Object.freeze([0, 0.2, 0.4, 0.8, 1.0, 1.6, 1.8, 2.0, 2.4, 2.6]),
    pulse: 0.15,
    frequency: 880,
    gain: 0.3,
    repeatMs: 6_000,
  }),
  medium: Object.freeze({
    onsets: Object.freeze([0, 0.35, 0.7]),
    pulse: 0.2,
    frequency: 660,
    gain: 0.22,
    repeatMs: 15_000,
  }),
  low: Object.freeze({
    onsets: Object.freeze([0, 0.4]),
    pulse: 0.22,
    frequency: 440,
    gain: 0.15,
    repeatMs: 40_000,
  }),
});

/** Does this alert sound now: active, nobody acknowledged it, and not silenced. */
export function sounds(alert, now) {
  return alert.status === "active_unack" && !isSilenced(alert, now);
}

/** The priority that sounds among `alerts` at `now` ("high", "medium", "low"), or null. */
export function soundingPriority(alerts, now) {
  let best = null;
  for (const alert of alerts) {
    if (!sounds(alert, now) || !(alert.priority in TONES)) continue;
    if (best === null || PRIORITY_RANK[alert.priority] > PRIORITY_RANK[best]) best = alert.priority;
  }
  return best;
}

/** The highest escalation count among the sounding alerts of `priority`. */
function escalationOf(alerts, priority, now) {
  let most = 0;
  for (const alert of alerts) {
    if (alert.priority === priority && sounds(alert, now)) most = Math.max(most, alert.escalation ?? 0);
  }
  return most;
}

/**
 * What the speaker does now, given the alerts on screen (already filtered by ward), the
 * clock (ms) and the last tone started (`{priority, at, escalation}` or null). Returns a
 * frozen `{action, priority, last}`: `action` is "play" (start the priority's burst now,
 * cutting any other short), "stop" (nothing sounds any more: cut what plays) or "none";
 * `last` is what to pass next time. A priority starts at once when it begins to sound
 * (a new alarm, a higher one, a silence that ended) or escalates, then every `repeatMs`.
 */
export function dueTone(alerts, now, last = null) {
  const priority = soundingPriority(alerts, now);
  if (priority === null) return Object.freeze({ action: last ? "stop" : "none", priority, last: null });
  const escalation = escalationOf(alerts, priority, now);
  if (
    last === null ||
    last.priority !== priority ||
    escalation > (last.escalation ?? 0) ||
    now - last.at >= TONES[priority].repeatMs
  ) {
    return Object.freeze({ action: "play", priority, last: Object.freeze({ priority, at: now, escalation }) });
  }
  return Object.freeze({ action: "none", priority, last });
}

/**
 * The speaker: plays a priority's burst through an AudioContext and can cut it short.
 * It decides nothing; `update(decision)` carries out a `dueTone` result. Browsers only
 * let an AudioContext sound after a user gesture (the sign-in), so it is made there.
 */
export class AlarmSpeaker {
  /**
   * @param {() => AudioContext | null} makeContext
   * @param {() => void} onState told when the context starts or is held back
   */
  constructor(makeContext, onState = () => {}) {
    this.makeContext = makeContext;
    this.onState = onState;
    /** @type {AudioContext | null} */
    this.ctx = null;
    /** @type {OscillatorNode[]} pulses of the burst in flight */
    this.pulses = [];
  }

  /** Make (or wake) the context; call from a user gesture. True if it may sound. */
  unlock() {
    if (!this.ctx) {
      this.ctx = this.makeContext();
      this.ctx?.addEventListener("statechange", this.onState);
    }
    if (this.ctx?.state === "suspended") this.ctx.resume().catch(() => {});
    return this.ctx !== null;
  }

  /** Whether the browser still holds the sound back for want of a gesture. */
  get blocked() {
    return this.ctx === null || this.ctx.state === "suspended";
  }

  update(decision) {
    if (decision.action === "play") this.play(decision.priority);
    else if (decision.action === "stop") this.stop();
  }

  play(priority) {
    this.stop();
    const ctx = this.ctx;
    const tone = TONES[priority];
    if (!ctx || !tone) return;
    const start = ctx.currentTime + 0.02;
    for (const onset of tone.onsets) {
      const t = start + onset;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = tone.frequency;
      // Soft edges: a click at each end would sound like another pulse.
      gain.gain.setValueAtTime(0, t);
      gain.gain.linearRampToValueAtTime(tone.gain, t + 0.015);
      gain.gain.setValueAtTime(tone.gain, t + tone.pulse - 0.02);
      gain.gain.linearRampToValueAtTime(0, t + tone.pulse);
      osc.connect(gain).connect(ctx.destination);
      osc.onended = () => {
        this.pulses = this.pulses.filter((p) => p !== osc);
        osc.disconnect();
      };
      osc.start(t);
      osc.stop(t + tone.pulse + 0.01);
      this.pulses.push(osc);
    }
  }

  /** Cut the burst in flight: pulses not yet heard never are. */
  stop() {
    for (const osc of this.pulses) {
      osc.onended = null;
      osc.disconnect(); // silent at once, whatever stop() was scheduled
      try {
        osc.stop();
      } catch {
        // already ended
      }
    }
    this.pulses = [];
  }
}
