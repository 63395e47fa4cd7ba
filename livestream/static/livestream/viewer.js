/* The viewer page: the pinned drop and its live counter, the Buy button, the buyer's
 * hold and checkout. The server decides everything (stock, limits, whether a drop
 * sells): this page asks, and shows what it was told. */
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
  };

  let state = Live.stateFromSnapshot(JSON.parse($("stream-snapshot").textContent));
  let hold = null; // the buyer's latest reservation on this stream
  let order = null; // the order its checkout made
  let busy = false; // one purchase request at a time
  let pendingCheck = null;
  let line = null; // the viewer's waitlist entry for the pinned drop, if any
  let lineDrop = null; // the drop that entry (or its absence) was asked for

  // Holds still in play; the others are history.
  const ACTIVE = ["pending", "held"];
  // If a pending hold's reservation.updated has not come (socket down), ask the API.
  const PENDING_CHECK_MS = 4000;

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
      els.soldOut.hidden = !soldOut;
      els.card.classList.toggle("is-sold-out", soldOut);
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
    } else {
      els.drop.dataset.dropId = "";
      els.card.classList.remove("is-sold-out");
    }
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

  /* Countdowns: the drop's start and the hold's expiry, once a second. */
  function tick() {
    const drop = state.pinnedId !== null ? state.drops.get(state.pinnedId) : null;
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

  if (els.buyForm) {
    els.buyForm.addEventListener("submit", buy);
    els.checkout.addEventListener("click", checkout);
    els.release.addEventListener("click", release);
  }

  // --- live ---------------------------------------------------------------------------

  const socket = new Live.StreamSocket(root.dataset.slug, {
    onState: function (snapshot) {
      state = Live.stateFromSnapshot(snapshot);
      render();
      loadHold();
      loadLine(true); // personal events are not replayed after a reconnect
    },
    onEvent: function (event) {
      if (event.type === "reservation.updated") {
        setHold(event.reservation);
      } else if (event.type === "waitlist.updated") {
        line = event.waitlist;
        render();
      } else if (Live.applyEvent(state, event)) {
        render();
        loadLine(false); // a newly pinned drop: is the viewer in its line?
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
