"""The admin API's engine side: who may call it, and the report of every target's health.

Admin calls authenticate with `admin.token` (as `authorization: Bearer …`), compared in constant time. With no token
configured every admin call is refused (403), so the admin API is never open by accident; a wrong or missing token
is a 401. The same check serves the HTTP front door (`GET /admin/backends`) and gRPC (`AdminService`).
"""

from __future__ import annotations

import hmac

from gateway.config.routing import AdminConfig
from gateway.engine.contract import CallContext
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


def backends_report(router: Router) -> admin_pb2.ListBackendsResponse:
    """Every target of every model (experiment arms included), once each, with the models it serves."""
    served: dict[tuple[str, str], list[str]] = {}
    targets = []
    for model in router.models:
        arms = model.experiment.targets if model.experiment is not None else ()
        for target in (*model.targets, *arms):
            key = (target.backend, target.model)
            if key not in served:
                served[key] = []
                targets.append(target)
            if model.name not in served[key]:
                served[key].append(model.name)
    report = admin_pb2.ListBackendsResponse()
    for snap in router.health.snapshot(targets):
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
                served_models=served[(snap.backend, snap.model)],
            )
        )
    return report
