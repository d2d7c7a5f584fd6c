// Building the page from job records, which are hostile input: every value becomes a text node or an
// attribute set through the DOM, never HTML. There is no innerHTML anywhere in the dashboard.

/** h("a", {href: "#/"}, "text", child...) -> an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && name !== "list" && name !== "form") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A job page's address; ids are percent-encoded, so any id stays inside the fragment. */
export function jobHref(jobId) {
  return `#/jobs/${encodeURIComponent(jobId)}`;
}

/** The job list with these filters, e.g. listHref({status: "FAILED"}). */
export function listHref(filters) {
  const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
  return query ? `#/jobs?${query}` : "#/jobs";
}

export function reportHref(reportId) {
  return `#/reports/${encodeURIComponent(reportId)}`;
}

export function statusBadge(status) {
  const known = ["PENDING", "PROCESSING", "AWAITING_RECHECK", "COMPLETED", "FAILED", "CANCELLED", "PAUSED"];
  const name = known.includes(status) ? status.toLowerCase() : "unknown";
  return h("span", { class: `badge status-${name}` }, status || "(none)");
}

/** Seconds as an operator reads them: 45s, 12m, 3h05m, 2d04h (as the CLI prints them). */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const whole = Math.max(0, Math.floor(seconds));
  if (whole < 60) return `${whole}s`;
  if (whole < 3600) return `${Math.floor(whole / 60)}m`;
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 86400) return `${Math.floor(whole / 3600)}h${pad(Math.floor((whole % 3600) / 60))}m`;
  return `${Math.floor(whole / 86400)}d${pad(Math.floor((whole % 86400) / 3600))}h`;
}

/** An ISO time as "2026-11-29 15:08:38" (UTC, as stored), or "-". */
export function when(iso) {
  if (!iso) return "-";
  return String(iso).replace("T", " ").replace(/\.\d+Z?$|Z$/, "");
}

/** A definition grid of [label, value] rows; values may be nodes. */
export function fields(rows) {
  return h("dl", { class: "fields" }, rows.map(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "-")]));
}

export function table(columns, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows),
  );
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}
