// Offers: list, create, edit, pause, delete; the API's validation errors next to each field;
// a preview of the notification for a chosen store.
import { ApiError, del, el, get, put } from "./api.js";

const $ = (id) => document.getElementById(id);
const PLACEHOLDER = "{store_name}";
// one entry per offer field (contract §6); kind says how the input reads and writes it
const FIELDS = [
  { name: "title", label: "Title", kind: "text" },
  { name: "body", label: "Body", kind: "textarea", help: "{store_name} becomes the store's name" },
  { name: "store_ids", label: "Store ids", kind: "list", help: "comma separated" },
  { name: "store_tags", label: "Store tags", kind: "list", help: "comma separated; any matches" },
  { name: "tiers", label: "Tiers", kind: "list", optional: true, help: "comma separated; empty: all" },
  { name: "segments", label: "Segments", kind: "list", optional: true, help: "comma separated; empty: all" },
  { name: "starts_at", label: "Starts at", kind: "text", help: "RFC 3339, e.g. 2027-01-01T08:00:00Z" },
  { name: "ends_at", label: "Ends at", kind: "text", help: "RFC 3339, after the start" },
  { name: "hours", label: "Hours", kind: "json", optional: true,
    help: 'JSON, per weekday in the store\'s time, e.g. {"mon": ["09:00-21:00"]}; empty: always' },
  { name: "priority", label: "Priority", kind: "number", optional: true, help: "higher wins" },
  { name: "per_device_limit", label: "Per device limit", kind: "number", optional: true },
  { name: "per_device_cooldown_s", label: "Per device cooldown (s)", kind: "number", optional: true },
  { name: "budget", label: "Budget", kind: "number", optional: true, help: "total notifications; empty: none" },
  { name: "ttl_s", label: "Time to live (s)", kind: "number", optional: true },
  { name: "active", label: "Active", kind: "bool" },
];

let offers = [];
let editing = null; // the id of the offer in the form, null for a new one
let stores = null;
let wired = false;

export async function show() {
  if (!wired) wire();
  await loadOffers();
  await loadStores();
}

function wire() {
  wired = true;
  $("offer-fields").replaceChildren(idField(), ...FIELDS.map(field));
  $("offer-form").addEventListener("submit", save);
  $("offer-new").addEventListener("click", () => edit(null));
  $("preview-store").addEventListener("change", () => { preview(); servedPreview(); });
  $("offer-form").addEventListener("input", preview);
  edit(null);
}

function idField() {
  return field({ name: "id", label: "Offer id", kind: "text", help: "letters, digits and ._:-" });
}

function field({ name, label, kind, help }) {
  const id = `offer-${name}`;
  const described = [help ? `${id}-help` : null, `${id}-error`].filter(Boolean).join(" ");
  const input = kind === "textarea" || kind === "json"
    ? el("textarea", { id, name, rows: 3, "aria-describedby": described })
    : el("input", { id, name, type: kind === "bool" ? "checkbox" : "text",
      inputmode: kind === "number" ? "decimal" : null, "aria-describedby": described });
  return el("div", { class: `field field-${kind}` },
    el("label", { for: id }, label), input,
    help ? el("p", { id: `${id}-help`, class: "help" }, help) : null,
    el("p", { id: `${id}-error`, class: "error" }));
}

// the list

async function loadOffers() {
  offers = (await get("/v1/offers")).offers;
  $("offer-list").tBodies[0].replaceChildren(...offers.map(offerRow));
  $("offers-status").textContent = `${offers.length} offer(s).`;
}

function offerRow(offer) {
  const state = offer.active ? "active" : "paused";
  return el("tr", {},
    el("td", {}, offer.id), el("td", {}, offer.title),
    el("td", {}, offer.starts_at), el("td", {}, offer.ends_at), el("td", {}, state),
    el("td", {},
      el("button", { type: "button", onclick: () => edit(offer) }, `Edit ${offer.id}`),
      el("button", { type: "button", onclick: () => setActive(offer, !offer.active) },
        `${offer.active ? "Pause" : "Resume"} ${offer.id}`),
      el("button", { type: "button", onclick: () => remove(offer) }, `Delete ${offer.id}`)));
}

async function setActive(offer, active) {
  await report(() => put(`/v1/offers/${encodeURIComponent(offer.id)}`, { ...writable(offer), active }),
    `${offer.id} ${active ? "resumed" : "paused"}.`);
}

async function remove(offer) {
  if (!window.confirm(`Delete offer ${offer.id}?`)) return;
  await report(() => del(`/v1/offers/${encodeURIComponent(offer.id)}`), `${offer.id} deleted.`);
}

async function report(action, done) {
  try {
    await action();
    await loadOffers();
    $("offers-status").textContent = done;
  } catch (error) {
    $("offers-status").textContent = `Not done: ${error.message}`;
  }
}

function writable(offer) {
  const doc = {};
  for (const { name } of FIELDS) if (offer[name] !== null && offer[name] !== undefined) doc[name] = offer[name];
  return doc;
}

// the form

function edit(offer) {
  editing = offer ? offer.id : null;
  $("offer-form-title").textContent = offer ? `Edit offer ${offer.id}` : "New offer";
  $("offer-id").value = offer ? offer.id : "";
  $("offer-id").readOnly = Boolean(offer);
  for (const spec of FIELDS) write(spec, offer ? offer[spec.name] : undefined);
  if (!offer) $("offer-active").checked = true;
  clearErrors();
  preview();
  servedPreview();
}

function write({ name, kind }, value) {
  const input = $(`offer-${name}`);
  if (kind === "bool") input.checked = Boolean(value);
  else if (value === null || value === undefined) input.value = "";
  else if (kind === "list") input.value = value.join(", ");
  else if (kind === "json") input.value = JSON.stringify(value);
  else input.value = String(value);
}

function read({ name, kind, optional }) {
  const input = $(`offer-${name}`);
  if (kind === "bool") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return optional ? undefined : kind === "list" ? [] : "";
  if (kind === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
  if (kind === "json") return JSON.parse(raw); // a SyntaxError is shown next to the field
  if (kind === "number") return Number.isFinite(Number(raw)) ? Number(raw) : raw; // the API says why
  return raw;
}

function formDoc() {
  const doc = {};
  const problems = [];
  for (const spec of FIELDS) {
    try {
      const value = read(spec);
      if (value !== undefined) doc[spec.name] = value;
    } catch (error) {
      problems.push({ path: `$.${spec.name}`, detail: `not valid JSON: ${error.message}` });
    }
  }
  return { doc, problems };
}

async function save(event) {
  event.preventDefault();
  clearErrors();
  const id = $("offer-id").value.trim();
  const { doc, problems } = formDoc();
  if (!id) problems.push({ path: "$.id", detail: "give the offer an id" });
  if (problems.length) return showErrors(problems);
  try {
    await put(`/v1/offers/${encodeURIComponent(id)}`, doc);
  } catch (error) {
    if (error instanceof ApiError && Array.isArray(error.problem.errors)) return showErrors(error.problem.errors);
    $("offer-form-error").textContent = `Not saved: ${error.message}`;
    return;
  }
  await loadOffers();
  edit(offers.find((o) => o.id === id) || null);
  $("offers-status").textContent = `Offer ${id} saved.`;
}

function clearErrors() {
  $("offer-form-error").textContent = "";
  for (const node of $("offer-fields").querySelectorAll(".error")) node.textContent = "";
  for (const node of $("offer-fields").querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

// an error's path ($.ends_at, $.hours.mon[0]) names its field; the rest go above the button
function showErrors(errors) {
  const general = [];
  for (const error of errors) {
    const name = /^\$\.([A-Za-z_]+)/.exec(error.path || "");
    const input = name && $(`offer-${name[1]}`);
    if (!input) {
      general.push(error.detail);
      continue;
    }
    input.setAttribute("aria-invalid", "true");
    const box = $(`offer-${name[1]}-error`);
    box.textContent = [box.textContent, error.detail].filter(Boolean).join("; ");
  }
  $("offer-form-error").textContent = general.length
    ? general.join("; ") : `Not saved: ${errors.length} problem(s), shown next to the fields.`;
  const first = $("offer-fields").querySelector("[aria-invalid]");
  if (first) first.focus();
}

// preview: rendered here from the catalogue; the server's own when it has the endpoint

// the catalogue may have changed since the page was last shown
async function loadStores() {
  const chosen = $("preview-store").value;
  stores = (await get("/v1/stores")).features;
  $("preview-store").replaceChildren(...stores.slice(0, 1000).map((f) =>
    el("option", { value: f.id }, `${(f.properties && f.properties.name) || f.id} (${f.id})`)));
  if (stores.some((f) => f.id === chosen)) $("preview-store").value = chosen;
  preview();
}

function preview() {
  const store = chosenStore();
  const name = (store && store.properties && store.properties.name) || "";
  const render = (text) => text.split(PLACEHOLDER).join(name);
  $("preview").replaceChildren(el("p", { class: "preview-title" }, render($("offer-title").value)),
    el("p", {}, render($("offer-body").value)), el("p", { class: "help" }, "Rendered here from the form."));
}

function chosenStore() {
  return (stores || []).find((f) => f.id === $("preview-store").value);
}

// the saved offer as the service renders it, when it has the endpoint (404: not yet)
async function servedPreview() {
  const store = chosenStore();
  $("served-preview").replaceChildren();
  if (!editing || !store) return;
  const query = `store_id=${encodeURIComponent(store.id)}`;
  let served;
  try {
    served = await get(`/v1/offers/${encodeURIComponent(editing)}/preview?${query}`);
  } catch {
    return; // a preview is a help, never an error on the page
  }
  $("served-preview").replaceChildren(el("p", { class: "preview-title" }, served.title || ""),
    el("p", {}, served.body || ""), el("p", { class: "help" }, "As saved, rendered by the service."));
}
