// The wasmesh dashboard: polls the admin API and draws the topology, breakers and plugins.
// Everything here is served by wasmesh itself; nothing is fetched from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;
// An admin API with a token: open the page as /dashboard#token=<token>.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const errors = [];
let previous = null; // { at, edges: Map(key -> {requests, errors}) }

function recordError(message) {
  errors.push(String(message));
  document.body.dataset.errors = String(errors.length);
}
window.addEventListener("error", (e) => recordError(e.message));
window.addEventListener("unhandledrejection", (e) => recordError(e.reason));
document.body.dataset.errors = "0";

async function getJson(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function healthClass(instance) {
  if (instance.ejected) return "ejected";
  return ["healthy", "degraded", "unhealthy", "unchecked"].includes(instance.health) ? instance.health : "unknown";
}

// Requests/s and error share of each edge since the previous poll.
function edgeRates(edges, now) {
  const current = new Map(edges.map((e) => [e.source + "→" + e.target, e]));
  const rates = new Map();
  for (const [key, e] of current) {
    const before = previous && previous.edges.get(key);
    const seconds = previous ? (now - previous.at) / 1000 : 0;
    const dReq = before ? e.requests - before.requests : 0;
    const dErr = before ? e.errors - before.errors : 0;
    rates.set(key, {
      rps: seconds > 0 ? dReq / seconds : 0,
      errorRate: dReq > 0 ? dErr / dReq : e.error_rate,
    });
  }
  previous = { at: now, edges: current };
  return rates;
}

function drawTopology(topology, rates) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  const width = svg.clientWidth || 1000;
  const row = 34;
  const routes = topology.routes;
  const services = topology.services;
  const instances = services.flatMap((s) => s.instances.map((i) => ({ service: s.name, ...i })));
  const rows = Math.max(routes.length, services.length, instances.length, 1);
  const height = rows * row + 30;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.height = height + "px";
  const col = { route: 10, service: width * 0.38, instance: width * 0.72 };
  const boxW = Math.min(200, width * 0.22);
  const y = (i) => 20 + i * row;
  const at = new Map();
  routes.forEach((r, i) => at.set("route:" + r.name, y(i)));
  services.forEach((s, i) => at.set("service:" + s.name, y(i)));

  const edgeLayer = el("svg:g");
  svg.append(edgeLayer);
  for (const e of topology.edges) {
    if (e.source_kind !== "route" || !at.has("route:" + e.source) || !at.has("service:" + e.target)) continue;
    const y1 = at.get("route:" + e.source) + 12, y2 = at.get("service:" + e.target) + 12;
    const x1 = col.route + boxW, x2 = col.service;
    const rate = rates.get(e.source + "→" + e.target) || { rps: 0, errorRate: 0 };
    const path = el("svg:path", {
      class: "edge" + (rate.errorRate > 0.05 ? " failing" : ""),
      d: `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`,
      "stroke-width": String(1 + Math.min(6, Math.log10(1 + rate.rps) * 2)),
    });
    edgeLayer.append(path);
    const label = `${rate.rps.toFixed(1)} req/s · ${(rate.errorRate * 100).toFixed(1)}% err`;
    edgeLayer.append(el("svg:text", { class: "edge-label", x: (x1 + x2) / 2 - 40, y: (y1 + y2) / 2 - 4 }, label));
  }
  const box = (x, yy, text, cls) => {
    const g = el("svg:g", { class: "node " + (cls || "") });
    g.append(el("svg:rect", { x, y: yy, width: boxW, height: 24, rx: 4 }));
    g.append(el("svg:text", { x: x + 8, y: yy + 16 }, text));
    svg.append(g);
  };
  routes.forEach((r) => box(col.route, at.get("route:" + r.name), "route " + r.name));
  services.forEach((s) => box(col.service, at.get("service:" + s.name), `${s.name} (${s.breaker})`, s.breaker));
  instances.forEach((inst, i) => {
    const yy = y(i);
    const sy = at.get("service:" + inst.service) + 12;
    edgeLayer.append(el("svg:path", { class: "edge", d: `M${col.service + boxW},${sy} L${col.instance},${yy + 12}` }));
    svg.append(el("svg:circle", { class: healthClass(inst), cx: col.instance + 8, cy: yy + 12, r: 7 }));
    const detail = inst.health_detail ? " — " + inst.health_detail : "";
    svg.append(el("svg:text", { x: col.instance + 22, y: yy + 16 }, `${inst.endpoint} ${healthClass(inst)}${detail}`));
  });
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) tr.append(c instanceof Node ? c : el("td", {}, String(c)));
    return tr;
  }));
}

async function refresh() {
  try {
    const [topology, config] = await Promise.all([getJson("/api/v1/mesh/v2/topology"), getJson("/config")]);
    const rates = edgeRates(topology.edges, Date.now());
    drawTopology(topology, rates);
    fillTable("services", topology.services.map((s) => [
      s.name,
      el("td", { class: "breaker-" + s.breaker }, s.breaker),
      s.instances.length,
      s.instances.filter((i) => i.routable).length,
      s.instances.reduce((n, i) => n + i.in_flight, 0),
    ]));
    fillTable("plugins", (config.plugins || []).map((p) => [p.name, p.kind, p.path, p.hash]));
    document.getElementById("version").textContent = "config v" + config.version;
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    const problem = document.getElementById("problem");
    problem.hidden = !config.last_error;
    problem.textContent = config.last_error ? "last reload refused: " + config.last_error : "";
    document.body.dataset.state = "ready";
  } catch (e) {
    document.getElementById("updated").textContent = "admin API unreachable: " + e.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
