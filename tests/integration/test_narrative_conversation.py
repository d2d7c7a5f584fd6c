"""load_conversation against a real (embedded) PostgreSQL seeded with a Polis-shaped conversation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2.extras import Json

from delphi_jobs.narrative.conversation import (
    ConversationNotFound,
    Group,
    MalformedMathResults,
    NoMathResults,
    VoteTally,
    load_conversation,
)

ZID = 7
OTHER_ZID = 8
AGREE, DISAGREE, PASS = -1, 1, 0  # Polis's stored vote values


def math_data(consensus_of_0: float = 0.45, extremity: list[float] | None = None) -> dict[str, Any]:
    """A math_main.data document in the layout the math worker writes (keys as JSON strings)."""
    return {
        "n": 5,
        "n-cmts": 7,
        "tids": [0, 1, 2, 3, 4, 5, 6],
        "in-conv": [1, 2, 3, 4, 5],
        "base-clusters": {
            "id": [0, 1, 2],
            "members": [[1, 2], [3], [4, 5]],
            "x": [0.1, 0.2, -0.5],
            "y": [0.0, 0.3, 0.1],
            "count": [2, 1, 2],
        },
        "group-clusters": [
            {"id": 0, "center": [0.15, 0.1], "members": [0, 1]},
            {"id": 1, "center": [-0.5, 0.1], "members": [2]},
        ],
        "group-votes": {
            "0": {
                "id": 0,
                "n-members": 3,
                "votes": {"0": {"A": 3, "D": 0, "S": 3}, "1": {"A": 0, "D": 1, "S": 2}},
            },
            "1": {"id": 1, "n-members": 2, "votes": {"0": {"A": 0, "D": 1, "S": 2}}},
        },
        "group-aware-consensus": {"0": consensus_of_0, "1": 0.12, "5": 0.25},
        "pca": {
            "center": [0.0] * 7,
            "comps": [[0.1] * 7, [0.2] * 7],
            "comment-projection": [[0.0] * 7, [0.0] * 7],
            "comment-extremity": extremity if extremity is not None else [1.5, 0.2, 0.9, 0.3, 0.4, 0.6, 1.1],
        },
    }


@pytest.fixture
def conn(pg_url: str) -> Iterator[Any]:
    connection = psycopg2.connect(pg_url)
    seed(connection)
    yield connection
    connection.close()


def seed(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO conversations (zid, topic, description) VALUES (%s, %s, %s)",
            [
                (ZID, "City parks", "How should we use our parks?"),
                (OTHER_ZID, "Other", ""),
                (9, "No math yet", None),
            ],
        )
        comments = [
            (0, "More benches, please", 1),
            (1, "Close the parks at night", 0),
            (2, "Spam comment", -1),  # moderated out
            (3, "Deselected in a report", 0),
            (4, "Deselected in a legacy report row", 0),
            (5, "Selected in a report", 0),
            (6, "Dogs off leash\nin the mornings", 0),
        ]
        cur.executemany(
            "INSERT INTO comments (zid, tid, pid, txt, mod) VALUES (%s, %s, 1, %s, %s)",
            [(ZID, tid, txt, mod) for tid, txt, mod in comments],
        )
        cur.execute("INSERT INTO comments (zid, tid, pid, txt) VALUES (%s, 0, 1, 'elsewhere')", (OTHER_ZID,))
        cur.execute(
            "INSERT INTO reports (report_id, zid) VALUES ('r_parks', %s), ('r_parks_2', %s), ('r_other', %s) "
            "RETURNING rid",
            (ZID, ZID, OTHER_ZID),
        )
        rid, rid2, other_rid = (row[0] for row in cur.fetchall())
        cur.executemany(
            "INSERT INTO report_comment_selections (rid, tid, selection, zid) VALUES (%s, %s, %s, %s)",
            [
                (rid, 3, -1, ZID),
                (rid, 5, 1, ZID),
                (rid2, 4, -1, 0),  # zid column not filled in: found through reports.rid -> zid
                (other_rid, 6, -1, OTHER_ZID),  # another conversation's report must not exclude tid 6
            ],
        )
        votes = [
            (0, 1, AGREE),
            (0, 2, AGREE),
            (0, 3, AGREE),
            (0, 4, DISAGREE),
            (0, 5, PASS),
            (1, 1, DISAGREE),
            (1, 2, PASS),
            (2, 1, AGREE),
            (3, 1, DISAGREE),
        ]
        cur.executemany(
            "INSERT INTO votes_latest_unique (zid, tid, pid, vote) VALUES (%s, %s, %s, %s)",
            [(ZID, tid, pid, vote) for tid, pid, vote in votes],
        )
        # The vote history holds an older, different vote: only votes_latest_unique counts.
        cur.execute("INSERT INTO votes (zid, tid, pid, vote) VALUES (%s, 1, 1, %s)", (ZID, AGREE))
        cur.execute(
            "INSERT INTO votes_latest_unique (zid, tid, pid, vote) VALUES (%s, 0, 9, %s)", (OTHER_ZID, AGREE)
        )
        cur.execute(
            "INSERT INTO math_main (zid, math_env, data, modified) "
            "VALUES (%s, 'prod', %s, 1000), (%s, 'dev', %s, 2000)",
            (ZID, Json(math_data()), ZID, Json(math_data(consensus_of_0=0.99))),
        )
    conn.commit()


def test_comments_are_filtered_by_moderation_and_report_selections(conn: Any) -> None:
    data = load_conversation(conn, ZID)
    assert (data.zid, data.topic, data.description) == (ZID, "City parks", "How should we use our parks?")
    assert [c.tid for c in data.comments] == [0, 1, 5, 6]

    kept = load_conversation(conn, ZID, exclude_comment_selections=False)
    assert [c.tid for c in kept.comments] == [0, 1, 3, 4, 5, 6]  # mod -1 stays out regardless


def test_overall_and_group_tallies_follow_polis_vote_signs(conn: Any) -> None:
    comments = {c.tid: c for c in load_conversation(conn, ZID).comments}
    assert comments[0].votes == VoteTally(agrees=3, disagrees=1, passes=1)
    assert comments[0].votes.total == 5
    assert comments[1].votes == VoteTally(agrees=0, disagrees=1, passes=1)
    assert comments[5].votes == VoteTally()
    # Group passes are S - A - D; a group without an entry for the tid has no votes.
    assert [(g.group_id, g.votes) for g in comments[0].group_votes] == [
        (0, VoteTally(3, 0, 0)),
        (1, VoteTally(0, 1, 1)),
    ]
    assert [(g.group_id, g.votes) for g in comments[1].group_votes] == [
        (0, VoteTally(0, 1, 1)),
        (1, VoteTally()),
    ]


def test_math_values_are_aligned_with_tids(conn: Any) -> None:
    data = load_conversation(conn, ZID)
    comments = {c.tid: c for c in data.comments}
    assert data.groups == (Group(0, 3), Group(1, 2))
    assert (comments[0].consensus, comments[0].extremity) == (0.45, 1.5)
    assert (comments[5].consensus, comments[5].extremity) == (0.25, 0.6)
    assert (comments[6].consensus, comments[6].extremity) == (None, 1.1)
    assert (data.math_env, data.math_modified) == ("prod", 1000)


def test_math_env_selects_the_row(conn: Any) -> None:
    """The dev row is newer, but a prod job reads prod; a dev job reads dev."""
    prod = {c.tid: c for c in load_conversation(conn, ZID).comments}
    dev = {c.tid: c for c in load_conversation(conn, ZID, math_env="dev").comments}
    assert prod[0].consensus == 0.45
    assert dev[0].consensus == 0.99


def test_newest_row_wins_where_the_database_allows_several(conn: Any) -> None:
    """Polis keeps one row per (zid, math_env); a database without that constraint still gives the newest."""
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE math_main DROP CONSTRAINT math_main_zid_math_env_key")
        cur.execute(
            "INSERT INTO math_main (zid, math_env, data, modified) VALUES (%s, 'prod', %s, 3000), "
            "(%s, 'prod', %s, 500)",
            (ZID, Json(math_data(consensus_of_0=0.77)), ZID, Json(math_data(consensus_of_0=0.11))),
        )
    conn.commit()
    data = load_conversation(conn, ZID)
    assert data.math_modified == 3000
    assert data.comments[0].consensus == 0.77


def test_missing_math_results_raise_with_the_documented_message(conn: Any) -> None:
    with pytest.raises(NoMathResults) as no_row:
        load_conversation(conn, 9)
    assert str(no_row.value) == "no math results for conversation 9"
    with pytest.raises(NoMathResults) as other_env:
        load_conversation(conn, ZID, math_env="staging")
    assert str(other_env.value) == f"no math results for conversation {ZID}"


def test_unknown_conversation(conn: Any) -> None:
    with pytest.raises(ConversationNotFound, match="conversation 404 not found"):
        load_conversation(conn, 404)


def test_members_fall_back_to_base_clusters(conn: Any) -> None:
    data = math_data()
    for entry in data["group-votes"].values():
        del entry["n-members"]
    with conn.cursor() as cur:
        cur.execute("UPDATE math_main SET data = %s WHERE zid = %s AND math_env = 'prod'", (Json(data), ZID))
    conn.commit()
    assert load_conversation(conn, ZID).groups == (Group(0, 3), Group(1, 2))


def test_misaligned_extremity_is_refused(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE math_main SET data = %s WHERE zid = %s AND math_env = 'prod'",
            (Json(math_data(extremity=[1.0, 2.0])), ZID),
        )
    conn.commit()
    with pytest.raises(MalformedMathResults, match="comment-extremity"):
        load_conversation(conn, ZID)


def test_no_transaction_is_left_open(conn: Any) -> None:
    load_conversation(conn, ZID)
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    with pytest.raises(NoMathResults):
        load_conversation(conn, 9)
    assert conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
