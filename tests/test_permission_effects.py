"""The matrix (test_permissions.py) checks answers; here a sample of its requests runs
to the end on real VMs: what a role may do happens in libvirt, what it may not leaves
libvirt and the database as they were."""

import pytest

from core import hypervisor
from operations.models import Operation
from tests.conftest import api_for, wait_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


def done(client, response) -> dict:
    assert response.status_code == 202, response.json()
    task = wait_task(client, response.json()["id"])
    assert task["status"] == "finished", task
    return task


def test_an_operators_accepted_requests_happen(make_user, vm):
    hypervisor.create_snapshot(vm.uuid, "base")
    operator = api_for(make_user("olive", role="operator", vm=vm))
    done(operator, operator.post(f"/api/vms/{vm.name}/snapshots", {"name": "mine"}, format="json"))
    assert "mine" in hypervisor.snapshot_names(vm.uuid)[0]
    done(operator, operator.post(f"/api/vms/{vm.name}/snapshots/base/revert"))
    assert hypervisor.snapshot_names(vm.uuid)[1] == "base"
    done(operator, operator.post(f"/api/vms/{vm.name}/start"))
    assert hypervisor.vm_state(vm.uuid) == "running"


def test_an_operators_refused_requests_change_nothing(make_user, vm):
    hypervisor.create_snapshot(vm.uuid, "base")
    operator = api_for(make_user("olive", role="operator", vm=vm))
    before = hypervisor.snapshot_names(vm.uuid), hypervisor.vm_state(vm.uuid)
    assert operator.delete(f"/api/vms/{vm.name}/snapshots/base").status_code == 403
    assert operator.put(f"/api/vms/{vm.name}/snapshots/base", {"name": "renamed"}, format="json").status_code == 403
    assert operator.post(f"/api/vms/{vm.name}/clone", {"name": f"{vm.name}-c"}, format="json").status_code == 403
    assert operator.delete(f"/api/vms/{vm.name}").status_code == 403
    assert (hypervisor.snapshot_names(vm.uuid), hypervisor.vm_state(vm.uuid)) == before
    assert not hypervisor.vm_exists(f"{vm.name}-c")
    assert not Operation.objects.exists()
    assert operator.get(f"/api/vms/{vm.name}/snapshots/base").json()["name"] == "base"


def test_a_viewer_and_an_outsider_change_nothing(make_user, vm):
    viewer = api_for(make_user("vic", role="viewer", vm=vm))
    outsider = api_for(make_user("otto"))
    for client, status in ((viewer, 403), (outsider, 404)):
        assert client.post(f"/api/vms/{vm.name}/snapshots", {"name": "x"}, format="json").status_code == status
        assert client.post(f"/api/vms/{vm.name}/start").status_code == status
    assert hypervisor.snapshot_names(vm.uuid)[0] == [] and hypervisor.vm_state(vm.uuid) == "shutoff"
    assert not Operation.objects.exists()


def test_an_owners_accepted_requests_happen(make_user, vm):
    hypervisor.create_snapshot(vm.uuid, "base")
    hypervisor.create_snapshot(vm.uuid, "child")
    owner = api_for(make_user("oona", role="owner", vm=vm))
    assert owner.put(f"/api/vms/{vm.name}/snapshots/child", {"name": "renamed"}, format="json").status_code == 200
    done(owner, owner.delete(f"/api/vms/{vm.name}/snapshots/base"))
    assert hypervisor.snapshot_names(vm.uuid)[0] == ["child"]  # libvirt's name stays; the app shows "renamed"
    assert [s["name"] for s in owner.get(f"/api/vms/{vm.name}/snapshots?all=true").json()] == ["renamed"]
    task = done(owner, owner.delete(f"/api/vms/{vm.name}"))
    assert not hypervisor.vm_exists(vm.uuid), task
