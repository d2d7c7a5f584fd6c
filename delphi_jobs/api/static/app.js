// The dashboard: a hash router over four views, a refresh every few seconds while the tab is visible,
// confirmation before every action, and one place that shows the API's errors (message and hint).

import { ApiError, identity } from "./api.js";
import { fill, h } from "./dom.js";
import { job } from "./job.js";
import { jobs } from "./jobs.js";
import { overview } from "./overview.js";
import { report } from "./report.js";

const REFRESH_MS = 3000;
const view = document.getElementById("view");
const banner = document.getElementById("banner");
const refreshState = document.getElementById("refresh-state");
const confirmDialog = document.getElementById("confirm");
const loginDialog = document.getElementById("login");

let current = null; // {refresh} of the view shown
let busy = false;

function showBanner(kind, message, hint, source = "action") {
  banner.className = `banner ${kind}`;
  banner.dataset.source = source;
  fill(banner, h("strong", {}, message), hint ? h("span", {}, ` — ${hint}`) : null);
  banner.hidden = false;
}

const ui = {
  notice(message) {
    showBanner("info", message);
  },
  /** Runs an async step; an API error shows in the banner (a 401 asks for the token). An error of a
   * refresh is cleared by the next refresh that works; an action's stays until the next page. */
  async guard(step, source = "action") {
    try {
      await step();
      return true;
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.status === 401) openLogin();
      const allowed = err.allowed ? ` (allowed now: ${err.allowed.join(", ") || "nothing"})` : "";
      showBanner("error", `${err.message}${allowed}`, err.hint, source);
      return false;
    }
  },
  /** Asks for confirmation; resolves to the reason typed (maybe "") or null when backed out. */
  confirm(title, text, danger) {
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").className = danger ? "danger" : "";
    const reason = confirmDialog.querySelector("input[name=reason]");
    reason.value = "";
    confirmDialog.returnValue = "";
    confirmDialog.showModal();
    return new Promise((resolve) => {
      confirmDialog.addEventListener(
        "close",
        () => resolve(confirmDialog.returnValue === "confirm" ? reason.value.trim() : null),
        { once: true },
      );
    });
  },
};

function openLogin() {
  if (loginDialog.open) return;
  loginDialog.querySelector("input[name=operator]").value = identity.operator;
  loginDialog.querySelector("input[name=token]").value = "";
  loginDialog.showModal();
}

loginDialog.addEventListener("close", () => {
  if (loginDialog.returnValue !== "save") return;
  const operator = loginDialog.querySelector("input[name=operator]").value.trim();
  const token = loginDialog.querySelector("input[name=token]").value.trim();
  identity.save(operator, token);
  showIdentity();
  refresh();
});

function showIdentity() {
  const button = document.getElementById("identity");
  button.textContent = identity.operator ? `acting as ${identity.operator}` : "who are you?";
}

/** "#/jobs/ID?x=1" -> {name, params}; path segments are percent-decoded, the query is parsed. */
function route() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?", 2);
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts.length > 1) {
    params.set("id", parts.slice(1).join("/"));
    return { name: "job", params };
  }
  if (parts[0] === "jobs") return { name: "jobs", params };
  if (parts[0] === "reports" && parts.length > 1) {
    params.set("id", parts.slice(1).join("/"));
    return { name: "report", params };
  }
  return { name: "overview", params };
}

const VIEWS = { overview, jobs, job, report };

function navigate() {
  const { name, params } = route();
  banner.hidden = true;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === name || (link.dataset.nav === "jobs" && name === "job"));
  }
  current = VIEWS[name](view, params, ui);
  view.dataset.view = name;
  refresh();
}

async function refresh() {
  if (!current || busy) return;
  busy = true;
  const shown = current;
  try {
    const ok = await ui.guard(() => shown.refresh(), "refresh");
    if (ok && shown === current) {
      refreshState.textContent = `updated ${new Date().toLocaleTimeString()}`;
      if (banner.dataset.source === "refresh") banner.hidden = true;
    }
  } finally {
    busy = false;
  }
}

document.getElementById("report-lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = new FormData(event.target).get("report_id").toString().trim();
  if (id) window.location.hash = `#/reports/${encodeURIComponent(id)}`;
});
document.getElementById("identity").addEventListener("click", openLogin);
window.addEventListener("hashchange", navigate);
setInterval(() => {
  const dialogOpen = confirmDialog.open || loginDialog.open;
  if (document.visibilityState === "visible" && !dialogOpen) refresh();
}, REFRESH_MS);

showIdentity();
navigate();
