from django.urls import path

from operations import api, audit_api

urlpatterns = [
    path("tasks", api.TaskList.as_view(), name="api-task-list"),
    path("tasks/<int:task_id>", api.TaskDetail.as_view(), name="api-task"),
    path("tasks/<int:task_id>/cancel", api.TaskCancel.as_view(), name="api-task-cancel"),
]

urlpatterns += [
    path("audit", audit_api.AuditList.as_view(), name="api-audit"),
]
