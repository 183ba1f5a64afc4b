"""The API's exception handler (settings REST_FRAMEWORK["EXCEPTION_HANDLER"]): every
error answered as ``{"code", "reason"}`` (core.api.errors), a 401 challenging with
the first authenticator's scheme (Token, never Basic), and a mutating request refused
before it reached a service (bad input, no login, Basic sent from another site) audited
here; refusals raised inside services are audited there, with the VM they concern."""

from core.api.errors import answer, translate
from core.errors import AppError
from operations.audit import Actor, attempt


def api_exception_handler(exc, context):
    exc = translate(exc, context)
    if getattr(exc, "auth_header", None):
        # A 401's challenge is always the view's first authenticator's (Token), never
        # Basic, which a browser would answer with a prompt (operations.authentication).
        exc.auth_header = _challenge(context)
    response = answer(exc, context)
    if response is not None and not isinstance(exc, AppError):
        _audit_refused(context, response.status_code, response.data["reason"])
    return response


def _challenge(context) -> str:
    request, view = context.get("request"), context.get("view")
    header = view.get_authenticate_header(request) if request is not None and view is not None else None
    return header or "Token"


def _audit_refused(context, status_code: int, reason: str) -> None:
    request, view = context.get("request"), context.get("view")
    if request is None or request.method in ("GET", "HEAD", "OPTIONS"):
        return
    action = getattr(view, "audit_actions", {}).get(request.method, f"api.{request.method.lower()}")
    kwargs = context.get("kwargs") or {}
    refusal = attempt(
        action,
        Actor.from_request(request),
        vm_name=str(kwargs.get("vm", ""))[:200],
        snapshot=str(kwargs.get("snapshot", ""))[:64],
        params={"path": request.path},
    )
    # A flood of identical anonymous refusals leaves one row a minute, with a count.
    refusal.refused(status_code, reason, fold_repeats=True)
