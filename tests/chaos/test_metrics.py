"""A running poller's /metrics and /healthz, scraped over HTTP from a real poller process: counters
move with the work, health is 200 while the claim loop turns and 503 when it is stuck (the path to
DynamoDB frozen by a loopback proxy), and the job types a poller cannot run are left alone."""

from __future__ import annotations

import dataclasses
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.devtools.tcp_proxy import TcpProxy
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests.pollers import poller_env, start_poller, wait_for

pytestmark = pytest.mark.chaos


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_and_health_follows_the_claim_loop(moto_settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(open_store(moto_settings))
    host, port = str(moto_settings.endpoint_url).removeprefix("http://").split(":")
    with TcpProxy(host, int(port)) as proxy:
        through = dataclasses.replace(moto_settings, endpoint_url=f"http://127.0.0.1:{proxy.port}")
        metrics_port = free_port()
        env = poller_env(
            through,
            tmp_path,
            DELPHI_METRICS_PORT=str(metrics_port),
            DELPHI_METRICS_SAMPLE_SECONDS="0",
            DELPHI_HEALTH_STALE_SECONDS="2",
        )
        poller = start_poller(env, log=tmp_path / "poller.log")
        try:
            wait_for(lambda: scrape(metrics_port, "/healthz")[0] == 200, 30, "the poller to be healthy")
            for zid in (1, 1, 3):  # two succeed, one exits 3 (retried later with backoff)
                queue.enqueue({**producer_records.server_full_pipeline(zid), "max_retries": 0})
            text = wait_for(
                lambda: (
                    (t := scrape(metrics_port, "/metrics")[1])
                    and value(t, "delphi_jobs_outcomes_total", job_type="FULL_PIPELINE", outcome="failed")
                    >= 1
                    and value(t, "delphi_jobs_outcomes_total", job_type="FULL_PIPELINE", outcome="completed")
                    >= 2
                    and t
                ),
                30,
                "three outcomes counted",
            )
            assert value(text, "delphi_jobs_claimed_total", job_type="FULL_PIPELINE") == 3
            assert value(text, "delphi_jobs_job_duration_seconds_count", job_type="FULL_PIPELINE") == 3
            assert value(text, "delphi_jobs_poll_seconds_count") > 0
            assert value(text, "delphi_jobs_queue_depth", status="PENDING") == 0
            assert ("delphi_jobs_oldest_pending_age_seconds", ()) in samples(text)

            proxy.freeze()  # every DynamoDB call now hangs: the claim loop stops turning
            stuck = wait_for(
                lambda: (r := scrape(metrics_port, "/healthz"))[0] == 503 and r, 30, "health to turn 503"
            )
            assert "claim loop" in stuck[1]
            proxy.thaw()
            proxy.cut()  # the hung calls fail at once and are retried
            wait_for(lambda: scrape(metrics_port, "/healthz")[0] == 200, 60, "health to come back")
        finally:
            poller.kill()
            poller.wait()


def test_a_poller_without_an_api_key_leaves_narrative_jobs_alone(
    moto_settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(open_store(moto_settings))
    narrative = producer_records.server_narrative("r_1", 7, model="claude-x")
    queue.enqueue(narrative)
    pipeline = queue.enqueue(producer_records.server_full_pipeline(1))
    log = tmp_path / "poller.log"
    poller = start_poller(poller_env(moto_settings, tmp_path), "--exit-when-idle", log=log)
    assert poller.wait(timeout=60) == 0, log.read_text()[-2000:]
    assert queue.get(pipeline.job_id).status == "COMPLETED"  # type: ignore[union-attr]
    assert queue.get(narrative["job_id"]).status == "PENDING"  # type: ignore[union-attr]
    output = log.read_text()
    assert "not serving a job type" in output and "ANTHROPIC_API_KEY is not set" in output
