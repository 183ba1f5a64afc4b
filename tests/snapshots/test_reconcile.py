"""Reading a tree records changes made outside the app, and never writes false history
when a worker acts at the same moment, nor fails on a name clash."""

import subprocess

import pytest
from django.conf import settings

from core import hypervisor
from operations import runner
from operations.audit import Actor
from operations.models import AuditEvent
from snapshots import records, services
from snapshots.models import SnapshotRecord
from snapshots.tree import load_tree

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


def test_a_delete_finishing_while_the_tree_is_read_leaves_no_false_history(vm, admin_user, monkeypatch):
    hypervisor.create_snapshot(vm.uuid, "keep")
    hypervisor.create_snapshot(vm.uuid, "doomed")
    load_tree(hypervisor.get_vm(vm.uuid))  # both recorded (found)
    monkeypatch.setattr(runner, "async_task", lambda *args, **kwargs: None)  # the worker is driven below
    op = services.request_delete(Actor(user=admin_user), vm.name, "doomed")
    real_names, real_live = hypervisor.snapshot_names, records.live

    def names_after_the_workers_libvirt_step(ref, **kwargs):
        monkeypatch.setattr(hypervisor, "snapshot_names", real_names)
        hypervisor.delete_snapshot(vm.uuid, "doomed")  # the worker deletes it in libvirt ...
        return real_names(ref, **kwargs)

    def live_then_the_worker_ends(vm_uuid):
        monkeypatch.setattr(records, "live", real_live)
        seen = real_live(vm_uuid)  # ... the reader has the records (doomed still live) ...
        runner.run(op.pk)  # ... and the worker (finding it gone in libvirt) records the deletion and ends
        return seen

    monkeypatch.setattr(hypervisor, "snapshot_names", names_after_the_workers_libvirt_step)
    monkeypatch.setattr(records, "live", live_then_the_worker_ends)
    load_tree(hypervisor.get_vm(vm.uuid))

    doomed = SnapshotRecord.objects.get(vm_uuid=vm.uuid, libvirt_name="doomed")
    assert doomed.deleted_by_username == admin_user.username  # not "(outside the app)"
    assert not AuditEvent.objects.filter(action="snapshot.lost").exists()
    assert [r.name for r in load_tree(hypervisor.get_vm(vm.uuid)).records] == ["keep"]


def test_found_names_that_clash_get_the_next_free_name(vm):
    hypervisor.create_snapshot(vm.uuid, "a")
    load_tree(hypervisor.get_vm(vm.uuid))
    SnapshotRecord.objects.filter(vm_uuid=vm.uuid, libvirt_name="a").update(name="b")  # renamed in the app
    hypervisor.create_snapshot(vm.uuid, "b-found")
    load_tree(hypervisor.get_vm(vm.uuid))
    SnapshotRecord.objects.filter(vm_uuid=vm.uuid, libvirt_name="b-found").update(name="b-found")
    uri = settings.LIBVIRT_URI
    subprocess.run(["virsh", "-c", uri, "snapshot-create-as", vm.name, "b"], check=True, capture_output=True)
    tree = load_tree(hypervisor.get_vm(vm.uuid))  # "b" and "b-found" are taken: no 500
    assert tree.by_name["b-found-2"].libvirt_name == "b"
