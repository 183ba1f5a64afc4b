"""An operation ends exactly once, and a task whose worker died is called finished only
when libvirt proves it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import hypervisor
from operations import runner
from operations.models import AuditEvent, Operation
from tests.conftest import wait_task

SETTLED = "settled by what libvirt shows"


@pytest.fixture
def slow_kind():
    """A kind whose worker waits until told to finish, and whose settle says it failed."""
    started, release = threading.Event(), threading.Event()

    def run(op, progress):
        started.set()
        release.wait(20)
        progress(50, "still working after the settle")
        return "the worker's result"

    runner.register("test.slow", label="slow test task", settle=lambda op: (False, SETTLED))(run)
    yield started, release
    runner.KINDS.pop("test.slow")


def in_thread(fn, *args):
    def target():
        try:
            fn(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_two_settlers_and_a_finishing_worker_end_an_operation_once(vm, slow_kind):
    started, release = slow_kind
    op = Operation.objects.create(kind="test.slow", vm_name=vm.name, vm_uuid=vm.uuid, status="queued")
    worker = in_thread(runner.run, op.pk)
    assert started.wait(20)
    # The worker now looks dead (another host's worker past its timeout, say).
    long_ago = timezone.now() - timedelta(seconds=settings.TASK_TIMEOUT + 120)
    Operation.objects.filter(pk=op.pk).update(worker="elsewhere:1:1", started_at=long_ago)
    barrier = threading.Barrier(2)

    def settle():
        barrier.wait()
        runner.settle_if_orphaned(Operation.objects.get(pk=op.pk))

    settlers = [in_thread(settle) for _ in range(2)]
    for thread in settlers:
        thread.join(30)
    release.set()
    worker.join(30)

    op.refresh_from_db()
    results = AuditEvent.objects.filter(operation_id=op.pk, stage=AuditEvent.Stage.RESULT)
    assert results.count() == 1
    assert op.status == "failed" and SETTLED in op.message
    assert results.get().message == op.message and results.get().outcome == "failed"
    assert op.progress != 50  # the late worker wrote nothing on the ended task
    assert not Operation.objects.active(vm.uuid).exists()  # the VM is free again


@pytest.mark.django_db(transaction=True)
def test_a_worker_ending_after_the_settle_writes_nothing(vm):
    op = Operation.objects.create(
        kind="snapshot.create",
        vm_name=vm.name,
        vm_uuid=vm.uuid,
        status="running",
        params={"name": "x", "libvirt_name": "x", "vm_state": "shutoff"},
        started_at=timezone.now(),
        worker="elsewhere:1:1",
    )
    stale = Operation.objects.get(pk=op.pk)
    Operation.objects.filter(pk=op.pk).update(started_at=timezone.now() - timedelta(days=1))
    assert runner.settle_if_orphaned(Operation.objects.get(pk=op.pk))
    assert not runner._end(stale, finished=True, message="done, says the late worker")
    runner.settle_if_orphaned(stale)  # a settler holding an old copy: it ended already, nothing more
    assert AuditEvent.objects.filter(operation_id=op.pk, stage=AuditEvent.Stage.RESULT).count() == 1
    assert "it was not taken" in Operation.objects.get(pk=op.pk).message


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_tasks")
def test_a_revert_to_the_current_snapshot_whose_worker_died_is_not_called_done(api, vm, monkeypatch):
    hypervisor.create_snapshot(vm.uuid, "only")
    monkeypatch.setattr(runner, "async_task", lambda *args, **kwargs: None)  # queue only: the worker "dies"
    task = api.post(f"/api/vms/{vm.name}/snapshots/only/revert", {}, format="json").json()
    hypervisor.revert_snapshot(vm.uuid, "only")  # whatever happened, libvirt shows it current, as before
    Operation.objects.filter(pk=task["id"]).update(
        status="running", started_at=timezone.now() - timedelta(days=1), worker="elsewhere:1:1"
    )
    done = wait_task(api, task["id"])
    assert done["status"] == "failed"
    assert "may or may not have happened" in done["message"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("sync_tasks")
def test_a_revert_away_from_the_current_snapshot_is_proven_by_libvirt(api, vm, monkeypatch):
    hypervisor.create_snapshot(vm.uuid, "target")
    hypervisor.create_snapshot(vm.uuid, "later")
    monkeypatch.setattr(runner, "async_task", lambda *args, **kwargs: None)
    task = api.post(f"/api/vms/{vm.name}/snapshots/target/revert", {}, format="json").json()
    hypervisor.revert_snapshot(vm.uuid, "target")  # the dead worker's revert did happen
    Operation.objects.filter(pk=task["id"]).update(
        status="running", started_at=timezone.now() - timedelta(days=1), worker="elsewhere:1:1"
    )
    done = wait_task(api, task["id"])
    assert done["status"] == "finished" and "took effect" in done["message"]


@pytest.mark.django_db(transaction=True)
def test_a_guest_libvirt_stopped_while_it_came_back_is_said(vm):
    """libvirtd 9.0 coming back mid-save may stop the guest itself: the task says so."""
    op = Operation.objects.create(
        kind="snapshot.create",
        vm_name=vm.name,
        vm_uuid=vm.uuid,
        status="running",
        params={"name": "cut", "libvirt_name": "cut", "vm_state": "running"},  # running when asked; shut off now
        started_at=timezone.now() - timedelta(days=1),
        worker="elsewhere:1:1",
    )
    assert runner.settle_if_orphaned(op)
    op.refresh_from_db()
    assert op.status == "failed" and "it was not taken" in op.message
    assert "was running before and is shut off now" in op.message
