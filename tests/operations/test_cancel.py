"""Cancelling a task no worker has started: its requester or an admin, audited; a
running task cannot be cancelled."""

import pytest

from operations import runner
from operations.models import AuditEvent, Operation
from tests.conftest import api_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(monkeypatch, make_user, vm):
    """alice (operator on the VM) asked for a snapshot; no worker has taken it yet."""
    monkeypatch.setattr(runner, "async_task", lambda *args, **kwargs: None)
    alice = make_user("alice", role="operator", vm=vm)
    task = api_for(alice).post(f"/api/vms/{vm.name}/snapshots", {"name": "later"}, format="json").json()
    return alice, task["id"]


def test_the_requester_cancels_a_queued_task(queued, vm):
    alice, task_id = queued
    response = api_for(alice).post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "failed" and "Cancelled by alice" in response.json()["message"]
    runner.run(task_id)  # the broker delivers it anyway: nothing happens
    assert Operation.objects.get(pk=task_id).status == "failed"
    assert api_for(alice).get(f"/api/vms/{vm.name}/snapshots?all=true").json() == []
    results = AuditEvent.objects.filter(operation_id=task_id, stage="result")
    assert results.count() == 1 and "Cancelled by alice" in results.get().message
    # The VM is free for the next operation.
    assert api_for(alice).post(f"/api/vms/{vm.name}/snapshots", {"name": "now"}, format="json").status_code == 202


def test_someone_else_may_not_cancel_and_a_running_task_cannot_be(queued, make_user, vm, api):
    alice, task_id = queued
    bob = make_user("bob", role="operator", vm=vm)
    response = api_for(bob).post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 403 and "alice" in response.json()["reason"]
    assert AuditEvent.objects.filter(action="task.cancel", outcome="denied", username="bob").exists()
    Operation.objects.filter(pk=task_id).update(status="running")
    response = api.post(f"/api/tasks/{task_id}/cancel")  # even an admin
    assert response.status_code == 409 and "running" in response.json()["reason"]
    assert Operation.objects.get(pk=task_id).status == "running"


def test_a_task_you_cannot_see_is_not_found(queued, make_user):
    _, task_id = queued
    assert api_for(make_user("eve")).post(f"/api/tasks/{task_id}/cancel").status_code == 404
