"""Failed logins are rate limited per account and address, and per address, in one place.

``GuardedModelBackend`` is the project's authentication backend (settings
``AUTHENTICATION_BACKENDS``), so the login page, Django admin's login and the API's
HTTP Basic authentication all pass through it. Failures are counted from the audit
trail (``login`` events with outcome ``failed``, written by operations.signals), which
every process shares and nobody can edit: no cache to configure or to lose.

Two locks, each until the oldest of the failures that set it is ``WINDOW`` old:

- a username with ``LIMIT_PER_ACCOUNT`` failures from one address is locked *from that
  address* only. Anyone can type a username, so a lock on the account everywhere would
  let anyone lock out its owner (the admin); from an address with no failures it still
  logs in.
- an address with ``LIMIT_PER_ADDRESS`` failures, whatever the usernames, is locked for
  every account: one place guessing across many accounts stops too.

While locked, the password is not even checked (a right one is refused too, or guessing
would go on), the attempt leaves one ``denied`` audit row and does not count as a
failure, and the answer says when to try again: the login form shows it as its error,
and the login page and the API answer 429 with Retry-After.

django-axes (which can key on username+IP) was weighed and not used: it has one failure
limit for all its keys (no higher per-address limit), keeps its own editable copy of the
failures beside the audit trail, and over DRF's HTTP Basic answers a locked account 401
"Invalid username/password" (its lock flag is set on DRF's request, which its middleware
never sees) while the audit trail records the refusal as a wrong password.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import NamedTuple

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
# Per account and address: a person mistyping stays well below; guessing stops quickly.
LIMIT_PER_ACCOUNT = 5
# Per address, whatever the accounts: higher, as several people may share one (NAT, a
# bastion host; behind a reverse proxy, everyone unless TRUST_X_FORWARDED_FOR is set).
LIMIT_PER_ADDRESS = 20

ACCOUNT_MESSAGE = "Too many failed logins for this account from this address; try again in {minutes} minute{s}."
ADDRESS_MESSAGE = "Too many failed logins from this address; try again in {minutes} minute{s}."


class LoginLocked(ValidationError):
    """Shown by the login form as its error (AuthenticationForm lets a ValidationError
    through); the login page answers it 429 with Retry-After (operations.views.LoginView)."""

    retry_after: float = 0.0  # seconds until the lock ends


class APILoginLocked(Throttled):
    """429 with Retry-After for HTTP Basic authentication (DRF lets an APIException through)."""

    def __init__(self, message: str, wait: float):
        super().__init__(wait=wait, detail=message)


class Lock(NamedTuple):
    until: datetime
    scope: str  # "account" (this username from this address) or "address" (any username)

    @property
    def template(self) -> str:
        return ACCOUNT_MESSAGE if self.scope == "account" else ADDRESS_MESSAGE


def _failures(**match):
    return AuditEvent.objects.filter(action="login", outcome=AuditEvent.Outcome.FAILED, **match)


def find_lock(username: str, ip: str | None, now: datetime | None = None) -> Lock | None:
    """The lock that keeps ``username`` from logging in from ``ip`` (the later-ending one
    if both apply); None if it may log in now."""
    now = now or timezone.now()
    since = now - WINDOW
    checks = [("account", {"username": username[:150], "client_ip": ip}, LIMIT_PER_ACCOUNT)]
    if ip:
        checks.append(("address", {"client_ip": ip}, LIMIT_PER_ADDRESS))
    lock = None
    for scope, match, limit in checks:
        # The limit-th newest failure in the window: when it ages out, the lock ends.
        nth = _failures(time__gte=since, **match).order_by("-time", "-id").values_list("time", flat=True)[limit - 1 : limit]
        for moment in nth:
            if lock is None or moment + WINDOW > lock.until:
                lock = Lock(moment + WINDOW, scope)
    return lock


def lock_message(lock: Lock, now: datetime | None = None) -> tuple[str, float]:
    """What the refused person is told, and the seconds until the lock ends (Retry-After)."""
    seconds = max(1.0, (lock.until - (now or timezone.now())).total_seconds())
    minutes = max(1, math.ceil(seconds / 60))
    return lock.template.format(minutes=minutes, s="" if minutes == 1 else "s"), seconds


class GuardedModelBackend(ModelBackend):
    """Django's username/password backend, refusing an account from an address, or an
    address, that failed too often."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is not None:
            ip = audit.client_ip(request) if request is not None else None
            lock = find_lock(str(username), ip)
            if lock is not None:
                self._refuse(request, str(username)[:150], ip, lock)
        return super().authenticate(request, username=username, password=password, **kwargs)

    @staticmethod
    def _refuse(request, username: str, ip: str | None, lock: Lock):
        message, seconds = lock_message(lock)
        audit.record(
            "login",
            actor=Actor(user=None, ip=ip, request_id=getattr(request, "request_id", "") if request is not None else ""),
            username=username,
            stage=AuditEvent.Stage.EVENT,
            outcome=AuditEvent.Outcome.DENIED,
            message=message,
            params={"locked_until": lock.until.isoformat(), "lock": lock.scope},
        )
        # Raised, not returned: returning None would also send user_login_failed, and
        # that signal's audit row would count as one more failure.
        if isinstance(request, Request):
            raise APILoginLocked(message, seconds)
        locked = LoginLocked(message, code="login_locked")
        locked.retry_after = seconds
        raise locked
