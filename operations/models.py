"""Operations (the API's Task resource and their history) and the append-only audit trail."""

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.db.models import Q
from django.utils import timezone

ACTIVE = ("queued", "running")


class OperationQuerySet(models.QuerySet):
    def active(self, vm_uuid: str | None = None):
        """Operations queued or running (on one VM): at most one per VM, by a constraint."""
        queryset = self.filter(status__in=ACTIVE)
        return queryset if vm_uuid is None else queryset.filter(vm_uuid=vm_uuid)


class Operation(models.Model):
    """One long operation on a VM: the API's Task resource and its history.

    Kept forever (django-q2 prunes its own results; we never prune these).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=40)
    vm_name = models.CharField(max_length=200)
    vm_uuid = models.CharField(max_length=36, db_index=True)
    snapshot = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    target_uri = models.CharField(max_length=300, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # host:pid of the worker running it, to tell a live task from an orphan.
    worker = models.CharField(max_length=120, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            # One mutating operation per VM at a time, enforced by the database.
            models.UniqueConstraint(
                fields=["vm_uuid"],
                condition=Q(status__in=list(ACTIVE)),
                name="one_active_operation_per_vm",
            )
        ]

    def __str__(self) -> str:
        return f"task #{self.pk} {self.kind} on {self.vm_name}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def failed(self) -> bool:
        return self.status == self.Status.FAILED

    @property
    def label(self) -> str:
        """What it does, in words: "take snapshot", "clone VM"."""
        from operations.runner import KINDS  # the kinds register there, at startup

        kind = KINDS.get(self.kind)
        return kind.label if kind else self.kind.replace(".", " ")

    @property
    def summary(self) -> str:
        """``task #12 (take snapshot before-upgrade by alice)``: how messages name it."""
        what = f"{self.label} {self.snapshot}" if self.snapshot else self.label
        who = f" by {self.username}" if self.username else ""
        return f"task #{self.pk} ({what}{who})"

    @property
    def public_status(self) -> str:
        """The API's word: ``running`` until the work ends."""
        return "running" if self.is_active else self.status

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only.")

    def delete(self):
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """One append-only line of the audit trail. Never edited, never deleted
    (the model refuses, and database triggers refuse too), and hash-chained to the
    line before it, so a line changed or taken out behind the triggers' back shows
    (``audit.record`` writes the chain, ``manage.py audit verify`` checks it)."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        DENIED = "denied"
        FAILED = "failed"

    class Stage(models.TextChoices):
        REQUEST = "request", "request"
        RESULT = "result", "task result"
        EVENT = "event", "event"

    # Set by audit.record before the row's hash is computed, as the hash covers it.
    time = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    # No database constraint: deleting a user must not touch the audit trail;
    # the frozen username tells who it was.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=40, db_index=True)
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.REQUEST)
    vm_name = models.CharField(max_length=200, blank=True)
    vm_uuid = models.CharField(max_length=36, blank=True, db_index=True)
    snapshot = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    message = models.TextField(blank=True)
    operation = models.ForeignKey(
        Operation, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="audit_events"
    )
    request_id = models.CharField(max_length=64, blank=True)
    # Hex SHA-256: hash = sha256(prev_hash + the row's content), prev_hash = the hash of
    # the row before (by id), or audit.GENESIS for the first.
    prev_hash = models.CharField(max_length=64, blank=True, editable=False)
    hash = models.CharField(max_length=64, blank=True, editable=False)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.outcome}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")

    @property
    def repeats(self) -> int:
        """How many identical refusals this row stands for: 1, or more for an anonymous
        refusal repeated within a minute (``select_related("repeat")`` saves a query)."""
        try:
            return self.repeat.count
        except ObjectDoesNotExist:
            return 1


class AuditRepeat(models.Model):
    """The count of identical anonymous refusals (same address, request and answer)
    that came within a minute of the audit row written for the first of them.

    A counter beside the trail, not part of it: it changes as refusals come, so it is
    neither append-only nor covered by the hash chain. The trail keeps one row a
    minute for a flood instead of one per request (audit.record).
    """

    # No database constraint, like the trail's other references: audit rows are never
    # deleted, so it could only add triggers of its own to the audit table.
    event = models.OneToOneField(
        AuditEvent, on_delete=models.DO_NOTHING, db_constraint=False, primary_key=True, related_name="repeat"
    )
    count = models.PositiveIntegerField(help_text="the refusals the row stands for, its own included")
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.event_id} ×{self.count}"
