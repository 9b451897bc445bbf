"""How the semantic cache's nearest-neighbour search scales with the entries held: `python -m bench.semantic_scaling`.

Times `VectorIndex.nearest` (one matrix-vector product over every row, then the best of the asking partition) at
several sizes, with random unit vectors of OpenAI's `text-embedding-3-small` size (1536) by default. One process, one
thread of numpy's; the figures are the median of `--repeat` searches, on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import numpy as np

from gateway.cache.vectors import VectorIndex


def measure(rows: int, dims: int, repeat: int, rng: np.random.Generator) -> tuple[float, float]:
    """Median search time in ms, and the matrix's size in MiB, for an index of `rows` vectors."""
    index = VectorIndex(rows)
    for i, vector in enumerate(rng.standard_normal((rows, dims), dtype=np.float32)):
        index.add(f"p{i % 8}", vector, f"k{i}")  # eight partitions, as eight tenants would make
    queries = rng.standard_normal((repeat, dims), dtype=np.float32)
    times = []
    for query in queries:
        started = time.perf_counter()
        index.nearest("p0", query, 0.95)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, rows * dims * 4 / 2**20


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000,5000,10000,20000", help="comma-separated index sizes")
    parser.add_argument("--dims", type=int, default=1536)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    print(f"{'rows':>7}  {'dims':>5}  {'search p50 ms':>13}  {'matrix MiB':>10}")
    for rows in (int(r) for r in args.rows.split(",")):
        ms, mib = measure(rows, args.dims, args.repeat, rng)
        print(f"{rows:>7}  {args.dims:>5}  {ms:>13.3f}  {mib:>10.1f}")


if __name__ == "__main__":
    main()
