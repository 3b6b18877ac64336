// Stores: the catalogue on the map, search, upload (dry run, report, apply), version history.
/* global L */
import { el, get, missing, put, table } from "./api.js";

const $ = (id) => document.getElementById(id);
const LIST_MAX = 200; // rows in the list; the map shows every match
const FENCE = { className: "store", color: "#1f4e9c", weight: 2, fillOpacity: 0.15 };
const MARGIN = { className: "margin", color: "#5b7fc0", weight: 1, dashArray: "4 4", fill: false };
const PROBLEM = { className: "problem", color: "#c00000", weight: 3, fillOpacity: 0.3 };
const MOVE_CODES = ["catalogue-moved", "swapped-coordinates"];
const SHRINK_CODES = ["catalogue-shrink", "shrink"];
const UPLOAD_TYPES = { gpkg: "application/geopackage+sqlite3", zip: "application/zip" };

let map = null;
let storesLayer = null;
let problemsLayer = null;
let catalogue = { version: null, features: [] };

export async function show(config) {
  if (!map) makeMap(config);
  map.invalidateSize();
  await loadCatalogue();
  await loadVersions();
}

function makeMap(config) {
  map = L.map("map", { zoomSnap: 0.25 }).setView([60.17, 24.94], 13);
  if (config.tile_url) {
    L.tileLayer(config.tile_url, { attribution: escaped(config.tile_attribution), maxZoom: 19 })
      .addTo(map);
  }
  storesLayer = L.featureGroup().addTo(map);
  problemsLayer = L.featureGroup().addTo(map);
  $("store-query").addEventListener("input", drawCatalogue);
  $("store-search").addEventListener("submit", (event) => event.preventDefault());
  $("upload-form").addEventListener("submit", checkUpload);
}

function escaped(text) {
  const span = document.createElement("span");
  span.textContent = text || "";
  return span.innerHTML;
}

// the catalogue

async function loadCatalogue() {
  catalogue = await get("/v1/stores");
  drawCatalogue();
}

function drawCatalogue() {
  const query = $("store-query").value.trim().toLowerCase();
  const shown = catalogue.features.filter((f) => matches(f, query));
  storesLayer.clearLayers();
  for (const feature of shown) for (const shape of shapesOf(feature, FENCE)) storesLayer.addLayer(shape);
  const bounds = storesLayer.getBounds();
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [10, 10], maxZoom: 18, animate: false });
  $("store-list").tBodies[0].replaceChildren(...shown.slice(0, LIST_MAX).map(storeRow));
  $("store-list-more").textContent = shown.length > LIST_MAX
    ? `The list shows ${LIST_MAX} of ${shown.length} matches; the map shows them all.` : "";
  $("stores-summary").textContent = `Catalogue version ${catalogue.version ?? "none"}: `
    + `${catalogue.features.length} stores${query ? `, ${shown.length} match` : ""}.`;
}

function matches(feature, query) {
  if (!query) return true;
  const p = feature.properties || {};
  const words = [String(feature.id ?? ""), p.name || "", ...(p.tags || [])];
  return words.some((w) => String(w).toLowerCase().includes(query));
}

function storeRow(feature) {
  const p = feature.properties || {};
  const shape = feature.geometry.type === "Point" ? `circle ${p.radius_m} m` : "polygon";
  const margin = p.margin_m ? `, margin ${p.margin_m} m` : "";
  return el("tr", {}, el("td", {}, String(feature.id)), el("td", {}, p.name || ""),
    el("td", {}, (p.tags || []).join(", ")), el("td", {}, shape + margin));
}

// A fence and, lighter and dashed, its margin: a circle grown by it, or a polygon's
// bounding box grown by it (an outer bound of the grown polygon, cheap to draw).
function shapesOf(feature, style) {
  const p = feature.properties || {};
  const margin = Number(p.margin_m) || 0;
  const label = el("span", {}, `${feature.id ?? ""} ${p.name || ""}`);
  if (feature.geometry.type === "Point") {
    const [lng, lat] = feature.geometry.coordinates;
    const fence = L.circle([lat, lng], { ...style, radius: Number(p.radius_m) || 1 });
    const grown = margin && L.circle([lat, lng], { ...MARGIN, radius: fence.getRadius() + margin });
    return [fence.bindTooltip(label), grown].filter(Boolean);
  }
  const fence = L.geoJSON(feature, { style: () => style }).bindTooltip(label);
  return [fence, margin && L.rectangle(grownBounds(fence.getBounds(), margin), MARGIN)]
    .filter(Boolean);
}

function grownBounds(bounds, metres) {
  const dLat = metres / 111_320;
  const dLng = dLat / Math.cos((bounds.getCenter().lat * Math.PI) / 180);
  return L.latLngBounds(
    [bounds.getSouth() - dLat, bounds.getWest() - dLng],
    [bounds.getNorth() + dLat, bounds.getEast() + dLng]);
}

// upload: dry run first, then apply

async function checkUpload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) return;
  const upload = { file, type: contentTypeOf(file.name), json: await jsonOf(file) };
  problemsLayer.clearLayers();
  $("upload-report").replaceChildren(el("p", { role: "status" }, "Checking…"));
  try {
    report(upload, await put("/v1/stores?dry_run=true", file, upload.type));
  } catch (error) {
    if (error.status === 422 && Array.isArray(error.problem.errors)) await invalid(upload, error.problem);
    else failed(error);
  }
}

function contentTypeOf(name) {
  return UPLOAD_TYPES[name.split(".").pop().toLowerCase()] || "application/geo+json";
}

async function jsonOf(file) {
  if (contentTypeOf(file.name) !== "application/geo+json") return null;
  try {
    return JSON.parse(await file.text());
  } catch {
    return null; // the server says what is wrong with it
  }
}

function failed(error) {
  $("upload-report").replaceChildren(el("p", { class: "error", role: "alert" },
    `Not applied: ${error.message}`));
}

// 422: every invalid feature listed and drawn in red; the rest checked for warnings too
async function invalid(upload, problem) {
  const rows = problem.errors.map((e) => [String(e.feature ?? ""), e.id ?? "", e.code, e.detail]);
  for (const index of new Set(problem.errors.map((e) => e.feature))) flag(featureAt(upload, index));
  $("upload-report").replaceChildren(
    el("p", { class: "error", role: "alert" },
      `${problem.errors.length} problem(s): nothing was applied. Fix the file and check it again.`),
    table("Invalid features", ["Feature", "Id", "Code", "Detail"], rows));
  const rest = withoutInvalid(upload, problem.errors);
  if (!rest) return;
  try {
    const partial = await put("/v1/stores?dry_run=true", rest, "application/geo+json");
    $("upload-report").append(warningList(upload, partial.warnings || [],
      "Warnings in the rest of the upload"));
  } catch {
    // the invalid features are what matters; the rest is checked again after the fix
  }
}

function featureAt(upload, index) {
  return upload.json && Array.isArray(upload.json.features) ? upload.json.features[index] : null;
}

function withoutInvalid(upload, errors) {
  if (!upload.json || !Array.isArray(upload.json.features)) return null;
  const bad = new Set(errors.map((e) => e.feature));
  const features = upload.json.features.filter((_, i) => !bad.has(i));
  return features.length ? { ...upload.json, features } : null;
}

function flag(feature) {
  if (!feature || typeof feature !== "object") return;
  try {
    problemsLayer.addLayer(L.geoJSON(feature, { style: () => PROBLEM }));
  } catch {
    const at = firstPosition(feature.geometry && feature.geometry.coordinates);
    if (at) problemsLayer.addLayer(L.circleMarker([at[1], at[0]], { ...PROBLEM, radius: 8 }));
  }
}

function firstPosition(coords) {
  if (!Array.isArray(coords)) return null;
  if (coords.length >= 2 && coords.slice(0, 2).every(Number.isFinite)) {
    return Math.abs(coords[0]) <= 180 && Math.abs(coords[1]) <= 90 ? coords : null;
  }
  for (const c of coords) {
    const found = firstPosition(c);
    if (found) return found;
  }
  return null;
}

// 200: the summary, the warnings (with the confirmations they need) and "Apply"
function report(upload, result) {
  const confirmations = needed(result.warnings || []);
  const apply = el("button", { type: "button", disabled: confirmations.length > 0 }, "Apply");
  const boxes = confirmations.map(confirmation);
  const ticked = () => { apply.disabled = boxes.some((b) => !b.input.checked); };
  for (const b of boxes) b.input.addEventListener("change", ticked);
  apply.addEventListener("click", () => applyUpload(upload, boxes));
  $("upload-report").replaceChildren(
    el("p", { role: "status" }, summary(result)),
    warningList(upload, result.warnings || [], "Warnings"),
    ...boxes.map((b) => b.label),
    apply);
}

function summary(result) {
  const count = (ids) => (ids ? ids.length : 0);
  const shrink = result.shrink ? `; removes ${result.shrink.removed} of ${result.shrink.of}` : "";
  return `Dry run: ${result.stores} stores, ${count(result.added)} added, `
    + `${count(result.changed)} changed, ${count(result.removed)} removed${shrink}.`;
}

function warningList(upload, warnings, caption) {
  if (!warnings.length) return el("p", {}, `${caption}: none.`);
  const moved = warnings.filter((w) => MOVE_CODES.includes(w.code));
  for (const id of new Set(moved.flatMap((w) => (w.id ? [w.id] : w.ids || [])))) flag(byId(upload, id));
  return el("div", {}, el("h4", {}, caption),
    el("ul", { class: "warnings" }, warnings.map((w) => el("li", { "data-code": w.code },
      el("strong", {}, w.code), `: ${w.detail || describe(w)}`))));
}

function describe(warning) {
  if (warning.code === "overlap") return `${warning.ids.join(" and ")} overlap (${warning.area_m2} m²)`;
  return [warning.id, ...(warning.ids || [])].filter(Boolean).join(", ");
}

function byId(upload, id) {
  const features = (upload.json && upload.json.features) || [];
  return features.find((f) => f && (f.id === id || (f.properties && f.properties.id === id)));
}

function needed(warnings) {
  const codes = new Set(warnings.map((w) => w.code));
  const wanted = [];
  if (MOVE_CODES.some((c) => codes.has(c))) {
    wanted.push({ flag: "confirm_move", text: "I checked the positions: apply the move anyway" });
  }
  if (SHRINK_CODES.some((c) => codes.has(c))) {
    wanted.push({ flag: "allow_shrink", text: "Remove that many stores" });
  }
  return wanted;
}

function confirmation({ flag: name, text }) {
  const input = el("input", { type: "checkbox", id: `confirm-${name}`, name });
  return { name, input, label: el("label", { class: "confirm" }, input, ` ${text}`) };
}

async function applyUpload(upload, boxes) {
  const flags = boxes.filter((b) => b.input.checked).map((b) => `&${b.name}=true`).join("");
  try {
    const result = await put(`/v1/stores?dry_run=false${flags}`, upload.file, upload.type);
    problemsLayer.clearLayers();
    $("upload-report").replaceChildren(el("p", { role: "status" },
      `Applied: catalogue version ${result.version}, ${result.stores} stores.`));
    await loadCatalogue();
    await loadVersions();
  } catch (error) {
    failed(error);
  }
}

// version history (who-less): the backend may not have it yet

async function loadVersions() {
  let versions;
  try {
    versions = await get("/v1/stores/versions");
  } catch (error) {
    if (!missing(error)) throw error;
    $("versions").replaceChildren(el("p", {}, "Version history is not available from this server yet."));
    return;
  }
  const rows = (Array.isArray(versions) ? versions : versions.versions || []).map((v) =>
    [String(v.version), v.at, String(v.stores), String(v.added), String(v.changed), String(v.removed)]);
  $("versions").replaceChildren(table("Catalogue versions",
    ["Version", "At", "Stores", "Added", "Changed", "Removed"], rows));
}
