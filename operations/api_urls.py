from django.urls import path

from operations import api, audit_api

urlpatterns = [
    path("tasks", api.TaskList.as_view(), name="api-task-list"),
    path("tasks/<int:task_id>", api.TaskDetail.as_view(), name="api-task"),
]

# The record: audit trail and snapshot history (issue 5).
urlpatterns += [
    path("audit", audit_api.AuditList.as_view(), name="api-audit"),
    path("vms/<str:vm>/history", audit_api.VMHistory.as_view(), name="api-vm-history"),
]
