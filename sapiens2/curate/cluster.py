"""Embedding clusters (faiss k-means) and balanced sampling: even out over-represented looks."""

from __future__ import annotations

import numpy as np


def kmeans_labels(features: np.ndarray, clusters: int, iterations: int = 20, seed: int = 0,
                  restarts: int = 3) -> np.ndarray:
    """Cluster id per row of unit vectors (spherical k-means, the best of `restarts` random
    initialisations: one alone often splits a big cluster and merges two small ones); `clusters` is capped
    at the row count."""
    import faiss

    n = len(features)
    if n == 0:
        return np.zeros(0, np.int64)
    k = min(clusters, n)
    x = np.ascontiguousarray(features, np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False,
                      nredo=restarts, min_points_per_centroid=1, max_points_per_centroid=1 << 20)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64)


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


def balanced_sample(labels: np.ndarray, target: int, seed: int = 0) -> np.ndarray:
    """A boolean mask choosing `balanced_quota` rows of each cluster, uniformly at random (seeded)."""
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), bool)
    if target <= 0 or target >= len(labels):
        keep[:] = True
        return keep
    ids, sizes = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    for c, take in zip(ids, balanced_quota(sizes, target)):
        members = np.flatnonzero(labels == c)
        keep[rng.choice(members, size=int(take), replace=False)] = True
    return keep
