"""What a narrative report knows about one conversation, read from the Polis database (DESIGN 2.5).

Facts this module relies on, checked against Polis's own code:
- Votes are stored as -1 = agree, 1 = disagree, 0 = pass (the server's ``polisTypes.reactions``:
  ``pull`` = -1 is what the client sends for agree; the Clojure math counts ``vote < 0`` as agree).
- ``math_main.data`` is written by the math worker: ``tids``, ``group-clusters`` (``id``, ``members`` =
  base-cluster ids), ``base-clusters`` folded into columns, ``group-votes`` keyed by group id with
  ``n-members`` and ``votes`` = {tid: {A, D, S}} where S counts every vote seen (passes included),
  ``group-aware-consensus`` = {tid: value} and ``pca.comment-extremity`` aligned with ``tids``.
  JSON object keys arrive as strings; ints are accepted too.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2

_EXCLUDED_BY_REPORTS = """
    SELECT DISTINCT s.tid
    FROM report_comment_selections s
    LEFT JOIN reports r ON r.rid = s.rid
    WHERE s.selection = -1 AND (s.zid = %(zid)s OR r.zid = %(zid)s)
"""

_COMMENTS = """
    SELECT tid, txt
    FROM comments
    WHERE zid = %(zid)s AND mod > -1
    ORDER BY tid
"""

# -1 = agree, 1 = disagree, 0 = pass (see the module docstring).
_VOTE_TALLIES = """
    SELECT tid,
           count(*) FILTER (WHERE vote = -1),
           count(*) FILTER (WHERE vote = 1),
           count(*) FILTER (WHERE vote = 0)
    FROM votes_latest_unique
    WHERE zid = %(zid)s
    GROUP BY tid
"""

# (zid, math_env) is unique in Polis, but the newest row wins should a database hold several.
_MATH_MAIN = """
    SELECT data, modified
    FROM math_main
    WHERE zid = %(zid)s AND math_env = %(math_env)s
    ORDER BY modified DESC NULLS LAST
    LIMIT 1
"""


class ConversationDataError(ValueError):
    """The conversation cannot be reported on; the message says why (it becomes the job's error)."""


class ConversationNotFound(ConversationDataError):
    pass


class NoMathResults(ConversationDataError):
    """No math_main row for the conversation and math_env: nothing may be submitted."""

    def __init__(self, zid: int) -> None:
        super().__init__(f"no math results for conversation {zid}")
        self.zid = zid


class MalformedMathResults(ConversationDataError):
    """math_main.data does not have the documented layout; the message names the field."""


@dataclass(frozen=True)
class VoteTally:
    agrees: int = 0
    disagrees: int = 0
    passes: int = 0

    @property
    def total(self) -> int:
        return self.agrees + self.disagrees + self.passes

    @property
    def pass_rate(self) -> float:
        """Share of votes that were passes; 0 when nobody voted (no votes says nothing about doubt)."""
        return self.passes / self.total if self.total else 0.0


@dataclass(frozen=True)
class GroupTally:
    group_id: int
    votes: VoteTally


@dataclass(frozen=True)
class Group:
    group_id: int
    members: int


@dataclass(frozen=True)
class Comment:
    tid: int
    text: str
    votes: VoteTally
    group_votes: tuple[GroupTally, ...]
    """One entry per opinion group of the math run, in group id order."""
    consensus: float | None
    """Group-aware consensus; None when the math run did not include the comment."""
    extremity: float | None
    """PCA comment extremity; None when the math run did not include the comment."""


@dataclass(frozen=True)
class ConversationData:
    zid: int
    topic: str
    description: str
    comments: tuple[Comment, ...]
    groups: tuple[Group, ...]
    math_env: str
    math_modified: int | None


def load_conversation(
    conn: Any, zid: int, *, math_env: str = "prod", exclude_comment_selections: bool = True
) -> ConversationData:
    """Read everything a report needs. The connection's transaction is rolled back at the end so no
    snapshot or lock stays open on the Polis database: pass a connection used only for reading."""
    try:
        with conn.cursor() as cur:
            params = {"zid": zid, "math_env": math_env}
            cur.execute("SELECT topic, description FROM conversations WHERE zid = %(zid)s", params)
            conversation = cur.fetchone()
            if conversation is None:
                raise ConversationNotFound(f"conversation {zid} not found")
            cur.execute(_MATH_MAIN, params)
            math_row = cur.fetchone()
            if math_row is None:
                raise NoMathResults(zid)
            excluded: set[int] = set()
            if exclude_comment_selections:
                cur.execute(_EXCLUDED_BY_REPORTS, params)
                excluded = {int(row[0]) for row in cur.fetchall()}
            cur.execute(_COMMENTS, params)
            comment_rows = [(int(tid), str(txt)) for tid, txt in cur.fetchall() if int(tid) not in excluded]
            cur.execute(_VOTE_TALLIES, params)
            tallies = {int(tid): VoteTally(int(a), int(d), int(p)) for tid, a, d, p in cur.fetchall()}
    finally:
        with contextlib.suppress(psycopg2.Error):  # a dead connection must not hide the real error
            conn.rollback()

    math_data = _decode_math(math_row[0], zid)
    groups = _groups(math_data)
    group_votes = _group_votes(math_data)
    consensus = _consensus(math_data)
    extremity = _extremity(math_data)
    comments = tuple(
        Comment(
            tid=tid,
            text=text,
            votes=tallies.get(tid, VoteTally()),
            group_votes=tuple(
                GroupTally(g.group_id, group_votes.get(g.group_id, {}).get(tid, VoteTally())) for g in groups
            ),
            consensus=consensus.get(tid),
            extremity=extremity.get(tid),
        )
        for tid, text in comment_rows
    )
    return ConversationData(
        zid=zid,
        topic=str(conversation[0] or ""),
        description=str(conversation[1] or ""),
        comments=comments,
        groups=groups,
        math_env=math_env,
        math_modified=None if math_row[1] is None else int(math_row[1]),
    )


def _decode_math(raw: Any, zid: int) -> dict[str, Any]:
    """psycopg2 decodes json/jsonb columns itself; a text column still holds a JSON string."""
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        raise MalformedMathResults(f"math_main.data for conversation {zid} is not a JSON object")
    return data


def _key_int(key: Any, field: str) -> int:
    """Group ids and tids are JSON object keys (strings) in Polis output; ints are accepted too."""
    try:
        return int(key)
    except (TypeError, ValueError):
        raise MalformedMathResults(f"{field}: expected an integer id, got {key!r}") from None


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMathResults(f"{field}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise MalformedMathResults(f"{field}: expected a finite number, got {value!r}")
    return number


def _count(value: Any, field: str) -> int:
    number = _number(0 if value is None else value, field)
    if number < 0 or number != int(number):
        raise MalformedMathResults(f"{field}: expected a count, got {value!r}")
    return int(number)


def _mapping(data: Mapping[str, Any], field: str) -> Mapping[Any, Any]:
    value = data.get(field) or {}
    if not isinstance(value, Mapping):
        raise MalformedMathResults(f"{field}: expected a JSON object")
    return value


def _groups(data: Mapping[str, Any]) -> tuple[Group, ...]:
    """Groups from ``group-clusters``; the member count is ``n-members`` of ``group-votes`` when
    present, else the participants of the group's base clusters."""
    clusters = data.get("group-clusters") or []
    if not isinstance(clusters, list):
        raise MalformedMathResults("group-clusters: expected a list")
    votes = {_key_int(k, "group-votes"): v for k, v in _mapping(data, "group-votes").items()}
    base_sizes = _base_cluster_sizes(data)
    ids: dict[int, list[Any]] = {}
    for cluster in clusters:
        if not isinstance(cluster, Mapping) or "id" not in cluster:
            raise MalformedMathResults("group-clusters: each entry needs an id")
        members = cluster.get("members") or []
        ids[_key_int(cluster["id"], "group-clusters.id")] = members if isinstance(members, list) else []
    for gid in votes:
        ids.setdefault(gid, [])
    groups = []
    for gid in sorted(ids):
        entry = votes.get(gid)
        if isinstance(entry, Mapping) and entry.get("n-members") is not None:
            members = _count(entry["n-members"], f"group-votes.{gid}.n-members")
        else:
            members = sum(base_sizes.get(_key_int(b, "group-clusters.members"), 0) for b in ids[gid])
        groups.append(Group(gid, members))
    return tuple(groups)


def _base_cluster_sizes(data: Mapping[str, Any]) -> dict[int, int]:
    """Participants per base cluster from the folded ``{"id": [...], "members": [[pid...]]}`` form."""
    base = _mapping(data, "base-clusters")
    ids, members = base.get("id") or [], base.get("members") or []
    if not isinstance(ids, list) or not isinstance(members, list):
        raise MalformedMathResults("base-clusters: expected id and members lists")
    return {
        _key_int(bid, "base-clusters.id"): len(m) if isinstance(m, list) else 0
        for bid, m in zip(ids, members, strict=False)
    }


def _group_votes(data: Mapping[str, Any]) -> dict[int, dict[int, VoteTally]]:
    """Per group and tid: agrees A, disagrees D, passes S - A - D (S counts every vote seen)."""
    result: dict[int, dict[int, VoteTally]] = {}
    for gid_key, entry in _mapping(data, "group-votes").items():
        gid = _key_int(gid_key, "group-votes")
        votes = entry.get("votes") if isinstance(entry, Mapping) else None
        if not isinstance(votes, Mapping):
            raise MalformedMathResults(f"group-votes.{gid}.votes: expected a JSON object")
        per_tid: dict[int, VoteTally] = {}
        for tid_key, counts in votes.items():
            field = f"group-votes.{gid}.votes.{tid_key}"
            if not isinstance(counts, Mapping):
                raise MalformedMathResults(f"{field}: expected a JSON object")
            agrees = _count(counts.get("A"), f"{field}.A")
            disagrees = _count(counts.get("D"), f"{field}.D")
            seen = _count(counts.get("S"), f"{field}.S")
            per_tid[_key_int(tid_key, field)] = VoteTally(
                agrees, disagrees, max(seen - agrees - disagrees, 0)
            )
        result[gid] = per_tid
    return result


def _consensus(data: Mapping[str, Any]) -> dict[int, float]:
    return {
        _key_int(tid, "group-aware-consensus"): _number(value, f"group-aware-consensus.{tid}")
        for tid, value in _mapping(data, "group-aware-consensus").items()
    }


def _extremity(data: Mapping[str, Any]) -> dict[int, float]:
    """``pca.comment-extremity`` is positional: entry i belongs to ``tids[i]``; a length mismatch
    means the row is not what the math worker writes, so it is refused rather than misaligned."""
    tids = data.get("tids") or []
    values = _mapping(data, "pca").get("comment-extremity") or []
    if not isinstance(tids, list) or not isinstance(values, list):
        raise MalformedMathResults("tids and pca.comment-extremity: expected lists")
    if values and len(values) != len(tids):
        raise MalformedMathResults(
            f"pca.comment-extremity: {len(values)} values for {len(tids)} tids (they must be aligned)"
        )
    return {
        _key_int(tid, "tids"): _number(value, f"pca.comment-extremity[{i}]")
        for i, (tid, value) in enumerate(zip(tids, values, strict=False))
    }
