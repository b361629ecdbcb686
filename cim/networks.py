"""Graph facts about pipe (and later road) networks, computed over edge lists."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def connected_components(
    vertices: Sequence[str], sources: Sequence[str], targets: Sequence[str]
) -> tuple[npt.NDArray[np.int64], int]:
    """Label each vertex with its connected component (edges undirected); returns (labels, count).

    Vertices without edges are components of their own. Union-find with path halving; labels are ordered
    by component size (vertex count), largest first, so label 0 is the main network. Edge ends that are not
    in ``vertices`` are ignored."""
    index = {v: i for i, v in enumerate(vertices)}
    parent = list(range(len(vertices)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for s, t in zip(sources, targets, strict=True):
        a, b = index.get(s), index.get(t)
        if a is None or b is None:
            continue
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    if not parent:
        return np.zeros(0, dtype=np.int64), 0
    roots = np.array([find(i) for i in range(len(parent))])
    uniq, inverse, counts = np.unique(roots, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse].astype(np.int64), len(uniq)
