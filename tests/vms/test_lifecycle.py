"""Power actions and deleting a VM with its snapshots, against real libvirt/QEMU."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from core import hypervisor, tiny
from core.tiny import remove_vm
from operations import runner
from operations.models import AuditEvent, Operation
from snapshots.models import SnapshotRecord
from tests.conftest import api_for, wait_task
from vms import power, removal

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


def act(api, vm, action, expect=202, status="finished", **body) -> dict:
    response = api.post(f"/api/vms/{vm.name}/{action}", body or None, format="json")
    assert response.status_code == expect, response.json()
    if expect != 202:
        return response.json()
    task = wait_task(api, response.json()["id"])
    assert task["status"] == status, task
    return task


def state(vm) -> str:
    return hypervisor.vm_state(vm.uuid)


def tags(path: str) -> str:
    return subprocess.run(["qemu-img", "snapshot", "-l", "-U", path], capture_output=True, text=True, check=True).stdout


# ---------------------------------------------------------------------------
# Power


def test_start_then_force_off(api, vm):
    task = act(api, vm, "start")
    assert task["target_uri"] == f"/api/vms/{vm.name}" and task["kind"] == "vm.start"
    assert state(vm) == "running" and "started" in task["message"]
    again = act(api, vm, "start", expect=409)
    assert again == {"code": 409, "reason": f"VM {vm.name} is already running."}
    task = act(api, vm, "poweroff")
    assert state(vm) == "shutoff" and "forced off" in task["message"]
    assert act(api, vm, "poweroff", expect=409)["reason"] == f"VM {vm.name} is already shut off."


def test_pause_and_resume(api, running_vm):
    act(api, running_vm, "suspend")
    assert state(running_vm) == "paused"
    assert "already paused" in act(api, running_vm, "suspend", expect=409)["reason"]
    assert "resume it instead" in act(api, running_vm, "start", expect=409)["reason"]
    assert "Resume it, or force it off" in act(api, running_vm, "shutdown", expect=409)["reason"]
    act(api, running_vm, "resume")
    assert state(running_vm) == "running"
    assert "running, not paused" in act(api, running_vm, "resume", expect=409)["reason"]


def test_refusals_on_a_shut_off_vm(api, vm):
    assert "already shut off" in act(api, vm, "shutdown", expect=409)["reason"]
    assert "start it instead" in act(api, vm, "reboot", expect=409)["reason"]
    assert "nothing to pause" in act(api, vm, "suspend", expect=409)["reason"]
    assert "start it instead" in act(api, vm, "resume", expect=409)["reason"]
    assert Operation.objects.count() == 0
    refused = AuditEvent.objects.filter(vm_name=vm.name, outcome="failed").values_list("action", flat=True)
    assert sorted(refused) == ["vm.reboot", "vm.resume", "vm.shutdown", "vm.suspend"]


def test_shutdown_times_out_with_advice(api, running_vm):
    # A tiny VM has no OS: nothing answers the ACPI request.
    task = act(api, running_vm, "shutdown", status="failed", timeout=1)
    assert "did not shut down within 1 s" in task["message"]
    assert "force it off" in task["message"]
    assert state(running_vm) == "running"
    result = AuditEvent.objects.get(action="vm.shutdown", stage="result")
    assert result.outcome == "failed" and "force it off" in result.message


def test_shutdown_default_timeout_comes_from_settings(api, running_vm, settings):
    settings.SHUTDOWN_TIMEOUT = 1
    task = act(api, running_vm, "shutdown", status="failed")
    assert "within 1 s" in task["message"]
    assert Operation.objects.get(pk=task["id"]).params["timeout"] == 1


@pytest.mark.parametrize("timeout", [0, -5, "soon", 10**6, True])
def test_bad_shutdown_timeout_is_400(api, running_vm, timeout):
    data = act(api, running_vm, "shutdown", expect=400, timeout=timeout)
    assert data["code"] == 400 and "timeout" in data["reason"].lower()


def test_unknown_fields_are_400(api, vm):
    data = act(api, vm, "start", expect=400, force=True)
    assert "force" in data["reason"]


def test_reboot_only_asks_the_guest(api, running_vm):
    # A tiny VM has no OS: the request is made, nothing reboots, and the message says
    # what to do then. A guest that obeys: tests/vms/test_guest.py.
    task = act(api, running_vm, "reboot")
    assert task["message"].startswith(f"Asked the guest OS of {running_vm.name} to reboot")
    assert "ignores the request: force it off, then start it" in task["message"]
    assert state(running_vm) == "running"


def test_one_operation_per_vm(api, vm):
    blocking = Operation.objects.create(
        kind="snapshot.create", vm_name=vm.name, vm_uuid=vm.uuid, status="running", started_at=timezone.now(), username="x"
    )
    data = act(api, vm, "start", expect=409)
    assert f"task #{blocking.pk}" in data["reason"]
    assert state(vm) == "shutoff"
    assert api.delete(f"/api/vms/{vm.name}").status_code == 409
    assert hypervisor.vm_exists(vm.uuid)


def test_the_task_checks_the_state_again(api, vm, monkeypatch):
    monkeypatch.setattr(runner, "async_task", lambda *args, **kwargs: None)  # queue only
    response = api.post(f"/api/vms/{vm.name}/start")
    assert response.status_code == 202
    hypervisor.power(vm.uuid, "start")  # someone else was quicker (virsh)
    runner.run(response.json()["id"])
    task = wait_task(api, response.json()["id"])
    assert task["status"] == "failed"
    assert "already running" in task["message"] and "Nothing was done" in task["message"]


def test_settle_tells_what_happened(vm):
    op = Operation.objects.create(
        kind="vm.start",
        vm_name=vm.name,
        vm_uuid=vm.uuid,
        params={"action": "start", "vm_state": "shutoff"},  # as request_power records it
        status="running",
        started_at=timezone.now() - timedelta(days=1),
        worker="elsewhere:1:1",
    )
    hypervisor.power(vm.uuid, "start")
    assert power._settle_power(op) == (True, "libvirt shows the VM running (it was shutoff): the start VM took effect.")
    hypervisor.power(vm.uuid, "poweroff")
    assert power._settle_power(op)[0] is False


def test_a_reboot_whose_worker_died_is_never_called_done(running_vm):
    """A guest without an OS is running before and after: nothing proves a reboot happened."""
    op = Operation.objects.create(
        kind="vm.reboot",
        vm_name=running_vm.name,
        vm_uuid=running_vm.uuid,
        params={"action": "reboot", "vm_state": "running"},
        status="running",
        started_at=timezone.now() - timedelta(days=1),
        worker="elsewhere:1:1",
    )
    assert runner.settle_if_orphaned(op)
    op.refresh_from_db()
    assert op.status == "failed"
    assert "worker running this task stopped" in op.message and "may or may not have happened" in op.message


def test_power_needs_permission(vm, make_user):
    viewer = api_for(make_user("bob", role="viewer", vm=vm))
    data = act(viewer, vm, "start", expect=403)
    assert "power" in data["reason"]
    stranger = api_for(make_user("carol"))
    assert act(stranger, vm, "start", expect=404)["reason"] == f"There is no VM named {vm.name!r} that you can see."
    operator = api_for(make_user("otto", role="operator", vm=vm))
    act(operator, vm, "start")
    assert state(vm) == "running"
    rows = AuditEvent.objects.filter(action="vm.start").order_by("id").values_list("username", "stage", "outcome")
    assert list(rows) == [
        ("bob", "request", "denied"),
        ("carol", "request", "denied"),
        ("otto", "request", "success"),
        ("otto", "result", "success"),
    ]


def test_every_action_is_audited(api, running_vm):
    for action in ("suspend", "resume", "reboot", "poweroff", "start"):
        act(api, running_vm, action)
    results = AuditEvent.objects.filter(stage="result").order_by("id").values_list("action", "outcome", "vm_uuid")
    assert list(results) == [
        (f"vm.{a}", "success", running_vm.uuid) for a in ("suspend", "resume", "reboot", "poweroff", "start")
    ]


# ---------------------------------------------------------------------------
# Delete


def snapshot_tree(vm):
    """a (running, with memory) -> b -> c, and a -> d, with the VM running at the end."""
    hypervisor.power(vm.uuid, "start")
    hypervisor.create_snapshot(vm.uuid, "a")
    hypervisor.power(vm.uuid, "poweroff")
    hypervisor.create_snapshot(vm.uuid, "b")
    hypervisor.create_snapshot(vm.uuid, "c")
    hypervisor.revert_snapshot(vm.uuid, "a")
    hypervisor.create_snapshot(vm.uuid, "d")
    assert state(vm) == "running"


def test_delete_removes_snapshots_then_the_vm_and_keeps_the_disk(api, vm):
    snapshot_tree(vm)
    assert len(api.get(f"/api/vms/{vm.name}/snapshots?all=true").json()) == 4  # recorded in the DB too
    disk = hypervisor.get_vm(vm.uuid).disks[0].source
    response = api.delete(f"/api/vms/{vm.name}")
    assert response.status_code == 202
    task = wait_task(api, response.json()["id"])
    assert task["status"] == "finished", task
    assert task["message"].startswith(f"Deleted VM {vm.name} and its 4 snapshots.") and disk in task["message"]
    assert not hypervisor.vm_exists(vm.uuid) and not hypervisor.vm_exists(vm.name)
    assert Path(disk).exists()
    assert tags(disk).strip() == ""
    # History stays readable.
    records = SnapshotRecord.objects.filter(vm_uuid=vm.uuid)
    assert records.count() == 4 and all(r.deleted_at and r.deleted_by_username == "root-admin" for r in records)
    assert api.get(f"/api/tasks/{task['id']}").json()["status"] == "finished"
    assert [t["kind"] for t in api.get(f"/api/tasks?vm={vm.name}").json()] == ["vm.delete"]
    rows = AuditEvent.objects.filter(action="vm.delete", vm_uuid=vm.uuid).values_list("stage", "outcome")
    assert sorted(rows) == [("request", "success"), ("result", "success")]
    assert api.get(f"/api/vms/{vm.name}").status_code == 404


def test_delete_with_storage_removes_the_files(api, vm):
    hypervisor.create_snapshot(vm.uuid, "one")
    disk = hypervisor.get_vm(vm.uuid).disks[0].source
    task = wait_task(api, api.delete(f"/api/vms/{vm.name}?storage=true").json()["id"])
    assert task["status"] == "finished", task
    assert "Disk files removed: " + disk in task["message"]
    assert not Path(disk).exists() and not hypervisor.vm_exists(vm.uuid)


def test_delete_keeps_files_another_vm_uses(api, vm, image_dir):
    disk = hypervisor.get_vm(vm.uuid).disks[0].source
    other = hypervisor.define_vm(tiny.tiny_vm_xml(f"{vm.name}-sharer", [(Path(disk), "qcow2")]))
    try:
        task = wait_task(api, api.delete(f"/api/vms/{vm.name}", {"storage": True}, format="json").json()["id"])
        assert task["status"] == "finished", task
        assert f"Kept {disk}: used by {other.name}" in task["message"]
        assert Path(disk).exists()
    finally:
        remove_vm(other.uuid)


def test_delete_keeps_a_backing_file(api, vm, image_dir):
    disk = hypervisor.get_vm(vm.uuid).disks[0].source
    overlay = image_dir / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", "qcow2", str(overlay)], check=True)
    other = hypervisor.define_vm(tiny.tiny_vm_xml(f"{vm.name}-overlay", [(overlay, "qcow2")]))
    try:
        task = wait_task(api, api.delete(f"/api/vms/{vm.name}?storage=1").json()["id"])
        assert task["status"] == "finished", task
        assert f"Kept {disk}: it is the backing file of {overlay}" in task["message"]
        assert Path(disk).exists()
    finally:
        remove_vm(other.uuid)


def test_a_qcow2_header_a_guest_wrote_into_its_raw_disk_is_never_believed(api, vm, make_vm, image_dir, monkeypatch):
    """A raw disk's content is the guest's: qemu-img reads it as raw (its definition's
    format), so a planted header naming a host file as backing file opens nothing."""
    make_vm()  # another VM on a qcow2 disk: its image is looked into, with -f qcow2
    disk = hypervisor.get_vm(vm.uuid).disks[0].source
    planted = image_dir / "guest-raw.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", disk, "-F", "qcow2", str(planted)], check=True)
    other = hypervisor.define_vm(tiny.tiny_vm_xml(f"{vm.name}-raw", [(planted, "raw")]))
    commands = []
    real_run = subprocess.run

    def recording_run(command, *args, **kwargs):
        if command[0] == "qemu-img":
            commands.append(command)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    try:
        task = wait_task(api, api.delete(f"/api/vms/{vm.name}?storage=true").json()["id"])
        assert task["status"] == "finished", task
        assert "Disk files removed: " + disk in task["message"]  # not "the backing file of" the raw disk
        assert not Path(disk).exists()
        assert commands and all("-f" in command for command in commands), commands
        assert not any(str(planted) in command for command in commands)  # a raw image is not looked into
    finally:
        remove_vm(other.uuid)


def test_delete_storage_flag_must_be_a_boolean(api, vm):
    response = api.delete(f"/api/vms/{vm.name}?storage=maybe")
    assert response.status_code == 400 and "storage" in response.json()["reason"]
    clash = api.delete(f"/api/vms/{vm.name}?storage=false", {"storage": True}, format="json")
    assert clash.status_code == 400
    assert hypervisor.vm_exists(vm.uuid)


def test_delete_needs_permission(vm, make_user):
    operator = api_for(make_user("otto", role="operator", vm=vm))
    response = operator.delete(f"/api/vms/{vm.name}")
    assert response.status_code == 403 and "delete" in response.json()["reason"]
    assert api_for(make_user("carol")).delete(f"/api/vms/{vm.name}").status_code == 404
    assert hypervisor.vm_exists(vm.uuid)
    denied = AuditEvent.objects.filter(action="vm.delete", outcome="denied").values_list("username", flat=True)
    assert sorted(denied) == ["carol", "otto"]


def test_delete_deletes_leaves_first_one_at_a_time(api, vm, monkeypatch):
    snapshot_tree(vm)
    order = []
    real = hypervisor.delete_snapshot
    monkeypatch.setattr(hypervisor, "delete_snapshot", lambda ref, name: (order.append(name), real(ref, name)))
    task = wait_task(api, api.delete(f"/api/vms/{vm.name}").json()["id"])
    assert task["status"] == "finished"
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order.index("c") < order.index("b") < order.index("a") and order.index("d") < order.index("a")


def test_settle_delete(vm):
    op = Operation(kind="vm.delete", vm_name=vm.name, vm_uuid=vm.uuid, params={"storage": False, "files": []})
    assert removal._settle_delete(op)[0] is False
    remove_vm(vm.uuid)
    assert removal._settle_delete(op)[0] is True


# ---------------------------------------------------------------------------
# Pages: buttons and forms without JavaScript


def test_power_buttons_follow_state_and_permission(client, vm, make_user):
    from django.template.loader import render_to_string

    def buttons(vm_info, perms, active=None):
        return render_to_string("vms/_actions.html", {"vm": vm_info, "perms": perms, "active": active})

    html = buttons(hypervisor.get_vm(vm.uuid), {"view", "power", "clone", "delete"})
    assert f"/vms/{vm.name}/power/start/" in html and "/power/shutdown/" not in html
    assert f"/vms/{vm.name}/clone/" in html and 'name="name"' in html and f"/vms/{vm.name}/delete/" in html
    assert "/power/" not in buttons(hypervisor.get_vm(vm.uuid), {"view"})
    hypervisor.power(vm.uuid, "start")
    running = hypervisor.get_vm(vm.uuid)
    html = buttons(running, {"view", "power", "clone"})
    for action in ("shutdown", "reboot", "suspend", "poweroff"):
        assert f"/power/{action}/" in html
    assert "/power/start/" not in html and "Shut it down to clone it" in html
    busy = Operation(pk=41, kind="snapshot.create", vm_name=vm.name, vm_uuid=vm.uuid, status="running")
    html = buttons(running, {"view", "power"}, busy)
    assert "Task #41" in html and "disabled" in html


def test_html_start_and_refusal(client, admin_user, vm):
    client.force_login(admin_user)
    response = client.post(f"/vms/{vm.name}/power/start/")
    assert response.status_code == 302 and response["Location"].startswith(f"/vms/{vm.name}/")
    assert state(vm) == "running"
    again = client.post(f"/vms/{vm.name}/power/start/", follow=True)
    assert "already running" in again.content.decode()
    assert client.get(f"/vms/{vm.name}/power/poweroff/").status_code == 200  # the confirmation page
    back = client.post(f"/vms/{vm.name}/power/poweroff/", {"next": "/"})
    assert back["Location"] == "/" and state(vm) == "shutoff"
    assert client.post(f"/vms/{vm.name}/power/poweroff/", {"next": "https://evil.example/"})["Location"].startswith("/vms/")
    assert client.post(f"/vms/{vm.name}/power/explode/").status_code == 404


def test_html_power_needs_permission(client, vm, make_user):
    client.force_login(make_user("bob", role="viewer", vm=vm))
    assert client.post(f"/vms/{vm.name}/power/start/").status_code == 403
    assert state(vm) == "shutoff"


def test_html_delete_asks_for_the_name(client, admin_user, vm):
    client.force_login(admin_user)
    page = client.get(f"/vms/{vm.name}/delete/")
    assert page.status_code == 200 and 'name="confirm"' in page.content.decode() and 'name="storage"' in page.content.decode()
    wrong = client.post(f"/vms/{vm.name}/delete/", {"confirm": "nope"})
    assert wrong.status_code == 400 and hypervisor.vm_exists(vm.uuid)
    done = client.post(f"/vms/{vm.name}/delete/", {"confirm": vm.name, "storage": "on"})
    assert done.status_code == 302 and done["Location"].startswith("/tasks/")
    assert not hypervisor.vm_exists(vm.uuid)
    assert Operation.objects.get().params["storage"] is True


def test_html_clone_form(client, admin_user, vm):
    client.force_login(admin_user)
    page = client.get(f"/vms/{vm.name}/clone/")
    assert page.status_code == 200 and f"{vm.name}-clone" in page.content.decode()
    bad = client.post(f"/vms/{vm.name}/clone/", {"name": "bad name"})
    assert bad.status_code == 400 and "Invalid VM name" in bad.content.decode()
    try:
        response = client.post(f"/vms/{vm.name}/clone/", {"name": f"{vm.name}-html"})
        assert response.status_code == 302
        assert hypervisor.get_vm(f"{vm.name}-html").snapshot_count == 0
    finally:
        remove_vm(f"{vm.name}-html")


def test_vm_page_and_inventory_show_the_buttons(client, admin_user, vm, make_user):
    client.force_login(admin_user)
    page = client.get(f"/vms/{vm.name}/").content.decode()
    assert f'action="/vms/{vm.name}/power/start/"' in page
    assert f'href="/vms/{vm.name}/delete/"' in page and f'action="/vms/{vm.name}/clone/"' in page
    inventory = client.get("/").content.decode()
    assert f'action="/vms/{vm.name}/power/start/"' in inventory
    client.force_login(make_user("vic", role="viewer", vm=vm))
    page = client.get(f"/vms/{vm.name}/").content.decode()
    assert "/power/" not in page and "/delete/" not in page and "/clone/" not in page
    assert "/power/" not in client.get("/").content.decode()


def test_inventory_start_comes_back_to_the_list(client, admin_user, vm):
    client.force_login(admin_user)
    response = client.post(f"/vms/{vm.name}/power/start/", {"next": "/"}, follow=True)
    assert response.redirect_chain[-1][0] == "/" and state(vm) == "running"
    assert f"Start {vm.name}: task #" in response.content.decode()


def test_htmx_buttons_swap_the_page(client, admin_user, vm):
    client.force_login(admin_user)
    htmx = {"HTTP_HX_REQUEST": "true"}
    response = client.post(f"/vms/{vm.name}/power/start/", **htmx)
    assert response.status_code == 200 and 'id="vm-page"' in response.content.decode()
    assert state(vm) == "running"
    refused = client.post(f"/vms/{vm.name}/power/start/", **htmx)
    assert refused.status_code == 409 and "already running" in refused.content.decode()
    dialog = client.get(f"/vms/{vm.name}/power/poweroff/", **htmx)
    assert dialog.status_code == 200 and "<html" not in dialog.content.decode() and "pulling the plug" in dialog.content.decode()
    wrong = client.post(f"/vms/{vm.name}/delete/", {"confirm": "no"}, **htmx)
    assert wrong.status_code == 400 and wrong["HX-Retarget"] == "#dialog-body"
    deleted = client.post(f"/vms/{vm.name}/delete/", {"confirm": vm.name}, **htmx)
    assert deleted["HX-Redirect"].startswith("/tasks/")
    assert not hypervisor.vm_exists(vm.uuid)
