"""API errors as answers a person understands, and the error views.

Every API error is ``{"code": <status>, "reason": "<what went wrong and what to do>"}``:
the project's AppErrors and DRF's exceptions through ``answer`` (called by the
API's exception handler, operations.api_errors, which also audits refusals), and
what goes wrong before or around a view (no such URL, a body over the size limit, a
crash) through the ``handler400``/``handler404``/``handler500`` below, which answer
JSON under /api/ and the app's own pages elsewhere.
"""

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.db import DataError
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.views import defaults
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from core.errors import AppError, Invalid

SEND_JSON = "send a JSON object with 'Content-Type: application/json'"
CREDENTIALS = "a session cookie, HTTP Basic credentials or 'Authorization: Token <key>'"
LOG_IN = f"Log in first: send {CREDENTIALS}."


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


def _too_big() -> str:
    return (
        f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes: send a smaller one "
        "(names and descriptions are short)."
    )


class PayloadTooLarge(exceptions.APIException):
    status_code = 413


def translate(exc, context):
    """Exceptions that are bad input in disguise, as the APIException or AppError they mean."""
    request = context.get("request")
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge(_too_big())
    if isinstance(exc, DataError):
        # The database refused a value taken from the request (PostgreSQL: a NUL
        # character); the code checks lengths and characters before writing, so this
        # is what is left: the value cannot match anything stored.
        if request is not None and "_user" not in vars(request):
            # It broke while authenticating (a NUL in a token or username): nobody is
            # logged in, and asking for request.user again would only repeat it.
            request.user = AnonymousUser()
            failed = exceptions.AuthenticationFailed("Invalid credentials (they hold characters no account can have).")
            failed.auth_header = "Token"  # a 401 needs a challenge; never Basic (a browser would prompt)
            return failed
        return Invalid("The request holds a value that cannot be stored or looked up (a NUL character?): remove it.")
    if isinstance(exc, Http404) and request is not None and getattr(request, "accepted_renderer", None) is None:
        # Raised by content negotiation (?format=xml): not a missing object.
        return exceptions.NotAcceptable(f"?format={request.query_params.get('format', '')} is not available")
    return exc


def answer(exc, context) -> Response | None:
    """The JSON answer for ``exc`` (already ``translate``d), or None for exceptions DRF leaves alone."""
    if isinstance(exc, AppError):
        return Response({"code": exc.status, "reason": exc.message}, status=exc.status)
    response = exception_handler(exc, context)
    if response is None:
        return None
    response.data = {"code": response.status_code, "reason": _explain(exc, context, response)}
    return response


def _explain(exc, context, response) -> str:
    """The reason for a DRF exception, saying what to do where DRF's own text does not."""
    request, view = context.get("request"), context.get("view")
    detail = _reason(getattr(exc, "detail", response.data))
    if isinstance(exc, exceptions.NotAuthenticated) or (
        response.status_code == status.HTTP_401_UNAUTHORIZED and not isinstance(exc, exceptions.AuthenticationFailed)
    ):
        return LOG_IN
    if isinstance(exc, exceptions.AuthenticationFailed):
        return f"{detail} Send valid credentials: {CREDENTIALS}."
    if isinstance(exc, exceptions.ParseError):
        return f"The body is not valid JSON ({detail}): {SEND_JSON}."
    if isinstance(exc, exceptions.UnsupportedMediaType):
        content_type = request.content_type if request is not None else ""
        what = f"a body of type {content_type!r}" if content_type else "a body without a Content-Type"
        return f"This API does not read {what}: {SEND_JSON}."
    if isinstance(exc, exceptions.MethodNotAllowed):
        allowed = ", ".join(m for m in getattr(view, "allowed_methods", []) if m != "OPTIONS")
        return f"{request.method} is not allowed on {request.path}: use {allowed}."
    if isinstance(exc, exceptions.NotAcceptable):
        return f"{detail.rstrip('.')}: this API answers JSON only; accept application/json."
    return detail


# ---------------------------------------------------------------------------
# Django's error views (config/urls.py): JSON under /api/, pages elsewhere (the app's own 404)


def is_api(request) -> bool:
    return request.path_info == "/api" or request.path_info.startswith("/api/")


def _json(code: int, reason: str) -> JsonResponse:
    return JsonResponse({"code": code, "reason": reason}, status=code)


def bad_request(request, exception=None):
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return _json(413, _too_big())
    if isinstance(exception, DisallowedHost):
        return _json(400, "This server does not answer to the host name in the request: use one of its configured names.")
    return _json(400, "The request is malformed (headers or body): check it and send it again.")


def page_not_found(request, exception=None):
    if not is_api(request):
        # The app's own page, as a VM or snapshot that is not there gets (HypervisorErrorMiddleware).
        reason = f"There is no page at {request.path}: check the address, or start from the VMs."
        return render(request, "error.html", {"status": 404, "reason": reason}, status=404)
    return _json(
        404,
        f"There is no API URL {request.path!r}: see /api/docs/ for the URLs (no trailing slash; task ids are numbers).",
    )


def server_error(request):
    if not is_api(request):
        return defaults.server_error(request)
    request_id = getattr(request, "request_id", "")
    return _json(
        500,
        f"The server failed to answer (request {request_id or 'without an id'}); the error is logged for the admins. "
        "Try again; if it persists, tell an admin with that request id.",
    )


# ---------------------------------------------------------------------------
# HTML views


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


# ---------------------------------------------------------------------------
# Documentation (OpenAPI): the error answers each operation may give


class ErrorSerializer(serializers.Serializer):
    """Every API error: the HTTP status again, and what went wrong and what to do."""

    code = serializers.IntegerField(help_text="the HTTP status")
    reason = serializers.CharField(help_text="what went wrong and what to do")


ERRORS = {
    400: "Invalid input, or an operation impossible for this VM (raw disk, bad name)",
    401: "Not logged in, or wrong credentials",
    403: "Not allowed on this VM (or the audit trail): the reason names the permission",
    404: "No such VM, snapshot or task, or not one you may see",
    409: "Conflict: the name is taken, the VM is in the wrong state, or another operation on it is in progress",
    413: "The body is too large",
    415: "The body is not JSON",
    429: "Too many failed logins for this account or address (HTTP Basic); see Retry-After",
    502: "libvirt refused or failed the change",
    503: "libvirtd cannot be reached",
}
# Any request may be unauthenticated or locked out; any body may be too large or not JSON.
ALWAYS = (401, 429)
BODY = (400, 413, 415)


def error_responses(*codes: int, body: bool = False) -> dict[int, OpenApiResponse]:
    """OpenAPI responses for these error statuses, plus 401/429 (and 400/413/415 when the operation reads a body)."""
    wanted = set(codes) | set(ALWAYS) | (set(BODY) if body else set())
    return {code: OpenApiResponse(ErrorSerializer, description=ERRORS[code]) for code in sorted(wanted)}
