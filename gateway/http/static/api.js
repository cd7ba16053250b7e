// The gateway's REST API as the page uses it. The session cookie rides along
// (same origin); a 401 anywhere means the session is gone: AuthRequired.

export class AuthRequired extends Error {
  constructor(detail = "sign in required") {
    super(detail);
    this.name = "AuthRequired";
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.detail ?? `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

async function request(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (response.status === 401) throw new AuthRequired(data?.detail);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const query = (params) =>
  new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null)).toString();

/** Who is signed in, or null without a (valid) session. */
export async function whoami() {
  try {
    return await request("/v1/session");
  } catch (e) {
    if (e instanceof AuthRequired) return null;
    throw e;
  }
}

/** For the stream's reconnect logic: does the session still hold? */
export async function sessionState() {
  try {
    const r = await fetch("/v1/session", { credentials: "same-origin" });
    if (r.status === 401 || r.status === 403) return "unauthorized";
    return r.ok ? "ok" : "unreachable";
  } catch {
    return "unreachable";
  }
}

export const login = (token) => request("/v1/session", { method: "POST", body: { token } });
export const logout = () => request("/v1/session/logout", { method: "POST" });
export const devices = () => request("/v1/devices");
export const rules = () => request("/v1/rules");
export const patientRules = (patientId) => request(`/v1/rules?${query({ patient_id: patientId })}`);
export const patientSettings = (patientId) =>
  request(`/v1/patients/${encodeURIComponent(patientId)}/settings`);
export const putPatientSettings = (patientId, body) =>
  request(`/v1/patients/${encodeURIComponent(patientId)}/settings`, { method: "PUT", body });

export async function latest(patientId) {
  try {
    return await request(`/v1/patients/${encodeURIComponent(patientId)}/latest`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return { patient_id: patientId, metrics: {} };
    throw e;
  }
}

export const summary = ({ patientId, metric, since, until, bucket }) =>
  request(
    `/v1/readings/summary?${query({
      patient_id: patientId,
      metric,
      since: new Date(since).toISOString(),
      until: until === undefined ? undefined : new Date(until).toISOString(),
      bucket,
    })}`,
  );

export const alertHistory = (patientId, limit = 1000) =>
  request(`/v1/alerts?${query({ patient_id: patientId, limit })}`);

/** The ward's patients with their NEWS2 now: {ward, items: [{patient_id, score, band, complete, missing}]}. */
export const worklist = (ward) => request(`/v1/patients?${query({ ward })}`);

export const news2 = (patientId) => request(`/v1/patients/${encodeURIComponent(patientId)}/news2`);

/** NEWS2 over the last `minutes` (≤ 720): {step_s, points: [{ts, score, band, complete}]}. */
export const news2History = (patientId, minutes) =>
  request(`/v1/patients/${encodeURIComponent(patientId)}/news2/history?${query({ minutes })}`);

/** The alarm-fatigue report of the last `since` (24h, 7d), of one ward or every ward of mine. */
export const alarmReport = ({ since, ward }) => request(`/v1/reports/alarms?${query({ since, ward: ward || undefined })}`);

/** Record ACVPU and/or air or oxygen for NEWS2 (either may be left undefined). */
export const observe = (patientId, { consciousness, oxygen }) =>
  request(`/v1/patients/${encodeURIComponent(patientId)}/observations`, {
    method: "POST",
    body: { consciousness, oxygen },
  });
