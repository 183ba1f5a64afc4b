"""A task that outlives TASK_TIMEOUT: django-q2 stops its worker; the task is settled."""

import time

import pytest

from core import hypervisor
from tests.conftest import wait_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def qcluster_env():
    return {"TASK_TIMEOUT": "1"}


def test_timed_out_snapshot_is_settled_by_what_libvirt_shows(api, big_vm, qcluster):
    task_id = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "too-slow"}, format="json").json()["id"]
    # The worker reaches libvirt well within its second; the save takes seconds more.
    deadline = time.monotonic() + 60
    while hypervisor.get_vm(big_vm.uuid, snapshots=False).state_reason_text != "saving":
        assert time.monotonic() < deadline, "QEMU never started saving"
        time.sleep(0.02)
    done = wait_task(api, task_id, timeout=90)
    # django-q2 stopped the worker; libvirtd finished the snapshot on its own, and the
    # task, settled by what libvirt shows, says so.
    assert done["status"] == "finished", done
    assert "worker running this task stopped" in done["message"] and "it was taken" in done["message"], done
    assert "too-slow" in hypervisor.snapshot_names(big_vm.uuid)[0]
    assert hypervisor.get_vm(big_vm.uuid).state == "running"
