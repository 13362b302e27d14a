// Charts drawn by uPlot (vendored, global `uPlot`): a sparkline per metric on the overview, and per
// metric on a device page the values, the rolling mean, the mean ± k·std band and the points that fired,
// and a forecast detector's trend line, limit and crossing.

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** Columns of a metric's points (merged from /api/devices/{id}/series) in uPlot's data layout. */
function columns(s) {
  const x = s.ts.map((t) => t / 1000);
  const up = s.mean.map((m, i) => (m == null || s.std[i] == null ? null : m + s.k * s.std[i]));
  const lo = s.mean.map((m, i) => (m == null || s.std[i] == null ? null : m - s.k * s.std[i]));
  const fired = s.value.map((v, i) => (s.fired[i] ? v : null));
  return [x, s.value, s.mean, up, lo, fired];
}

const pointsOnly = (color, size) => ({
  stroke: color,
  fill: color,
  paths: () => null,
  points: { show: true, size, stroke: color, fill: color },
});

/** A small chart without axes: values, fired points in red. */
export function sparkline(el, s) {
  const [x, value, , , , fired] = columns(s);
  const opts = {
    width: Math.max(80, el.clientWidth || 120),
    height: 32,
    cursor: { show: false },
    legend: { show: false },
    select: { show: false },
    scales: { x: { time: false } },
    axes: [{ show: false }, { show: false }],
    series: [
      {},
      { stroke: css("--accent"), width: 1.25, points: { show: false } },
      pointsOnly(css("--bad"), 5),
    ],
  };
  const u = new uPlot(opts, [x, value, fired], el);
  return {
    update(s2) {
      const c = columns(s2);
      u.setData([c[0], c[1], c[5]]);
    },
    resize() {
      u.setSize({ width: Math.max(80, el.clientWidth || 120), height: 32 });
    },
    destroy() {
      u.destroy();
    },
  };
}

const fmtNum = (v) => (v == null ? "–" : Number(v.toPrecision(5)).toString());

/** "~2 h 10 min" for a duration in ms (as the forecast alert's text). */
export function humanMs(ms) {
  const s = Math.max(0, ms / 1000);
  if (s < 59.5) return `~${Math.round(s)} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `~${min} min`;
  if (min < 1440) return `~${Math.floor(min / 60)} h` + (min % 60 ? ` ${min % 60} min` : "");
  const h = Math.round(s / 3600);
  return `~${Math.floor(h / 24)} d` + (h % 24 ? ` ${h % 24} h` : "");
}

/** The forecast to draw: the followed trend and, when it crosses within the horizon, where. */
function forecastShape(f) {
  if (!f || !f.followed || !f.trend) return null;
  const t = f.trend;
  const at = (ms) => t.level + (t.slope * (ms - t.at_ms)) / 1000;
  const cross = f.crossing_ts != null && f.eta_ms <= f.horizon_ms ? f.crossing_ts : null;
  const end = cross ?? t.at_ms;
  return { from: t.from_ms, end, y0: at(t.from_ms), y1: at(end), cross, limit: cross == null ? null : f.limit, eta: f.eta_ms };
}

/**
 * Draws a metric's forecast over the chart (uPlot hooks): the trend line over the detector's
 * window, continued to the crossing when one is due within the horizon, the limit as a dashed
 * line and the crossing as a ring labelled with the time to it. The scales stretch to include them.
 * The canvas coordinates drawn are kept in `host`'s `data-forecast` (read by tests); `host` is
 * the chart's element, not read from the DOM, since a draw may come while it is detached.
 */
function forecastPlugin(get, host) {
  const color = css("--warn");
  return {
    opts: (u, o) => {
      o.scales.x.range = (u, lo, hi) => {
        const f = forecastShape(get().forecast);
        if (f) hi = Math.max(hi, f.end / 1000);
        return lo === hi ? [lo - 1, hi + 1] : [lo, hi];
      };
      o.scales.y = {
        range: (u, lo, hi) => {
          const f = forecastShape(get().forecast);
          if (f && f.limit != null) (lo = Math.min(lo, f.limit)), (hi = Math.max(hi, f.limit));
          return uPlot.rangeNum(lo, hi, 0.1, true);
        },
      };
    },
    hooks: {
      draw: [
        (u) => {
          const f = forecastShape(get().forecast);
          if (!f) {
            delete host.dataset.forecast;
            return;
          }
          const X = (ms) => u.valToPos(ms / 1000, "x", true);
          const Y = (v) => u.valToPos(v, "y", true);
          const ctx = u.ctx;
          const dpr = window.devicePixelRatio || 1;
          const drawn = { w: ctx.canvas.width, h: ctx.canvas.height, x0: X(f.from), y0: Y(f.y0), x1: X(f.end), y1: Y(f.y1) };
          ctx.save();
          ctx.beginPath();
          ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
          ctx.clip();
          ctx.strokeStyle = color;
          ctx.lineWidth = 2 * dpr;
          ctx.setLineDash([6 * dpr, 4 * dpr]);
          ctx.beginPath();
          ctx.moveTo(drawn.x0, drawn.y0);
          ctx.lineTo(drawn.x1, drawn.y1);
          ctx.stroke();
          if (f.cross != null) {
            drawn.limit_y = Y(f.limit);
            ctx.lineWidth = 1 * dpr;
            ctx.setLineDash([2 * dpr, 3 * dpr]);
            ctx.beginPath();
            ctx.moveTo(u.bbox.left, drawn.limit_y);
            ctx.lineTo(u.bbox.left + u.bbox.width, drawn.limit_y);
            ctx.stroke();
            ctx.setLineDash([]);
            ctx.lineWidth = 3 * dpr;
            ctx.beginPath();
            ctx.arc(drawn.x1, drawn.limit_y, 6 * dpr, 0, 2 * Math.PI);
            ctx.stroke();
            const label = `${fmtNum(f.limit)} in ${humanMs(f.eta)}`;
            ctx.fillStyle = color;
            ctx.font = `${12 * dpr}px system-ui, sans-serif`;
            ctx.textAlign = "right";
            ctx.fillText(label, drawn.x1 - 10 * dpr, drawn.limit_y + (f.y1 >= f.y0 ? 16 : -8) * dpr);
            drawn.cross = { x: drawn.x1, y: drawn.limit_y, label };
          }
          ctx.restore();
          host.dataset.forecast = JSON.stringify(drawn);
        },
      ],
    },
  };
}

/** A device metric's chart: value, rolling mean, band of mean ± k·std, fired points, forecast. */
export function deviceChart(el, s) {
  let cur = s;
  const height = 220;
  const muted = css("--muted");
  const grid = { stroke: css("--grid"), width: 1 };
  const k = Number(s.k.toPrecision(3));
  const opts = {
    width: Math.max(240, el.clientWidth),
    height,
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true } },
    axes: [
      { stroke: muted, grid, ticks: grid },
      { stroke: muted, grid, ticks: grid, size: 56, values: (u, vals) => vals.map(fmtNum) },
    ],
    series: [
      { value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleTimeString()) },
      { label: "value", stroke: css("--accent"), width: 1.5, value: (u, v) => fmtNum(v), points: { show: false } },
      { label: "mean", stroke: muted, width: 1, dash: [5, 4], value: (u, v) => fmtNum(v), points: { show: false } },
      { label: `+${k}σ`, stroke: css("--band-edge"), width: 1, value: (u, v) => fmtNum(v), points: { show: false } },
      { label: `−${k}σ`, stroke: css("--band-edge"), width: 1, value: (u, v) => fmtNum(v), points: { show: false } },
      { label: "fired", value: (u, v) => fmtNum(v), ...pointsOnly(css("--bad"), 8) },
    ],
    bands: [{ series: [3, 4], fill: css("--band") }],
    plugins: [forecastPlugin(() => cur, el)],
  };
  const u = new uPlot(opts, columns(s), el);
  return {
    update(s2) {
      cur = s2;
      u.setData(columns(s2));
    },
    resize() {
      u.setSize({ width: Math.max(240, el.clientWidth), height });
    },
    destroy() {
      u.destroy();
    },
  };
}

/**
 * A metric's history from sled (GET /api/series): the mean per bucket, the min…max band, and the
 * alerts of the range as red points at the bucket they fell in (value = the alert's sample).
 */
function historyColumns(h, alerts) {
  const x = h.ts.map((t) => t / 1000);
  const marks = h.ts.map(() => null);
  for (const a of alerts) {
    // Where the alert began; a resolved record holds the resolving sample, so it is drawn at the
    // bucket's extreme (the side further from the mean) rather than at that value.
    const i = h.ts.findIndex((t) => a.raised_at >= t && a.raised_at < t + h.resolution_ms);
    if (i < 0) continue;
    const far = h.max[i] - h.mean[i] >= h.mean[i] - h.min[i] ? h.max[i] : h.min[i];
    marks[i] = a.state === "firing" ? a.value : far;
  }
  return [x, h.mean, h.max, h.min, marks];
}

export function historyChart(el, h, alerts) {
  const height = 220;
  let range = [h.from / 1000, h.to / 1000];
  const muted = css("--muted");
  const grid = { stroke: css("--grid"), width: 1 };
  const step = h.resolution_ms >= 900000 ? "15 min" : "1 min";
  const opts = {
    width: Math.max(240, el.clientWidth),
    height,
    legend: { live: true },
    cursor: { drag: { x: true, y: false } },
    // The whole range asked for, however few buckets it has.
    scales: { x: { time: true, range: () => range } },
    axes: [
      { stroke: muted, grid, ticks: grid },
      { stroke: muted, grid, ticks: grid, size: 56, values: (u, vals) => vals.map(fmtNum) },
    ],
    series: [
      { value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleString()) },
      // Sparse buckets (a new series, a range of gaps) show as points too, not as nothing.
      { label: `mean (${step})`, stroke: css("--accent"), width: 1.5, value: (u, v) => fmtNum(v), points: { show: (u) => u.data[0].length <= 90, size: 5 } },
      { label: "max", stroke: css("--band-edge"), width: 1, value: (u, v) => fmtNum(v), points: { show: false } },
      { label: "min", stroke: css("--band-edge"), width: 1, value: (u, v) => fmtNum(v), points: { show: false } },
      { label: "alert", value: (u, v) => fmtNum(v), ...pointsOnly(css("--bad"), 9) },
    ],
    bands: [{ series: [2, 3], fill: css("--band") }],
  };
  const u = new uPlot(opts, historyColumns(h, alerts), el);
  return {
    update(h2, alerts2) {
      range = [h2.from / 1000, h2.to / 1000];
      u.setData(historyColumns(h2, alerts2));
    },
    resize() {
      u.setSize({ width: Math.max(240, el.clientWidth), height });
    },
    destroy() {
      u.destroy();
    },
  };
}
