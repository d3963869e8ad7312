// Shared by the pages: the API token, JSON calls with clear errors, the taxonomy, small formatters.
const TOKEN_KEY = "jobclass.token";

export function initToken() {
  const input = document.getElementById("token");
  if (!input) return;
  input.value = sessionStorage.getItem(TOKEN_KEY) || "";
  input.addEventListener("input", () => {
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  });
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

export async function api(path, { method = "GET", body, auth = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (auth && token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError("The server cannot be reached. Is `jobclass serve` running?", 0);
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401) {
      throw new ApiError("The server needs an API token: open “API token” at the top and enter it.", 401);
    }
    const detail = data && typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`;
    throw new ApiError(detail, response.status);
  }
  return data;
}

let taxonomy = null;

export async function loadTaxonomy() {
  if (!taxonomy) {
    const data = await api("/v1/taxonomy");
    taxonomy = { labels: data.labels, names: new Map(data.labels.map((t) => [t.label, t.display_name])) };
  }
  return taxonomy;
}

export function displayName(label) {
  return (taxonomy && taxonomy.names.get(label)) || label;
}

export function fillLabelSelect(select, labels, selected) {
  // only leaves label a vacancy (a hierarchical taxonomy's parents are answers, not corrections)
  select.replaceChildren(
    ...labels.filter((t) => t.leaf !== false).map((t) => {
      const option = new Option(t.display_name, t.label, false, t.label === selected);
      if (t.display_name !== t.label) option.title = t.label;
      return option;
    }),
  );
}

export function percent(p) {
  const value = p * 100;
  if (value > 0 && value < 1) return "<1%";
  return `${Math.round(value)}%`;
}

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

export function setStatus(node, text, kind = "") {
  node.textContent = text;
  node.className = kind ? `status ${kind}` : "status";
}
