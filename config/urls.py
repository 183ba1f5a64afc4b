from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from operations import api as operations_api
from snapshots import api as snapshots_api
from vms import api as vms_api

api = [
    path("vms", vms_api.VMList.as_view(), name="api-vm-list"),
    path("vms/<str:vm>", vms_api.VMDetail.as_view(), name="api-vm"),
    path("vms/<str:vm>/snapshots", snapshots_api.SnapshotList.as_view(), name="api-snapshot-list"),
    path("vms/<str:vm>/snapshots/current", snapshots_api.CurrentSnapshot.as_view(), name="api-snapshot-current"),
    path("vms/<str:vm>/snapshots/<str:snapshot>", snapshots_api.SnapshotDetail.as_view(), name="api-snapshot"),
    path("vms/<str:vm>/snapshots/<str:snapshot>/revert", snapshots_api.SnapshotRevert.as_view(), name="api-snapshot-revert"),
    path("tasks", operations_api.TaskList.as_view(), name="api-task-list"),
    path("tasks/<int:task_id>", operations_api.TaskDetail.as_view(), name="api-task"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]

urlpatterns = [
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    path("", include("vms.urls")),
    path("", include("snapshots.urls")),
    path("", include("operations.urls")),
]
