"""The API's credentials: ``Authorization: Token <key>`` (people's named tokens and
DRF's authtoken keys alike), and HTTP Basic as scripts use it, never as a browser's
cached login.

A 401 that challenges with ``WWW-Authenticate: Basic`` makes a browser ask for a
password once and then send it with every request to this host, including the ones
another site's page makes it send (a form POST); DRF checks CSRF for sessions only.
So the API lists Token first (its 401s challenge with ``Token``, which no browser
answers), then Session (CSRF-checked), and ``ScriptBasicAuthentication`` last: it
accepts Basic credentials sent unasked, never asks for them, and refuses (403, before
the password is checked) a state-changing request that carries them from another site.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db.models import Q
from django.utils import timezone
from django.utils.http import is_same_domain
from drf_spectacular.authentication import BasicScheme
from rest_framework import authentication, exceptions

from access.models import ApiToken

SAFE_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE")

CROSS_SITE = (
    "Refused: HTTP Basic credentials came with a {method} from another site ({source}), as a browser sends "
    "cached credentials on any page's behalf. In a browser, log in on this site (the session is CSRF-checked); "
    "from a script, send 'Authorization: Token <key>' or Basic without an Origin header."
)


# A token's last use is written at most this often: a script's every request is no write.
LAST_USED_EVERY = timedelta(minutes=1)
MAKE_ANOTHER = "make a new one on the API tokens page (/tokens/)"


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``: a person's token (``vs_…``, access.models.ApiToken:
    named, kept hashed, may expire or be revoked), or a key of DRF's authtoken (one per
    user, made in the Django admin), so scripts holding one keep working. Its 401s
    challenge with ``Token`` (``authenticate_header``, inherited)."""

    def authenticate_credentials(self, key):
        if not key.startswith(ApiToken.KEY_PREFIX):
            return super().authenticate_credentials(key)
        token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_key(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.revoked is not None:
            raise exceptions.AuthenticationFailed(
                f"This token ({token.prefix}…) was revoked on {_when(token.revoked)}: {MAKE_ANOTHER}."
            )
        if token.is_expired(now):
            raise exceptions.AuthenticationFailed(
                f"This token ({token.prefix}…) expired on {_when(token.expires)}: {MAKE_ANOTHER}."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user account is disabled.")
        _note_use(token, now)
        return (token.user, token)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _note_use(token: ApiToken, now: datetime) -> None:
    """Set ``last_used``, unless it was set less than LAST_USED_EVERY ago (by this request's
    read, or by a concurrent request: the update's condition decides)."""
    if token.last_used is not None and now - token.last_used < LAST_USED_EVERY:
        return
    stale = Q(last_used__isnull=True) | Q(last_used__lte=now - LAST_USED_EVERY)
    if ApiToken.objects.filter(stale, pk=token.pk).update(last_used=now):
        token.last_used = now


class ScriptBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic, accepted when sent and never asked for."""

    def authenticate(self, request):
        if request.method not in SAFE_METHODS and _is_basic(request):
            source = cross_site_source(request)
            if source:
                raise exceptions.PermissionDenied(CROSS_SITE.format(method=request.method, source=source))
        return super().authenticate(request)

    def authenticate_header(self, request):
        # No Basic challenge, ever: were this class listed first, DRF would answer 403, not prompt.
        return None


def _is_basic(request) -> bool:
    return authentication.get_authorization_header(request).split(b" ", 1)[0].lower() == b"basic"


def cross_site_source(request) -> str:
    """What says ``request`` comes from another site's page ('' if nothing does): a
    ``Sec-Fetch-Site: cross-site``, or an ``Origin`` that is neither this host nor one of
    CSRF_TRUSTED_ORIGINS (the rule Django's CSRF check applies to sessions)."""
    if request.META.get("HTTP_SEC_FETCH_SITE", "").lower() == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    origin = request.META.get("HTTP_ORIGIN")
    if origin is not None and not _trusted_origin(request, origin):
        return f"Origin {origin[:200]!r}"
    return ""


def _trusted_origin(request, origin: str) -> bool:
    try:
        if origin == f"{request.scheme}://{request.get_host()}":
            return True
    except DisallowedHost:
        pass
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        scheme, _, netloc = trusted.partition("://")
        # "https://*.example.com" trusts every subdomain, as in Django's CSRF check.
        if netloc.startswith("*") and scheme == parsed.scheme and is_same_domain(parsed.netloc, netloc[1:]):
            return True
    return False


class ScriptBasicScheme(BasicScheme):
    """The OpenAPI security scheme (drf-spectacular matches the exact class only)."""

    target_class = "operations.authentication.ScriptBasicAuthentication"
