"""The admin API's engine side: who may call it, and the report of every target's health.

Admin calls authenticate with `admin.token` (as `authorization: Bearer …`), compared in constant time. With no token
configured every admin call is refused (403), so the admin API is never open by accident; a wrong or missing token
is a 401. The same check serves the HTTP front door (`GET /admin/backends`) and gRPC (`AdminService`).
"""

from __future__ import annotations

import hmac

from gateway.call import CallContext
from gateway.config import TargetConfig
from gateway.config.routing import AdminConfig
from gateway.engine.health import TargetKey, TargetSnapshot
from gateway.engine.router import Router
from gateway.errors import AuthenticationError, PermissionDeniedError
from tollgate.gateway.v1 import admin_pb2


def check_admin(ctx: CallContext, admin: AdminConfig) -> None:
    """Raise unless the call carries the configured admin token."""
    if admin.token is None:
        raise PermissionDeniedError(
            "The admin API is disabled: set admin.token in the configuration", code="admin_disabled"
        )
    given = ctx.api_key.reveal() if ctx.api_key is not None else ""
    if not hmac.compare_digest(given.encode(), admin.token.reveal().encode()):
        raise AuthenticationError("Invalid admin token", code="invalid_admin_token")


def served_targets(router: Router) -> dict[TargetKey, tuple[TargetConfig, list[str]]]:
    """Every target of every model (experiment arms included), once each, with the models it serves."""
    served: dict[TargetKey, tuple[TargetConfig, list[str]]] = {}
    for model in router.models:
        arms = model.experiment.targets if model.experiment is not None else ()
        for target in (*model.targets, *arms):
            _, models = served.setdefault((target.backend, target.model), (target, []))
            if model.name not in models:
                models.append(model.name)
    return served


def health_snapshot(router: Router) -> list[TargetSnapshot]:
    """The health of every target, as plain data (for metrics: no admin check, nothing leaves the process)."""
    return router.health.snapshot([target for target, _ in served_targets(router).values()])


def backends_report(router: Router) -> admin_pb2.ListBackendsResponse:
    """`health_snapshot` as the admin API's message, with the models each target serves."""
    served = served_targets(router)
    report = admin_pb2.ListBackendsResponse()
    for snap in router.health.snapshot([target for target, _ in served.values()]):
        report.targets.append(
            admin_pb2.TargetHealth(
                backend=snap.backend,
                model=snap.model,
                state=snap.state,
                available=snap.available,
                ejections=snap.ejections,
                ejections_total=snap.ejections_total,
                outstanding=snap.outstanding,
                latency_ms=snap.latency_ms,
                consecutive_failures=snap.consecutive_failures,
                window_requests=snap.window_requests,
                window_failures=snap.window_failures,
                retry_in_seconds=snap.retry_in,
                backend_up=snap.backend_up,
                last_error=snap.last_error,
                served_models=served[(snap.backend, snap.model)][1],
            )
        )
    return report
