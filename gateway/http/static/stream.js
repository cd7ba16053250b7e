// The dashboard stream connection: subscribe, resume after drops, report state.
//
// States: connecting -> connected -> reconnecting | offline -> connected ...; an
// upgrade refused because the session ended ends in `unauthorized`; stop() ends in
// `stopped`. Resume is exact: every (re)subscribe asks for the events after the last
// event id seen, so nothing raised while the page was away is missed.
//
// Fallback: when the WebSocket fails twice in a row before `subscribed` (a proxy that
// strips Upgrade), the same events come over Server-Sent Events (state `fallback`;
// acks and silences go through REST), and the socket is tried again in the background;
// once it subscribes the event source is closed. Both streams deliver every event in
// id order from a common start, so taking only ids above the last one seen leaves no
// gap and no duplicate across either switch.

/**
 * Reconnect delays in seconds: exponential, capped, each shortened by a random
 * fraction (up to `jitter`) so that a ward's dashboards do not return in lockstep.
 */
export function* backoff({ initial = 0.5, factor = 1.6, max = 15, jitter = 0.5, random = Math.random } = {}) {
  let delay = initial;
  for (;;) {
    yield delay * (1 - jitter * random());
    delay = Math.min(delay * factor, max);
  }
}

export class DashboardStream {
  /**
   * @param {object} options
   * @param {string} options.url  ws(s):// URL of /v1/dashboard/stream
   * @param {() => Promise<"ok"|"unauthorized"|"unreachable">} options.checkSession
   * @param {object} options.on  callbacks: alert(event, info), subscribed(info), vitals(msg),
   *   error(msg), state(state, info), reset(), unauthorized()
   */
  constructor({ url, eventsUrl = null, checkSession, on, fallbackAfter = 2 }) {
    this.url = url;
    this.eventsUrl = eventsUrl; // /v1/dashboard/events; null: no fallback
    this.fallbackAfter = fallbackAfter;
    this._source = null; // the EventSource while on the fallback
    this._socketFailures = 0; // socket attempts in a row that ended before `subscribed`
    this._probeDelays = backoff();
    this.checkSession = checkSession;
    this.on = on;
    this.state = "idle";
    this.lastEventId = 0;
    this.lostAt = null; // ms epoch when a working connection was last lost
    this.attempts = 0; // failed attempts since the last successful subscribe
    this._ws = null;
    this._timer = null;
    this._delays = backoff();
    this._everSubscribed = false;
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
  }

  start() {
    window.addEventListener("online", this._onOnline);
    window.addEventListener("offline", this._onOffline);
    this._setState("connecting");
    this._connect();
  }

  stop() {
    window.removeEventListener("online", this._onOnline);
    window.removeEventListener("offline", this._onOffline);
    clearTimeout(this._timer);
    this._timer = null;
    this._stopFallback();
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, "bye");
    this._setState("stopped");
  }

  /** Send an acknowledgement; false when there is no subscribed connection to send it on. */
  ack(alertId) {
    if (this.state === "fallback") return this._post(alertId, "ack");
    if (this.state !== "connected" || !this._ws) return false;
    this._ws.send(JSON.stringify({ type: "ack", alert_id: alertId }));
    return true;
  }

  /** Pause an alert's sound on every dashboard for `seconds`; false when not connected. */
  silence(alertId, seconds) {
    if (this.state === "fallback") return this._post(alertId, "silence", { seconds });
    if (this.state !== "connected" || !this._ws) return false;
    this._ws.send(JSON.stringify({ type: "silence", alert_id: alertId, seconds }));
    return true;
  }

  /** On the fallback, an ack or silence goes through REST; its event comes on the stream. */
  _post(alertId, action, body = undefined) {
    const init = { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    fetch(`/v1/alerts/${alertId}/${action}`, init)
      .then(async (r) => {
        if (r.ok) return;
        const problem = await r.json().catch(() => ({}));
        this.on.error({ type: "error", code: problem.error, detail: problem.detail ?? `HTTP ${r.status}`, alert_id: alertId });
      })
      .catch(() => this.on.error({ type: "error", code: "unavailable", detail: "the gateway did not answer", alert_id: alertId }));
    return true;
  }

  /** An alert event from either stream: only ids above the last one seen are new. */
  _alert(msg, info) {
    if (msg.event_id <= this.lastEventId) return; // already had it from the other stream
    this.lastEventId = msg.event_id;
    this.on.alert(msg, info);
  }

  _connect() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._ws) {
      // Never two subscriptions at once: drop the attempt in flight.
      const old = this._ws;
      this._ws = null;
      old.close(1000, "replaced");
    }
    const ws = new WebSocket(this.url);
    this._ws = ws;
    let opened = false;
    let subscribed = false;
    let replayed = 0;
    let since = this.lastEventId;
    const resumed = this._everSubscribed; // this connection picks up where another left off
    ws.addEventListener("open", () => {
      opened = true;
      since = this.lastEventId;
      ws.send(JSON.stringify({ type: "subscribe", since_event_id: since, vitals: true }));
    });
    ws.addEventListener("message", (e) => {
      if (this._ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      switch (msg.type) {
        case "alert":
          if (!subscribed) replayed += 1;
          this._alert(msg, { replay: !subscribed, resumed });
          break;
        case "subscribed":
          // Below what it was asked to resume from (not below what the fallback has
          // had since, which may be ahead of this socket's replay).
          if (msg.last_event_id < since) {
            // Event ids went backwards: another database behind the same address.
            // Start again from nothing rather than wait for ids we already passed.
            this.lastEventId = 0;
            this.on.reset();
            this._ws = null;
            ws.close(1000, "resync");
            this._connect();
            return;
          }
          subscribed = true;
          this.lastEventId = Math.max(this.lastEventId, msg.last_event_id);
          this._stopFallback(); // the socket is back: the event source goes
          this._socketFailures = 0;
          this._delays = backoff();
          this.attempts = 0;
          this._setState("connected", { resumed, replayed });
          this.on.subscribed({ resumed, replayed, lastEventId: this.lastEventId });
          this._everSubscribed = true;
          this.lostAt = null;
          break;
        case "vitals":
          if (subscribed || !this._source) this.on.vitals(msg);
          break;
        case "error":
          this.on.error(msg);
          break;
        default:
          break; // a newer gateway's message: ignore
      }
    });
    ws.addEventListener("close", (e) => {
      if (this._ws !== ws) return; // replaced or stopped on purpose
      this._ws = null;
      this._dropped(opened, subscribed, e.code, e.reason);
    });
  }

  async _dropped(opened, subscribed, code, reason) {
    if (this._source) {
      // A background try while on the fallback: try again later, quietly.
      this._timer = setTimeout(() => this._connect(), this._probeDelays.next().value * 1000);
      return;
    }
    if (subscribed) this.lostAt = Date.now();
    this._socketFailures = subscribed ? 0 : this._socketFailures + 1;
    this.attempts += 1;
    if (!opened) {
      // A browser does not say why an upgrade failed: ask whether the session still holds.
      const session = await this.checkSession();
      // Stopped, or reconnected (back online) while we asked: nothing left to do.
      if (this.state === "stopped" || this._ws) return;
      if (session === "unauthorized") {
        this._setState("unauthorized");
        this.on.unauthorized();
        return;
      }
      // A proxy's doing only if the gateway answers HTTP but not the upgrade: a gateway
      // that is down (a restart) is waited for on the socket, not fallen back from.
      if (session !== "ok") this._socketFailures = 0;
    }
    if (this.eventsUrl && this._socketFailures >= this.fallbackAfter && navigator.onLine) {
      this._startFallback();
      return;
    }
    const delay = this._delays.next().value;
    this.nextAttemptAt = Date.now() + delay * 1000;
    this._setState(navigator.onLine ? "reconnecting" : "offline", { code, reason, delay });
    this._timer = setTimeout(() => this._connect(), delay * 1000);
  }

  /** Server-Sent Events from the last event id seen; the socket is retried meanwhile. */
  async _startFallback() {
    const since = this.lastEventId;
    const resumed = this._everSubscribed;
    // Events up to the newest id now are the replay of what was open (not announced as
    // new unless resuming); one REST read tells it, as the socket's `subscribed` would.
    let known = since;
    try {
      const r = await fetch("/v1/alerts?limit=1", { credentials: "same-origin" });
      if (r.ok) known = (await r.json()).last_event_id;
    } catch {
      // unreachable: every event counts as new
    }
    if (this.state === "stopped" || this._source || this._ws) return;
    const source = new EventSource(`${this.eventsUrl}?vitals=true&since_event_id=${since}`);
    this._source = source;
    this._probeDelays = backoff();
    source.addEventListener("open", () => {
      if (this._source !== source) return;
      this.attempts = 0;
      this._everSubscribed = true;
      this.lostAt = null;
      this._setState("fallback", { resumed });
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._connect(), this._probeDelays.next().value * 1000);
    });
    source.addEventListener("alert", (e) => {
      if (this._source !== source) return;
      const msg = JSON.parse(e.data);
      this._alert(msg, { replay: msg.event_id <= known, resumed });
    });
    source.addEventListener("vitals", (e) => {
      if (this._source === source) this.on.vitals(JSON.parse(e.data));
    });
    source.addEventListener("error", async () => {
      if (this._source !== source) return;
      if (source.readyState !== EventSource.CLOSED) {
        // It reconnects by itself, resuming with Last-Event-ID.
        if (this.state === "fallback") this.lostAt = Date.now();
        this._setState("reconnecting", {});
        return;
      }
      // Refused (signed out, or no such endpoint): back to the socket's cycle.
      this._stopFallback();
      const session = await this.checkSession();
      if (this.state === "stopped") return;
      if (session === "unauthorized") {
        this._setState("unauthorized");
        this.on.unauthorized();
        return;
      }
      this._socketFailures = 0;
      this._connect();
    });
  }

  _stopFallback() {
    const source = this._source;
    this._source = null;
    if (source) source.close();
  }

  _online() {
    // Back on the network: try now instead of waiting out the backoff.
    if (this._ws || this._source || ["connected", "stopped", "unauthorized"].includes(this.state)) return;
    this._setState("reconnecting");
    this._connect();
  }

  _offline() {
    if (this.state === "reconnecting") this._setState("offline");
  }

  _setState(state, info = {}) {
    this.state = state;
    this.on.state(state, { ...info, lostAt: this.lostAt, attempts: this.attempts });
  }
}
