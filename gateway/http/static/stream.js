// The dashboard stream connection: subscribe, resume after drops, report state.
//
// States: connecting -> connected -> reconnecting | offline -> connected ...; an
// upgrade refused because the session ended ends in `unauthorized`; stop() ends in
// `stopped`. Resume is exact: every (re)subscribe asks for the events after the last
// event id seen, so nothing raised while the page was away is missed.

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
  constructor({ url, checkSession, on }) {
    this.url = url;
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
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, "bye");
    this._setState("stopped");
  }

  /** Send an acknowledgement; false when there is no subscribed connection to send it on. */
  ack(alertId) {
    if (this.state !== "connected" || !this._ws) return false;
    this._ws.send(JSON.stringify({ type: "ack", alert_id: alertId }));
    return true;
  }

  /** Pause an alert's sound on every dashboard for `seconds`; false when not connected. */
  silence(alertId, seconds) {
    if (this.state !== "connected" || !this._ws) return false;
    this._ws.send(JSON.stringify({ type: "silence", alert_id: alertId, seconds }));
    return true;
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
    const resumed = this._everSubscribed; // this connection picks up where another left off
    ws.addEventListener("open", () => {
      opened = true;
      ws.send(JSON.stringify({ type: "subscribe", since_event_id: this.lastEventId, vitals: true }));
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
          this.lastEventId = Math.max(this.lastEventId, msg.event_id);
          if (!subscribed) replayed += 1;
          this.on.alert(msg, { replay: !subscribed, resumed });
          break;
        case "subscribed":
          if (msg.last_event_id < this.lastEventId) {
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
          this.lastEventId = msg.last_event_id;
          this._delays = backoff();
          this.attempts = 0;
          this._setState("connected", { resumed, replayed });
          this.on.subscribed({ resumed, replayed, lastEventId: this.lastEventId });
          this._everSubscribed = true;
          this.lostAt = null;
          break;
        case "vitals":
          this.on.vitals(msg);
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
    if (subscribed) this.lostAt = Date.now();
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
    }
    const delay = this._delays.next().value;
    this.nextAttemptAt = Date.now() + delay * 1000;
    this._setState(navigator.onLine ? "reconnecting" : "offline", { code, reason, delay });
    this._timer = setTimeout(() => this._connect(), delay * 1000);
  }

  _online() {
    // Back on the network: try now instead of waiting out the backoff.
    if (this._ws || ["connected", "stopped", "unauthorized"].includes(this.state)) return;
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
