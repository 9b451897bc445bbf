"""Usage reporting: records from the routing engine to the external `tollgate.stats.v1.StatsService`."""

from gateway.stats.reporter import ReporterCounters, UsageReporter
from gateway.stats.spool import Spool

__all__ = ["ReporterCounters", "Spool", "UsageReporter"]
