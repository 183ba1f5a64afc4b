from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from operations import runner
from snapshots import services as snapshot_services
from vms import access, services


@login_required
def vm_list(request):
    return render(request, "vms/list.html", {"vms": services.inventory(request.user)})


@login_required
def vm_detail(request, name: str):
    vm, current = services.vm_detail(request.user, name)
    tree = snapshot_services.load_tree(vm)
    return render(
        request,
        "vms/detail.html",
        {
            "vm": vm,
            "current": current,
            "tree": tree,
            "perms": access.access_for(request.user).perms(vm.uuid),
            "active": runner.active_operation(vm.uuid),
        },
    )
