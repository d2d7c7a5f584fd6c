"""Render a ``python -m bench all`` result file into the tables of docs/performance.md.

    python -m bench.render RESULTS.json [MORE.json ...] [--before BEFORE.json] [--doc docs/performance.md]

Replaces what lies between the ``<!-- bench:results -->`` and ``<!-- /bench:results -->`` markers, so
the prose around the tables stays as written. Several result files are merged (a benchmark re-run on
its own replaces the earlier file's, one run with other ``--table-flags`` is shown beside it; the
machine is the first file's, and a section from another run says which). With ``--before``, the headline
table shows both runs side by side (a re-run after a change against the committed baseline).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:results -->", "<!-- /bench:results -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def merge(docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One document from result files: the first file's machine; a later file's benchmark replaces
    an earlier one run on tables made the same way, and is kept beside one run on other tables (a
    benchmark with and without ``--table-flags``). Each result says which run it came from."""
    doc: dict[str, Any] = {**docs[0], "benchmarks": {}}
    for one in docs:
        flags, m = one.get("table_flags", ""), one["machine"]
        for name, result in one["benchmarks"].items():
            key = f"{name} {flags}" if flags else name
            doc["benchmarks"][key] = result | {"table_flags": flags, "run": f"{m['commit']}, {m['date']}"}
    return doc


def _variants(doc: dict[str, Any], name: str) -> list[tuple[str, dict[str, Any]]]:
    """(table flags, result) of each measured run of benchmark ``name``, plain tables first."""
    found = [(r["table_flags"], r) for key, r in _measured(doc).items() if key.split(" ", 1)[0] == name]
    return sorted(found, key=lambda variant: variant[0])


def _measured(doc: dict[str, Any]) -> dict[str, Any]:
    """The benchmarks of a result file that did not fail."""
    return {name: result for name, result in doc["benchmarks"].items() if "error" not in result}


def _cell(doc: dict[str, Any], processes: int, workers: int) -> dict[str, Any] | None:
    cells = _measured(doc).get("throughput", {}).get("cells", [])
    return next((c for c in cells if c["processes"] == processes and c["workers"] == workers), None)


def _latency(doc: dict[str, Any], interval: float) -> list[dict[str, Any]]:
    rows = _measured(doc).get("latency", {}).get("rows", [])
    return [row for row in rows if row["interval"] == interval]


def _idle(doc: dict[str, Any]) -> tuple[float, float] | None:
    """Idle calls/s per poller at the default interval: (at the most workers, most/fewest workers)."""
    rows = sorted(_latency(doc, 2.0), key=lambda row: row["workers"])
    if not rows:
        return None
    return rows[-1]["idle_requests_per_s"], rows[-1]["idle_requests_per_s"] / rows[0]["idle_requests_per_s"]


def headline(doc: dict[str, Any]) -> dict[str, str]:
    """Issue 12's targets as measured ratios and values; '-' where the run did not measure it."""
    b = _measured(doc)
    found: dict[str, str] = {}
    if "overhead" in b:
        o = b["overhead"]
        found["requests per no-op job (1 worker)"] = num(o["modes"]["inprocess"]["requests_per_job"])
        found["/bin/true job over bare Popen (ms)"] = num(o["process_start_over_popen_ms"])
        series = o["memory"]["series"]
        jobs_done = [point for point in series if point["mode"] == "inprocess"]
        found[f"RSS of a 4-worker poller after {jobs_done[-1]['jobs']:,} jobs (MB)"] = num(
            jobs_done[-1]["rss_mb"]
        )
        found["RSS growth from the first to the last round (MB)"] = num(
            jobs_done[-1]["rss_mb"] - jobs_done[0]["rss_mb"]
        )
        if "children_rss_mb" in series[-1]:  # measured since the child guard outlives a job
            found["RSS of that poller with its child guard, after /bin/true jobs (MB)"] = num(
                series[-1]["rss_mb"] + series[-1]["children_rss_mb"]
            )
    idle = _idle(doc)
    if idle:
        found["idle calls/s per poller at --interval 2 (most workers)"] = num(idle[0], 2)
        found["idle calls/s, most workers / one worker"] = ratio(idle[1])
        p50 = _latency(doc, 2.0)[0]
        found["pickup p50 / p95 at --interval 2, 1 worker (ms)"] = (
            f"{num(p50['p50_ms'], 0)} / {num(p50['p95_ms'], 0)}"
        )
    one_by_four = _cell(doc, 1, 4)
    if one_by_four:
        found["1 poller x 4 workers, in-process, vs plain loop"] = ratio(
            one_by_four["inprocess"]["x_ceiling"]
        )
        found["1 poller x 4 workers, /bin/true, vs plain loop"] = ratio(
            one_by_four["subprocess"]["x_ceiling"]
        )
    if "claim_cost" in b:
        rows = b["claim_cost"]["rows"]
        found["claim cost, largest backlog vs smallest"] = ratio(max(row["ours_vs_smallest"] for row in rows))
        found["original strategy vs ours at the largest backlog"] = ratio(
            max(rows, key=lambda row: row["pending"])["original_over_ours"]
        )
    for flags, result in _variants(doc, "priority"):
        pri, ret, tables = result["priority"], result["behind_retries"], f" (`{flags}`)" if flags else ""
        found[f"polls to claim priority 90 behind {pri['wall']:,}{tables}"] = _polls(pri)
        found[f"polls to claim a due job behind {ret['wall']:,} retries{tables}"] = _polls(ret)
    return found


def _polls(result: dict[str, Any]) -> str:
    if result["claimed"]:
        return f"{result['polls']:,.0f} ({num(result['seconds'], 2)} s)"
    return f"not in {result['seconds']:.0f} s ({result['polls']:,.0f} polls)"


TARGETS = [  # (start of a headline measure, issue 12's target)
    ("requests per no-op job", "<= 3"),
    ("/bin/true job over bare Popen", "< 10"),
    ("RSS of a 4-worker poller", "< 100"),
    ("RSS growth", "flat"),
    ("RSS of that poller with its child guard", "< 100"),
    ("idle calls/s per poller", "<= 1"),
    ("idle calls/s, most workers", "1.00x"),
    ("1 poller x 4 workers, in-process", ">= 0.8x"),
    ("1 poller x 4 workers, /bin/true", ">= 0.6x"),
    ("claim cost, largest backlog", "~1x"),
    ("polls to claim priority", "<= 2 (with the index)"),
    ("polls to claim a due job", "bounded"),
]


def _target(measure: str) -> str:
    return next((target for start, target in TARGETS if measure.startswith(start)), "")


def _leading_number(text: str) -> float | None:
    found = re.match(r"([\d,]+(?:\.\d+)?)x?(?:\s|$)", text)
    return float(found.group(1).replace(",", "")) if found else None


def _change(measure: str, then: str, now: str) -> str:
    """after / before, where both are numbers (a measure's own unit cancels out) and a ratio means
    something (not of a growth that should be zero)."""
    if measure.startswith("RSS growth"):
        return "-"
    a, b = _leading_number(then), _leading_number(now)
    return ratio(b / a) if a and b is not None else "-"


def render_headline(doc: dict[str, Any], before: dict[str, Any] | None) -> str:
    now = headline(doc)
    if before:
        then = headline(before)
        rows = [
            (key, then.get(key, "-"), value, _change(key, then.get(key, "-"), value), _target(key))
            for key, value in now.items()
        ]
        return table(["measure", "before", "after", "after / before", "target (issue 12)"], rows)
    return table(["measure", "measured", "target (issue 12)"], [(k, v, _target(k)) for k, v in now.items()])


def render_machine(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    load = "{:.1f} / {:.1f}".format(m["load_average_start"][0], m["load_average_end"][0])
    rows = [
        ("profile", doc["profile"]),
        ("date, commit", f"{m['date']}, {m['commit']}"),
        ("CPU", f"{m['cpu']}, nproc {m['nproc']}"),
        ("memory", f"{m['memory_gb']} GB"),
        ("Python", m["python"]),
        ("DynamoDB Local", m["dynamodb_local"]),
        ("load average (1 min) at start / end", load),
    ]
    if m.get("note"):
        rows.append(("note", m["note"]))
    if doc.get("table_flags"):
        rows.append(("tables made by", f"`delphi-jobs create-tables {doc['table_flags']}`"))
    return table(["", ""], rows)


def render_claim_cost(result: dict[str, Any]) -> str:
    rows = []
    for row in result["rows"]:
        ours, orig = row["ours"], row["original"]
        rows.append(
            (
                f"{row['pending']:,}" + (f" + {row['finished']:,} finished" if row["finished"] else ""),
                num(ours["ms_per_job"]),
                _ops(ours),
                ratio(row["ours_vs_smallest"]),
                num(orig["ms_per_job"]),
                _ops(orig),
                num(orig["items_read_per_poll"], 0),
                ratio(row["original_over_ours"]),
            )
        )
    return table(
        [
            "PENDING backlog",
            "ours: ms/job",
            "ours: requests/job",
            "ours vs smallest",
            "original: ms/job",
            "original: requests/job",
            "original: items read/poll",
            "original / ours",
        ],
        rows,
    )


def _ops(measured: dict[str, Any]) -> str:
    """'5.0 (3.0 Query, 2.0 UpdateItem)'."""
    parts = [f"{v:.1f} {k.removeprefix('op:')}" for k, v in measured.items() if k.startswith("op:")]
    return f"{measured['requests_per_job']:.1f} ({', '.join(parts)})"


def render_throughput(result: dict[str, Any]) -> str:
    ceiling = result["ceiling"]
    out = [
        table(
            ["plain boto3 loop", "jobs/s", "server cores"],
            [
                (
                    f"1 process x {t} thread{'s' if t != '1' else ''}",
                    num(c["jobs_per_s"]),
                    num(c["server_cores"], 2),
                )
                for t, c in ceiling.items()
            ],
        ),
        "",
    ]
    rows = []
    for cell in result["cells"]:
        row: list[Any] = [f"{cell['processes']} x {cell['workers']}", num(cell["inprocess"]["ceiling"])]
        for mode in ("inprocess", "subprocess"):
            m = cell[mode]
            row += [
                num(m["jobs_per_s"]),
                ratio(m["x_ceiling"]),
                num(m["requests_per_job"]),
                num(m["poller_cpu_ms_per_job"], 0),
                num(m["server_cores"], 2),
            ]
        rows.append(row)
    header = ["processes x workers", "plain loop jobs/s"]
    for mode in ("in-process", "/bin/true"):
        header += [f"{mode}: jobs/s", "x plain", "req/job", "poller CPU ms/job", "server cores"]
    out.append(table(header, rows))
    return "\n".join(out)


def render_latency(result: dict[str, Any]) -> str:
    rows = [
        (
            num(row["interval"]),
            row["workers"],
            num(row["p50_ms"], 0),
            num(row["p95_ms"], 0),
            num(row["p99_ms"], 0),
            num(row["idle_requests_per_s"], 2),
        )
        for row in result["rows"]
    ]
    return table(["--interval (s)", "--max-workers", "p50 ms", "p95 ms", "p99 ms", "idle calls/s"], rows)


def render_overhead(result: dict[str, Any]) -> str:
    modes = result["modes"]
    jobs = table(
        ["job", "ms from claim to outcome (median)", "requests/job"],
        [
            ("in-process no-op", num(modes["inprocess"]["job_ms"]), _ops(modes["inprocess"])),
            ("FULL_PIPELINE as /bin/true", num(modes["subprocess"]["job_ms"]), _ops(modes["subprocess"])),
            ("bare Popen(['/bin/true']).wait()", num(result["popen_ms"], 2), "-"),
        ],
    )
    memory = table(
        ["jobs done", "last round", "VmRSS MB", "processes below it (its child guard) MB"],
        [
            (f"{p['jobs']:,}", p["mode"], num(p["rss_mb"]), num(p.get("children_rss_mb")))
            for p in result["memory"]["series"]
        ],
    )
    return f"{jobs}\n\nResident memory of one {result['memory']['workers']}-worker poller:\n\n{memory}"


def render_priority(result: dict[str, Any]) -> str:
    names = {
        "empty": "alone in an empty table (baseline)",
        "priority": "priority 90 behind {wall:,} PENDING priority-50 jobs",
        "behind_retries": "due job behind {wall:,} backed-off retries",
    }
    rows = []
    for key, label in names.items():
        res = result[key]
        rows.append(
            (
                label.format(wall=res["wall"]),
                "yes" if res["claimed"] else f"no, stopped after {result['params']['cap_seconds']:.0f} s",
                num(res["seconds"], 2),
                f"{res['polls']:,.0f}",
                f"{res['claims_before']:,.0f}",
            )
        )
    return table(["job", "claimed", "seconds", "polls", "jobs claimed first"], rows)


SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "claim_cost": ("Claim cost against backlog (`claim_cost`)", render_claim_cost),
    "throughput": ("Throughput (`throughput`)", render_throughput),
    "latency": ("Pickup latency and idle cost (`latency`)", render_latency),
    "overhead": ("Per-job overhead and memory (`overhead`)", render_overhead),
    "priority": ("Priority and retries (`priority`)", render_priority),
}


def render(doc: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    parts = [
        "### Machine and run",
        "",
        render_machine(doc),
        "",
        "### Headline",
        "",
        render_headline(doc, before),
    ]
    first_run = f"{doc['machine']['commit']}, {doc['machine']['date']}"
    for name, (title, render_one) in SECTIONS.items():
        for key, result in sorted(doc["benchmarks"].items()):
            if key.split(" ", 1)[0] != name:
                continue
            flags = result.get("table_flags")
            heading = f"{title}, tables by `create-tables {flags}`" if flags else title
            body = f"Failed: {result['error']}" if "error" in result else render_one(result)
            footer = f"{result['seconds']:.0f} s, load average {result['load_average_start']:.1f} at start"
            if result.get("run", first_run) != first_run:
                footer += f"; run {result['run']}"
            parts += ["", f"### {heading}", "", body, "", f"({footer})"]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--before", type=Path, help="an earlier result file to compare the headline with")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    doc = merge([json.loads(path.read_text()) for path in args.results])
    before = merge([json.loads(args.before.read_text())]) if args.before else None
    text = args.doc.read_text()
    if BEGIN not in text or END not in text:
        print(f"{args.doc}: markers {BEGIN} and {END} not found", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    args.doc.write_text(f"{head}{BEGIN}\n{render(doc, before)}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
