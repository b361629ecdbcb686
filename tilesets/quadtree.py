"""The spatial tree of a tileset: a quadtree over a square of the storage CRS (metres), split where a cell
holds too many features or too many bytes. Only leaves hold features; each feature belongs to exactly one
leaf, chosen by one representative point (the centre of its bounding box), so the tree never splits a
feature and an edit touches exactly the leaves that held or now hold the feature.

Cells are addressed like implicit tiling: ``level/x/y`` with x growing east and y growing north from the
grid's south-west corner; cell (L, x, y) spans ``size / 2**L`` metres.

Decisions recorded here:
- A cell becomes a leaf when it holds at most ``max_features`` features whose estimated bytes sum to at
  most ``max_bytes``, when it holds a single feature, or at `MAX_LEVEL` (features sharing one point can
  not be separated; the leaf is then allowed to exceed the limits).
- The grid square is the points' bounding square, padded by 1 m; it is kept across incremental builds, so
  cell addresses stay stable. A point outside it forces a full re-plan (`QuadGrid.contains`).
- Incremental placement (`descend`) walks each point down the existing tree; a point reaching a missing
  quadrant of an internal cell starts a new leaf there. Leaves that overflow are re-split with `plan`;
  leaves that become empty disappear. Under-full leaves are not merged: a full build rebalances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

MAX_LEVEL = 24

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, order=True)
class Cell:
    """A quadtree cell: level 0 is the whole grid square."""

    level: int
    x: int
    y: int

    @property
    def key(self) -> str:
        return f"{self.level}/{self.x}/{self.y}"

    @classmethod
    def from_key(cls, key: str) -> Cell:
        level, x, y = (int(p) for p in key.split("/"))
        return cls(level, x, y)

    def parent(self) -> Cell:
        if self.level == 0:
            raise ValueError("the root cell has no parent")
        return Cell(self.level - 1, self.x // 2, self.y // 2)

    def ancestors(self) -> list[Cell]:
        """Parent, grandparent, … up to the root."""
        out, cell = [], self
        while cell.level > 0:
            cell = cell.parent()
            out.append(cell)
        return out


ROOT = Cell(0, 0, 0)


@dataclass(frozen=True)
class QuadGrid:
    """The square ``[x0, x0 + size) x [y0, y0 + size)`` of the storage CRS the quadtree divides."""

    x0: float
    y0: float
    size: float

    @classmethod
    def around(cls, x: FloatArray, y: FloatArray, pad: float = 1.0) -> QuadGrid:
        """The bounding square of the points, padded by ``pad`` metres on every side."""
        if len(x) == 0:
            return cls(0.0, 0.0, 1.0)
        xmin, xmax, ymin, ymax = float(x.min()), float(x.max()), float(y.min()), float(y.max())
        size = max(xmax - xmin, ymax - ymin) + 2 * pad
        cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
        return cls(cx - size / 2, cy - size / 2, size)

    def contains(self, x: FloatArray, y: FloatArray) -> npt.NDArray[np.bool_]:
        return np.asarray((x >= self.x0) & (x < self.x0 + self.size) & (y >= self.y0) & (y < self.y0 + self.size))

    def cell_index(self, x: FloatArray, y: FloatArray, level: int) -> tuple[IntArray, IntArray]:
        """Column and row of the level-``level`` cells holding the points (clipped to the grid)."""
        n = 1 << level
        step = self.size / n
        ix = np.clip(np.floor((x - self.x0) / step), 0, n - 1).astype(np.int64)
        iy = np.clip(np.floor((y - self.y0) / step), 0, n - 1).astype(np.int64)
        return ix, iy

    def bounds(self, cell: Cell) -> tuple[float, float, float, float]:
        """xmin, ymin, xmax, ymax of a cell in the storage CRS."""
        step = self.size / (1 << cell.level)
        return (self.x0 + cell.x * step, self.y0 + cell.y * step, self.x0 + (cell.x + 1) * step,
                self.y0 + (cell.y + 1) * step)  # fmt: skip


def plan(
    grid: QuadGrid,
    x: FloatArray,
    y: FloatArray,
    weight: FloatArray,
    max_features: int,
    max_bytes: float,
    start: Cell = ROOT,
    members: IntArray | None = None,
) -> dict[Cell, IntArray]:
    """Leaves of the quadtree under ``start`` holding the points ``members`` (default: all), as
    leaf cell → indices into x/y. ``weight`` is each feature's estimated bytes."""
    idx = np.arange(len(x), dtype=np.int64) if members is None else np.asarray(members, dtype=np.int64)
    leaves: dict[Cell, IntArray] = {}
    stack = [(start, idx)]
    while stack:
        cell, members_ = stack.pop()
        if len(members_) == 0:
            continue
        small = len(members_) <= max_features and float(weight[members_].sum()) <= max_bytes
        if small or len(members_) == 1 or cell.level >= MAX_LEVEL:
            leaves[cell] = np.sort(members_)
            continue
        ix, iy = grid.cell_index(x[members_], y[members_], cell.level + 1)
        quadrant = (ix - 2 * cell.x) * 2 + (iy - 2 * cell.y)
        order = np.argsort(quadrant, kind="stable")
        counts = np.bincount(quadrant, minlength=4)
        for q, part in enumerate(np.split(members_[order], np.cumsum(counts)[:3])):
            stack.append((Cell(cell.level + 1, 2 * cell.x + q // 2, 2 * cell.y + q % 2), part))
    return leaves


def internal_cells(leaves: Iterable[Cell]) -> set[Cell]:
    """Every strict ancestor of the given leaves (the tiles without content)."""
    out: set[Cell] = set()
    for leaf in leaves:
        for a in leaf.ancestors():
            if a in out:
                break
            out.add(a)
    return out


def descend(
    grid: QuadGrid, leaves: Iterable[Cell], x: FloatArray, y: FloatArray
) -> tuple[IntArray, IntArray, IntArray]:
    """For each point, the leaf it belongs to in the tree formed by ``leaves`` (as level, x, y arrays): the
    first cell on its path from the root that is not an internal cell, i.e. an existing leaf or a new leaf
    in an empty quadrant."""
    internal = internal_cells(leaves)
    n = len(x)
    level = np.zeros(n, dtype=np.int64)
    cx = np.zeros(n, dtype=np.int64)
    cy = np.zeros(n, dtype=np.int64)
    active = np.arange(n, dtype=np.int64)
    for lv in range(MAX_LEVEL + 1):
        if active.size == 0:
            break
        ix, iy = grid.cell_index(x[active], y[active], lv)
        keys, inverse = np.unique(_packed(ix, iy), return_inverse=True)
        inner = np.array([Cell(lv, k >> MAX_LEVEL, k & _LOW) in internal for k in keys.tolist()], dtype=bool)
        stop = ~inner[inverse.reshape(-1)]
        done = active[stop]
        level[done], cx[done], cy[done] = lv, ix[stop], iy[stop]
        active = active[~stop]
    return level, cx, cy


def group_by_cell(level: IntArray, x: IntArray, y: IntArray) -> dict[Cell, IntArray]:
    """Indices of the points per cell, from the per-point cell arrays of `descend`."""
    if len(level) == 0:
        return {}
    keys, inverse = np.unique((level << (2 * MAX_LEVEL)) | _packed(x, y), return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    parts = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(keys)))[:-1])
    return {
        Cell(k >> (2 * MAX_LEVEL), (k >> MAX_LEVEL) & _LOW, k & _LOW): np.asarray(p, dtype=np.int64)
        for k, p in zip(keys.tolist(), parts, strict=True)
    }


_LOW = (1 << MAX_LEVEL) - 1


def _packed(ix: IntArray, iy: IntArray) -> IntArray:
    """Cell columns and rows (each below 2^MAX_LEVEL) as one int64 each, ordered as the (ix, iy) pairs: a 1-D
    np.unique is many times faster than one over rows."""
    return np.asarray((ix.astype(np.int64) << MAX_LEVEL) | iy.astype(np.int64), dtype=np.int64)
