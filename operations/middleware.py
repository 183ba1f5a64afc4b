"""Request ids for the audit trail, and page requests refused before any view ran."""

from django.conf import settings
from django.shortcuts import resolve_url

from operations import audit
from operations.audit import Actor, new_request_id

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")


class RequestIdMiddleware:
    """Give every request an id (or keep the proxy's X-Request-ID) for the audit trail,
    and audit state-changing page requests refused before any view ran (not logged in).

    API refusals are audited by the API's exception handler, refusals inside views
    by the services, CSRF failures by ``csrf_failure`` below.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")[:64]
        request.request_id = incoming if incoming.replace("-", "").isalnum() else new_request_id()
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        if (
            request.method not in SAFE_METHODS
            and response.status_code == 302
            and not request.path.startswith("/api/")
            and not getattr(request, "user", None).is_authenticated
        ):
            login = resolve_url(settings.LOGIN_URL)
            if request.path != login and response.get("Location", "").startswith(login):
                _audit_refused(request, "Not logged in: sent to the login page.")
        return response


def _audit_refused(request, message: str) -> None:
    """One row per refusal; an anonymous one repeated within a minute is counted on it."""
    action = f"http.{request.method.lower()}"
    refusal = audit.attempt(action, Actor.from_request(request), params={"path": request.path[:300]})
    refusal.refused(403, message, fold_repeats=True)


def csrf_failure(request, reason: str = ""):
    """CSRF_FAILURE_VIEW: the usual 403 page, plus an audit row."""
    from django.views.csrf import csrf_failure as django_csrf_failure

    _audit_refused(request, f"Refused: CSRF check failed ({reason}).")
    return django_csrf_failure(request, reason=reason)
