/* The viewer page: the pinned drop and its live counter, the Buy button, the buyer's
 * hold and checkout; for a drop sold by draw, the entry, its countdown and the draw's
 * result instead of the Buy button. The server decides everything (stock, limits,
 * whether a drop sells, who is drawn): this page asks, and shows what it was told. */
(function () {
  "use strict";
  const Live = window.Live;
  const root = document.getElementById("viewer");
  const signedIn = root.dataset.signedIn === "true";
  const $ = function (id) {
    return document.getElementById(id);
  };
  const els = {
    status: $("stream-status"),
    viewers: $("viewer-count"),
    connection: $("connection"),
    card: $("drop-card"),
    noDrop: $("no-drop"),
    drop: $("drop"),
    image: $("drop-image"),
    imagePlaceholder: $("drop-image-placeholder"),
    name: $("drop-name"),
    sku: $("drop-sku"),
    price: $("drop-price"),
    countdown: $("drop-countdown"),
    left: $("drop-left"),
    sold: $("drop-sold"),
    soldOut: $("sold-out"),
    limit: $("drop-limit"),
    buyForm: $("buy-form"),
    quantity: $("buy-quantity"),
    buy: $("buy-button"),
    buyError: $("buy-error"),
    hold: $("hold"),
    holdText: $("hold-text"),
    holdTimer: $("hold-timer"),
    holdActions: $("hold-actions"),
    checkout: $("checkout-button"),
    release: $("release-button"),
    order: $("order-text"),
    holdError: $("hold-error"),
    waitlist: $("waitlist"),
    waitlistText: $("waitlist-text"),
    waitlistJoin: $("waitlist-join"),
    waitlistLeave: $("waitlist-leave"),
    waitlistError: $("waitlist-error"),
    signIn: $("sign-in-to-buy"),
    draw: $("draw"),
    drawCountdown: $("draw-countdown"),
    drawEntries: $("draw-entries"),
    drawOutcome: $("draw-outcome"),
    drawCommitmentLine: $("draw-commitment-line"),
    drawCommitment: $("draw-commitment"),
    drawSeedLine: $("draw-seed-line"),
    drawSeed: $("draw-seed"),
    drawVerify: $("draw-verify"),
    drawForm: $("draw-form"),
    drawQuantity: $("draw-quantity"),
    enter: $("enter-button"),
    drawEntry: $("draw-entry"),
    drawError: $("draw-error"),
  };

  let state = Live.stateFromSnapshot(JSON.parse($("stream-snapshot").textContent));
  let hold = null; // the buyer's latest reservation on this stream
  let order = null; // the order its checkout made
  let busy = false; // one purchase request at a time
  let pendingCheck = null;
  let line = null; // the viewer's waitlist entry for the pinned drop, if any
  let lineDrop = null; // the drop that entry (or its absence) was asked for
  let entry = null; // the viewer's entry in the pinned drop's draw, if any
  let entryDrop = null; // the drop that entry (or its absence) was asked for
  let drawDrop = null; // the draw drop whose public draw was last asked for
  let resultCheck = null;

  // Holds still in play; the others are history.
  const ACTIVE = ["pending", "held"];
  // If a pending hold's reservation.updated has not come (socket down), ask the API.
  const PENDING_CHECK_MS = 4000;
  // Likewise for the viewer's draw.result once the draw is announced.
  const RESULT_CHECK_MS = 3000;
  // An entry's statuses in the order they happen: an older answer never undoes a newer.
  const ENTRY_ORDER = { entered: 1, won: 2, lost: 2 };

  const REJECT_REASONS = {
    sold_out: "it sold out first",
    limit_reached: "you reached this drop's limit per viewer",
    drop_not_live: "the drop is not on sale",
  };

  // --- rendering ----------------------------------------------------------------------

  function dropName(drop) {
    return drop ? drop.product + " (" + drop.sku + ")" : "this drop";
  }

  function showImage(drop) {
    const url = drop.image_url || "";
    // Only http(s) images; anything else keeps the placeholder.
    const usable = /^https?:\/\//i.test(url);
    els.imagePlaceholder.textContent = (drop.product || "?").charAt(0).toUpperCase();
    if (!usable) {
      els.image.hidden = true;
      els.image.removeAttribute("src");
      els.imagePlaceholder.hidden = false;
      return;
    }
    if (els.image.getAttribute("src") !== url) {
      els.image.hidden = true; // shown once it loads; a broken link keeps the placeholder
      els.imagePlaceholder.hidden = false;
      els.image.alt = drop.product || "";
      els.image.src = url;
    }
  }

  els.image.addEventListener("load", function () {
    els.image.hidden = false;
    els.imagePlaceholder.hidden = true;
  });
  els.image.addEventListener("error", function () {
    els.image.hidden = true;
    els.imagePlaceholder.hidden = false;
  });

  function pinnedDrop() {
    return state.pinnedId !== null ? state.drops.get(state.pinnedId) || null : null;
  }

  function isDraw(drop) {
    return Boolean(drop && drop.mode === "draw");
  }

  function render() {
    els.status.textContent = Live.STATUS_LABELS[state.status] || state.status;
    els.status.className = "badge status-" + state.status;
    els.viewers.textContent = String(state.viewers);

    const drop = state.pinnedId !== null ? state.drops.get(state.pinnedId) : null;
    els.noDrop.hidden = Boolean(drop);
    els.drop.hidden = !drop;
    if (drop) {
      els.drop.dataset.dropId = String(drop.id);
      showImage(drop);
      els.name.textContent = drop.product;
      els.sku.textContent = drop.sku;
      els.price.textContent = Live.money(drop.price, drop.currency);
      els.left.textContent = String(drop.remaining);
      els.sold.textContent = String(drop.sold);
      const soldOut = drop.remaining <= 0;
      // A draw's winner holds one of the units that made it sell out: theirs, not gone.
      const won = isDraw(drop) && entry && entry.drop === drop.id && entry.status === "won";
      els.soldOut.hidden = !soldOut || won;
      els.card.classList.toggle("is-sold-out", soldOut && !won);
      els.limit.hidden = !drop.per_viewer_limit;
      els.limit.textContent = drop.per_viewer_limit ? "Up to " + drop.per_viewer_limit + " per viewer" : "";
      if (els.quantity) {
        if (drop.per_viewer_limit) {
          els.quantity.max = String(drop.per_viewer_limit);
        } else {
          els.quantity.removeAttribute("max");
        }
      }
      if (els.buy) {
        els.buy.disabled = busy || soldOut || state.status !== "live";
        els.buy.textContent = soldOut ? "Sold out" : busy ? "Reserving…" : "Buy";
      }
      if (els.buyForm) {
        els.buyForm.hidden = isDraw(drop);
      }
      if (els.signIn) {
        els.signIn.textContent = isDraw(drop) ? "Sign in to enter the draw" : "Sign in to buy";
      }
    } else {
      els.drop.dataset.dropId = "";
      els.card.classList.remove("is-sold-out");
    }
    renderDraw(drop);
    renderWaitlist(drop);
    tick();
    renderHold();
  }

  /* Sold out: the viewer may queue; a unit that comes back is offered to the first in
   * line as a hold (it then shows in "Your hold"). */
  const LINE_TEXTS = {
    offered: "A unit came back for you: it is held below, check out before it passes on.",
    claimed: "You got one from the waitlist.",
    lapsed: "Your offer passed to the next in line.",
    left: "You left the line.",
    skipped: "You were skipped: you already have this drop's limit.",
    closed: "The sale ended before a unit came back.",
  };

  function renderWaitlist(drop) {
    if (!els.waitlist) {
      return;
    }
    if (drop && isDraw(drop) && entry && entry.drop === drop.id) {
      els.waitlist.hidden = true; // the draw's panel shows an entrant's place in line
      return;
    }
    const inLine = line && drop && line.drop === drop.id && ["waiting", "offered"].includes(line.status);
    const soldOut = drop && drop.remaining <= 0 && drop.status === "open" && state.status === "live";
    els.waitlist.hidden = !(inLine || soldOut || (line && drop && line.drop === drop.id));
    if (els.waitlist.hidden) {
      return;
    }
    if (line && line.drop === drop.id) {
      els.waitlistText.textContent =
        line.status === "waiting" ? "You are number " + line.position + " in line." : LINE_TEXTS[line.status] || line.status;
    } else {
      els.waitlistText.textContent = "Sold out. Join the line: a unit that comes back goes to the first in line.";
    }
    els.waitlistJoin.hidden = Boolean(inLine) || !soldOut;
    els.waitlistLeave.hidden = !inLine;
    els.waitlistJoin.disabled = busy;
    els.waitlistLeave.disabled = busy;
  }

  /* The viewer's place for the pinned drop, once per drop (then events keep it). */
  async function loadLine(force) {
    const drop = state.pinnedId !== null ? state.drops.get(state.pinnedId) : null;
    if (!signedIn || !drop || (!force && lineDrop === drop.id)) {
      return;
    }
    lineDrop = drop.id;
    try {
      line = await Live.api("GET", "/api/drops/" + drop.id + "/waitlist/");
    } catch (err) {
      line = null;
      if (err.code !== "not_on_waitlist") {
        Live.showError(els.waitlistError, err);
      }
    }
    render();
  }

  async function changeLine(method) {
    const drop = state.pinnedId !== null ? state.drops.get(state.pinnedId) : null;
    if (!drop || busy) {
      return;
    }
    await whileBusy(els.waitlistError, async function () {
      const url = "/api/drops/" + drop.id + "/waitlist/";
      if (method === "POST") {
        line = await Live.api("POST", url, { body: { quantity: 1 } });
      } else {
        await Live.api("DELETE", url);
        line = await Live.api("GET", url);
      }
    });
  }

  /* One request at a time: buttons disabled while it runs, its error shown in place. */
  async function whileBusy(errorElement, work) {
    Live.showError(errorElement, null);
    busy = true;
    render();
    try {
      await work();
    } catch (err) {
      Live.showError(errorElement, err);
    } finally {
      busy = false;
      render();
    }
  }

  /* Countdowns: the drop's start, the draw's close and the hold's expiry, once a second. */
  function tick() {
    const drop = state.pinnedId !== null ? state.drops.get(state.pinnedId) : null;
    drawTick(drop);
    const startsAt = drop && drop.starts_at ? Date.parse(drop.starts_at) : NaN;
    const untilStart = startsAt - Live.serverNow();
    if (untilStart > 0) {
      els.countdown.hidden = false;
      els.countdown.textContent = "Starts in " + Live.duration(untilStart);
    } else {
      els.countdown.hidden = true;
    }
    if (hold && hold.status === "held" && hold.expires_at) {
      const left = Date.parse(hold.expires_at) - Live.serverNow();
      els.holdTimer.hidden = false;
      els.holdTimer.textContent =
        left > 0 ? Live.duration(left) + " left to check out" : "Time is up: the hold is expiring…";
    } else {
      els.holdTimer.hidden = true;
    }
  }

  function renderHold() {
    if (!hold) {
      els.hold.hidden = true;
      return;
    }
    els.hold.hidden = false;
    els.hold.dataset.status = hold.status;
    const drop = state.drops.get(hold.drop);
    const what = hold.quantity + " × " + dropName(drop);
    const texts = {
      pending: "Reserving " + what + "…",
      held: "Held for you: " + what + ".",
      confirmed: "Bought: " + what + ".",
      released: "Released: " + what + " went back on sale.",
      expired: "Your hold on " + what + " expired; the units went back on sale.",
      rejected:
        "Not reserved: " + (REJECT_REASONS[hold.reject_reason] || hold.reject_reason || "refused") + ".",
    };
    els.holdText.textContent = texts[hold.status] || hold.status;
    els.holdActions.hidden = hold.status !== "held";
    els.checkout.disabled = busy;
    els.release.disabled = busy;
    if (order && order.reservation === hold.id) {
      els.order.hidden = false;
      const paid = order.status === "paid" ? "paid" : "payment " + order.status;
      els.order.textContent = "Order #" + order.id + ": " + Live.money(order.total, order.currency) + ", " + paid + ".";
    } else {
      els.order.hidden = true;
    }
  }

  // --- the draw -----------------------------------------------------------------------

  const DRAW_PHASE_TEXTS = {
    waiting: "Entries open when the host starts the draw.",
    closing: "Entries closed: drawing…",
    drawn: "Entries closed.",
  };

  /* The countdown and whether entering is possible: they change with the clock. */
  function drawTick(drop) {
    if (!els.draw || !isDraw(drop)) {
      return;
    }
    const phase = Live.drawPhase(drop);
    els.draw.dataset.phase = phase;
    if (phase === "open") {
      const left = Date.parse(drop.entries_close_at) - Live.serverNow();
      els.drawCountdown.textContent = "Entries close in " + Live.duration(left);
    } else {
      els.drawCountdown.textContent = DRAW_PHASE_TEXTS[phase];
    }
    if (els.enter) {
      const open = phase === "open" && state.status === "live";
      els.enter.disabled = busy || !open;
      els.enter.textContent = busy ? "Entering…" : open || phase === "waiting" ? "Enter the draw" : "Entries closed";
    }
  }

  function entryText(mine, drop) {
    if (mine.status === "entered") {
      const units = mine.quantity === 1 ? "1 unit" : mine.quantity + " units";
      return "You're in for " + units + ". The draw runs when entries close.";
    }
    if (mine.status === "won") {
      const offer = mine.reservation;
      const current = hold && offer && hold.id === offer.id ? hold : offer;
      const texts = {
        held: "You won! Your " + dropName(drop) + " is held for you: check out below before the time runs out.",
        confirmed: "You won, and it's yours.",
        expired: "You won, but the hold was not checked out in time.",
        released: "You won, and let the units go.",
      };
      return (current && texts[current.status]) || "You won!";
    }
    if (mine.status === "lost") {
      const place = line && line.drop === drop.id ? line : mine.waitlist;
      if (!place) {
        return "Not drawn this time.";
      }
      if (place.status === "waiting" && place.position) {
        return (
          "Not drawn this time. You are number " +
          place.position +
          " on the waitlist: a winner's unit that comes back goes to the first in line."
        );
      }
      return "Not drawn this time. " + (LINE_TEXTS[place.status] || place.status);
    }
    return mine.status;
  }

  function renderDraw(drop) {
    if (!els.draw) {
      return;
    }
    els.draw.hidden = !isDraw(drop);
    if (!isDraw(drop)) {
      return;
    }
    const facts = drop.draw || {};
    els.drawEntries.textContent = typeof facts.entries === "number" ? String(facts.entries) : "–";
    const commitment = drop.seed_commitment || "";
    els.drawCommitmentLine.hidden = !commitment;
    els.drawCommitment.textContent = Live.shortHash(commitment);
    els.drawCommitment.title = commitment;
    els.drawSeedLine.hidden = !facts.seed;
    els.drawSeed.textContent = Live.shortHash(facts.seed || "");
    els.drawSeed.title = facts.seed || "";
    els.drawVerify.href = "/api/drops/" + drop.id + "/draw/";
    els.drawOutcome.hidden = !facts.drawn;
    if (facts.drawn) {
      const winners = facts.winners === 1 ? "1 winner" : facts.winners + " winners";
      els.drawOutcome.textContent = "Drawn: " + winners + " from " + facts.entries + " entries.";
    }
    if (els.drawForm) {
      const mine = entry && entry.drop === drop.id ? entry : null;
      els.draw.dataset.entry = mine ? mine.status : "none";
      els.drawForm.hidden = Boolean(mine);
      els.drawEntry.hidden = !mine;
      els.drawEntry.textContent = mine ? entryText(mine, drop) : "";
      if (drop.per_viewer_limit) {
        els.drawQuantity.max = String(drop.per_viewer_limit);
      } else {
        els.drawQuantity.removeAttribute("max");
      }
    }
    drawTick(drop);
  }

  /* Take the newest word on the viewer's entry (the API's answer or draw.result). A
   * winner's offer is their hold: it shows, and checks out, like any hold. */
  function setEntry(body) {
    if (!body || typeof body.drop !== "number" || !state.drops.has(body.drop)) {
      return; // another stream's draw: the viewer's personal events follow them everywhere
    }
    if (entry && entry.drop === body.drop && (ENTRY_ORDER[body.status] || 0) < (ENTRY_ORDER[entry.status] || 0)) {
      return;
    }
    entry = body;
    entryDrop = body.drop;
    if (body.status !== "entered") {
      clearTimeout(resultCheck);
      const drop = state.drops.get(body.drop);
      if (drop && drop.id === state.pinnedId && !(drop.draw && drop.draw.drawn)) {
        // The result says the draw happened: its seed and winners, if draw.closed
        // has not brought them.
        loadDraw(true);
      }
    }
    const offer = body.reservation;
    if (offer && !(hold && hold.id === offer.id && !ACTIVE.includes(hold.status))) {
      setHold(offer); // a hold already checked out (or let go) is newer than the offer
    }
    render();
  }

  /* The viewer's entry for the pinned draw drop: on load, on a new pin, and after a
   * reconnect (personal events are not replayed). 404: not entered. */
  async function loadEntry(force) {
    const drop = pinnedDrop();
    if (!signedIn || !isDraw(drop) || (!force && entryDrop === drop.id)) {
      return;
    }
    entryDrop = drop.id;
    try {
      setEntry(await Live.api("GET", "/api/drops/" + drop.id + "/entries/mine/"));
    } catch (err) {
      if (err.status === 404) {
        if (entry && entry.drop === drop.id) {
          return; // entered meanwhile: that answer is the newer one
        }
        entry = null;
        render();
      } else {
        Live.showError(els.drawError, err);
      }
    }
  }

  /* The pinned draw's count, and its seed and winners once drawn (not in the snapshot). */
  async function loadDraw(force) {
    const drop = pinnedDrop();
    if (!isDraw(drop) || (!force && drawDrop === drop.id)) {
      return;
    }
    drawDrop = drop.id;
    try {
      const body = await Live.api("GET", "/api/drops/" + drop.id + "/draw/");
      const current = state.drops.get(drop.id);
      if (Live.applyDraw(current, body)) {
        render();
      }
    } catch (err) {
      // The events keep the count; a failed read leaves what the page shows.
    }
  }

  /* The draw was announced: an entrant whose draw.result has not come asks for it. */
  function expectResult(dropId) {
    clearTimeout(resultCheck);
    if (entry && entry.drop === dropId && entry.status === "entered") {
      resultCheck = setTimeout(function () {
        loadEntry(true);
      }, RESULT_CHECK_MS);
    }
  }

  async function enter(event) {
    event.preventDefault();
    const drop = pinnedDrop();
    if (!isDraw(drop) || busy) {
      return;
    }
    const quantity = Number(els.drawQuantity.value);
    await whileBusy(els.drawError, async function () {
      const send = function () {
        return Live.api("POST", "/api/drops/" + drop.id + "/entries/", { body: { quantity: quantity } });
      };
      let body;
      try {
        body = await send();
      } catch (err) {
        // One entry per viewer: sending again can only return the same entry.
        if (err.code !== "network") {
          throw err;
        }
        body = await send();
      }
      setEntry(body);
    });
  }

  // --- the buyer's hold ---------------------------------------------------------------

  function isOurs(reservation) {
    return reservation && state.drops.has(reservation.drop);
  }

  /* Take the newest word on a reservation (from the API or the personal event). */
  function setHold(reservation) {
    if (!isOurs(reservation)) {
      return;
    }
    if (hold && reservation.id !== hold.id && !ACTIVE.includes(reservation.status) && ACTIVE.includes(hold.status)) {
      return; // news of an older hold must not hide the active one
    }
    hold = reservation;
    clearTimeout(pendingCheck);
    if (hold.status === "pending") {
      pendingCheck = setTimeout(refreshHold, PENDING_CHECK_MS);
    }
    render();
  }

  async function refreshHold() {
    if (!hold) {
      return;
    }
    try {
      setHold(await Live.api("GET", "/api/reservations/" + hold.id + "/"));
    } catch (err) {
      Live.showError(els.holdError, err);
    }
  }

  /* On load, and after a reconnect (personal events are not replayed): the buyer's
   * latest hold on this stream. */
  async function loadHold() {
    if (!signedIn) {
      return;
    }
    try {
      const page = await Live.api("GET", "/api/reservations/?limit=50");
      const mine = (page.results || []).filter(isOurs);
      const active = mine.find(function (r) {
        return ACTIVE.includes(r.status);
      });
      if (active) {
        setHold(active);
      } else if (hold) {
        await refreshHold();
      }
    } catch (err) {
      Live.showError(els.holdError, err);
    }
  }

  async function buy(event) {
    event.preventDefault();
    const drop = state.pinnedId !== null ? state.drops.get(state.pinnedId) : null;
    if (!drop || busy) {
      return;
    }
    const quantity = Number(els.quantity.value);
    Live.showError(els.buyError, null);
    busy = true;
    render();
    // One key per purchase, reused by the retry: a lost answer never makes a second hold.
    const key = Live.newKey();
    const send = function () {
      return Live.api("POST", "/api/drops/" + drop.id + "/reservations/", {
        body: { quantity: quantity },
        headers: { "Idempotency-Key": key },
      });
    };
    try {
      let reservation;
      try {
        reservation = await send();
      } catch (err) {
        if (err.code !== "network") {
          throw err;
        }
        reservation = await send();
      }
      order = null;
      Live.showError(els.holdError, null);
      setHold(reservation);
    } catch (err) {
      Live.showError(els.buyError, err);
    } finally {
      busy = false;
      render();
    }
  }

  async function checkout() {
    if (!hold || busy) {
      return;
    }
    await whileBusy(els.holdError, async function () {
      order = await Live.api("POST", "/api/reservations/" + hold.id + "/checkout/");
      await refreshHold(); // confirmed; the personal event says so too
    });
  }

  async function release() {
    if (!hold || busy) {
      return;
    }
    await whileBusy(els.holdError, async function () {
      await Live.api("DELETE", "/api/reservations/" + hold.id + "/");
      await refreshHold();
    });
  }

  if (els.waitlist) {
    els.waitlistJoin.addEventListener("click", function () {
      changeLine("POST");
    });
    els.waitlistLeave.addEventListener("click", function () {
      changeLine("DELETE");
    });
  }

  if (els.drawForm) {
    els.drawForm.addEventListener("submit", enter);
  }

  if (els.buyForm) {
    els.buyForm.addEventListener("submit", buy);
    els.checkout.addEventListener("click", checkout);
    els.release.addEventListener("click", release);
  }

  // --- live ---------------------------------------------------------------------------

  const socket = new Live.StreamSocket(root.dataset.slug, {
    onState: function (snapshot) {
      state = Live.stateFromSnapshot(snapshot, state);
      render();
      loadHold();
      loadLine(true); // personal events are not replayed after a reconnect
      loadEntry(true);
      loadDraw(true);
    },
    onEvent: function (event) {
      if (event.type === "reservation.updated") {
        setHold(event.reservation);
      } else if (event.type === "waitlist.updated") {
        line = event.waitlist;
        render();
      } else if (event.type === "draw.result") {
        setEntry(event.entry);
      } else if (Live.applyEvent(state, event)) {
        render();
        loadLine(false); // a newly pinned drop: is the viewer in its line?
        loadEntry(false);
        loadDraw(false);
        if (event.type === "draw.closed") {
          expectResult(event.drop);
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
  setInterval(tick, 1000);
})();
