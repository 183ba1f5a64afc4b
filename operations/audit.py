"""Writing the audit trail: ``record``, called by the code that makes the change, and
``attempt``, which records every refused or failed request the same way."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass

from django.conf import settings

from core.errors import AppError
from operations.models import AuditEvent, Operation


@dataclass(frozen=True)
class Actor:
    """Who asks, and from where: frozen at request time and carried into tasks."""

    user: object | None
    ip: str | None = None
    request_id: str = ""

    @property
    def username(self) -> str:
        return getattr(self.user, "username", "") or ""

    @classmethod
    def from_request(cls, request) -> Actor:
        user = request.user if getattr(request, "user", None) and request.user.is_authenticated else None
        return cls(user=user, ip=client_ip(request), request_id=getattr(request, "request_id", ""))

    @classmethod
    def from_operation(cls, op: Operation) -> Actor:
        return cls(user=op.user, ip=op.client_ip, request_id=op.request_id)


def client_ip(request) -> str | None:
    if settings.TRUST_X_FORWARDED_FOR:
        # The last entry is the one our (trusted) proxy appended; earlier ones come from
        # the client and can be anything.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        # Not an address (sent by the client, not the proxy): PostgreSQL's inet column would refuse it.
        if _is_ip(forwarded):
            return forwarded
    return request.META.get("REMOTE_ADDR") or None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def new_request_id() -> str:
    return uuid.uuid4().hex


def _text(value, limit: int | None = None) -> str:
    """A value as the database can keep it: PostgreSQL refuses NUL characters and text
    longer than the column (a refused request may quote any input)."""
    text = str(value or "").replace("\x00", "\ufffd")
    return text[:limit] if limit else text


def _clean(value):
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def record(
    action: str,
    *,
    actor: Actor | None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    vm=None,
    vm_name: str = "",
    vm_uuid: str = "",
    snapshot: str = "",
    params: dict | None = None,
    message: str = "",
    operation: Operation | None = None,
    stage: str = AuditEvent.Stage.REQUEST,
    username: str = "",
) -> AuditEvent:
    """Append one audit event. ``vm`` may be a VMInfo or an Operation (name and UUID are taken)."""
    if vm is not None:
        is_operation = isinstance(vm, Operation)
        vm_name = vm_name or (vm.vm_name if is_operation else vm.name)
        vm_uuid = vm_uuid or (vm.vm_uuid if is_operation else vm.uuid)
    user = actor.user if actor else None
    return AuditEvent.objects.create(
        user=user,
        username=_text(username or (actor.username if actor else ""), 150),
        client_ip=actor.ip if actor else None,
        request_id=actor.request_id if actor else "",
        action=_text(action, 40),
        stage=stage,
        vm_name=_text(vm_name, 200),
        vm_uuid=_text(vm_uuid, 36),
        snapshot=_text(snapshot, 64),
        params=_clean(params or {}),
        outcome=outcome,
        message=_text(message, 2000),
        operation=operation,
    )


class attempt:
    """Audit a refused or failed request: ``with attempt("snapshot.create", actor, vm_name):``.

    An AppError leaving the block is recorded (403 and 404 as denied, the rest as
    failed) and goes on its way; success is recorded by the code that succeeds.
    """

    def __init__(self, action: str, actor: Actor, vm_name: str = "", snapshot: str = "", params: dict | None = None):
        self.action, self.actor, self.vm_name, self.snapshot, self.params = action, actor, vm_name, snapshot, params

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, AppError):
            self.refused(exc.status, exc.message)
        return False

    def refused(self, status: int, message: str) -> AuditEvent:
        """Record the refusal: denied for 401, 403 and 404 (not allowed, or not visible), else failed."""
        return record(
            self.action,
            actor=self.actor,
            vm_name=self.vm_name,
            snapshot=self.snapshot,
            params=self.params,
            outcome=AuditEvent.Outcome.DENIED if status in (401, 403, 404) else AuditEvent.Outcome.FAILED,
            message=message,
        )
