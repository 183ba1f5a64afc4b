from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from operations.models import Operation
from operations.views import describe
from snapshots import views as snapshot_views
from vms import access, services


@login_required
def vm_list(request):
    inventory = services.inventory(request.user)
    perms = access.access_for(request.user)
    uuids = [vm.uuid for vm, _ in inventory]
    busy = {op.vm_uuid: op for op in Operation.objects.filter(vm_uuid__in=uuids, status__in=Operation.ACTIVE)}
    rows = [(vm, current, perms.perms(vm.uuid), describe(busy.get(vm.uuid))) for vm, current in inventory]
    return render(request, "vms/list.html", {"rows": rows})


@login_required
def vm_detail(request, name: str):
    """The VM page: header, live operation, snapshot tree (see snapshots.views)."""
    return snapshot_views.vm_page(request, name)
