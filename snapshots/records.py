"""SnapshotRecord rows, made and ended in one place each: ``add`` for a snapshot taken,
found or copied by a clone, ``mark_deleted`` for one that is gone."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from core import hypervisor
from snapshots.models import SnapshotRecord

# Who made (or deleted) a snapshot that libvirt showed without the app's doing.
OUTSIDE = "(outside the app)"


def created_at(epoch: int) -> datetime:
    """libvirt's creationTime (epoch seconds) as an aware datetime."""
    return datetime.fromtimestamp(epoch, tz=UTC)


def add(
    vm_uuid: str,
    vm_name: str,
    info: hypervisor.SnapshotInfo,
    *,
    name: str,
    origin: str = SnapshotRecord.Origin.APP,
    parent: SnapshotRecord | None = None,
    description: str | None = None,
    created: datetime | None = None,
    created_by=None,
    created_by_username: str = "",
) -> SnapshotRecord:
    """Remember a snapshot libvirt has: ``info`` says what it is, the rest what the app knows."""
    return SnapshotRecord.objects.create(
        vm_uuid=vm_uuid,
        vm_name=vm_name,
        libvirt_name=info.name,
        name=name,
        description=info.description if description is None else description,
        state=info.state,
        memory=info.memory,
        created=created or created_at(info.created),
        parent=parent,
        origin=origin,
        created_by=created_by,
        created_by_username=created_by_username,
    )


def live(vm_uuid: str) -> dict[str, SnapshotRecord]:
    """{libvirt name: record} of the snapshots the app believes exist on the VM."""
    return {r.libvirt_name: r for r in SnapshotRecord.objects.filter(vm_uuid=vm_uuid, deleted_at__isnull=True)}


def mark_deleted(record_id: int, username: str) -> None:
    """Record a snapshot's deletion; its children move up to its parent (as in libvirt)."""
    with transaction.atomic():
        record = SnapshotRecord.objects.filter(pk=record_id, deleted_at__isnull=True).first()
        if record is None:
            return
        SnapshotRecord.objects.filter(parent=record, deleted_at__isnull=True).update(parent=record.parent_id)
        record.deleted_at = timezone.now()
        record.deleted_by_username = username
        record.save(update_fields=["deleted_at", "deleted_by_username"])


def forget_vm(vm_uuid: str, username: str) -> None:
    """The VM is gone: every snapshot record still live is history now."""
    for pk in SnapshotRecord.objects.filter(vm_uuid=vm_uuid, deleted_at__isnull=True).values_list("pk", flat=True):
        mark_deleted(pk, username)
