"""The chaos run's scenarios, small (`bench/chaos.py`; `make chaos` runs them full size and prints the matrix).

Real processes throughout: the fake upstream (two for the mid-stream rows), `tollgate statssvc`, and `tollgate serve`,
`engine` + `frontdoor`, or `serve --workers 2`. The targets: no usage record of an answered request lost after a
SIGKILL, stats server up or down, none stored twice; every SIGTERM with streams in flight exits within
shutdown_grace + 1 s, every stream ends with an in-band error (and `[DONE]`, or Anthropic's `error` event), and each
cut stream's record says `shutting_down`, not a client cancel (a front door stopped alone included); a target that
resets, stalls, sends an error event or a malformed event after its first words costs no client an error with
`stream_failover: true`, and each record holds both attempts' usage once.
"""

from __future__ import annotations

import pytest

from bench.chaos import QUICK, SCENARIOS, cluster_in, render


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_fault(name: str) -> None:
    async with cluster_in() as cluster:
        row = await SCENARIOS[name](cluster, QUICK)
    assert row.expected > 0, render([row])
    assert row.check() == [], render([row])
    assert row.notes == [], render([row])
