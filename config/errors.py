"""Turning errors into answers a person understands: JSON for the API, a page for HTML."""

from django.shortcuts import render
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from vms.errors import AppError


def _reason(detail) -> str:
    if isinstance(detail, dict):
        parts = []
        for key, value in detail.items():
            text = _reason(value)
            parts.append(text if key in ("non_field_errors", "detail") else f"{key}: {text}")
        return " ".join(parts)
    if isinstance(detail, list):
        return " ".join(_reason(item) for item in detail)
    return str(detail)


def api_exception_handler(exc, context):
    if isinstance(exc, AppError):
        return Response({"code": exc.status, "reason": exc.message}, status=exc.status)
    if isinstance(exc, exceptions.ParseError):
        return Response({"code": 400, "reason": f"Malformed JSON: {exc.detail}"}, status=400)
    response = exception_handler(exc, context)
    if response is None:
        return None
    reason = _reason(getattr(exc, "detail", response.data))
    if response.status_code == status.HTTP_401_UNAUTHORIZED or isinstance(exc, exceptions.NotAuthenticated):
        reason = "Log in first: send a session cookie, HTTP Basic credentials or 'Authorization: Token <key>'."
    response.data = {"code": response.status_code, "reason": reason}
    _audit_refused(context, response.status_code, reason)
    return response


def _audit_refused(context, status_code: int, reason: str) -> None:
    """Audit a mutating API request refused before it reached a service (bad input, no login).

    Refusals raised inside services are audited there, with the VM they concern.
    """
    request, view = context.get("request"), context.get("view")
    if request is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    from operations import audit
    from operations.audit import Actor
    from operations.models import AuditEvent

    action = getattr(view, "audit_actions", {}).get(request.method, f"api.{request.method.lower()}")
    kwargs = getattr(context, "get", lambda *_: {})("kwargs") or {}
    audit.record(
        action,
        actor=Actor.from_request(request),
        vm_name=str(kwargs.get("vm", ""))[:200],
        snapshot=str(kwargs.get("snapshot", ""))[:64],
        outcome=AuditEvent.Outcome.DENIED if status_code in (401, 403) else AuditEvent.Outcome.FAILED,
        message=reason,
        params={"path": request.path},
    )


class HypervisorErrorMiddleware:
    """HTML views: an AppError escaping a view becomes a plain error page with its status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        if isinstance(exc, AppError) and not request.path.startswith("/api/"):
            return render(request, "error.html", {"status": exc.status, "reason": exc.message}, status=exc.status)
        return None
