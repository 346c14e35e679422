"""Duplicate groups: pHash neighbours within a Hamming radius, then embedding neighbours above a cosine
similarity, joined transitively; each group keeps its best member.

Both searches are faiss range searches (binary flat index for the hashes, inner product on unit vectors for
the embeddings): exact, and O(N^2 / batch) work that a sharded or IVF index would replace at web scale.
"""

from __future__ import annotations

import numpy as np


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _pairs(lims: np.ndarray, ids: np.ndarray) -> list[tuple[int, int]]:
    return [(q, int(j)) for q in range(len(lims) - 1) for j in ids[lims[q]:lims[q + 1]] if j != q]


def phash_pairs(codes: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """Index pairs whose 64-bit codes ((N, 8) uint8) differ in at most `radius` bits."""
    import faiss

    if not len(codes):
        return []
    index = faiss.IndexBinaryFlat(64)
    index.add(np.ascontiguousarray(codes, np.uint8))
    # faiss binary range search keeps distances < radius: ask for radius + 1 to include it.
    lims, _, ids = index.range_search(np.ascontiguousarray(codes, np.uint8), radius + 1)
    return _pairs(lims, ids)


def embedding_pairs(features: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Index pairs of unit vectors with cosine similarity >= `threshold`."""
    import faiss

    if not len(features):
        return []
    x = np.ascontiguousarray(features, np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    # Inner-product range search keeps similarities > radius: nudge below the threshold to include it.
    lims, _, ids = index.range_search(x, float(np.nextafter(np.float32(threshold), np.float32(-2))))
    return _pairs(lims, ids)


def duplicate_groups(n: int, pairs: list[tuple[int, int]], rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join `pairs` transitively. Returns (group, keep): `group[i]` is the index of the member that stays
    for i's group (the one with the highest `rank`, ties to the lowest index), `keep[i]` whether i stays."""
    uf = _UnionFind(n)
    for a, b in pairs:
        uf.union(a, b)
    roots = np.array([uf.find(i) for i in range(n)], np.int64)
    best: dict[int, int] = {}
    for i in np.lexsort((np.arange(n), -rank)):  # best rank first
        best.setdefault(int(roots[i]), int(i))
    group = np.array([best[int(r)] for r in roots], np.int64)
    return group, group == np.arange(n)
