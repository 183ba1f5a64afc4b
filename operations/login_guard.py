"""Failed logins are rate limited per username and per client address, in one place.

``GuardedModelBackend`` is the project's authentication backend (settings
``AUTHENTICATION_BACKENDS``), so the login page, Django admin's login and the API's
HTTP Basic authentication all pass through it. Failures are counted from the audit
trail (``login`` events with outcome ``failed``, written by operations.signals), which
every process shares and nobody can edit: no cache to configure or to lose.

A username or an address with ``LIMIT`` failures within ``WINDOW`` is locked until the
oldest of those failures is ``WINDOW`` old. While locked, the password is not even
checked (a right one is refused too, or guessing would go on), the attempt leaves one
``denied`` audit row and does not count as a failure, and the answer says when to try
again: the login form shows it as its error, the API answers 429 with Retry-After.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.exceptions import Throttled
from rest_framework.request import Request

from operations import audit
from operations.audit import Actor
from operations.models import AuditEvent

WINDOW = timedelta(minutes=15)
# Per account: a person mistyping stays well below; guessing stops quickly.
LIMIT_PER_USERNAME = 5
# Per address: higher, as several people may share one (NAT, a bastion host).
LIMIT_PER_ADDRESS = 20

MESSAGE = "Too many failed logins for this account or address; try again in {minutes} minute{s}."


class LoginLocked(ValidationError):
    """Shown by the login form as its error (AuthenticationForm lets a ValidationError through)."""


class APILoginLocked(Throttled):
    """429 with Retry-After for HTTP Basic authentication (DRF lets an APIException through)."""

    def __init__(self, message: str, wait: float):
        super().__init__(wait=wait, detail=message)


def _failures(**match):
    return AuditEvent.objects.filter(action="login", outcome=AuditEvent.Outcome.FAILED, **match)


def locked_until(username: str, ip: str | None, now: datetime | None = None) -> datetime | None:
    """When logins for ``username`` (or from ``ip``) open again; None if they are open now."""
    now = now or timezone.now()
    since = now - WINDOW
    until = None
    checks = [({"username": username[:150]}, LIMIT_PER_USERNAME)]
    if ip:
        checks.append(({"client_ip": ip}, LIMIT_PER_ADDRESS))
    for match, limit in checks:
        # The limit-th newest failure in the window: when it ages out, the lock ends.
        nth = _failures(time__gte=since, **match).order_by("-time", "-id").values_list("time", flat=True)[limit - 1 : limit]
        for moment in nth:
            end = moment + WINDOW
            until = max(until, end) if until else end
    return until


def lock_message(until: datetime, now: datetime | None = None) -> tuple[str, float]:
    seconds = max(1.0, (until - (now or timezone.now())).total_seconds())
    minutes = max(1, math.ceil(seconds / 60))
    return MESSAGE.format(minutes=minutes, s="" if minutes == 1 else "s"), seconds


class GuardedModelBackend(ModelBackend):
    """Django's username/password backend, refusing accounts and addresses that failed too often."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is not None:
            ip = audit.client_ip(request) if request is not None else None
            until = locked_until(str(username), ip)
            if until is not None:
                self._refuse(request, str(username)[:150], ip, until)
        return super().authenticate(request, username=username, password=password, **kwargs)

    @staticmethod
    def _refuse(request, username: str, ip: str | None, until: datetime):
        message, seconds = lock_message(until)
        audit.record(
            "login",
            actor=Actor(user=None, ip=ip, request_id=getattr(request, "request_id", "") if request is not None else ""),
            username=username,
            stage=AuditEvent.Stage.EVENT,
            outcome=AuditEvent.Outcome.DENIED,
            message=message,
            params={"locked_until": until.isoformat()},
        )
        # Raised, not returned: returning None would also send user_login_failed, and
        # that signal's audit row would count as one more failure.
        if isinstance(request, Request):
            raise APILoginLocked(message, seconds)
        raise LoginLocked(message, code="login_locked")
