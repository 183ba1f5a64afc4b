from django.urls import path

from snapshots import api

urlpatterns = [
    path("vms/<str:vm>/snapshots", api.SnapshotList.as_view(), name="api-snapshot-list"),
    path("vms/<str:vm>/snapshots/current", api.CurrentSnapshot.as_view(), name="api-snapshot-current"),
    path("vms/<str:vm>/snapshots/<str:snapshot>", api.SnapshotDetail.as_view(), name="api-snapshot"),
    path("vms/<str:vm>/snapshots/<str:snapshot>/revert", api.SnapshotRevert.as_view(), name="api-snapshot-revert"),
    path("vms/<str:vm>/history", api.VMHistory.as_view(), name="api-vm-history"),
]
