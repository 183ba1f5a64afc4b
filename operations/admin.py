"""Tasks and the audit trail in Django admin: to read, never to change.

No add, change or delete permission and no bulk actions, so every change view is
read-only and a POST to it (or to a delete view) answers 403.
"""

from django.contrib import admin

from access.policy import access_for
from operations.models import AuditEvent, Operation


class ReadOnlyAdmin(admin.ModelAdmin):
    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_staff and access_for(request.user).can_audit

    def has_module_permission(self, request):
        return self.has_view_permission(request)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["time", "username", "client_ip", "action", "stage", "outcome", "vm_name", "snapshot", "message", "repeats"]
    list_filter = ["outcome", "stage", "action"]
    search_fields = ["username", "vm_name", "vm_uuid", "snapshot", "message", "request_id"]
    readonly_fields = ["time", "prev_hash", "hash", "repeats"]
    date_hierarchy = "time"
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("repeat")


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "vm_name", "snapshot", "status", "progress", "username", "requested_at", "finished_at"]
    list_filter = ["status", "kind"]
    search_fields = ["vm_name", "vm_uuid", "snapshot", "username", "message"]
    date_hierarchy = "requested_at"
