"""A usage sink for tests: it keeps every record the engine submits, in order."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollgate.stats.v1 import stats_pb2


@dataclass
class RecordingSink:
    """The `UsageSink` an engine under test reports to; `records` is what it was given."""

    records: list[stats_pb2.UsageRecord] = field(default_factory=list)

    async def start(self) -> None:
        return None

    def submit(self, record: stats_pb2.UsageRecord) -> None:
        self.records.append(record)

    async def close(self) -> None:
        return None
