"""The routing engine: every policy (routing, failover, accounting) lives here; it never sees JSON."""
