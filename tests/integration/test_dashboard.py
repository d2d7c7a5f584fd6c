"""The dashboard in a real headless browser (Debian's chromium driven by Playwright): sign in with the
API token, read the overview, filter the job list, open a job and cancel it through the confirmation
dialog, watch its state change; a job whose fields hold markup shows it as text and runs nothing; the
job page renders progress and live output; the report page renders the sections as the Polis report
does. Screenshots of the main pages are taken on every run (``DELPHI_SCREENSHOTS=docs/screenshots``
keeps them, which is how the ones in the docs were made).

Skipped, with the reason, where chromium or Playwright is missing; ``DELPHI_REQUIRE_BROWSER=1`` (CI)
turns that skip into a failure."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import Activity, Progress, encode_json, format_timestamp, utcnow
from delphi_jobs.reports import NarrativeReportStore, ReportSection
from tests.api_server import ApiServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "ops:dashboard-secret-0123456789"
SECRET = TOKEN.split(":", 1)[1]
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def browser_unavailable() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = browser_unavailable()
    if reason:
        if os.environ.get("DELPHI_REQUIRE_BROWSER"):
            pytest.fail(f"browser test required but unavailable: {reason}")
        pytest.skip(f"browser test: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def seed(settings: Settings, server: ApiServer) -> dict[str, str]:
    """A queue worth looking at: jobs in most states, one running with progress and live output, one
    hostile, and a narrative report of three sections."""
    headers = {"Authorization": f"Bearer {SECRET}", "X-Delphi-Operator": "seed"}

    def create(**body: Any) -> str:
        answer = server.request("POST", "/jobs", json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["summary"]["job_id"])

    pending = create(zid=4127, priority=70)
    create(zid=4127, job_type="CREATE_NARRATIVE_BATCH", report_id="r4127demo")
    paused = create(zid=3310)
    assert server.request("POST", f"/jobs/{paused}/pause", headers=headers).status_code == 200

    client = make_client(settings)
    now = utcnow()
    running = records.server_full_pipeline(
        5120,
        status="PROCESSING",
        worker_id="poller-a1:4242",
        started_at=format_timestamp(now - timedelta(minutes=7)),
        lock_expires_at=format_timestamp(now + timedelta(minutes=5)),
        **Activity(
            Progress(2, 3, 66.0, "embedding 1,284 participants", "UMAP"),
            ("[PCA] 1284 participants x 60 comments", "[UMAP] n_neighbors=15", "[UMAP] epoch 120/200"),
        ).attributes(format_timestamp(now)),
    )
    failed = records.server_full_pipeline(
        2208,
        status="FAILED",
        completed_at=format_timestamp(now - timedelta(minutes=2)),
        error_message="pipeline exited with status 1: conversation 2208 has no votes",
        job_results=encode_json({"result_type": "FAILURE", "error": "no votes"}),
    )
    hostile = records.hand_made(
        "hostile-<script>window.__pwned = 3</script>",
        "<b>99</b>",
        job_type="FULL_PIPELINE",
        error_message=HOSTILE,
        logs=encode_json(
            {"entries": [{"timestamp": format_timestamp(now), "level": "ERROR", "message": HOSTILE}]}
        ),
        history=json.dumps(
            [{"at": format_timestamp(now), "from": None, "to": "PENDING", "by": HOSTILE, "reason": HOSTILE}]
        ),
    )
    for record in (running, failed, hostile):
        records.put_raw(client, settings.jobs_table, record)

    reports = NarrativeReportStore(client, settings.reports_table)
    stamp = format_timestamp(now)
    sections = {
        "batch_re_global_groups": (
            "How the opinion groups differ",
            [
                ("Group A wants more bike lanes", [12, 31]),
                ("while group B asks for parking to stay as it is", [7]),
            ],
        ),
        "batch_re_global_group_informed_consensus": (
            "Where the groups agree",
            [("Nearly everyone supports safer crossings near schools", [3, 18, 44])],
        ),
        "layer0_0": ("Transit", [(HOSTILE, [5])]),
    }
    for name, (title, clauses) in sections.items():
        data = {
            "id": name,
            "title": title,
            "paragraphs": [
                {
                    "id": "p1",
                    "title": "What participants said",
                    "sentences": [{"clauses": [{"text": text, "citations": ids} for text, ids in clauses]}],
                }
            ],
        }
        reports.put(
            ReportSection(
                "r4127demo",
                name,
                "claude-sonnet-4-5",
                stamp,
                json.dumps(data),
                "batch_report_r4127demo_1",
                "msgbatch_01",
            )
        )
    return {
        "pending": pending,
        "paused": paused,
        "running": str(running["job_id"]),
        "failed": str(failed["job_id"]),
        "hostile": str(hostile["job_id"]),
    }


def test_dashboard_in_a_browser(browser: Any, moto_settings: Settings, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    with ApiServer(moto_settings, token=TOKEN) as server:
        jobs = seed(moto_settings, server)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Sign in: the first API call answers 401, the dashboard asks who is acting and for the token.
        page.goto(server.url + "/")
        login = page.locator("dialog#login")
        expect(login).to_be_visible()
        login.locator("input[name=operator]").fill("alice")
        login.locator("input[name=token]").fill(SECRET)
        login.locator("#login-save").click()

        # Overview: counts per status, the oldest pending job, throughput.
        expect(page.locator('#overview-cards [data-status="PENDING"] .card-value')).to_have_text("3")
        expect(page.locator('#overview-cards [data-status="PROCESSING"] .card-value')).to_have_text("1")
        expect(page.locator("#oldest-pending")).not_to_have_text("-")
        expect(page.locator("#throughput")).to_contain_text("/min")
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        # The job list, filtered by status through the form.
        page.click("a[data-nav=jobs]")
        page.select_option("#job-filters select[name=status]", "PENDING")
        page.click("#job-filters button[type=submit]")
        expect(page).to_have_url(f"{server.url}/#/jobs?status=PENDING")
        rows = page.locator("#job-list tbody tr")
        expect(rows).to_have_count(3)
        expect(page.locator("#job-list .badge")).to_have_text(["PENDING"] * 3)
        expect(page.locator(f'#job-list tr[data-job-id="{jobs["pending"]}"]')).to_be_visible()

        # Hostile fields are text: the markup is shown, nothing of it runs or becomes an element.
        expect(page.locator("#job-list")).to_contain_text(HOSTILE)
        page.locator(f'#job-list tr[data-job-id="{jobs["hostile"]}"] a.job-link').click()
        expect(page.locator("#job-error")).to_have_text(HOSTILE)
        expect(page.locator("#logs")).to_contain_text(HOSTILE)
        expect(page.locator("#history")).to_contain_text(HOSTILE)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#view script, #view img").count() == 0

        # Open a pending job from the filtered list and cancel it, confirming in the dialog.
        page.go_back()
        expect(rows).to_have_count(3)
        page.locator(f'#job-list tr[data-job-id="{jobs["pending"]}"] a.job-link').click()
        expect(page.locator("#job-id")).to_have_text(jobs["pending"])
        expect(page.locator(".job-state .badge").first).to_have_text("PENDING")
        page.click("#job-actions button[data-action=cancel]")
        confirm = page.locator("dialog#confirm")
        expect(confirm).to_be_visible()
        confirm.locator("input[name=reason]").fill("duplicate of another run")
        confirm.locator("#confirm-ok").click()
        expect(page.locator(".job-state .badge").first).to_have_text("CANCELLED")
        expect(page.locator("#history li").first).to_contain_text("by alice via ops")
        expect(page.locator("#job-actions")).to_contain_text("nothing can be done")
        # The server holds the same state: the action went through the API, named after the operator.
        detail = server.request(
            "GET", f"/jobs/{jobs['pending']}", headers={"Authorization": f"Bearer {SECRET}"}
        )
        assert detail.json()["summary"]["status"] == "CANCELLED"
        assert detail.json()["history"][-1]["by"] == "alice via ops"

        # A running job: progress bar, live output, and its live refresh picks up a change made elsewhere.
        page.goto(f"{server.url}/#/jobs/{jobs['running']}")
        expect(page.locator("#progress-bar")).to_have_attribute("value", "66")
        expect(page.locator("#progress-message")).to_have_text("embedding 1,284 participants")
        expect(page.locator("#progress")).to_contain_text("step 2 of 3: UMAP")
        expect(page.locator("#live-output")).to_contain_text("[UMAP] epoch 120/200")
        page.screenshot(path=str(shots / "job.png"), full_page=True)
        page.goto(f"{server.url}/#/jobs/{jobs['paused']}")
        expect(page.locator(".job-state .badge").first).to_have_text("PAUSED")
        resumed = server.request(
            "POST", f"/jobs/{jobs['paused']}/resume", headers={"Authorization": f"Bearer {SECRET}"}
        )
        assert resumed.status_code == 200
        expect(page.locator(".job-state .badge").first).to_have_text("PENDING", timeout=10_000)

        # The narrative report as the Polis report shows it.
        page.fill("#report-lookup input[name=report_id]", "r4127demo")
        page.click("#report-lookup button")
        sections = page.locator("article.section")
        expect(sections).to_have_count(3)
        expect(page.locator('article[data-section="batch_re_global_groups"] h2')).to_have_text(
            "How the opinion groups differ"
        )
        expect(page.locator('article[data-section="batch_re_global_groups"] .citation')).to_have_text(
            ["12", "31", "7"]
        )
        expect(page.locator('article[data-section="layer0_0"] .clause')).to_have_text(HOSTILE)
        page.screenshot(path=str(shots / "report.png"), full_page=True)

        assert page.evaluate("window.__pwned") is None
        assert dialogs == [] and errors == []
        page.close()
    assert SECRET not in server.output

    keep = os.environ.get("DELPHI_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, Path(keep) / shot.name)
