"""Snapshot history per VM, against real libvirt with tasks run in-process: the life of
every snapshot, deleted ones included, with who did what; kept after the VM is gone."""

import subprocess

import pytest
from django.conf import settings
from django.test import Client

from core import hypervisor
from tests.conftest import api_for, remove_vm, wait_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


def done(client, response):
    assert response.status_code == 202, response.json()
    task = wait_task(client, response.json()["id"])
    assert task["status"] == "finished", task
    return task


def take(client, vm, name):
    return done(client, client.post(f"/api/vms/{vm.name}/snapshots", {"name": name}, format="json"))


def history(client, vm_name):
    response = client.get(f"/api/vms/{vm_name}/history")
    assert response.status_code == 200, response.json()
    return response.json()


def by_event(data, event):
    return [e for e in data["events"] if e["event"] == event]


def test_history_tells_the_life_of_every_snapshot(make_user, vm):
    olive = api_for(make_user("olive", role="operator", vm=vm))
    oscar = api_for(make_user("oscar", role="owner", vm=vm))
    vera = make_user("vera", role="viewer", vm=vm)
    take(olive, vm, "s1")
    take(olive, vm, "s2")
    assert oscar.put(f"/api/vms/{vm.name}/snapshots/s1", {"name": "s1-renamed"}, format="json").status_code == 200
    done(olive, olive.post(f"/api/vms/{vm.name}/snapshots/s1-renamed/revert"))
    done(oscar, oscar.delete(f"/api/vms/{vm.name}/snapshots/s2"))
    take(oscar, vm, "s3")
    take(oscar, vm, "s4")
    done(oscar, oscar.delete(f"/api/vms/{vm.name}/snapshots/s3?mode=all"))

    data = history(api_for(vera), vm.name)
    assert data["vm"] == {"name": vm.name, "uuid": vm.uuid, "exists": True}
    # Newest first.
    times = [e["time"] for e in data["events"]]
    assert times == sorted(times, reverse=True)
    created = {e["snapshot"]: e["user"] for e in by_event(data, "created")}
    assert created == {"s1": "olive", "s2": "olive", "s3": "oscar", "s4": "oscar"}
    [renamed] = by_event(data, "renamed")
    assert (
        renamed["user"] == "oscar" and renamed["details"]["old_name"] == "s1" and renamed["details"]["new_name"] == "s1-renamed"
    )
    assert "s1 → s1-renamed" in renamed["summary"]
    [reverted] = by_event(data, "reverted")
    assert reverted["user"] == "olive" and reverted["snapshot"] == "s1-renamed" and reverted["task"]
    deleted = {e["snapshot"]: e for e in by_event(data, "deleted")}
    assert set(deleted) == {"s2", "s3"}
    assert deleted["s2"]["user"] == "oscar" and deleted["s2"]["details"]["with_children"] is False
    assert deleted["s3"]["details"] == {"mode": "all", "with_children": True, "removed": ["s4", "s3"]}
    assert "with its 1 descendant (s4)" in deleted["s3"]["summary"]

    lives = {s["name"]: s for s in data["snapshots"]}
    assert set(lives) == {"s1-renamed", "s2", "s3", "s4"}
    assert lives["s1-renamed"]["exists"] is True and lives["s1-renamed"]["former_names"] == ["s1"]
    assert lives["s1-renamed"]["created_by"] == "olive"
    for gone in ("s2", "s3", "s4"):
        assert lives[gone]["exists"] is False and lives[gone]["deleted_by"] == "oscar" and lives[gone]["deleted"]

    page = Client()
    page.force_login(vera)
    response = page.get(f"/vms/{vm.name}/history")
    assert response.status_code == 200
    html = response.content.decode()
    assert "oscar deleted snapshot s2" in html
    assert "oscar renamed snapshot s1 → s1-renamed" in html
    assert "was s1" in html


def test_failed_task_is_on_the_timeline(api, vm, monkeypatch):
    take(api, vm, "keep")

    def broken(*args, **kwargs):
        raise hypervisor.Failed("qemu said no")

    monkeypatch.setattr(hypervisor, "revert_snapshot", broken)
    response = api.post(f"/api/vms/{vm.name}/snapshots/keep/revert")
    assert wait_task(api, response.json()["id"])["status"] == "failed"
    data = history(api, vm.name)
    [failed] = by_event(data, "revert-failed")
    assert failed["outcome"] == "failed" and failed["user"] == "root-admin"
    assert "qemu said no" in failed["summary"]
    assert not by_event(data, "reverted")


def test_changes_made_outside_the_app(api, vm):
    virsh = ["virsh", "-c", settings.LIBVIRT_URI]
    subprocess.run([*virsh, "snapshot-create-as", vm.name, "by-shell", "made in a shell"], check=True, capture_output=True)
    data = history(api, vm.name)
    [found] = by_event(data, "found")
    assert found["snapshot"] == "by-shell" and found["user"] == "(outside the app)"
    assert data["snapshots"][0]["origin"] == "outside" and data["snapshots"][0]["exists"] is True
    subprocess.run([*virsh, "snapshot-delete", vm.name, "by-shell"], check=True, capture_output=True)
    data = history(api, vm.name)
    assert [e["event"] for e in data["events"]] == ["lost", "found"]
    assert data["snapshots"][0]["exists"] is False
    assert data["snapshots"][0]["deleted_by"] == "(outside the app)"


def test_history_is_for_those_who_may_view_the_vm(make_user, vm, make_vm):
    other = make_vm()
    viewer = make_user("vic", role="viewer", vm=other)
    assert api_for(viewer).get(f"/api/vms/{vm.name}/history").status_code == 404
    assert api_for(viewer).get(f"/api/vms/{other.name}/history").status_code == 200
    assert api_for(viewer).get("/api/vms/vstest-never-existed/history").status_code == 404
    client = Client()
    client.force_login(viewer)
    assert client.get(f"/vms/{vm.name}/history").status_code == 404
    assert client.get(f"/vms/{other.name}/history").status_code == 200


def test_history_outlives_the_vm(api, make_user, vm):
    auditor = make_user("audrey", role="auditor")
    outsider = make_user("otto")
    take(api, vm, "before-the-end")
    done(api, api.delete(f"/api/vms/{vm.name}"))
    assert not hypervisor.vm_exists(vm.uuid)

    data = history(api_for(auditor), vm.name)
    assert data["vm"] == {"name": vm.name, "uuid": vm.uuid, "exists": False}
    [life] = data["snapshots"]
    assert life["name"] == "before-the-end" and life["exists"] is False and life["deleted_by"] == "root-admin"
    assert [e["event"] for e in data["events"]][:2] == ["vm-deleted", "deleted"]
    assert by_event(data, "deleted")[0]["details"] == {"with_vm": True}
    assert by_event(data, "created")[0]["user"] == "root-admin"
    assert history(api_for(auditor), vm.uuid)["vm"]["uuid"] == vm.uuid

    assert api_for(outsider).get(f"/api/vms/{vm.name}/history").status_code == 404
    client = Client()
    client.force_login(auditor)
    assert client.get(f"/vms/{vm.name}/").status_code == 404
    page = client.get(f"/vms/{vm.name}/history")
    assert page.status_code == 200
    assert "no longer exists" in page.content.decode()


def test_a_clone_inherits_the_snapshots_and_says_so(api, vm):
    take(api, vm, "golden")
    clone_name = f"{vm.name}-twin"
    try:
        done(api, api.post(f"/api/vms/{vm.name}/clone", {"name": clone_name}, format="json"))
        clone = history(api, clone_name)
        [life] = clone["snapshots"]
        assert life["name"] == "golden" and life["origin"] == "clone" and life["created_by"] == "root-admin"
        [copied] = by_event(clone, "copied")
        assert copied["snapshot"] == "golden"
        [born] = by_event(clone, "cloned-from")
        assert born["details"]["source"] == vm.name and born["user"] == "root-admin"
        [cloned] = by_event(history(api, vm.name), "cloned")
        assert cloned["details"]["clone"] == clone_name
    finally:
        remove_vm(clone_name)
