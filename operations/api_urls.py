from django.urls import path

from operations import api

urlpatterns = [
    path("tasks", api.TaskList.as_view(), name="api-task-list"),
    path("tasks/<int:task_id>", api.TaskDetail.as_view(), name="api-task"),
]
