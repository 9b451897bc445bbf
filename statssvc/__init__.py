"""The reference StatsService (tollgate.stats.v1): a durable usage store. It arrives with the stats work."""
