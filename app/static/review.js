import { api, el, fillLabelSelect, initToken, loadTaxonomy, percent, setStatus } from "./common.js";

const $ = (id) => document.getElementById(id);
const EXCERPT = 320;
let labels = [];

// The form speaks percent; the API and the address speak probabilities (0–1).
function readFilters() {
  const raw = $("max-confidence").value.trim();
  return {
    max_confidence: raw === "" ? "" : String(Math.min(100, Math.max(0, Number(raw))) / 100),
    limit: $("limit").value,
    order: $("order").value,
    unreviewed: $("unreviewed").checked,
  };
}

// The filters live in the address too, so a queue view can be bookmarked or shared.
function applyUrl() {
  const params = new URLSearchParams(location.search);
  if (params.has("max_confidence")) {
    const value = Number(params.get("max_confidence"));
    $("max-confidence").value = Number.isFinite(value) ? String(Math.round(value * 1000) / 10) : "";
  }
  if (params.has("limit")) $("limit").value = params.get("limit");
  if (params.has("order")) $("order").value = params.get("order");
  if (params.has("unreviewed")) $("unreviewed").checked = params.get("unreviewed") === "true";
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

function statusBadge(item) {
  return item.reviewed_label
    ? el("span", { class: "badge done" }, `Reviewed: ${labelName(item.reviewed_label)}`)
    : el("span", { class: "badge todo" }, "Needs review");
}

function labelName(label) {
  const found = labels.find((t) => t.label === label);
  return found ? found.display_name : label;
}

// What makes the item informative: the labels of its prediction set, the top-1 − top-2 margin.
function uncertaintyNote(item) {
  const parts = [];
  if (item.set_size && item.set_size > 1) {
    parts.push(`could be: ${(item.prediction_set || []).slice(0, 4).map(labelName).join(", ")}`);
  } else if (item.set_size === 0) {
    parts.push("no label reaches its threshold");
  }
  if (item.margin !== null && item.margin !== undefined) parts.push(`margin ${percent(item.margin)}`);
  return parts.length ? el("span", { class: "when" }, parts.join(" · ")) : null;
}

function renderItem(item) {
  const selectId = `label-${item.id}`;
  const select = el("select", { id: selectId, name: "label" });
  fillLabelSelect(select, labels, item.reviewed_label || item.label);
  const status = el("span", { class: "status", "aria-live": "polite" });
  const badge = el("span", {}, statusBadge(item));
  const button = el("button", { type: "submit" }, item.reviewed_label ? "Update label" : "Save label");
  // Retract the latest correction that stands: the index and the next retrain forget it.
  const retract = el("button", { type: "button", class: "secondary retract" }, "Retract");
  retract.hidden = !item.reviewed_feedback_id;
  retract.addEventListener("click", async () => {
    retract.disabled = true;
    setStatus(status, "Retracting…");
    try {
      await api(`/v1/feedback/${item.reviewed_feedback_id}`, { method: "DELETE", auth: true });
      await load(); // an earlier correction may stand again: the queue shows it as the server has it
    } catch (err) {
      setStatus(status, err.message, "error");
      retract.disabled = false;
    }
  });

  const form = el(
    "form",
    { class: "label-form", "aria-label": `Label prediction ${item.id}` },
    el("label", { htmlFor: selectId }, "Category"),
    select,
    el("div", { class: "row" }, button, retract, status),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    setStatus(status, "Saving…");
    try {
      const saved = await api("/v1/feedback", {
        method: "POST",
        auth: true,
        body: { prediction_id: item.id, label: select.value },
      });
      item.reviewed_label = saved.label;
      item.reviewed_feedback_id = saved.id;
      retract.hidden = false;
      badge.replaceChildren(statusBadge(item));
      button.textContent = "Update label";
      setStatus(status, "Saved.", "ok");
    } catch (err) {
      setStatus(status, err.message, "error");
    } finally {
      button.disabled = false;
    }
  });

  const short = item.text.length > EXCERPT;
  const text = el("p", { class: "text" }, short ? `${item.text.slice(0, EXCERPT).trimEnd()}…` : item.text);
  const full = short
    ? el("details", {}, el("summary", {}, "Show the full text"), el("p", { class: "text" }, item.text))
    : null;
  const predicted = el(
    "span",
    { class: "predicted" },
    el("span", { class: "what" }, item.abstained ? "Uncertain, best guess" : "Predicted"),
    item.display_name,
  );

  return el(
    "li",
    { class: "panel item", dataset: { predictionId: item.id } },
    el(
      "div",
      {},
      el(
        "div",
        { class: "head" },
        predicted,
        el("span", { class: item.abstained ? "badge uncertain" : "badge" }, `${percent(item.confidence)} confident`),
        uncertaintyNote(item),
      ),
      el("div", { class: "head" }, badge, el("span", { class: "when" }, formatTime(item.created_at))),
      text,
      full,
    ),
    form,
  );
}

async function load(event) {
  if (event) event.preventDefault();
  const filters = readFilters();
  const params = new URLSearchParams({
    limit: filters.limit,
    order: filters.order,
    unreviewed: String(filters.unreviewed),
  });
  if (filters.max_confidence !== "") params.set("max_confidence", filters.max_confidence);
  history.replaceState(null, "", `?${params}`);
  $("queue-error").textContent = "";
  $("refresh").disabled = true;
  try {
    const data = await api(`/v1/predictions?${params}`, { auth: true });
    $("queue").replaceChildren(...data.predictions.map(renderItem));
    const n = data.predictions.length;
    const bound = filters.max_confidence === "" ? "" : ` at or below ${percent(Number(filters.max_confidence))} confidence`;
    $("queue-summary").textContent =
      n === 0
        ? `Nothing to review${bound}.`
        : `${n} prediction${n === 1 ? "" : "s"}${bound}${filters.unreviewed ? ", unreviewed only" : ""}.`;
  } catch (err) {
    $("queue").replaceChildren();
    $("queue-summary").textContent = "";
    $("queue-error").textContent = err.message;
  } finally {
    $("refresh").disabled = false;
  }
}

async function start() {
  initToken();
  applyUrl();
  $("filters").addEventListener("submit", load);
  try {
    labels = (await loadTaxonomy()).labels;
  } catch (err) {
    $("queue-error").textContent = `Could not load the categories: ${err.message}`;
    return;
  }
  await load();
  document.body.dataset.ready = "true";
}

start();
