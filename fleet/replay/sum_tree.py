"""A sum tree (and min tree) over a fixed number of slots: prioritised sampling in O(log N) per draw."""

from __future__ import annotations

import numpy as np


class SumTree:
    """Non-negative values in ``capacity`` slots; ``find`` maps a point in [0, total) to the slot whose
    cumulative range holds it, so a uniform point draws slot i with probability value_i / total.
    Vectorised over many slots / points at once. Empty slots hold 0 (and +inf in the min tree)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity: {capacity!r} must be >= 1")
        self.capacity = capacity
        self._leaves = 1 << max(0, (capacity - 1).bit_length())  # a power of two: every leaf at one depth
        self._sum = np.zeros(2 * self._leaves)
        self._min = np.full(2 * self._leaves, np.inf)

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        """Slot ``slots[i]`` holds ``values[i]`` (a value of 0 empties it for sampling and min)."""
        slots = np.asarray(slots, np.int64)
        values = np.asarray(values, np.float64)
        if slots.size == 0:
            return
        if slots.min() < 0 or slots.max() >= self.capacity:
            raise IndexError(f"slot outside [0, {self.capacity})")
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError("sum tree values must be finite and >= 0")
        nodes = slots + self._leaves
        self._sum[nodes] = values
        self._min[nodes] = np.where(values > 0, values, np.inf)
        if nodes.size == 1:  # one insert: plain scalar steps up the tree, no array call per level
            node, sums, mins = int(nodes[0]) // 2, self._sum, self._min
            while node >= 1:
                sums[node] = sums[2 * node] + sums[2 * node + 1]
                mins[node] = min(mins[2 * node], mins[2 * node + 1])
                node //= 2
            return
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self._sum[nodes] = self._sum[2 * nodes] + self._sum[2 * nodes + 1]
            self._min[nodes] = np.minimum(self._min[2 * nodes], self._min[2 * nodes + 1])
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def get(self, slots: np.ndarray) -> np.ndarray:
        """The values of ``slots``."""
        return self._sum[np.asarray(slots, np.int64) + self._leaves]

    @property
    def total(self) -> float:
        """The sum of all values."""
        return float(self._sum[1])

    @property
    def min(self) -> float:
        """The smallest non-zero value (inf when all are 0)."""
        return float(self._min[1])

    def find(self, points: np.ndarray) -> np.ndarray:
        """The slot of each point in [0, total): descend left while the point is below the left sum."""
        v = np.array(points, np.float64)
        node = np.ones(v.shape, np.int64)
        for _ in range(self._leaves.bit_length() - 1):  # the tree's depth
            left = 2 * node
            # rounding can leave a point at (or past) the left sum with nothing to the right: stay left then
            right = (v >= self._sum[left]) & (self._sum[left + 1] > 0)
            v = np.where(right, v - self._sum[left], v)
            node = np.where(right, left + 1, left)
        return node - self._leaves
