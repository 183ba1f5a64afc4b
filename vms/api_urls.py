from django.urls import path

from vms import api, power

urlpatterns = [
    path("vms", api.VMList.as_view(), name="api-vm-list"),
    # GET the VM, DELETE it.
    path("vms/<str:vm>", api.VMDetail.as_view(), name="api-vm"),
    path("vms/<str:vm>/clone", api.VMClone.as_view(), name="api-vm-clone"),
    *(path(f"vms/<str:vm>/{action}", api.power_view(action), name=f"api-vm-{action}") for action in power.POWER_ACTIONS),
]
