/* The host console's readiness panel: will the stock last? Fetches the readiness
 * report (GET /api/streams/{slug}/readiness/, with the session cookie) and renders it
 * into <section id="readiness">, with textContent only (the report quotes product
 * names). Method and limits: docs/demand.md. */
(function () {
  "use strict";
  const panel = document.getElementById("readiness");
  const root = document.getElementById("host");
  if (!panel || !root) return;
  const slug = root.dataset.slug;
  // The report changes only when drops, stock or history do: a minute is fresh enough.
  const REFRESH_MS = 60000;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function range(estimate, digits) {
    if (!estimate || estimate.value === null) return "unknown";
    const f = function (x) {
      return Number(x).toFixed(digits);
    };
    return f(estimate.value) + " (" + f(estimate.low) + "–" + f(estimate.high) + ")";
  }

  function render(report) {
    const heading = el("h2", "Stock readiness");
    const refresh = el("button", "Refresh", "button small");
    refresh.type = "button";
    refresh.addEventListener("click", load);
    const basis = el(
      "p",
      "Expected viewers: " + range(report.expected_viewers, 0) +
        " [" + report.expected_viewers.basis + "]. Demand per viewer: " +
        range(report.rate, 3) + " [" + report.rate.basis + ", " + report.rate.drops +
        " past drops]. Intervals at " + Math.round(report.confidence * 100) + " %.",
      "muted"
    );
    const nodes = [heading, basis];
    if (!report.drops.length) {
      nodes.push(el("p", "No drops left to sell.", "muted"));
    } else {
      const table = el("table", null, "drops readiness-drops");
      const head = el("tr");
      ["#", "Product", "On sale", "Free stock", "Expected demand", "Verdict", "Report", "To cover it"]
        .forEach(function (title) {
          head.appendChild(el("th", title));
        });
      table.appendChild(el("thead")).appendChild(head);
      const body = table.appendChild(el("tbody"));
      report.drops.forEach(function (drop) {
        const row = el("tr");
        row.dataset.verdict = drop.verdict;
        row.appendChild(el("td", drop.drop));
        row.appendChild(el("td", drop.product + " (" + drop.sku + ")"));
        row.appendChild(el("td", drop.quantity));
        row.appendChild(el("td", drop.stock_free));
        row.appendChild(el("td", range(drop.expected_demand, 0)));
        row.appendChild(el("td", drop.verdict.replace("_", " "), "verdict verdict-" + drop.verdict));
        row.appendChild(el("td", drop.message));
        row.appendChild(el("td", drop.cover || "–"));
        body.appendChild(row);
      });
      nodes.push(table);
    }
    nodes.push(refresh);
    panel.replaceChildren.apply(panel, nodes);
  }

  function fail(text) {
    panel.replaceChildren(el("h2", "Stock readiness"), el("p", text, "error"));
  }

  function load() {
    fetch("/api/streams/" + encodeURIComponent(slug) + "/readiness/", {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.detail || "The report is unavailable.");
          return body;
        });
      })
      .then(render)
      .catch(function (error) {
        fail(error.message || "The report is unavailable.");
      });
  }

  load();
  window.setInterval(load, REFRESH_MS);
})();
