"""The built-in pipeline's opinion math on votes with known groups, and against Polis's definitions."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from delphi_jobs.devtools.pipeline.polis_math import (
    AGREE,
    DISAGREE,
    PASS,
    NoVotesError,
    Tally,
    Vote,
    VoteMatrix,
    comment_extremity,
    comment_projection,
    compute_math,
    fit_pca,
    group_aware_consensus,
    in_conversation,
    opinion_groups,
    project_participants,
    weighted_silhouette,
)

CONSENSUS_COMMENTS = 8
"""The comments everyone agrees with in a 40-comment planted conversation."""


def adjusted_rand_index(found: Sequence[int], truth: Sequence[int]) -> float:
    """Agreement of two partitions, 1.0 when identical up to relabelling, ~0 when unrelated."""
    pairs = math.comb(len(found), 2)
    together = sum(math.comb(n, 2) for n in Counter(zip(found, truth, strict=True)).values())
    in_found = sum(math.comb(n, 2) for n in Counter(found).values())
    in_truth = sum(math.comb(n, 2) for n in Counter(truth).values())
    expected = in_found * in_truth / pairs
    best = (in_found + in_truth) / 2
    return (together - expected) / (best - expected) if best != expected else 1.0


def planted_votes(
    groups: int, *, participants: int = 240, comments: int = 40, density: float = 0.7, seed: int = 0
) -> tuple[list[Vote], list[int]]:
    """Each group has its own side on every comment except the first fifth, which everyone agrees with;
    any two groups differ on at least a third of the others. Participants vote their group's side 80%
    of the time, pass 10%, and vote the other side 10%."""
    rng = random.Random(seed)
    shared = comments // 5
    sides: list[list[int]] = []
    while len(sides) < groups:
        candidate = [AGREE] * shared + [rng.choice((AGREE, DISAGREE)) for _ in range(comments - shared)]
        if all(sum(a != b for a, b in zip(candidate, s, strict=True)) >= comments // 3 for s in sides):
            sides.append(candidate)
    truth = [pid % groups for pid in range(participants)]
    rng.shuffle(truth)
    votes = []
    for pid, group in enumerate(truth):
        for tid in range(comments):
            if rng.random() < density:
                roll = rng.random()
                side = sides[group][tid]
                votes.append(Vote(pid, tid, side if roll < 0.8 else PASS if roll < 0.9 else -side))
    return votes, truth


@pytest.mark.parametrize("groups", [2, 3])
def test_finds_the_planted_groups(groups: int) -> None:
    votes, truth = planted_votes(groups, seed=groups)
    result = compute_math(votes, range(40))
    assert len(result.groups) == groups
    found = result.group_of()
    pids = sorted(found)
    assert len(pids) == 240
    assert adjusted_rand_index([found[p] for p in pids], [truth[p] for p in pids]) >= 0.95
    assert result.silhouettes[groups] == max(result.silhouettes.values())


@pytest.mark.parametrize("planted", [2, 3])
def test_silhouette_picks_the_planted_number_of_groups(planted: int) -> None:
    """Base-cluster centres in tight blobs, one blob per group, unequal sizes."""
    rng = np.random.default_rng(planted)
    anchors = np.array([[-3.0, 0.0], [3.0, 0.5], [0.0, 4.0]])[:planted]
    centers = np.concatenate([anchor + rng.normal(0, 0.4, size=(20, 2)) for anchor in anchors])
    weights = np.asarray(rng.integers(1, 6, size=centers.shape[0]), dtype=np.float64)
    clustering, silhouettes = opinion_groups(centers, weights)
    assert clustering.k == planted
    assert max(silhouettes, key=lambda k: silhouettes[k]) == planted
    assert sorted(silhouettes) == [2, 3, 4, 5]  # min(5, 2 + 60 // 12)
    for blob in range(planted):
        assert len(set(clustering.labels[blob * 20 : (blob + 1) * 20].tolist())) == 1


def test_weighted_silhouette_matches_the_participant_level_definition() -> None:
    """A base cluster of weight w is w participants at one spot: compare with a brute-force silhouette."""
    points = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [6.0, 0.0], [5.5, 1.0]])
    labels = np.array([0, 0, 1, 1, 1])
    weights = np.array([2.0, 1.0, 1.0, 3.0, 1.0])
    people = np.repeat(np.arange(5), weights.astype(int))
    scores = []
    for i in range(people.size):
        distance = [float(np.linalg.norm(points[people[i]] - points[people[j]])) for j in range(people.size)]
        own = [distance[j] for j in range(people.size) if j != i and labels[people[j]] == labels[people[i]]]
        other = [distance[j] for j in range(people.size) if labels[people[j]] != labels[people[i]]]
        a, b = sum(own) / len(own), sum(other) / len(other)
        scores.append((b - a) / max(a, b))
    assert weighted_silhouette(points, labels, weights) == pytest.approx(sum(scores) / len(scores))


def test_group_aware_consensus_is_the_product_of_smoothed_agree_rates() -> None:
    group_votes = {
        0: {7: Tally(agree=3, disagree=1, seen=4), 8: Tally(agree=0, disagree=2, seen=3)},
        1: {7: Tally(agree=1, disagree=1, seen=3), 8: Tally(agree=5, disagree=0, seen=5)},
    }
    consensus = group_aware_consensus(group_votes)
    assert consensus[7] == pytest.approx((4 / 6) * (2 / 5))
    assert consensus[8] == pytest.approx((1 / 5) * (6 / 7))


def test_tallies_and_consensus_in_the_output_follow_the_votes() -> None:
    """Two obvious camps of 10; comment 0 everyone agrees with, comment 1 splits them, one pass each."""
    votes = []
    for pid in range(20):
        camp = AGREE if pid < 10 else DISAGREE
        votes += [Vote(pid, 0, AGREE), Vote(pid, 1, PASS if pid in (0, 10) else camp)]
        votes += [Vote(pid, tid, camp) for tid in range(2, 9)]
    data = compute_math(votes, range(9)).data
    assert data["n"] == 20 and data["n-cmts"] == 9
    assert len(data["group-clusters"]) == 2
    tallies = [data["group-votes"][str(g)]["votes"]["1"] for g in range(2)]
    assert sorted((t["A"], t["D"], t["S"]) for t in tallies) == [(0, 9, 10), (9, 0, 10)]
    assert all(data["group-votes"][str(g)]["votes"]["0"] == {"A": 10, "D": 0, "S": 10} for g in range(2))
    assert data["group-aware-consensus"]["0"] == pytest.approx((11 / 12) ** 2)
    assert data["group-aware-consensus"]["1"] == pytest.approx((1 / 12) * (10 / 12))


def test_divisive_comments_are_more_extreme_than_consensus_ones() -> None:
    votes, _ = planted_votes(2, seed=11)
    data = compute_math(votes, range(40)).data
    extremity = data["pca"]["comment-extremity"]
    consensus, divisive = extremity[:CONSENSUS_COMMENTS], extremity[CONSENSUS_COMMENTS:]
    # With two groups a comment is divisive only where the two sides differ.
    votes_by_group = data["group-votes"]
    split = [
        tid
        for tid in range(CONSENSUS_COMMENTS, 40)
        if (votes_by_group["0"]["votes"][str(tid)]["A"] > votes_by_group["0"]["votes"][str(tid)]["D"])
        != (votes_by_group["1"]["votes"][str(tid)]["A"] > votes_by_group["1"]["votes"][str(tid)]["D"])
    ]
    assert len(split) >= 10
    assert min(extremity[tid] for tid in split) > max(consensus)
    assert all(extremity[tid] > 1.0 for tid in split)  # the narrative's "divisive" threshold
    assert max(consensus) < 0.5
    assert len(divisive) == 32


def test_comment_projection_is_a_lone_agree_vote_projected_like_a_participant() -> None:
    """Polis defines a comment's position as the sparsity-aware projection of a participant who voted
    -1 on that comment and nothing else; extremity is that position's length."""
    votes, _ = planted_votes(3, participants=60, comments=12, seed=5)
    matrix = VoteMatrix.from_votes(votes, range(12))
    pca = fit_pca(matrix.values)
    lone_votes = np.full((12, 12), np.nan)
    np.fill_diagonal(lone_votes, AGREE)
    expected = project_participants(lone_votes, pca)
    assert np.allclose(comment_projection(pca).T, expected)
    assert np.allclose(comment_extremity(pca), np.linalg.norm(expected, axis=1))


def test_pca_components_are_orthonormal_and_sparse_projection_scales_up_light_voters() -> None:
    votes, _ = planted_votes(2, participants=50, comments=10, density=1.0, seed=2)
    matrix = VoteMatrix.from_votes(votes, range(10))
    pca = fit_pca(matrix.values)
    assert np.allclose(pca.comps @ pca.comps.T, np.eye(2), atol=1e-9)
    full = matrix.values[:1]
    half = full.copy()
    half[0, 5:] = np.nan
    # Same answers on half the comments: the projection of the voted half is scaled by sqrt(10 / 5).
    partial = ((np.nan_to_num(half - pca.center)) @ pca.comps.T) * math.sqrt(2)
    assert np.allclose(project_participants(half, pca), partial)


def test_in_conversation_needs_seven_votes_and_keeps_at_least_fifteen() -> None:
    counts = np.array([7, 6, 12, 1, 30] + [9] * 20)
    mask = in_conversation(counts, n_comments=40)
    assert mask.tolist() == [True, False, True, False, True] + [True] * 20
    few = np.array([1, 5, 3, 2] + [8] * 10)
    assert in_conversation(few, n_comments=40).sum() == 14  # fewer than 15 people: everyone
    small = np.array([2, 3, 3, 1] + [1] * 20)
    chosen = in_conversation(small, n_comments=3)
    assert chosen[:3].all() and chosen.sum() == 15  # all who voted on every comment, then the top voters


def test_moderated_out_and_unvoted_comments_are_left_out() -> None:
    votes, _ = planted_votes(2, participants=40, comments=12, seed=3)
    data = compute_math(votes, [t for t in range(14) if t != 4]).data
    assert 4 not in data["tids"]
    assert data["tids"] == [t for t in range(12) if t != 4]  # 12 and 13 had no votes
    assert len(data["pca"]["comment-extremity"]) == len(data["tids"]) == data["n-cmts"]
    with pytest.raises(NoVotesError):
        compute_math(votes, [99])


def test_output_layout_is_the_polis_math_main_document() -> None:
    votes, _ = planted_votes(3, seed=8)
    data = compute_math(votes, range(40), math_tick=5).data
    assert set(data) == {
        "n", "n-cmts", "tids", "in-conv", "base-clusters", "group-clusters", "group-votes",
        "group-aware-consensus", "pca", "math_tick",
    }  # fmt: skip
    assert json.loads(json.dumps(data)) == data  # plain JSON, object keys are strings
    assert data["math_tick"] == 5
    base = data["base-clusters"]
    assert set(base) == {"id", "members", "x", "y", "count"}
    assert 1 < len(base["id"]) <= 100
    assert len(base["members"]) == len(base["x"]) == len(base["y"]) == len(base["count"]) == len(base["id"])
    assert [len(m) for m in base["members"]] == base["count"]
    assert sorted(p for m in base["members"] for p in m) == sorted(data["in-conv"])
    clusters = data["group-clusters"]
    assert sorted(b for g in clusters for b in g["members"]) == base["id"]
    assert all(set(g) == {"id", "center", "members"} and len(g["center"]) == 2 for g in clusters)
    for group in clusters:
        entry = data["group-votes"][str(group["id"])]
        assert entry["id"] == group["id"]
        assert entry["n-members"] == sum(base["count"][b] for b in group["members"])
        assert set(entry["votes"]) == {str(t) for t in data["tids"]}
        assert all(t["A"] + t["D"] <= t["S"] for t in entry["votes"].values())
    assert set(data["group-aware-consensus"]) == {str(t) for t in data["tids"]}
    pca = data["pca"]
    assert set(pca) == {"center", "comps", "comment-projection", "comment-extremity"}
    assert len(pca["comps"]) == len(pca["comment-projection"]) == 2
    assert all(len(row) == data["n-cmts"] for row in pca["comps"] + pca["comment-projection"])


def test_same_votes_in_any_order_give_identical_output() -> None:
    votes, _ = planted_votes(3, seed=4)
    first = compute_math(votes, range(40)).data
    shuffled = list(votes)
    random.Random(1).shuffle(shuffled)
    assert compute_math(shuffled, range(40)).data == first
    assert compute_math(votes, range(40)).data == first


def test_tokenizer_keeps_letters_of_any_script() -> None:
    from delphi_jobs.devtools.pipeline.topic_model import tokenize

    assert tokenize("Die Straßenbahn fährt öfter; mehr Grünflächen!") == [
        "die",
        "strassenbahn",
        "fährt",
        "öfter",
        "mehr",
        "grünflächen",
    ]
    assert "l'école" in tokenize("Rénover l'école du quartier")
    assert tokenize("公园需要更多长椅") == ["公园", "园需", "需要", "要更", "更多", "多长", "长椅"]
