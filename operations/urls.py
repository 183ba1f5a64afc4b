from django.contrib.auth import views as auth_views
from django.urls import path

from operations import audit_views, token_views, views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<int:task_id>/", views.task_detail, name="task-detail"),
    path("tasks/<int:task_id>/progress/", views.task_progress, name="task-progress"),
    path("tasks/vm/<str:vm_uuid>/watch/", views.vm_task_watch, name="vm-task-watch"),
]

urlpatterns += [
    path("audit/", audit_views.audit_list, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
]


urlpatterns += [
    path("tokens/", token_views.token_list, name="token-list"),
    path("tokens/<int:token_id>/revoke", token_views.token_revoke, name="token-revoke"),
]
