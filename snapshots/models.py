"""What the app remembers of each snapshot, kept after the snapshot is gone."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class SnapshotRecord(models.Model):
    """What the app knows of one snapshot, kept after the snapshot is gone.

    libvirt is the truth for what exists now; this is the truth for what existed,
    and for the name shown: libvirt cannot rename, so ``libvirt_name`` (the qcow2
    tag) never changes while ``name`` is what users see and may change.
    """

    class Origin(models.TextChoices):
        APP = "app", "taken in the app"
        OUTSIDE = "outside", "found, made outside the app"
        CLONE = "clone", "copied by a clone"

    vm_uuid = models.CharField(max_length=36, db_index=True)
    vm_name = models.CharField(max_length=200)
    libvirt_name = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    state = models.CharField(max_length=20)
    memory = models.BooleanField(default=False)
    created = models.DateTimeField()
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.APP)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by_username = models.CharField(max_length=150, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by_username = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["vm_uuid", "libvirt_name"], condition=Q(deleted_at__isnull=True), name="live_snapshot_libvirt_name"
            ),
            models.UniqueConstraint(fields=["vm_uuid", "name"], condition=Q(deleted_at__isnull=True), name="live_snapshot_name"),
        ]

    def __str__(self) -> str:
        return f"{self.vm_name}/{self.name}"

    @property
    def created_epoch(self) -> int:
        return int(self.created.timestamp())
