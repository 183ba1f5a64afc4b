"""End to end through a real qcluster process: queueing, progress, a killed worker."""

import os
import signal
import time

import pytest
from django.db import connection

from core import hypervisor
from operations.models import Operation
from tests.conftest import restart_libvirtd, wait_task

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_create_through_the_cluster(api, vm, qcluster):
    response = api.post(f"/api/vms/{vm.name}/snapshots", {"name": "via-cluster"}, format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "running"
    done = wait_task(api, response.json()["id"], timeout=60)
    assert done["status"] == "finished", done
    assert done["progress"] == 100
    assert api.get(f"/api/vms/{vm.name}/snapshots/via-cluster").json()["current"] is True


@pytest.fixture
def messages():
    """Every message the worker writes on a task, recorded by the database itself (the
    qcluster is another process): no poll can miss one. Returns messages(task_id)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE test_message_log (task INTEGER, message TEXT)")
        cursor.execute(
            "CREATE TRIGGER test_message_log_write AFTER UPDATE OF message ON operations_operation "
            "BEGIN INSERT INTO test_message_log VALUES (NEW.id, NEW.message); END"
        )

    def seen(task_id: int) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT message FROM test_message_log WHERE task = %s ORDER BY rowid", [task_id])
            return [row[0] for row in cursor.fetchall()]

    yield seen
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_message_log_write")
        cursor.execute("DROP TABLE test_message_log")


def test_progress_and_phases_of_a_slow_snapshot(api, big_vm, qcluster, messages):
    task_id = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "slow"}, format="json").json()["id"]
    task = wait_task(api, task_id, timeout=90)
    assert task["status"] == "finished", task
    assert any("Saving memory and disks" in m and "elapsed" in m for m in messages(task_id)), messages(task_id)
    # A second request while one runs is refused with the running task named.
    task2 = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "slow-2"}, format="json").json()
    conflict = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "slow-3"}, format="json")
    assert conflict.status_code == 409
    assert f"task #{task2['id']}" in conflict.json()["reason"]
    assert wait_task(api, task2["id"], timeout=90)["status"] == "finished"
    # The first run's duration gives the second an estimate, labelled as one.
    assert any("estimated from earlier runs" in m for m in messages(task2["id"])), messages(task2["id"])


def test_worker_killed_mid_snapshot_is_settled(api, big_vm, qcluster):
    task_id = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "interrupted"}, format="json").json()["id"]
    deadline = time.monotonic() + 60
    # Kill the worker once libvirt has the job: libvirtd finishes it without the worker.
    while hypervisor.get_vm(big_vm.uuid, snapshots=False).state_reason_text != "saving":
        assert time.monotonic() < deadline, "QEMU never started saving"
        time.sleep(0.02)
    op = Operation.objects.get(pk=task_id)
    os.kill(int(op.worker.split(":")[1]), signal.SIGKILL)
    # The task does not stay running forever: it is settled by what libvirt shows.
    done = wait_task(api, task_id, timeout=60)
    assert done["status"] == "finished", done
    assert "worker running this task stopped" in done["message"] and "it was taken" in done["message"]
    assert "interrupted" in hypervisor.snapshot_names(big_vm.uuid)[0]
    assert api.get(f"/api/vms/{big_vm.name}/snapshots/interrupted").status_code == 200
    # And the VM is usable again: the cluster's new worker takes the next task.
    again = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "after-kill"}, format="json")
    assert again.status_code == 202, again.json()
    assert wait_task(api, again.json()["id"], timeout=90)["status"] == "finished"


def wait_until_written(path: str, quiet: float = 1.0, timeout: float = 60) -> None:
    """Until nothing has written to ``path`` for ``quiet`` seconds (QEMU's save is over)."""
    last, since, deadline = None, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"{path} is still being written"
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) != last:
            last, since = (now.st_size, now.st_mtime_ns), time.monotonic()
        time.sleep(0.1)


@pytest.mark.restarts_libvirtd
def test_libvirtd_crash_mid_snapshot_is_reported(api, big_vm, qcluster):
    task_id = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "cut-off"}, format="json").json()["id"]
    deadline = time.monotonic() + 60
    while hypervisor.get_vm(big_vm.uuid, snapshots=False).state_reason_text != "saving":
        assert time.monotonic() < deadline, "QEMU never started saving"
        time.sleep(0.02)
    # libvirtd crashes while QEMU saves, and is back once QEMU is done: the snapshot was
    # never recorded by libvirt. (Back sooner, libvirt 9.0 may take QEMU's answer to the
    # dead daemon's save for its own and stop the guest: a libvirt race, not ours.)
    restart_libvirtd(signal="KILL", while_down=lambda: wait_until_written(big_vm.disks[0].source))
    done = wait_task(api, task_id, timeout=120)
    # The worker survived; the task says the connection broke and what libvirt shows now.
    assert done["status"] == "failed", done
    assert "connection to libvirtd broke while taking snapshot cut-off" in done["message"], done
    assert "libvirt shows no snapshot cut-off: it was not taken" in done["message"], done
    assert "cut-off" not in hypervisor.snapshot_names(big_vm.uuid)[0]
    # The VM is running again, as before the request, and usable.
    assert hypervisor.get_vm(big_vm.uuid).state == "running", done
    assert "it was resumed" in done["message"], done
    again = api.post(f"/api/vms/{big_vm.name}/snapshots", {"name": "after-crash"}, format="json")
    assert again.status_code == 202, again.json()
    assert wait_task(api, again.json()["id"], timeout=90)["status"] == "finished"
