"""The Anthropic fake against the real SDK over HTTP (DESIGN 6 and 8).

The handlers trust this fake to behave like the Message Batches API wherever they depend on it, so
every test drives it with the unmodified `anthropic` client or raw HTTP, never by calling it directly.
A manual clock replaces sleeping wherever batch timing matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import requests

from delphi_jobs.devtools.fake_anthropic import FakeAnthropic, fake_narrative, prompt_comment_ids

API_KEY = "test-key"
MODEL = "claude-fake-1"
RAW_HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
REPO_ROOT = Path(__file__).resolve().parents[2]


class ManualClock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def params(prompt: str | list[dict[str, str]], model: str = MODEL) -> dict[str, Any]:
    return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": prompt}]}


def batch_requests(*custom_ids: str) -> list[Any]:
    return [
        {"custom_id": cid, "params": params(f'<comment id="{n}">c{n}</comment>')}
        for n, cid in enumerate(custom_ids)
    ]


def raw_get(fake: FakeAnthropic, path: str) -> requests.Response:
    return requests.get(f"{fake.base_url}{path}", headers=RAW_HEADERS, timeout=5)


def sdk(fake: FakeAnthropic, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=API_KEY, base_url=fake.base_url, **options)


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with sdk(fake, max_retries=0) as c:
        yield c


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timed(clock: ManualClock) -> Iterator[FakeAnthropic]:
    """A fake whose batches take 10 s of manual-clock time."""
    with FakeAnthropic(end_after_seconds=10, clock=clock) as server:
        yield server


def test_batch_lifecycle_follows_the_clock(timed: FakeAnthropic, clock: ManualClock) -> None:
    with sdk(timed, max_retries=0) as client:
        created = client.messages.batches.create(requests=batch_requests("a", "b", "c"))
        assert created.id.startswith("msgbatch_")
        assert created.type == "message_batch"
        assert created.processing_status == "in_progress"
        zero = {"succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        assert created.request_counts.to_dict() == {"processing": 3, **zero}
        assert created.results_url is None and created.ended_at is None
        assert created.cancel_initiated_at is None and created.archived_at is None
        assert created.expires_at - created.created_at == timedelta(hours=24)

        clock.advance(9.9)
        assert client.messages.batches.retrieve(created.id).processing_status == "in_progress"
        clock.advance(0.1)
        ended = client.messages.batches.retrieve(created.id)
        assert ended.processing_status == "ended"
        assert ended.request_counts.processing == 0 and ended.request_counts.succeeded == 3
        assert ended.ended_at == created.created_at + timedelta(seconds=10)
        assert ended.results_url == f"{timed.base_url}/v1/messages/batches/{created.id}/results"

    raw = raw_get(timed, f"/v1/messages/batches/{created.id}").json()
    for name in ("created_at", "expires_at", "ended_at"):
        assert raw[name].endswith("Z")
    snapshot = timed.batches[created.id]
    assert snapshot.processing_status == "ended"
    assert [r.custom_id for r in snapshot.requests] == ["a", "b", "c"]
    with pytest.raises(TypeError):
        timed.batches["x"] = snapshot  # type: ignore[index]


def test_default_delay_ends_on_first_retrieve(client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(requests=batch_requests("a"))
    assert created.processing_status == "in_progress"
    assert client.messages.batches.retrieve(created.id).processing_status == "ended"


@pytest.mark.parametrize(
    "bad_requests",
    [
        [],
        [{"custom_id": "has space", "params": params("p")}],
        [{"custom_id": "x" * 65, "params": params("p")}],
        [{"custom_id": "", "params": params("p")}],
        [{"custom_id": "dup", "params": params("p")}, {"custom_id": "dup", "params": params("q")}],
        [{"custom_id": "ok", "params": {"model": MODEL, "messages": [{"role": "user", "content": "p"}]}}],
        [{"custom_id": "ok", "params": {"max_tokens": 5, "messages": [{"role": "user", "content": "p"}]}}],
    ],
    ids=["empty", "space", "too-long", "blank", "duplicate", "no-max-tokens", "no-model"],
)
def test_invalid_create_is_400(
    fake: FakeAnthropic, client: anthropic.Anthropic, bad_requests: list[Any]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=bad_requests)
    assert caught.value.type == "invalid_request_error"
    assert caught.value.request_id and caught.value.request_id.startswith("req_")
    assert not fake.batches
    assert fake.create_calls == 1


def test_more_than_100000_requests_is_400(fake: FakeAnthropic) -> None:
    body: dict[str, Any] = {"requests": [{"custom_id": f"r{i}", "params": {}} for i in range(100_001)]}
    response = requests.post(
        f"{fake.base_url}/v1/messages/batches", json=body, headers=RAW_HEADERS, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_list_is_newest_first_and_paginates(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    created = [client.messages.batches.create(requests=batch_requests("a")).id for _ in range(5)]
    newest_first = created[::-1]

    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True and page.first_id == newest_first[0] and page.last_id == newest_first[1]

    after = client.messages.batches.list(limit=2, after_id=page.last_id)
    assert [b.id for b in after.data] == newest_first[2:4]
    last = client.messages.batches.list(limit=2, after_id=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:] and last.has_more is False

    before = client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before.data] == newest_first[2:4] and before.has_more is True

    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    assert [b.id for b in client.messages.batches.list()] == newest_first
    assert any("after_id=" in entry.query for entry in fake.request_log)

    for bad in ({"limit": 0}, {"limit": 1001}, {"after_id": "msgbatch_unknown"}):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(**bad)


def test_cancel_cancels_only_unfinished_requests(timed: FakeAnthropic, clock: ManualClock) -> None:
    with sdk(timed, max_retries=0) as client:
        # Four requests finish at 2.5, 5, 7.5 and 10 s; a cancel at 6 s catches the last two.
        batch = client.messages.batches.create(requests=batch_requests("r0", "r1", "r2", "r3"))
        clock.advance(6)
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at == batch.created_at + timedelta(seconds=6)
        assert canceling.request_counts.processing == 4 and canceling.request_counts.canceled == 0
        assert canceling.results_url is None
        assert client.messages.batches.cancel(batch.id).cancel_initiated_at == canceling.cancel_initiated_at

        clock.advance(3.9)
        assert client.messages.batches.retrieve(batch.id).processing_status == "canceling"
        clock.advance(0.1)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)

        results = client.messages.batches.results(batch.id)
        outcomes = {line.custom_id: line.result.type for line in results}
        results.close()
        assert outcomes == {"r0": "succeeded", "r1": "succeeded", "r2": "canceled", "r3": "canceled"}

        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.cancel(batch.id)


def test_cancel_delay_bounds_canceling(clock: ManualClock) -> None:
    with (
        FakeAnthropic(end_after_seconds=3600, cancel_delay_seconds=1, clock=clock) as fake,
        sdk(fake, max_retries=0) as client,
    ):
        batch = client.messages.batches.create(requests=batch_requests("a", "b"))
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
        clock.advance(1)
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled == 2


def test_delete_only_once_ended_and_unknown_ids_are_404(timed: FakeAnthropic, clock: ManualClock) -> None:
    with sdk(timed, max_retries=0) as client:
        batch = client.messages.batches.create(requests=batch_requests("a"))
        with pytest.raises(anthropic.BadRequestError) as in_progress:
            client.messages.batches.delete(batch.id)
        assert in_progress.value.type == "invalid_request_error"

        clock.advance(10)
        deleted = client.messages.batches.delete(batch.id)
        assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
        assert batch.id not in timed.batches

        calls: list[Callable[[], object]] = [
            lambda: client.messages.batches.retrieve(batch.id),
            lambda: client.messages.batches.delete(batch.id),
            lambda: client.messages.batches.cancel(batch.id),
            lambda: client.messages.batches.results(batch.id),
        ]
        for call in calls:
            with pytest.raises(anthropic.NotFoundError) as missing:
                call()
            assert missing.value.type == "not_found_error"
    raw = raw_get(timed, f"/v1/messages/batches/{batch.id}/results")
    assert raw.status_code == 404 and raw.json()["error"]["type"] == "not_found_error"


def test_results_before_end_are_refused(timed: FakeAnthropic) -> None:
    with sdk(timed, max_retries=0) as client:
        batch = client.messages.batches.create(requests=batch_requests("a"))
        # The SDK itself refuses without a results_url, before any request for the results.
        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            client.messages.batches.results(batch.id)
    raw = raw_get(timed, f"/v1/messages/batches/{batch.id}/results")
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"


PROMPTS: dict[str, Any] = {
    "plain": 'Summarise.\n<comment id="101">a</comment>\n<comment id="102">b</comment>',
    "attrs": '<comment votes="3" id="201" agree="2">x</comment>\n<comment\n  id="202">y</comment>',
    "decoys": '<comment data-id="999" id="301">z</comment> <topic id="555"/> id="777"'
    ' <comment zid="8" id="302">v</comment>',
    "blocks": [{"type": "text", "text": "Intro"}, {"type": "text", "text": '<comment id="401">w</comment>'}],
    "none": "No comments were selected for this topic.",
}
EXPECTED_IDS = {
    "plain": {101, 102},
    "attrs": {201, 202},
    "decoys": {301, 302},
    "blocks": {401},
    "none": set(),
}


def cited(text: str) -> set[int]:
    narrative = json.loads(text)
    assert set(narrative) == {"id", "title", "paragraphs"}
    ids: set[int] = set()
    for paragraph in narrative["paragraphs"]:
        assert {"id", "title", "sentences"} <= set(paragraph)
        for sentence in paragraph["sentences"]:
            for clause in sentence["clauses"]:
                assert isinstance(clause["text"], str)
                ids.update(clause["citations"])
    return ids


def test_results_stream_out_of_order_with_prompt_citations(client: anthropic.Anthropic) -> None:
    request_list: list[Any] = [
        {"custom_id": name, "params": params(prompt, model=f"model-{name}")}
        for name, prompt in PROMPTS.items()
    ]
    # Comments in an earlier user turn are not the prompt: only the last user message counts.
    request_list[-1]["params"]["messages"][:0] = [
        {"role": "user", "content": '<comment id="888">old</comment>'},
        {"role": "assistant", "content": "ok"},
    ]
    batch = client.messages.batches.create(requests=request_list)
    client.messages.batches.retrieve(batch.id)

    results = client.messages.batches.results(batch.id)
    lines = list(results)
    results.close()
    assert [line.custom_id for line in lines] != list(PROMPTS)
    assert sorted(line.custom_id for line in lines) == sorted(PROMPTS)
    for line in lines:
        result = line.result
        assert result.type == "succeeded"
        message = result.message
        assert (message.type, message.role, message.model) == (
            "message",
            "assistant",
            f"model-{line.custom_id}",
        )
        assert message.stop_reason == "end_turn" and message.stop_sequence is None
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        text = message.content[0].text  # type: ignore[union-attr]
        assert cited(text) == EXPECTED_IDS[line.custom_id]
    assert set(prompt_comment_ids(PROMPTS["decoys"])) == {301, 302}

    again = client.messages.batches.results(batch.id)
    first = next(iter(again))
    again.close()
    assert again.http_response.is_closed
    assert first == lines[0]
    plain = next(line for line in lines if line.custom_id == "plain")
    assert plain.result.message.content[0].text == fake_narrative(PROMPTS["plain"])  # type: ignore[union-attr]


def test_auth_headers_and_beta_query(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=batch_requests("a"))
    assert fake.request_log[-1].auth == "bearer"

    beta = {**RAW_HEADERS, "anthropic-beta": "message-batches-2024-09-24"}
    base = f"{fake.base_url}/v1/messages/batches"
    created = requests.post(
        f"{base}?beta=true", json={"requests": batch_requests("b")}, headers=beta, timeout=5
    )
    assert created.status_code == 200 and created.headers["request-id"].startswith("req_")
    raw_id = created.json()["id"]
    retrieved = requests.get(f"{base}/{raw_id}?beta=true", headers=beta, timeout=5).json()
    assert retrieved["processing_status"] == "ended"
    listed = requests.get(f"{base}?beta=true&limit=1", headers=beta, timeout=5).json()
    assert [b["id"] for b in listed["data"]] == [raw_id]
    body = requests.get(retrieved["results_url"], headers=beta, timeout=5)
    assert body.headers["request-id"]
    assert [json.loads(line)["custom_id"] for line in body.text.splitlines()] == ["b"]

    raw_entries = [entry for entry in fake.request_log if entry.auth == "x-api-key"]
    assert len(raw_entries) == 4
    assert [entry.query for entry in raw_entries] == ["beta=true", "beta=true", "beta=true&limit=1", ""]
    assert {entry.anthropic_version for entry in raw_entries} == {"2023-06-01"}
    assert raw_entries[0].path == "/v1/messages/batches"
    assert batch.id in fake.batches
    assert API_KEY not in repr(fake.request_log) and API_KEY not in repr(fake.batches)


def test_missing_credentials_or_version(fake: FakeAnthropic) -> None:
    url = f"{fake.base_url}/v1/messages/batches"
    for headers in (
        {"anthropic-version": "2023-06-01"},
        {"authorization": "Bearer ", "anthropic-version": "x"},
    ):
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert body["request_id"] == response.headers["request-id"]
    unversioned = requests.get(url, headers={"x-api-key": API_KEY}, timeout=5)
    assert unversioned.status_code == 400
    assert raw_get(fake, "/v1/nothing").status_code == 404
    assert [entry.auth for entry in fake.request_log[:2]] == ["none", "none"]


@pytest.mark.parametrize(
    ("status", "error_type", "retry_after", "header"),
    [
        (429, "rate_limit_error", 2.0, "2"),
        (429, "rate_limit_error", None, "0"),
        (529, "overloaded_error", None, None),
        (500, "api_error", None, None),
    ],
)
def test_injected_status_errors(
    fake: FakeAnthropic,
    client: anthropic.Anthropic,
    status: int,
    error_type: str,
    retry_after: float | None,
    header: str | None,
) -> None:
    fake.fail_next(status, retry_after=retry_after)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.batches.create(requests=batch_requests("a"))
    assert caught.value.status_code == status
    assert caught.value.type == error_type
    assert caught.value.response.headers.get("retry-after") == header
    assert not fake.batches
    client.messages.batches.create(requests=batch_requests("a"))
    assert len(fake.batches) == 1 and fake.create_calls == 2


def test_sdk_default_retries_get_past_one_429(fake: FakeAnthropic) -> None:
    fake.fail_next(429, retry_after=0.05)
    started = time.monotonic()
    with sdk(fake) as client:
        client.messages.batches.create(requests=batch_requests("a"))
    assert time.monotonic() - started < 2
    assert fake.create_calls == 2 and len(fake.batches) == 1
    assert [entry.status for entry in fake.request_log] == [429, 200]


def test_failures_count_and_path_filter(timed: FakeAnthropic) -> None:
    timed.fail_next(500, count=2, path_contains="/cancel")
    with sdk(timed, max_retries=0) as client:
        batch = client.messages.batches.create(requests=batch_requests("a"))
        client.messages.batches.retrieve(batch.id)
        for _ in range(2):
            with pytest.raises(anthropic.InternalServerError):
                client.messages.batches.cancel(batch.id)
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"


def test_lost_create_response_makes_a_second_batch_on_retry(fake: FakeAnthropic) -> None:
    fake.fail_next(500, retry_after=0.01, path_contains="/v1/messages/batches", after_processing=True)
    with sdk(fake) as client:
        client.messages.batches.create(requests=batch_requests("a"))
    assert fake.create_calls == 2 and len(fake.batches) == 2


def test_slow_create_times_out_the_client(fake: FakeAnthropic) -> None:
    fake.slow_next_create(1.5)
    started = time.monotonic()
    with sdk(fake, max_retries=0, timeout=0.3) as client:
        with pytest.raises(anthropic.APITimeoutError):
            client.messages.batches.create(requests=batch_requests("a"))
        assert time.monotonic() - started < 1.2
        assert len(fake.batches) == 1
        client.messages.batches.create(requests=batch_requests("b"))
    assert len(fake.batches) == 2


def test_errored_expired_canceled_and_refused_results(
    fake: FakeAnthropic, client: anthropic.Anthropic
) -> None:
    fake.result_outcome({"bad"}, "errored", error_type="invalid_request_error")
    fake.result_outcome(lambda custom_id: custom_id.startswith("busy"), "errored")
    fake.result_outcome(lambda custom_id: custom_id.startswith("old"), "expired")
    fake.result_outcome("gone", "canceled")
    fake.refuse(["no"])
    batch = client.messages.batches.create(
        requests=batch_requests("ok", "bad", "busy1", "old1", "gone", "no")
    )
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert (counts.succeeded, counts.errored, counts.expired, counts.canceled) == (2, 2, 1, 1)

    results = client.messages.batches.results(batch.id)
    by_id = {line.custom_id: line.result for line in results}
    results.close()
    assert by_id["ok"].type == "succeeded"
    bad, busy = by_id["bad"], by_id["busy1"]
    assert bad.type == "errored" and busy.type == "errored"
    assert bad.error.type == "error" and bad.error.error.type == "invalid_request_error"
    assert busy.error.error.type == "overloaded_error" and busy.error.request_id
    assert by_id["old1"].type == "expired" and by_id["gone"].type == "canceled"
    refused = by_id["no"]
    assert refused.type == "succeeded" and refused.message.stop_reason == "refusal"

    fake.clear_faults()
    later = client.messages.batches.create(requests=batch_requests("bad"))
    assert client.messages.batches.retrieve(later.id).request_counts.succeeded == 1


def test_malformed_line_raises_json_error(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.malformed_line()
    batch = client.messages.batches.create(requests=batch_requests("a", "b", "c"))
    client.messages.batches.retrieve(batch.id)
    results = client.messages.batches.results(batch.id)
    lines = iter(results)
    assert next(lines).result.type == "succeeded"
    with pytest.raises(json.JSONDecodeError):
        next(lines)
    results.close()

    clean = client.messages.batches.create(requests=batch_requests("a", "b"))
    assert len(list(client.messages.batches.results(clean.id))) == 2
    fake.malformed_line(clean.id)
    with pytest.raises(json.JSONDecodeError):
        list(client.messages.batches.results(clean.id))
    with pytest.raises(KeyError):
        fake.malformed_line("msgbatch_unknown")


def test_cut_results_body_is_a_transport_error(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    fake.cut_results()
    batch = client.messages.batches.create(requests=batch_requests(*(f"r{i}" for i in range(20))))
    client.messages.batches.retrieve(batch.id)
    results = client.messages.batches.results(batch.id)
    with pytest.raises(httpx2.TransportError) as caught:
        list(results)
    results.close()
    assert not isinstance(caught.value, anthropic.AnthropicError)


def test_concurrent_creates(fake: FakeAnthropic, client: anthropic.Anthropic) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        batch_id = client.messages.batches.create(requests=batch_requests("a")).id
        with lock:
            ids.append(batch_id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(ids) == 8 and set(ids) == set(fake.batches) and fake.create_calls == 8


def test_serve_forever_prints_url_and_stops_on_sigterm() -> None:
    code = "from delphi_jobs.devtools import fake_anthropic as f; f.serve_forever('127.0.0.1', 0, 0.0)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(  # noqa: S603 - a fixed argument list, no shell
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        with anthropic.Anthropic(api_key=API_KEY, base_url=base_url, max_retries=0) as client:
            batch = client.messages.batches.create(requests=batch_requests("a"))
            assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
