/* Shared by the viewer page and the host console: API calls, the stream's websocket
 * (snapshot, numbered events, resync, reconnect) and the client-side mirror of a
 * stream's state. No dependencies; everything shown goes through textContent. */
(function () {
  "use strict";

  // --- clock ------------------------------------------------------------------------

  // Server time minus ours, learnt from API responses' Date header, so that hold and
  // drop countdowns follow the server's clock rather than a viewer's wrong one. The
  // header has one-second resolution: a skew under 2 s is noise, not worth applying.
  let clockOffset = 0;
  function serverNow() {
    return Date.now() + clockOffset;
  }
  function learnClock(response) {
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) {
      const skew = date - Date.now();
      clockOffset = Math.abs(skew) > 2000 ? skew : 0;
    }
  }

  // --- REST -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, detail, reason) {
      super(detail);
      this.status = status;
      this.code = code;
      this.detail = detail;
      // Some refusals name which rule refused (not_eligible: account_too_new, ...).
      this.reason = reason || "";
    }
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  const SAFE_METHODS = ["GET", "HEAD", "OPTIONS"];

  /* fetch() with the session cookie; unsafe methods carry the CSRF token, as
   * SessionAuthentication demands. Resolves to the JSON body (null for 204); rejects
   * with an ApiError carrying the API's {code, detail}, or code "network". */
  async function api(method, path, options) {
    const opts = options || {};
    const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
    const init = { method: method, credentials: "same-origin", headers: headers };
    if (opts.body !== undefined) {
      init.body = JSON.stringify(opts.body);
      headers["Content-Type"] = "application/json";
    }
    if (!SAFE_METHODS.includes(method)) {
      headers["X-CSRFToken"] = csrfToken();
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, "network", "The server could not be reached. Try again.");
    }
    learnClock(response);
    if (response.status === 204) {
      return null;
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const code = (data && typeof data.code === "string" && data.code) || "http_" + response.status;
      const detail =
        (data && typeof data.detail === "string" && data.detail) ||
        "The server answered " + response.status + ".";
      const reason = (data && typeof data.reason === "string" && data.reason) || "";
      throw new ApiError(response.status, code, detail, reason);
    }
    return data;
  }

  /* An Idempotency-Key per attempt. crypto.randomUUID exists only in secure contexts
   * (https, localhost); plain http elsewhere builds the same v4 UUID by hand. */
  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, function (x) {
      return x.toString(16).padStart(2, "0");
    }).join("");
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join("-");
  }

  // --- the stream's state, mirrored ---------------------------------------------------

  /* The client's copy of a stream: drops by id and which one is pinned. Built from a
   * snapshot (the page's embedded one, then every stream.state) and moved forward by
   * the numbered events, which carry absolute values.
   *
   * A draw drop's live facts (entry count, seed, winners) are not in the snapshot: they
   * come from the draw events and GET /api/drops/{id}/draw/. A new snapshot keeps what
   * the state it replaces (``previous``) knew of them; they only ever move forward. */
  function stateFromSnapshot(snapshot, previous) {
    const drops = new Map();
    (snapshot.drops || []).forEach(function (drop) {
      drops.set(drop.id, Object.assign({}, drop));
    });
    const pinned = snapshot.pinned_drop;
    if (pinned && !drops.has(pinned.id)) {
      drops.set(pinned.id, Object.assign({}, pinned));
    }
    if (previous) {
      drops.forEach(function (drop) {
        const known = previous.drops.get(drop.id);
        if (known && known.draw) {
          drop.draw = Object.assign({}, known.draw);
        }
      });
    }
    return {
      id: snapshot.id,
      slug: snapshot.slug,
      title: snapshot.title,
      status: snapshot.status,
      host: snapshot.host,
      playbackUrl: snapshot.playback_url,
      viewers: snapshot.viewers || 0,
      drops: drops,
      pinnedId: pinned ? pinned.id : null,
    };
  }

  /* Apply one stream event; returns true when the state changed. */
  function applyEvent(state, event) {
    const drop = typeof event.drop === "number" ? state.drops.get(event.drop) : null;
    switch (event.type) {
      case "stream.started":
      case "stream.ended":
        state.status = event.stream && event.stream.status ? event.stream.status : state.status;
        if (state.status === "ended") {
          state.pinnedId = null;
        }
        return true;
      case "drop.pinned": {
        const pinned = Object.assign({}, event.drop, { pinned: true });
        const known = state.drops.get(pinned.id);
        if (known && known.draw) {
          pinned.draw = known.draw; // a draw's facts are not in the drop's body
        }
        state.drops.forEach(function (d) {
          d.pinned = false;
        });
        state.drops.set(pinned.id, pinned);
        state.pinnedId = pinned.id;
        return true;
      }
      case "drop.unpinned":
        if (drop) {
          drop.pinned = false;
        }
        if (state.pinnedId === event.drop) {
          state.pinnedId = null;
        }
        return true;
      case "stock.changed":
        if (drop) {
          drop.remaining = event.remaining;
          drop.sold = event.sold;
        }
        return Boolean(drop);
      case "drop.opened":
      case "drop.closed": {
        // A timed drop's sale opened or closed by itself: the drop as it is now.
        const known = state.drops.get(event.drop.id);
        const updated = Object.assign({}, known || {}, event.drop);
        state.drops.set(updated.id, updated);
        if (!updated.pinned && state.pinnedId === updated.id) {
          state.pinnedId = null;
        }
        return true;
      }
      case "drop.sold_out":
        if (drop) {
          drop.remaining = 0;
        }
        return Boolean(drop);
      case "viewers.changed":
        state.viewers = event.viewers;
        return true;
      case "draw.opened":
        if (drop) {
          drop.entries_close_at = event.entries_close_at;
          drop.seed_commitment = event.seed_commitment;
          drawFacts(drop);
        }
        return Boolean(drop);
      case "draw.entries":
        if (drop) {
          const facts = drawFacts(drop);
          facts.entries = Math.max(facts.entries || 0, event.entries);
        }
        return Boolean(drop);
      case "draw.closed":
        if (drop) {
          Object.assign(drawFacts(drop), {
            drawn: true,
            seed: event.seed,
            winners: event.winners,
            entries: event.entries,
          });
        }
        return Boolean(drop);
      default:
        return false;
    }
  }

  // --- draws ----------------------------------------------------------------------------

  /* A draw drop's live facts: entries so far, and once drawn the seed and how many won. */
  function drawFacts(drop) {
    if (!drop.draw) {
      drop.draw = { entries: null, drawn: false, seed: null, winners: null };
    }
    return drop.draw;
  }

  /* Fold GET /api/drops/{id}/draw/ into the drop. The answer may be older than an event
   * the socket gave meanwhile: counts only grow, and a drawn draw stays drawn. */
  function applyDraw(drop, body) {
    if (!drop || !body || body.mode !== "draw") {
      return false;
    }
    if (body.entries_close_at && !drop.entries_close_at) {
      drop.entries_close_at = body.entries_close_at;
    }
    if (body.seed_commitment && !drop.seed_commitment) {
      drop.seed_commitment = body.seed_commitment;
    }
    const facts = drawFacts(drop);
    if (typeof body.entries === "number") {
      facts.entries = Math.max(facts.entries || 0, body.entries);
    }
    if (body.status === "drawn" && !facts.drawn) {
      facts.drawn = true;
      facts.seed = body.seed;
      facts.winners = Array.isArray(body.winners) ? body.winners.length : null;
      facts.entries = body.entries;
    }
    return true;
  }

  /* Where a draw drop stands: "waiting" (entries not open yet), "open", "closing"
   * (entries closed, the draw not announced yet) or "drawn". */
  function drawPhase(drop) {
    if (drop.draw && drop.draw.drawn) {
      return "drawn";
    }
    const closeAt = drop.entries_close_at ? Date.parse(drop.entries_close_at) : NaN;
    if (Number.isNaN(closeAt)) {
      return "waiting";
    }
    return closeAt > serverNow() ? "open" : "closing";
  }

  /* The first characters of a hash: enough to compare by eye; the full one is in the
   * element's title and at GET /api/drops/{id}/draw/. */
  function shortHash(hex) {
    return typeof hex === "string" && hex.length > 16 ? hex.slice(0, 12) + "…" : hex || "";
  }

  // --- the websocket ------------------------------------------------------------------

  // Reconnect delays: doubling from BACKOFF_MIN_MS up to BACKOFF_MAX_MS, each with
  // jitter so that a server restart is not met by every viewer in the same instant.
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  // A quiet socket is pinged; one silent for SILENT_MS is taken as dead (a NAT or proxy
  // dropped it without a close) and replaced.
  const PING_EVERY_MS = 15000;
  const SILENT_MS = 40000;
  // The server closes an unknown stream with 4404: reconnecting would not help.
  const CLOSE_NOT_FOUND = 4404;

  /* A refusal's close reason is JSON with retry_after in seconds; 0 when there is none. */
  function retryAfterMs(reason) {
    try {
      const seconds = JSON.parse(reason || "null").retry_after;
      return typeof seconds === "number" && seconds > 0 ? seconds * 1000 : 0;
    } catch (err) {
      return 0;
    }
  }

  /* One stream's websocket, kept open: the first message is the snapshot
   * (stream.state); numbered events follow. A gap in seq, or resync.required from the
   * server, asks for a fresh stream.state; events arriving meanwhile are skipped, as
   * that state covers them. A dropped connection is reopened with backoff, and the new
   * connection starts with a fresh snapshot again.
   *
   * handlers: onState(snapshot), onEvent(event) for every other message (numbered ones
   * in order, personal and host ones as they come), onStatus(status, detail). */
  class StreamSocket {
    constructor(slug, handlers) {
      this.slug = slug;
      this.handlers = handlers;
      this.seq = null;
      this.awaitingState = true;
      this.attempt = 0;
      this.socket = null;
      this.retryTimer = null;
      this.pingTimer = null;
      this.lastHeard = 0;
      // Counted for the curious (and the browser tests): how often each happened.
      this.connects = 0;
      this.resyncs = 0;
    }

    url() {
      const scheme = window.location.protocol === "https:" ? "wss" : "ws";
      return scheme + "://" + window.location.host + "/ws/streams/" + encodeURIComponent(this.slug) + "/";
    }

    start() {
      this.open();
      window.addEventListener("online", () => this.reconnectNow());
    }

    open() {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.awaitingState = true;
      this.status("connecting");
      const socket = new WebSocket(this.url());
      this.socket = socket;
      socket.onopen = () => {
        this.connects += 1;
        this.lastHeard = Date.now();
        this.startPing();
      };
      socket.onmessage = (message) => this.receive(message.data);
      socket.onclose = (event) => this.closed(socket, event.code, event.reason);
    }

    /* Forget the current socket (without waiting for a close handshake a dead network
     * may never finish) and open a new one at once. */
    reconnectNow() {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        return;
      }
      this.abandon();
      this.open();
    }

    abandon() {
      const socket = this.socket;
      this.socket = null;
      this.stopPing();
      if (socket) {
        socket.onopen = socket.onmessage = socket.onclose = null;
        try {
          socket.close();
        } catch (err) {
          /* already closed */
        }
      }
    }

    closed(socket, code, reason) {
      if (socket !== this.socket) {
        return;
      }
      this.socket = null;
      this.stopPing();
      if (code === CLOSE_NOT_FOUND) {
        this.status("gone", "This stream no longer exists.");
        return;
      }
      this.scheduleReconnect(retryAfterMs(reason));
    }

    /* After the server's own hint when it refused the socket (full, busy or too many
     * from this address: it spreads a refused crowd's returns), else with backoff. */
    scheduleReconnect(hintMs) {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, this.attempt));
      const delay = hintMs || Math.round(base * (0.5 + Math.random() / 2));
      this.attempt += 1;
      this.status("reconnecting", "Reconnecting in " + Math.ceil(delay / 1000) + " s…");
      this.retryTimer = setTimeout(() => this.open(), delay);
    }

    startPing() {
      this.stopPing();
      this.pingTimer = setInterval(() => {
        const quiet = Date.now() - this.lastHeard;
        if (quiet > SILENT_MS) {
          this.abandon();
          this.scheduleReconnect();
        } else if (quiet > PING_EVERY_MS) {
          this.send({ type: "ping" });
        }
      }, PING_EVERY_MS / 3);
    }

    stopPing() {
      clearInterval(this.pingTimer);
      this.pingTimer = null;
    }

    send(message) {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify(message));
        return true;
      }
      return false;
    }

    resync() {
      if (this.awaitingState) {
        return; // the state already asked for covers it
      }
      this.awaitingState = true;
      this.resyncs += 1;
      if (!this.send({ type: "resync" })) {
        this.reconnectNow(); // a new connection starts with a snapshot anyway
      }
    }

    receive(text) {
      this.lastHeard = Date.now();
      let event;
      try {
        event = JSON.parse(text);
      } catch (err) {
        return;
      }
      if (!event || typeof event.type !== "string") {
        return;
      }
      switch (event.type) {
        case "stream.state":
          this.seq = event.seq;
          this.awaitingState = false;
          this.attempt = 0; // a connection that delivered a snapshot is a good one
          this.status("live");
          this.handlers.onState(event.stream);
          return;
        case "pong":
          return;
        case "resync.required":
          this.resync();
          return;
        case "error":
          if (event.code === "unavailable" && this.awaitingState) {
            // The server could not build the snapshot: start over on a new connection.
            this.abandon();
            this.scheduleReconnect();
          }
          return;
        default:
          break;
      }
      if (typeof event.seq === "number") {
        if (this.awaitingState || event.seq <= this.seq) {
          return; // covered by the snapshot on its way, or by the one we have
        }
        if (event.seq > this.seq + 1) {
          this.resync();
          return;
        }
        this.seq = event.seq;
      }
      this.handlers.onEvent(event);
    }

    status(name, detail) {
      if (this.handlers.onStatus) {
        this.handlers.onStatus(name, detail || "");
      }
    }
  }

  // --- formatting ---------------------------------------------------------------------

  function money(amount, currency) {
    const value = Number(amount);
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency }).format(value);
    } catch (err) {
      return amount + " " + (currency || "");
    }
  }

  /* "4:05", "1:02:03": for countdowns. */
  function duration(ms) {
    const total = Math.max(0, Math.ceil(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h > 0 ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
  }

  const STATUS_LABELS = { scheduled: "Scheduled", live: "Live", ended: "Ended" };

  /* Shows an API error where the user acted: the API's own sentence, and its code. */
  function showError(element, err) {
    if (!element) {
      return;
    }
    if (!err) {
      element.hidden = true;
      element.textContent = "";
      delete element.dataset.code;
      delete element.dataset.reason;
      return;
    }
    const code = err.code || "error";
    const detail = err.detail || err.message || "Something went wrong.";
    element.textContent = detail + " (" + code + (err.reason ? ": " + err.reason : "") + ")";
    element.dataset.code = code;
    if (err.reason) {
      element.dataset.reason = err.reason;
    } else {
      delete element.dataset.reason;
    }
    element.hidden = false;
  }

  function setConnection(element, status, detail) {
    const labels = { connecting: "Connecting…", live: "Connected", reconnecting: "Offline", gone: "Gone" };
    element.textContent = detail || labels[status] || status;
    element.dataset.status = status;
  }

  window.Live = {
    api: api,
    ApiError: ApiError,
    newKey: newKey,
    serverNow: serverNow,
    stateFromSnapshot: stateFromSnapshot,
    applyEvent: applyEvent,
    applyDraw: applyDraw,
    drawPhase: drawPhase,
    shortHash: shortHash,
    StreamSocket: StreamSocket,
    money: money,
    duration: duration,
    STATUS_LABELS: STATUS_LABELS,
    showError: showError,
    setConnection: setConnection,
    socket: null, // the page's StreamSocket, once started
  };
})();
