from django.contrib.auth import views as auth_views
from django.urls import path

from operations import audit_views, views
from vms import grant_views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<int:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<int:task_id>/progress/", views.task_progress, name="task-progress"),
    path("tasks/vm/<str:vm_uuid>/watch/", views.vm_task_watch, name="vm-task-watch"),
]

# The record: audit trail, snapshot history, grants (issue 5).
urlpatterns += [
    path("audit/", audit_views.audit_list, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
    path("vms/<str:name>/history", audit_views.vm_history, name="vm-history"),
    path("grants/", grant_views.grant_list, name="grant-list"),
    path("grants/add", grant_views.grant_add, name="grant-add"),
    path("grants/<int:grant_id>/remove", grant_views.grant_remove, name="grant-remove"),
]
