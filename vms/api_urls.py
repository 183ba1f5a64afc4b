from django.urls import path

from vms import api

urlpatterns = [
    path("vms", api.VMList.as_view(), name="api-vm-list"),
    path("vms/<str:vm>", api.VMDetail.as_view(), name="api-vm"),
]
