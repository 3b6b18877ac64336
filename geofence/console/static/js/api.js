// The admin API: the key (sessionStorage only), fetch with it, problems as errors.
// No cookie is ever set: a request carries the key only when this code adds it.

const KEY = "geofence.adminKey";

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

// a 401 anywhere sends the user back to the login form
let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

export async function call(method, path, { body, contentType, adminKey } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = adminKey ?? key.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = contentType || "application/json";
  const payload = body === undefined || typeof body !== "object" || body instanceof Blob
    ? body : JSON.stringify(body);
  const response = await fetch(path, { method, headers, body: payload, credentials: "omit" });
  const data = await parsed(response);
  if (response.ok) return data;
  if (response.status === 401 && adminKey === undefined) onUnauthorized();
  throw new ApiError(response.status, data);
}

async function parsed(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text.slice(0, 200) };
  }
}

// an endpoint this server does not have yet (the console is ahead of the backend)
export function missing(error) {
  return error instanceof ApiError && [404, 405, 501].includes(error.status);
}

export const get = (path) => call("GET", path);
export const put = (path, body, contentType) => call("PUT", path, { body, contentType });
export const del = (path) => call("DELETE", path);

// small DOM helpers shared by the pages
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

export function table(caption, columns, rows) {
  return el("table", {},
    el("caption", {}, caption),
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((cell) => el("td", {}, cell))))));
}
