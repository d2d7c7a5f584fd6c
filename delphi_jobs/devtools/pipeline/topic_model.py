"""Comment topics without any model download: TF-IDF of the comment text, clustered into a hierarchy.

The TF-IDF vectors are first reduced to a few latent dimensions (LSA) so that short comments about one
subject come together even without a shared word. Layer 0 is the finest: spherical k-means into about
sqrt(n) clusters. Each coarser layer merges the clusters of the layer below (Ward's criterion on their
mean vectors), so every fine topic sits inside exactly one coarse topic, as the narrative expects. A
topic is named by its most distinctive terms: high TF-IDF inside the cluster compared with the whole
conversation.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from delphi_jobs.devtools.pipeline.polis_math import FloatArray, IntArray, kmeans
from delphi_jobs.topic_tables import ClusterAssignment, StructureKeywords, TopicData, TopicName

MODEL_NAME = "keywords"
KEYWORDS_PER_TOPIC = 5
NAME_TERMS = 3
MAX_LAYERS = 3
MAX_FINEST_CLUSTERS = 40
MAX_VOCABULARY = 2000
MAX_SEMANTIC_DIMENSIONS = 100

# Letters of any script (Polis is used far beyond English): a word starts with a letter.
_WORD = re.compile(r"[^\W\d_][^\W_]*(?:['-][^\W_]+)*")
# Scripts written without spaces between words: their runs are split into overlapping bigrams.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\u0e00-\u0e7f]+")

# Function words and words every civic comment uses; they would name every topic the same.
_STOP_WORDS_TEXT = """
    a about above after again against all also am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't
    down during each even ever every few for from further get gets getting had hadn't has hasn't have
    haven't having he her here hers herself him himself his how i if in into is isn't it it's its itself
    just let's like lot lots make makes many may me might more most much must my myself need needs no nor
    not now of off often on once one only or other others ought our ours ourselves out over own per
    rather really same shall she should shouldn't so some such than that that's the their theirs them
    themselves then there there's these they they're this those through to too under until up upon us
    very was wasn't we we're were weren't what when where which while who whom why will with within
    without won't would wouldn't yes yet you your yours yourself yourselves
    city people thing things think way ways want well already instead still
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


@dataclass(frozen=True)
class CommentText:
    tid: int
    text: str


def tokenize(text: str) -> list[str]:
    """Case-folded words minus stop words and one- or two-letter words (possessive ``'s`` dropped);
    runs of an unspaced script (Chinese, Japanese, Korean, Thai) become character bigrams."""
    folded = text.casefold().replace("\u2019", "'")
    bigrams = [run[i : i + 2] for run in _UNSPACED.findall(folded) for i in range(max(1, len(run) - 1))]
    words = (re.sub(r"'s$", "", w) for w in _WORD.findall(_UNSPACED.sub(" ", folded)))
    return [w for w in words if len(w) > 2 and w not in STOP_WORDS] + bigrams


def stem(word: str) -> str:
    """Fold plurals so "parks" and "park" count as one term; the display form is chosen later."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@dataclass(frozen=True, eq=False)
class TfIdf:
    terms: tuple[str, ...]
    """Display form of each column's term (its most frequent spelling)."""
    matrix: FloatArray
    """(n_comments, n_terms), rows L2-normalised (a comment without terms is a zero row)."""


def tfidf(texts: Sequence[str]) -> TfIdf:
    """Sublinear term frequency times smoothed inverse document frequency, rows normalised."""
    tokens = [tokenize(text) for text in texts]
    docs = [[stem(w) for w in words] for words in tokens]
    spellings: dict[str, Counter[str]] = {}
    for words, terms in zip(tokens, docs, strict=True):
        for word, term in zip(words, terms, strict=True):
            spellings.setdefault(term, Counter())[word] += 1
    df = Counter(term for doc in docs for term in set(doc))
    vocabulary = sorted(df, key=lambda t: (-df[t], t))[:MAX_VOCABULARY]
    column = {term: j for j, term in enumerate(vocabulary)}
    matrix = np.zeros((len(texts), len(vocabulary)))
    for i, doc in enumerate(docs):
        for term, count in Counter(doc).items():
            if term in column:
                matrix[i, column[term]] = 1.0 + math.log(count)
    idf = np.array([math.log((1 + len(texts)) / (1 + df[t])) + 1.0 for t in vocabulary])
    matrix *= idf
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    display = tuple(spellings[t].most_common(1)[0][0] for t in vocabulary)
    return TfIdf(terms=display, matrix=matrix)


def layer_sizes(n_comments: int) -> list[int]:
    """Clusters per layer, finest first: about sqrt(n), then 2.5 times fewer per coarser layer; a
    layer is added only while it still splits the comments (2 clusters, 3 for a third layer)."""
    sizes = [max(1, min(n_comments, MAX_FINEST_CLUSTERS, round(math.sqrt(n_comments))))]
    while len(sizes) < MAX_LAYERS:
        coarser = round(sizes[-1] / 2.5)
        if coarser < (2 if len(sizes) == 1 else 3) or coarser >= sizes[-1]:
            break
        sizes.append(coarser)
    return sizes


def semantic_space(matrix: FloatArray) -> FloatArray:
    """Latent semantic analysis: the comments in the top ~sqrt(n) singular directions of the TF-IDF
    matrix, rows normalised. Comments are short and rarely share words; words that occur together
    across the conversation share a direction, so related comments come close without a shared word."""
    if min(matrix.shape) == 0:
        return np.zeros((matrix.shape[0], 1))
    dims = min(MAX_SEMANTIC_DIMENSIONS, max(2, round(math.sqrt(matrix.shape[0]))))
    left, singular, _ = np.linalg.svd(matrix, full_matrices=False)
    space = left[:, :dims] * singular[:dims]
    norms = np.linalg.norm(space, axis=1, keepdims=True)
    normalised: FloatArray = np.divide(space, norms, out=np.zeros_like(space), where=norms > 0)
    return normalised


def _spherical_kmeans(space: FloatArray, k: int, seed: int) -> IntArray:
    """k-means on unit vectors: Euclidean distance between them is monotone in cosine distance."""
    return kmeans(space, k, seed=seed, restarts=8).labels


def _ward_merge(means: FloatArray, sizes: FloatArray, k: int) -> IntArray:
    """Merge clusters (given by mean vector and size) pairwise by least Ward cost until k are left;
    returns the new cluster of each input cluster."""
    groups = [[i] for i in range(means.shape[0])]
    centers = [means[i] for i in range(means.shape[0])]
    weights = [float(s) for s in sizes]

    def cost(a: int, b: int) -> float:
        gap = centers[a] - centers[b]
        return weights[a] * weights[b] / (weights[a] + weights[b]) * float(gap @ gap)

    while len(groups) > k:
        _, a, b = min((cost(a, b), a, b) for a in range(len(groups)) for b in range(a + 1, len(groups)))
        total = weights[a] + weights[b]
        centers[a] = (centers[a] * weights[a] + centers[b] * weights[b]) / total
        weights[a] = total
        groups[a].extend(groups.pop(b))
        centers.pop(b)
        weights.pop(b)
    parent = np.zeros(means.shape[0], dtype=np.intp)
    for new_id, members in enumerate(groups):
        parent[members] = new_id
    return parent


def _by_size(labels: IntArray) -> IntArray:
    """Renumber clusters so 0 is the largest (ties: the one holding the earlier comment)."""
    sizes = np.bincount(labels)
    first: dict[int, int] = {}
    for index, label in enumerate(labels.tolist()):
        first.setdefault(label, index)
    order = sorted(range(sizes.size), key=lambda c: (-sizes[c], first[c]))
    rank = np.empty(sizes.size, dtype=np.intp)
    rank[order] = np.arange(sizes.size)
    renumbered: IntArray = rank[labels]
    return renumbered


def cluster_layers(space: FloatArray, seed: int = 0) -> list[IntArray]:
    """Cluster label per comment for each layer, finest first; each layer nests in the next."""
    sizes = layer_sizes(space.shape[0])
    finest = _by_size(_spherical_kmeans(space, sizes[0], seed))
    layers = [finest]
    for k in sizes[1:]:
        below = layers[-1]
        n_below = int(below.max()) + 1
        if n_below <= k:
            break
        counts = np.bincount(below).astype(np.float64)
        means = np.array([space[below == c].mean(axis=0) for c in range(n_below)])
        layers.append(_by_size(_ward_merge(means, counts, k)[below]))
    return layers


def keywords(model: TfIdf, members: IntArray, count: int = KEYWORDS_PER_TOPIC) -> tuple[str, ...]:
    """The cluster's most distinctive terms: mean weight inside minus mean weight overall."""
    inside = model.matrix[members].mean(axis=0)
    score = inside - model.matrix.mean(axis=0)
    order = np.lexsort((np.arange(score.size), -inside, -score))
    return tuple(model.terms[j] for j in order[:count] if inside[j] > 0)


def topic_name(words: Sequence[str]) -> str:
    if not words:
        return "Other comments"
    name = ", ".join(words[:NAME_TERMS])
    return name[0].upper() + name[1:]


def comment_topics(
    comments: Sequence[CommentText], *, run_id: str, created_at: str, seed: int = 0
) -> TopicData:
    """Topic rows for the three topic tables: per-comment layer assignments, names and keywords.

    Topic names are keyed ``{run_id}#{layer}#{cluster}`` like the real pipeline's (run_id is the
    FULL_PIPELINE job's id): the report client rebuilds a topic's section name from that key. Keywords
    keep the real pipeline's ``layer{L}_{C}`` cluster keys."""
    if not comments:
        return TopicData(assignments=(), names=(), keywords=())
    ordered = sorted(comments, key=lambda c: c.tid)
    model = tfidf([c.text for c in ordered])
    layers = cluster_layers(semantic_space(model.matrix), seed)
    assignments = tuple(
        ClusterAssignment(comment_id=c.tid, clusters=tuple(int(layer[i]) for layer in layers))
        for i, c in enumerate(ordered)
    )
    names: list[TopicName] = []
    structure: list[StructureKeywords] = []
    for layer_id, labels in enumerate(layers):
        for cluster_id in range(int(labels.max()) + 1):
            members = np.flatnonzero(labels == cluster_id)
            words = keywords(model, members)
            key = f"layer{layer_id}_{cluster_id}"
            names.append(
                TopicName(
                    topic_key=f"{run_id}#{layer_id}#{cluster_id}",
                    topic_name=topic_name(words),
                    layer_id=layer_id,
                    cluster_id=cluster_id,
                    model_name=MODEL_NAME,
                    created_at=created_at,
                )
            )
            structure.append(
                StructureKeywords(
                    cluster_key=key,
                    layer_id=layer_id,
                    cluster_id=cluster_id,
                    keywords=words,
                    size=members.size,
                )
            )
    return TopicData(assignments=assignments, names=tuple(names), keywords=tuple(structure))
