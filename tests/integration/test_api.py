"""The HTTP API over HTTP, against a running ``delphi-jobs serve`` process and a real DynamoDB-protocol
server (both tiers): every endpoint, every error code in its envelope, pagination by cursor, the
security gate (token, Host, body size, refusing an unsafe bind) and a token that never reaches the log."""

from __future__ import annotations

import base64
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
import requests
from boto3.dynamodb.types import Binary

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records as records
from delphi_jobs.devtools.tcp_proxy import TcpProxy
from delphi_jobs.dynamo import make_client
from delphi_jobs.model import Activity, Progress, format_timestamp, utcnow
from delphi_jobs.ops.jobs import MAX_CONFIG_DEPTH
from delphi_jobs.reports import NarrativeReportStore, ReportSection
from delphi_jobs.tables import ensure_tables, table_specs
from tests.api_server import ApiServer
from tests.conftest import fresh_settings
from tests.pollers import SCRIPT, command_env, run_command

SECRET = "s3cret-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}
AS_ALICE = AUTH | {"X-Delphi-Operator": "alice"}


def error_of(answer: requests.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope of an error answer, checked: status, code, and the four keys always present."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code, error
    assert {"code", "message", "hint", "retryable"} <= set(error)
    return error


def nested(depth: int) -> dict[str, Any]:
    """A config ``depth`` objects deep."""
    config: dict[str, Any] = {}
    for _ in range(depth - 1):
        config = {"a": config}
    return config


@pytest.fixture
def server(settings: Settings) -> Any:
    with ApiServer(settings, token=f"ops:{SECRET}") as running:
        yield running


@pytest.fixture(scope="module")
def open_server(moto_endpoint: str) -> Any:
    """One server without a token (loopback only) on its own moto tables, shared by the tests that
    only read or refuse: starting a process per case would cost more than the cases."""
    settings = fresh_settings(moto_endpoint)
    ensure_tables(make_client(settings), table_specs(settings))
    with ApiServer(settings) as running:
        yield running


def test_jobs_lifecycle_over_http(server: ApiServer, settings: Settings) -> None:
    created = server.request(
        "POST", "/jobs", json={"zid": 7, "priority": 60, "timeout": 600}, headers=AS_ALICE
    )
    assert created.status_code == 201, created.text
    job = created.json()
    job_id = job["summary"]["job_id"]
    assert created.headers["Location"] == f"/jobs/{job_id}"
    # The Polis server's record shape, signed by the operator and the token's label.
    assert job["attributes"]["job_config"]["stages"][0]["stage"] == "PCA"
    assert (job["attributes"]["timeout_seconds"], job["summary"]["priority"]) == (600, 60)
    assert job["attributes"]["created_by"] == "alice via ops"
    assert job["history"][0]["by"] == "alice via ops" and job["allowed_actions"] == ["cancel", "pause"]

    narrative = server.request(
        "POST",
        "/jobs",
        json={"zid": 7, "job_type": "CREATE_NARRATIVE_BATCH", "report_id": "r7", "config": {"model": "m"}},
        headers=AUTH,
    )
    assert narrative.status_code == 201, narrative.text
    attributes = narrative.json()["attributes"]
    assert attributes["job_id"].startswith("batch_report_r7_")
    assert attributes["job_config"]["stages"][0]["config"]["model"] == "m"
    assert attributes["created_by"] == "ops"  # no operator header: the token's label

    assert server.request("GET", f"/jobs/{job_id}", headers=AUTH).json()["summary"]["status"] == "PENDING"
    logs = server.request("GET", f"/jobs/{job_id}/logs", headers=AUTH).json()
    assert logs["entries"][0]["message"].startswith("Job created") and logs["live_output"] == []

    # The transitions, their statuses, and a refusal that says what is allowed (409).
    paused = server.request("POST", f"/jobs/{job_id}/pause", json={"reason": "deploying"}, headers=AS_ALICE)
    assert (paused.status_code, paused.json()["status"]) == (200, "PAUSED")
    refused = error_of(server.request("POST", f"/jobs/{job_id}/retry", headers=AUTH), 409, "refused")
    assert (refused["status"], refused["allowed"]) == ("PAUSED", ["cancel", "resume"])
    assert "it is PAUSED" in refused["message"] and refused["retryable"] is False
    assert server.request("POST", f"/jobs/{job_id}/resume", headers=AUTH).json()["status"] == "PENDING"
    cancelled = server.request("DELETE", f"/jobs/{job_id}", params={"reason": "duplicate"}, headers=AS_ALICE)
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "CANCELLED")
    final = error_of(server.request("DELETE", f"/jobs/{job_id}", headers=AUTH), 409, "refused")
    assert (final["status"], final["allowed"]) == ("CANCELLED", [])
    history = server.request("GET", f"/jobs/{job_id}", headers=AUTH).json()["history"]
    assert [(e["source"], e["to"], e["by"]) for e in history] == [
        (None, "PENDING", "alice via ops"),
        ("PENDING", "PAUSED", "alice via ops"),
        ("PAUSED", "PENDING", "ops"),
        ("PENDING", "CANCELLED", "alice via ops"),
    ]
    assert history[1]["reason"] == "deploying" and history[3]["reason"] == "duplicate"

    # Jobs written by others: a FAILED one is retried; a running one is asked to stop (202) and is
    # reset only once its lease expired, or by force.
    client = make_client(settings)
    now = utcnow()
    failed = records.server_full_pipeline(8, status="FAILED", error_message="boom")
    alive = records.server_full_pipeline(
        8, status="PROCESSING", worker_id="w1", lock_expires_at=format_timestamp(now + timedelta(minutes=5))
    )
    expired = records.server_full_pipeline(
        8, status="PROCESSING", worker_id="w2", lock_expires_at=format_timestamp(now - timedelta(minutes=5))
    )
    for record in (failed, alive, expired):
        records.put_raw(client, settings.jobs_table, record)
    retried = server.request("POST", f"/jobs/{failed['job_id']}/retry", headers=AUTH)
    assert (retried.status_code, retried.json()["status"]) == (200, "PENDING")
    # Main's pause semantics: a running job is asked (202) and pauses at its next checkpoint; until
    # then it is PROCESSING, so resuming it is refused with what is allowed.
    pausing = server.request("POST", f"/jobs/{alive['job_id']}/pause", headers=AS_ALICE)
    assert (pausing.status_code, pausing.json()["status"], pausing.json()["requested"]) == (
        202,
        "PROCESSING",
        True,
    )
    asked = server.request("GET", f"/jobs/{alive['job_id']}", headers=AUTH).json()
    assert asked["attributes"]["pause_requested"].endswith("(requested by alice via ops)")
    resuming = server.request("POST", f"/jobs/{alive['job_id']}/resume", headers=AUTH)
    not_paused = error_of(resuming, 409, "refused")
    assert (not_paused["status"], not_paused["allowed"]) == ("PROCESSING", ["cancel", "pause", "reset"])
    requested = server.request("DELETE", f"/jobs/{alive['job_id']}", headers=AUTH)
    assert (requested.status_code, requested.json()["requested"]) == (202, True)
    live = error_of(server.request("POST", f"/jobs/{alive['job_id']}/reset", headers=AUTH), 409, "refused")
    assert "live lease" in live["message"] and "force" in live["hint"]
    forced = server.request(
        "POST", f"/jobs/{alive['job_id']}/reset", json={"force": True, "to": "PENDING"}, headers=AS_ALICE
    )
    assert forced.json() | {"message": ""} == {
        "job_id": alive["job_id"],
        "action": "reset",
        "status": "PENDING",
        "requested": False,
        "message": "",
    }
    reset = server.request("POST", f"/jobs/{expired['job_id']}/reset", headers=AUTH)
    assert (reset.status_code, reset.json()["status"]) == (200, "FAILED")
    not_running = error_of(server.request("POST", f"/jobs/{job_id}/reset", headers=AUTH), 409, "refused")
    assert not_running["status"] == "CANCELLED"

    stats = server.request("GET", "/stats", headers=AUTH).json()
    assert {s["status"]: s["count"] for s in stats["statuses"]}["PENDING"] == 3
    assert server.request("GET", "/healthz", headers=AUTH).json()["status"] == "ok"


def test_listing_filters_and_cursor_pages(server: ApiServer, settings: Settings) -> None:
    client = make_client(settings)
    base = utcnow() - timedelta(hours=3)
    made = []
    for n in range(7):
        record = records.server_full_pipeline(
            100 if n < 5 else 200, created_at=format_timestamp(base + timedelta(minutes=10 * n))
        )
        records.put_raw(client, settings.jobs_table, record)
        made.append(str(record["job_id"]))
    records.put_raw(client, settings.jobs_table, records.server_narrative("r1", 100, status="COMPLETED"))

    def listed(**query: Any) -> dict[str, Any]:
        answer = server.request("GET", "/jobs", params=query, headers=AUTH)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = listed(
            conversation="100", job_type="FULL_PIPELINE", limit=2, **({"cursor": cursor} if cursor else {})
        )
        assert page["index"] == "ConversationIndex"
        seen += [j["job_id"] for j in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[:5][::-1] and pages == 3  # newest first, no repeats, nothing skipped

    oldest = listed(status="PENDING", oldest_first="true", limit=3)
    assert [j["job_id"] for j in oldest["jobs"]] == made[:3] and oldest["index"] == "StatusCreatedIndex"
    window = listed(
        created_after=format_timestamp(base + timedelta(minutes=15)),
        created_before=format_timestamp(base + timedelta(minutes=45)),
    )
    assert [j["job_id"] for j in window["jobs"]] == made[2:5][::-1]
    assert [j["job_type"] for j in listed(job_type="CREATE_NARRATIVE_BATCH")["jobs"]] == [
        "CREATE_NARRATIVE_BATCH"
    ]
    everything = listed(limit=5)
    merged = everything["jobs"] + listed(limit=5, cursor=everything["next_cursor"])["jobs"]
    assert len({j["job_id"] for j in merged}) == 8

    # A cursor is for the filters it came from; anything else is refused, naming the field.
    first = listed(conversation="100", limit=2)["next_cursor"]
    for query in (
        {"status": "PENDING", "cursor": first},
        {"conversation": "200", "cursor": first},
        {"cursor": "bm90IGpzb24"},
    ):
        assert (
            error_of(server.request("GET", "/jobs", params=query, headers=AUTH), 422, "invalid")["field"]
            == "cursor"
        )


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/jobs", {"zid": -1}, "zid"),
        ("POST", "/jobs", {"zid": "7"}, "zid"),  # strict: a string is not a zid
        ("POST", "/jobs", {"zid": 1, "job_type": "AWAITING_NARRATIVE_BATCH"}, "job_type"),
        ("POST", "/jobs", {"zid": 1, "job_type": "CREATE_NARRATIVE_BATCH"}, "report_id"),
        ("POST", "/jobs", {"zid": 1, "report_id": "has space"}, "report_id"),
        ("POST", "/jobs", {"zid": 1, "priority": 5000}, "priority"),
        ("POST", "/jobs", {"zid": 1, "surprise": True}, "surprise"),
        ("POST", "/jobs", {"zid": 1, "config": [1]}, "config"),
        ("POST", "/jobs", None, "body"),
        ("GET", "/jobs?limit=0", None, "limit"),
        ("GET", "/jobs?status=DONE", None, "status"),
        ("GET", "/jobs?created_after=yesterday", None, "created_after"),
        # Settings no reader could decode are refused before anything is stored (they were stored, and
        # then the answer was a 500): JSON has no NaN or Infinity, a lone surrogate no UTF-8 form.
        ("POST", "/jobs", '{"zid": 1, "config": {"x": NaN}}', "config"),
        ("POST", "/jobs", '{"zid": 1, "config": {"x": 1e400}}', "config"),
        ("POST", "/jobs", '{"zid": 1, "config": {"x": "\\ud800"}}', "config"),
        ("POST", "/jobs", {"zid": 1, "config": nested(MAX_CONFIG_DEPTH + 1)}, "config"),
        ("POST", "/jobs", '{"zid": 1, "config": ' + "[" * 5000 + "]" * 5000 + "}", "body"),
        ("POST", "/jobs", b'{"zid": 1, "config": {"x": "\xff"}}', "body"),
        ("POST", "/jobs", '{"zid": 1, "config": {', "body"),
    ],
)
def test_invalid_input_names_the_field(
    open_server: ApiServer, method: str, path: str, body: Any, field: str
) -> None:
    if isinstance(body, str | bytes):
        sent = {"data": body, "headers": {"Content-Type": "application/json"}}
    else:
        sent = {"json": body}
    error = error_of(open_server.request(method, path, **sent), 422, "invalid")
    assert error["field"] == field and error["message"].startswith(field), error
    assert open_server.request("GET", "/jobs", params={"conversation": "1"}).json()["jobs"] == []


def test_deepest_config_allowed(open_server: ApiServer) -> None:
    created = open_server.request("POST", "/jobs", json={"zid": 2, "config": nested(MAX_CONFIG_DEPTH)})
    assert created.status_code == 201, created.text


def test_ids_are_one_path_segment(open_server: ApiServer) -> None:
    """An id holding "/" or "%" is addressed percent-encoded; "x%2Flogs" is the job "x/logs", never
    the logs of job "x" (the server decodes %2F before routing: the API routes on the path as sent)."""
    settings = open_server.settings
    client = make_client(settings)
    for job_id in ("seg", "seg/logs", "seg/pause", "50%2F", "a b?c#d"):
        records.put_raw(client, settings.jobs_table, records.hand_made(job_id, 11, job_type="FULL_PIPELINE"))
    for job_id in ("seg/logs", "seg/pause", "50%2F", "a b?c#d"):
        path = f"/jobs/{quote(job_id, safe='')}"
        assert open_server.request("GET", path).json()["summary"]["job_id"] == job_id
        assert open_server.request("GET", path + "/logs").json()["job_id"] == job_id
    paused = open_server.request("POST", f"/jobs/{quote('seg/pause', safe='')}/pause").json()
    assert (paused["job_id"], paused["status"]) == ("seg/pause", "PAUSED")
    error_of(open_server.request("POST", f"/jobs/{quote('seg/pause', safe='')}"), 405, "method_not_allowed")
    assert open_server.request("GET", "/jobs/seg").json()["summary"]["status"] == "PENDING"  # untouched
    assert open_server.request("GET", "/jobs/seg/logs").json()["job_id"] == "seg"
    error_of(open_server.request("GET", "/jobs/seg/x/logs"), 404, "not_found")  # "/" unencoded: no route


def test_errors_of_every_kind(moto_settings: Settings) -> None:
    settings = moto_settings
    with ApiServer(settings, token=f"ops:{SECRET}", DELPHI_LEGACY_STATUSES="1") as server:
        # 409 for a reason the state table does not give: the setting says it, and the refused action
        # is not among those allowed
        job = server.request("POST", "/jobs", json={"zid": 1}, headers=AUTH).json()["summary"]["job_id"]
        legacy = error_of(server.request("POST", f"/jobs/{job}/pause", headers=AUTH), 409, "refused")
        assert "DELPHI_LEGACY_STATUSES" in legacy["message"] and legacy["allowed"] == ["cancel"]
        # 404: unknown job (each job route), unknown report or run, unknown route
        for method, path in (
            ("GET", "/jobs/nope"),
            ("GET", "/jobs/nope/logs"),
            ("DELETE", "/jobs/nope"),
            ("POST", "/jobs/nope/pause"),
            ("POST", "/jobs/nope/reset"),
            ("GET", "/reports/nothing"),
            ("GET", "/no/such/route"),
        ):
            error_of(server.request(method, path, headers=AUTH), 404, "not_found")
        NarrativeReportStore(make_client(settings), settings.reports_table).put(
            ReportSection("r9", "groups", "m", format_timestamp(utcnow()), '{"title": "T"}', "job9", "b9")
        )
        report = server.request("GET", "/reports/r9", headers=AUTH).json()
        assert (report["run"], report["sections"][0]["title"]) == ("job9", "T")
        error_of(
            server.request("GET", "/reports/r9", params={"run": "other"}, headers=AUTH), 404, "not_found"
        )
        # 405 keeps its Allow header; 401 names the scheme; 413 before the body is read, or while it is
        not_allowed = server.request("PUT", "/jobs", headers=AUTH)
        assert error_of(not_allowed, 405, "method_not_allowed") and "GET" in not_allowed.headers["Allow"]
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": SECRET}):
            denied = server.request("GET", "/jobs", headers=headers)
            error_of(denied, 401, "unauthorized")
            assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        assert server.request("GET", "/openapi.json").status_code == 401
        assert server.request("GET", "/").status_code == 200  # the dashboard's shell holds no data
        big = {"zid": 1, "config": {"blob": "x" * 70_000}}
        error_of(server.request("POST", "/jobs", json=big, headers=AUTH), 413, "too_large")
        chunks = iter([b'{"zid": 1, "config": {"blob": "', b"x" * 70_000, b'"}}'])
        chunked = server.request(
            "POST", "/jobs", data=chunks, headers=AUTH | {"Content-Type": "application/json"}
        )
        error_of(chunked, 413, "too_large")
        # 422 for a bad operator name (a header is input too)
        bad_name = server.request(
            "POST", "/jobs", json={"zid": 1}, headers=AUTH | {"X-Delphi-Operator": "<x>"}
        )
        assert error_of(bad_name, 422, "invalid")["field"] == "X-Delphi-Operator"

        # The token (right or wrong) never reaches the log, not even pasted into a reason, which the
        # job's log events carry.
        pasted = server.request("DELETE", f"/jobs/{job}", params={"reason": f"token {SECRET}"}, headers=AUTH)
        assert pasted.status_code == 200 and server.events("job.cancelled")
        assert server.lines and SECRET not in server.output and "wrong-token" not in server.output
        assert server.events("api.request")


def test_without_a_token_only_loopback_hosts_are_served(open_server: ApiServer) -> None:
    """No DNS rebinding: a hostile name resolved to 127.0.0.1 does not reach a token-less API."""
    assert open_server.request("GET", "/healthz").status_code == 200
    assert open_server.request("GET", "/healthz", headers={"Host": "localhost:1"}).status_code == 200
    error_of(open_server.request("GET", "/healthz", headers={"Host": "evil.example:80"}), 400, "bad_host")


def test_dynamodb_unavailable_or_tables_missing(moto_settings: Settings) -> None:
    host, port = str(moto_settings.endpoint_url).removeprefix("http://").split(":")
    proxy = TcpProxy(host, int(port)).start()
    through = Settings(endpoint_url=f"http://127.0.0.1:{proxy.port}", table_prefix=moto_settings.table_prefix)
    with ApiServer(through) as server:
        assert server.request("GET", "/jobs").status_code == 200
        proxy.stop()
        for path in ("/jobs", "/healthz", "/jobs/x", "/stats"):
            error = error_of(server.request("GET", path), 503, "unavailable")
            assert error["retryable"] is True and "DynamoDB" in error["message"]
    with ApiServer(fresh_settings(str(moto_settings.endpoint_url))) as server:
        error = error_of(server.request("GET", "/jobs/x"), 503, "table_missing")
        assert "create-tables" in error["hint"] and error["retryable"] is False


@pytest.mark.parametrize(
    ("host", "token", "says"),
    [
        ("0.0.0.0", None, "refusing to serve on 0.0.0.0 without a token"),
        ("192.0.2.1", None, "refusing to serve on 192.0.2.1 without a token"),
        ("127.0.0.1", "ops:tiny1", "shorter than 16 characters"),
        ("127.0.0.1", "bad label:0123456789abcdefgh", "label must be"),
    ],
)
def test_unsafe_serving_is_refused(moto_settings: Settings, host: str, token: str | None, says: str) -> None:
    env = command_env() | {"DYNAMODB_ENDPOINT": str(moto_settings.endpoint_url)}
    if token:
        env["DELPHI_API_TOKEN"] = token
    done = run_command(env, str(SCRIPT), "serve", "--host", host, "--port", "0")
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr + done.stdout
    if token:
        assert token.split(":", 1)[1] not in done.stderr + done.stdout


def test_live_output_and_progress_are_shown(open_server: ApiServer) -> None:
    settings = open_server.settings
    record = records.server_full_pipeline(
        3,
        status="PROCESSING",
        **Activity(Progress(1, 3, 33.0, "reducing", "PCA"), ("line one", "line two")).attributes(
            "2026-11-29T00:00:00.000Z"
        ),
    )
    records.put_raw(make_client(settings), settings.jobs_table, record)
    detail = open_server.request("GET", f"/jobs/{record['job_id']}").json()
    assert detail["progress"] == {
        "current_step": 1,
        "total_steps": 3,
        "percent": 33,
        "message": "reducing",
        "step": "PCA",
        "is_paused": False,
        "updated_at": "2026-11-29T00:00:00.000Z",
    }
    assert detail["live_output"] == ["line one", "line two"]
    logs = open_server.request("GET", f"/jobs/{record['job_id']}/logs").json()
    assert logs["live_output"] == ["line one", "line two"]


def test_values_json_cannot_carry_are_shown(open_server: ApiServer) -> None:
    """A hand-made record may hold binary attributes, and NaN or Infinity in its JSON fields (Python's
    parser accepts them): the job is shown (binary as base64, non-numbers as null), not a 500."""
    settings = open_server.settings
    record = records.hand_made(
        "odd-values",
        12,
        job_type="FULL_PIPELINE",
        blob=Binary(b"\x00\xff"),
        blobs={Binary(b"a")},
        numbers={Decimal("1.5")},
        progress='{"percent": NaN, "total_steps": 2}',
        job_config='{"x": Infinity}',
        job_results='{"y": -1e400}',
    )
    records.put_raw(make_client(settings), settings.jobs_table, record)
    detail = open_server.request("GET", "/jobs/odd-values")
    assert detail.status_code == 200, detail.text
    shown = detail.json()
    assert shown["attributes"]["blob"] == base64.b64encode(b"\x00\xff").decode()
    assert shown["attributes"]["blobs"] == [base64.b64encode(b"a").decode()]
    assert shown["attributes"]["numbers"] == [1.5]
    assert (shown["progress"], shown["config"], shown["results"]) == (
        {"percent": None, "total_steps": 2},
        {"x": None},
        {"y": None},
    )
