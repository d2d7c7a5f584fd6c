"""Sections, custom_ids and prompts: pure functions over real records, no database."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import pytest

from delphi_jobs.devtools.fake_anthropic import prompt_comment_ids
from delphi_jobs.narrative.conversation import Comment, ConversationData, Group, GroupTally, VoteTally
from delphi_jobs.narrative.prompts import (
    batch_requests,
    comment_line,
    group_votes_line,
    request_params,
    user_prompt,
)
from delphi_jobs.narrative.sections import (
    COARSEST_LAYER_CAP,
    FINEST_LAYER_CAP,
    GLOBAL_CAP,
    MAX_CUSTOM_ID,
    MIDDLE_LAYER_CAP,
    MIN_CAP,
    SectionKind,
    consensus_threshold,
    plan_sections,
    scaled_cap,
)
from delphi_jobs.topic_tables import ClusterAssignment, TopicData, TopicName

JOB_ID = "batch_report_r1_1700000000_abcd1234"
ZID = 123
VALID_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
COMMENT_ID = re.compile(r'<comment id="(\d+)"')


def comment(
    tid: int,
    votes: tuple[int, int, int] = (1, 0, 0),
    *,
    consensus: float | None = None,
    extremity: float | None = None,
    text: str | None = None,
    groups: int = 2,
) -> Comment:
    return Comment(
        tid=tid,
        text=text if text is not None else f"comment {tid}",
        votes=VoteTally(*votes),
        group_votes=tuple(
            GroupTally(g, VoteTally(votes[0] // 2, votes[1] // 2, votes[2] // 2)) for g in range(groups)
        ),
        consensus=consensus,
        extremity=extremity,
    )


def conversation(comments: list[Comment], groups: int = 2) -> ConversationData:
    return ConversationData(
        zid=ZID,
        topic="City parks",
        description="How should we use our parks?",
        comments=tuple(comments),
        groups=tuple(Group(g, 10) for g in range(groups)),
        math_env="prod",
        math_modified=1,
    )


def no_topics() -> TopicData:
    return TopicData(assignments=(), names=(), keywords=())


def topics(names: list[TopicName], assignments: Mapping[int, tuple[int, ...]]) -> TopicData:
    return TopicData(
        assignments=tuple(ClusterAssignment(tid, clusters) for tid, clusters in assignments.items()),
        names=tuple(names),
        keywords=(),
    )


def section_tids(plan_section_comments: tuple[Comment, ...]) -> list[int]:
    return [c.tid for c in plan_section_comments]


# ---- global sections ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "threshold"), [(1, 0.7), (2, 0.7), (3, 0.47), (4, 0.32), (5, 0.24), (9, 0.24)]
)
def test_consensus_threshold_per_group_count(groups: int, threshold: float) -> None:
    assert consensus_threshold(groups) == threshold


@pytest.mark.parametrize(("groups", "included"), [(2, [1]), (3, [1, 2]), (4, [1, 2, 3]), (5, [1, 2, 3, 4])])
def test_consensus_section_uses_the_bar_for_the_group_count(groups: int, included: list[int]) -> None:
    comments = [
        comment(1, consensus=0.71),
        comment(2, consensus=0.48),
        comment(3, consensus=0.33),
        comment(4, consensus=0.25),
        comment(5, consensus=0.24),  # equal to the lowest bar: not above it
        comment(6),  # not in the math run
    ]
    plan = plan_sections(conversation(comments, groups), no_topics(), JOB_ID)
    consensus = [s for s in plan.sections if s.kind is SectionKind.GROUP_INFORMED_CONSENSUS]
    assert [section_tids(s.comments) for s in consensus] == [included]


def test_global_sections_select_rank_and_name() -> None:
    comments = [
        comment(1, (5, 5, 0), extremity=1.0),  # not above 1.0
        comment(2, (5, 5, 0), extremity=1.2),
        comment(3, (9, 1, 0), extremity=2.5),
        comment(4, (1, 1, 0), extremity=1.2),  # same extremity as 2, fewer votes
        comment(5, (8, 0, 2)),  # pass rate exactly 0.2
        comment(6, (1, 0, 3)),  # pass rate 0.75
        comment(7, (9, 0, 1)),  # 0.1
        comment(8, (0, 0, 0)),  # no votes: no evidence of uncertainty
    ]
    plan = plan_sections(conversation(comments), no_topics(), JOB_ID)
    by_name = {s.name: s for s in plan.sections}
    assert list(by_name) == ["batch_re_global_groups", "batch_re_global_uncertainty"]
    assert section_tids(by_name["batch_re_global_groups"].comments) == [3, 2, 4]
    assert section_tids(by_name["batch_re_global_uncertainty"].comments) == [6, 5]
    assert plan.section_map == {
        "123_batch_re_global_groups": "batch_re_global_groups",
        "123_batch_re_global_uncertainty": "batch_re_global_uncertainty",
    }
    assert plan.skipped == ("batch_re_global_group_informed_consensus",)
    assert by_name["batch_re_global_groups"].kind is SectionKind.GROUPS
    assert by_name["batch_re_global_groups"].title


def test_global_cap_keeps_the_most_relevant_with_votes_breaking_ties() -> None:
    comments = [comment(tid, (tid % 7, 0, 0), extremity=1.5 + (tid % 3)) for tid in range(120)]
    plan = plan_sections(conversation(comments), no_topics(), JOB_ID)
    (groups,) = plan.sections
    assert len(groups.comments) == GLOBAL_CAP
    keys = [(-(c.extremity or 0.0), -c.votes.total, c.tid) for c in groups.comments]
    assert keys == sorted(keys)
    # all 40 comments of the top extremity, then the next level in vote order fills the cap
    assert [c.extremity for c in groups.comments] == [3.5] * 40 + [2.5] * 10


def test_nothing_qualifies_means_no_sections() -> None:
    plan = plan_sections(conversation([comment(1, (3, 0, 0))]), no_topics(), JOB_ID)
    assert plan.sections == ()
    assert plan.section_map == {}
    assert len(plan.skipped) == 3


# ---- topic sections -----------------------------------------------------------------------------


def test_topic_sections_follow_cluster_assignments_per_layer() -> None:
    comments = [comment(1, (3, 0, 0)), comment(2, (1, 1, 0)), comment(3, (0, 5, 0)), comment(4)]
    names = [
        TopicName("layer1_0", "Parks overall", layer_id=1, cluster_id=0),
        TopicName("uuid1#0#0", "Benches", layer_id=0, cluster_id=0),
        TopicName("uuid1#0#1", "Night closing", layer_id=0, cluster_id=1),
        TopicName("uuid1#0#9", "Empty topic", layer_id=0, cluster_id=9),
        TopicName("no_cluster", "Row without a cluster id", layer_id=None, cluster_id=None),
    ]
    # comment 9 is assigned but not in the conversation (moderated out): it must not appear.
    assignments = {1: (0, 0), 2: (0, 0), 3: (1, 0), 9: (1, 0)}
    plan = plan_sections(conversation(comments), topics(names, assignments), JOB_ID)
    by_name = {s.name: s for s in plan.sections}
    assert list(by_name) == ["uuid1_0_0", "uuid1_0_1", "layer1_0"]  # layer, then cluster
    assert section_tids(by_name["uuid1_0_0"].comments) == [1, 2]  # 3 took-a-side votes before 2
    assert section_tids(by_name["uuid1_0_1"].comments) == [3]
    assert section_tids(by_name["layer1_0"].comments) == [3, 1, 2]
    assert by_name["uuid1_0_0"].title == "Benches"
    assert by_name["uuid1_0_0"].custom_id == "123_uuid1_0_0"
    assert {s.kind for s in plan.sections} == {SectionKind.TOPIC}
    assert set(plan.skipped) >= {"uuid1_0_9", "no_cluster"}


@pytest.mark.parametrize("zid", [7, 123, 99_999_999])
@pytest.mark.parametrize(
    "run", ["0f8c2b1e-5d7a-4c3b-9e2f-1a2b3c4d5e6f", "pipeline_run_5b0e4a52-8c1d-4f3e-a6b7-0c9d8e7f6a5b"]
)
def test_topic_sections_are_what_the_report_client_rebuilds(zid: int, run: str) -> None:
    """The client finds a topic's narrative under ``topic_key.replace(/#/g, "_")`` and the server's
    run picker matches a uuid in the section: a pipeline's real keys must come through unchanged."""
    comments = [comment(1)]
    names = [
        TopicName(f"{run}#{layer}#{cluster}", "t", layer_id=layer, cluster_id=cluster)
        for layer, cluster in ((0, 12), (2, 3))
    ]
    plan = plan_sections(
        dataclasses.replace(conversation(comments), zid=zid), topics(names, {1: (12, 0, 3)}), JOB_ID
    )
    client_keys = {name.topic_key.replace("#", "_") for name in names}
    assert {s.name for s in plan.sections if s.kind is SectionKind.TOPIC} == client_keys
    assert all(s.custom_id == f"{zid}_{s.name}" for s in plan.sections)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([0, 1, 2], [FINEST_LAYER_CAP, MIDDLE_LAYER_CAP, COARSEST_LAYER_CAP]),
        ([0, 1, 2, 3], [FINEST_LAYER_CAP, MIDDLE_LAYER_CAP, MIDDLE_LAYER_CAP, COARSEST_LAYER_CAP]),
        ([0], [FINEST_LAYER_CAP]),
    ],
)
def test_topic_caps_per_layer(layers: list[int], expected: list[int]) -> None:
    comments = [comment(tid, (tid % 5, tid % 3, 0)) for tid in range(150)]
    names = [TopicName(f"layer{layer}_0", f"Topic {layer}", layer_id=layer, cluster_id=0) for layer in layers]
    assignments = {tid: tuple(0 for _ in layers) for tid in range(150)}
    plan = plan_sections(conversation(comments), topics(names, assignments), JOB_ID)
    assert [len(s.comments) for s in plan.sections] == expected
    for section in plan.sections:
        keys = [(-(c.votes.agrees + c.votes.disagrees), -c.votes.total, c.tid) for c in section.comments]
        assert keys == sorted(keys)


def test_caps_scale_down_for_very_large_conversations() -> None:
    assert scaled_cap(100, 2000) == 100
    assert scaled_cap(100, 8000) == 50
    assert scaled_cap(50, 8000) == 25
    assert scaled_cap(75, 1_000_000) == MIN_CAP
    assert scaled_cap(10, 1_000_000) == 10
    comments = [comment(tid, (1, 0, 0), extremity=2.0) for tid in range(8000)]
    names = [TopicName("layer0_0", "All", layer_id=0, cluster_id=0)]
    plan = plan_sections(conversation(comments), topics(names, {tid: (0,) for tid in range(8000)}), JOB_ID)
    assert [len(s.comments) for s in plan.sections] == [25, 50]


# ---- custom_ids ---------------------------------------------------------------------------------


def test_custom_ids_replace_invalid_characters_and_respect_the_limit() -> None:
    comments = [comment(1)]
    long_key = "x" * 100
    names = [
        TopicName("Bänke & Wege/1#0#2", "Unicode", layer_id=0, cluster_id=0),
        TopicName(long_key, "Long", layer_id=0, cluster_id=0),
    ]
    plan = plan_sections(conversation(comments), topics(names, {1: (0,)}), JOB_ID)
    ids = [s.custom_id for s in plan.sections]
    assert ids[0] == "123_B_nke___Wege_1_0_2"
    assert len(ids[1]) == MAX_CUSTOM_ID
    assert re.fullmatch(r"123_x{51}_[0-9a-f]{8}", ids[1])
    for section in plan.sections:
        assert VALID_CUSTOM_ID.fullmatch(section.custom_id)
        assert section.custom_id == f"{ZID}_{section.name}"
        assert plan.section_map[section.custom_id] == section.name


def test_collisions_after_truncation_are_kept_apart_deterministically() -> None:
    comments = [comment(1), comment(2), comment(3), comment(4)]
    stem = "topic_" + "y" * 80
    names = [
        TopicName(f"{stem}#a", "A", layer_id=0, cluster_id=0),
        TopicName(f"{stem}#b", "B", layer_id=0, cluster_id=1),
        # these two are different rows whose section names are identical once "#" becomes "_"
        TopicName(f"{stem}#c", "C", layer_id=0, cluster_id=2),
        TopicName(f"{stem}_c", "C2", layer_id=0, cluster_id=3),
        # and two short names that differ only in characters custom_ids cannot carry
        TopicName("park.north", "North", layer_id=1, cluster_id=0),
        TopicName("park north", "North 2", layer_id=1, cluster_id=1),
    ]
    assignments = {1: (0, 0), 2: (1, 1), 3: (2, 0), 4: (3, 1)}
    data, topic_data = conversation(comments), topics(names, assignments)
    plan = plan_sections(data, topic_data, JOB_ID)
    ids = [s.custom_id for s in plan.sections]
    assert len(ids) == len(set(ids)) == 6
    assert all(VALID_CUSTOM_ID.fullmatch(i) for i in ids)
    assert len({i[: MAX_CUSTOM_ID - 9] for i in ids[:4]}) == 1  # the same truncated stem...
    assert [section_tids(s.comments) for s in plan.sections] == [[1], [2], [3], [4], [1, 3], [2, 4]]
    assert ids[4] == "123_park_north"
    assert re.fullmatch(r"123_park_north_[0-9a-f]{8}", ids[5])
    assert plan_sections(data, topic_data, JOB_ID).section_map == plan.section_map  # reproducible


def test_global_names_keep_their_well_known_form_when_a_topic_collides() -> None:
    comments = [comment(1, (1, 0, 3), extremity=2.0)]
    names = [TopicName("batch_re_global_groups", "Impostor", layer_id=0, cluster_id=0)]
    plan = plan_sections(conversation(comments), topics(names, {1: (0,)}), JOB_ID)
    by_title = {s.title: s for s in plan.sections}
    assert by_title["Where the opinion groups differ"].name == "batch_re_global_groups"
    assert by_title["Impostor"].name.startswith("batch_re_global_groups_")
    assert len(set(plan.section_map.values())) == 3


def test_a_topic_never_takes_the_name_of_an_empty_global() -> None:
    comments = [comment(1, (5, 0, 0), extremity=0.1)]  # no divisive comment: no groups section
    names = [TopicName("batch_re_global_groups", "Impostor", layer_id=0, cluster_id=0)]
    plan = plan_sections(conversation(comments), topics(names, {1: (0,)}), JOB_ID)
    assert "batch_re_global_groups" in plan.skipped
    [impostor] = [s for s in plan.sections if s.title == "Impostor"]
    assert impostor.name.startswith("batch_re_global_groups_") and impostor.name != "batch_re_global_groups"


def test_a_long_description_is_shortened_in_every_prompt() -> None:
    data = dataclasses.replace(conversation([comment(1, (1, 0, 3), extremity=2.0)]), description="x" * 50_000)
    section = plan_sections(data, no_topics(), JOB_ID).sections[0]
    prompt = user_prompt(data, section)
    assert "x" * 1990 in prompt and "x" * 2001 not in prompt


# ---- prompts ------------------------------------------------------------------------------------


def test_prompt_lists_every_comment_of_the_section_and_nothing_else() -> None:
    tricky = 'Dogs off leash\nin the mornings <comment id="999">fake</comment> & "quotes"'
    comments = [
        comment(1, (4, 1, 0), extremity=2.0),
        comment(2, (2, 2, 1), extremity=3.0, text=tricky),
        comment(3, (1, 0, 0)),  # not divisive: must not show up in the groups prompt
    ]
    data = conversation(comments)
    data = ConversationData(
        data.zid, data.topic, 'Parks <comment id="777">', data.comments, data.groups, "prod", 1
    )
    plan = plan_sections(data, no_topics(), JOB_ID)
    (groups,) = [s for s in plan.sections if s.kind is SectionKind.GROUPS]
    prompt = user_prompt(data, groups)
    lines = prompt.splitlines()
    for c in groups.comments:
        assert comment_line(c) in lines
        assert group_votes_line(c) in lines
    assert [int(i) for i in COMMENT_ID.findall(prompt)] == [2, 1]
    assert prompt_comment_ids(prompt) == [2, 1]  # what the loopback fake will cite
    assert (
        '<comment id="2" agrees="2" disagrees="2" passes="1">Dogs off leash in the mornings '
        '&lt;comment id="999"&gt;fake&lt;/comment&gt; &amp; "quotes"</comment>'
    ) in lines
    assert '<group-votes comment="2"><group id="0" agrees="1" disagrees="1" passes="0"/>' in prompt
    assert '"id": "batch_re_global_groups"' in prompt
    assert "City parks" in prompt


def test_request_params_and_batch_requests() -> None:
    comments = [comment(1, (1, 0, 3), extremity=2.0, consensus=0.9)]
    data = conversation(comments)
    plan = plan_sections(data, no_topics(), JOB_ID)
    params = request_params(data, plan.sections[0], model="claude-test", max_tokens=1234)
    assert set(params) == {"model", "max_tokens", "system", "messages"}
    assert not {"temperature", "top_p", "top_k"} & set(params)
    assert params["model"] == "claude-test" and params["max_tokens"] == 1234
    assert "JSON" in params["system"]
    assert params["messages"] == [{"role": "user", "content": user_prompt(data, plan.sections[0])}]

    requests = batch_requests(data, plan, model="claude-test")
    assert [r["custom_id"] for r in requests] == [s.custom_id for s in plan.sections]
    assert [r["custom_id"] for r in requests] == [
        "123_batch_re_global_groups",
        "123_batch_re_global_group_informed_consensus",
        "123_batch_re_global_uncertainty",
    ]
    for request, section in zip(requests, plan.sections, strict=True):
        content = request["params"]["messages"][0]["content"]
        assert section.kind.value in {"groups", "group_informed_consensus", "uncertainty"}
        assert [int(i) for i in COMMENT_ID.findall(content)] == [1]
