from django.core.management.base import BaseCommand

from core import hypervisor, tiny

DEMO = [("demo-web", True), ("demo-db", False), ("demo-build", False)]


class Command(BaseCommand):
    help = "Create a few tiny demo VMs (64 MiB, empty qcow2 disk, no network); existing ones are left alone."

    def add_arguments(self, parser):
        parser.add_argument("--snapshots", action="store_true", help="also give demo-web a small snapshot tree")

    def handle(self, *args, snapshots=False, **options):
        for name, running in DEMO:
            if hypervisor.vm_exists(name):
                self.stdout.write(f"{name}: exists, left alone")
                continue
            vm = tiny.create_tiny_vm(name)
            if running:
                hypervisor.power(vm.uuid, "start")
            self.stdout.write(self.style.SUCCESS(f"{name}: created{' and started' if running else ''}"))
        if snapshots and hypervisor.get_vm("demo-web").snapshot_count == 0:
            for snap, desc in (("installed", "Fresh install"), ("configured", "After configuration")):
                hypervisor.create_snapshot("demo-web", snap, desc)
            self.stdout.write("demo-web: snapshots 'installed' and 'configured' taken")
