"""The sections of a narrative report and their batch custom_ids (DESIGN 2.4).

One section per topic row, plus three global sections. Each section gets at most a few dozen
comments, most relevant first, so a prompt stays focused and its size bounded. The custom_id of a
section is ``{zid}_{section}``; the stored section name is the custom_id without that prefix, and
the plan's ``section_map`` is the only source of the custom_id -> section relation: nothing may
rebuild it by splitting strings.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from delphi_jobs.narrative.conversation import Comment, ConversationData
from delphi_jobs.topic_tables import TopicData, TopicName

MAX_CUSTOM_ID = 64
GLOBAL_CAP = 50
FINEST_LAYER_CAP = 100
MIDDLE_LAYER_CAP = 75
COARSEST_LAYER_CAP = 50
LARGE_CONVERSATION = 2000
"""Comment count above which caps shrink (see ``scaled_cap``)."""
MIN_CAP = 20
EXTREMITY_THRESHOLD = 1.0
UNCERTAINTY_THRESHOLD = 0.2
_CONSENSUS_THRESHOLDS = {2: 0.7, 3: 0.47, 4: 0.32}
_CONSENSUS_THRESHOLD_MANY = 0.24
_INVALID = re.compile(r"[^A-Za-z0-9_-]")
_HASH_SUFFIX = 9  # "_" + 8 hex characters


class SectionKind(StrEnum):
    TOPIC = "topic"
    GROUPS = "groups"
    GROUP_INFORMED_CONSENSUS = "group_informed_consensus"
    UNCERTAINTY = "uncertainty"


_GLOBAL_TITLES = {
    SectionKind.GROUPS: "Where the opinion groups differ",
    SectionKind.GROUP_INFORMED_CONSENSUS: "What the opinion groups agree on",
    SectionKind.UNCERTAINTY: "Where participants are unsure",
}


@dataclass(frozen=True)
class Section:
    custom_id: str
    name: str
    """Stored section name: the custom_id without its ``{zid}_`` prefix."""
    kind: SectionKind
    title: str
    comments: tuple[Comment, ...]


@dataclass(frozen=True)
class SectionPlan:
    zid: int
    job_id: str
    sections: tuple[Section, ...]
    skipped: tuple[str, ...]
    """Sections left out because no comment qualified (or a topic row names no cluster)."""

    @property
    def section_map(self) -> dict[str, str]:
        """custom_id -> stored section name; the handler keeps this on the job."""
        return {s.custom_id: s.name for s in self.sections}


def consensus_threshold(group_count: int) -> float:
    """Group-aware consensus multiplies one agreement probability per group, so it shrinks as groups
    are added; the bar drops with the group count. Fewer than two groups use the two-group bar."""
    return _CONSENSUS_THRESHOLDS.get(max(group_count, 2), _CONSENSUS_THRESHOLD_MANY)


def scaled_cap(base: int, comment_count: int) -> int:
    """Shrink a cap for very large conversations, which also have many more topic sections, so the
    batch's total prompt volume grows slower than the conversation: above ``LARGE_CONVERSATION``
    comments the cap scales by sqrt(LARGE_CONVERSATION / comments) (halved at four times that size),
    never below ``MIN_CAP`` (or the base, if smaller)."""
    if comment_count <= LARGE_CONVERSATION:
        return base
    return max(min(base, MIN_CAP), math.floor(base * math.sqrt(LARGE_CONVERSATION / comment_count)))


def layer_cap(layer: int, finest: int, coarsest: int) -> int:
    """Finer topics are narrower, so each may show more of its comments; a one-layer hierarchy
    counts as finest."""
    if layer == finest:
        return FINEST_LAYER_CAP
    if layer == coarsest:
        return COARSEST_LAYER_CAP
    return MIDDLE_LAYER_CAP


def plan_sections(data: ConversationData, topics: TopicData, job_id: str) -> SectionPlan:
    """Globals first (so they keep their well-known names on any collision), then topics by layer and
    cluster; empty sections are skipped and listed in ``skipped``."""
    ids = _CustomIds(data.zid)
    sections: list[Section] = []
    skipped: list[str] = []
    count = len(data.comments)

    def add(raw: str, kind: SectionKind, title: str, comments: tuple[Comment, ...]) -> None:
        if not comments:
            skipped.append(raw)
            return
        custom_id = ids.allocate(raw, reserved=kind is not SectionKind.TOPIC)
        sections.append(Section(custom_id, custom_id[len(ids.prefix) :], kind, title, comments))

    cap = scaled_cap(GLOBAL_CAP, count)
    threshold = consensus_threshold(len(data.groups))
    # A topic never takes a global's well-known name, even one whose global section stays empty.
    ids.reserve(f"{job_id[:8]}_global_{kind.value}" for kind in _GLOBAL_TITLES)
    for kind, selected in (
        (SectionKind.GROUPS, select_divisive(data.comments, cap)),
        (SectionKind.GROUP_INFORMED_CONSENSUS, select_consensus(data.comments, threshold, cap)),
        (SectionKind.UNCERTAINTY, select_uncertain(data.comments, cap)),
    ):
        add(f"{job_id[:8]}_global_{kind.value}", kind, _GLOBAL_TITLES[kind], selected)

    layers = [n.layer for n in topics.names if n.layer is not None]
    finest, coarsest = (min(layers), max(layers)) if layers else (0, 0)
    members = _cluster_members(data.comments, topics)
    for name in sorted(topics.names, key=_topic_order):
        raw = name.topic_key.replace("#", "_")
        layer, cluster = name.layer, name.cluster_id
        if layer is None or cluster is None:
            skipped.append(raw)
            continue
        cap = scaled_cap(layer_cap(layer, finest, coarsest), count)
        selected = select_topic(members.get((layer, cluster), ()), cap)
        add(raw, SectionKind.TOPIC, name.topic_name or name.topic_key, selected)
    return SectionPlan(data.zid, job_id, tuple(sections), tuple(skipped))


def select_divisive(comments: Iterable[Comment], cap: int) -> tuple[Comment, ...]:
    """``groups``: comments the opinion groups split on (extremity > 1.0); relevance is the
    extremity, the comment's distance from the centre of the opinion map."""
    chosen = [c for c in comments if c.extremity is not None and c.extremity > EXTREMITY_THRESHOLD]
    return _top(chosen, lambda c: c.extremity or 0.0, cap)


def select_consensus(comments: Iterable[Comment], threshold: float, cap: int) -> tuple[Comment, ...]:
    """``group_informed_consensus``: comments every group tends to agree with; relevance is the
    group-aware consensus itself."""
    chosen = [c for c in comments if c.consensus is not None and c.consensus > threshold]
    return _top(chosen, lambda c: c.consensus or 0.0, cap)


def select_uncertain(comments: Iterable[Comment], cap: int) -> tuple[Comment, ...]:
    """``uncertainty``: comments passed on by at least a fifth of voters; relevance is the pass rate,
    since the more people could not take a side, the more the comment says about open questions."""
    chosen = [c for c in comments if c.votes.total and c.votes.pass_rate >= UNCERTAINTY_THRESHOLD]
    return _top(chosen, lambda c: c.votes.pass_rate, cap)


def select_topic(comments: Iterable[Comment], cap: int) -> tuple[Comment, ...]:
    """Topic sections: every comment of the cluster qualifies; relevance is the number of people who
    took a side (agrees + disagrees), because those comments carry what the topic's debate is about."""
    return _top(list(comments), lambda c: float(c.votes.agrees + c.votes.disagrees), cap)


def _top(comments: list[Comment], relevance: Callable[[Comment], float], cap: int) -> tuple[Comment, ...]:
    """Most relevant first; total votes break ties, then the comment id, so plans are reproducible."""
    ranked = sorted(comments, key=lambda c: (-relevance(c), -c.votes.total, c.tid))
    return tuple(ranked[:cap])


def _cluster_members(comments: Iterable[Comment], topics: TopicData) -> dict[tuple[int, int], list[Comment]]:
    """(layer, cluster) -> the conversation's comments in it; assigned comment ids that are not among
    the conversation's comments (moderated out, deselected) are dropped here."""
    assignments = {a.comment_id: a.clusters for a in topics.assignments}
    members: dict[tuple[int, int], list[Comment]] = {}
    for comment in comments:
        for layer, cluster in enumerate(assignments.get(comment.tid, ())):
            members.setdefault((layer, cluster), []).append(comment)
    return members


def _topic_order(name: TopicName) -> tuple[int, int, str]:
    return (
        name.layer if name.layer is not None else -1,
        name.cluster_id if name.cluster_id is not None else -1,
        name.topic_key,
    )


def sanitize(text: str) -> str:
    """Batch custom_ids allow only ``[A-Za-z0-9_-]``; anything else becomes ``_``."""
    return _INVALID.sub("_", text)


class _CustomIds:
    """Allocates unique custom_ids within one batch.

    An id that fits and is free is used as is. One that is too long, or that collides with an earlier
    one (two names can sanitize alike), is cut to leave room for ``_`` plus 8 hex digits of a SHA-256 of
    the unsanitized section name, so distinct sections never merge and the same input always gives the
    same ids.
    """

    def __init__(self, zid: int) -> None:
        self.prefix = f"{zid}_"
        if len(self.prefix) + _HASH_SUFFIX >= MAX_CUSTOM_ID:
            raise ValueError(f"conversation id {zid} too long for a custom_id")
        self._used: set[str] = set()
        self._reserved: set[str] = set()

    def reserve(self, sections: Iterable[str]) -> None:
        """Keep these names for their own sections: only ``allocate(..., reserved=True)`` gets them."""
        self._reserved = {sanitize(self.prefix + s) for s in sections}

    def allocate(self, section: str, *, reserved: bool = False) -> str:
        base = sanitize(self.prefix + section)
        taken = self._used if reserved else self._used | self._reserved
        candidate = base
        attempt = 0
        while len(candidate) > MAX_CUSTOM_ID or candidate in taken or candidate == self.prefix:
            salt = section if attempt == 0 else f"{section}#{attempt}"
            digest = hashlib.sha256(salt.encode("utf-8")).hexdigest()[:8]
            candidate = f"{base[: MAX_CUSTOM_ID - _HASH_SUFFIX]}_{digest}"
            attempt += 1
        self._used.add(candidate)
        return candidate
