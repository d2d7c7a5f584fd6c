// A narrative report as the Polis report shows it: each section's title, its paragraphs and their
// sentences, every clause followed by the ids of the comments it cites. The sections are those the
// Polis server would serve (its read path: the newest run), or an earlier run chosen from the list.

import { api } from "./api.js";
import { fill, h, jobHref, reportHref, table, when } from "./dom.js";

function clauseView(clause) {
  const citations = Array.isArray(clause?.citations) ? clause.citations : [];
  return [
    h("span", { class: "clause" }, String(clause?.text ?? "")),
    citations.length
      ? h("sup", { class: "citations", title: "cited comments" }, citations.map((c) => h("span", { class: "citation" }, String(c))))
      : null,
    " ",
  ];
}

function paragraphView(paragraph) {
  const sentences = Array.isArray(paragraph?.sentences) ? paragraph.sentences : [];
  return h(
    "div",
    { class: "paragraph" },
    paragraph?.title ? h("h3", {}, String(paragraph.title)) : null,
    h("p", {}, sentences.map((s) => (Array.isArray(s?.clauses) ? s.clauses : []).map(clauseView))),
  );
}

function sectionView(section) {
  const data = section.report_data;
  const structured = data && typeof data === "object" && Array.isArray(data.paragraphs);
  return h(
    "article",
    { class: "section panel", dataset: { section: section.section } },
    h("h2", {}, structured && data.title ? String(data.title) : section.section),
    h("p", { class: "muted section-meta" }, `${section.section} · ${section.model} · ${when(section.timestamp)}`),
    section.errors ? h("p", { class: "error" }, section.errors) : null,
    structured ? data.paragraphs.map(paragraphView) : h("pre", { class: "output" }, typeof data === "string" ? data : JSON.stringify(data, null, 2)),
  );
}

export function report(root, params) {
  const reportId = params.get("id");
  const run = params.get("run") || undefined;
  const head = h("div");
  const runs = h("section", { class: "panel", id: "runs" });
  const sections = h("div", { id: "sections" });
  fill(root, head, runs, sections);

  async function refresh() {
    const view = await api.report(reportId, run);
    fill(
      head,
      h("h1", {}, "Report ", h("span", { class: "mono" }, view.report_id)),
      h("p", { class: "muted" }, "Sections as the Polis server serves them. Run written by ", h("a", { href: jobHref(view.run) }, view.run)),
    );
    fill(
      runs,
      h("h2", {}, "Runs"),
      table(
        ["job", "written", "sections", ""],
        view.runs.map((r) =>
          h(
            "tr",
            { class: r.job_id === view.run ? "current" : "" },
            h("td", {}, h("a", { href: `${reportHref(view.report_id)}?run=${encodeURIComponent(r.job_id)}` }, r.job_id)),
            h("td", {}, when(r.written_at)),
            h("td", { class: "num" }, String(r.sections)),
            h("td", {}, r.served ? "served" : ""),
          ),
        ),
      ),
    );
    fill(sections, view.sections.map(sectionView));
  }

  return { refresh };
}
