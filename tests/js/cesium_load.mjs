// Load 3D Tiles tilesets in CesiumJS inside headless Chromium (Debian's /usr/bin/chromium through playwright-core,
// no browser download) and print one JSON report: per tileset its errors, tiles with content, a sampled and a
// screen-picked feature with metadata, probes picked at known places, the root bounding sphere centre in lon/lat.
//
// Usage: node tests/js/cesium_load.mjs TILESET... [--timeout S] [--sse N] [--pitch DEG] [--range K] [--globe 0|1]
//                                      [--probes JSON] [--size WxH] [--screenshot FILE] [--chromium PATH]
//        node tests/js/cesium_load.mjs --spec SPEC.json
//   TILESET: a tileset.json path (its folder is served at /tiles/<i>/) or an http(s) URL (must allow this origin).
//   --probes '[[lon, lat, height], …]': places (degrees, metres above the ellipsoid) to pick at and sample heights.
//   SPEC.json: {"tilesets": [{"tileset", "timeout", "sse", "pitch", "range", "globe", "probes", "screenshot"}, …],
//               "size": [w, h], "chromium": path}   (per-tileset options; flags apply to every TILESET).
// Tilesets load one after the other in one page (one browser start, shaders compiled once). A small static server
// on a free loopback port serves the page (tests/js/cesium_load.html), CesiumJS (node_modules/cesium/Build/Cesium)
// and the tileset folders. Requests to any other origin are aborted and reported as errors: the page must work
// offline. Console errors, page errors, failed requests and HTTP errors go to the tileset loading at the time.
// Exit code 0 when a report was printed, 2 on usage errors.
import { createServer } from "node:http";
import { createReadStream } from "node:fs";
import { readFile, readdir, stat } from "node:fs/promises";
import { basename, dirname, extname, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const CESIUM = resolve(HERE, "..", "..", "node_modules", "cesium", "Build", "Cesium");
// WebGL2 on SwiftShader (CPU) through ANGLE: there is no GPU here. Newer Chromium refuses the software WebGL
// fallback without --enable-unsafe-swiftshader.
const CHROMIUM_FLAGS = [
  "--use-gl=angle",
  "--use-angle=swiftshader",
  "--enable-unsafe-swiftshader",
  "--ignore-gpu-blocklist",
  "--disable-gpu-vsync",
  "--disable-dev-shm-usage",
];
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".glb": "model/gltf-binary",
  ".gltf": "model/gltf+json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".svg": "image/svg+xml",
  ".wasm": "application/wasm",
};

async function parseArgs(argv) {
  const flags = { timeout: "60", sse: "16", pitch: "-60", range: "2", globe: "1", probes: "[]", size: "480x360",
    screenshot: null, chromium: "/usr/bin/chromium", spec: null };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      rest.push(a);
      continue;
    }
    const key = a.slice(2);
    if (!(key in flags) || i + 1 >= argv.length) throw new Error(`unknown or incomplete option ${a}`);
    flags[key] = argv[++i];
  }
  if (flags.spec) {
    if (rest.length) throw new Error("--spec takes no TILESET arguments");
    const spec = JSON.parse(await readFile(flags.spec, "utf8"));
    return { size: [480, 360], chromium: flags.chromium, ...spec };
  }
  if (rest.length === 0) throw new Error("no TILESET (path to tileset.json or URL) given");
  const one = { timeout: Number(flags.timeout), sse: Number(flags.sse), pitch: Number(flags.pitch),
    range: Number(flags.range), globe: flags.globe !== "0", probes: JSON.parse(flags.probes) };
  return {
    tilesets: rest.map((tileset, i) => ({ ...one, tileset,
      screenshot: flags.screenshot && (rest.length > 1 ? flags.screenshot.replace(/(\.png)?$/, `-${i}.png`) : flags.screenshot) })),
    size: flags.size.split("x").map(Number),
    chromium: flags.chromium,
  };
}

/** Serve fixed folders under fixed prefixes; nothing outside them (no `..`). */
function staticServer(mounts) {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    for (const [prefix, root] of Object.entries(mounts)) {
      if (!path.startsWith(prefix)) continue;
      const file = resolve(root, "." + path.slice(prefix.length - 1));
      if (file !== root && !file.startsWith(root + sep)) break;
      try {
        const info = await stat(file);
        if (!info.isFile()) break;
        res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream",
          "content-length": info.size, "cache-control": "no-store" });
        createReadStream(file).pipe(res);
        return;
      } catch {
        break;
      }
    }
    res.writeHead(404).end();
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

/** CPU seconds (user + system) used so far by this process's descendants (the browser's processes): unlike wall
 * time, it hardly depends on how busy the machine is. Linux /proc; 0 elsewhere. */
async function descendantCpuSeconds() {
  const parents = new Map();
  const ticks = new Map();
  for (const name of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(name)) continue;
    const text = await readFile(`/proc/${name}/stat`, "utf8").catch(() => null);
    if (text === null) continue;
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");  // from the 3rd field (state) on
    parents.set(Number(name), Number(fields[1]));
    ticks.set(Number(name), Number(fields[11]) + Number(fields[12]));
  }
  let total = 0;
  for (const [pid, t] of ticks) {
    for (let p = parents.get(pid); p > 1; p = parents.get(p) ?? 0) {
      if (p === process.pid) {
        total += t;
        break;
      }
    }
  }
  return total / 100;  // USER_HZ
}

async function main() {
  let spec;
  try {
    spec = await parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`cesium_load: ${e.message}`);
    process.exit(2);
  }
  const mounts = { "/cesium/": CESIUM, "/harness/": HERE };
  const remoteOrigins = new Set();
  const items = spec.tilesets.map((item, i) => {
    if (/^https?:\/\//.test(item.tileset)) {
      remoteOrigins.add(new URL(item.tileset).origin);
      return { ...item, url: item.tileset };
    }
    const file = resolve(item.tileset);
    mounts[`/tiles/${i}/`] = dirname(file);
    return { ...item, url: `/tiles/${i}/${basename(file)}` };
  });
  const server = await staticServer(mounts);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const allowed = new Set([origin, ...remoteOrigins]);
  const outside = [];  // errors while no tileset is loading (page start-up)
  let errors = outside;
  const requests = { total: 0, content: 0 };
  const started = Date.now();
  const reports = [];
  const browser = await chromium.launch({ executablePath: spec.chromium, args: CHROMIUM_FLAGS, headless: true });
  try {
    const [width, height] = spec.size;
    const page = await browser.newPage({ viewport: { width, height } });
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith("data:") || url.startsWith("blob:") || allowed.has(new URL(url).origin)) return route.continue();
      errors.push(`request to another origin blocked: ${url}`);
      return route.abort("blockedbyclient");
    });
    page.on("request", (r) => {
      requests.total++;
      if (/\.(glb|json)(\?|$)/.test(r.url())) requests.content++;
    });
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console error: ${m.text()}`);
    });
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => {
      if (!errors.some((e) => e.endsWith(r.url()))) errors.push(`request failed: ${r.url()}: ${r.failure()?.errorText}`);
    });
    page.on("response", (r) => {
      if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`);
    });
    await page.goto(`${origin}/harness/cesium_load.html`);
    await page.waitForFunction(() => typeof window.cesiumLoad === "function", null, { timeout: 120_000 });
    for (const item of items) {
      const own = [];
      errors = own;
      const t0 = Date.now();
      let report;
      try {
        const timeout = Number(item.timeout ?? 60);
        const pageSpec = { tileset: item.url, timeout, sse: item.sse, pitch: item.pitch, range: item.range,
          globe: item.globe !== false, probes: item.probes ?? [] };
        let timer;
        const guard = new Promise((_, fail) => {
          timer = setTimeout(() => fail(new Error(`no report within ${timeout + 60} s`)), 1000 * (timeout + 60));
        });
        report = await Promise.race([page.evaluate((s) => window.cesiumLoad(s), pageSpec), guard]);
        clearTimeout(timer);
        if (item.screenshot) await page.screenshot({ path: item.screenshot });
        await page.evaluate(() => window.cesiumUnload());
      } catch (e) {
        report = { url: item.url, errors: [`harness: ${e.message}`] };
      }
      report.tileset = item.tileset;
      report.errors = [...(report.errors ?? []), ...own];
      report.wallSeconds = (Date.now() - t0) / 1000;
      reports.push(report);
    }
    errors = outside;
  } catch (e) {
    outside.push(`harness: ${e.message}`);
  } finally {
    const cpu = await descendantCpuSeconds();
    await browser.close();
    server.close();
    console.log(JSON.stringify({
      tilesets: reports,
      errors: outside,
      requests,
      wallSeconds: (Date.now() - started) / 1000,
      browserCpuSeconds: cpu,
      chromiumFlags: CHROMIUM_FLAGS,
    }));
  }
}

await main();
