// The device page's device-level panel: the correlation heatmap of the device's vector (from
// /api/devices/{id}/correlation) and its operating mode (the device's `vector.mode`).

const POS = [31, 111, 235]; // blue: metrics that rise together
const NEG = [209, 36, 47]; // red: one rises as the other falls
const NONE = [140, 149, 159]; // grey: not known (too few vectors, or a metric that did not vary)

/** Colour of a correlation r: white at 0, deeper towards ±1, blue above 0 and red below. */
export function cellColour(r) {
  if (r == null || Number.isNaN(r)) return `rgb(${NONE.join(",")})`;
  const a = Math.min(1, Math.abs(r));
  const mix = (c) => Math.round(255 + (c - 255) * a);
  return `rgb(${(r >= 0 ? POS : NEG).map(mix).join(",")})`;
}

/**
 * Draws the n×n correlation matrix `corr` (the API's view) into `canvas`, rows labelled with the
 * metrics and columns with their numbers. The geometry (device pixels) is left in the canvas's
 * data attributes: n, x0, y0, cell.
 */
export function heatmap(canvas, corr) {
  const n = corr.metrics.length;
  const dpr = window.devicePixelRatio || 1;
  const font = "12px system-ui, sans-serif";
  const ctx = canvas.getContext("2d");
  ctx.font = font;
  const labels = corr.metrics.map((m, i) => `${i + 1} ${m}`);
  const left = Math.ceil(Math.max(0, ...labels.map((l) => ctx.measureText(l).width))) + 8;
  const top = 18;
  const room = (canvas.parentElement?.clientWidth || 320) - left - 4;
  const cell = Math.max(14, Math.min(44, Math.floor(room / Math.max(n, 1))));
  const w = left + n * cell + 2;
  const h = top + n * cell + 2;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${h}px`;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = font;
  ctx.fillStyle = getComputedStyle(canvas).color || "#667085";
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  labels.forEach((l, i) => ctx.fillText(l, left - 6, top + i * cell + cell / 2));
  ctx.textAlign = "center";
  for (let j = 0; j < n; j++) ctx.fillText(String(j + 1), left + j * cell + cell / 2, top / 2);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      ctx.fillStyle = cellColour(corr.correlation[i]?.[j]);
      ctx.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
    }
  }
  Object.assign(canvas.dataset, {
    n: String(n),
    x0: String(left * dpr),
    y0: String(top * dpr),
    cell: String(cell * dpr),
  });
  const fmt = (r) => (r == null ? "–" : r.toFixed(2));
  canvas.title = corr.correlation.map((row, i) => `${labels[i]}: ${row.map(fmt).join(" ")}`).join("\n");
}

/** The mode line: "mode 1 (running) · distance 0.8 · 3 modes learnt". */
export function modeText(mode) {
  if (!mode) return "";
  if (mode.warming || mode.index == null) return "operating mode: learning…";
  const name = mode.label ? `${mode.index} (${mode.label})` : String(mode.index);
  const dist = mode.distance == null ? "" : ` · distance ${mode.distance.toFixed(1)}`;
  return `operating mode ${name}${mode.bad ? " — labelled bad" : ""}${dist} · ${mode.modes} mode${mode.modes === 1 ? "" : "s"} learnt`;
}
