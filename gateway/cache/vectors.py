"""`VectorIndex`: exact nearest-neighbour search by cosine similarity over a bounded ring of unit vectors.

Brute force: one matrix-vector product over every stored row, then the best row of the asking partition. Its cost is
linear in the rows held (see docs/caching.md for measured figures); memory is rows * dimensions * 4 bytes. Past
`capacity` rows the oldest is overwritten. Vectors of another size than the first one stored are refused (an
embedding model changed under a running index).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_FIRST_ROWS = 64


class VectorIndex:
    """Up to `capacity` (partition, unit vector, key) rows."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._matrix: npt.NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)
        self._partitions: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._keys: list[str] = []
        self._partition_ids: dict[str, int] = {}
        self._next = 0  # the row the next add writes
        self._known: dict[str, int] = {}  # key -> row, so an entry seen twice (own and synced) is held once

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def dimensions(self) -> int:
        """The vectors' size; 0 until the first add."""
        return int(self._matrix.shape[1])

    def add(self, partition: str, vector: npt.ArrayLike, key: str) -> bool:
        """Hold `vector` for `key` in `partition`; False when it is refused (wrong size, zero, already held)."""
        unit = _unit(vector)
        if unit is None or key in self._known:
            return False
        if self.dimensions and unit.shape[0] != self.dimensions:
            return False
        row = self._next
        self._grow(row, unit.shape[0])
        if row < len(self._keys):  # the ring is full: forget the oldest
            del self._known[self._keys[row]]
            self._keys[row] = key
        else:
            self._keys.append(key)
        self._matrix[row] = unit
        self._partitions[row] = self._partition_ids.setdefault(partition, len(self._partition_ids))
        self._known[key] = row
        self._next = (row + 1) % self.capacity
        return True

    def nearest(self, partition: str, vector: npt.ArrayLike, threshold: float) -> tuple[str, float] | None:
        """The key of the most similar row of `partition` and its similarity, if that is at least `threshold`."""
        pid = self._partition_ids.get(partition)
        unit = _unit(vector)
        if pid is None or unit is None or unit.shape[0] != self.dimensions:
            return None
        rows = len(self._keys)
        scores = self._matrix[:rows] @ unit
        scores[self._partitions[:rows] != pid] = -2.0  # below any cosine similarity
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (self._keys[best], score) if score >= threshold else None

    def _grow(self, row: int, dims: int) -> None:
        if self._matrix.shape[1] == 0:
            self._matrix = np.zeros((min(_FIRST_ROWS, self.capacity), dims), dtype=np.float32)
            self._partitions = np.zeros(self._matrix.shape[0], dtype=np.int64)
        if row >= self._matrix.shape[0]:  # doubling, up to the capacity
            size = min(self.capacity, 2 * self._matrix.shape[0])
            self._matrix = np.resize(self._matrix, (size, dims))
            self._partitions = np.resize(self._partitions, size)


def _unit(vector: npt.ArrayLike) -> npt.NDArray[np.float32] | None:
    array = np.asarray(vector, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(array))
    if not array.size or not np.isfinite(norm) or norm == 0:
        return None
    return array / norm
