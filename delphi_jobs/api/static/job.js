// One job: its state, progress, live output, logs, history, results and linked jobs, and the actions
// its status allows (the server's allowed_actions, so the buttons follow the state table).

import { api } from "./api.js";
import { age, fields, fill, h, jobHref, json, reportHref, statusBadge, table, when } from "./dom.js";

const ACTIONS = {
  cancel: { label: "Cancel", danger: true, text: "A PENDING or PAUSED job is cancelled at once; a running one is asked to stop." },
  pause: { label: "Pause", danger: false, text: "A waiting job is paused at once; a running one pauses at its next checkpoint." },
  resume: { label: "Resume", danger: false, text: "The job goes back to the status it was paused from." },
  retry: { label: "Retry", danger: false, text: "The FAILED job runs again with fresh attempts." },
  reset: { label: "Reset to FAILED", danger: true, text: "Only a job whose owner's lease expired; it becomes FAILED." },
};

function progressView(progress) {
  if (!progress || Object.keys(progress).length === 0) return null;
  // {current_step, total_steps, percent, message, step, is_paused}, as the poller writes it.
  const percent = progress.percent === undefined || progress.percent === null ? NaN : Number(progress.percent);
  // total_steps is 0 until a job knows its steps: then there is no "step x of y" to show.
  const counted = Number(progress.total_steps) > 0 ? `step ${progress.current_step ?? "?"} of ${progress.total_steps}` : null;
  const step = [counted, progress.step ? String(progress.step) : null].filter(Boolean).join(": ") || null;
  return h(
    "section",
    { class: "panel", id: "progress" },
    h("h2", {}, "Progress"),
    h(
      "div",
      { class: "progress-line" },
      Number.isFinite(percent)
        ? h("progress", { max: 100, value: Math.max(0, Math.min(100, percent)), id: "progress-bar" }, `${percent}%`)
        : h("progress", { id: "progress-bar" }),
      h("span", {}, Number.isFinite(percent) ? `${Math.round(percent)}%` : ""),
      step && h("span", { class: "muted" }, step),
      progress.is_paused ? h("span", { class: "badge status-paused" }, "paused") : null,
    ),
    progress.message ? h("p", { id: "progress-message" }, String(progress.message)) : null,
  );
}

export function job(root, params, ui) {
  const jobId = params.get("id");
  const head = h("div", { class: "job-head" });
  const actions = h("div", { class: "actions", id: "job-actions" });
  const body = h("div", { id: "job-body" });
  fill(root, h("p", {}, h("a", { href: "#/jobs" }, "← all jobs")), head, actions, body);

  async function act(action) {
    const spec = ACTIONS[action];
    const reason = await ui.confirm(`${spec.label} job ${jobId}?`, spec.text, spec.danger);
    if (reason === null) return;
    const { status, data } = await api.act(action, jobId, reason || undefined);
    ui.notice(`${data.message}${status === 202 ? " (the job's owner carries it out)" : ""}`);
    await refresh();
  }

  async function refresh() {
    const d = await api.job(jobId);
    const s = d.summary;
    const attrs = d.attributes;
    fill(
      head,
      h("h1", {}, h("span", { class: "mono", id: "job-id" }, s.job_id)),
      h("div", { class: "job-state" }, statusBadge(s.status), h("span", {}, s.job_type), attrs.cancel_requested ? h("span", { class: "badge status-cancelled" }, "cancel requested") : null, attrs.pause_requested ? h("span", { class: "badge status-paused" }, "pause requested") : null),
    );
    fill(
      actions,
      d.allowed_actions
        .filter((a) => ACTIONS[a])
        .map((a) =>
          h(
            "button",
            { type: "button", class: ACTIONS[a].danger ? "danger" : "", dataset: { action: a }, onclick: () => ui.guard(() => act(a)) },
            ACTIONS[a].label,
          ),
        ),
      d.allowed_actions.length === 0 ? h("span", { class: "muted" }, "finished: nothing can be done to it") : null,
    );
    const lease = d.lease_expired === null ? "" : d.lease_expired ? " (expired: a poller will reclaim it)" : " (alive)";
    const links = d.links.map((l) =>
      h("li", {}, `${l.relation}: `, h("a", { href: jobHref(l.job_id) }, l.job_id), l.job ? [" ", statusBadge(l.job.status)] : h("span", { class: "error" }, " missing")),
    );
    fill(
      body,
      d.problems.length ? h("section", { class: "panel error" }, h("h2", {}, "Problems"), h("ul", {}, d.problems.map((p) => h("li", {}, p)))) : null,
      h(
        "section",
        { class: "panel" },
        fields([
          ["conversation", s.conversation_id],
          ["report", s.report_id ? h("a", { href: reportHref(s.report_id) }, s.report_id) : "-"],
          ["priority", String(s.priority)],
          ["created", `${when(s.created_at)} (${age(s.age_seconds)} ago)`],
          ["started", when(s.started_at)],
          ["updated", when(s.updated_at)],
          ["worker", s.worker_id],
          ["lease until", when(s.lock_expires_at) + lease],
          ["attempts", `retry ${s.retry_count} of ${s.max_retries}`],
          ["error", s.error_message ? h("span", { class: "error", id: "job-error" }, s.error_message) : "-"],
          ["created by", attrs.created_by === undefined ? "-" : String(attrs.created_by)],
        ]),
      ),
      links.length ? h("section", { class: "panel", id: "links" }, h("h2", {}, "Linked jobs"), h("ul", {}, links)) : null,
      progressView(d.progress),
      d.live_output.length
        ? h("section", { class: "panel" }, h("h2", {}, "Live output"), h("pre", { class: "output", id: "live-output" }, d.live_output.join("\n")))
        : null,
      h(
        "section",
        { class: "panel", id: "history" },
        h("h2", {}, "History"),
        d.history.length === 0
          ? h("p", { class: "muted" }, "no recorded transitions")
          : h(
              "ol",
              { class: "timeline" },
              [...d.history].reverse().map((e) =>
                h(
                  "li",
                  {},
                  h("time", {}, when(e.at)),
                  " ",
                  e.source ? [statusBadge(e.source), " → "] : null,
                  statusBadge(e.to),
                  " by ",
                  h("strong", {}, e.by),
                  e.reason ? h("span", { class: "muted" }, ` — ${e.reason}`) : null,
                ),
              ),
            ),
      ),
      h(
        "section",
        { class: "panel", id: "logs" },
        h("h2", {}, `Logs (last ${d.logs.length})`),
        d.logs.length === 0
          ? h("p", { class: "muted" }, "no log entries")
          : table(
              ["time", "level", "message"],
              d.logs.map((l) => h("tr", { class: `log-${String(l.level).toLowerCase()}` }, h("td", { class: "nowrap" }, when(l.timestamp)), h("td", {}, l.level), h("td", { class: "message" }, l.message))),
              { class: "logs" },
            ),
      ),
      Object.keys(d.results).length ? h("section", { class: "panel", id: "results" }, h("h2", {}, "Results"), json(d.results)) : null,
      h("section", { class: "panel" }, h("details", {}, h("summary", {}, "All attributes"), json(d.attributes))),
    );
  }

  return { refresh };
}
