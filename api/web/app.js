// linetwin: the engineer's web page. Plain JavaScript, no library, no build step.
//
// Everything goes through the public /v1 API with the key typed at sign-in, sent as
// `Authorization: Bearer KEY`. The key lives in sessionStorage (this tab) only. Controls the
// key's role may not use are disabled; the server checks every request anyway, and a refusal
// (401/403/409/422/429) is shown in the notice bar.
"use strict";

(() => {
  const KEY_STORE = "linetwin.key";
  const POLL_MS = 2000;
  const TREND_MS = 5000;
  const RENDER_MS = 150;
  const TREND_STEP_S = 60;
  const TREND_AVERAGE_S = 600;
  const TREND_KEEP_S = 6 * 3600;
  const DECISIONS_BACK = 300;
  const AUDIT_PAGE = 12;
  const KPIS = {
    throughput_per_hour: { unit: "/h", digits: 1, scale: 1, label: "Throughput" },
    scrap_rate: { unit: "%", digits: 2, scale: 100, label: "Scrap rate" },
    energy_kwh_per_good_part: { unit: "kWh", digits: 3, scale: 1, label: "Energy per part" },
    profit_per_hour: { unit: "/h", digits: 1, scale: 1, label: "Profit rate" },
  };
  const STATE_LABELS = { busy: "running", starved: "starved", blocked: "blocked", down: "down" };
  const MODE_HELP = {
    closed: "The controller applies each decision to the plant itself.",
    advisory: "The controller recommends; an engineer approves or rejects each recommendation.",
    manual: "The controller stays out: the plant keeps what it runs and what engineers hold.",
  };

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // -- state ----------------------------------------------------------------------------------
  const S = {
    key: null,
    who: null,
    perms: new Set(),
    line: null,
    snapshot: null,
    current: null, // newest published decision
    pending: null, // {mode, decision}
    mode: null,
    overrides: { held: {}, ramping: false },
    clients: null,
    kpiNow: null,
    decisions: new Map(), // version -> decision
    lastDecision: 0,
    trend: new Map(), // time_s -> point
    audit: { after: null, head: 0, follow: true, records: [] },
    baseline: { id: null, estimate: null },
    session: 0, // bumps at sign-out: stale loops stop
    streamAbort: null,
    timers: [],
    lastRender: 0,
    renderTimer: null,
    stationEls: new Map(),
    bufferEls: [],
  };

  // -- formatting -----------------------------------------------------------------------------
  const num = (x, digits = 1) =>
    x === null || x === undefined || !Number.isFinite(x)
      ? "—"
      : x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const kpiText = (name, x, withUnit = true) => {
    const k = KPIS[name];
    if (x === null || x === undefined || !Number.isFinite(x)) return "—";
    const v = num(x * k.scale, k.digits);
    return withUnit ? (k.unit === "%" ? `${v} %` : `${v} ${k.unit}`) : v;
  };
  const lineTime = (s) => {
    if (s === null || s === undefined || !Number.isFinite(s)) return "—";
    const t = Math.max(0, Math.floor(s));
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = t % 60;
    return `${h}:${String(m).padStart(2, "0")}:${String(sec).padStart(2, "0")}`;
  };
  const wallTime = (epochS) => {
    const d = new Date(epochS * 1000);
    const today = new Date();
    const time = d.toLocaleTimeString("en-GB", { hour12: false });
    if (d.toDateString() === today.toDateString()) return time;
    return `${d.toISOString().slice(0, 10)} ${time}`;
  };
  const ago = (s) => (s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${(s / 3600).toFixed(1)} h ago`);
  const compact = (v, max = 160) => {
    if (v === null || v === undefined) return "";
    const text = JSON.stringify(v, (k, x) => (typeof x === "number" && !Number.isInteger(x) ? Number(x.toPrecision(5)) : x));
    return text.length > max ? `${text.slice(0, max - 1)}…` : text;
  };

  // -- the API --------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  const detailText = (body, fallback) => {
    const d = body && body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
    return fallback;
  };

  async function api(method, path, body, key = S.key) {
    const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      if (res.status === 401 && key === S.key && S.key) signOut("The key was refused (401): unknown or revoked.");
      throw new ApiError(res.status, detailText(data, res.statusText || "request failed"));
    }
    return data;
  }

  const can = (permission) => S.perms.has(permission);

  // -- notices --------------------------------------------------------------------------------
  let noticeTimer = null;
  function notify(text, kind = "info", sticky = false) {
    const box = $("#notice");
    box.className = `notice ${kind}`;
    $("#notice-text").textContent = text;
    box.hidden = false;
    clearTimeout(noticeTimer);
    if (!sticky) noticeTimer = setTimeout(() => (box.hidden = true), 8000);
  }

  const REFUSALS = { 401: "Not signed in", 403: "Refused by the server", 409: "Conflict", 422: "Invalid input", 429: "Rate limited" };

  // Run a control's request: the button is busy meanwhile; the outcome goes to the notice bar.
  async function act(button, what, run) {
    button.classList.add("busy");
    try {
      const msg = await run();
      notify(msg || `${what}: done.`, "success");
      refresh();
    } catch (err) {
      if (err instanceof ApiError) {
        const title = REFUSALS[err.status] || "Failed";
        notify(`${what} — ${title} (${err.status}): ${err.detail}`, "error", true);
      } else {
        notify(`${what} — ${err.message}`, "error", true);
      }
      refresh();
    } finally {
      button.classList.remove("busy");
    }
  }

  function needReason(input) {
    const reason = input.value.trim();
    if (!reason) {
      input.focus();
      throw new Error("a reason is required (it is written to the audit log)");
    }
    return reason;
  }

  // -- sign in and out ------------------------------------------------------------------------
  async function signIn(key) {
    const who = await api("GET", "/v1/whoami", undefined, key);
    const line = await api("GET", "/v1/line", undefined, key);
    S.key = key;
    S.who = who;
    S.perms = new Set(who.permissions);
    S.line = line;
    sessionStorage.setItem(KEY_STORE, key);
    S.session += 1;
    start(S.session);
  }

  function signOut(message) {
    S.session += 1;
    if (S.streamAbort) S.streamAbort.abort();
    S.streamAbort = null;
    S.timers.forEach((t) => clearInterval(t));
    S.timers = [];
    sessionStorage.removeItem(KEY_STORE);
    Object.assign(S, {
      key: null, who: null, perms: new Set(), line: null, snapshot: null, current: null, pending: null,
      mode: null, clients: null, kpiNow: null, decisions: new Map(), lastDecision: 0, trend: new Map(),
      audit: { after: null, head: 0, follow: true, records: [] }, baseline: { id: null, estimate: null },
    });
    $("#app").hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = message || "";
    $("#login-key").value = "";
    $("#login-key").focus();
  }

  function start(session) {
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#line-name").textContent = S.line.name;
    $("#who-key").textContent = S.who.key_id;
    $("#who-role").textContent = S.who.role;
    buildDiagram();
    buildOverrideForm();
    applyRole();
    renderLive(true);
    stream(session);
    refresh();
    refreshTrend();
    S.timers.push(setInterval(refresh, POLL_MS), setInterval(refreshTrend, TREND_MS));
  }

  // Disable what the key's role may not use (the server enforces it regardless).
  function applyRole() {
    const role = S.who.role;
    const missing = new Set();
    document.querySelectorAll("[data-perm]").forEach((c) => {
      const ok = can(c.dataset.perm);
      c.disabled = !ok;
      c.title = ok ? "" : `Your key's role (${role}) may not ${c.dataset.perm.replace("_", "-")}.`;
      if (!ok) missing.add(c.dataset.perm);
    });
    const note = $("#readonly-note");
    if (missing.size) {
      note.textContent = `Signed in as ${role}: read-only here. Controls that need ${[...missing].sort().join(", ")} are disabled, and the server refuses them for this key.`;
      note.hidden = false;
    } else {
      note.hidden = true;
    }
  }

  // -- the snapshot stream (fetch + ReadableStream: EventSource cannot send a header) ----------
  async function stream(session) {
    let backoff = 500;
    while (session === S.session) {
      const ctrl = new AbortController();
      S.streamAbort = ctrl;
      try {
        const res = await fetch("/v1/state/stream", {
          headers: { Authorization: `Bearer ${S.key}`, Accept: "text/event-stream" },
          cache: "no-store",
          signal: ctrl.signal,
        });
        if (res.status === 401) {
          signOut("The key was refused (401): unknown or revoked.");
          return;
        }
        if (!res.ok || !res.body) throw new Error(`stream answered ${res.status}`);
        setLive("on", "live");
        backoff = 500;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done || session !== S.session) break;
          buf += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            onEvent(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
          }
        }
      } catch (err) {
        if (ctrl.signal.aborted || session !== S.session) return;
      }
      if (session !== S.session) return;
      setLive("off", "reconnecting");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  }

  function onEvent(raw) {
    let event = "message";
    const data = [];
    for (const line of raw.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (event !== "snapshot" || !data.length) return;
    try {
      S.snapshot = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    renderLive();
  }

  function setLive(cls, text) {
    $("#live").className = `live ${cls}`;
    $("#live-text").textContent = text;
  }

  // -- periodic reads -------------------------------------------------------------------------
  let refreshing = false;
  async function refresh() {
    if (!S.key || refreshing) return;
    refreshing = true;
    const session = S.session;
    try {
      const [current, pending, overrides, clients, kpis] = await Promise.allSettled([
        api("GET", "/v1/setpoints"),
        api("GET", "/v1/decisions/pending"),
        api("GET", "/v1/overrides"),
        api("GET", "/v1/clients"),
        api("GET", `/v1/kpis?window_s=${TREND_AVERAGE_S}`),
      ]);
      if (session !== S.session) return;
      if (current.status === "fulfilled") S.current = current.value;
      if (pending.status === "fulfilled") {
        S.pending = pending.value;
        S.mode = pending.value.mode;
      }
      if (overrides.status === "fulfilled") S.overrides = overrides.value;
      if (clients.status === "fulfilled") S.clients = clients.value;
      if (kpis.status === "fulfilled") S.kpiNow = kpis.value;
      await loadDecisions(session);
      await loadAudit(session);
      if (session !== S.session) return;
      await loadBaseline(session);
      renderControls();
      renderTrends();
    } finally {
      refreshing = false;
    }
  }

  async function loadDecisions(session) {
    const newest = S.current ? S.current.version : 0;
    if (!newest || newest <= S.lastDecision) return;
    let after = Math.max(S.lastDecision, newest - DECISIONS_BACK);
    for (let i = 0; i < 3 && after < newest; i++) {
      const page = await api("GET", `/v1/decisions?after=${after}&limit=1000`);
      if (session !== S.session) return;
      for (const d of page.decisions) S.decisions.set(d.version, d);
      if (!page.decisions.length) break;
      after = page.decisions[page.decisions.length - 1].version;
      S.lastDecision = after;
      if (page.next_after === null) break;
    }
    const keep = [...S.decisions.keys()].sort((a, b) => a - b);
    for (const v of keep.slice(0, Math.max(0, keep.length - 2000))) S.decisions.delete(v);
  }

  async function loadAudit(session) {
    const head = await api("GET", "/v1/audit/head");
    if (session !== S.session) return;
    S.audit.head = head.seq;
    if (S.audit.follow || S.audit.after === null) S.audit.after = Math.max(0, head.seq - AUDIT_PAGE);
    const page = await api("GET", `/v1/audit?after=${S.audit.after}&limit=${AUDIT_PAGE}`);
    if (session !== S.session) return;
    S.audit.records = page.records;
    renderAudit();
  }

  // The model's estimate at what the plant runs: the baseline of a recommendation's gain.
  async function loadBaseline(session) {
    const d = S.pending && S.pending.decision;
    if (!d || !can("what_if") || !S.snapshot || S.baseline.id === d.id) return;
    const running = {};
    for (const st of S.snapshot.stations) running[st.name] = st.setpoints;
    try {
      const out = await api("POST", "/v1/whatif", { candidates: [running] });
      if (session !== S.session) return;
      S.baseline = { id: d.id, estimate: out.results[0].surrogate };
    } catch {
      S.baseline = { id: d.id, estimate: null };
    }
  }

  async function refreshTrend() {
    if (!S.key) return;
    const session = S.session;
    try {
      const h = await api("GET", `/v1/kpis/history?step_s=${TREND_STEP_S}&average_s=${TREND_AVERAGE_S}&limit=360`);
      if (session !== S.session) return;
      for (const p of h.points) S.trend.set(Math.round(p.time_s), p);
      const times = [...S.trend.keys()].sort((a, b) => a - b);
      const last = times[times.length - 1];
      for (const t of times) if (t < last - TREND_KEEP_S) S.trend.delete(t);
      renderTrends();
      const honesty = await api("GET", "/v1/kpis/predictions");
      if (session !== S.session) return;
      renderHonesty(honesty);
    } catch {
      /* the next round tries again */
    }
  }

  // Predictions against what the line then did over the same window (the model's horizon),
  // and the bias the published predictions are corrected by.
  function renderHonesty(h) {
    const last = h.recent.length ? h.recent[h.recent.length - 1] : null;
    $("#honesty-note").textContent = `over the model's ${num(h.horizon_s / 3600, 1)} h horizon, from the state each prediction was made at${last ? ` (newest: line ${lineTime(last.start_time_s)} to ${lineTime(last.end_time_s)})` : ` (${h.open_pairs} waiting for their horizon to end)`}`;
    const head = el("tr");
    head.append(el("th", "", "KPI"), el("td", "sub", "predicted"), el("td", "sub", "realised"), el("td", "sub", "bias ± se"), el("td", "sub", "in 90% band"));
    const rows = [head];
    for (const [name, k] of Object.entries(KPIS)) {
      const b = h.kpis[name];
      const tr = el("tr");
      const p = last && last.predicted[name];
      const r = last ? last.realised[name] : null;
      const v = (x) => (x === null || x === undefined ? "—" : num(x * k.scale, k.digits));
      tr.append(
        el("th", "", k.label),
        el("td", "", p ? `${v(p.mean)} ± ${v(p.std)}` : "—"),
        el("td", "", v(r)),
        el("td", "", b && b.pairs ? `${v(b.bias)} ± ${v(b.bias_se)}` : "—"),
        el("td", "", b && b.coverage_90 !== null ? `${num(100 * b.coverage_90, 0)}% of ${b.pairs}` : "—"),
      );
      rows.push(tr);
    }
    $("#honesty").replaceChildren(...rows);
  }

  // -- the line diagram -----------------------------------------------------------------------
  function buildDiagram() {
    const box = $("#diagram");
    box.replaceChildren();
    S.stationEls.clear();
    S.bufferEls = [];
    S.line.stations.forEach((st, i) => {
      const card = el("div", "station");
      card.dataset.station = st.name;
      const name = el("div", "name", st.name);
      name.title = `${st.name}: cycle ${st.cycle_time_s} s at speed 1`;
      const state = el("span", "state", "—");
      const speed = el("div", "metric");
      const speedValue = el("b", "", "—");
      speed.append(el("span", "", "speed"), speedValue);
      const power = el("div", "metric");
      const powerValue = el("b", "", "—");
      power.append(el("span", "", "power"), powerValue);
      card.append(name, state, speed, power);
      const parts = { card, state, speedValue, powerValue };
      if (st.setpoints.temperature) {
        const temp = el("div", "metric temp");
        const tempValue = el("b", "", "—");
        temp.append(el("span", "", "temp"), tempValue);
        const bar = el("div", "tbar");
        const dev = el("em");
        bar.append(el("i"), dev);
        const setLine = el("div", "metric small");
        const setValue = el("span", "", "—");
        setLine.append(el("span", "", "setpoint"), setValue);
        card.append(temp, setLine, bar);
        Object.assign(parts, { temp, tempValue, setValue, dev, tempSpec: st.setpoints.temperature });
      }
      box.append(card);
      S.stationEls.set(st.name, parts);
      if (i < S.line.stations.length - 1) {
        const buf = el("div", "buffer");
        const tank = el("div", "tank");
        const fill = el("em");
        tank.append(fill);
        const label = el("span", "fill", "—");
        buf.append(tank, label);
        buf.title = `buffer after ${st.name}`;
        box.append(buf);
        S.bufferEls.push({ buf, fill, label });
      }
    });
  }

  function renderLive(force = false) {
    const now = performance.now();
    if (!force && now - S.lastRender < RENDER_MS) {
      if (!S.renderTimer) S.renderTimer = setTimeout(() => {
        S.renderTimer = null;
        renderLive(true);
      }, RENDER_MS);
      return;
    }
    S.lastRender = now;
    const snap = S.snapshot;
    if (!snap) return;
    $("#line-time").textContent = lineTime(snap.time_s);
    $("#total-good").textContent = snap.good.toLocaleString("en-US");
    $("#total-scrap").textContent = snap.scrap.toLocaleString("en-US");
    $("#total-power").textContent = `${num(snap.power_kw, 1)} kW`;
    const held = S.overrides.held || {};
    for (const st of snap.stations) {
      const p = S.stationEls.get(st.name);
      if (!p) continue;
      p.card.className = `station ${st.status}${held[st.name] ? " held" : ""}`;
      p.state.textContent = STATE_LABELS[st.status] || st.status;
      p.speedValue.textContent = `×${num(st.setpoints.speed, 2)}`;
      p.powerValue.textContent = `${num(st.power_kw, 1)} kW`;
      if (p.temp) {
        const sp = st.setpoints.temperature;
        const t = st.temperature_c;
        p.tempValue.textContent = t === null ? "no reading" : `${num(t, 1)} °C`;
        p.setValue.textContent = `${num(sp, 1)} °C`;
        const span = Math.max(1, p.tempSpec.max - p.tempSpec.min);
        const d = t === null ? 0 : Math.max(-0.5, Math.min(0.5, (t - sp) / (span / 4)));
        p.dev.style.left = `${50 + Math.min(0, d) * 100}%`;
        p.dev.style.width = `${Math.abs(d) * 100}%`;
        p.temp.classList.toggle("off", t === null || Math.abs(t - sp) > (p.tempSpec.max_step || 5));
      }
    }
    snap.buffers.forEach((b, i) => {
      const p = S.bufferEls[i];
      if (!p) return;
      const share = b.capacity > 0 ? b.level / b.capacity : 0;
      p.fill.style.height = `${Math.round(share * 100)}%`;
      p.label.textContent = `${b.level}/${b.capacity}`;
      p.buf.classList.toggle("full", b.capacity > 0 && b.level >= b.capacity);
    });
    renderSetpointTable();
  }

  // -- setpoints and overrides ----------------------------------------------------------------
  function renderSetpointTable() {
    const snap = S.snapshot;
    const body = $("#setpoint-table tbody");
    const held = S.overrides.held || {};
    const rows = [];
    for (const st of (snap ? snap.stations : [])) {
      const tr = el("tr");
      tr.append(el("td", "", st.name));
      tr.append(el("td", "num", num(st.setpoints.speed, 3)));
      tr.append(el("td", "num", st.setpoints.temperature === undefined ? "—" : num(st.setpoints.temperature, 1)));
      const cell = el("td", "num");
      if (held[st.name]) {
        const tag = el("span", "badge held", "held");
        tag.title = `held: ${compact(held[st.name])}`;
        const release = el("button", "ghost small", "Release");
        release.type = "button";
        release.dataset.perm = "override";
        release.dataset.station = st.name;
        release.disabled = !can("override");
        if (!can("override")) release.title = `Your key's role (${S.who.role}) may not override.`;
        cell.append(tag, release);
      }
      tr.append(cell);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $("#ramping").textContent = Object.keys(held).length
      ? S.overrides.ramping ? "overrides ramping" : "overrides held"
      : "no overrides";
  }

  function buildOverrideForm() {
    const station = $("#ovr-station");
    station.replaceChildren(...S.line.stations.map((st) => new Option(st.name, st.name)));
    station.onchange = fillSetpointChoice;
    $("#ovr-setpoint").onchange = fillValue;
    fillSetpointChoice();
  }

  function fillSetpointChoice() {
    const st = S.line.stations.find((s) => s.name === $("#ovr-station").value);
    const choice = $("#ovr-setpoint");
    choice.replaceChildren(...Object.keys(st ? st.setpoints : {}).map((n) => new Option(n, n)));
    fillValue();
  }

  function fillValue() {
    const st = S.line.stations.find((s) => s.name === $("#ovr-station").value);
    const name = $("#ovr-setpoint").value;
    const spec = st && st.setpoints[name];
    if (!spec) return;
    const input = $("#ovr-value");
    input.min = spec.min;
    input.max = spec.max;
    input.step = spec.resolution || "any";
    const live = S.snapshot && S.snapshot.stations.find((s) => s.name === st.name);
    const running = live ? live.setpoints[name] : spec.nominal;
    input.value = running === undefined ? spec.nominal : running;
    const unit = name === "temperature" ? " °C" : "";
    $("#ovr-limits").textContent = `Limits ${spec.min}–${spec.max}${unit}, at most ${spec.max_step}${unit} per step; nominal ${spec.nominal}${unit}.`;
  }

  // -- recommendation, mode, rollback, fallbacks, pollers ---------------------------------------
  function renderControls() {
    const mode = S.mode;
    const badge = $("#mode-badge");
    badge.textContent = mode || "—";
    badge.className = `badge mode-${mode}`;
    $("#mode-help").textContent = MODE_HELP[mode] || "";
    document.querySelectorAll('#mode-choice input[name="mode"]').forEach((r) => {
      if (document.activeElement !== r && !r.dataset.touched) r.checked = r.value === mode;
    });
    const cur = S.current;
    $("#published-version").textContent = cur ? `v${cur.version}` : "—";
    const applied = lastApplied();
    $("#applied-version").textContent = applied ? `v${applied.version}` : "—";
    $("#applied-version").title = applied ? `${applied.reasons.join(", ") || applied.status} · line ${lineTime(applied.line_time_s)}` : "";
    $("#total-throughput").textContent = S.kpiNow ? kpiText("throughput_per_hour", S.kpiNow.throughput_per_hour) : "—";
    renderRecommendation();
    renderRollback();
    renderFallbacks();
    renderPollers();
  }

  function lastApplied() {
    let best = null;
    for (const d of S.decisions.values()) if (d.applied && (!best || d.version > best.version)) best = d;
    if (S.current && S.current.applied && (!best || S.current.version > best.version)) best = S.current;
    return best;
  }

  function renderRecommendation() {
    const pend = S.pending && S.pending.decision;
    const shown = pend || S.current; // nothing pending: the latest decision, for reference
    const tag = $("#pending-version");
    const summary = $("#rec-summary");
    const body = $("#rec-body");
    $("#rec-title").textContent = pend ? "Recommendation" : "Latest decision";
    $("#rec-form").hidden = !pend;
    $("#rec-changes-title").textContent = pend ? "Setpoint changes" : "Its setpoints";
    body.dataset.id = pend ? pend.id : "";
    body.dataset.version = pend ? String(pend.version) : "";
    if (!shown) {
      tag.textContent = "—";
      tag.className = "badge";
      summary.textContent = "No decision published yet: the first controller cycle brings one.";
      body.hidden = true;
      return;
    }
    const stateText = pend ? "pending" : shown.applied ? "applied" : "advice";
    tag.textContent = `${stateText} v${shown.version}`;
    tag.className = shown.fallback ? "badge fallback" : pend ? "badge pending" : shown.applied ? "badge ok" : "badge";
    const when = `Line time ${lineTime(shown.line_time_s)}`;
    const solver = `solver ${shown.status}${shown.solve_seconds !== null ? `, ${Math.round(shown.solve_seconds * 1000)} ms` : ""}`;
    let text = shown.fallback
      ? `Fallback: the controller holds the last-known-good setpoints (${shown.reasons.join(", ")}).`
      : `${when} · ${solver}.`;
    if (!pend) {
      text = `${S.mode === "advisory" ? "Nothing is pending: the next controller cycle brings a recommendation." : S.mode === "closed" ? "Closed mode: the controller applies its decisions itself." : "Manual mode: the controller makes no recommendation."} ${text}`;
    }
    summary.textContent = text;
    body.hidden = false;
    const p = shown.predicted || {};
    const profit = p.profit_per_hour;
    const base = pend && S.baseline.id === pend.id ? S.baseline.estimate : null;
    const gainEl = $("#rec-gain");
    $("#rec-gain-label").textContent = pend ? "Predicted profit gain" : "Predicted profit gain at its target";
    const basis = $("#rec-gain-basis");
    let gain = null;
    let sigma = null;
    const held = shown.hold;
    if (held && held.running_gain_per_hour !== null && held.running_gain_per_hour !== undefined) {
      // the controller's own paired gain: every ensemble member's target vs. what the plant runs
      gain = held.running_gain_per_hour;
      const bounds = held.running_gain_low !== null ? ` [${num(held.running_gain_low, 1)}, ${num(held.running_gain_high, 1)}] at ${num(100 * (1 - held.significance), 0)}%` : "";
      basis.textContent = `model, paired over its members: the target vs. the setpoints the plant runs${bounds}`;
    } else if (profit && profit.mean !== null && base && base.profit_per_hour && base.profit_per_hour.mean !== null) {
      gain = profit.mean - base.profit_per_hour.mean;
      sigma = Math.hypot(profit.std || 0, base.profit_per_hour.std || 0);
      basis.textContent = "model: recommended target vs. the setpoints running now (±1σ)";
    } else {
      basis.textContent = shown.fallback ? "no prediction: a fallback holds the last-known-good setpoints" : "no prediction: an engineer's change (override, rollback)";
    }
    gainEl.textContent = gain === null ? "—" : `${gain >= 0 ? "+" : "−"}${num(Math.abs(gain), 1)} /h${sigma ? ` ± ${num(sigma, 1)}` : ""}`;
    gainEl.className = gain === null ? "" : gain >= 0 ? "up" : "down";

    const rows = [];
    const head = el("tr");
    head.append(el("th", "", "KPI"), el("td", "sub", "predicted ±1σ"), el("td", "sub", "measured, 10 min"));
    rows.push(head);
    for (const name of Object.keys(KPIS)) {
      const e = p[name];
      const tr = el("tr");
      tr.append(el("th", "", KPIS[name].label));
      tr.append(el("td", "", e && e.mean !== null ? `${kpiText(name, e.mean)} ± ${kpiText(name, e.std, false)}` : "—"));
      tr.append(el("td", "sub", S.kpiNow ? kpiText(name, S.kpiNow[name]) : "—"));
      rows.push(tr);
    }
    $("#rec-kpis").replaceChildren(...rows);

    const running = {};
    if (S.snapshot) for (const st of S.snapshot.stations) running[st.name] = st.setpoints;
    const changes = [];
    for (const [station, sps] of Object.entries(shown.setpoints)) {
      for (const [name, value] of Object.entries(sps)) {
        const now = running[station] ? running[station][name] : undefined;
        const target = shown.target && shown.target[station] ? shown.target[station][name] : undefined;
        const digits = name === "temperature" ? 1 : 2;
        if (now !== undefined && Math.abs(now - value) < 1e-9 && (target === undefined || Math.abs(target - value) < 1e-9)) continue;
        const tr = el("tr");
        tr.append(el("th", "", `${station} · ${name}`));
        const td = el("td", value > (now ?? value) ? "up" : value < (now ?? value) ? "down" : "");
        td.textContent = `${num(now, digits)} → ${num(value, digits)}`;
        tr.append(td, el("td", "sub", target === undefined ? "" : `→ ${num(target, digits)}`));
        changes.push(tr);
      }
    }
    if (!changes.length) {
      const tr = el("tr");
      const td = el("td", "sub", "no change from what the plant runs");
      td.colSpan = 3;
      tr.append(td);
      changes.push(tr);
    }
    $("#rec-changes").replaceChildren(...changes);
    $("#rec-reasons").textContent = shown.reasons.length ? `Guard: ${shown.reasons.join(", ")}` : "";
    $("#rec-hold").textContent = holdText(shown.hold);
  }

  // Why the target moved or held: the paired gain of the new optimum over the held target,
  // its bounds at the objective's significance level, and the threshold it had to clear.
  function holdText(h) {
    if (!h) return "";
    const g = (v) => (v === null || v === undefined ? "—" : `${v >= 0 ? "+" : "−"}${num(Math.abs(v), 1)}`);
    const bounds = h.gain_low === null ? "" : ` [${g(h.gain_low)}, ${g(h.gain_high)}]`;
    const level = h.significance === null ? "" : ` at ${num(100 * (1 - h.significance), 0)}%`;
    const verdict = {
      significant_gain: "Target moved: the new optimum is a significant gain",
      no_significant_gain: "Target held: no significant gain",
      stopped: "Target stopped where the plant runs: no gain over it",
      running_breaks_cap: "Target moved: staying would break a cap",
      test_off: "Target moved (move test off)",
    }[h.why] || `Target ${h.moved ? "moved" : "held"} (${h.why})`;
    const dropped = h.dropped ? `; the held target was dropped (${h.dropped.replaceAll("_", " ")})` : "";
    return `${verdict}: gain ${g(h.gain_per_hour)} /h${bounds}${level}, threshold ${num(h.min_gain_per_hour, 1)} /h${dropped}.`;
  }

  function renderRollback() {
    const select = $("#rollback-version");
    if (document.activeElement === select) return;
    const chosen = select.value;
    const applied = [...S.decisions.values()].filter((d) => d.applied).sort((a, b) => b.version - a.version).slice(0, 40);
    const options = applied.map((d) => {
      const why = d.reasons.includes("approved") ? "approved" : d.reasons.includes("rollback") ? "rollback" : d.reasons.includes("override") ? "override" : d.status;
      return new Option(`v${d.version} · line ${lineTime(d.line_time_s)} · ${why}`, String(d.version));
    });
    if (!options.length) options.push(new Option("no applied decision yet", ""));
    select.replaceChildren(...options);
    if (chosen && applied.some((d) => String(d.version) === chosen)) select.value = chosen;
  }

  function renderFallbacks() {
    const all = [...S.decisions.values()].sort((a, b) => b.version - a.version);
    const falls = all.filter((d) => d.fallback);
    $("#fallback-count").textContent = all.length ? `${falls.length} of the last ${all.length} decisions` : "";
    const items = falls.slice(0, 6).map((d) => {
      const li = el("li");
      li.append(el("span", "when", `v${d.version} · ${lineTime(d.line_time_s)}`));
      const what = el("span", "what");
      what.append(el("span", "badge fallback", "held last-known-good"), document.createTextNode(` ${d.reasons.join(", ") || d.status}`));
      li.append(what);
      return li;
    });
    if (!items.length) items.push(el("li", "none", all.length ? "No fallbacks: every recent decision came from the optimizer." : "No decisions yet."));
    $("#fallbacks").replaceChildren(...items);
  }

  function renderPollers() {
    const c = S.clients;
    if (!c) return;
    const stale = c.clients.filter((x) => x.silent).length;
    $("#pollers-note").textContent = c.clients.length ? `${stale} stale of ${c.clients.length} · silent after ${num(c.silent_after_s, 0)} s` : "";
    const items = c.clients.map((x) => {
      const li = el("li");
      li.append(el("span", `badge ${x.silent ? "stale" : "ok"}`, x.silent ? "stale" : "ok"));
      const what = el("span", "what mono", x.client);
      li.append(what, el("span", "when", `v${x.last_version} · ${ago(x.age_s)}`));
      return li;
    });
    if (!items.length) items.push(el("li", "none", "No control system has acknowledged setpoints yet."));
    $("#pollers").replaceChildren(...items);
  }

  // -- audit log ------------------------------------------------------------------------------
  const heldText = (held) =>
    Object.entries(held || {}).map(([st, sps]) => `${st} ${Object.entries(sps).map(([k, v]) => `${k} ${num(v, k === "temperature" ? 1 : 3)}`).join(", ")}`).join("; ") || "nothing";

  // One line per record for the common actions; the full old and new values show on hover.
  function auditSummary(r) {
    const o = r.old || {};
    const n = r.new || {};
    switch (r.action) {
      case "mode.change":
        return `${o.mode} → ${n.mode}`;
      case "decision.approve":
        return `recommendation approved: published v${n.version}`;
      case "decision.reject":
        return `recommendation v${o.version ?? "?"} rejected`;
      case "decision.rollback":
        return `setpoints of v${n.to_version} published again as v${n.version}`;
      case "override.set":
        return `holds ${heldText(n.held)}: published v${n.version}`;
      case "override.release":
        return `holds ${heldText(n.held)} (was ${heldText(o.held)})`;
      case "key.create":
        return `${n.key_id} (${n.role})${n.label ? ` “${n.label}”` : ""}`;
      case "key.revoke":
        return `${o.key_id} (${o.role}) revoked`;
      case "objective.change":
        return Object.keys(n).filter((k) => n[k] !== o[k]).map((k) => `${k} ${o[k] ?? "none"} → ${n[k] ?? "none"}`).join("; ") || "unchanged";
      default:
        return r.old === null ? compact(r.new, 120) : `${compact(r.old, 50)} → ${compact(r.new, 90)}`;
    }
  }

  function renderAudit() {
    const a = S.audit;
    const rows = [...a.records].reverse().map((r) => {
      const tr = el("tr");
      tr.append(el("td", "num", r.seq), el("td", "", wallTime(r.at)), el("td", "", r.actor), el("td", "", r.action), el("td", "", r.reason));
      const full = r.old === null ? JSON.stringify(r.new) : `${JSON.stringify(r.old)} → ${JSON.stringify(r.new)}`;
      const change = el("td", "", auditSummary(r));
      change.title = full;
      tr.append(change);
      return tr;
    });
    if (!rows.length) {
      const tr = el("tr", "empty-row");
      const td = el("td", "", "No audit records.");
      td.colSpan = 6;
      tr.append(td);
      rows.push(tr);
    }
    $("#audit-table tbody").replaceChildren(...rows);
    const first = a.records.length ? a.records[0].seq : 0;
    const last = a.records.length ? a.records[a.records.length - 1].seq : 0;
    $("#audit-range").textContent = a.records.length ? `records ${first}–${last} of ${a.head}` : "";
    $("#audit-newer").disabled = last >= a.head;
    $("#audit-newest").disabled = last >= a.head;
    $("#audit-older").disabled = first <= 1;
    $("#audit-oldest").disabled = first <= 1;
  }

  function pageAudit(where) {
    const a = S.audit;
    const newest = Math.max(0, a.head - AUDIT_PAGE);
    if (where === "newest") a.after = newest;
    if (where === "oldest") a.after = 0;
    if (where === "older") a.after = Math.max(0, (a.after ?? newest) - AUDIT_PAGE);
    if (where === "newer") a.after = Math.min(newest, (a.after ?? newest) + AUDIT_PAGE);
    a.follow = a.after >= newest;
    loadAudit(S.session).catch((err) => notify(`Audit log — ${err.message}`, "error"));
  }

  // -- charts (inline SVG) --------------------------------------------------------------------
  function niceStep(range, count) {
    const raw = range / Math.max(1, count);
    const p = 10 ** Math.floor(Math.log10(raw));
    const f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
  }

  function renderTrends() {
    const points = [...S.trend.values()].sort((a, b) => a.time_s - b.time_s);
    const decisions = [...S.decisions.values()].sort((a, b) => a.line_time_s - b.line_time_s);
    document.querySelectorAll(".chart").forEach((fig) => drawChart(fig, fig.dataset.kpi, points, decisions));
  }

  function drawChart(fig, name, points, decisions) {
    const k = KPIS[name];
    const svg = fig.querySelector("svg");
    const W = Math.max(200, svg.clientWidth || 400);
    const H = Math.max(100, svg.clientHeight || 150);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const pad = { l: 46, r: 8, t: 8, b: 20 };
    // points averaged over less than half the window (the first minutes of the history) are noise
    const measured = points
      .filter((p) => p[name] !== null && p.window_s >= TREND_AVERAGE_S / 2)
      .map((p) => [p.time_s, p[name] * k.scale]);
    const last = measured.length ? measured[measured.length - 1][1] : null;
    const latest = decisions.length ? decisions[decisions.length - 1] : null;
    const lp = latest && latest.predicted[name];
    fig.querySelector(".now").textContent = `${last === null ? "—" : `${num(last, k.digits)}`}${lp && lp.mean !== null ? ` · predicted ${num(lp.mean * k.scale, k.digits)} ± ${num(2 * lp.std * k.scale, k.digits)}` : ""}${k.unit === "%" ? " %" : ` ${k.unit}`}`;
    const children = [];
    if (measured.length < 2) {
      children.push(svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }));
      children[0].textContent = "collecting data…";
      svg.replaceChildren(...children);
      return;
    }
    const x0 = measured[0][0];
    const x1 = measured[measured.length - 1][0];
    // predicted steps: each decision's prediction holds until the next decision
    const steps = [];
    decisions.forEach((d, i) => {
      const e = d.predicted[name];
      const t0 = d.line_time_s;
      const t1 = i + 1 < decisions.length ? decisions[i + 1].line_time_s : x1;
      if (!e || e.mean === null || t1 <= x0 || t0 >= x1) return;
      steps.push({ t0: Math.max(t0, x0), t1: Math.min(t1, x1), mean: e.mean * k.scale, std: (e.std || 0) * k.scale, applied: d.applied });
    });
    let lo = Math.min(...measured.map((m) => m[1]));
    let hi = Math.max(...measured.map((m) => m[1]));
    for (const s of steps) {
      lo = Math.min(lo, s.mean - 2 * s.std);
      hi = Math.max(hi, s.mean + 2 * s.std);
    }
    if (hi - lo < 1e-9) {
      hi += Math.abs(hi) * 0.1 || 1;
      lo -= Math.abs(lo) * 0.1 || 1;
    }
    const padY = (hi - lo) * 0.08;
    lo -= padY;
    hi += padY;
    if (lo < 0 && Math.min(...measured.map((m) => m[1])) >= 0) lo = Math.max(lo, 0);
    const sx = (t) => pad.l + ((t - x0) / Math.max(1e-9, x1 - x0)) * (W - pad.l - pad.r);
    const sy = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (H - pad.t - pad.b);
    const ystep = niceStep(hi - lo, 4);
    for (let v = Math.ceil(lo / ystep) * ystep; v <= hi + 1e-9; v += ystep) {
      children.push(svgEl("line", { x1: pad.l, x2: W - pad.r, y1: sy(v), y2: sy(v), class: "grid-line" }));
      const label = svgEl("text", { x: pad.l - 6, y: sy(v) + 3, "text-anchor": "end", class: "axis" });
      label.textContent = num(Math.abs(v) < ystep * 1e-6 ? 0 : v, ystep < 1 ? Math.min(3, Math.ceil(-Math.log10(ystep))) : 0);
      children.push(label);
    }
    const span = x1 - x0;
    const xstep = [60, 300, 600, 900, 1800, 3600, 7200, 10800].find((s) => span / s <= 6) || 21600;
    for (let t = Math.ceil(x0 / xstep) * xstep; t <= x1; t += xstep) {
      const label = svgEl("text", { x: sx(t), y: H - 5, "text-anchor": "middle", class: "axis" });
      label.textContent = lineTime(t).slice(0, -3);
      children.push(label);
    }
    for (const applied of [false, true]) {
      const mine = steps.filter((s) => s.applied === applied);
      if (!mine.length) continue;
      if (applied) {
        for (const s of mine) {
          children.push(svgEl("rect", { x: sx(s.t0), width: Math.max(0.5, sx(s.t1) - sx(s.t0)), y: sy(s.mean + 2 * s.std), height: Math.max(0.5, sy(s.mean - 2 * s.std) - sy(s.mean + 2 * s.std)), class: "band" }));
        }
      }
      let d = "";
      let prevEnd = null;
      for (const s of mine) {
        d += `${prevEnd !== null && Math.abs(prevEnd - s.t0) < 1e-6 ? "L" : "M"}${sx(s.t0).toFixed(1)},${sy(s.mean).toFixed(1)}H${sx(s.t1).toFixed(1)}`;
        prevEnd = s.t1;
      }
      children.push(svgEl("path", { d, class: applied ? "pred" : "advice" }));
    }
    const path = measured.map((m, i) => `${i ? "L" : "M"}${sx(m[0]).toFixed(1)},${sy(m[1]).toFixed(1)}`).join("");
    children.push(svgEl("path", { d: path, class: "measured" }));
    svg.replaceChildren(...children);
  }

  // -- wiring ---------------------------------------------------------------------------------
  function wire() {
    $("#login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = $("#login-key").value.trim();
      const button = $("#login-submit");
      $("#login-error").textContent = "";
      button.disabled = true;
      try {
        await signIn(key);
      } catch (err) {
        $("#login-error").textContent = err instanceof ApiError && err.status === 401
          ? "That key is unknown or revoked."
          : `Could not sign in: ${err.message}`;
      } finally {
        button.disabled = false;
      }
    });
    $("#logout").addEventListener("click", () => signOut(""));
    $("#notice-close").addEventListener("click", () => ($("#notice").hidden = true));

    $("#approve").addEventListener("click", (ev) => decide(ev.currentTarget, "approve"));
    $("#reject").addEventListener("click", (ev) => decide(ev.currentTarget, "reject"));

    document.querySelectorAll('#mode-choice input[name="mode"]').forEach((r) =>
      r.addEventListener("change", () => document.querySelectorAll('#mode-choice input').forEach((x) => (x.dataset.touched = "1"))),
    );
    $("#mode-apply").addEventListener("click", (ev) =>
      act(ev.currentTarget, "Mode switch", async () => {
        const chosen = document.querySelector('#mode-choice input[name="mode"]:checked');
        const mode = chosen ? chosen.value : S.mode;
        const reason = needReason($("#mode-reason"));
        const out = await api("PUT", "/v1/mode", { mode, reason });
        S.mode = out.mode;
        document.querySelectorAll('#mode-choice input').forEach((x) => delete x.dataset.touched);
        $("#mode-reason").value = "";
        renderControls();
        return `Mode: ${out.previous} → ${out.mode} (audit #${out.audit_seq}).`;
      }),
    );

    $("#ovr-hold").addEventListener("click", (ev) =>
      act(ev.currentTarget, "Override", async () => {
        const station = $("#ovr-station").value;
        const name = $("#ovr-setpoint").value;
        const value = Number($("#ovr-value").value);
        if (!Number.isFinite(value)) throw new Error("the value must be a number");
        const reason = needReason($("#ovr-reason"));
        const out = await api("POST", "/v1/overrides", { values: { [station]: { [name]: value } }, reason });
        S.current = out.decision;
        S.decisions.set(out.decision.version, out.decision);
        $("#ovr-reason").value = "";
        return `Holding ${station} ${name} at ${value}: published v${out.decision.version} (${out.decision.reasons.join(", ")}; audit #${out.audit_seq}).`;
      }),
    );
    $("#setpoint-table").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-station]");
      if (!button) return;
      act(button, "Release override", async () => {
        const station = button.dataset.station;
        const reason = needReason($("#ovr-reason"));
        const out = await api("DELETE", `/v1/overrides/${encodeURIComponent(station)}?reason=${encodeURIComponent(reason)}`);
        $("#ovr-reason").value = "";
        return `Released ${station}: the controller decides it again (audit #${out.audit_seq}).`;
      });
    });

    $("#rollback").addEventListener("click", (ev) =>
      act(ev.currentTarget, "Rollback", async () => {
        const version = Number($("#rollback-version").value);
        if (!Number.isInteger(version) || version < 1) throw new Error("choose a decision to roll back to");
        const reason = needReason($("#rollback-reason"));
        const out = await api("POST", "/v1/rollback", { version, reason });
        S.current = out.decision;
        S.decisions.set(out.decision.version, out.decision);
        $("#rollback-reason").value = "";
        renderControls();
        return `Rolled back to v${version}'s setpoints: published v${out.decision.version} (audit #${out.audit_seq}).`;
      }),
    );

    for (const where of ["newest", "newer", "older", "oldest"]) {
      $(`#audit-${where}`).addEventListener("click", () => pageAudit(where));
    }
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(renderTrends, 100);
    });
  }

  function decide(button, verb) {
    const body = $("#rec-body");
    const id = body.dataset.id;
    const version = body.dataset.version;
    act(button, verb === "approve" ? "Approve" : "Reject", async () => {
      if (!id) throw new Error("nothing is pending");
      const reason = needReason($("#decision-reason"));
      const out = await api("POST", `/v1/decisions/${encodeURIComponent(id)}/${verb}`, { reason });
      $("#decision-reason").value = "";
      S.pending = { mode: S.mode, decision: null };
      if (verb === "approve") {
        S.current = out.decision;
        S.decisions.set(out.decision.version, out.decision);
        renderControls();
        return `Approved v${version}: published v${out.decision.version} to the plant (audit #${out.audit_seq}).`;
      }
      renderControls();
      return `Rejected v${version}: the plant keeps what it runs (audit #${out.audit_seq}).`;
    });
  }

  // Exposed for tests and the console: the same request path the controls use.
  window.linetwin = { api, state: S };

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    const key = sessionStorage.getItem(KEY_STORE);
    if (!key) {
      $("#login").hidden = false;
      $("#login-key").focus();
      return;
    }
    signIn(key).catch((err) => {
      signOut(err instanceof ApiError && err.status === 401 ? "That key is unknown or revoked." : `Could not sign in: ${err.message}`);
    });
  });
})();
