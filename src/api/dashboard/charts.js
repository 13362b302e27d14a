// Charts drawn by uPlot (vendored, global `uPlot`): a sparkline per metric on the overview, and per
// metric on a device page the values, the rolling mean, the mean ± k·std band and the points that fired.

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

/** A device metric's chart: value, rolling mean, band of mean ± k·std, fired points. */
export function deviceChart(el, s) {
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
  };
  const u = new uPlot(opts, columns(s), el);
  return {
    update(s2) {
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
