/* The host console: go live, end, pin and unpin drops, and watch host.stats and the
 * draws of drops sold by draw (entries, the close, the outcome). The buttons call the
 * API; what the page shows comes from the websocket (the API's answer is applied at
 * once too, so the console never waits on its own action). */
(function () {
  "use strict";
  const Live = window.Live;
  const root = document.getElementById("host");
  const slug = root.dataset.slug;
  const $ = function (id) {
    return document.getElementById(id);
  };
  const els = {
    status: $("stream-status"),
    viewers: $("viewer-count"),
    connection: $("connection"),
    start: $("start-button"),
    end: $("end-button"),
    controlError: $("control-error"),
    rows: $("drop-rows"),
    dropError: $("drop-error"),
    drawsPanel: $("draws-panel"),
    drawList: $("draw-list"),
    statViewers: $("stat-viewers"),
    statSellThrough: $("stat-sell-through"),
    statRate: $("stat-rate"),
    statProjection: $("stat-projection"),
    chart: {
      viewers: $("chart-viewers"),
      sellThrough: $("chart-sell-through"),
      rate: $("chart-rate"),
    },
  };

  let state = Live.stateFromSnapshot(JSON.parse($("stream-snapshot").textContent));
  let stats = new Map(); // drop id -> its row of the latest host.stats
  let busy = false;

  // The chart keeps the last HISTORY samples (one per host.stats, a few seconds apart).
  const HISTORY = 90;
  const history = [];
  const CHART = { width: 360, top: 10, bottom: 110 };

  // --- rendering ----------------------------------------------------------------------

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function percent(ratio) {
    return Math.round(ratio * 1000) / 10 + "%";
  }

  function projection(seconds) {
    return seconds === null || seconds === undefined ? "–" : Live.duration(seconds * 1000);
  }

  function renderDrops() {
    const rows = [];
    state.drops.forEach(function (drop) {
      const row = document.createElement("tr");
      row.dataset.dropId = String(drop.id);
      row.classList.toggle("is-pinned", drop.id === state.pinnedId);
      row.classList.toggle("is-sold-out", drop.remaining <= 0);
      const stat = stats.get(drop.id);
      cell(row, String(drop.id));
      const product = cell(row, drop.product + " (" + drop.sku + ")");
      if (drop.mode === "draw") {
        const tag = document.createElement("span");
        tag.className = "mode-tag";
        tag.textContent = "Draw";
        product.appendChild(tag);
      }
      cell(row, Live.money(drop.price, drop.currency));
      cell(row, String(drop.remaining), "left");
      cell(row, String(drop.sold), "sold");
      cell(row, String(drop.quantity));
      cell(row, stat ? percent(stat.sell_through) : "–");
      cell(row, stat ? String(stat.units_per_minute) : "–");
      cell(row, stat ? projection(stat.projected_sold_out_seconds) : "–");
      const actions = document.createElement("div");
      actions.className = "row-actions";
      cell(row, "").appendChild(actions);
      if (drop.remaining <= 0) {
        const tag = document.createElement("span");
        tag.className = "sold-out-tag";
        tag.textContent = "Sold out";
        actions.appendChild(tag);
      }
      const pinned = drop.id === state.pinnedId;
      const button = document.createElement("button");
      button.type = "button";
      button.className = pinned ? "button small" : "button small primary";
      button.textContent = pinned ? "Unpin" : "Pin";
      button.dataset.action = pinned ? "unpin" : "pin";
      button.dataset.dropId = String(drop.id);
      button.disabled = busy;
      actions.appendChild(button);
      rows.push(row);
    });
    if (rows.length === 0) {
      const row = document.createElement("tr");
      const td = cell(row, "No drops yet: add one with the API (POST /api/streams/" + slug + "/drops/).", "muted");
      td.colSpan = 10;
      rows.push(row);
    }
    els.rows.replaceChildren.apply(els.rows, rows);
  }

  function render() {
    els.status.textContent = Live.STATUS_LABELS[state.status] || state.status;
    els.status.className = "badge status-" + state.status;
    els.viewers.textContent = String(state.viewers);
    els.start.disabled = busy || state.status !== "scheduled";
    els.end.disabled = busy || state.status === "ended";
    renderDrops();
    renderDraws();
  }

  // --- draws --------------------------------------------------------------------------

  function para(parent, text, className) {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) {
      p.className = className;
    }
    parent.appendChild(p);
    return p;
  }

  function clockTime(iso) {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? iso : at.toLocaleTimeString();
  }

  function drawCountdownText(drop) {
    const phase = Live.drawPhase(drop);
    if (phase === "waiting") {
      return "Entries open at the pin, for " + Live.duration((drop.entry_seconds || 0) * 1000) + ".";
    }
    if (phase === "open") {
      const left = Date.parse(drop.entries_close_at) - Live.serverNow();
      return "Entries close at " + clockTime(drop.entries_close_at) + " (in " + Live.duration(left) + ")";
    }
    if (phase === "closing") {
      return "Entries closed at " + clockTime(drop.entries_close_at) + ": drawing…";
    }
    return "Entries closed at " + clockTime(drop.entries_close_at) + ".";
  }

  /* One block per drop sold by draw: its entries live, the close, then the outcome. */
  function renderDraws() {
    const blocks = [];
    state.drops.forEach(function (drop) {
      if (drop.mode !== "draw") {
        return;
      }
      const facts = drop.draw || {};
      const block = document.createElement("div");
      block.className = "draw-row";
      block.dataset.dropId = String(drop.id);
      block.dataset.phase = Live.drawPhase(drop);
      const title = document.createElement("h3");
      const units = drop.quantity === 1 ? "1 unit" : drop.quantity + " units";
      title.textContent = "#" + drop.id + " " + drop.product + " (" + drop.sku + "): " + units;
      block.appendChild(title);
      para(block, drawCountdownText(drop), "draw-countdown");
      const entries = para(block, "", "draw-entries");
      const count = document.createElement("strong");
      count.textContent = typeof facts.entries === "number" ? String(facts.entries) : "–";
      entries.append(count, " entries");
      if (drop.seed_commitment) {
        const proof = para(block, "Seed commitment: ", "muted draw-proof");
        const code = document.createElement("code");
        code.className = "draw-commitment";
        code.textContent = Live.shortHash(drop.seed_commitment);
        code.title = drop.seed_commitment;
        proof.appendChild(code);
      }
      if (facts.drawn) {
        const winners = facts.winners === 1 ? "1 winner" : facts.winners + " winners";
        para(block, "Drawn: " + winners + " from " + facts.entries + " entries.", "draw-outcome");
        const seed = para(block, "Seed: ", "muted draw-proof");
        const code = document.createElement("code");
        code.className = "draw-seed";
        code.textContent = Live.shortHash(facts.seed || "");
        code.title = facts.seed || "";
        seed.appendChild(code);
      }
      if (drop.entries_close_at) {
        const link = document.createElement("a");
        link.className = "draw-link";
        link.href = "/api/drops/" + drop.id + "/draw/";
        link.target = "_blank";
        link.rel = "noopener";
        link.textContent = facts.drawn ? "The draw's record (seed, winners, entries)" : "The draw's record";
        para(block, "").appendChild(link);
      }
      blocks.push(block);
    });
    els.drawsPanel.hidden = blocks.length === 0;
    els.drawList.replaceChildren.apply(els.drawList, blocks);
  }

  /* The countdowns move with the clock; the rest with events. */
  function tickDraws() {
    els.drawList.querySelectorAll(".draw-row").forEach(function (block) {
      const drop = state.drops.get(Number(block.dataset.dropId));
      if (!drop) {
        return;
      }
      const phase = Live.drawPhase(drop);
      if (phase !== block.dataset.phase) {
        renderDraws();
        return;
      }
      block.querySelector(".draw-countdown").textContent = drawCountdownText(drop);
    });
  }

  /* The draws' counts and outcomes are not in the snapshot: ask for those opened. */
  function loadDraws(onlyId) {
    state.drops.forEach(function (drop) {
      if (drop.mode !== "draw" || !drop.entries_close_at || (onlyId !== undefined && drop.id !== onlyId)) {
        return;
      }
      Live.api("GET", "/api/drops/" + drop.id + "/draw/").then(
        function (body) {
          if (Live.applyDraw(state.drops.get(drop.id), body)) {
            renderDraws();
          }
        },
        function () {
          /* the events keep the count; a failed read leaves what the console shows */
        }
      );
    });
  }

  function renderStats(message) {
    stats = new Map(
      (message.drops || []).map(function (row) {
        return [row.drop, row];
      })
    );
    const pinned = (message.drops || []).find(function (row) {
      return row.pinned;
    });
    els.statViewers.textContent = String(message.viewers);
    els.statSellThrough.textContent = pinned ? percent(pinned.sell_through) : "–";
    els.statRate.textContent = pinned ? String(pinned.units_per_minute) : "–";
    els.statProjection.textContent = pinned
      ? pinned.remaining <= 0
        ? "Sold out"
        : projection(pinned.projected_sold_out_seconds)
      : "–";
    history.push({
      viewers: message.viewers,
      sellThrough: pinned ? pinned.sell_through : 0,
      rate: pinned ? pinned.units_per_minute : 0,
    });
    if (history.length > HISTORY) {
      history.shift();
    }
    drawChart();
    renderDrops();
  }

  /* One polyline per series, each scaled to its own peak (sell-through to 100%); the
   * newest sample at the right edge. */
  function drawChart() {
    const step = CHART.width / (HISTORY - 1);
    const height = CHART.bottom - CHART.top;
    const offset = HISTORY - history.length;
    const line = function (key, peak) {
      return history
        .map(function (sample, i) {
          const x = ((offset + i) * step).toFixed(1);
          const y = (CHART.bottom - (peak > 0 ? sample[key] / peak : 0) * height).toFixed(1);
          return x + "," + y;
        })
        .join(" ");
    };
    const peak = function (key) {
      return Math.max.apply(
        null,
        history.map(function (s) {
          return s[key];
        })
      );
    };
    els.chart.viewers.setAttribute("points", line("viewers", peak("viewers")));
    els.chart.sellThrough.setAttribute("points", line("sellThrough", 1));
    els.chart.rate.setAttribute("points", line("rate", peak("rate")));
  }

  // --- actions ------------------------------------------------------------------------

  async function act(errorElement, request, apply) {
    if (busy) {
      return;
    }
    Live.showError(els.controlError, null);
    Live.showError(els.dropError, null);
    busy = true;
    render();
    try {
      apply(await request());
    } catch (err) {
      Live.showError(errorElement, err);
    } finally {
      busy = false;
      render();
    }
  }

  // The API's answers are applied at once, but only what the action changed (status,
  // pin): counters in an answer may be older than an event the socket already gave.
  function applyStream(snapshot) {
    Live.applyEvent(state, { type: "stream.started", stream: { status: snapshot.status } });
  }

  function applyDrop(drop) {
    if (!state.drops.has(drop.id)) {
      state.drops.set(drop.id, Object.assign({}, drop));
    }
    const known = state.drops.get(drop.id);
    if (drop.mode === "draw" && drop.entries_close_at && !known.entries_close_at) {
      // The pin opened the draw's entries: its close and commitment are in the answer.
      known.entries_close_at = drop.entries_close_at;
      known.seed_commitment = drop.seed_commitment;
    }
    if (drop.pinned) {
      state.drops.forEach(function (d) {
        d.pinned = d.id === drop.id;
      });
      state.pinnedId = drop.id;
    } else {
      Live.applyEvent(state, { type: "drop.unpinned", drop: drop.id });
    }
  }

  els.start.addEventListener("click", function () {
    act(els.controlError, () => Live.api("POST", "/api/streams/" + encodeURIComponent(slug) + "/start/"), applyStream);
  });

  els.end.addEventListener("click", function () {
    if (!window.confirm("End the stream? Unsold units go back to stock and it cannot go live again.")) {
      return;
    }
    act(els.controlError, () => Live.api("POST", "/api/streams/" + encodeURIComponent(slug) + "/end/"), applyStream);
  });

  els.rows.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button) {
      return;
    }
    const action = button.dataset.action; // "pin" or "unpin"
    act(els.dropError, () => Live.api("POST", "/api/drops/" + button.dataset.dropId + "/" + action + "/"), applyDrop);
  });

  // --- live ---------------------------------------------------------------------------

  const socket = new Live.StreamSocket(slug, {
    onState: function (snapshot) {
      state = Live.stateFromSnapshot(snapshot, state);
      render();
      loadDraws();
    },
    onEvent: function (event) {
      if (event.type === "host.stats") {
        renderStats(event);
      } else if (Live.applyEvent(state, event)) {
        render();
        if (event.type === "drop.pinned" && event.drop.mode === "draw") {
          loadDraws(event.drop.id); // entries may have come before the console heard
        }
      }
    },
    onStatus: function (status, detail) {
      Live.setConnection(els.connection, status, detail);
    },
  });
  Live.socket = socket;
  render();
  socket.start();
  setInterval(tickDraws, 1000);
})();
