"""Job model: every producer shape of DESIGN 2.1, bad JSON, odd timestamps, nested settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from delphi_jobs.devtools import producer_records
from delphi_jobs.model import (
    FULL_PIPELINE,
    Job,
    JobValidationError,
    LogEntry,
    decode_json_field,
    encode_json,
    encode_logs,
    format_timestamp,
    parse_bool,
    parse_int,
    parse_timestamp,
)


def as_read(record: dict[str, object]) -> dict[str, object]:
    """What boto3's deserializer hands back: numbers as Decimal."""
    return {k: Decimal(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in record.items()}


def test_server_full_pipeline_record() -> None:
    job = Job.from_item(as_read(producer_records.server_full_pipeline(36, "r_abc")))
    assert job.problems == ()
    assert job.job_type == FULL_PIPELINE
    assert job.status == "PENDING"
    assert job.conversation_id == "36"
    assert job.report_id == "r_abc"
    assert job.version == 1
    assert job.timeout_seconds == 14400
    assert (job.retry_count, job.max_retries, job.priority) == (0, 3, 50)
    assert job.worker_id is None  # "none" is the producers' placeholder
    assert job.started_at is None and job.completed_at is None  # "" means not set
    assert job.config_bool("include_moderation", True) is False
    assert job.config_value("max_votes") is None  # stages[0] is the PCA stage's own (empty) config
    assert len(job.logs) == 1 and job.logs[0].message == "Job created for conversation 36"


def test_server_narrative_record_nests_settings() -> None:
    job = Job.from_item(as_read(producer_records.server_narrative("r_xyz", 7, model="claude-x")))
    assert job.problems == ()
    assert job.job_type == "CREATE_NARRATIVE_BATCH"
    assert job.config_value("model") == "claude-x"
    assert job.config_value("max_batch_size") == 20
    assert job.config_bool("no_cache", True) is False
    assert job.effective_report_id == "r_xyz"
    assert job.timeout_seconds == 3600  # absent means 3600
    assert job.retry_count == 0 and job.logs == ()


def test_report_id_only_in_config() -> None:
    record = producer_records.server_narrative("r_nested", 7)
    del record["report_id"]
    assert Job.from_item(record).effective_report_id == "r_nested"


def test_checker_row() -> None:
    job = Job.from_item(
        {
            "job_id": "batch_check_batch_report_r1_1700000000_abcd1234_1700000100",
            "status": "PENDING",
            "job_type": "AWAITING_NARRATIVE_BATCH",
            "batch_id": "msgbatch_01",
            "batch_job_id": "batch_report_r1_1700000000_abcd1234",
            "conversation_id": "7",
            "version": Decimal(1),
            "next_check_at": "2026-01-01T00:00:00.000Z",
        }
    )
    assert job.problems == ()
    assert (job.batch_id, job.batch_job_id) == ("msgbatch_01", "batch_report_r1_1700000000_abcd1234")
    assert job.next_check_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_hand_made_record_missing_optional_fields() -> None:
    job = Job.from_item(producer_records.hand_made("manual-1", 12))
    assert job.problems == ()
    assert job.job_type == FULL_PIPELINE  # absent means FULL_PIPELINE
    assert job.version is None
    assert job.report_id is None and job.effective_report_id is None
    assert job.logs == ()
    assert job.created_at is not None and job.created_at.tzinfo is UTC


def test_top_level_settings_of_older_records() -> None:
    job = Job.from_item(
        {"job_id": "j", "job_config": json.dumps({"include_moderation": "True", "model": "m"})}
    )
    assert job.config_bool("include_moderation", False) is True
    assert job.config_value("model") == "m"


@pytest.mark.parametrize("field", ["job_config", "job_results", "logs"])
def test_malformed_json_field_is_a_named_problem(field: str) -> None:
    job = Job.from_item({"job_id": "j", field: "{not json"})
    assert len(job.problems) == 1
    assert job.problems[0].startswith(f"{field}: malformed JSON")


def test_json_field_that_is_not_an_object() -> None:
    job = Job.from_item({"job_id": "j", "job_config": "[1, 2]"})
    assert job.problems == ("job_config: expected a JSON object, got list",)


@pytest.mark.parametrize(
    ("field", "value"), [("priority", "high"), ("timeout_seconds", "1.5"), ("created_at", "yesterday")]
)
def test_bad_scalars_are_named(field: str, value: str) -> None:
    job = Job.from_item({"job_id": "j", field: value})
    assert job.problems and job.problems[0].startswith(f"{field}:")


def test_missing_job_id_cannot_be_parsed() -> None:
    with pytest.raises(JobValidationError) as info:
        Job.from_item({"status": "PENDING"})
    assert info.value.field == "job_id"


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-04T05:06:07.123Z",
        "2026-03-04T05:06:07.123+00:00",
        "2026-03-04T05:06:07.123",
        "2026-03-04 05:06:07.123",
        "2026-03-04T05:06:07.123456789Z",
        "2026-03-04T07:06:07.123+02:00",
        "2026-03-04T05:06:07.123z",
    ],
)
def test_every_timestamp_format_means_the_same_instant(text: str) -> None:
    parsed = parse_timestamp(text)
    assert parsed is not None
    assert format_timestamp(parsed) == "2026-03-04T05:06:07.123Z"


def test_timestamp_without_fraction_and_empty() -> None:
    assert format_timestamp(parse_timestamp("2026-03-04T05:06:07Z")) == "2026-03-04T05:06:07.000Z"  # type: ignore[arg-type]
    assert parse_timestamp("") is None and parse_timestamp(None) is None
    with pytest.raises(JobValidationError):
        parse_timestamp("04/03/2026")


def test_format_timestamp_naive_is_utc() -> None:
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 678900)) == "2026-01-02T03:04:05.678Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("true", True),
        ("TRUE", True),
        (True, True),
        (False, False),
        (Decimal(1), True),
        (0, False),
    ],
)
def test_parse_bool(value: object, expected: bool) -> None:
    assert parse_bool(value, "x") is expected


def test_parse_bool_rejects_garbage() -> None:
    with pytest.raises(JobValidationError, match="x: expected true or false"):
        parse_bool("maybe", "x")


def test_parse_int() -> None:
    assert parse_int(Decimal("5"), "n", 0) == 5
    assert parse_int("7", "n", 0) == 7
    assert parse_int(None, "n", 3) == 3
    with pytest.raises(JobValidationError):
        parse_int("7.5", "n", 0)


def test_json_round_trip_and_log_cap() -> None:
    assert decode_json_field(encode_json({"a": Decimal("1.5"), "b": Decimal(2)}), "f") == {"a": 1.5, "b": 2}
    entries = [LogEntry(f"t{i}", "INFO", f"line {i}") for i in range(80)]
    kept = json.loads(encode_logs(entries))["entries"]
    assert len(kept) == 50 and kept[0]["message"] == "line 30" and kept[-1]["message"] == "line 79"


def test_epoch_numbers_are_parsed_or_named_never_raised() -> None:
    assert format_timestamp(parse_timestamp(Decimal("1767225600"))) == "2026-01-01T00:00:00.000Z"  # type: ignore[arg-type]
    assert format_timestamp(parse_timestamp(Decimal("1767225600123"))) == "2026-01-01T00:00:00.123Z"  # type: ignore[arg-type]
    job = Job.from_item({"job_id": "j", "run_after": Decimal("1e30"), "created_at": "9999-99-99"})
    assert [p.split(":")[0] for p in job.problems] == ["created_at", "run_after"]
