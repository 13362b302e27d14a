// End-to-end test of the dashboard in Debian's headless Chromium (playwright-core), against a real
// edgewatch running the demo config with an API token. Run by tests/dashboard.rs:
//   node tests/browser/dashboard.mjs <api host:port> <tcp host:port> <token> <artifacts dir>
// Prints one JSON line of measurements; exits non-zero with the reason when a check fails.

import { chromium } from "playwright-core";
import net from "node:net";
import path from "node:path";
import fs from "node:fs";

const [api, tcp, token, out] = process.argv.slice(2);
if (!api || !tcp || !token || !out) {
  console.error("usage: dashboard.mjs API_ADDR TCP_ADDR TOKEN OUT_DIR");
  process.exit(2);
}
const base = `http://${api}`;
const DEMO = ["freezer-4", "greenhouse-1", "greenhouse-2", "pump-3"];
const PROBE = "browser-probe";
const T = 20_000; // per wait
const started = Date.now();
const step = (what) => console.error(`[browser ${((Date.now() - started) / 1000).toFixed(1)}s] ${what}`);
fs.mkdirSync(out, { recursive: true });

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Sends newline-delimited JSON samples over the demo's TCP source. */
function sender() {
  const [host, port] = tcp.split(/:(?=\d+$)/);
  const s = net.createConnection({ host, port: Number(port) });
  s.on("error", (e) => console.error(`tcp: ${e.message}`));
  let i = 0;
  return {
    send(value) {
      s.write(JSON.stringify({ device: PROBE, metric: "temp", value }) + "\n");
    },
    // Varied values around 20 (never repeating, so the stuck detector stays quiet).
    normal() {
      i += 1;
      this.send(20 + ((i * 37) % 11) / 50 - 0.1);
    },
    end() {
      s.end();
    },
  };
}

/** Non-blank pixels of every canvas under `selector`, and how many of them are alert-red. */
async function pixels(page, selector) {
  return page.$$eval(selector, (canvases) =>
    canvases.map((c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      let red = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] > 0) ink++;
        if (d[i + 3] > 200 && d[i] > 180 && d[i + 1] < 90 && d[i + 2] < 90) red++;
      }
      return { ink, red, w: c.width, h: c.height };
    }),
  );
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const problems = [];
const result = {};
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/401 \(Unauthorized\)/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  const loads = [];
  page.on("requestfinished", (r) => loads.push(r));

  // 1. Without the token nothing is shown but the token form.
  step("open the page without a token");
  await page.goto(base + "/", { waitUntil: "load" });
  await page.waitForSelector("#token-form", { timeout: T });
  check((await page.$("#devices")) === null, "devices are shown without a token");
  check((await page.$(".alert")) === null, "alerts are shown without a token");
  let weight = 0;
  const assets = [];
  for (const r of loads) {
    const u = new URL(r.url());
    if (u.pathname === "/" || u.pathname.startsWith("/assets/")) {
      const s = await r.sizes();
      const resp = await r.response();
      weight += s.responseBodySize + s.responseHeadersSize;
      assets.push(`${u.pathname} ${s.responseBodySize} B ${resp?.headers()["content-encoding"] || "identity"}`);
    }
  }
  result.page_transfer_bytes = weight;
  result.assets = assets;
  check(weight < 150 * 1024, `page weighs ${weight} B transferred, over 150 KB`);

  step("a wrong token is refused");
  await page.fill("#token", "not-the-token");
  await page.click("#token-form button");
  await page.waitForSelector("#token-error", { timeout: T });
  check((await page.textContent("#token-error")).includes("not accepted"), "no refusal message");
  check((await page.$("#devices")) === null, "devices shown after a wrong token");

  // 2. With the token: the overview lists the demo devices, live over /ws.
  step("enter the token");
  await page.fill("#token", token);
  await page.click("#token-form button");
  for (const d of DEMO) await page.waitForSelector(`article.dev[data-device="${d}"] .metrics li .v`, { timeout: T });
  await page.waitForSelector("#live.on", { timeout: T });
  await page.waitForSelector('.src.ok[data-source="sim"]', { timeout: T });
  await page.waitForFunction(
    (n) => document.querySelectorAll("article.dev .spark canvas").length >= n,
    7, // the demo's simulated metrics
    { timeout: T },
  );
  await page.evaluate(() => (window.__sameDocument = true));

  // 3. An alert appears live: a spike on a new device over TCP; the list updates without reload.
  step("send a spike over TCP");
  const tx = sender();
  for (let i = 0; i < 40; i++) {
    tx.normal();
    await new Promise((r) => setTimeout(r, 40));
  }
  tx.send(80);
  const firing = await page.waitForSelector(`#alert-slot li.alert.firing[data-device="${PROBE}"]`, { timeout: T });
  const alertId = await firing.getAttribute("data-id");
  check(await page.evaluate(() => window.__sameDocument === true), "the page reloaded");
  result.alert_id = alertId;
  step(`alert ${alertId} shown; keep the device normal until it resolves`);
  await page.waitForSelector(`article.dev[data-device="${PROBE}"] .metrics li[data-metric="temp"] .spark canvas`, { timeout: T });

  // 4. Back to normal: the same alert changes state in place (zscore hold is 3 s in the demo).
  const feeding = setInterval(() => tx.normal(), 200);
  try {
    await page.waitForSelector(`#alert-slot li.alert.resolved[data-id="${alertId}"]`, { timeout: T });
  } finally {
    clearInterval(feeding);
    tx.end();
  }
  check(await page.evaluate(() => window.__sameDocument === true), "the page reloaded");
  check(
    (await page.$(`#alert-slot li.alert.firing[data-id="${alertId}"]`)) === null,
    "the resolved alert is still listed as firing",
  );
  // (tank-1, configured for step 5c, has no samples yet: its sparkline is empty.)
  const sparks = await pixels(page, 'article.dev:not([data-device="tank-1"]) .spark canvas');
  check(sparks.length >= 8 && sparks.every((p) => p.ink > 50), `blank sparklines: ${JSON.stringify(sparks)}`);
  await page.screenshot({ path: path.join(out, "dashboard.png"), fullPage: true });
  step("overview screenshot saved");

  // 5. The device page: chart with value, mean, band and the fired point (red).
  await page.click(`article.dev[data-device="${PROBE}"] a.name`);
  await page.waitForSelector('.chart[data-metric="temp"] .plot canvas', { timeout: T });
  await page.waitForFunction(() => document.querySelector(".u-legend")?.textContent.includes("fired"), null, { timeout: T });
  const chart = (await pixels(page, '.chart[data-metric="temp"] .plot canvas'))[0];
  check(chart.ink > 2000, `device chart is blank: ${JSON.stringify(chart)}`);
  check(chart.red > 10, `no fired point drawn on the device chart: ${JSON.stringify(chart)}`);
  check(await page.evaluate(() => window.__sameDocument === true), "navigation reloaded the page");
  check(
    (await page.textContent("#alert-slot")).includes(alertId) ||
      (await page.$(`#alert-slot li[data-id="${alertId}"]`)) !== null,
    "the device page does not list its alert",
  );
  result.device_chart = chart;
  await page.screenshot({ path: path.join(out, "device.png"), fullPage: true });
  step("device screenshot saved");

  // A demo device page draws too (band from its zscore detector).
  await page.goto(`${base}/#/device/pump-3`);
  await page.waitForSelector('.chart[data-metric="pressure"] .plot canvas', { timeout: T });
  await page.waitForFunction(() => document.querySelectorAll(".chart .plot canvas").length >= 2, null, { timeout: T });
  const demo = await pixels(page, ".chart .plot canvas");
  check(demo.every((p) => p.ink > 2000), `blank pump-3 charts: ${JSON.stringify(demo)}`);
  await page.screenshot({ path: path.join(out, "device-pump-3.png"), fullPage: true });

  // 5a. A device vector: three metrics over TCP (b follows a, c mirrors a); its page shows the
  // operating mode and the correlation heatmap, one cell per pair, blue where the API's
  // correlation is positive and red where it is negative.
  step("device vector: heatmap");
  {
    const [host, port] = tcp.split(/:(?=\d+$)/);
    const s = net.createConnection({ host, port: Number(port) });
    s.on("error", (e) => console.error(`tcp: ${e.message}`));
    for (let i = 0; i < 60; i++) {
      const a = Math.sin(i / 3) * 5 + ((i * 7) % 5) / 10;
      const row = { device: "vec-probe", a, b: 2 * a + ((i * 3) % 4) / 10, c: -a + ((i * 5) % 3) / 10 };
      s.write(JSON.stringify(row) + "\n");
      await new Promise((r) => setTimeout(r, 15));
    }
    s.end();
  }
  await page.goto(`${base}/#/device/vec-probe`);
  await page.waitForSelector('#heatmap[data-n="3"]', { timeout: T });
  await page.waitForFunction(() => /operating mode \d/.test(document.querySelector("#mode")?.textContent || ""), null, { timeout: T });
  const corr = await page.evaluate(async (t) => {
    const r = await fetch("/api/devices/vec-probe/correlation", { headers: { Authorization: `Bearer ${t}` } });
    return r.json();
  }, token);
  check(corr.count >= 50, `too few vectors: ${JSON.stringify(corr)}`);
  const cells = await page.$eval("#heatmap", (c) => {
    const { n, x0, y0, cell } = Object.fromEntries(Object.entries(c.dataset).map(([k, v]) => [k, Number(v)]));
    const ctx = c.getContext("2d");
    const out = [];
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        const [r, g, b, a] = ctx.getImageData(Math.round(x0 + (j + 0.5) * cell), Math.round(y0 + (i + 0.5) * cell), 1, 1).data;
        out.push({ i, j, r, g, b, a });
      }
    return out;
  });
  check(cells.length === 9, `the heatmap has ${cells.length} cells, not 9`);
  for (const c of cells) {
    const r = corr.correlation[c.i][c.j];
    check(c.a === 255, `cell ${c.i},${c.j} is not drawn: ${JSON.stringify(c)}`);
    if (r > 0.2) check(c.b > c.r + 40, `cell ${c.i},${c.j} (r=${r}) is not blue: ${JSON.stringify(c)}`);
    if (r < -0.2) check(c.r > c.b + 40, `cell ${c.i},${c.j} (r=${r}) is not red: ${JSON.stringify(c)}`);
  }
  check(corr.correlation[0][1] > 0.9 && corr.correlation[0][2] < -0.9, `unexpected correlation: ${JSON.stringify(corr.correlation)}`);
  result.heatmap = { cells: cells.length, count: corr.count, mode: await page.textContent("#mode") };
  await page.screenshot({ path: path.join(out, "device-vector.png"), fullPage: true });

  // 5b. History from sled: the last hour of the probe device, its alert marked in red.
  await page.goto(`${base}/#/device/${encodeURIComponent(PROBE)}`);
  await page.waitForSelector('.ranges button[data-range="1h"]', { timeout: T });
  await page.click('.ranges button[data-range="1h"]');
  await page.waitForFunction(() => document.querySelector(".u-legend")?.textContent.includes("mean (1 min)"), null, { timeout: T });
  const footer = await page.textContent('.chart[data-metric="temp"] footer');
  const buckets = Number((footer.match(/(\d+) buckets of 1 min/) || [])[1] || 0);
  check(buckets >= 1, `no history buckets in the last hour: ${footer}`);
  check(/[1-9]\d* alerts/.test(footer), `the alert is not counted in the range: ${footer}`);
  const hist = (await pixels(page, '.chart[data-metric="temp"] .plot canvas'))[0];
  check(hist.red > 10, `the alert is not marked on the history chart: ${JSON.stringify(hist)}`);
  result.history_chart = { buckets, ...hist };
  await page.screenshot({ path: path.join(out, "device-1h.png"), fullPage: true });
  await page.click('.ranges button[data-range="live"]');
  await page.waitForFunction(() => document.querySelector(".u-legend")?.textContent.includes("fired"), null, { timeout: T });

  // 5c. A forecast: a tank filling 1 % a minute (samples 10 s apart over the last 20 min, from
  // 50 %) reaches the demo's limit of 95 in 25 min; its chart draws the trend line up to the
  // limit and marks the crossing there.
  step("send a rising tank level");
  {
    const [host, port] = tcp.split(/:(?=\d+$)/);
    const s = net.createConnection({ host, port: Number(port) });
    const t0 = Date.now() - 20 * 60_000;
    let lines = "";
    for (let i = 0; i <= 120; i++) {
      const wobble = [0.2, -0.1, 0, 0.1, -0.2][i % 5];
      lines += JSON.stringify({ device: "tank-1", metric: "level", ts: t0 + i * 10_000, value: 50 + i / 6 + wobble }) + "\n";
    }
    await new Promise((r) => s.end(lines, r));
  }
  await page.goto(`${base}/#/device/tank-1`);
  const fsel = '.chart[data-metric="level"] .plot[data-forecast]';
  await page.waitForFunction((sel) => JSON.parse(document.querySelector(sel)?.dataset.forecast || "{}").cross, fsel, { timeout: T });
  const drawn = JSON.parse(await page.getAttribute(fsel, "data-forecast"));
  const inside = (x, y) => x >= 0 && x <= drawn.w && y >= 0 && y <= drawn.h;
  check(inside(drawn.x0, drawn.y0) && inside(drawn.x1, drawn.y1), `forecast line off the canvas: ${JSON.stringify(drawn)}`);
  check(drawn.x1 - drawn.x0 > drawn.w / 3 && drawn.y1 < drawn.y0 - 20, `the trend line does not rise across the chart: ${JSON.stringify(drawn)}`);
  check(Math.abs(drawn.cross.y - drawn.y1) < 2 && Math.abs(drawn.cross.x - drawn.x1) < 1, `the line does not meet the limit at the crossing: ${JSON.stringify(drawn)}`);
  const eta = Number((drawn.cross.label.match(/^95 in ~(\d+) min$/) || [])[1]);
  check(eta >= 22 && eta <= 28, `crossing label ${drawn.cross.label}, expected ~25 min`);
  const tankFooter = await page.textContent('.chart[data-metric="level"] footer');
  check(/forecast: crosses 95 in ~2\d min/.test(tankFooter), `footer: ${tankFooter}`);
  // The drawn line is there in the pixels too (the forecast colour, --warn).
  const warm = await page.$eval('.chart[data-metric="level"] .plot canvas', (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 200 && d[i] > 150 && d[i] - d[i + 2] > 80 && d[i + 1] > 90) n++;
    return n;
  });
  check(warm > 100, `no forecast pixels on the chart (${warm})`);
  result.forecast = { ...drawn, warm_pixels: warm };
  await page.screenshot({ path: path.join(out, "device-forecast.png"), fullPage: true });

  // 6. The token was kept: a new page of the same browser shows the overview directly.
  const again = await ctx.newPage();
  await again.goto(base + "/", { waitUntil: "load" });
  await again.waitForSelector(`article.dev[data-device="${DEMO[0]}"]`, { timeout: T });
  check((await again.$("#token-form")) === null, "asked for the token again");

  // 7. A phone: everything fits the width.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const stored = await page.evaluate(() => localStorage.getItem("edgewatch.token"));
  await phone.addInitScript((t) => localStorage.setItem("edgewatch.token", t), stored);
  const p2 = await phone.newPage();
  p2.on("pageerror", (e) => problems.push(`phone page error: ${e.message}`));
  await p2.goto(base + "/", { waitUntil: "load" });
  await p2.waitForSelector(`article.dev[data-device="${DEMO[0]}"] .spark canvas`, { timeout: T });
  const overflow = await p2.evaluate(() => document.scrollingElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `the phone page scrolls sideways by ${overflow}px`);
  await p2.screenshot({ path: path.join(out, "dashboard-phone.png") });
  await phone.close();

  check(problems.length === 0, `browser problems:\n${problems.join("\n")}`);
  result.seconds = (Date.now() - started) / 1000;
  console.log(JSON.stringify(result));
} catch (e) {
  const shot = path.join(out, "failure.png");
  for (const c of browser.contexts()) for (const p of c.pages()) await p.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${e.message}${problems.length ? `\n${problems.join("\n")}` : ""}\n(screenshot: ${shot})`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
