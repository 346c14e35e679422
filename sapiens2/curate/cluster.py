"""Embedding clusters (faiss k-means, flat or hierarchical) and balanced sampling: even out over-represented
looks.

Hierarchical k-means follows Vo et al. 2024 ("Automatic Data Curation for Self-Supervised Learning: A
Clustering-Based Approach"): k-means on the images gives the level-1 (leaf) clusters, k-means on their
centroids the level-2 ones, and so on; a balanced sample then splits its target evenly over the top-level
clusters and, within each, over its children, down to the leaves. Web data is long-tailed at every scale
(a thousand near-identical street portraits, a dozen climbers): flat k-means balances the leaves but lets a
big concept own many leaves; the hierarchy balances the concepts too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def kmeans(features: np.ndarray, clusters: int, iterations: int = 20, seed: int = 0,
           restarts: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids) of spherical k-means on unit vectors, the best of `restarts` random initialisations
    (one alone often splits a big cluster and merges two small ones); `clusters` is capped at the row count.
    Labels are 0..m-1 with every cluster used (m <= clusters), centroids (m, D)."""
    import faiss

    n = len(features)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, features.shape[1] if features.ndim == 2 else 1), np.float32)
    k = min(clusters, n)
    x = np.ascontiguousarray(features, np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False,
                      nredo=restarts, min_points_per_centroid=1, max_points_per_centroid=1 << 20)
    km.train(x)
    _, labels = km.index.search(x, 1)
    used, labels = np.unique(labels[:, 0], return_inverse=True)
    return labels.astype(np.int64), np.asarray(km.centroids, np.float32)[used]


def kmeans_labels(features: np.ndarray, clusters: int, iterations: int = 20, seed: int = 0,
                  restarts: int = 3) -> np.ndarray:
    """Cluster id per row (see `kmeans`)."""
    return kmeans(features, clusters, iterations, seed, restarts)[0]


@dataclass
class Hierarchy:
    """`labels[l]`: each row's cluster at level l + 1 (labels[0]: the leaves, labels[-1]: the top level);
    `centroids`: the leaves' unit centroids, (leaves, D)."""

    labels: list[np.ndarray]
    centroids: np.ndarray

    def closeness(self, features: np.ndarray) -> np.ndarray:
        """Cosine similarity of each row to its leaf's centroid (for closest-first sampling)."""
        features = np.asarray(features, np.float32)
        out = np.zeros(len(features), np.float32)
        for s in range(0, len(features), 1 << 16):  # in chunks: the gathered centroids are as big as the features
            out[s:s + (1 << 16)] = np.einsum("nd,nd->n", features[s:s + (1 << 16)],
                                             self.centroids[self.labels[0][s:s + (1 << 16)]])
        return out


def check_levels(levels: Sequence[int]) -> list[int]:
    """`levels` as a list, or a ValueError saying what is wrong with it."""
    levels = [int(k) for k in levels]
    if not levels:
        raise ValueError("levels must name at least one level, e.g. [100]")
    if any(k < 1 for k in levels):
        raise ValueError(f"levels must be >= 1, got {levels}")
    if any(a <= b for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must be strictly decreasing (each level clusters the centroids of the one "
                         f"before), got {levels}")
    return levels


def hierarchical_kmeans(features: np.ndarray, levels: Sequence[int], iterations: int = 20, seed: int = 0,
                        restarts: int = 3) -> Hierarchy:
    """k-means with `levels[0]` clusters on the rows, then `levels[1]` on those centroids, and so on."""
    levels = check_levels(levels)
    leaf, centroids = kmeans(features, levels[0], iterations, seed, restarts)
    labels, points = [leaf], centroids
    for k in levels[1:]:
        parent, points = kmeans(points, k, iterations, seed, restarts)
        labels.append(parent[labels[-1]])
    return Hierarchy(labels, centroids)


def balanced_quota(sizes: np.ndarray, target: int) -> np.ndarray:
    """How many to take from each cluster: min(size, q), with q the largest cap whose total is <= target;
    the leftover (fewer than one per unfilled cluster) goes one each to the largest unfilled clusters."""
    sizes = np.asarray(sizes, np.int64)
    if target >= sizes.sum():
        return sizes.copy()
    lo, hi = 0, int(sizes.max())
    while lo < hi:  # largest q with sum(min(sizes, q)) <= target
        q = (lo + hi + 1) // 2
        lo, hi = (q, hi) if np.minimum(sizes, q).sum() <= target else (lo, q - 1)
    take = np.minimum(sizes, lo)
    left = target - int(take.sum())
    for c in np.argsort(-sizes, kind="stable"):
        if left == 0:
            break
        if take[c] < sizes[c]:
            take[c] += 1
            left -= 1
    return take


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """For dense ids 0..m-1: the rows of each id, ascending (one sort, not one scan per id)."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.cumsum(np.bincount(labels))[:-1]) if len(labels) else []


def leaf_quotas(labels: Sequence[np.ndarray], target: int) -> np.ndarray:
    """Per leaf (ids of `labels[0]`, contiguous from 0): its share of `target`, split top-down with
    `balanced_quota` (top-level clusters first, then each cluster's share among its children)."""
    labels = [np.asarray(lab, np.int64) for lab in labels]
    for lower, upper in zip(labels, labels[1:]):  # every cluster lies inside one cluster of the level above
        first = np.unique(lower, return_index=True)[1]
        if (upper[first][lower] != upper).any():
            raise ValueError("cluster levels are not nested: a cluster spans two clusters of the level above")
    quota = balanced_quota(np.bincount(labels[-1]), target)
    for lower, upper in zip(labels[-2::-1], labels[:0:-1]):  # from the level under the top down to the leaves
        sizes = np.bincount(lower)
        parent = np.zeros(len(sizes), np.int64)
        parent[lower] = upper
        share = np.zeros(len(sizes), np.int64)
        for p, children in enumerate(_members(parent)):
            if quota[p] and len(children):
                share[children] = balanced_quota(sizes[children], int(quota[p]))
        quota = share
    return quota


def yaw_bins(yaw: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each yaw (degrees) among `bins` equal bins on [-90, 90] (beyond: the end bins); NaN (no
    face) is bin `bins`."""
    yaw = np.asarray(yaw, np.float64)
    out = np.full(len(yaw), bins, np.int64)
    ok = np.isfinite(yaw)
    out[ok] = np.clip(np.floor((yaw[ok] + 90.0) / 180.0 * bins), 0, bins - 1).astype(np.int64)
    return out


def _round_robin(members: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`members` (already in preference order) interleaved over their groups: the first of each group, then
    the second of each, ...; the groups take turns in a seeded random order."""
    turn = rng.permutation(np.max(groups) + 1)[groups]
    rank = np.zeros(len(members), np.int64)
    for g in np.unique(groups):
        rank[groups == g] = np.arange(int((groups == g).sum()))
    return members[np.lexsort((turn, rank))]


def hierarchical_sample(labels: Sequence[np.ndarray], target: int, seed: int = 0,
                        closeness: np.ndarray | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """A boolean mask of a balanced sample of `target` rows: `leaf_quotas` rows from each leaf, taken at
    random (seeded) or, given `closeness`, highest first; with `groups` (an int per row, e.g. `yaw_bins`)
    a leaf takes its rows round-robin over the groups. `target` <= 0 or >= the row count keeps every row."""
    leaf = np.asarray(labels[0])
    keep = np.zeros(len(leaf), bool)
    if target <= 0 or target >= len(leaf):
        keep[:] = True
        return keep
    dense = [np.unique(np.asarray(lab), return_inverse=True)[1] for lab in labels]
    quota = leaf_quotas(dense, target)
    rng = np.random.default_rng(seed)
    rows = _members(dense[0])
    for c in np.flatnonzero(quota):
        members = rows[c]
        if closeness is None:
            members = rng.permutation(members)
        else:
            members = members[np.argsort(-np.asarray(closeness)[members], kind="stable")]
        if groups is not None:
            members = _round_robin(members, np.asarray(groups)[members], rng)
        keep[members[:int(quota[c])]] = True
    return keep


def balanced_sample(labels: np.ndarray, target: int, seed: int = 0) -> np.ndarray:
    """A boolean mask choosing `balanced_quota` rows of each cluster, uniformly at random (seeded)."""
    return hierarchical_sample([np.asarray(labels)], target, seed)
