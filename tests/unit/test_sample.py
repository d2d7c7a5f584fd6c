"""The sample conversation: Polis-shaped, deterministic, and with opinion groups the math can find."""

from __future__ import annotations

from collections import Counter

import psycopg2
import pytest

from delphi_jobs.devtools.pipeline.polis_math import Vote, compute_math
from delphi_jobs.devtools.pipeline.topic_model import CommentText, comment_topics, stem, tokenize
from delphi_jobs.devtools.sample_conversation import COMMENT_BANK, generate_sample, load_sample
from tests.unit.test_pipeline_math import adjusted_rand_index


def test_default_sample_has_the_documented_shape() -> None:
    sample = generate_sample()
    assert sample.participants == 300
    assert len(sample.comments) == 60
    assert [c.tid for c in sample.comments] == list(range(60))
    moderated = [c for c in sample.comments if c.mod == -1]
    assert len(moderated) == 4 and all(c.theme == "moderated" for c in moderated)
    assert {c.mod for c in sample.comments} <= {-1, 0, 1}
    assert Counter(c.theme for c in sample.comments if c.mod > -1).keys() == {"transport", "housing", "parks"}
    assert len({c.txt for c in sample.comments}) == 60
    on_topic = [c.txt for c in sample.comments if c.mod > -1]
    assert all(t[0].isupper() and t.endswith(".") and len(t.split()) >= 6 for t in on_topic)
    assert sample.topic and sample.description
    assert len(set(sample.participant_groups)) == 3


def test_votes_are_sparse_polis_votes_with_passes_and_changes() -> None:
    sample = generate_sample(seed=3)
    latest = sample.latest_votes
    assert {v.vote for v in latest} == {-1, 0, 1}
    counts = Counter(v.vote for v in latest)
    assert counts[0] / len(latest) > 0.05  # passes exist
    assert len(latest) < 0.85 * sample.participants * len(sample.comments)  # not everyone sees everything
    per_person = Counter(v.pid for v in latest)
    assert len(per_person) == sample.participants and min(per_person.values()) >= 10
    assert len(sample.votes) > len(latest)  # some votes were changed; the table keeps both
    assert [v.created for v in sample.votes] == sorted(v.created for v in sample.votes)
    created = {c.tid: c.created for c in sample.comments}
    assert all(v.created >= created[v.tid] for v in sample.votes)
    moderated = {c.tid for c in sample.comments if c.mod == -1}
    assert any(v.tid in moderated for v in latest)  # voted on before being moderated out


def test_same_seed_same_conversation_other_seed_other_one() -> None:
    assert generate_sample(seed=7, participants=50) == generate_sample(seed=7, participants=50)
    assert generate_sample(seed=7, participants=50).votes != generate_sample(seed=8, participants=50).votes


def test_sizes_are_configurable_and_checked() -> None:
    small = generate_sample(participants=40, comments=20, moderated=2, groups=2)
    assert small.participants == 40 and len(small.comments) == 22
    assert len(set(small.participant_groups)) == 2
    with pytest.raises(ValueError, match="comments"):
        generate_sample(comments=len(COMMENT_BANK) + 1)
    with pytest.raises(ValueError, match="groups"):
        generate_sample(groups=6)


@pytest.mark.parametrize(("groups", "seed"), [(2, 0), (3, 0), (3, 1), (3, 2)])
def test_the_math_recovers_the_planted_groups(groups: int, seed: int) -> None:
    sample = generate_sample(seed=seed, groups=groups)
    votes = [Vote(v.pid, v.tid, v.vote) for v in sample.latest_votes]
    result = compute_math(votes, sample.visible_tids)
    assert len(result.groups) == groups
    found = result.group_of()
    pids = sorted(found)
    assert adjusted_rand_index([found[p] for p in pids], [sample.participant_groups[p] for p in pids]) >= 0.9


def test_load_sample_fills_the_polis_tables(pg_url: str) -> None:
    sample = generate_sample(seed=2, participants=60, comments=20, moderated=3, zid=42)
    conn = psycopg2.connect(pg_url)
    try:
        load_sample(conn, sample, report_id="r_sample")
        with conn.cursor() as cur:
            cur.execute("SELECT topic, description FROM conversations WHERE zid = 42")
            assert cur.fetchone() == (sample.topic, sample.description)
            cur.execute("SELECT count(*), count(*) FILTER (WHERE mod = -1) FROM comments WHERE zid = 42")
            assert cur.fetchone() == (23, 3)
            cur.execute("SELECT count(*) FROM votes WHERE zid = 42")
            assert cur.fetchone() == (len(sample.votes),)
            cur.execute("SELECT pid, tid, vote FROM votes_latest_unique WHERE zid = 42 ORDER BY pid, tid")
            assert cur.fetchall() == [(v.pid, v.tid, v.vote) for v in sample.latest_votes]
            cur.execute("SELECT zid FROM reports WHERE report_id = 'r_sample'")
            assert cur.fetchone() == (42,)
    finally:
        conn.close()


def test_keyword_topics_follow_the_sample_themes_and_nest() -> None:
    sample = generate_sample(seed=0)
    comments = [CommentText(c.tid, c.txt) for c in sample.comments if c.mod > -1]
    topics = comment_topics(comments, run_id="job-1", created_at="2025-01-01T00:00:00.000Z")
    assert (
        comment_topics(list(reversed(comments)), run_id="job-1", created_at="2025-01-01T00:00:00.000Z")
        == topics
    )
    theme = {c.tid: c.theme for c in sample.comments}
    for layer, least_purity in ((0, 0.85), (1, 0.75)):
        clusters: dict[int, list[str]] = {}
        for a in topics.assignments:
            clusters.setdefault(a.clusters[layer], []).append(theme[a.comment_id])
        majority = sum(Counter(themes).most_common(1)[0][1] for themes in clusters.values())
        assert majority / len(comments) >= least_purity
    parents: dict[int, set[int]] = {}
    for a in topics.assignments:
        parents.setdefault(a.clusters[0], set()).add(a.clusters[1])
    assert all(len(p) == 1 for p in parents.values())  # each fine topic inside one coarse topic
    coarse = sorted(n.topic_name for n in topics.names if n.layer_id == 1)
    assert any(name.startswith("Parks") for name in coarse) and any("ousing" in name for name in coarse)


def test_tokens_drop_stop_words_and_fold_plurals() -> None:
    assert tokenize("The city's parks and the bike lanes, aren't they great?") == [
        "parks", "bike", "lanes", "great",
    ]  # fmt: skip
    assert [stem(w) for w in ("parks", "cities", "buses", "bus", "grass", "parking")] == [
        "park", "city", "buse", "bus", "grass", "parking",
    ]  # fmt: skip
    wordless = comment_topics([CommentText(1, "Yes!"), CommentText(2, "No.")], run_id="j", created_at="t")
    assert [n.topic_name for n in wordless.names] == ["Other comments"]
