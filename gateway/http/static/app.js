// Entry point: sign-in, then the ward view, the alert panel and the patient view,
// fed by the REST API (initial state, history) and the dashboard stream (live).

import * as api from "./api.js";
import { AlertBook, isOffline, tileAlarm } from "./alerts.js";
import { h, setText } from "./dom.js";
import { AlertPanel } from "./panel.js";
import { PatientView } from "./patient.js";
import { ReportView } from "./report.js";
import { AlarmSpeaker, dueTone } from "./sound.js";
import { DashboardStream } from "./stream.js";
import { Patient, SPARK_WINDOW_MS, TILE_METRICS, formatClock } from "./vitals.js";
import { WardView } from "./ward.js";

const $ = (id) => document.getElementById(id);
const WARD_KEY = "vitals.ward";
const NEWS2_POLL_MS = 5_000;
const CONNECTION_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  fallback: "Connected (fallback connection)",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  unauthorized: "Signed out",
  stopped: "Disconnected",
};

const state = {
  me: null,
  rules: [],
  /** what a silence button asks for: the gateway's max_silence_s */
  maxSilence: 120,
  news2Timer: null,
  /** @type {Map<string, Patient>} */
  patients: new Map(),
  book: new AlertBook(),
  /** @type {DashboardStream | null} */
  stream: null,
  ward: readWard(),
  /** sound on (after sign-in) or muted */
  sound: false,
  /** the last tone started, {priority, at}, for sound.js `dueTone` */
  tone: null,
  /** @type {Set<string>} wards in the filter's list */
  wards: new Set(),
  reloadTimer: null,
  bannerTimer: null,
  ticks: 0,
};

const speaker = new AlarmSpeaker(() => ("AudioContext" in window ? new AudioContext() : null), soundAllowed);

// NEWS2 rules have no metric (and no line to draw): only threshold rules match.
const rulesFor = (metric) => state.rules.filter((r) => r.metric && r.metric === metric);

const ward = new WardView($("tiles"), { open: openPatient, rulesFor });
const panel = new AlertPanel($("alert-list"), {
  ack: (id) => state.stream?.ack(id) ?? false,
  silence: (id) => state.stream?.silence(id, state.maxSilence) ?? false,
  silenceSeconds: () => state.maxSilence,
  open: openPatient,
});
const patientView = new PatientView(
  {
    section: $("patient"),
    title: $("patient-title"),
    subtitle: $("patient-subtitle"),
    status: $("patient-status"),
    charts: $("patient-charts"),
    history: $("patient-history"),
    empty: $("patient-history-empty"),
    range: [...document.querySelectorAll("input[name=range]")],
    news2: $("patient-news2"),
    form: $("observation-form"),
    consciousness: $("obs-consciousness"),
    oxygen: $("obs-oxygen"),
    result: $("obs-result"),
    limits: $("patient-limits"),
  },
  { rulesFor, failed, news2Changed: () => pollNews2() },
);

const reportView = new ReportView(
  {
    section: $("report"),
    title: $("report-title"),
    since: [...document.querySelectorAll("input[name=report-since]")],
    ward: $("report-ward"),
    body: $("report-body"),
  },
  {
    wards: () => [...state.wards].sort(),
    labelOf: (rule) => state.rules.find((r) => r.name === rule)?.label || rule,
    failed,
  },
);

// --- sign-in --------------------------------------------------------------------

function showLogin(message = "") {
  state.stream?.stop();
  state.stream = null;
  state.me = null;
  state.book.clear();
  state.patients.clear();
  clearTimeout(state.news2Timer);
  state.news2Timer = null;
  ward.setPatients([]);
  renderAlerts();
  patientView.close();
  reportView.close();
  $("station").hidden = true;
  $("controls").hidden = true;
  $("login").hidden = false;
  hideBanner();
  const error = $("login-error");
  error.hidden = !message;
  setText(error, message);
  setText(document.querySelector("title"), "Vitals — sign in");
  $("token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const input = $("token");
  const button = $("login-submit");
  const error = $("login-error");
  const token = input.value.trim();
  if (!token) return;
  speaker.unlock(); // the sign-in is the gesture browsers want before a page may sound
  button.disabled = true;
  try {
    const me = await api.login(token);
    input.value = "";
    error.hidden = true;
    await startStation({ name: me.name, role: me.role });
  } catch (e) {
    error.hidden = false;
    if (e instanceof api.AuthRequired) setText(error, "That token is not recognised, or it has been revoked.");
    else if (e instanceof api.ApiError && e.status === 403) setText(error, "This token cannot sign in here (is it a device token?).");
    else setText(error, "Cannot reach the gateway. Try again in a moment.");
  } finally {
    button.disabled = false;
  }
}

async function onLogout() {
  try {
    await api.logout();
  } catch {
    // Signed out locally either way; the cookie expires by itself.
  }
  showLogin("You have signed out.");
}

function failed(e) {
  if (e instanceof api.AuthRequired) {
    showLogin("Your session has ended. Sign in again.");
  } else {
    console.warn("request failed:", e);
  }
}

// --- the station ------------------------------------------------------------------

async function startStation(me) {
  state.me = me;
  $("login").hidden = true;
  $("station").hidden = false;
  $("controls").hidden = false;
  setText($("user"), `${me.name} (${me.role})`);
  state.sound = true; // on after sign-in; the toggle mutes it
  speaker.unlock();
  showSound();
  try {
    const body = await api.rules();
    state.rules = body.rules;
    state.maxSilence = Math.floor(body.max_silence_s ?? state.maxSilence);
  } catch (e) {
    if (e instanceof api.AuthRequired) return failed(e);
    state.rules = []; // charts without threshold lines beat no charts
  }
  try {
    const added = await loadPatients();
    startStream();
    pollNews2();
    route();
    await refreshLatest(added);
    loadHistory(added);
  } catch (e) {
    failed(e);
  }
}

/** Tiles from the device list: one per patient with an active device. Returns new patients. */
async function loadPatients() {
  const body = await api.devices();
  const seen = new Map();
  for (const d of body.items) {
    if (d.revoked_at) continue;
    const p = seen.get(d.patient_id) ?? state.patients.get(d.patient_id) ?? new Patient(d.patient_id, d.ward);
    if (!seen.has(p.id)) p.devices = [];
    p.ward = d.ward; // the newest device decides (the list is oldest first)
    p.devices.push(d.id);
    seen.set(p.id, p);
  }
  const added = [...seen.values()].filter((p) => !state.patients.has(p.id));
  state.patients = seen;
  ward.setPatients([...seen.values()]);
  for (const p of seen.values()) updateTile(p.id);
  updateWards();
  return added;
}

function scheduleDeviceReload() {
  if (state.reloadTimer) return;
  state.reloadTimer = setTimeout(async () => {
    state.reloadTimer = null;
    try {
      const added = await loadPatients();
      await refreshLatest(added);
      loadHistory(added);
    } catch (e) {
      failed(e);
    }
  }, 1000);
}

async function refreshLatest(patients) {
  await Promise.all(
    patients.map(async (p) => {
      const body = await api.latest(p.id);
      for (const [metric, v] of Object.entries(body.metrics)) p.observe(metric, Date.parse(v.ts), v.value);
      ward.updateVitals(p);
    }),
  );
}

/** The sparklines' first 15 minutes, as 30-second means; live readings follow. */
function loadHistory(patients) {
  const since = Date.now() - SPARK_WINDOW_MS;
  for (const p of patients) {
    for (const metric of TILE_METRICS) {
      api
        .summary({ patientId: p.id, metric, since, bucket: "30s" })
        .then((body) => {
          p.setHistory(metric, body.buckets.map((b) => [Date.parse(b.start) + 15_000, b.mean]));
          ward.updateVitals(p);
        })
        .catch(failed);
    }
  }
}

/** Every ward's worklist, every few seconds: NEWS2 on each tile, and the order it gives. */
async function pollNews2() {
  clearTimeout(state.news2Timer);
  const wards = new Set([...state.patients.values()].map((p) => p.ward));
  try {
    const lists = await Promise.all(
      [...wards].map((w) =>
        api.worklist(w).catch((e) => {
          if (e instanceof api.ApiError) return { items: [] }; // a ward no longer ours
          throw e;
        }),
      ),
    );
    const seen = new Set();
    for (const list of lists) {
      for (const item of list.items) {
        seen.add(item.patient_id);
        ward.setNews2(item.patient_id, item);
      }
    }
    for (const id of state.patients.keys()) if (!seen.has(id)) ward.setNews2(id, null);
  } catch (e) {
    if (e instanceof api.AuthRequired) return failed(e);
    console.warn("NEWS2 poll failed:", e);
  }
  if (state.me) state.news2Timer = setTimeout(pollNews2, NEWS2_POLL_MS);
}

/** "Acknowledge all device-offline": every visible device-offline alert that needs it. */
function ackAllOffline() {
  panel.ackAll(state.book.open(state.ward).filter(isOffline));
}

// --- the stream ---------------------------------------------------------------------

function startStream() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  state.stream = new DashboardStream({
    url: `${scheme}://${location.host}/v1/dashboard/stream`,
    eventsUrl: "/v1/dashboard/events",
    checkSession: api.sessionState,
    on: {
      alert: onAlert,
      subscribed: onSubscribed,
      vitals: onVitals,
      error: onStreamError,
      state: onConnection,
      reset: onReset,
      unauthorized: () => showLogin("Your session has ended. Sign in again."),
    },
  });
  state.stream.start();
}

function onAlert(event, { replay, resumed }) {
  const change = state.book.apply(event);
  if (!change) return;
  const alert = change.alert;
  if (change.closed) panel.closed(alert);
  // A revoked device's patient may have no device left, so no tile (as after a reload);
  // an open alert of a patient without a tile means a device the page has not seen.
  if (change.deviceRevoked || (!change.closed && !state.patients.has(alert.patient_id))) {
    scheduleDeviceReload();
  }
  renderAlerts();
  updateTile(alert.patient_id);
  if (patientView.patient?.id === alert.patient_id) patientView.alertChanged();
  if (alert.ward && !state.wards.has(alert.ward)) updateWards();
  // The first load's open alerts are already on screen; new ones, and ones missed
  // while disconnected, are announced.
  if (change.isNew && alert.status === "active_unack" && (!replay || resumed)) {
    announce(`New ${alert.priority} priority alert: ${alert.label || alert.rule}, patient ${alert.patient_id}, ward ${alert.ward}.`);
  }
}

async function onSubscribed({ resumed, replayed }) {
  const conn = $("connection");
  conn.dataset.replayed = String(replayed);
  if (!resumed) return;
  const plural = replayed === 1 ? "" : "s";
  showBanner(
    `Reconnected at ${formatClock(Date.now())}: ${replayed} missed alert event${plural} replayed.`,
    "ok",
    10_000,
  );
  // Vitals sent while away are not replayed: take the newest values again.
  try {
    const added = await loadPatients();
    await refreshLatest([...state.patients.values()]);
    loadHistory(added);
  } catch (e) {
    failed(e);
  }
}

function onVitals(msg) {
  const p = state.patients.get(msg.patient_id);
  if (!p) {
    scheduleDeviceReload(); // a device provisioned after the page loaded
    return;
  }
  const now = Date.now();
  for (const r of msg.readings) p.observe(r.metric, Date.parse(r.ts), r.value, now);
  ward.updateVitals(p, now);
}

function onStreamError(msg) {
  if (msg.alert_id) panel.showError(msg.alert_id, msg.detail);
  else console.warn("dashboard stream error:", msg.code, msg.detail);
}

function onConnection(s, info) {
  const conn = $("connection");
  conn.dataset.state = s;
  let text = CONNECTION_TEXT[s] ?? s;
  if (s === "reconnecting" && info.attempts > 1) text = `Reconnecting… (attempt ${info.attempts})`;
  setText(conn.querySelector(".conn__text"), text);
  panel.setConnected(s === "connected" || s === "fallback");
  document.body.classList.toggle("is-stale", s === "reconnecting" || s === "offline");
  if (s === "reconnecting" || s === "offline") {
    const why = s === "offline" ? "This device is offline" : "Connection lost";
    showBanner(
      info.lostAt
        ? `${why} — data may be stale since ${formatClock(info.lostAt)}. Reconnecting automatically…`
        : `${why} — cannot reach the gateway. Retrying automatically…`,
      "warn",
    );
  } else if ((s === "connected" || s === "fallback") && $("banner").dataset.kind === "warn") {
    hideBanner();
  }
}

function onReset() {
  state.book.clear();
  renderAlerts();
  for (const id of state.patients.keys()) updateTile(id);
}

// --- rendering helpers ------------------------------------------------------------------

function renderAlerts() {
  const open = state.book.open(state.ward);
  panel.render(open);
  setText($("alert-count"), String(open.length));
  $("alerts-empty").hidden = open.length > 0;
  const offline = open.filter((a) => isOffline(a) && (a.status === "active_unack" || a.status === "cleared_unack"));
  $("ack-offline").hidden = offline.length < 1;
  setText($("ack-offline"), `Acknowledge all ${offline.length} device-offline`);
  const unacked = state.book.open().filter((a) => a.status === "active_unack" && a.priority === "high").length;
  if (state.me) setText(document.querySelector("title"), `${unacked ? `(${unacked}) ` : ""}Vitals — central station`);
  soundNow();
}

function updateTile(patientId) {
  const alerts = state.book.forPatient(patientId);
  ward.updateAlarm(patientId, alerts);
  if (patientView.patient?.id === patientId) patientView.setAlarm(tileAlarm(alerts));
}

function updateWards() {
  const wards = new Set([...state.patients.values()].map((p) => p.ward));
  for (const w of state.book.wards()) wards.add(w);
  if (state.ward) wards.add(state.ward);
  state.wards = wards;
  const select = $("ward-filter");
  const options = [h("option", { value: "", text: "All wards" })];
  for (const w of [...wards].sort()) options.push(h("option", { value: w, text: w }));
  select.replaceChildren(...options);
  select.value = state.ward;
  applyWard();
}

function applyWard() {
  ward.filter(state.ward);
  const shown = ward.visibleCount();
  setText($("ward-title-text"), state.ward ? `Ward ${state.ward}` : "All wards");
  setText($("ward-count"), `${shown} patient${shown === 1 ? "" : "s"}`);
  $("ward-empty").hidden = shown > 0;
  renderAlerts();
}

function readWard() {
  try {
    return localStorage.getItem(WARD_KEY) ?? "";
  } catch {
    return "";
  }
}

function showBanner(text, kind, hideAfterMs = 0) {
  const banner = $("banner");
  clearTimeout(state.bannerTimer);
  banner.dataset.kind = kind;
  setText(banner, text);
  banner.hidden = false;
  if (hideAfterMs) state.bannerTimer = setTimeout(hideBanner, hideAfterMs);
}

function hideBanner() {
  const banner = $("banner");
  clearTimeout(state.bannerTimer);
  banner.hidden = true;
  banner.dataset.kind = "";
}

function announce(text) {
  // A log region: screen readers read each new line once; the last few stay.
  const region = $("announcer");
  region.append(h("p", { text }));
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

/** Play, repeat or stop the alarm tone the visible alerts call for (sound.js). */
function soundNow(now = Date.now()) {
  const decision = dueTone(state.sound && state.me ? state.book.open(state.ward) : [], now, state.tone);
  state.tone = decision.last;
  speaker.update(decision);
  $("sound-toggle").dataset.tone = decision.priority ?? "";
}

function toggleSound() {
  state.sound = !state.sound;
  speaker.unlock();
  showSound();
  soundNow();
}

/** The browser let the page sound (or held it back again): a due tone starts afresh. */
function soundAllowed() {
  showSound();
  if (speaker.blocked) return;
  state.tone = null;
  soundNow();
}

/** The mute toggle says whether the station sounds, and if the browser holds it back. */
function showSound() {
  const button = $("sound-toggle");
  const blocked = state.sound && speaker.blocked;
  button.setAttribute("aria-pressed", String(state.sound));
  button.dataset.blocked = String(blocked);
  const text = !state.sound ? "Sound muted" : blocked ? "Sound on · click to allow" : "Sound on";
  setText(button.querySelector(".sound__text"), text);
}

// --- navigation ---------------------------------------------------------------------------

function openPatient(patientId) {
  location.hash = `patient/${encodeURIComponent(patientId)}`;
}

function route() {
  if (location.hash === "#report") {
    patientView.close();
    $("ward").hidden = true;
    reportView.open(state.ward);
    return;
  }
  reportView.close();
  const match = /^#patient\/(.+)$/.exec(location.hash);
  const patient = match ? state.patients.get(decodeURIComponent(match[1])) : undefined;
  if (patient) {
    $("ward").hidden = true;
    if (patientView.patient?.id !== patient.id) patientView.open(patient);
    patientView.setAlarm(tileAlarm(state.book.forPatient(patient.id)));
  } else {
    const left = patientView.patient?.id;
    patientView.close();
    $("ward").hidden = false;
    // Back where the user came from: focus the tile of the patient just closed.
    if (left) document.querySelector(`[data-patient="${CSS.escape(left)}"] .tile__open`)?.focus();
  }
}

function tick() {
  const now = Date.now();
  setText($("clock"), formatClock(now));
  state.ticks += 1;
  for (const p of state.patients.values()) {
    // Every 5 s the sparklines move on even when a patient's device is quiet.
    if (state.ticks % 5 === 0) ward.updateVitals(p, now);
    else ward.updateAges(p, now);
  }
  panel.tick(now);
  soundNow(now); // repeats, and a silence that ends sounds again
}

// --- boot -------------------------------------------------------------------------------

$("login-form").addEventListener("submit", onLogin);
$("logout").addEventListener("click", onLogout);
$("sound-toggle").addEventListener("click", toggleSound);
// A page reopened on a live session had no gesture yet: its first one lets it sound.
for (const type of ["pointerdown", "keydown"]) {
  document.addEventListener(type, () => state.me && speaker.blocked && speaker.unlock(), { capture: true });
}
$("ack-offline").addEventListener("click", ackAllOffline);
$("patient-back").addEventListener("click", () => {
  location.hash = "";
});
$("ward-filter").addEventListener("change", (e) => {
  state.ward = e.target.value;
  try {
    localStorage.setItem(WARD_KEY, state.ward);
  } catch {
    // private mode: the choice lasts for this page only
  }
  applyWard();
});
window.addEventListener("hashchange", route);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && (patientView.isOpen || reportView.isOpen)) location.hash = "";
});
setInterval(tick, 1000);
tick();

(async () => {
  try {
    const me = await api.whoami();
    if (me) await startStation(me);
    else showLogin();
  } catch {
    showLogin("Cannot reach the gateway. Reload the page to try again.");
  }
})();
