import { api, displayName, el, fillLabelSelect, initToken, loadTaxonomy, percent, setStatus } from "./common.js";

const $ = (id) => document.getElementById(id);
let current = null; // the last classification shown

function renderResult(result) {
  current = result;
  const top = result.probabilities[0];
  $("result-empty").hidden = true;
  $("result-body").hidden = false;
  $("result-body").dataset.predictionId = result.prediction_id || "";

  const badge = $("result-badge");
  if (result.abstained) {
    $("result-label").textContent = "Uncertain";
    $("result-native").textContent = `best guess: ${top.display_name}`;
    const set = result.prediction_set || [];
    badge.textContent =
      set.length > 1
        ? `${percent(result.confidence)} confident; could be: ${set.slice(0, 4).map((p) => p.display_name).join(", ")}`
        : `${percent(result.confidence)} confident, below the threshold`;
    badge.className = "badge uncertain";
  } else {
    // in a hierarchical taxonomy the answer may be a parent of the top leaf: show it and its path
    const answer = result.label === top.label ? top.display_name : displayName(result.label);
    const path = (result.path || []).length > 1 ? result.path.map(displayName).join(" › ") : "";
    $("result-label").textContent = answer;
    $("result-native").textContent = path || (answer !== result.label ? result.label : "");
    badge.textContent = `${percent(result.confidence)} confident`;
    badge.className = "badge";
  }
  const notes = [`model ${result.model_version}`];
  if (!result.index_used) notes.push("index unavailable: the model answered alone");
  if (!result.stored) notes.push("not stored: it cannot be corrected");
  $("result-meta").textContent = notes.join(" · ");

  renderExtraction(result.extraction);

  $("probabilities").replaceChildren(
    ...result.probabilities.map((p) => {
      const fill = el("div", { class: "fill" });
      fill.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`;
      return el(
        "li",
        { title: p.label },
        el("span", { class: "bar-label" }, p.display_name),
        el("div", { class: "track", "aria-hidden": "true" }, fill),
        el("span", { class: "value" }, percent(p.probability)),
      );
    }),
  );

  $("neighbours").replaceChildren(
    ...result.neighbours.map((n) =>
      el(
        "tr",
        {},
        el("td", {}, el("code", {}, n.vacancy_id)),
        el("td", { title: n.label }, displayName(n.label)),
        el("td", { class: "num" }, n.score.toFixed(2)),
      ),
    ),
  );
  $("neighbours-empty").hidden = result.neighbours.length > 0;

  const form = $("correct-form");
  form.hidden = !result.stored;
  $("correct-label").value = top.label;
  $("correct-button").disabled = false;
  setStatus($("correct-status"), "");
}

// With an extractor configured (JOBCLASS_EXTRACTOR_MODEL) the answer explains what was embedded: the job
// title, skills and tasks found in the ad. Person names are found only to be scrubbed and are not shown.
const ROLES = [
  ["title", "Job title"],
  ["skills", "Skills"],
  ["tasks", "Tasks"],
];

function renderExtraction(extraction) {
  const box = $("extraction");
  const items = [];
  for (const [role, name] of extraction ? ROLES : []) {
    const terms = [...new Set(extraction.spans.filter((s) => s.role === role).map((s) => s.text))];
    if (terms.length) {
      items.push(el("dt", {}, name), el("dd", {}, ...terms.map((t) => el("span", { class: "term" }, t))));
    }
  }
  $("extraction-terms").replaceChildren(...items);
  $("extraction-embedded").textContent = extraction ? extraction.embedded : "";
  box.hidden = items.length === 0;
}

async function classify(event) {
  event.preventDefault();
  const text = $("text").value;
  const error = $("classify-error");
  error.textContent = "";
  if (!text.trim()) {
    error.textContent = "Paste a vacancy text first.";
    $("text").focus();
    return;
  }
  const button = $("classify-button");
  button.disabled = true;
  $("result").setAttribute("aria-busy", "true");
  setStatus($("classify-status"), "Classifying…");
  try {
    const result = await api("/v1/classify", { method: "POST", body: { text, top_k: 5, explain: true } });
    renderResult(result);
    const what = result.abstained ? "uncertain" : result.probabilities[0].display_name;
    setStatus($("classify-status"), `Classified: ${what} (${percent(result.confidence)}).`, "ok");
  } catch (err) {
    setStatus($("classify-status"), "");
    error.textContent = err.message;
  } finally {
    button.disabled = false;
    $("result").setAttribute("aria-busy", "false");
  }
}

async function correct(event) {
  event.preventDefault();
  if (!current || !current.prediction_id) return;
  const label = $("correct-label").value;
  const status = $("correct-status");
  const button = $("correct-button");
  button.disabled = true;
  setStatus(status, "Saving…");
  try {
    const saved = await api("/v1/feedback", {
      method: "POST",
      auth: true,
      body: { prediction_id: current.prediction_id, label },
    });
    const where = saved.indexed ? "it is in the index now" : "the next reindex adds it";
    setStatus(status, `Saved: ${displayName(saved.label)} (${where}).`, "ok");
  } catch (err) {
    setStatus(status, err.message, "error");
  } finally {
    button.disabled = false;
  }
}

async function start() {
  initToken();
  $("classify-form").addEventListener("submit", classify);
  $("correct-form").addEventListener("submit", correct);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("classify-form").requestSubmit();
  });
  try {
    const { labels } = await loadTaxonomy();
    fillLabelSelect($("correct-label"), labels, null);
  } catch (err) {
    $("classify-error").textContent = `Could not load the categories: ${err.message}`;
  }
  document.body.dataset.ready = "true";
}

start();
