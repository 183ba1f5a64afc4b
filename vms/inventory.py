"""The VM inventory as the user sees it."""

from __future__ import annotations

from django.db.models import Q

from access import policy
from core import hypervisor
from snapshots.models import SnapshotRecord


def current_snapshot_names(vms: list[hypervisor.VMInfo]) -> dict[str, str]:
    """Display name of each VM's current snapshot (one query for all VMs)."""
    wanted = [vm for vm in vms if vm.current_snapshot]
    if not wanted:
        return {}
    query = Q()
    for vm in wanted:
        query |= Q(vm_uuid=vm.uuid, libvirt_name=vm.current_snapshot)
    shown = {
        (r.vm_uuid, r.libvirt_name): r.name
        for r in SnapshotRecord.objects.filter(query, deleted_at__isnull=True).only("vm_uuid", "libvirt_name", "name")
    }
    return {vm.uuid: shown.get((vm.uuid, vm.current_snapshot), vm.current_snapshot) for vm in wanted}


def vm_dict(vm: hypervisor.VMInfo, current: str) -> dict:
    return {
        "name": vm.name,
        "uuid": vm.uuid,
        "state": vm.state,
        "vcpus": vm.vcpus,
        "memory": vm.memory_mib,
        "disks": [
            {"target": d.target, "device": d.device, "format": d.format, "source": d.source, "readonly": d.readonly}
            for d in vm.disks
        ],
        "snapshots": vm.snapshot_count,
        "current-snapshot": current,
    }


def inventory(user) -> list[tuple[hypervisor.VMInfo, str]]:
    """(VM, current snapshot's display name) for every VM the user may view."""
    vms = policy.visible_vms(user)
    current = current_snapshot_names(vms)
    return [(vm, current.get(vm.uuid, "")) for vm in vms]


def vm_detail(user, name: str) -> tuple[hypervisor.VMInfo, str]:
    vm = policy.get_vm(user, name)
    return vm, current_snapshot_names([vm]).get(vm.uuid, "")
