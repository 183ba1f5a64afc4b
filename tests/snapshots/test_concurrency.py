"""One mutating operation per VM, enforced by the database."""

import threading

import pytest
from rest_framework.test import APIClient

from operations.models import Operation

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_concurrent_creates_one_wins(admin_user, vm):
    barrier = threading.Barrier(2)
    answers = []

    def post(name):
        client = APIClient()
        client.force_authenticate(admin_user)
        barrier.wait()
        answers.append(client.post(f"/api/vms/{vm.name}/snapshots", {"name": name}, format="json"))

    threads = [threading.Thread(target=post, args=(n,)) for n in ("race-a", "race-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert codes == [202, 409], [r.json() for r in answers]
    loser = next(r for r in answers if r.status_code == 409).json()
    winner = next(r for r in answers if r.status_code == 202).json()
    assert f"task #{winner['id']}" in loser["reason"]
    assert Operation.objects.filter(vm_uuid=vm.uuid).count() == 1


def test_rename_waits_for_running_operation(api, vm):
    from core import hypervisor

    hypervisor.create_snapshot(vm.uuid, "base")
    queued = api.post(f"/api/vms/{vm.name}/snapshots/base/revert")
    assert queued.status_code == 202  # no worker in this test: it stays queued
    rename = api.put(f"/api/vms/{vm.name}/snapshots/base", {"name": "renamed"}, format="json")
    assert rename.status_code == 409
    assert f"task #{queued.json()['id']}" in rename.json()["reason"]
