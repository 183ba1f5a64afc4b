"""The gateway: errors mapped, XML safe, connection survives a libvirtd restart."""

import pytest

from core import hypervisor
from snapshots.services import snapshot_blockers
from tests.conftest import restart_libvirtd


def test_unknown_vm_raises_not_found():
    with pytest.raises(hypervisor.NotFound):
        hypervisor.get_vm("vstest-does-not-exist")


def test_parser_refuses_entities():
    evil = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>'
    root = hypervisor.parse_xml(evil)
    assert "root:" not in (root.text or "")


def test_snapshot_names_are_sent_through_lxml(running_vm):
    info = hypervisor.create_snapshot(running_vm.uuid, "a-b_c.d", 'desc with <tags> & "quotes"')
    assert info.description == 'desc with <tags> & "quotes"'
    assert info.state == "running" and info.memory


def test_raw_disk_is_a_blocker(make_vm):
    vm = make_vm(disk_format="raw")
    reasons = snapshot_blockers(vm)
    assert len(reasons) == 1 and "vda" in reasons[0] and "raw" in reasons[0]


@pytest.mark.restarts_libvirtd
def test_reconnects_after_libvirtd_restarts(vm):
    assert hypervisor.get_vm(vm.uuid).name == vm.name
    restart_libvirtd()
    # Same process, same (now broken) connection object: the gateway reconnects once.
    assert hypervisor.get_vm(vm.uuid).name == vm.name


@pytest.mark.restarts_libvirtd
def test_a_change_cut_off_by_a_crash_is_not_repeated(vm):
    hypervisor.get_vm(vm.uuid)
    restart_libvirtd(signal="KILL")
    # The old connection is broken: a change is not silently retried on a new one...
    with pytest.raises(hypervisor.ConnectionLost):
        hypervisor.create_snapshot(vm.uuid, "maybe")
    # ...and the next call works on a fresh connection.
    assert hypervisor.snapshot_names(vm.uuid) == ([], "")
