// The job list: filters in the address (so a filtered list can be bookmarked or shared), pages by the
// API's opaque cursor. A refresh reloads the page being looked at, not the first one.

import { api } from "./api.js";
import { age, fill, h, jobHref, listHref, statusBadge, table } from "./dom.js";

const STATUSES = ["PENDING", "PROCESSING", "AWAITING_RECHECK", "PAUSED", "COMPLETED", "FAILED", "CANCELLED"];
const TYPES = ["FULL_PIPELINE", "CREATE_NARRATIVE_BATCH", "AWAITING_NARRATIVE_BATCH"];
const FILTERS = ["status", "job_type", "conversation", "created_after", "created_before", "oldest_first"];

function select(name, label, options, current) {
  return h(
    "label",
    {},
    label,
    h(
      "select",
      { name },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === current }, o)),
    ),
  );
}

export function jobs(root, params, ui) {
  const filters = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) || ""]));
  const form = h(
    "form",
    { class: "filters", id: "job-filters" },
    select("status", "Status", STATUSES, filters.status),
    select("job_type", "Type", TYPES, filters.job_type),
    h("label", {}, "Conversation (zid)", h("input", { name: "conversation", value: filters.conversation, inputMode: "numeric", size: 8 })),
    h("label", {}, "Created after (UTC)", h("input", { name: "created_after", type: "datetime-local", value: filters.created_after })),
    h("label", {}, "Created before (UTC)", h("input", { name: "created_before", type: "datetime-local", value: filters.created_before })),
    h("label", { class: "check" }, h("input", { name: "oldest_first", type: "checkbox", checked: filters.oldest_first === "true" }), "oldest first"),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "#/jobs", class: "button secondary" }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const chosen = Object.fromEntries(FILTERS.map((f) => [f, String(data.get(f) || "").trim()]));
    chosen.oldest_first = data.get("oldest_first") ? "true" : "";
    window.location.hash = listHref(chosen);
  });

  const results = h("section", { class: "panel", id: "job-list" });
  const pager = h("div", { class: "pager" });
  fill(root, h("h1", {}, "Jobs"), form, results, pager);

  const cursors = [null]; // the cursor of each page seen; the last is the page shown
  async function refresh() {
    const query = { ...filters, limit: 25, cursor: cursors[cursors.length - 1] };
    const page = await api.jobs(query);
    fill(
      results,
      page.jobs.length === 0
        ? h("p", { class: "muted", id: "no-jobs" }, "No job matches.")
        : table(
            ["job", "type", "status", "zid", "report", "prio", "age", "worker", "note"],
            page.jobs.map((j) =>
              h(
                "tr",
                { dataset: { jobId: j.job_id } },
                h("td", {}, h("a", { href: jobHref(j.job_id), class: "job-link" }, j.job_id)),
                h("td", {}, j.job_type),
                h("td", {}, statusBadge(j.status)),
                h("td", {}, j.conversation_id ?? "-"),
                h("td", {}, j.report_id ?? "-"),
                h("td", { class: "num" }, String(j.priority)),
                h("td", {}, age(j.age_seconds)),
                h("td", {}, j.worker_id ?? "-"),
                h("td", { class: "note" }, (j.error_message || "").slice(0, 120)),
              ),
            ),
            { class: "jobs" },
          ),
      h("p", { class: "muted" }, `read through ${page.index}`),
    );
    fill(
      pager,
      cursors.length > 1 &&
        h("button", { type: "button", class: "secondary", onclick: () => { cursors.pop(); ui.guard(refresh); } }, "Previous page"),
      page.next_cursor &&
        h("button", { type: "button", onclick: () => { cursors.push(page.next_cursor); ui.guard(refresh); } }, "Next page"),
    );
  }

  return { refresh };
}
