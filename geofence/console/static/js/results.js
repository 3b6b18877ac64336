// Results: the funnel over time (uPlot) from GET /v1/stats?bucket=, and the lift over the
// control group.
/* global uPlot */
import { el, get, table } from "./api.js";

const $ = (id) => document.getElementById(id);
const STAGES = ["entries", "notifications", "delivered", "opened", "redeemed"];
const SERIES = [...STAGES, "control", "conversions"];
const COLOURS = ["#1f4e9c", "#b35c00", "#2e7d32", "#6a1b9a", "#c62828", "#546e7a", "#00838f"];
const DAY_MS = 86_400_000;
let wired = false;
let chart = null;

export async function show() {
  if (!wired) wire();
  await load();
}

function wire() {
  wired = true;
  const today = new Date();
  $("results-to").value = isoDate(today);
  $("results-from").value = isoDate(new Date(today.getTime() - 6 * DAY_MS));
  $("results-form").addEventListener("submit", (event) => { event.preventDefault(); load(); });
  $("results-by").addEventListener("change", () => $("results-key").replaceChildren(allOption()));
}

const isoDate = (date) => date.toISOString().slice(0, 10);
const allOption = () => el("option", { value: "" }, "all");

// the range is whole UTC days, both ends included
function query() {
  const to = new Date(`${$("results-to").value}T00:00:00Z`).getTime() + DAY_MS;
  const params = new URLSearchParams({
    from: `${$("results-from").value}T00:00:00Z`,
    to: new Date(to).toISOString().replace(".000Z", "Z"),
    by: $("results-by").value,
    bucket: $("results-bucket").value,
  });
  return `/v1/stats?${params}`;
}

async function load() {
  let stats;
  try {
    stats = await get(query());
  } catch (error) {
    $("results-status").textContent = `No results: ${error.message}`;
    return;
  }
  overTime(stats);
}

function keyOptions(keys) {
  const chosen = $("results-key").value;
  $("results-key").replaceChildren(allOption(), ...keys.map((k) => el("option", { value: k }, k)));
  $("results-key").value = keys.includes(chosen) ? chosen : "";
}

// the funnel over time: one series (or their sum) on the chart, the same numbers in a table
function overTime(stats) {
  keyOptions(stats.series.map((s) => s.key));
  const points = pointsOf(stats.series, $("results-key").value);
  $("results-status").textContent = `${points.length} ${stats.bucket} bucket(s) from ${stats.from} to ${stats.to}.`;
  plot(points);
  $("results-tables").replaceChildren(
    table(`Funnel by ${stats.bucket}`, ["Bucket", ...SERIES],
      points.map((p) => [p.at, ...SERIES.map((s) => String(p[s] ?? 0))])),
    liftTable(stats.lift || []));
}

function pointsOf(series, key) {
  const byTime = new Map();
  for (const s of series.filter((s) => !key || s.key === key)) {
    for (const point of s.points) {
      const sum = byTime.get(point.at) || { at: point.at };
      for (const name of SERIES) sum[name] = (sum[name] || 0) + (point[name] || 0);
      byTime.set(point.at, sum);
    }
  }
  return [...byTime.values()].sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

function plot(points) {
  if (chart) chart.destroy();
  const data = [points.map((p) => Date.parse(p.at) / 1000), ...SERIES.map((s) => points.map((p) => p[s]))];
  const options = {
    title: "Funnel over time",
    width: Math.min($("chart").clientWidth || 800, 1000),
    height: 320,
    series: [{}, ...SERIES.map((label, i) => ({ label, stroke: COLOURS[i], width: 2 }))],
  };
  chart = new uPlot(options, data, $("chart"));
}

// lift: treated vs control conversion rates, with the interval and the plain note
function liftTable(lift) {
  if (!lift.length) return el("p", {}, "No lift to show: no offer has a control group in this range.");
  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`);
  const rows = lift.map((l) => [
    l.offer_id,
    `${l.treated.conversions} / ${l.treated.entries} (${pct(l.treated.rate)})`,
    `${l.control.conversions} / ${l.control.entries} (${pct(l.control.rate)})`,
    pct(l.lift),
    l.interval ? `${pct(l.interval.low)} to ${pct(l.interval.high)} (${l.interval.method})` : "–",
    l.enough_data ? (l.note || "") : (l.note || "Too small to tell."),
  ]);
  return table("Lift over the control group (95 % interval)",
    ["Offer", "Treated", "Control", "Lift", "Interval", "Note"], rows);
}
