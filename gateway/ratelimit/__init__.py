"""Rate, token, concurrency and spend limits: the backend contract, the arithmetic, and where the counters live.

`backend` is the contract (`LimiterBackend`, `Bucket`, `Charge`, `Admission`); `gcra` the arithmetic; `memory` and
`redis_backend` the stores (one process; shared by replicas); `failover` the policy for a store that cannot answer.
See docs/ratelimits.md.
"""
