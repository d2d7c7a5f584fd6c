"""Real pollers as subprocesses on a real DynamoDB-protocol server, running the records the Polis
server writes through a scriptable stand-in for run_delphi.py."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from delphi_jobs.config import Settings
from delphi_jobs.devtools import producer_records
from delphi_jobs.dynamo import make_client
from delphi_jobs.queue import JobQueue
from delphi_jobs.store import open_store
from tests.pollers import alive, pids, poller_env, run_command, runs, start_poller, wait_for

pytestmark = pytest.mark.chaos


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def queue(moto_settings: Settings) -> JobQueue:
    return JobQueue(open_store(moto_settings))


def insert(queue: JobQueue, settings: Settings, record: dict[str, Any]) -> str:
    producer_records.put_raw(make_client(settings), settings.jobs_table, record)
    return str(record["job_id"])


def run_until_idle(settings: Settings, state: Path, *flags: str, timeout: float = 60, **env: str) -> str:
    log = state / "poller.log"
    proc = start_poller(poller_env(settings, state, **env), "--exit-when-idle", *flags, log=log)
    try:
        assert proc.wait(timeout=timeout) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    return log.read_text()


def test_server_full_pipeline_record_completes(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(1, "r_report1"))
    output = run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert job is not None and job.status == "COMPLETED", output[-2000:]
    assert job.job_results["result_type"] == "SUCCESS"
    assert runs(state, job_id)[0].endswith("report=r_report1 env_report=r_report1")
    assert [e.message for e in job.logs][-4:-1] == [f"step {i} of zid 1" for i in range(3)]
    assert job.logs[0].message == "Job created for conversation 1"  # the producer's entry is kept
    assert f"[DELPHI JOB {job_id[:8]}] INFO: step 0 of zid 1" in output


def test_report_id_falls_back_to_zid(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    record = producer_records.server_full_pipeline(1)
    job_id = insert(queue, moto_settings, record)
    run_until_idle(moto_settings, state)
    assert "env_report=1" in runs(state, job_id)[0]


def test_failure_records_exit_code_and_output(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(3, max_retries=0))
    run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED"
    assert job.error_message is not None
    assert "exited with code 3" in job.error_message
    assert "server closed the connection" in job.error_message
    assert job.job_results["result_type"] == "FAILURE"


def test_own_failure_is_final(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    """Every run resets the conversation's results first: a script's own non-zero exit is not retried."""
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(3))
    run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED" and job.retry_count == 0
    assert job.error_message and "code 3" in job.error_message
    assert len(runs(state, job_id)) == 1


def test_usage_error_is_not_retried(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(2))
    run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED" and job.retry_count == 0


def test_timeout_stops_the_whole_process_group(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(4, timeout_seconds=2))
    run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED"
    assert job.error_message is not None and "timed out after 2s" in job.error_message
    children = pids(state, job_id)
    assert len(children) == 2, "the pipeline and its grandchild both started"
    assert not any(alive(pid) for pid in children), "no process of the group survives"


def test_escaped_grandchildren_die_with_their_job(
    queue: JobQueue, moto_settings: Settings, state: Path
) -> None:
    """Grandchildren that left the process group (setsid) are swept too: on timeout and on success."""
    hung = insert(queue, moto_settings, producer_records.server_full_pipeline(6, timeout_seconds=2))
    finished = insert(queue, moto_settings, producer_records.server_full_pipeline(7))
    run_until_idle(moto_settings, state)
    assert queue.get(hung).status == "FAILED"  # type: ignore[union-attr]
    assert queue.get(finished).status == "COMPLETED"  # type: ignore[union-attr]
    for job_id in (hung, finished):
        children = pids(state, job_id)
        assert len(children) == 2
        wait_for(lambda c=children: not any(alive(p) for p in c), 5, f"the processes of {job_id} to be gone")


def test_unknown_job_type_fails_unrun(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(
        queue, moto_settings, producer_records.server_full_pipeline(1, job_type="DELETE_EVERYTHING")
    )
    run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert job is not None and job.status == "FAILED"
    assert job.error_message is not None
    assert "'DELETE_EVERYTHING'" in job.error_message and "FULL_PIPELINE" in job.error_message
    assert runs(state, job_id) == []


def test_missing_job_type_runs_full_pipeline(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.hand_made("manual-1", 1))
    run_until_idle(moto_settings, state)
    job = queue.get(job_id)
    assert (
        job is not None and job.status == "COMPLETED" and job.version == 2
    )  # none -> 1 (claim) -> 2 (finish)
    assert len(runs(state, job_id)) == 2  # start and done


def test_malformed_job_config_fails_naming_it(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    good = insert(queue, moto_settings, producer_records.server_full_pipeline(1))
    bad = insert(queue, moto_settings, producer_records.server_full_pipeline(1, job_config='{"stages": [}'))
    bad_zid = insert(queue, moto_settings, producer_records.server_full_pipeline("abc"))
    run_until_idle(moto_settings, state)
    job = queue.get(bad)
    assert job is not None and job.status == "FAILED"
    assert job.error_message is not None and job.error_message.startswith("invalid job, not run: job_config:")
    job = queue.get(bad_zid)
    assert job is not None and job.error_message is not None and "conversation_id" in job.error_message
    assert runs(state, bad) == [] and runs(state, bad_zid) == []
    done = queue.get(good)
    assert done is not None and done.status == "COMPLETED", "the poller kept going"


def test_several_pollers_run_every_job_exactly_once(
    queue: JobQueue, moto_settings: Settings, state: Path
) -> None:
    # Jobs that take a moment, so one poller cannot finish them all before the others have started.
    job_ids = [insert(queue, moto_settings, producer_records.server_full_pipeline(5)) for _ in range(24)]
    env = poller_env(moto_settings, state, FAKE_PIPELINE_SLEEP="0.5")
    procs = [
        start_poller(env, "--exit-when-idle", "--max-workers", "2", log=state / f"p{i}.log") for i in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    for job_id in job_ids:
        job = queue.get(job_id)
        assert job is not None and job.status == "COMPLETED"
        assert len([r for r in runs(state, job_id) if r.startswith("start")]) == 1, job_id
    pollers = {str(job.worker_id).split(":")[1] for job in map(queue.get, job_ids) if job}
    assert len(pollers) >= 2, "the jobs were shared between poller processes"


def test_kill_9_mid_job_child_dies_and_another_poller_finishes(
    queue: JobQueue, moto_settings: Settings, state: Path
) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(5))
    other = insert(queue, moto_settings, producer_records.server_full_pipeline(1))
    env = poller_env(moto_settings, state, FAKE_PIPELINE_SLEEP="4")
    first = start_poller(env, "--lease-seconds", "2", "--max-jobs", "1", log=state / "first.log")
    wait_for(lambda: len(pids(state, job_id)) == 2, 30, "the slow job to start in the first poller")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    children = pids(state, job_id)
    wait_for(lambda: not any(alive(pid) for pid in children), 15, "the killed poller's process group to die")

    second = start_poller(env, "--lease-seconds", "2", "--max-jobs", "2", log=state / "second.log")
    assert second.wait(timeout=60) == 0, (state / "second.log").read_text()[-3000:]
    job = queue.get(job_id)
    assert job is not None and job.status == "COMPLETED"
    assert any("reclaimed" in e.message for e in job.logs)
    starts = [r for r in runs(state, job_id) if r.startswith("start")]
    assert len(starts) == 2 and len([r for r in runs(state, job_id) if r.startswith("done")]) == 1
    assert len([r for r in runs(state, other) if r.startswith("start")]) == 1, "no other job ran twice"


def test_stale_worker_cannot_overwrite_newer_state(
    queue: JobQueue, moto_settings: Settings, state: Path
) -> None:
    """A poller frozen past its lease (SIGSTOP) wakes up after another finished its job: it stops its
    child and writes nothing."""
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(5))
    env = poller_env(moto_settings, state, FAKE_PIPELINE_SLEEP="3")
    frozen = start_poller(env, "--lease-seconds", "1.5", "--max-jobs", "1", log=state / "frozen.log")
    wait_for(lambda: runs(state, job_id), 30, "the job to start")
    frozen.send_signal(signal.SIGSTOP)
    try:
        rescuer = start_poller(env, "--lease-seconds", "1.5", "--max-jobs", "1", log=state / "rescuer.log")
        assert rescuer.wait(timeout=60) == 0
        done = queue.get(job_id)
        assert done is not None and done.status == "COMPLETED"
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert frozen.wait(timeout=30) == 0
    after = queue.get(job_id)
    assert after is not None
    assert (after.status, after.version, after.worker_id) == (done.status, done.version, done.worker_id)
    assert (
        "outcome not written" in (state / "frozen.log").read_text()
        or "lease lost" in (state / "frozen.log").read_text()
    )


def test_sigterm_job_finishes_within_grace(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(5))
    env = poller_env(moto_settings, state, FAKE_PIPELINE_SLEEP="2")
    proc = start_poller(env, "--shutdown-grace-seconds", "20", log=state / "p.log")
    wait_for(lambda: runs(state, job_id), 30, "the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    job = queue.get(job_id)
    assert job is not None and job.status == "COMPLETED"


def test_sigterm_hands_back_after_grace(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(5))
    env = poller_env(moto_settings, state, FAKE_PIPELINE_SLEEP="30")
    proc = start_poller(env, "--shutdown-grace-seconds", "1", log=state / "p.log")
    wait_for(lambda: len(pids(state, job_id)) == 2, 30, "the job to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    job = queue.get(job_id)
    assert job is not None and job.status == "PENDING" and job.retry_count == 0
    assert not any(alive(pid) for pid in pids(state, job_id))

    run_until_idle(moto_settings, state, FAKE_PIPELINE_SLEEP="0.5")
    job = queue.get(job_id)
    assert job is not None and job.status == "COMPLETED"
    assert queue.list_by_status("PROCESSING") == []


def test_cancel_running_job(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(5))
    env = poller_env(moto_settings, state, FAKE_PIPELINE_SLEEP="60")
    proc = start_poller(env, "--lease-seconds", "1.5", "--max-jobs", "1", log=state / "p.log")
    wait_for(lambda: len(pids(state, job_id)) == 2, 30, "the job to start")
    assert queue.cancel(job_id, "operator: wrong conversation").requested
    assert proc.wait(timeout=30) == 0
    job = queue.get(job_id)
    assert job is not None and job.status == "CANCELLED"
    assert job.error_message == "cancelled: operator: wrong conversation (requested by operator)"
    assert not any(alive(pid) for pid in pids(state, job_id))


def test_run_job_traces_one_job(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(1))
    env = poller_env(moto_settings, state)
    done = run_command(env, sys.executable, "-m", "delphi_jobs", "run-job", job_id, "--log-format", "console")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[DELPHI JOB {job_id[:8]}] INFO: step 2 of zid 1" in done.stdout
    assert f"job {job_id}: COMPLETED" in done.stdout
    again = run_command(env, sys.executable, "-m", "delphi_jobs", "run-job", job_id)
    assert again.returncode == 1 and "not claimable now (status COMPLETED" in again.stderr


def test_secrets_never_reach_logs_or_records(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(3, max_retries=0))
    secret_key, secret_password = "sk-ant-SECRET-123", "pw-SECRET-456"
    output = run_until_idle(
        moto_settings,
        state,
        ANTHROPIC_API_KEY=secret_key,
        DATABASE_URL=f"postgresql://u:{secret_password}@db/polis",
    )
    item = json.dumps(
        make_client(moto_settings).get_item(
            TableName=moto_settings.jobs_table, Key={"job_id": {"S": job_id}}
        )["Item"]
    )
    for secret in (secret_key, secret_password):
        assert secret not in output and secret not in item


def test_scripts_job_poller_is_the_same_daemon(queue: JobQueue, moto_settings: Settings, state: Path) -> None:
    job_id = insert(queue, moto_settings, producer_records.server_full_pipeline(1))
    script = Path(__file__).resolve().parents[2] / "scripts" / "job_poller.py"
    env = poller_env(moto_settings, state)
    done = run_command(
        env, sys.executable, str(script), "--interval", "0.1", "--max-workers", "2", "--exit-when-idle"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job = queue.get(job_id)
    assert job is not None and job.status == "COMPLETED"
