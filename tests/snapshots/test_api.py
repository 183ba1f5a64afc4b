"""The snapshot REST contract against real libvirt/QEMU (tasks run in-process)."""

import subprocess

import pytest

from core import hypervisor
from operations.models import AuditEvent, Operation
from tests.conftest import virsh, wait_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


def create(api, vm, expect=202, **body):
    response = api.post(f"/api/vms/{vm.name}/snapshots", body, format="json")
    assert response.status_code == expect, response.json()
    if expect != 202:
        return response.json()
    task = response.json()
    assert task["target_uri"].startswith(f"/api/vms/{vm.name}/snapshots/")
    done = wait_task(api, task["id"])
    assert done["status"] == "finished", done
    return done


def snap(api, vm, name):
    return api.get(f"/api/vms/{vm.name}/snapshots/{name}")


def test_create_on_running_vm_keeps_memory(api, running_vm):
    task = create(api, running_vm, name="before-upgrade", description="Before the upgrade")
    assert task["target_uri"] == f"/api/vms/{running_vm.name}/snapshots/before-upgrade"
    assert task["progress"] == 100
    data = snap(api, running_vm, "before-upgrade").json()
    assert data["name"] == "before-upgrade"
    assert data["description"] == "Before the upgrade"
    assert data["state"] == "running"
    assert isinstance(data["created"], int) and data["created"] > 1_700_000_000
    assert data["parent"] == "" and data["current"] is True
    assert hypervisor.get_snapshot(running_vm.uuid, "before-upgrade").memory


def test_create_on_shutoff_vm_holds_disks(api, vm):
    create(api, vm, name="cold")
    data = snap(api, vm, "cold").json()
    assert data["state"] == "shutoff"
    assert not hypervisor.get_snapshot(vm.uuid, "cold").memory


def test_default_name_is_readable_and_unique(api, vm):
    first = create(api, vm)
    second = create(api, vm)
    a, b = first["target_uri"].rsplit("/", 1)[1], second["target_uri"].rsplit("/", 1)[1]
    assert a.startswith("snapshot-20") and len(a) == len("snapshot-20261125-183500")
    assert b != a and b.startswith("snapshot-")
    assert not a.replace("-", "").isdigit()


def test_new_snapshot_is_child_of_current(api, vm):
    create(api, vm, name="one")
    create(api, vm, name="two")
    assert snap(api, vm, "two").json()["parent"] == "one"
    assert snap(api, vm, "one").json()["current"] is False
    assert api.get(f"/api/vms/{vm.name}").json()["current-snapshot"] == "two"


def test_list_roots_children_and_all(api, vm):
    create(api, vm, name="root-a")
    create(api, vm, name="child-1")
    create(api, vm, name="child-2")
    roots = api.get(f"/api/vms/{vm.name}/snapshots").json()
    assert [s["name"] for s in roots] == ["root-a"]
    children = api.get(f"/api/vms/{vm.name}/snapshots?parent=root-a").json()
    assert [s["name"] for s in children] == ["child-1"]
    everything = api.get(f"/api/vms/{vm.name}/snapshots?all=true").json()
    assert [s["name"] for s in everything] == ["root-a", "child-1", "child-2"]
    missing = api.get(f"/api/vms/{vm.name}/snapshots?parent=nope")
    assert missing.status_code == 404 and "nope" in missing.json()["reason"]


def test_current_is_empty_object_without_snapshots(api, vm):
    assert api.get(f"/api/vms/{vm.name}/snapshots/current").json() == {}
    create(api, vm, name="now")
    assert api.get(f"/api/vms/{vm.name}/snapshots/current").json()["name"] == "now"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "12345"},
        {"name": "current"},
        {"name": "a/b"},
        {"name": ".hidden"},
        {"name": "x" * 65},
        {"name": "has space"},
        {"name": "-dash-first"},
        {"description": "d" * 1001},
        {"name": "ok", "colour": "red"},
    ],
)
def test_bad_input_is_400_with_reason(api, vm, body):
    data = create(api, vm, expect=400, **body)
    assert data["code"] == 400 and data["reason"]
    assert Operation.objects.count() == 0
    assert hypervisor.get_vm(vm.uuid).snapshot_count == 0


def test_malformed_json_is_400(api, vm):
    response = api.generic("POST", f"/api/vms/{vm.name}/snapshots", "{not json", content_type="application/json")
    assert response.status_code == 400 and "JSON" in response.json()["reason"]


def test_name_taken_is_409(api, vm):
    create(api, vm, name="dup")
    data = create(api, vm, expect=409, name="dup")
    assert "dup" in data["reason"]


def test_raw_disk_vm_is_400_naming_the_disk(api, make_vm):
    raw = make_vm(disk_format="raw")
    data = create(api, raw, expect=400, name="nope")
    assert "vda" in data["reason"] and "raw" in data["reason"]
    assert AuditEvent.objects.filter(action="snapshot.create", outcome="failed").exists()


def test_unknown_vm_and_snapshot_are_404(api, vm):
    assert api.post("/api/vms/vstest-nope/snapshots", {}, format="json").status_code == 404
    assert snap(api, vm, "ghost").status_code == 404
    assert api.put(f"/api/vms/{vm.name}/snapshots/ghost", {"name": "x1"}, format="json").status_code == 404
    assert api.delete(f"/api/vms/{vm.name}/snapshots/ghost").status_code == 404
    assert api.post(f"/api/vms/{vm.name}/snapshots/ghost/revert").status_code == 404


def test_update_renames_and_describes(api, vm):
    create(api, vm, name="old-name")
    create(api, vm, name="kid")
    response = api.put(f"/api/vms/{vm.name}/snapshots/old-name", {"name": "new-name", "description": "renamed"}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "new-name" and response.json()["description"] == "renamed"
    assert snap(api, vm, "old-name").status_code == 404
    assert snap(api, vm, "kid").json()["parent"] == "new-name"
    taken = api.put(f"/api/vms/{vm.name}/snapshots/kid", {"name": "new-name"}, format="json")
    assert taken.status_code == 409
    bad = api.put(f"/api/vms/{vm.name}/snapshots/kid", {"name": "999"}, format="json")
    assert bad.status_code == 400


def test_rename_then_revert_running_vm_restores_memory(api, running_vm):
    create(api, running_vm, name="live")
    api.put(f"/api/vms/{running_vm.name}/snapshots/live", {"name": "live-renamed"}, format="json")
    hypervisor.power(running_vm.uuid, "poweroff")
    create(api, running_vm, name="off")
    assert api.get(f"/api/vms/{running_vm.name}").json()["state"] == "shutoff"
    response = api.post(f"/api/vms/{running_vm.name}/snapshots/live-renamed/revert")
    assert response.status_code == 202
    done = wait_task(api, response.json()["id"])
    assert done["status"] == "finished", done
    vm = api.get(f"/api/vms/{running_vm.name}").json()
    assert vm["state"] == "running"
    assert vm["current-snapshot"] == "live-renamed"
    assert snap(api, running_vm, "live-renamed").json()["current"] is True
    # And back to the shut-off one.
    done = wait_task(api, api.post(f"/api/vms/{running_vm.name}/snapshots/off/revert").json()["id"])
    assert done["status"] == "finished"
    assert api.get(f"/api/vms/{running_vm.name}").json()["state"] == "shutoff"


def test_new_snapshot_named_like_a_renamed_ones_tag(api, vm):
    create(api, vm, name="base")
    api.put(f"/api/vms/{vm.name}/snapshots/base", {"name": "base-old"}, format="json")
    create(api, vm, name="base")
    assert snap(api, vm, "base").json()["parent"] == "base-old"
    done = wait_task(api, api.post(f"/api/vms/{vm.name}/snapshots/base-old/revert").json()["id"])
    assert done["status"] == "finished"
    assert api.get(f"/api/vms/{vm.name}/snapshots/current").json()["name"] == "base-old"


def build_tree(api, vm):
    """a -> b -> c, and b -> d (d taken after reverting to b)."""
    for name in ("a", "b", "c"):
        create(api, vm, name=f"s{name}")
    wait_task(api, api.post(f"/api/vms/{vm.name}/snapshots/sb/revert").json()["id"])
    create(api, vm, name="sd")


def test_delete_node_moves_children_up(api, vm):
    build_tree(api, vm)
    response = api.delete(f"/api/vms/{vm.name}/snapshots/sb")
    assert response.status_code == 202
    assert wait_task(api, response.json()["id"])["status"] == "finished"
    assert snap(api, vm, "sb").status_code == 404
    assert snap(api, vm, "sc").json()["parent"] == "sa"
    assert snap(api, vm, "sd").json()["parent"] == "sa"
    names, _ = hypervisor.snapshot_names(vm.uuid)
    assert sorted(names) == ["sa", "sc", "sd"]


def test_delete_all_removes_subtree(api, vm):
    build_tree(api, vm)
    response = api.delete(f"/api/vms/{vm.name}/snapshots/sb?mode=all")
    done = wait_task(api, response.json()["id"])
    assert done["status"] == "finished" and "2 descendants" in done["message"]
    names, _ = hypervisor.snapshot_names(vm.uuid)
    assert names == ["sa"]
    assert [s["name"] for s in api.get(f"/api/vms/{vm.name}/snapshots?all=true").json()] == ["sa"]
    disk = hypervisor.get_vm(vm.uuid).disks[0].source
    tags = subprocess.run(["qemu-img", "snapshot", "-l", "-U", disk], capture_output=True, text=True).stdout
    assert "sb" not in tags and "sc" not in tags and "sa" in tags


def test_delete_mode_in_body_and_bad_mode(api, vm):
    build_tree(api, vm)
    bad = api.delete(f"/api/vms/{vm.name}/snapshots/sb?mode=everything")
    assert bad.status_code == 400 and "mode" in bad.json()["reason"]
    response = api.delete(f"/api/vms/{vm.name}/snapshots/sb", {"mode": "all"}, format="json")
    assert wait_task(api, response.json()["id"])["status"] == "finished"
    assert hypervisor.snapshot_names(vm.uuid)[0] == ["sa"]


def test_libvirt_failure_fails_the_task_with_a_reason(api, vm, monkeypatch):
    from django_q.conf import Conf

    from operations import runner

    create(api, vm, name="gone-soon")
    monkeypatch.setattr(Conf, "SYNC", False)  # queue only: the worker runs it below
    response = api.post(f"/api/vms/{vm.name}/snapshots/gone-soon/revert")
    assert response.status_code == 202
    # Removed behind the app's back before a worker picks the task up.
    virsh("snapshot-delete", vm.name, "gone-soon")
    runner.run(response.json()["id"])
    task = api.get(f"/api/tasks/{response.json()['id']}").json()
    assert task["status"] == "failed"
    assert "gone-soon" in task["message"]
    assert AuditEvent.objects.filter(action="snapshot.revert", stage="result", outcome="failed").exists()
    # The VM is free again.
    assert api.post(f"/api/vms/{vm.name}/snapshots", {"name": "next"}, format="json").status_code == 202


def test_snapshots_made_outside_appear_and_vanish(api, vm):
    virsh("snapshot-create-as", vm.name, "by-virsh", "made in a shell")
    data = snap(api, vm, "by-virsh").json()
    assert data["description"] == "made in a shell"
    assert AuditEvent.objects.filter(action="snapshot.found", snapshot="by-virsh").exists()
    virsh("snapshot-delete", vm.name, "by-virsh")
    assert snap(api, vm, "by-virsh").status_code == 404
    assert AuditEvent.objects.filter(action="snapshot.lost", snapshot="by-virsh").exists()
    from snapshots.models import SnapshotRecord

    assert SnapshotRecord.objects.get(vm_uuid=vm.uuid, name="by-virsh").deleted_at is not None


def test_tasks_list_and_filters(api, vm, make_vm):
    other = make_vm()
    create(api, vm, name="t1")
    create(api, other, name="t2")
    all_tasks = api.get("/api/tasks").json()
    assert len(all_tasks) == 2
    mine = api.get(f"/api/tasks?vm={vm.name}").json()
    assert [t["snapshot"] for t in mine] == ["t1"]
    assert api.get("/api/tasks?status=finished").json()[0]["status"] == "finished"
    assert api.get("/api/tasks?status=failed").json() == []
    assert len(api.get("/api/tasks?user=root-admin").json()) == 2
    assert api.get("/api/tasks?status=bogus").status_code == 400
    assert api.get("/api/tasks/999999").status_code == 404


def test_schema_and_docs(api):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/vms/{vm}/snapshots/{snapshot}/revert" in paths
    assert "delete" in paths["/api/vms/{vm}/snapshots/{snapshot}"]
    assert api.get("/api/docs/").status_code == 200


def test_uefi_vm_is_400_with_the_reason(api, make_vm, image_dir):
    firmware = image_dir / "fake-OVMF_CODE.fd"
    firmware.write_bytes(b"\0" * 4096)
    uefi = make_vm(pflash=firmware)
    data = create(api, uefi, expect=400, name="nope")
    assert "UEFI" in data["reason"]
    assert hypervisor.get_vm(uefi.uuid).snapshot_count == 0


def test_taking_a_snapshot_costs_six_libvirt_calls_end_to_end(api, running_vm):
    """Request and worker together: look the VM up, read its state and definition (the
    request); look it up, take the snapshot, read it back (the worker)."""
    create(api, running_vm, name="first")  # the parent is known: the common case
    with hypervisor.count_calls() as calls:
        create(api, running_vm, name="counted")
    assert sum(calls.values()) <= 6, dict(calls)
    assert calls["virDomain.snapshotCreateXML"] == 1
    data = snap(api, running_vm, "counted").json()
    assert data["parent"] == "first" and data["current"] is True and data["state"] == "running"


def test_a_name_made_outside_the_app_since_the_last_look_is_refused_cleanly(api, vm):
    create(api, vm, name="seen")
    virsh("snapshot-create-as", vm.name, "taken")
    response = api.post(f"/api/vms/{vm.name}/snapshots", {"name": "taken"}, format="json")
    if response.status_code == 202:
        done = wait_task(api, response.json()["id"])
        assert done["status"] == "failed" and "made outside the app" in done["message"]
    else:
        assert response.status_code == 409
    # Nothing was lost or doubled: the outside one is there once, under its own name.
    names = [s["name"] for s in api.get(f"/api/vms/{vm.name}/snapshots?all=true").json()]
    assert sorted(names) == ["seen", "taken"]


def test_a_snapshot_whose_parent_was_made_outside_the_app_hangs_under_it(api, vm):
    virsh("snapshot-create-as", vm.name, "by-virsh")
    create(api, vm, name="after")  # the app never looked at the tree in between
    data = snap(api, vm, "after").json()
    assert data["parent"] == "by-virsh"
    assert AuditEvent.objects.filter(action="snapshot.found", snapshot="by-virsh").count() == 1
    assert not AuditEvent.objects.filter(action="snapshot.found", snapshot="after").exists()
