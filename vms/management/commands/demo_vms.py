"""manage.py demo_vms: a few tiny VMs to try the app on, and a small snapshot tree."""

from django.core.management.base import BaseCommand

from core import hypervisor, tiny
from snapshots import records
from snapshots.tree import load_tree

DEMO = [("demo-web", True), ("demo-db", False), ("demo-build", False)]
DEMO_SNAPSHOTS = [("installed", "Fresh install"), ("configured", "After configuration")]
# Who the snapshots' records say took them: this command, not someone outside the app.
DEMO_USER = "demo set-up"


def take_demo_snapshots(vm_name: str) -> None:
    """A chain of snapshots on the VM, recorded as taken in the app by the demo set-up."""
    vm = hypervisor.get_vm(vm_name)
    load_tree(vm)  # the app's records agree with libvirt before adding to them
    parent = None
    for name, description in DEMO_SNAPSHOTS:
        info = hypervisor.create_snapshot(vm.uuid, name, description)
        parent = records.add(vm.uuid, vm.name, info, name=name, parent=parent, created_by_username=DEMO_USER)


class Command(BaseCommand):
    help = "Create a few tiny demo VMs (64 MiB, empty qcow2 disk, no network); existing ones are left alone."

    def add_arguments(self, parser):
        parser.add_argument("--snapshots", action="store_true", help="also give the first demo VM a small snapshot tree")

    def handle(self, *args, snapshots=False, **options):
        for name, running in DEMO:
            if hypervisor.vm_exists(name):
                self.stdout.write(f"{name}: exists, left alone")
                continue
            vm = tiny.create_tiny_vm(name)
            if running:
                hypervisor.power(vm.uuid, "start")
            self.stdout.write(self.style.SUCCESS(f"{name}: created{' and started' if running else ''}"))
        first = DEMO[0][0]
        if snapshots and hypervisor.get_vm(first).snapshot_count == 0:
            take_demo_snapshots(first)
            names = " and ".join(f"'{name}'" for name, _ in DEMO_SNAPSHOTS)
            self.stdout.write(f"{first}: snapshots {names} taken")
