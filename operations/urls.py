from django.contrib.auth import views as auth_views
from django.urls import path

from operations import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("tasks/", views.task_list, name="task-list"),
    path("tasks/<int:task_id>/", views.task_detail, name="task-detail"),
]
