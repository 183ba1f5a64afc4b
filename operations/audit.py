"""Writing the audit trail: ``record``, called by the code that makes the change, and
``attempt``, which records every refused or failed request the same way; each row
hash-chained to the one before, and ``verify``, which walks the chain."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import AppError
from operations.models import AuditEvent, AuditRepeat, Operation

# The prev_hash of the first row.
GENESIS = "0" * 64
# Identical anonymous refusals within this long of the row for the first are counted on it.
REPEAT_WINDOW = timedelta(minutes=1)
# PostgreSQL advisory lock held by the writer appending to the chain ("virtsnap").
CHAIN_LOCK = int.from_bytes(b"virtsnap")


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
    fold_repeats: bool = False,
) -> AuditEvent:
    """Append one audit event. ``vm`` may be a VMInfo or an Operation (name and UUID are taken).

    With ``fold_repeats``, an anonymous event identical to one recorded less than a
    minute ago from the same address (a refusal, repeated) is counted on that row
    (AuditRepeat) instead of making a new one.
    """
    if vm is not None:
        is_operation = isinstance(vm, Operation)
        vm_name = vm_name or (vm.vm_name if is_operation else vm.name)
        vm_uuid = vm_uuid or (vm.vm_uuid if is_operation else vm.uuid)
    user = actor.user if actor else None
    event = AuditEvent(
        user=user,
        username=_text(username or (actor.username if actor else ""), 150),
        client_ip=_normal_ip(actor.ip) if actor else None,
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
    with transaction.atomic():
        _lock_chain_end()
        event.time = timezone.now()
        earlier = _same_refusal(event) if fold_repeats and user is None and not event.username else None
        if earlier is not None:
            _count_repeat(earlier, event.time)
            return earlier
        event.prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS
        event.hash = chain_hash(event.prev_hash, event)
        event.save()
    return event


def _normal_ip(ip: str | None) -> str | None:
    """The address as the database gives it back (IPv6 compressed), as the hash covers it."""
    return AuditEvent._meta.get_field("client_ip").to_python(ip) if ip else None


def _lock_chain_end() -> None:
    """Make this transaction the only one appending until it ends, so that no two rows
    chain to the same predecessor (the web server and the worker both write).

    SQLite: the transaction already holds the database's write lock (settings:
    transaction_mode IMMEDIATE; in a deferred one, a write after another's commit
    fails rather than forks). PostgreSQL: an advisory lock, released at commit.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])


def _same_refusal(event: AuditEvent) -> AuditEvent | None:
    """The anonymous row less than REPEAT_WINDOW old that ``event`` repeats, if any."""
    same = AuditEvent.objects.filter(
        user__isnull=True,
        username="",
        client_ip=event.client_ip,
        action=event.action,
        stage=event.stage,
        outcome=event.outcome,
        vm_name=event.vm_name,
        vm_uuid=event.vm_uuid,
        snapshot=event.snapshot,
        message=event.message,
        operation__isnull=True,
        params=event.params,
        time__gt=event.time - REPEAT_WINDOW,
    )
    return same.order_by("-id").first()


def _count_repeat(event: AuditEvent, now: datetime) -> None:
    # Under the chain's lock: no other writer makes the counter meanwhile.
    if not AuditRepeat.objects.filter(event=event).update(count=F("count") + 1, last_seen=now):
        AuditRepeat.objects.create(event=event, count=2, last_seen=now)


# ---------------------------------------------------------------------------
# The hash chain


def canonical(event) -> str:
    """A row's content as its hash covers it: every field but the id and the hashes, as
    sorted JSON. ``event`` is an AuditEvent, or a migration's historical one."""
    return json.dumps(
        {
            "time": event.time.astimezone(UTC).isoformat(timespec="microseconds"),
            "user": event.user_id,
            "username": event.username,
            "client_ip": event.client_ip,
            "action": event.action,
            "stage": str(event.stage),
            "vm_name": event.vm_name,
            "vm_uuid": event.vm_uuid,
            "snapshot": event.snapshot,
            "params": event.params,
            "outcome": str(event.outcome),
            "message": event.message,
            "operation": event.operation_id,
            "request_id": event.request_id,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def chain_hash(prev_hash: str, event) -> str:
    return hashlib.sha256((prev_hash + canonical(event)).encode()).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    rows: int
    broken: str = ""  # the first broken link, in words
    last_hash: str = GENESIS


def verify() -> ChainCheck:
    """Walk the trail in id order, recomputing each hash; stop at the first broken link.

    A row altered shows as its content no longer hashing to its hash; a row deleted
    (or altered and re-hashed) as the next row's prev_hash not being the hash before.
    Rows taken off the end leave no gap: compare ``last_hash`` with one noted earlier.
    """
    rows, expected, previous = 0, GENESIS, None
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=2000):
        rows += 1
        if event.prev_hash != expected:
            if previous is None:
                why = "is not the start of the trail's: rows before it were deleted"
            else:
                why = f"is not the hash of row #{previous} before it: a row between them was deleted, or #{previous} rewritten"
            return ChainCheck(rows, f"row #{event.pk}: its prev_hash {event.prev_hash[:12]}… {why}")
        if chain_hash(event.prev_hash, event) != event.hash:
            why = "the row was altered"
            return ChainCheck(rows, f"row #{event.pk}: its content no longer matches its hash {event.hash[:12]}…: {why}")
        expected, previous = event.hash, event.pk
    return ChainCheck(rows, last_hash=expected)


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

    def refused(self, status: int, message: str, *, fold_repeats: bool = False) -> AuditEvent:
        """Record the refusal: denied for 401, 403 and 404 (not allowed, or not visible), else failed.

        ``fold_repeats``: an anonymous one repeated within a minute is counted, not
        written again (``record``)."""
        return record(
            self.action,
            actor=self.actor,
            vm_name=self.vm_name,
            snapshot=self.snapshot,
            params=self.params,
            outcome=AuditEvent.Outcome.DENIED if status in (401, 403, 404) else AuditEvent.Outcome.FAILED,
            message=message,
            fold_repeats=fold_repeats,
        )
