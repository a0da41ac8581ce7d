// cm web launcher: live db_stats and small form helpers. No framework, and data never goes in as HTML:
// every value goes into the page through textContent or setAttribute.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const STATES = ["WAITING", "PENDING", "SCHEDULED", "RECEIVED", "STARTED", "running", "deploy", "active", "INITIATING",
    "PREPARING_IMAGE", "BOOTING", "AVAILABLE", "RETRY", "SUCCESS", "FAILURE", "REVOKED"];
  const FINAL = ["SUCCESS", "FAILURE", "REVOKED"];
  const BAR_ROW = 18, BAR_MAX = 150, CHART_H = 48, CHART_COL = 8;

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const stateClass = (s) => "st-" + String(s).replace(/[^A-Za-z_]/g, "");
  function clock(ms) {
    if (ms === null || ms === undefined) return ["-", ""];
    const iso = new Date(ms).toISOString();
    return [iso.slice(11, 19), iso.slice(0, 19) + "Z"];
  }
  const tenths = (x) => Math.round(x * 10) / 10;
  function td(text, attrs) { return el("td", attrs, text); }

  // ---------- launch page: show the chosen server's / recipe's description ----------
  for (const sel of document.querySelectorAll("select[name=server], select[name=recipe]")) {
    const desc = sel.parentElement.querySelector(".desc");
    if (!desc) continue;
    sel.addEventListener("change", () => {
      const opt = sel.selectedOptions[0];
      desc.textContent = opt ? (opt.dataset.description || "") : "";
    });
  }

  // ---------- db_stats: poll /api/jobs and redraw ----------
  const root = document.getElementById("db-stats");
  if (!root) return;
  const params = new URLSearchParams(location.search);
  const batch = root.dataset.batch || "";
  const live = document.getElementById("live");
  const body = document.getElementById("jobs-body");
  let openId = null, openState = null, openDetails = null, ticks = 0;

  function link(page, state) {
    const q = new URLSearchParams(params);
    if (state !== undefined) { if (state) q.set("state", state); else q.delete("state"); }
    if (page > 1) q.set("page", String(page)); else q.delete("page");
    const s = q.toString();
    return s ? "?" + s : "?";
  }

  function drawStateBars(counts) {
    const box = document.getElementById("state-bars");
    const rows = Object.entries(counts).filter(([, n]) => n > 0);
    const order = (s) => { const i = STATES.indexOf(s); return i < 0 ? STATES.length : i; };
    rows.sort((a, b) => order(a[0]) - order(b[0]));
    const max = Math.max(1, ...rows.map(([, n]) => n));
    const height = Math.max(1, rows.length) * BAR_ROW;
    box.setAttribute("height", height);
    box.setAttribute("viewBox", "0 0 300 " + height);
    box.replaceChildren();
    rows.forEach(([state, n], i) => {
      const y = i * BAR_ROW, w = tenths(Math.max(1, BAR_MAX * n / max));
      const a = svg("a", { href: link(1, state) });
      a.append(svg("text", { x: 0, y: y + 13, class: "label" }, state));
      a.append(svg("rect", { x: 112, y: y + 3, width: w, height: 12, rx: 2, class: "bar " + stateClass(state) }));
      a.append(svg("text", { x: w + 116, y: y + 13, class: "count" }, n));
      box.append(a);
    });
    if (!rows.length) box.append(svg("text", { x: 0, y: 13, class: "label muted" }, "no jobs"));
    document.getElementById("all-count").textContent = rows.reduce((t, [, n]) => t + n, 0);
  }

  function drawPerMinute(perMinute) {
    const box = document.getElementById("per-minute");
    const max = Math.max(1, ...perMinute);
    box.replaceChildren(svg("line", { x1: 0, y1: 48.5, x2: 240, y2: 48.5, class: "axis" }));
    perMinute.forEach((n, i) => {
      const h = n > 0 ? tenths(Math.max(1, CHART_H * n / max)) : 0;
      const r = svg("rect", { x: i * CHART_COL + 1, y: tenths(CHART_H - h), width: 6, height: h, class: "bar" });
      r.append(svg("title", {}, n + " finished, " + (perMinute.length - 1 - i) + " min ago"));
      box.append(r);
    });
    box.append(svg("text", { x: 0, y: 59, class: "tick" }, "-30 min"));
    box.append(svg("text", { x: 240, y: 59, class: "tick end" }, "now"));
    document.getElementById("finished-30").textContent = perMinute.reduce((t, n) => t + n, 0);
  }

  function drawByWorker(byWorker) {
    const tbody = document.querySelector("#by-worker tbody");
    const rows = Object.entries(byWorker);
    tbody.replaceChildren(...rows.map(([w, n]) => {
      const tr = el("tr"); tr.append(td(w), td(n, { class: "num" })); return tr;
    }));
    if (!rows.length) { const tr = el("tr"); tr.append(td("none yet", { class: "muted" })); tbody.append(tr); }
  }

  function drawBatch(b) {
    if (!b) return;
    const total = document.getElementById("batch-total");
    const counts = document.getElementById("batch-counts");
    if (!total || !counts) return;
    total.textContent = b.total;
    counts.replaceChildren();
    for (const [s, n] of Object.entries(b.counts)) {
      counts.append(el("span", { class: "st " + stateClass(s) }, s + " " + n), " ");
    }
  }

  // The random end of a UUIDv7 (its start is its time), linking to the job's own page.
  function idCell(id) {
    const cell = td(null, { class: "id", title: id });
    cell.append(el("a", { href: "/cm/jobs/" + encodeURIComponent(id) }, id.slice(-8)));
    return cell;
  }

  function jobRow(j) {
    const tr = el("tr", { class: "job", "data-id": j.id, tabindex: "0" });
    if (batch && j.batch === batch) tr.classList.add("new");
    if (j.id === openId) tr.classList.add("open");
    const st = el("td", { class: "state" });
    st.append(el("span", { class: "st " + stateClass(j.state) }, j.state));
    if (j.waits_for) st.append(" ", el("small", { class: "why" }, j.waits_for));
    const timed = (ms) => { const [short, full] = clock(ms); return td(short, full ? { title: full } : {}); };
    tr.append(
      idCell(j.id),
      td(j.task.replace(/^cm\./, "")),
      st,
      td(j.server ?? "-"), td(j.recipe ?? "-"), td(j.hosts ?? "-"), td(j.worker ?? "-"),
      timed(j.submitted_ms), timed(j.started_ms), timed(j.finished_ms),
      td(j.error ?? "", { class: "err", title: j.error ?? "" }),
    );
    return tr;
  }

  function drawJobs(data) {
    const rows = data.jobs.map(jobRow);
    if (!rows.length) {
      const tr = el("tr", { class: "empty" });
      tr.append(td("no jobs", { colspan: "11" }));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    if (openId) {
      const tr = body.querySelector("tr.job.open");
      const job = data.jobs.find((j) => j.id === openId);
      if (tr && job) {
        if (job.state !== openState || !openDetails) loadDetails(openId); else tr.after(openDetails);
      }
    }
    const page = Math.min(data.page, data.pages);
    document.getElementById("page-info").textContent =
      "page " + data.page + " of " + data.pages + " · " + data.total + " jobs";
    const prev = document.getElementById("prev"), next = document.getElementById("next");
    prev.hidden = page <= 1; prev.setAttribute("href", link(data.page - 1));
    next.hidden = data.page >= data.pages; next.setAttribute("href", link(data.page + 1));
  }

  function drawWorkers(list) {
    const tbody = document.querySelector("#workers tbody");
    const dur = (s) => s === null || s === undefined ? "-" :
      s >= 86400 ? Math.floor(s / 86400) + "d" + Math.floor(s % 86400 / 3600) + "h" :
      s >= 3600 ? Math.floor(s / 3600) + "h" + Math.floor(s % 3600 / 60) + "m" :
      s >= 60 ? Math.floor(s / 60) + "m" + (s % 60) + "s" : s + "s";
    const mem = (b) => b === null || b === undefined ? "-" :
      b >= 1048576 ? (b / 1048576).toFixed(1) + " MiB" : Math.floor(b / 1024) + " KiB";
    tbody.replaceChildren(...list.map((w) => {
      const tr = el("tr", { title: "queue " + w.queue });
      const st = el("td");
      st.append(el("span", { class: "ws ws-" + String(w.state).replace(/[^a-z]/g, "_") }, w.state));
      tr.append(td(w.name), st, td(w.pid ?? "-", { class: "num" }), td(dur(w.uptime_seconds), { class: "num" }),
        td(mem(w.memory_bytes), { class: "num" }), td(w.jobs_done ?? "-", { class: "num" }));
      return tr;
    }));
  }

  // A plain form POST with the page's form token; the server answers with what it did.
  function revokeForm(id) {
    const form = el("form", { method: "post", action: "/cm/jobs/" + encodeURIComponent(id) + "/revoke", class: "revoke" });
    form.append(el("input", { type: "hidden", name: "csrf", value: root.dataset.csrf || "" }));
    form.append(el("button", { type: "submit", class: "danger" }, "revoke"), " ");
    form.append(el("button", { type: "submit", name: "terminate", value: "1", class: "danger" }, "revoke and terminate"));
    return form;
  }

  function detailsRow(data) {
    const tr = el("tr", { class: "details" });
    const cell = el("td", { colspan: "11" });
    const grid = el("div", { class: "grid" });
    const hist = el("div");
    hist.append(el("h3", {}, "history"));
    const table = el("table", { class: "mini history" });
    const head = el("tr");
    head.append(el("th", {}, "state"), el("th", {}, "worker"), el("th", {}, "at (UTC)"), el("th", {}, "detail"));
    table.append(head);
    for (const h of data.history) {
      const row = el("tr");
      const st = el("td");
      st.append(el("span", { class: "st " + stateClass(h.state) }, h.state));
      row.append(st, td(h.worker ?? "-"), td(new Date(h.at_ms).toISOString().replace("T", " ").slice(0, 23)), td(h.detail ?? ""));
      table.append(row);
    }
    hist.append(table);
    const job = el("div");
    job.append(el("h3", {}, "job"));
    const j = data.job;
    const lines = ["id " + j.id, "queue " + j.queue, "args " + j.args, "deliveries " + j.deliveries + ", retries " + j.retries];
    if (j.batch) lines.push("batch " + j.batch);
    if (j.result) lines.push("result " + j.result);
    if (j.error) lines.push("error " + j.error);
    job.append(el("pre", {}, lines.join("\n")));
    if (j.output) {
      job.append(el("h3", {}, "output"), el("pre", { class: "output" }, j.output));
    }
    const page = el("p");
    page.append(el("a", { href: "/cm/jobs/" + encodeURIComponent(j.id) }, "the job's page →"));
    job.append(page);
    if (!FINAL.includes(j.state)) job.append(revokeForm(j.id));
    grid.append(hist, job);
    cell.append(grid);
    tr.append(cell);
    return tr;
  }

  async function loadDetails(id) {
    try {
      const r = await fetch("/api/jobs/" + encodeURIComponent(id), { headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const data = await r.json();
      if (openId !== id) return;
      openState = data.job.state;
      if (openDetails) openDetails.remove();
      openDetails = detailsRow(data);
      const tr = [...body.querySelectorAll("tr.job")].find((t) => t.dataset.id === id);
      if (tr) tr.after(openDetails);
    } catch (e) {
      if (live) live.title = "details: " + e.message;
    }
  }

  function toggle(tr) {
    const id = tr.dataset.id;
    if (openDetails) openDetails.remove();
    for (const t of body.querySelectorAll("tr.open")) t.classList.remove("open");
    if (openId === id) { openId = null; openDetails = null; return; }
    openId = id; openState = null; openDetails = null;
    tr.classList.add("open");
    loadDetails(id);
  }
  body.addEventListener("click", (ev) => {
    if (ev.target.closest("a")) return; // the id's link goes to the job's page
    const tr = ev.target.closest("tr.job");
    if (tr) toggle(tr);
  });
  body.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr.job");
    if (tr && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); toggle(tr); }
  });

  function status(ok, text) {
    if (!live) return;
    live.className = "live " + (ok ? "ok" : "down");
    live.textContent = text;
  }

  // The WAITING jobs and what each waits for (data.waiting: the newest few, with their parents).
  function drawWaiting(waiting, total) {
    const card = document.getElementById("waiting");
    const tbody = document.getElementById("waiting-body");
    if (!card || !tbody) return;
    card.hidden = !waiting || waiting.length === 0;
    document.getElementById("waiting-total").textContent = String(total || 0);
    const short = (id) => String(id).slice(-8);
    const task = (t) => String(t).replace(/^cm\./, "");
    const jobLink = (id) => el("a", { href: "/cm/jobs/" + encodeURIComponent(id), title: id }, short(id));
    tbody.replaceChildren(...(waiting || []).map((w) => {
      const tr = el("tr", { "data-id": w.id });
      const id = td(null, { class: "id", title: w.id });
      id.append(jobLink(w.id));
      const parents = td(null, { class: "parents" });
      for (const p of w.first) {
        const span = el("span", { class: "parent", "data-id": p.id });
        span.append(jobLink(p.id), " " + task(p.task) + " ", el("span", { class: "st " + stateClass(p.state) }, p.state));
        if (p.mode === "after_any") span.append(" (any end)");
        parents.append(span, " ");
      }
      const more = w.parents - w.first.length;
      if (more > 0) {
        const span = el("span", { class: "more" }, "and " + more + " more; all " + w.parents + ": ");
        for (const [s, n] of w.by_state) span.append(el("span", { class: "st " + stateClass(s) }, s + " " + n), " ");
        parents.append(span);
      }
      tr.append(id, td(task(w.task)), td(w.hosts ?? "-"), parents);
      return tr;
    }));
  }

  let timer = null, busy = false;
  async function poll() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    try {
      const r = await fetch("/api/jobs?" + params.toString(), { headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const data = await r.json();
      drawStateBars(data.counts);
      drawPerMinute(data.finished_per_minute);
      drawByWorker(data.by_worker);
      drawBatch(data.batch);
      drawJobs(data);
      drawWaiting(data.waiting, data.waiting_total);
      if (ticks % 2 === 0) {
        const w = await fetch("/api/workers", { headers: { Accept: "application/json" } });
        if (w.ok) drawWorkers(await w.json());
      }
      ticks++;
      status(true, "live · " + clock(Date.now())[0] + " UTC");
    } catch (e) {
      status(false, "offline: " + e.message);
    }
    busy = false;
    // A hidden tab asks less often; it catches up as soon as it is shown.
    timer = setTimeout(poll, document.hidden ? 5000 : 1000);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  poll();
})();
