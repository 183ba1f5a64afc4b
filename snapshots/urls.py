from django.urls import path

from snapshots import views

urlpatterns = [
    path("vms/<str:vm>/snapshots/", views.snapshot_create, name="snapshot-create"),
    path("vms/<str:vm>/snapshots/<str:snapshot>/", views.snapshot_row, name="snapshot-row"),
    path("vms/<str:vm>/snapshots/<str:snapshot>/edit/", views.snapshot_edit, name="snapshot-edit"),
    path("vms/<str:vm>/snapshots/<str:snapshot>/revert/", views.snapshot_revert, name="snapshot-revert"),
    path("vms/<str:vm>/snapshots/<str:snapshot>/delete/", views.snapshot_delete, name="snapshot-delete"),
    path("vms/<str:name>/history", views.vm_history, name="vm-history"),
]
