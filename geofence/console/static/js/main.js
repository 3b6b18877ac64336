// Login, log out and the three pages, chosen by the URL's #fragment.
import { ApiError, call, key, whenUnauthorized } from "./api.js";
import * as offers from "./offers.js";
import * as results from "./results.js";
import * as stores from "./stores.js";

const PAGES = { stores, offers, results };
const $ = (id) => document.getElementById(id);
let config = { tile_url: "", tile_attribution: "" };

function showLogin(message = "") {
  for (const page of document.querySelectorAll(".page")) page.hidden = true;
  $("nav").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("admin-key").focus();
}

async function logIn(event) {
  event.preventDefault();
  const candidate = $("admin-key").value.trim();
  try {
    await call("GET", "/v1/offers", { adminKey: candidate });
  } catch (error) {
    const refused = error instanceof ApiError && [401, 403].includes(error.status);
    $("login-error").textContent = refused
      ? "This key is not an admin key." : `The service did not answer: ${error.message}`;
    return;
  }
  key.set(candidate);
  $("admin-key").value = "";
  $("login").hidden = true;
  route();
}

function logOut() {
  key.clear();
  history.replaceState(null, "", location.pathname);
  showLogin("Logged out.");
}

async function route() {
  if (!key.get()) return showLogin();
  $("nav").hidden = false;
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "stores";
  for (const other of Object.keys(PAGES)) $(other).hidden = other !== name;
  for (const link of $("nav").querySelectorAll("a")) {
    if (link.hash === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("page-error").textContent = "";
  try {
    await PAGES[name].show(config);
  } catch (error) {
    // a 401 is already back at the login form; anything else is said on the page
    if (!(error instanceof ApiError && error.status === 401)) {
      $("page-error").textContent = `The service did not answer: ${error.message}`;
    }
  }
}

async function start() {
  try {
    config = await (await fetch("config.json")).json();
  } catch {
    // the map still draws the stores without tiles
  }
  whenUnauthorized(() => { key.clear(); showLogin("Your key was refused: log in again."); });
  $("login-form").addEventListener("submit", logIn);
  $("logout").addEventListener("click", logOut);
  window.addEventListener("hashchange", route);
  route();
}

start();
