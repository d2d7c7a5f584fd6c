// Queue overview: jobs per status and type, the oldest pending job's age, recent throughput, and the
// newest jobs. /stats is computed by the server at most every few seconds whoever asks.

import { api } from "./api.js";
import { age, fill, h, jobHref, listHref, statusBadge, table, when } from "./dom.js";

export function overview(root) {
  const cards = h("section", { class: "cards", id: "overview-cards" });
  const matrix = h("section", { class: "panel" });
  const recent = h("section", { class: "panel" });
  fill(root, h("h1", {}, "Queue overview"), cards, matrix, recent);

  async function refresh() {
    const [stats, newest] = await Promise.all([api.stats(), api.jobs({ limit: 10 })]);
    const count = (status) => stats.statuses.find((s) => s.status === status)?.count ?? 0;
    const finished = Object.values(stats.finished_in_window).reduce((a, b) => a + b, 0);
    fill(
      cards,
      stats.statuses.map((s) =>
        h(
          "a",
          { class: `card status-${s.status.toLowerCase()}`, href: listHref({ status: s.status }), dataset: { status: s.status } },
          h("span", { class: "card-value" }, `${s.sampled ? "~" : ""}${s.count}`),
          h("span", { class: "card-label" }, s.status),
          h("span", { class: "card-note" }, s.scope),
        ),
      ),
      h(
        "div",
        { class: "card wide" },
        h("span", { class: "card-value", id: "oldest-pending" }, age(stats.oldest_pending_age_seconds)),
        h("span", { class: "card-label" }, "oldest pending"),
        stats.oldest_pending_job_id
          ? h("a", { class: "card-note", href: jobHref(stats.oldest_pending_job_id) }, stats.oldest_pending_job_id)
          : h("span", { class: "card-note" }, count("PENDING") ? "" : "nothing pending"),
      ),
      h(
        "div",
        { class: "card wide" },
        h("span", { class: "card-value", id: "throughput" }, `${stats.throughput_per_minute.toFixed(2)}/min`),
        h("span", { class: "card-label" }, "throughput"),
        h("span", { class: "card-note" }, `${finished} finished in the last ${stats.window_minutes} min`),
      ),
    );
    const types = [...new Set(stats.statuses.flatMap((s) => Object.keys(s.by_type)))].sort();
    fill(
      matrix,
      h("h2", {}, "Jobs per status and type"),
      types.length === 0
        ? h("p", { class: "muted" }, "no jobs")
        : table(
            ["status", ...types, "all"],
            stats.statuses
              .filter((s) => s.count > 0)
              .map((s) =>
                h(
                  "tr",
                  {},
                  h("td", {}, statusBadge(s.status)),
                  types.map((t) =>
                    h("td", { class: "num" }, h("a", { href: listHref({ status: s.status, job_type: t }) }, String(s.by_type[t] ?? 0))),
                  ),
                  h("td", { class: "num" }, String(s.count)),
                ),
              ),
          ),
      h("p", { class: "muted" }, `at ${when(stats.at)} UTC`),
    );
    fill(
      recent,
      h("h2", {}, "Newest jobs"),
      table(
        ["job", "type", "status", "zid", "age"],
        newest.jobs.map((j) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: jobHref(j.job_id) }, j.job_id)),
            h("td", {}, j.job_type),
            h("td", {}, statusBadge(j.status)),
            h("td", {}, j.conversation_id ?? "-"),
            h("td", {}, age(j.age_seconds)),
          ),
        ),
      ),
    );
  }

  return { refresh };
}
