"""Opinion math for one conversation, computed the way the Polis math worker does it.

Kept from Polis (compdemocracy/polis, ``math/src/polismath/math/{conversation,pca,clusters}.clj``),
because the readers of ``math_main`` rely on it:

- Votes are -1 agree, 1 disagree, 0 pass; a participant x comment matrix where unvoted cells are
  missing, replaced by the comment's mean vote for the PCA (2 components).
- Participants are projected from the comments they voted on only, scaled by
  sqrt(n_comments / n_votes) so that people who voted little are not pulled into the centre.
- A comment's projection is where a participant who voted -1 on that comment alone would land; its
  extremity is the length of that projection.
- ``in-conv``: participants with at least min(7, n_comments) votes, topped up with the biggest voters
  to 15. Up to 100 base clusters (k-means of their projections), then opinion groups: k-means of the
  base clusters weighted by size, k from 2 to min(5, 2 + n_base // 12), the best silhouette wins.
- ``group-votes`` counts A (agree), D (disagree) and S (every vote seen, passes included) per group and
  comment; group-aware consensus is the product over groups of (A + 1) / (S + 2).

Different on purpose: the PCA is exact (an eigen-decomposition) rather than power iteration; k-means is
seeded with k-means++ from fixed seeds and restarted, since there is no previous run to warm-start
from; the silhouette weighs each base cluster by its participants, which makes it the participant-level
silhouette with everyone placed at their base cluster's centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

AGREE = -1
DISAGREE = 1
PASS = 0

N_COMPONENTS = 2
MAX_BASE_CLUSTERS = 100
MAX_GROUPS = 5
IN_CONV_MIN_VOTES = 7
IN_CONV_GREEDY = 15


class NoVotesError(ValueError):
    """Nothing to compute: no votes on any comment that is part of the conversation."""


@dataclass(frozen=True)
class Vote:
    pid: int
    tid: int
    vote: int


@dataclass(frozen=True)
class Tally:
    """Votes of some participants on one comment; ``seen`` counts passes too (Polis ``S``)."""

    agree: int
    disagree: int
    seen: int


@dataclass(frozen=True, eq=False)
class VoteMatrix:
    """Participants (rows, sorted pids) by comments (columns, sorted tids); NaN where nobody voted."""

    pids: tuple[int, ...]
    tids: tuple[int, ...]
    values: FloatArray

    @classmethod
    def from_votes(cls, votes: Iterable[Vote], tids: Iterable[int]) -> VoteMatrix:
        """Keep votes on ``tids`` only (moderated-out comments are left out by the caller); a comment
        nobody voted on has no column, as in Polis, since it carries no opinion information."""
        allowed = set(tids)
        latest: dict[tuple[int, int], int] = {}
        for vote in votes:
            if vote.tid in allowed:
                latest[(vote.pid, vote.tid)] = (vote.vote > 0) - (vote.vote < 0)
        if not latest:
            raise NoVotesError("no votes on any comment of the conversation")
        pids = tuple(sorted({pid for pid, _ in latest}))
        used = tuple(sorted({tid for _, tid in latest}))
        row = {pid: i for i, pid in enumerate(pids)}
        col = {tid: j for j, tid in enumerate(used)}
        values = np.full((len(pids), len(used)), np.nan)
        for (pid, tid), value in latest.items():
            values[row[pid], col[tid]] = value
        return cls(pids, used, values)


@dataclass(frozen=True, eq=False)
class Pca:
    center: FloatArray
    """Mean vote per comment."""
    comps: FloatArray
    """(2, n_comments), unit rows (a zero row when the data has no variance left)."""


@dataclass(frozen=True, eq=False)
class Clustering:
    labels: IntArray
    """Cluster index per point, 0..k-1, every index used."""
    centers: FloatArray

    @property
    def k(self) -> int:
        return int(self.centers.shape[0])


@dataclass(frozen=True)
class OpinionGroup:
    group_id: int
    base_cluster_ids: tuple[int, ...]
    pids: tuple[int, ...]
    center: tuple[float, float]


@dataclass(frozen=True, eq=False)
class MathResult:
    data: dict[str, Any]
    """The ``math_main.data`` document (JSON-ready, object keys are strings)."""
    groups: tuple[OpinionGroup, ...]
    silhouettes: Mapping[int, float]
    """Silhouette of the group clustering for each k tried."""
    votes: int

    def group_of(self) -> dict[int, int]:
        """Participant -> opinion group, for participants in the conversation (``in-conv``)."""
        return {pid: group.group_id for group in self.groups for pid in group.pids}


def fit_pca(values: FloatArray) -> Pca:
    """Exact PCA of the vote matrix with missing votes replaced by the comment's mean vote."""
    voted = ~np.isnan(values)
    counts = voted.sum(axis=0)
    sums = np.where(voted, values, 0.0).sum(axis=0)
    center = np.divide(sums, counts, out=np.zeros(values.shape[1]), where=counts > 0)
    # Imputing the column mean and then centring leaves 0 in every unvoted cell.
    centered = np.where(voted, values - center, 0.0)
    comps = np.zeros((N_COMPONENTS, values.shape[1]))
    if values.shape[0] >= 2:
        eigvals, eigvecs = np.linalg.eigh(centered.T @ centered)
        order = np.argsort(-eigvals, kind="stable")[:N_COMPONENTS]
        for row, idx in enumerate(order):
            if eigvals[idx] > 1e-9:
                comps[row] = _oriented(eigvecs[:, idx])
    return Pca(center=center, comps=comps)


def _oriented(vector: FloatArray) -> FloatArray:
    """A component's sign is arbitrary; fix it (largest entry positive) so reruns give equal output."""
    return vector if vector[int(np.argmax(np.abs(vector)))] >= 0 else -vector


def project_participants(values: FloatArray, pca: Pca) -> FloatArray:
    """Polis's sparsity-aware projection: only voted comments count, scaled by sqrt(n / n_votes)."""
    voted = ~np.isnan(values)
    deltas = np.where(voted, values - pca.center, 0.0)
    n_votes = np.maximum(voted.sum(axis=1), 1)
    scale = np.sqrt(values.shape[1] / n_votes)
    projected: FloatArray = (deltas @ pca.comps.T) * scale[:, None]
    return projected


def comment_projection(pca: Pca) -> FloatArray:
    """(2, n_comments): the projection of a participant who voted -1 on that one comment only."""
    n_comments = pca.center.shape[0]
    projection: FloatArray = pca.comps * (AGREE - pca.center) * math.sqrt(n_comments)
    return projection


def comment_extremity(pca: Pca) -> FloatArray:
    """How far from the centre each comment pulls; large values mark comments that divide opinion."""
    extremity: FloatArray = np.linalg.norm(comment_projection(pca), axis=0)
    return extremity


def in_conversation(vote_counts: IntArray, n_comments: int) -> NDArray[np.bool_]:
    """Who is clustered: enough votes to place them, topped up with the biggest voters to 15."""
    mask: NDArray[np.bool_] = vote_counts >= min(IN_CONV_MIN_VOTES, n_comments)
    missing = IN_CONV_GREEDY - int(mask.sum())
    if missing > 0:
        order = np.argsort(-vote_counts, kind="stable")
        mask[[i for i in order if not mask[i]][:missing]] = True
    return mask


def _squared_distances(points: FloatArray, centers: FloatArray) -> FloatArray:
    """|p|^2 - 2 p.c + |c|^2: no (points x centres x dimensions) array, which TF-IDF rows would need."""
    cross = points @ centers.T
    distances: FloatArray = (
        (points * points).sum(axis=1)[:, None] - 2.0 * cross + (centers * centers).sum(axis=1)
    )
    return np.maximum(distances, 0.0)


def _seed_centers(points: FloatArray, k: int, weights: FloatArray, rng: np.random.Generator) -> FloatArray:
    """k-means++: each next centre drawn with probability proportional to weight x squared distance."""
    first = int(rng.choice(points.shape[0], p=weights / weights.sum()))
    centers = [points[first]]
    nearest = _squared_distances(points, points[first : first + 1])[:, 0]
    for _ in range(1, k):
        mass = weights * nearest
        total = float(mass.sum())
        if total <= 0.0:
            break
        pick = int(rng.choice(points.shape[0], p=mass / total))
        centers.append(points[pick])
        nearest = np.minimum(nearest, _squared_distances(points, points[pick : pick + 1])[:, 0])
    return np.array(centers)


def _compact(points: FloatArray, labels: IntArray, weights: FloatArray) -> Clustering:
    """Weighted centres of the non-empty clusters, relabelled 0..k-1 (Polis drops empty clusters)."""
    used, compact = np.unique(labels, return_inverse=True)
    totals = np.bincount(compact, weights=weights, minlength=used.size)
    sums = np.zeros((used.size, points.shape[1]))
    np.add.at(sums, compact, points * weights[:, None])
    return Clustering(labels=compact.astype(np.intp), centers=sums / totals[:, None])


def kmeans(
    points: FloatArray,
    k: int,
    *,
    weights: FloatArray | None = None,
    seed: int = 0,
    restarts: int = 4,
    max_iter: int = 100,
) -> Clustering:
    """Weighted Lloyd k-means, best of ``restarts`` k-means++ starts; k is capped at the number of
    distinct points, and clusters that empty out are dropped, so fewer than k may come back."""
    w = np.ones(points.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    k = max(1, min(k, int(np.unique(points, axis=0).shape[0])))
    rng = np.random.default_rng(seed)
    runs = [_lloyd(points, _seed_centers(points, k, w, rng), w, max_iter) for _ in range(max(1, restarts))]
    return min(runs, key=lambda run: run[1])[0]


def _lloyd(
    points: FloatArray, seeds: FloatArray, weights: FloatArray, max_iter: int
) -> tuple[Clustering, float]:
    """One k-means run from the given centres; returns the clustering and its weighted inertia."""
    labels: IntArray = np.argmin(_squared_distances(points, seeds), axis=1)
    clustering = _compact(points, labels, weights)
    for _ in range(max_iter):
        labels = np.argmin(_squared_distances(points, clustering.centers), axis=1)
        if np.array_equal(labels, clustering.labels):
            break
        clustering = _compact(points, labels, weights)
    distances = _squared_distances(points, clustering.centers)
    inertia = float((weights * distances[np.arange(points.shape[0]), clustering.labels]).sum())
    return clustering, inertia


def weighted_silhouette(points: FloatArray, labels: IntArray, weights: FloatArray) -> float:
    """Silhouette of a clustering where point i stands for ``weights[i]`` participants at one place.

    a = mean distance to the other participants of one's own cluster (those sharing the point are at
    distance 0), b = the smallest mean distance to another cluster; a participant alone in its cluster
    scores 0, as in Polis and scikit-learn.
    """
    k = int(labels.max()) + 1
    if k < 2:
        return 0.0
    rows = np.arange(points.shape[0])
    distances = np.sqrt(_squared_distances(points, points))
    member_weight = np.zeros((points.shape[0], k))
    member_weight[rows, labels] = weights
    sums = distances @ member_weight
    totals = member_weight.sum(axis=0)
    own_total = totals[labels]
    a = np.divide(sums[rows, labels], own_total - 1, out=np.zeros(points.shape[0]), where=own_total > 1)
    to_others = sums / totals
    to_others[rows, labels] = np.inf
    b = to_others.min(axis=1)
    scale = np.maximum(a, b)
    valid = (own_total > 1) & (scale > 0)
    scores = np.divide(b - a, scale, out=np.zeros(points.shape[0]), where=valid)
    return float((weights * scores).sum() / weights.sum())


def opinion_groups(
    centers: FloatArray, weights: FloatArray, *, seed: int = 0
) -> tuple[Clustering, dict[int, float]]:
    """Cluster base clusters into 2..min(5, 2 + n // 12) groups; the best silhouette wins, the smaller
    k on a tie. Returns the chosen clustering and the silhouette of every k tried."""
    max_k = min(MAX_GROUPS, 2 + centers.shape[0] // 12, int(np.unique(centers, axis=0).shape[0]))
    best: Clustering | None = None
    silhouettes: dict[int, float] = {}
    for k in range(2, max_k + 1):
        clustering = kmeans(centers, k, weights=weights, seed=seed + k, restarts=8)
        if clustering.k != k:
            continue
        silhouettes[k] = weighted_silhouette(centers, clustering.labels, weights)
        if best is None or silhouettes[k] > silhouettes[best.k] + 1e-12:
            best = clustering
    if best is None:  # everyone in one place: a single group
        return _compact(centers, np.zeros(centers.shape[0], dtype=np.intp), weights), silhouettes
    return best, silhouettes


def tally(values: FloatArray) -> list[Tally]:
    """Per comment (column) of the given participants' rows."""
    agree = (values < 0).sum(axis=0)
    disagree = (values > 0).sum(axis=0)
    seen = (~np.isnan(values)).sum(axis=0)
    return [Tally(int(a), int(d), int(s)) for a, d, s in zip(agree, disagree, seen, strict=True)]


def group_aware_consensus(group_votes: Mapping[int, Mapping[int, Tally]]) -> dict[int, float]:
    """Polis: the product over groups of each group's smoothed agree rate (A + 1) / (S + 2), high only
    when every group agrees."""
    consensus: dict[int, float] = {}
    for votes in group_votes.values():
        for tid, counts in votes.items():
            consensus[tid] = consensus.get(tid, 1.0) * (counts.agree + 1) / (counts.seen + 2)
    return consensus


def compute_math(
    votes: Iterable[Vote], tids: Iterable[int], *, math_tick: int = 0, seed: int = 0
) -> MathResult:
    """Everything ``math_main.data`` holds, from the votes on ``tids`` (moderated-out comments are
    left out of ``tids`` by the caller). Deterministic for a given seed, whatever the vote order."""
    matrix = VoteMatrix.from_votes(votes, tids)
    pca = fit_pca(matrix.values)
    projection = project_participants(matrix.values, pca)
    vote_counts = (~np.isnan(matrix.values)).sum(axis=1)
    rows = np.flatnonzero(in_conversation(vote_counts, len(matrix.tids)))

    base = kmeans(projection[rows], MAX_BASE_CLUSTERS, seed=seed)
    # Base cluster ids follow their smallest member pid (rows are in pid order), a stable order.
    base_rows = sorted((rows[base.labels == c] for c in range(base.k)), key=lambda members: int(members[0]))
    base_centers = np.array([projection[members].mean(axis=0) for members in base_rows])
    base_counts = np.array([float(members.size) for members in base_rows])

    grouping, silhouettes = opinion_groups(base_centers, base_counts, seed=seed)
    # Group 0 is the largest; ties go to the group further left.
    sizes = np.bincount(grouping.labels, weights=base_counts)
    order = sorted(range(grouping.k), key=lambda g: (-sizes[g], float(grouping.centers[g][0])))
    groups: list[OpinionGroup] = []
    group_votes: dict[int, dict[int, Tally]] = {}
    for gid, cluster in enumerate(order):
        bids = tuple(int(b) for b in np.flatnonzero(grouping.labels == cluster))
        members = np.sort(np.concatenate([base_rows[b] for b in bids]))
        center = grouping.centers[cluster]
        groups.append(
            OpinionGroup(
                group_id=gid,
                base_cluster_ids=bids,
                pids=tuple(matrix.pids[i] for i in members),
                center=(float(center[0]), float(center[1])),
            )
        )
        group_votes[gid] = dict(zip(matrix.tids, tally(matrix.values[members]), strict=True))

    data = _math_main_data(matrix, pca, rows, base_rows, base_centers, groups, group_votes, math_tick)
    votes_used = int(vote_counts.sum())
    return MathResult(data=data, groups=tuple(groups), silhouettes=silhouettes, votes=votes_used)


def _math_main_data(
    matrix: VoteMatrix,
    pca: Pca,
    rows: IntArray,
    base_rows: list[IntArray],
    base_centers: FloatArray,
    groups: list[OpinionGroup],
    group_votes: dict[int, dict[int, Tally]],
    math_tick: int,
) -> dict[str, Any]:
    """The Polis ``math_main.data`` layout (base clusters folded into columns, as ``fold-clusters``)."""
    projection = comment_projection(pca)
    return {
        "n": len(matrix.pids),
        "n-cmts": len(matrix.tids),
        "tids": list(matrix.tids),
        "in-conv": [matrix.pids[i] for i in rows],
        "base-clusters": {
            "id": list(range(len(base_rows))),
            "members": [[matrix.pids[i] for i in members] for members in base_rows],
            "x": [float(c[0]) for c in base_centers],
            "y": [float(c[1]) for c in base_centers],
            "count": [int(members.size) for members in base_rows],
        },
        "group-clusters": [
            {"id": g.group_id, "center": list(g.center), "members": list(g.base_cluster_ids)} for g in groups
        ],
        "group-votes": {
            str(g.group_id): {
                "id": g.group_id,
                "n-members": len(g.pids),
                "votes": {
                    str(tid): {"A": t.agree, "D": t.disagree, "S": t.seen}
                    for tid, t in group_votes[g.group_id].items()
                },
            }
            for g in groups
        },
        "group-aware-consensus": {
            str(tid): value for tid, value in group_aware_consensus(group_votes).items()
        },
        "pca": {
            "center": pca.center.tolist(),
            "comps": pca.comps.tolist(),
            "comment-projection": projection.tolist(),
            "comment-extremity": comment_extremity(pca).tolist(),
        },
        "math_tick": math_tick,
    }
