"use strict";
/*
 * The dashboard page: live counts from server-sent events, bounded polls of
 * the JSON API for everything else (see rushpy/dashboard/app.py).
 *
 * The Redis server may restart and the network may be reset while the page
 * is open, so:
 *  - every fetch catches its errors and shows them beside its section; the
 *    next refresh simply tries again, and the page recovers without a reload;
 *  - a generation counter (S.gen) is bumped when the network changes, and
 *    late answers of an older generation are dropped;
 *  - each loader runs one request at a time and folds the calls made
 *    meanwhile into one rerun, so a slow server never gets a pile of requests.
 * Sizes stay bounded with 100,000 tasks: 50 task rows per page, the last 300
 * summaries in the throughput chart, at most 10,000 history points and 200 log lines.
 */
(function () {
  const PAGE_SIZE = 50;
  const THROUGHPUT_POINTS = 300;
  const HISTORY_LIMIT = 10000;
  const LOG_LIMIT = 200;
  const REFRESH_MS = 3000; // workers and the task page: at least this often, sooner when counts change
  const HISTORY_MS = 3000; // the history: at most this often
  const LOG_MS = 2000;
  const REQUEST_MS = 20000;
  const SILENT_MS = 5000; // no event for this long: poll /summary (stream down, or buffered by a proxy)
  const STATES = ["queued", "running", "finished", "failed"];
  const TOKEN_KEY = "rushpy.dashboard.token";

  const $ = (sel) => document.querySelector(sel);
  const { fmtTime, fmtAge, fmtValue } = window.Charts; // formatting shared with the charts

  // The page's state. The *Sig fields hold a signature of what is drawn, to skip redrawing the same.
  const S = {
    config: { network: null, actions: false, version: "" },
    network: null, gen: 0, es: null, esRetry: null,
    lastEventAt: 0, lastPollAt: 0, lastNetworksAt: 0, lastRefresh: 0, lastHistory: 0,
    countsSig: "", lastFinished: null, throughput: [], workerIds: [],
    history: null, historyDirty: true, historySig: "", logsSig: "",
    taskOffset: 0, taskTotal: 0, tasksSig: "",
    taskQuery: 0, // bumped when the filters or the page change: answers to older queries are dropped
    detailKey: null, detailState: null, messageTimer: null,
  };

  // ---- helpers -----------------------------------------------------------------------------
  // Builds elements with textContent only, never HTML: keys, errors and values come from tasks.
  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of kids.flat()) if (c != null) n.append(c instanceof Node ? c : String(c));
    return n;
  }

  // fetch() as JSON; errors carry the server's {"error"} text and the HTTP status. A time limit,
  // because a hung request would keep its loader busy, and its section frozen, for good.
  async function api(path, options) {
    const limit = AbortSignal.timeout ? { signal: AbortSignal.timeout(REQUEST_MS) } : {};
    const res = await fetch(path, Object.assign({ cache: "no-store" }, limit, options)).catch(() => {
      throw new Error("the dashboard server does not answer");
    });
    const body = await res.json().catch(() => null);
    if (res.ok) return body;
    throw Object.assign(new Error((body && body.error) || `HTTP ${res.status}`), { status: res.status });
  }

  const netPath = (rest) => `/api/n/${encodeURIComponent(S.network)}${rest}`;

  // GET for one section of the page: null when it failed (the error then shows in the section's
  // message line) or when the network changed meanwhile (the answer belongs to the old one).
  async function load(path, msgId, label) {
    const gen = S.gen;
    try {
      const d = await api(netPath(path));
      if (gen !== S.gen) return null;
      setMsg(msgId, "");
      return d;
    } catch (e) {
      if (gen === S.gen) setMsg(msgId, `${label}: ${e.message}`);
      return null;
    }
  }

  function loader(fn) {
    let busy = false;
    let again = false;
    const run = async () => {
      if (busy) return void (again = true);
      busy = true;
      try { await fn(); } catch (e) { reportError(e); }
      busy = false;
      if (again) { again = false; run(); }
    };
    return run;
  }

  function setMsg(id, text) {
    const n = document.getElementById(id);
    if (n.textContent !== text) n.textContent = text;
  }

  const sentence = (text) => String(text).replace(/[.\s]*$/, ".");
  const showBanner = (text) => Object.assign($("#banner"), { textContent: text, hidden: !text });

  function setStatus(state) {
    const n = $("#status-indicator");
    if (n.textContent !== state) n.textContent = state;
    n.dataset.state = state;
  }

  const orDash = (v) => (v == null ? "–" : String(v));
  const stateBadge = (state) => el("span", { class: `state state-${state}`, text: state || "?" });

  // Updates a tbody in place, one <tr> per id: rows keep their identity across refreshes, so
  // a click (or a test's element handle) never lands on a row that was just replaced.
  function syncRows(body, items, idAttr) {
    const old = new Map();
    for (const tr of body.querySelectorAll(`tr[${idAttr}]`)) old.set(tr.getAttribute(idAttr), tr);
    for (const tr of body.querySelectorAll(`tr:not([${idAttr}])`)) tr.remove();
    const rows = items.map(([id, attrs, cells]) => {
      const tr = old.get(id) || el("tr", { [idAttr]: id });
      old.delete(id);
      for (const [k, v] of Object.entries(attrs)) v == null ? tr.removeAttribute(k) : tr.setAttribute(k, v);
      tr.replaceChildren(...cells);
      return tr;
    });
    for (const tr of old.values()) tr.remove();
    rows.forEach((tr) => body.append(tr)); // moves kept rows into the new order
  }

  function emptyRow(body, colspan, text) {
    body.replaceChildren(el("tr", {}, el("td", { class: "empty", colspan, text })));
  }

  // ---- network choice ----------------------------------------------------------------------
  const hashNetwork = () => new URLSearchParams(location.hash.slice(1)).get("network");

  async function loadNetworks() {
    S.lastNetworksAt = Date.now();
    let list;
    try {
      list = await api("/api/networks");
    } catch (e) {
      if (!S.network) showBanner(`Cannot list the networks: ${e.message}. Retrying…`);
      return;
    }
    // A reset network leaves the list, but the page keeps waiting for it: keep it selectable.
    if (S.network && !list.some((n) => n.network === S.network)) list.push({ network: S.network, missing: true });
    const sel = $("#network-select");
    const label = (n) => (n.missing ? `${n.network} (gone)` : `${n.network} (${n.n_tasks} tasks)`);
    const same = sel.options.length === list.length && list.every((n, i) => sel.options[i].value === n.network);
    if (same) {
      // Only relabel: rebuilding the options would close the dropdown under the user's pointer.
      list.forEach((n, i) => (sel.options[i].textContent = label(n)));
    } else {
      sel.replaceChildren(...list.map((n) => el("option", { value: n.network, text: label(n) })));
      if (!list.length) sel.append(el("option", { value: "", text: "(no networks)" }));
    }
    sel.value = S.network || "";
    if (!S.network && list.length) selectNetwork(list[0].network);
    else if (!S.network) showBanner("No networks on this Redis server yet: waiting for one to appear…");
  }

  function selectNetwork(id) {
    if (!id || id === S.network) return;
    S.network = id;
    S.gen += 1;
    S.taskQuery += 1;
    window.history.replaceState(null, "", "#" + new URLSearchParams({ network: id }));
    const sel = $("#network-select");
    if (![...sel.options].some((o) => o.value === id)) sel.append(el("option", { value: id, text: id }));
    sel.value = id;
    // Forget everything of the previous network.
    Object.assign(S, {
      throughput: [], countsSig: "", lastFinished: null, lastEventAt: Date.now(), taskOffset: 0, taskTotal: 0,
      tasksSig: "", history: null, historySig: "", historyDirty: true, lastHistory: 0, logsSig: "",
    });
    closeDetail();
    showBanner("");
    $(".counts").classList.add("stale"); // the previous network's numbers, until the first summary
    for (const m of ["workers-msg", "tasks-msg", "history-msg", "logs-msg"]) setMsg(m, "");
    for (const t of ["#workers-table tbody", "#tasks-table tbody", "#logs"]) $(t).replaceChildren();
    $("#history-section").hidden = true;
    fillWorkerSelects([], true);
    window.Charts.throughput($("#throughput-chart"), []);
    openStream();
    refreshData();
    loadHistory();
    loadLogs();
  }

  // ---- live summaries ----------------------------------------------------------------------
  function openStream() {
    if (S.es) S.es.close();
    clearTimeout(S.esRetry);
    S.es = null;
    if (!S.network || !window.EventSource) return; // without EventSource the tick polls /summary
    const gen = S.gen;
    const es = (S.es = new EventSource(netPath("/events")));
    const data = (ev) => {
      try { return JSON.parse(ev.data) || {}; } catch (_) { return {}; }
    };
    es.onopen = () => gen === S.gen && setStatus("live");
    es.addEventListener("summary", (ev) => gen === S.gen && onSummary(data(ev), true));
    es.addEventListener("gone", (ev) => gen === S.gen && onGone(data(ev).error, true));
    es.addEventListener("down", (ev) => {
      if (gen !== S.gen) return;
      streamAlive();
      setStatus("server down");
      $(".counts").classList.add("stale");
      showBanner(`${sentence(`The Redis server is unreachable: ${data(ev).error || "no answer"}`)} Waiting for it…`);
    });
    es.onerror = () => {
      if (gen !== S.gen) return;
      setStatus("reconnecting");
      // EventSource retries by itself, unless the answer was no stream at all: it is then CLOSED.
      if (es.readyState === EventSource.CLOSED) S.esRetry = setTimeout(() => gen === S.gen && openStream(), 3000);
    };
  }

  function streamAlive() {
    S.lastEventAt = Date.now(); // events come: no need to poll /summary as well
    setStatus("live");
  }

  function onGone(error, fromStream) {
    if (fromStream) streamAlive();
    $(".counts").classList.add("stale");
    showBanner(`${sentence(error || "The network does not exist")} Waiting for it to come back…`);
  }

  function onSummary(d, fromStream) {
    const now = Date.now();
    if (fromStream) streamAlive();
    showBanner("");
    $(".counts").classList.remove("stale");
    const counts = d.counts || {};
    for (const s of STATES.concat(["all"])) $("#count-" + s).textContent = String(counts[s] || 0);
    const option = $("#network-select").selectedOptions[0]; // its label's task count, kept current
    if (option && option.value === S.network) option.textContent = `${S.network} (${counts.all || 0} tasks)`;
    const workers = d.workers || {};
    $("#workers-running").textContent = String(workers.running || 0);
    $("#workers-all").textContent = String(workers.all || 0);

    const t = Date.parse(d.time) / 1000 || now / 1000;
    const prev = S.throughput[S.throughput.length - 1];
    let rate = d.throughput;
    if (rate == null) {
      // Polled summaries carry no throughput: derive it from the finished count.
      rate = prev && t > prev.t ? Math.max(0, (counts.finished || 0) - prev.counts.finished) / (t - prev.t) : 0;
    }
    S.throughput.push({ t, throughput: rate, counts: Object.assign({}, counts) });
    if (S.throughput.length > THROUGHPUT_POINTS) S.throughput.splice(0, S.throughput.length - THROUGHPUT_POINTS);
    window.Charts.throughput($("#throughput-chart"), S.throughput);

    if (counts.finished !== S.lastFinished) S.historyDirty = true;
    S.lastFinished = counts.finished;
    const sig = JSON.stringify([counts, workers]);
    if (sig !== S.countsSig) {
      S.countsSig = sig;
      refreshData();
    }
  }

  const pollSummary = loader(async () => {
    const gen = S.gen;
    S.lastPollAt = Date.now();
    try {
      const d = await api(netPath("/summary"));
      if (gen === S.gen) onSummary(d, false);
    } catch (e) {
      if (gen !== S.gen) return;
      if (e.status === 404) onGone(e.message, false);
      else showBanner(`Cannot read the network's summary: ${e.message}. Retrying…`);
    }
  });

  function refreshData() {
    S.lastRefresh = Date.now();
    loadWorkers();
    loadTasks();
  }

  // One timer drives the periodic refreshes, so their rates are easy to see in one place.
  function tick() {
    const now = Date.now();
    if (now - S.lastNetworksAt > (S.network ? 10000 : 3000)) loadNetworks();
    if (!S.network) return;
    if (now - S.lastEventAt > SILENT_MS && now - S.lastPollAt > REFRESH_MS) pollSummary();
    if (now - S.lastRefresh >= REFRESH_MS) refreshData();
    if (S.historyDirty && now - S.lastHistory >= HISTORY_MS) loadHistory();
  }

  // ---- workers -----------------------------------------------------------------------------
  const loadWorkers = loader(async () => {
    const rows = S.network && (await load("/workers", "workers-msg", "Workers"));
    if (!rows) return;
    renderWorkers(rows);
    fillWorkerSelects(rows.map((w) => w.worker_id), false);
  });

  function renderWorkers(rows) {
    const body = $("#workers-table tbody");
    if (!rows.length) return emptyRow(body, 10, "no workers yet");
    syncRows(body, rows.map((w) => {
      const running = w.running || [];
      const cells = [
        el("td", { class: "mono", text: w.worker_id }),
        el("td", {}, stateBadge(w.state)),
        el("td", { text: w.hostname || "" }),
        el("td", { class: "num", text: orDash(w.pid) }),
        el("td", { class: "num", text: w.state === "running" ? fmtAge(w.heartbeat_age) : "–" }),
        el("td", { class: "num", text: w.n_finished || 0 }),
        el("td", { class: "num", text: w.n_failed || 0 }),
        el("td", { class: "num", title: running.join("\n") || null, text: running.length }),
        el("td", { class: "clip", title: w.last_error, text: w.last_error || "" }),
      ];
      if (S.config.actions) {
        const stop = (cls, text, title) =>
          el("button", { type: "button", class: cls, "data-worker-id": w.worker_id, text, title });
        cells.push(el("td", {}, w.state !== "running" ? null : el("span", { class: "row-actions" },
          stop("stop-worker action", "stop", "let the worker finish its current tasks, then stop"),
          stop("kill-worker danger", "kill", "kill the worker now"))));
      }
      return [w.worker_id, {}, cells];
    }), "data-worker-id");
  }

  // Worker ids seen so far, kept after a worker left: its finished tasks stay filterable.
  function fillWorkerSelects(ids, reset) {
    if (reset) S.workerIds = [];
    const all = [...new Set(S.workerIds.concat(ids))].sort();
    if (!reset && all.length === S.workerIds.length) return; // the set only grows: nothing new
    S.workerIds = all;
    for (const sel of [$("#worker-filter"), $("#log-worker")]) {
      const value = sel.value;
      sel.replaceChildren(el("option", { value: "", text: "all" }), ...all.map((id) => el("option", { value: id, text: id })));
      sel.value = all.includes(value) ? value : "";
    }
  }

  // ---- tasks -------------------------------------------------------------------------------
  const loadTasks = loader(async () => {
    const query = S.taskQuery;
    const q = new URLSearchParams({ offset: S.taskOffset, limit: PAGE_SIZE });
    if ($("#state-filter").value) q.set("state", $("#state-filter").value);
    if ($("#worker-filter").value) q.set("worker", $("#worker-filter").value);
    const d = S.network && (await load("/tasks?" + q, "tasks-msg", "Tasks"));
    if (!d || query !== S.taskQuery) return; // an older query: the folded-in rerun asks again
    if (d.total > 0 && d.offset >= d.total) {
      // Fewer tasks than before (reset, retries): show the last page rather than an empty one.
      return goToPage(lastOffset(d.total));
    }
    S.taskTotal = d.total;
    renderTasks(d);
    if (S.detailKey && (S.detailState === "queued" || S.detailState === "running")) loadDetail(S.detailKey, false);
  });

  const lastOffset = (total) => Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);

  // Up to 4 value columns: inputs first, but at least 2 for outputs when there are some.
  function valueColumns(rows) {
    const ins = [];
    const outs = [];
    for (const r of rows) {
      for (const k of Object.keys(r.inputs || {})) if (!ins.includes(k)) ins.push(k);
      for (const k of Object.keys(r.outputs || {})) if (!outs.includes(k)) outs.push(k);
    }
    let nOut = Math.min(outs.length, Math.max(2, 4 - ins.length));
    const nIn = Math.min(ins.length, 4 - nOut);
    nOut = Math.min(outs.length, 4 - nIn);
    return ins.slice(0, nIn).map((name) => ({ name, group: "inputs", tag: "in" }))
      .concat(outs.slice(0, nOut).map((name) => ({ name, group: "outputs", tag: "out" })));
  }

  function renderTasks(d) {
    const rows = d.rows || [];
    $("#tasks-range").textContent = d.total ? `${d.offset + 1}–${d.offset + rows.length} of ${d.total}` : "0 of 0";
    $("#tasks-prev").disabled = $("#tasks-first").disabled = d.offset <= 0;
    $("#tasks-next").disabled = $("#tasks-last").disabled = d.offset + PAGE_SIZE >= d.total;
    const sig = JSON.stringify(rows);
    if (sig === S.tasksSig) return; // unchanged page: leave the rows (and the reader's focus) alone
    S.tasksSig = sig;

    const cols = valueColumns(rows);
    const head = ["key", "state", "worker", "started", "finished"].map((t) => el("th", { scope: "col", text: t }));
    for (const c of cols) {
      const title = `${c.group === "inputs" ? "input" : "output"} ${c.name}`;
      head.push(el("th", { scope: "col", class: "num", title }, el("span", { class: "io-tag", text: c.tag }), c.name));
    }
    head.push(el("th", { scope: "col", text: "condition" }));
    $("#tasks-table thead tr").replaceChildren(...head);

    const body = $("#tasks-table tbody");
    if (!rows.length) return emptyRow(body, head.length, "no tasks");
    syncRows(body, rows.map((r) => {
      const cells = [
        el("td", { class: "mono key", title: r.key, text: r.key }),
        el("td", {}, stateBadge(r.state)),
        el("td", { class: "mono", text: r.worker_id || "" }),
        el("td", { title: r.started_at, text: fmtTime(r.started_at) }),
        el("td", { title: r.finished_at, text: fmtTime(r.finished_at) }),
      ];
      for (const c of cols) cells.push(el("td", { class: "num", text: fmtValue((r[c.group] || {})[c.name]) }));
      cells.push(el("td", { class: "clip", title: r.condition, text: r.condition || "" }));
      const attrs = { tabindex: "0", class: r.key === S.detailKey ? "selected" : null };
      return [r.key, attrs, cells];
    }), "data-key");
  }

  function goToPage(offset) {
    S.taskOffset = Math.max(0, offset);
    S.taskQuery += 1;
    loadTasks();
  }

  // A new filter empties the table at once: rows of the old filter must not linger as if they matched.
  function changeFilter() {
    markActiveCard();
    S.tasksSig = "";
    emptyRow($("#tasks-table tbody"), 10, "loading…");
    goToPage(0);
  }

  function markActiveCard() {
    const state = $("#state-filter").value;
    for (const card of document.querySelectorAll("button.count-card")) {
      card.classList.toggle("active", state !== "" && card.dataset.state === state);
    }
  }

  // ---- task detail -------------------------------------------------------------------------
  function openDetail(key) {
    S.detailKey = key;
    S.detailState = null;
    $("#task-detail").hidden = false;
    $("#task-detail-title").textContent = "Task";
    $("#task-detail-body").replaceChildren(el("p", { class: "muted", text: "loading…" }));
    for (const tr of document.querySelectorAll("#tasks-table tbody tr")) tr.classList.toggle("selected", tr.dataset.key === key);
    $("#task-detail-close").focus();
    loadDetail(key, true);
  }

  function closeDetail() {
    S.detailKey = null;
    $("#task-detail").hidden = true;
    for (const tr of document.querySelectorAll("#tasks-table tbody tr.selected")) tr.classList.remove("selected");
  }

  async function loadDetail(key, first) {
    const gen = S.gen;
    let d;
    try {
      d = await api(netPath("/task/" + encodeURIComponent(key)));
    } catch (e) {
      if (first && gen === S.gen && S.detailKey === key) {
        $("#task-detail-body").replaceChildren(el("p", { class: "section-msg", text: `Task ${key}: ${e.message}` }));
      }
      return;
    }
    if (gen !== S.gen || S.detailKey !== key) return;
    S.detailState = d.state;
    renderDetail(d);
  }

  function kvTable(obj) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return el("p", { class: "muted", text: "none" });
    const value = (v) => (typeof v === "object" && v !== null ? el("pre", { text: JSON.stringify(v, null, 2) }) : String(v));
    return el("table", { class: "kv" }, el("tbody", {},
      entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", {}, value(v))))));
  }

  function renderDetail(d) {
    $("#task-detail-title").textContent = `Task (${d.state})`;
    const dur = (Date.parse(d.finished_at) - Date.parse(d.started_at)) / 1000;
    const meta = {
      state: d.state,
      worker: d.worker_id || "–",
      "attempts / max retries": `${orDash(d.attempts)} / ${orDash(d.max_retries)}`,
      created: fmtTime(d.created_at, true),
      started: fmtTime(d.started_at, true),
      finished: fmtTime(d.finished_at, true) + (isFinite(dur) ? ` (took ${dur.toFixed(3)} s)` : ""),
    };
    const parts = [el("p", { class: "detail-key", text: d.key }), kvTable(meta)];
    if (S.config.actions) {
      const button = (id, cls, text, name) => el("button", { type: "button", id, class: cls, text,
        onclick: () => act(name, { keys: [d.key] }).then(() => loadDetail(d.key, false)) });
      const buttons = [];
      if (d.state === "queued" || d.state === "running") buttons.push(button("cancel-task", "danger", "cancel task", "cancel"));
      if (d.state === "failed") buttons.push(button("retry-task", "action", "retry task", "retry"));
      if (buttons.length) parts.push(el("div", { class: "detail-actions" }, buttons));
    }
    parts.push(el("h3", { text: "inputs" }), kvTable(d.inputs));
    parts.push(el("h3", { text: "outputs" }), kvTable(d.outputs));
    parts.push(el("h3", { text: "extras" }), kvTable(d.extras));
    const conditions = d.conditions || [];
    parts.push(el("h3", { text: `conditions (${conditions.length})` }));
    if (!conditions.length) parts.push(el("p", { class: "muted", text: "none" }));
    for (const c of conditions) {
      const rest = Object.fromEntries(Object.entries(c || {}).filter(([k]) => !["type", "message", "traceback"].includes(k)));
      parts.push(el("div", { class: "condition" },
        el("div", { class: "condition-title", text: `${c.type || "Condition"}: ${orDash(c.message)}` }),
        Object.keys(rest).length ? kvTable(rest) : null,
        c.traceback ? el("pre", { class: "traceback", text: c.traceback }) : null));
    }
    // Keep the reader's scroll position when a running task's detail refreshes.
    const panel = $("#task-detail");
    const scroll = panel.scrollTop;
    $("#task-detail-body").replaceChildren(...parts);
    panel.scrollTop = scroll;
  }

  // ---- actions -----------------------------------------------------------------------------
  function describe(v) {
    if (!Array.isArray(v)) return JSON.stringify(v);
    const some = v.slice(0, 5).join(", ") + (v.length > 5 ? ", …" : "");
    return v.length ? `${v.length} (${some})` : "none";
  }

  async function act(name, body) {
    const token = ($("#token-input") || { value: "" }).value.trim();
    const headers = Object.assign({ "Content-Type": "application/json" }, token && { Authorization: `Bearer ${token}` });
    let text;
    let ok = false;
    try {
      const res = await fetch(netPath(`/actions/${name}`), { method: "POST", headers, body: JSON.stringify(body) });
      const d = await res.json().catch(() => null);
      ok = res.ok && !!d && d.ok === true;
      if (ok) {
        const details = Object.entries(d).filter(([k]) => k !== "ok").map(([k, v]) => `${k}: ${describe(v)}`);
        text = `${name}: done${details.length ? " — " + details.join("; ") : ""}`;
      } else {
        text = `${name} refused (${res.status}): ${(d && d.error) || res.statusText}`;
      }
    } catch (_) {
      text = `${name} failed: the dashboard server does not answer`;
    }
    const msg = $("#action-message");
    msg.textContent = text;
    msg.classList.toggle("error", !ok);
    clearTimeout(S.messageTimer); // the toast covers a corner of the page: not for ever
    S.messageTimer = setTimeout(() => (msg.textContent = ""), 15000);
    if (ok) refreshData(); // the history follows through the counts
    return ok;
  }

  // ---- history -----------------------------------------------------------------------------
  const loadHistory = loader(async () => {
    if (!S.network) return;
    const gen = S.gen;
    S.lastHistory = Date.now();
    S.historyDirty = false;
    const d = await load(`/history?limit=${HISTORY_LIMIT}`, "history-msg", "History");
    if (!d) {
      if (gen === S.gen) S.historyDirty = true; // failed: try again at the next chance
      return;
    }
    S.history = d;
    renderHistory(false);
  });

  function renderHistory(force) {
    const d = S.history;
    const section = $("#history-section");
    section.hidden = !(d && d.outputs && d.outputs.length);
    if (section.hidden) return;
    const sel = $("#output-select");
    if ([...sel.options].map((o) => o.value).join("\n") !== d.outputs.join("\n")) {
      const value = sel.value;
      sel.replaceChildren(...d.outputs.map((n) => el("option", { value: n, text: n })));
      sel.value = d.outputs.includes(value) ? value : d.outputs[0];
    }
    const output = sel.value;
    const dir = $("#best-direction").value;
    const points = d.points || [];
    const inputs = d.inputs || [];
    const last = points[points.length - 1];
    // Drawing 10,000 circles is the page's heaviest work: skip it when nothing changed.
    const sig = [points.length, last && last.key, d.total, output, dir, inputs.join(",")].join("|");
    if (!force && sig === S.historySig) return;
    S.historySig = sig;
    $("#history-note").textContent = points.length < d.total
      ? `latest ${points.length} of ${d.total} finished tasks`
      : `${points.length} finished tasks`;
    window.Charts.history($("#history-plot"), points, output, dir);
    window.Charts.inputs($("#inputs-plot"), points, inputs, output, dir);
  }

  // ---- logs --------------------------------------------------------------------------------
  const loadLogs = loader(async () => {
    const q = new URLSearchParams({ level: $("#log-level").value, limit: LOG_LIMIT });
    if ($("#log-worker").value) q.set("worker", $("#log-worker").value);
    const rows = S.network && (await load("/logs?" + q, "logs-msg", "Logs"));
    if (!rows) return;
    const sig = q + JSON.stringify([rows.length, rows[0], rows[rows.length - 1]]);
    if (sig === S.logsSig) return; // unchanged: leave the text alone (keeps a selection intact)
    S.logsSig = sig;
    const pre = $("#logs");
    const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30;
    if (!rows.length) return pre.replaceChildren(el("span", { class: "muted", text: "no log records at this level yet" }));
    pre.replaceChildren(...rows.map((r) => {
      const fields = Object.entries(r.fields || {})
        .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
      const level = String(r.level || "").toLowerCase();
      const line = [fmtTime(r.timestamp), r.worker_id || "-", level.toUpperCase().padEnd(7), r.logger || "-", r.event || "", fields];
      return el("span", { class: `log-${level}` }, line.join("  ").trimEnd() + "\n");
    }));
    if (atBottom) pre.scrollTop = pre.scrollHeight; // follow new lines only when the reader is at the end
  });

  // ---- wiring ------------------------------------------------------------------------------
  function applyConfig() {
    $("#version").textContent = S.config.version ? `v${S.config.version}` : "";
    // Remove, not just hide, what does not apply: a read-only page has no action control at all.
    if (S.config.actions) {
      $("#read-only").remove();
      $("#token-field").hidden = false;
      const input = $("#token-input");
      input.value = sessionStorage.getItem(TOKEN_KEY) || "";
      input.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, input.value));
      $("#retry-all-failed").addEventListener("click", () => act("retry", { keys: null }));
    } else {
      $("#read-only").hidden = false;
      $("#token-field").remove();
      $("#retry-all-failed").remove();
      document.querySelectorAll(".actions-col").forEach((n) => n.remove());
    }
  }

  function onKeyRow(handler) {
    return (e) => {
      const target = e.target.closest("[data-key]");
      if (!target) return;
      if (e.type === "keydown") {
        if (e.key !== "Enter" && e.key !== " ") return;
        e.preventDefault();
      }
      handler(target.getAttribute("data-key"));
    };
  }

  function wire() {
    $("#network-select").addEventListener("change", (e) => selectNetwork(e.target.value));
    window.addEventListener("hashchange", () => selectNetwork(hashNetwork()));
    for (const card of document.querySelectorAll("button.count-card")) {
      card.addEventListener("click", () => {
        $("#state-filter").value = card.dataset.state;
        changeFilter();
        $("#tasks-section").scrollIntoView({ behavior: "smooth", block: "start" });
      });
    }
    $("#state-filter").addEventListener("change", changeFilter);
    $("#worker-filter").addEventListener("change", changeFilter);
    $("#tasks-first").addEventListener("click", () => goToPage(0));
    $("#tasks-prev").addEventListener("click", () => goToPage(S.taskOffset - PAGE_SIZE));
    $("#tasks-next").addEventListener("click", () => goToPage(S.taskOffset + PAGE_SIZE));
    $("#tasks-last").addEventListener("click", () => goToPage(lastOffset(S.taskTotal)));

    const tbody = $("#tasks-table tbody");
    tbody.addEventListener("click", onKeyRow(openDetail));
    tbody.addEventListener("keydown", onKeyRow(openDetail));
    // Points of both plots carry data-key too: the same handler opens their task.
    $("#history-plot").addEventListener("click", onKeyRow(openDetail));
    $("#inputs-plot").addEventListener("click", onKeyRow(openDetail));
    $("#task-detail-close").addEventListener("click", closeDetail);
    document.addEventListener("keydown", (e) => e.key === "Escape" && S.detailKey && closeDetail());

    $("#workers-table").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-worker-id]");
      if (b) act("stop", { worker_ids: [b.dataset.workerId], kill: b.classList.contains("kill-worker") });
    });

    $("#output-select").addEventListener("change", () => renderHistory(true));
    $("#best-direction").addEventListener("change", () => renderHistory(true));
    $("#log-level").addEventListener("change", loadLogs);
    $("#log-worker").addEventListener("change", loadLogs);

    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        window.Charts.throughput($("#throughput-chart"), S.throughput);
        renderHistory(true);
      }, 200);
    });
  }

  // Script errors show on the page too: a broken dashboard should say so, not freeze silently.
  function reportError(e) {
    const box = $("#js-error");
    box.hidden = false;
    box.textContent = `Page error: ${(e && (e.stack || e.message)) || e}`;
  }
  window.addEventListener("error", (e) => reportError(e.error || e.message));
  window.addEventListener("unhandledrejection", (e) => reportError(e.reason));

  async function boot() {
    try {
      S.config = await api("/api/config");
    } catch (e) {
      // The dashboard server itself may be (re)starting: try again until it answers.
      showBanner(`Cannot reach the dashboard server: ${e.message}. Retrying…`);
      setTimeout(boot, 3000);
      return;
    }
    showBanner("");
    applyConfig();
    wire();
    markActiveCard();
    window.Charts.throughput($("#throughput-chart"), []);
    const wanted = hashNetwork() || S.config.network;
    if (wanted) selectNetwork(wanted);
    await loadNetworks();
    setInterval(tick, 1000);
    setInterval(loadLogs, LOG_MS);
  }

  boot();
})();
