"""Long operations: queue them (one per VM, enforced by the database), run them
on django-q2 workers, record how they ended, and settle the ones whose worker died.

django-q2 only delivers ``run(operation_id)``; the ``Operation`` row is the history.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone
from django_q.tasks import async_task

from access import policy
from core import hypervisor
from core.errors import AppError, Conflict, ConnectionLost, Forbidden, Unavailable
from operations import audit
from operations.audit import Actor
from operations.models import AuditEvent, Operation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    run: Callable[[Operation, Progress], str]
    # Decides how an operation whose worker died actually ended, from what libvirt
    # shows: returns (finished?, message), or None while libvirt is still busy with it.
    settle: Callable[[Operation], tuple[bool, str] | None] | None = None
    label: str = ""


KINDS: dict[str, Kind] = {}


def register(name: str, *, label: str, settle=None):
    def decorator(fn):
        KINDS[name] = Kind(run=fn, settle=settle, label=label)
        return fn

    return decorator


# ---------------------------------------------------------------------------
# Queueing


def submit(kind: str, vm, *, actor: Actor, snapshot: str = "", params: dict | None = None, target_uri: str = "") -> Operation:
    """Queue an operation on ``vm``; Conflict (409) if one is already queued or running there."""
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                op = Operation.objects.create(
                    kind=kind,
                    vm_name=vm.name,
                    vm_uuid=vm.uuid,
                    snapshot=snapshot,
                    params=params or {},
                    user=actor.user,
                    username=actor.username,
                    client_ip=actor.ip,
                    request_id=actor.request_id,
                    target_uri=target_uri,
                    message="Queued, waiting for a worker",
                )
                audit.record(
                    kind, actor=actor, vm=vm, snapshot=snapshot, params=params, operation=op, message=f"Accepted as task #{op.pk}"
                )
                transaction.on_commit(
                    lambda op_id=op.pk: async_task("operations.runner.run", op_id, task_name=f"operation-{op_id}")
                )
            return op
        except IntegrityError:
            blocking = Operation.objects.active(vm.uuid).first()
            if blocking is None or (attempt == 1 and settle_if_orphaned(blocking)):
                continue
            raise _busy(vm, blocking) from None
    raise Conflict(f"Another operation is running on {vm.name}. Try again.")


def active_operation(vm_uuid: str) -> Operation | None:
    """The operation queued or running on the VM (one whose worker died is settled first)."""
    op = Operation.objects.active(vm_uuid).first()
    if op is not None and settle_if_orphaned(op):
        return None
    return op


def busy_conflict(vm) -> Conflict | None:
    """Why ``vm`` takes no change right now (an operation is on it), or None."""
    op = active_operation(vm.uuid)
    return None if op is None else _busy(vm, op)


def _busy(vm, op: Operation) -> Conflict:
    state = "queued" if op.status == Operation.Status.QUEUED else "running"
    return Conflict(f"Another operation is {state} on {vm.name}: {op.summary}. Wait for it to end, then try again.")


def cancel(op: Operation, actor: Actor) -> Operation:
    """Cancel a task no worker has started: only its requester or an admin; a running
    one cannot be (libvirt's calls have no abort): Conflict."""
    with audit.attempt("task.cancel", actor, op.vm_name, op.snapshot, {"task": op.pk}):
        user = actor.user
        if user is None or not (user.is_superuser or user.pk == op.user_id):
            raise Forbidden(f"Only {op.username or 'its requester'} or an admin may cancel task #{op.pk}.")
        message = f"Cancelled by {actor.username} before a worker started it."
        if not _end(op, finished=False, message=message, expect=Operation.Status.QUEUED):
            op.refresh_from_db()
            if op.is_active:
                raise Conflict(f"Task #{op.pk} is running: it can no longer be cancelled; wait for it to end.")
            raise Conflict(f"Task #{op.pk} has ended already ({op.status}): there is nothing to cancel.")
    return op


# ---------------------------------------------------------------------------
# Running (inside a django-q2 worker)


def recheck(op: Operation, perm: str) -> None:
    """The requester may still ``perm`` the operation's VM (no libvirt call)."""
    policy.recheck(op.user, policy.VMRef(op.vm_name, op.vm_uuid), perm)


def task_vm(op: Operation, perm: str, *, snapshots: bool = True) -> hypervisor.VMInfo:
    """The operation's VM as libvirt shows it now, the requester's permission checked again."""
    vm = hypervisor.get_vm(op.vm_uuid, snapshots=snapshots)
    policy.recheck(op.user, vm, perm)
    return vm


class Progress:
    """Writes progress and message of one running operation."""

    def __init__(self, op: Operation):
        self.op = op

    def __call__(self, percent: int | None = None, message: str | None = None) -> None:
        fields = {}
        if percent is not None:
            self.op.progress = fields["progress"] = max(0, min(100, int(percent)))
        if message is not None:
            self.op.message = fields["message"] = message
        if fields:
            # Only while it runs: an operation ended (settled, say) keeps its result.
            Operation.objects.filter(pk=self.op.pk, status=Operation.Status.RUNNING).update(**fields)

    @contextlib.contextmanager
    def phase(self, message: str, estimate: float | None, start: int = 0, end: int = 95):
        """Run a step that libvirt reports no progress for (``savevm``, revert).

        Progress moves from ``start`` toward ``end`` along the estimate (never
        past ``end`` until the step returns); the message says it is an estimate.
        """
        stop = threading.Event()
        began = time.monotonic()
        suffix = f" (about {estimate:.0f} s, estimated from earlier runs)" if estimate else ""
        self(start, message + suffix)

        def tick():
            try:
                while not stop.wait(0.5):
                    elapsed = time.monotonic() - began
                    if estimate:
                        self(start + (end - start) * min(1.0, elapsed / estimate), f"{message}: {elapsed:.0f} s elapsed{suffix}")
                    else:
                        self(None, f"{message}: {elapsed:.0f} s elapsed")
            finally:
                connection.close()

        thread = threading.Thread(target=tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def estimate_seconds(kind: str, vm_uuid: str, **match) -> float | None:
    """Median duration of the last runs of ``kind`` on this VM (with the same params)."""
    recent = Operation.objects.filter(
        kind=kind, vm_uuid=vm_uuid, status=Operation.Status.FINISHED, started_at__isnull=False, finished_at__isnull=False
    ).order_by("-finished_at")[:20]
    durations = [op.duration for op in recent if all(op.params.get(k) == v for k, v in match.items())][:5]
    return statistics.median(durations) if durations else None


def _worker_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def run(operation_id: int) -> None:
    """django-q2 entry point."""
    close_old_connections()
    with transaction.atomic():
        op = Operation.objects.select_for_update().filter(pk=operation_id).first()
        if op is None or op.status != Operation.Status.QUEUED:
            # Redelivered, or settled already: never act twice.
            return
        op.status = Operation.Status.RUNNING
        op.started_at = timezone.now()
        op.worker = _worker_id()
        op.message = "Started"
        op.save(update_fields=["status", "started_at", "worker", "message"])
    kind = KINDS.get(op.kind)
    try:
        if kind is None:
            raise AppError(f"Unknown operation kind {op.kind!r}.")
        message = kind.run(op, Progress(op))
    except ConnectionLost as exc:
        # libvirtd crashed or restarted mid-call: say what libvirt shows once it is back.
        finished, detail = _settle(op, kind, wait=60)
        _end(op, finished=finished, message=f"{exc.message} {detail}")
    except AppError as exc:
        _end(op, finished=False, message=exc.message)
    except Exception as exc:  # noqa: BLE001 - the task must end with a reason, whatever happened
        log.exception("operation %s failed", op.pk)
        _end(op, finished=False, message=f"Unexpected error: {exc}")
    else:
        _end(op, finished=True, message=message)


def _end(op: Operation, *, finished: bool, message: str, expect: str = Operation.Status.RUNNING) -> bool:
    """End ``op`` once: the one caller whose conditional update still finds it ``expect``
    (a worker, a settler, a cancel) writes the result and its audit row; any other
    writes nothing and gets False."""
    fields = {
        "status": Operation.Status.FINISHED if finished else Operation.Status.FAILED,
        "finished_at": timezone.now(),
        "message": message,
    }
    if finished:
        fields["progress"] = 100
    with transaction.atomic():
        if not Operation.objects.filter(pk=op.pk, status=expect).update(**fields):
            return False
        for name, value in fields.items():
            setattr(op, name, value)
        audit.record(
            op.kind,
            actor=Actor.from_operation(op),
            vm=op,
            snapshot=op.snapshot,
            params=op.params,
            operation=op,
            stage=AuditEvent.Stage.RESULT,
            outcome=AuditEvent.Outcome.SUCCESS if finished else AuditEvent.Outcome.FAILED,
            message=message,
            username=op.username,
        )
    return True


# ---------------------------------------------------------------------------
# Orphans: a worker killed mid-task (SIGKILL, timeout, host reboot)


def _worker_alive(worker: str) -> bool:
    host, _, rest = worker.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host's worker: only the timeout can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _start_time(int(pid)) == started


# A settler claims an orphan by writing this and its own id as the operation's worker.
SETTLING = "settling:"


def is_orphaned(op: Operation, now=None) -> bool:
    now = now or timezone.now()
    if op.status == Operation.Status.RUNNING:
        if op.worker.startswith(SETTLING):
            return not _worker_alive(op.worker.removeprefix(SETTLING))  # its settler died
        if op.worker and not _worker_alive(op.worker):
            return True
        return op.started_at is not None and op.started_at < now - timedelta(seconds=settings.TASK_TIMEOUT + 60)
    if op.status == Operation.Status.QUEUED:
        # The broker redelivers for `retry` seconds; after that nobody will run it.
        return op.requested_at < now - timedelta(seconds=settings.Q_CLUSTER["retry"] * 2)
    return False


def settle_if_orphaned(op: Operation) -> bool:
    """End ``op`` by what libvirt shows if its worker is gone. True if it has ended.

    The settler first claims the operation (it becomes its worker, so a second settler
    sees a live one and leaves it alone), asks libvirt, and ends it only if nobody
    else did meanwhile (``_end`` is conditional): one ending, one result, one audit row.
    """
    if not is_orphaned(op):
        return False
    with transaction.atomic():
        fresh = Operation.objects.select_for_update().get(pk=op.pk)
        if not fresh.is_active or not is_orphaned(fresh):
            return not fresh.is_active
        if fresh.status == Operation.Status.QUEUED:
            ended = _end(
                fresh,
                finished=False,
                message="This task was never picked up by a worker (is the qcluster running?).",
                expect=Operation.Status.QUEUED,
            )
            return ended
        dead, me = fresh.worker, SETTLING + _worker_id()
        Operation.objects.filter(pk=fresh.pk).update(worker=me)
    outcome = _settle(fresh, KINDS.get(fresh.kind))
    if outcome is None:
        # libvirt is still at it (e.g. QEMU saving memory): give it back for a later look.
        Operation.objects.filter(pk=fresh.pk, status=Operation.Status.RUNNING, worker=me).update(worker=dead)
        return False
    finished, detail = outcome
    _end(fresh, finished=finished, message=f"The worker running this task stopped before it finished. {detail}")
    return True


def _settle(op: Operation, kind: Kind | None, wait: float = 0) -> tuple[bool, str] | None:
    """How ``op`` really ended, by what libvirt shows now: (finished?, why).

    None while libvirt is still busy with it. With ``wait``, keep asking that many
    seconds (for libvirtd to come back, or QEMU to finish) before giving up.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            outcome = kind.settle(op) if kind and kind.settle else (False, "")
        except Unavailable as exc:
            outcome = None if wait else (False, f"Could not check the VM afterwards: {exc.message}")
        except AppError as exc:
            outcome = (False, f"Could not check the VM afterwards: {exc.message}")
        if outcome is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if outcome is None and wait:
        return False, "libvirt could not be asked what happened: check the VM."
    return outcome


def settle_orphans() -> int:
    """Periodic (django-q2 schedule) and at cluster start: end every orphaned operation."""
    count = 0
    for op in Operation.objects.active():
        if settle_if_orphaned(op):
            count += 1
    return count
