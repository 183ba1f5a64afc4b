"""What the app remembers of snapshots, readable in Django admin; changes go through
the snapshot services (and their audit rows), never through admin."""

from django.contrib import admin

from operations.admin import ReadOnlyAdmin
from snapshots.models import SnapshotRecord


@admin.register(SnapshotRecord)
class SnapshotRecordAdmin(ReadOnlyAdmin):
    list_display = ["vm_name", "name", "libvirt_name", "state", "created", "origin", "created_by_username", "deleted_at"]
    list_filter = ["origin", "state"]
    search_fields = ["vm_name", "vm_uuid", "name", "libvirt_name"]
