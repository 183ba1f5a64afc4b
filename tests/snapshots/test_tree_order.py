"""Siblings keep one order: libvirt's creation time has whole seconds and its listing
is a hash order that changes when libvirtd restarts, so ties go to the order the app
saw the snapshots, and for ones first seen together, to a fixed rule."""

import pytest

from core import hypervisor
from snapshots.models import SnapshotRecord
from snapshots.tree import load_tree
from tests.conftest import restart_libvirtd

pytestmark = pytest.mark.django_db


def order(vm) -> list[str]:
    return [r.name for r in load_tree(hypervisor.get_vm(vm.uuid)).records]


def same_second(vm, names):
    """Records as if libvirt had made them all in one second (it often does)."""
    created = SnapshotRecord.objects.filter(vm_uuid=vm.uuid).order_by("created").first().created
    SnapshotRecord.objects.filter(vm_uuid=vm.uuid, name__in=names).update(created=created)


@pytest.mark.restarts_libvirtd
def test_siblings_seen_one_by_one_keep_the_order_they_were_seen_in(vm):
    # Names in reverse alphabetical order, so neither name nor listing order can pass for it.
    for name in ("zulu", "yankee", "xray"):
        hypervisor.create_snapshot(vm.uuid, name)
        if name != "zulu":
            hypervisor.revert_snapshot(vm.uuid, "zulu")  # the next one is a sibling
        order(vm)
    same_second(vm, ["zulu", "yankee", "xray"])
    assert order(vm) == ["zulu", "yankee", "xray"]
    restart_libvirtd()  # libvirt lists them in another order now
    hypervisor.close()
    assert order(vm) == ["zulu", "yankee", "xray"]


def test_snapshots_first_seen_together_come_in_a_fixed_order():
    infos = [
        hypervisor.SnapshotInfo(name=n, description="", state="shutoff", created=1_700_000_000, parent=p)
        for n, p in (("b", ""), ("a", ""), ("c", "b"), ("d", "c"))
    ]
    expected = ["a", "b", "c", "d"]
    assert [i.name for i in hypervisor.creation_order(infos)] == expected
    assert [i.name for i in hypervisor.creation_order(reversed(infos))] == expected
