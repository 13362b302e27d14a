// edgewatch dashboard: hash routes (#/, #/alerts, #/device/ID), state polled from /api, alerts live
// from /ws. Asks once for the API token when the appliance requires one and keeps it in localStorage.

import { sparkline, deviceChart, historyChart, humanMs } from "./charts.js";
import { heatmap, modeText } from "./vector.js";

const TOKEN_KEY = "edgewatch.token";
const POLL_MS = 2000;
const STALE_MS = 30000;
const ALERTS_KEPT = 500;
/** The device page's time ranges: live (the in-memory ring) or history from sled. */
const RANGES = { live: 0, "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const HISTORY_REFRESH_MS = 30000;

const state = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  status: null,
  devices: [],
  alerts: new Map(), // id → latest state of the alert
  series: new Map(), // device → Map(metric → columns)
  skew: 0, // appliance clock − browser clock, ms
  ws: null,
  wsRetry: 1000,
  view: null,
  timer: null,
  soon: null,
  ticking: false,
  range: localStorage.getItem("edgewatch.range") || "live",
};

// ---------- small helpers ----------

/** Builds an element; strings become text nodes (never HTML), so device data cannot inject markup. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);
const now = () => Date.now() + state.skew;
const devHref = (id) => `#/device/${encodeURIComponent(id)}`;

function fmtVal(v) {
  if (v == null || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(4)).toString();
}

function fmtAge(ms) {
  if (ms == null) return "never";
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)} s ago`;
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

const fmtTime = (ms) => new Date(ms).toLocaleTimeString();

class AuthError extends Error {}

async function api(path) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) throw new AuthError(body.error || "unauthorized");
  if (!r.ok) throw new Error(body.error || `${path}: HTTP ${r.status}`);
  return body;
}

// ---------- token ----------

function lock(message) {
  document.body.classList.add("locked");
  clearTimeout(state.timer);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
    state.ws = null;
  }
  if (state.view) state.view.unmount?.();
  state.view = null;
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "current-password",
    placeholder: "API token",
    required: true,
  });
  const form = h(
    "form",
    { class: "card token", id: "token-form" },
    h("h2", {}, "API token"),
    h("p", {}, "This appliance requires its API token (the content of api.token_file). It is kept in this browser."),
    message ? h("p", { class: "error", id: "token-error" }, message) : null,
    input,
    h("button", { type: "submit" }, "Open dashboard"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    state.token = input.value.trim();
    try {
      await api("/api/status");
    } catch (err) {
      if (err instanceof AuthError) return lock("That token was not accepted.");
      return lock(String(err.message || err));
    }
    localStorage.setItem(TOKEN_KEY, state.token);
    start();
  });
  $("#view").replaceChildren(form);
  input.focus();
}

// ---------- data ----------

async function refresh() {
  const [status, devices] = await Promise.all([api("/api/status"), api("/api/devices")]);
  state.status = status;
  state.devices = devices;
  state.skew = status.now - Date.now();
  $("#node").textContent = status.node_id;
  document.title = `edgewatch · ${status.node_id}`;
}

async function loadAlerts() {
  const list = await api("/api/alerts?limit=100");
  for (const a of list.reverse()) upsertAlert(a, false);
}

function upsertAlert(a, live) {
  const old = state.alerts.get(a.id);
  state.alerts.set(a.id, { ...a, live: live || old?.live, changed: live ? Date.now() : old?.changed });
  if (state.alerts.size > ALERTS_KEPT) {
    const oldest = [...state.alerts.values()].sort((x, y) => x.raised_at - y.raised_at);
    for (const x of oldest.slice(0, state.alerts.size - ALERTS_KEPT)) state.alerts.delete(x.id);
  }
}

/** Fetches the points after the ones held (all at first) and appends them, keeping `capacity`. */
async function loadSeries(device) {
  const held = state.series.get(device) || new Map();
  let since = null;
  for (const s of held.values()) {
    const last = s.ts[s.ts.length - 1];
    if (last != null) since = since == null ? last : Math.min(since, last);
  }
  const q = since == null || held.size === 0 ? "" : `?since=${since}`;
  const v = await api(`/api/devices/${encodeURIComponent(device)}/series${q}`);
  for (const m of v.metrics) {
    const s = held.get(m.metric) || { ts: [], value: [], mean: [], std: [], fired: [] };
    const last = s.ts.length ? s.ts[s.ts.length - 1] : -Infinity;
    const fired = new Set(m.fired);
    for (let i = 0; i < m.ts.length; i++) {
      if (m.ts[i] <= last) continue;
      s.ts.push(m.ts[i]);
      s.value.push(m.value[i]);
      s.mean.push(m.mean[i]);
      s.std.push(m.std[i]);
      s.fired.push(fired.has(i));
    }
    const extra = s.ts.length - Math.max(1, m.capacity);
    if (extra > 0) for (const c of ["ts", "value", "mean", "std", "fired"]) s[c].splice(0, extra);
    s.k = m.k;
    s.band = m.band;
    s.forecast = m.forecast;
    s.capacity = m.capacity;
    held.set(m.metric, s);
  }
  state.series.set(device, held);
  return held;
}

// ---------- live stream ----------

function setLive(text, cls) {
  const el = $("#live");
  el.textContent = text;
  el.className = `live ${cls}`;
}

function connectWs() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const q = state.token ? `&token=${encodeURIComponent(state.token)}` : "";
  const ws = new WebSocket(`${proto}//${location.host}/ws?type=alert${q}`);
  state.ws = ws;
  ws.onmessage = (e) => {
    let m;
    try {
      m = JSON.parse(e.data);
    } catch {
      return;
    }
    if (m.type === "hello") {
      state.wsRetry = 1000;
      setLive("live", "on");
      loadAlerts().then(render, () => {}); // catch up on what happened while disconnected
    } else if (m.type === "alert") {
      upsertAlert(m, true);
      state.view?.alerts?.();
      soon();
    }
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    setLive("reconnecting…", "off");
    setTimeout(() => state.ws || document.body.classList.contains("locked") || connectWs(), state.wsRetry);
    state.wsRetry = Math.min(state.wsRetry * 2, 15000);
  };
}

// ---------- shared pieces ----------

function health(d) {
  const firing = d.metrics.reduce((n, m) => n + m.firing.length, 0);
  if (firing) return { cls: "bad", text: `${firing} firing` };
  if (d.last_seen == null) return { cls: "idle", text: "no data yet" };
  if (now() - d.last_seen > STALE_MS) return { cls: "warn", text: "quiet" };
  return { cls: "ok", text: "ok" };
}

function alertItem(a) {
  const age = a.changed ? Date.now() - a.changed : Infinity;
  const fresh = age < 1500;
  const li = h(
    "li",
    { class: `alert ${a.state} sev-${a.severity}${fresh ? " fresh" : ""}`, "data-id": a.id, "data-device": a.device },
    h("span", { class: "state" }, a.state),
    h("span", { class: `sev` }, a.severity),
    h("time", { datetime: new Date(a.raised_at).toISOString() }, fmtTime(a.raised_at)),
    h("span", { class: "what" }, h("a", { href: devHref(a.device) }, a.device), ` · ${a.metric} · ${a.detector}`),
    h("span", { class: "msg" }, a.message, a.value == null ? "" : ` (value ${fmtVal(a.value)})`),
    a.resolved_at ? h("span", { class: "muted" }, `resolved ${fmtTime(a.resolved_at)}`) : null,
  );
  // Lists are rebuilt on every change: continue the highlight where it was instead of restarting it.
  if (fresh) li.style.animationDelay = `-${age}ms`;
  return li;
}

function alertList(filter, limit) {
  const list = [...state.alerts.values()]
    .filter(filter)
    .sort((x, y) => y.raised_at - x.raised_at || (x.id < y.id ? 1 : -1))
    .slice(0, limit);
  if (!list.length) return h("p", { class: "muted empty" }, "No alerts.");
  return h("ol", { class: "alerts" }, list.map(alertItem));
}

function sourcesPanel(st) {
  const a = st.analysis;
  return h(
    "section",
    { class: "sources", id: "sources" },
    h(
      "div",
      { class: "card stat" },
      h("b", {}, `${a.samples_per_sec}/s`),
      h("span", {}, `${a.devices} devices · ${st.alerts.firing} firing`),
    ),
    st.sources.map((s) =>
      h(
        "div",
        { class: `card src ${s.healthy ? "ok" : "bad"}`, "data-source": s.id },
        h("span", { class: "dot" }),
        h("b", {}, s.id),
        h("span", { class: "muted" }, s.kind),
        h(
          "span",
          {},
          `${s.samples_per_sec}/s · ${s.frames_accepted} ok · ${s.frames_rejected} rejected` +
            (s.kind === "tcp" ? ` · ${s.connections} conn` : ""),
        ),
        s.last_error ? h("span", { class: "error", title: s.last_error.message }, s.last_error.message) : null,
      ),
    ),
  );
}

// ---------- views ----------

/** Overview: sources, a card per device (health, last values, sparklines), live alerts. */
function overview() {
  const cards = new Map(); // device → { el, sparks: Map(metric → chart), visible }
  // Sparklines are fetched for the cards on screen only (a fleet may have thousands of devices).
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const id = e.target.dataset.device;
      const c = cards.get(id);
      if (!c) continue;
      const appeared = e.isIntersecting && !c.visible;
      c.visible = e.isIntersecting;
      const d = state.devices.find((x) => x.device === id);
      if (appeared && d) sparks(d, c).catch(fail);
    }
  });
  const root = h(
    "div",
    { class: "overview" },
    h("div", { id: "sources-slot" }),
    h(
      "div",
      { class: "cols" },
      h("section", {}, h("h2", {}, "Devices ", h("small", { id: "dev-count" })), h("div", { class: "grid", id: "devices" })),
      h("section", { class: "side" }, h("h2", {}, "Live alerts"), h("div", { id: "alert-slot" }), h("a", { href: "#/alerts" }, "All alerts →")),
    ),
  );

  function card(d) {
    const el = h("article", { class: "card dev", "data-device": d.device });
    const c = { el, sparks: new Map(), visible: false, metrics: null }; // null: not filled yet
    cards.set(d.device, c);
    seen.observe(el);
    return c;
  }

  function fill(c, d) {
    const names = d.metrics.map((m) => m.metric).join("\n");
    if (names !== c.metrics) {
      for (const s of c.sparks.values()) s.destroy();
      c.sparks.clear();
      c.metrics = names;
      c.el.replaceChildren(
        h("header", {}, h("a", { href: devHref(d.device), class: "name" }, d.device), h("span", { class: "badge" })),
        h("div", { class: "seen muted" }),
        h(
          "ul",
          { class: "metrics" },
          d.metrics.map((m) =>
            h(
              "li",
              { "data-metric": m.metric },
              h("span", { class: "m" }, m.metric),
              h("span", { class: "v" }),
              h("div", { class: "spark" }),
              h("span", { class: "fire" }),
            ),
          ),
        ),
      );
    }
    const hl = health(d);
    const badge = $(".badge", c.el);
    badge.className = `badge ${hl.cls}`;
    badge.textContent = hl.text;
    c.el.dataset.health = hl.cls;
    const age = fmtAge(d.last_seen == null ? null : now() - d.last_seen);
    $(".seen", c.el).textContent = `seen ${age}${d.registered ? " · registered" : ""}`;
    for (const m of d.metrics) {
      const li = c.el.querySelector(`li[data-metric="${CSS.escape(m.metric)}"]`);
      if (!li) continue;
      $(".v", li).textContent = fmtVal(m.last_value);
      $(".fire", li).textContent = m.firing.length ? m.firing.map((a) => a.detector).join(", ") : "";
      li.classList.toggle("firing", m.firing.length > 0);
    }
  }

  async function sparks(d, c) {
    if (!c.visible) return;
    const held = await loadSeries(d.device);
    for (const [metric, s] of held) {
      const li = c.el.querySelector(`li[data-metric="${CSS.escape(metric)}"]`);
      if (!li) continue;
      const chart = c.sparks.get(metric);
      if (chart) chart.update(s);
      else c.sparks.set(metric, sparkline($(".spark", li), s));
    }
  }

  return {
    root,
    update() {
      $("#sources-slot", root).replaceChildren(sourcesPanel(state.status));
      const grid = $("#devices", root);
      $("#dev-count", root).textContent = `(${state.devices.length})`;
      for (const d of state.devices) {
        const c = cards.get(d.device) || card(d);
        if (!c.el.isConnected) grid.append(c.el);
        fill(c, d);
      }
      this.alerts();
      return Promise.all(state.devices.map((d) => sparks(d, cards.get(d.device)).catch(() => {})));
    },
    alerts() {
      $("#alert-slot", root).replaceChildren(alertList(() => true, 25));
    },
    unmount() {
      seen.disconnect();
      for (const c of cards.values()) for (const s of c.sparks.values()) s.destroy();
    },
  };
}

/** All alerts held, newest first, with a state filter; live. */
function alertsView() {
  let filter = "all";
  const buttons = ["all", "firing", "resolved"].map((f) =>
    h("button", { type: "button", "data-filter": f, onclick: () => ((filter = f), view.alerts()) }, f),
  );
  const root = h("div", { class: "alerts-page" }, h("h2", {}, "Alerts"), h("div", { class: "filters" }, buttons), h("div", { id: "alert-slot" }));
  const view = {
    root,
    update() {
      this.alerts();
    },
    alerts() {
      for (const b of buttons) b.classList.toggle("active", b.dataset.filter === filter);
      $("#alert-slot", root).replaceChildren(alertList((a) => filter === "all" || a.state === filter, 300));
    },
  };
  return view;
}

/** The footer's words on a forecast: when the trend crosses its limit, or that it does not. */
function forecastText(f) {
  if (!f) return "";
  if (!f.followed) return ` · ${f.detector}: no clear trend`;
  if (f.eta_ms == null || f.eta_ms > f.horizon_ms) return ` · ${f.detector}: no crossing within ${humanMs(f.horizon_ms).slice(1)}`;
  return ` · ${f.detector}: crosses ${fmtVal(f.limit)} in ${humanMs(f.eta_ms)}`;
}

/** One device: a chart per metric (live: value, rolling mean, mean ± k·std, fired points; or the
 * history of a range from sled: mean, min…max, alerts marked), its alerts. */
function deviceView(id) {
  const charts = new Map(); // metric → chart of the range shown
  let shown = null; // range the charts were drawn for
  let fetched = 0; // when the history was last fetched
  const resize = new ResizeObserver(() => charts.forEach((c) => c.resize()));
  if (!(state.range in RANGES)) state.range = "live";
  const buttons = Object.keys(RANGES).map((r) =>
    h("button", { type: "button", "data-range": r, onclick: () => pick(r) }, r),
  );
  const root = h(
    "div",
    { class: "device-page" },
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "Overview"), " / ", h("b", { id: "dev-name" }, id)),
    h("div", { class: "devhead" }, h("span", { class: "badge", id: "dev-health" }), h("span", { class: "muted", id: "dev-seen" })),
    h("section", { id: "vector", class: "card vector", hidden: true },
      h("header", {}, h("b", {}, "Device vector"), h("span", { class: "muted", id: "mode" })),
      h("div", { class: "heat" }, h("canvas", { id: "heatmap" })),
      h("footer", { class: "muted", id: "heat-note" }),
    ),
    h("div", { class: "filters ranges", role: "group", "aria-label": "time range" }, buttons),
    h("div", { id: "charts", class: "charts" }),
    h("section", {}, h("h2", {}, "Alerts of this device"), h("div", { id: "alert-slot" })),
  );

  function pick(r) {
    state.range = r;
    localStorage.setItem("edgewatch.range", r);
    fetched = 0;
    view.update().catch(fail);
  }

  function chartCard(m) {
    const el = h(
      "article",
      { class: "card chart", "data-metric": m.metric },
      h("header", {}, h("b", {}, m.metric), h("span", { class: "stats muted" })),
      h("div", { class: "plot" }),
      h("footer", { class: "muted" }),
    );
    $("#charts", root).append(el);
    return el;
  }

  function clearCharts() {
    charts.forEach((c) => c.destroy());
    charts.clear();
    for (const p of root.querySelectorAll(".plot")) p.replaceChildren();
  }

  /** The device-level panel: operating mode and correlation heatmap (devices with a vector). */
  async function vectorPanel(d) {
    const panel = $("#vector", root);
    panel.hidden = !d.vector;
    if (!d.vector) return;
    const mode = $("#mode", root);
    mode.textContent = d.vector.mode ? ` ${modeText(d.vector.mode)}` : "";
    mode.classList.toggle("error", !!d.vector.mode?.bad);
    const corr = await api(`/api/devices/${encodeURIComponent(id)}/correlation`);
    heatmap($("#heatmap", root), corr);
    $("#heat-note", root).textContent =
      `correlation over the last ${corr.count} vectors (window ${corr.window}) · blue: rise together, red: one rises as the other falls`;
  }

  /** The history of every metric over the range, and the device's alerts in it. */
  async function loadHistory(d, span) {
    const to = now();
    const from = to - span;
    const q = (m) =>
      `/api/series?device=${encodeURIComponent(id)}&metric=${encodeURIComponent(m)}&from=${Math.floor(from)}&to=${Math.ceil(to)}`;
    const [series, alerts] = await Promise.all([
      Promise.all(d.metrics.map((m) => api(q(m.metric)))),
      api(`/api/alerts?device=${encodeURIComponent(id)}&limit=1000`),
    ]);
    return { series, alerts: alerts.filter((a) => a.raised_at >= from && a.raised_at <= to) };
  }

  const view = {
    root,
    async update() {
      const d = state.devices.find((x) => x.device === id);
      if (!d) {
        $("#charts", root).replaceChildren(h("p", { class: "error" }, `Unknown device ${id}.`));
        return;
      }
      for (const b of buttons) b.classList.toggle("active", b.dataset.range === state.range);
      const hl = health(d);
      const badge = $("#dev-health", root);
      badge.className = `badge ${hl.cls}`;
      badge.textContent = hl.text;
      $("#dev-seen", root).textContent = ` last sample ${fmtAge(d.last_seen == null ? null : now() - d.last_seen)}${d.registered ? " · registered automatically" : ""}`;
      this.alerts();
      await vectorPanel(d).catch(fail); // the charts are drawn even if it fails
      if (shown !== state.range) {
        clearCharts();
        shown = state.range;
      }
      const span = RANGES[state.range];
      const held = span ? null : await loadSeries(id);
      let hist = null;
      if (span) {
        if (Date.now() - fetched < HISTORY_REFRESH_MS) return;
        fetched = Date.now();
        hist = await loadHistory(d, span);
        if (shown !== state.range) return; // another range was picked meanwhile
      }
      d.metrics.forEach((m, i) => {
        const el = root.querySelector(`article[data-metric="${CSS.escape(m.metric)}"]`) || chartCard(m);
        $(".stats", el).textContent =
          ` last ${fmtVal(m.last_value)} · mean ${fmtVal(m.mean)} · std ${fmtVal(m.std)} · min ${fmtVal(m.min)} · max ${fmtVal(m.max)}`;
        el.classList.toggle("firing", m.firing.length > 0);
        const firing = m.firing.length ? ` · FIRING: ${m.firing.map((a) => a.detector).join(", ")}` : "";
        const plot = $(".plot", el);
        const chart = charts.get(m.metric);
        if (hist) {
          const hs = hist.series[i];
          const marks = hist.alerts.filter((a) => a.metric === m.metric);
          $("footer", el).textContent =
            `last ${state.range}: ${hs.ts.length} buckets of ${hs.resolution_ms >= 900000 ? "15 min" : "1 min"} (min, mean, max) · ${marks.length} alerts` + firing;
          if (!hs.ts.length) {
            if (chart) (chart.destroy(), charts.delete(m.metric));
            plot.replaceChildren(h("p", { class: "muted empty" }, "No history in this range yet."));
            return;
          }
          if (chart) chart.update(hs, marks);
          else {
            plot.replaceChildren();
            charts.set(m.metric, historyChart(plot, hs, marks));
            resize.observe(plot);
          }
          return;
        }
        const s = held.get(m.metric);
        $("footer", el).textContent =
          `${m.total} samples · window ${m.window} · detectors ${m.detectors.join(", ") || "none"}` +
          (s ? ` · band: ${s.band === "zscore" ? "zscore baseline" : "statistics window"} ± ${s.k}σ · ${s.ts.length} points` : "") +
          forecastText(s && s.forecast) +
          firing;
        if (!s || !s.ts.length) return;
        if (chart) chart.update(s);
        else {
          charts.set(m.metric, deviceChart(plot, s));
          resize.observe(plot);
        }
      });
    },
    alerts() {
      $("#alert-slot", root).replaceChildren(alertList((a) => a.device === id, 50));
    },
    unmount() {
      resize.disconnect();
      charts.forEach((c) => c.destroy());
    },
  };
  return view;
}

// ---------- routing and the refresh loop ----------

function route() {
  if (document.body.classList.contains("locked")) return;
  const hash = location.hash || "#/";
  let name = "overview";
  let view;
  if (hash.startsWith("#/device/")) {
    name = "device";
    view = deviceView(decodeURIComponent(hash.slice("#/device/".length)));
  } else if (hash === "#/alerts") {
    name = "alerts";
    view = alertsView();
  } else {
    view = overview();
  }
  state.view?.unmount?.();
  state.view = view;
  for (const a of document.querySelectorAll(".nav a")) a.classList.toggle("active", a.dataset.route === name);
  $("#view").replaceChildren(view.root);
  document.body.dataset.route = name;
  render();
}

/** Redraws the current view from the state held (fetching series where it needs them). */
function render() {
  const v = state.view;
  if (!v || !state.status) return;
  Promise.resolve(v.update())
    .catch(fail)
    .finally(() => {
      document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
    });
}

function fail(err) {
  if (err instanceof AuthError) {
    localStorage.removeItem(TOKEN_KEY);
    state.token = "";
    lock("The token is no longer accepted.");
  } else {
    console.warn("edgewatch:", err);
  }
}

/** An alert changed a device's state: refresh shortly rather than wait for the next poll. */
function soon() {
  if (state.soon || document.body.classList.contains("locked")) return;
  state.soon = setTimeout(() => {
    state.soon = null;
    tick();
  }, 300);
}

async function tick() {
  if (state.ticking) return;
  state.ticking = true;
  clearTimeout(state.timer);
  try {
    await refresh();
    render();
  } catch (err) {
    fail(err);
  } finally {
    state.ticking = false;
  }
  if (!document.body.classList.contains("locked")) state.timer = setTimeout(tick, POLL_MS);
}

async function start() {
  try {
    await refresh();
    await loadAlerts();
  } catch (err) {
    if (err instanceof AuthError) return lock(state.token ? "The stored token was not accepted." : null);
    $("#view").replaceChildren(h("p", { class: "error" }, `Cannot reach the appliance: ${err.message || err}`));
    setTimeout(start, 3000);
    return;
  }
  document.body.classList.remove("locked");
  $("#forget").hidden = !state.token;
  connectWs();
  route();
  state.timer = setTimeout(tick, POLL_MS);
}

window.addEventListener("hashchange", route);
$("#forget").addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  state.token = "";
  $("#forget").hidden = true;
  lock(null);
});
start();
