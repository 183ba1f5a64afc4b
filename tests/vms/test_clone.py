"""Cloning a VM with its snapshot tree, against real libvirt/QEMU (tasks run in-process)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from core import hypervisor, storage
from core.tiny import remove_vm
from operations import runner
from operations.models import AuditEvent, Operation
from snapshots.models import SnapshotRecord
from tests.conftest import api_for, wait_task
from vms import clone as lifecycle

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sync_tasks")]


@pytest.fixture
def clones(make_vm):
    """Names of VMs the test makes by cloning: removed afterwards, before the sources."""
    made: list[str] = []
    yield made
    for name in made:
        remove_vm(name)


def disk(vm) -> str:
    return hypervisor.get_vm(vm.uuid).disks[0].source


def write_pattern(path: str, byte: int) -> None:
    """Write a recognisable block at the start of a (shut-off) VM's disk."""
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {byte} 0 64k", path], check=True, capture_output=True)


def has_pattern(path: str, byte: int) -> bool:
    result = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {byte} 0 64k", path], capture_output=True, text=True
    )
    return result.returncode == 0 and "Pattern verification failed" not in result.stdout


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def done(api, response, status="finished") -> dict:
    assert response.status_code == 202, response.json()
    task = wait_task(api, response.json()["id"])
    assert task["status"] == status, task
    return task


def snapshot(api, vm_name, name, description=""):
    done(api, api.post(f"/api/vms/{vm_name}/snapshots", {"name": name, "description": description}, format="json"))


def revert(api, vm_name, name):
    done(api, api.post(f"/api/vms/{vm_name}/snapshots/{name}/revert"))


def state(api, vm_name) -> str:
    return api.get(f"/api/vms/{vm_name}").json()["state"]


def tree(api, vm_name) -> list[tuple[str, str, str, bool]]:
    return sorted(
        (s["name"], s["parent"], s["description"], s["current"]) for s in api.get(f"/api/vms/{vm_name}/snapshots?all=true").json()
    )


def build_tree(api, vm):
    """live (running, with memory) -> cold, and live -> branch; branch is current.

    Each snapshot holds a different block at the start of the disk: 0xa1, 0xb2, 0xc3.
    """
    path = disk(vm)
    write_pattern(path, 0xA1)
    done(api, api.post(f"/api/vms/{vm.name}/start"))
    snapshot(api, vm.name, "live", "taken while running")
    done(api, api.post(f"/api/vms/{vm.name}/poweroff"))
    write_pattern(path, 0xB2)
    snapshot(api, vm.name, "cold", "shut off")
    revert(api, vm.name, "live")
    done(api, api.post(f"/api/vms/{vm.name}/poweroff"))
    write_pattern(path, 0xC3)
    snapshot(api, vm.name, "branch", "a second child")
    # Shown names differ from qcow2 tags after a rename: the clone keeps both.
    assert api.put(f"/api/vms/{vm.name}/snapshots/branch", {"name": "branch-renamed"}, format="json").status_code == 200


def fingerprint(api, vm) -> dict:
    names, current = hypervisor.snapshot_names(vm.uuid)
    return {
        "tree": tree(api, vm.name),
        "libvirt": (sorted(names), current),
        "sha256": sha256(disk(vm)),
        "xml": hypervisor.domain_xml(vm.uuid),
        "tags": storage.qcow2_snapshot_tags(disk(vm)),
    }


def test_clone_keeps_the_snapshot_tree_and_each_revert_works(api, vm, clones):
    build_tree(api, vm)
    before = fingerprint(api, vm)
    started = time.monotonic()
    response = api.post(f"/api/vms/{vm.name}/clone", {}, format="json")
    task = done(api, response)
    elapsed = time.monotonic() - started
    name = f"{vm.name}-clone"
    clones.append(name)
    assert task["target_uri"] == f"/api/vms/{name}"
    assert task["progress"] == 100 and "3 snapshots" in task["message"]
    print(f"clone of a tiny VM with 3 snapshots: {elapsed:.2f} s")

    clone = api.get(task["target_uri"]).json()
    assert clone["name"] == name and clone["uuid"] != vm.uuid
    assert clone["state"] == "shutoff" and clone["snapshots"] == 3
    assert clone["current-snapshot"] == "branch-renamed"
    assert clone["disks"][0]["source"] == str(Path(disk(vm)).with_name(f"{name}.qcow2"))
    assert tree(api, name) == before["tree"]
    assert has_pattern(clone["disks"][0]["source"], 0xC3)
    records = SnapshotRecord.objects.filter(vm_uuid=clone["uuid"], deleted_at__isnull=True)
    assert {r.origin for r in records} == {"clone"} and records.count() == 3
    assert records.get(name="branch-renamed").libvirt_name == "branch"

    # Every saved definition on the clone names the clone and its own disk, never the source's.
    for snap_name in ("live", "cold", "branch"):
        xml = hypervisor.snapshot_xml(clone["uuid"], snap_name)
        assert vm.uuid not in xml and disk(vm) not in xml and f"<name>{vm.name}</name>" not in xml

    revert(api, name, "live")
    assert state(api, name) == "running"
    assert has_pattern(clone["disks"][0]["source"], 0xA1)
    done(api, api.post(f"/api/vms/{name}/poweroff"))
    revert(api, name, "cold")
    assert state(api, name) == "shutoff"
    assert has_pattern(clone["disks"][0]["source"], 0xB2)
    revert(api, name, "branch-renamed")
    assert state(api, name) == "shutoff"
    assert has_pattern(clone["disks"][0]["source"], 0xC3)
    assert api.get(f"/api/vms/{name}/snapshots/current").json()["name"] == "branch-renamed"

    assert fingerprint(api, vm) == before

    # Deleting the clone leaves the source working.
    done(api, api.delete(f"/api/vms/{name}?storage=true"))
    assert not hypervisor.vm_exists(name)
    assert not Path(clone["disks"][0]["source"]).exists()
    assert fingerprint(api, vm) == before
    revert(api, vm.name, "live")
    assert state(api, vm.name) == "running"


def test_deleting_the_source_leaves_the_clone_working(api, vm, clones):
    build_tree(api, vm)
    task = done(api, api.post(f"/api/vms/{vm.name}/clone", {"name": f"{vm.name}.copy_1"}, format="json"))
    name = f"{vm.name}.copy_1"
    clones.append(name)
    assert task["target_uri"] == f"/api/vms/{name}"
    source_disk = disk(vm)
    done(api, api.delete(f"/api/vms/{vm.name}?storage=true"))
    assert not Path(source_disk).exists()
    for snap_name, expected, pattern in (
        ("live", "running", 0xA1),
        ("cold", "shutoff", 0xB2),
        ("branch-renamed", "shutoff", 0xC3),
    ):
        if state(api, name) != "shutoff":
            done(api, api.post(f"/api/vms/{name}/poweroff"))
        revert(api, name, snap_name)
        assert state(api, name) == expected
        assert has_pattern(api.get(f"/api/vms/{name}").json()["disks"][0]["source"], pattern)


def test_default_names_count_up(api, vm, clones):
    first = done(api, api.post(f"/api/vms/{vm.name}/clone"))
    clones.append(f"{vm.name}-clone")
    second = done(api, api.post(f"/api/vms/{vm.name}/clone", {"name": ""}, format="json"))
    clones.append(f"{vm.name}-clone-2")
    assert first["target_uri"].endswith(f"/{vm.name}-clone")
    assert second["target_uri"].endswith(f"/{vm.name}-clone-2")


def test_clone_of_a_clone_and_new_identity(api, make_vm, image_dir, clones):
    # A VM with a NIC (no network needed: type 'user'), an SMBIOS UUID and two disks.
    from core import tiny

    name = f"vstest-{os.urandom(3).hex()}"
    disks = [(image_dir / f"{name}-a.qcow2", "qcow2"), (image_dir / f"{name}-b.qcow2", "qcow2")]
    for path, fmt in disks:
        tiny.create_disk(path, fmt)
    root = hypervisor.parse_xml(tiny.tiny_vm_xml(name, disks))
    from lxml import etree

    devices = root.find("devices")
    nic = etree.SubElement(devices, "interface", type="user")
    etree.SubElement(nic, "mac", address="52:54:00:12:34:56")
    etree.SubElement(nic, "model", type="virtio")
    uuid = root.find("uuid").text
    sysinfo = etree.SubElement(root, "sysinfo", type="smbios")
    etree.SubElement(etree.SubElement(sysinfo, "system"), "entry", name="uuid").text = uuid
    source = hypervisor.define_vm(hypervisor.to_xml(root))
    clones.append(source.uuid)
    hypervisor.create_snapshot(source.uuid, "base")

    task = done(api, api.post(f"/api/vms/{name}/clone", {"name": f"{name}-twin"}, format="json"))
    clones.append(f"{name}-twin")
    assert "1 snapshot" in task["message"]
    twin = hypervisor.get_vm(f"{name}-twin")
    xml = hypervisor.domain_xml(twin.uuid)
    assert "52:54:00:12:34:56" not in xml and uuid not in xml
    assert [d.source for d in twin.disks] == [
        str(image_dir / f"{name}-twin-vda.qcow2"),
        str(image_dir / f"{name}-twin-vdb.qcow2"),
    ]
    snap_xml = hypervisor.snapshot_xml(twin.uuid, "base")
    assert "52:54:00:12:34:56" not in snap_xml and uuid not in snap_xml
    mac = hypervisor.parse_xml(xml).find("devices/interface/mac").get("address")
    assert mac.startswith("52:54:00:") and mac in snap_xml  # one NIC, one new address everywhere

    # The clone of the clone starts from the clone's identity.
    done(api, api.post(f"/api/vms/{name}-twin/clone"))
    clones.append(f"{name}-twin-clone")
    assert hypervisor.get_vm(f"{name}-twin-clone").snapshot_count == 1


def test_running_source_is_409(api, running_vm):
    response = api.post(f"/api/vms/{running_vm.name}/clone")
    assert response.status_code == 409
    assert "shut it down" in response.json()["reason"]
    event = AuditEvent.objects.get(action="vm.clone")
    assert event.outcome == "failed" and "shut it down" in event.message


def test_name_taken_and_bad_names(api, vm, make_vm):
    other = make_vm()
    taken = api.post(f"/api/vms/{vm.name}/clone", {"name": other.name}, format="json")
    assert taken.status_code == 409 and other.name in taken.json()["reason"]
    for bad in ("has space", "a/b", "-dash", "12345", ".hidden", "x" * 101, "0b6f5c1e-7d7e-4c1b-9d0b-3f1b8f0a8a11"):
        response = api.post(f"/api/vms/{vm.name}/clone", {"name": bad}, format="json")
        assert response.status_code == 400, (bad, response.json())
        assert response.json()["reason"]
    unknown_field = api.post(f"/api/vms/{vm.name}/clone", {"nmae": "x"}, format="json")
    assert unknown_field.status_code == 400 and "nmae" in unknown_field.json()["reason"]
    assert Operation.objects.count() == 0


def test_file_in_the_way_is_409(api, vm):
    Path(disk(vm)).with_name("in-the-way.qcow2").write_bytes(b"not mine")
    response = api.post(f"/api/vms/{vm.name}/clone", {"name": "in-the-way"}, format="json")
    assert response.status_code == 409 and "in-the-way.qcow2" in response.json()["reason"]
    assert Path(disk(vm)).with_name("in-the-way.qcow2").read_bytes() == b"not mine"


def test_needs_clone_permission_and_hides_invisible_vms(vm, make_user):
    operator = api_for(make_user("bob", role="operator", vm=vm))
    response = operator.post(f"/api/vms/{vm.name}/clone")
    assert response.status_code == 403 and "clone" in response.json()["reason"]
    stranger = api_for(make_user("carol"))
    assert stranger.post(f"/api/vms/{vm.name}/clone").status_code == 404
    outcomes = sorted(AuditEvent.objects.filter(action="vm.clone").values_list("username", "outcome"))
    assert outcomes == [("bob", "denied"), ("carol", "denied")]
    assert not hypervisor.vm_exists(f"{vm.name}-clone")


def test_owner_of_one_vm_gets_the_clone(vm, make_user, clones):
    owner = make_user("olga", role="owner", vm=vm)
    client = api_for(owner)
    task = done(client, client.post(f"/api/vms/{vm.name}/clone"))
    clones.append(f"{vm.name}-clone")
    # A new request loads the user afresh (the test client keeps one user object and its cached grants).
    fresh = api_for(type(owner).objects.get(pk=owner.pk))
    assert fresh.get(task["target_uri"]).status_code == 200
    assert AuditEvent.objects.filter(action="grant.add", vm_name=f"{vm.name}-clone", username="olga").exists()


def test_audit_rows_for_a_clone(api, vm, clones):
    task = done(api, api.post(f"/api/vms/{vm.name}/clone"))
    clones.append(f"{vm.name}-clone")
    rows = AuditEvent.objects.filter(operation_id=task["id"]).order_by("id")
    assert [(r.action, r.stage, r.outcome, r.vm_name) for r in rows] == [
        ("vm.clone", "request", "success", vm.name),
        ("vm.clone", "event", "success", f"{vm.name}-clone"),
        ("vm.clone", "result", "success", vm.name),
    ]


def test_progress_reports_bytes_copied(api, vm, clones, monkeypatch):
    # Fill some of the disk so there is data to copy.
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 8M", disk(vm)], check=True, capture_output=True)
    seen: list[tuple[int | None, str | None]] = []
    original = runner.Progress.__call__

    def spy(self, percent=None, message=None):
        seen.append((percent, message))
        original(self, percent, message)

    monkeypatch.setattr(runner.Progress, "__call__", spy)
    done(api, api.post(f"/api/vms/{vm.name}/clone"))
    clones.append(f"{vm.name}-clone")
    copying = [(p, m) for p, m in seen if m and m.startswith("Copying")]
    assert copying and copying[-1][1].endswith("(100%)") and " MiB" in copying[-1][1]
    assert copying[-1][0] == 90
    # Sparse: the copy holds no more data than the source.
    clone_disk = hypervisor.get_vm(f"{vm.name}-clone").disks[0].source
    assert os.stat(clone_disk).st_blocks <= os.stat(disk(vm)).st_blocks
    assert sha256(clone_disk) == sha256(disk(vm))


def test_disk_full_removes_the_partial_clone(api, vm, monkeypatch):
    hypervisor.create_snapshot(vm.uuid, "one")
    before = fingerprint(api, vm)
    calls = {"n": 0}
    real = storage._write_all

    def failing(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data, offset)

    monkeypatch.setattr(storage, "_write_all", failing)
    task = done(api, api.post(f"/api/vms/{vm.name}/clone"), status="failed")
    assert "the disk is full" in task["message"] and "partial clone was removed" in task["message"]
    assert f"{vm.name} was not changed" in task["message"]
    assert not hypervisor.vm_exists(f"{vm.name}-clone")
    assert not Path(disk(vm)).with_name(f"{vm.name}-clone.qcow2").exists()
    assert fingerprint(api, vm) == before
    # The name is free again.
    assert lifecycle.default_clone_name(hypervisor.get_vm(vm.uuid), before["xml"]) == f"{vm.name}-clone"


def test_failure_after_define_removes_the_definition_too(api, vm, monkeypatch):
    hypervisor.create_snapshot(vm.uuid, "one")
    hypervisor.create_snapshot(vm.uuid, "two")
    before = fingerprint(api, vm)
    real = hypervisor.redefine_snapshot
    calls = {"n": 0}

    def flaky(ref, xml, *, current=False):
        calls["n"] += 1
        if calls["n"] == 2:
            raise hypervisor.Failed("simulated libvirt failure")
        real(ref, xml, current=current)

    monkeypatch.setattr(hypervisor, "redefine_snapshot", flaky)
    task = done(api, api.post(f"/api/vms/{vm.name}/clone"), status="failed")
    assert "redefining snapshot two" in task["message"] and "simulated libvirt failure" in task["message"]
    assert not hypervisor.vm_exists(f"{vm.name}-clone")
    assert not Path(disk(vm)).with_name(f"{vm.name}-clone.qcow2").exists()
    assert not SnapshotRecord.objects.filter(vm_name=f"{vm.name}-clone").exists()
    assert fingerprint(api, vm) == before


def test_snapshot_using_a_detached_disk_is_refused(api, vm, image_dir):
    # A snapshot whose saved definition has a second disk the VM no longer has.
    extra = image_dir / "extra.qcow2"
    from core import tiny

    tiny.create_disk(extra)
    root = hypervisor.parse_xml(hypervisor.domain_xml(vm.uuid))
    xml_two = tiny.tiny_vm_xml(vm.name, [(Path(disk(vm)), "qcow2"), (extra, "qcow2")])
    two = hypervisor.parse_xml(xml_two)
    two.find("uuid").text = root.find("uuid").text
    hypervisor.define_vm(hypervisor.to_xml(two))
    hypervisor.create_snapshot(vm.uuid, "with-extra")
    hypervisor.define_vm(hypervisor.to_xml(root))
    task = done(api, api.post(f"/api/vms/{vm.name}/clone"), status="failed")
    assert str(extra) in task["message"] and "with-extra" in task["message"]
    assert not hypervisor.vm_exists(f"{vm.name}-clone")


# ---------------------------------------------------------------------------
# A worker that dies: the settle function decides from libvirt, and cleans up


def queue_clone(api, vm, monkeypatch, **body) -> Operation:
    monkeypatch.setattr(runner, "async_task", lambda *args, **kwargs: None)  # queue only
    response = api.post(f"/api/vms/{vm.name}/clone", body or None, format="json")
    assert response.status_code == 202, response.json()
    return Operation.objects.get(pk=response.json()["id"])


def test_settle_removes_a_partial_clone(api, vm, monkeypatch):
    hypervisor.create_snapshot(vm.uuid, "one")
    op = queue_clone(api, vm, monkeypatch)
    dest = op.params["files"][disk(vm)]
    # What a worker killed after copying and defining, before the snapshots, leaves behind.
    Path(dest).write_bytes(Path(disk(vm)).read_bytes())
    identity = hypervisor.CloneIdentity(name=op.params["name"], uuid=op.params["uuid"], paths=op.params["files"])
    hypervisor.define_vm(hypervisor.clone_domain_xml(hypervisor.domain_xml(vm.uuid), identity))
    finished, message = lifecycle._settle_clone(op)
    assert finished is False and "was not complete" in message and "partial clone was removed" in message
    assert not hypervisor.vm_exists(op.params["uuid"]) and not Path(dest).exists()
    assert hypervisor.snapshot_names(vm.uuid) == (["one"], "one")


def test_settle_completes_a_finished_clone(api, vm, monkeypatch, clones):
    hypervisor.create_snapshot(vm.uuid, "one")
    op = queue_clone(api, vm, monkeypatch, name=f"{vm.name}-late")
    clones.append(f"{vm.name}-late")
    # The worker did all the libvirt work, then died before recording it.
    monkeypatch.setattr(lifecycle, "_finish_clone", lambda *args: None)
    runner.run(op.pk)
    monkeypatch.undo()
    assert not SnapshotRecord.objects.filter(vm_name=f"{vm.name}-late").exists()
    finished, message = lifecycle._settle_clone(Operation.objects.get(pk=op.pk))
    assert finished is True and "completed" in message
    assert SnapshotRecord.objects.get(vm_name=f"{vm.name}-late").origin == "clone"


@pytest.mark.e2e
def test_clone_through_the_cluster_and_a_killed_worker(api, make_vm, image_dir, random_memory, clones, monkeypatch, qcluster):
    from django_q.conf import Conf

    from core import tiny

    monkeypatch.setattr(Conf, "SYNC", False)  # the real cluster runs the tasks here
    # A disk holding 512 MiB of data: copying it takes a while.
    name = f"vstest-{os.urandom(4).hex()}"
    big = image_dir / f"{name}.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(random_memory), str(big)], check=True)
    source = hypervisor.define_vm(tiny.tiny_vm_xml(name, [(big, "qcow2")]))
    clones.append(source.uuid)
    hypervisor.create_snapshot(source.uuid, "base")

    task_id = api.post(f"/api/vms/{name}/clone", {"name": f"{name}-a"}, format="json").json()["id"]
    deadline = time.monotonic() + 60
    while True:
        op = Operation.objects.get(pk=task_id)
        if op.status == "running" and op.worker and op.message.startswith("Copying"):
            break
        assert op.status in ("queued", "running") and time.monotonic() < deadline, (op.status, op.message)
        time.sleep(0.02)
    os.kill(int(op.worker.split(":")[1]), 9)
    task = wait_task(api, task_id, timeout=60)
    assert task["status"] == "failed" and "was not complete" in task["message"], task
    assert not hypervisor.vm_exists(f"{name}-a") and not (image_dir / f"{name}-a.qcow2").exists()

    # The next clone goes through (the cluster started a new worker).
    task = wait_task(api, api.post(f"/api/vms/{name}/clone", {"name": f"{name}-b"}, format="json").json()["id"], timeout=120)
    clones.append(f"{name}-b")
    assert task["status"] == "finished", task
    assert re.search(r"51\d\.\d MiB of data copied", task["message"]), task  # 512 MiB of data, plus qcow2 metadata
    assert sha256(str(image_dir / f"{name}-b.qcow2")) == sha256(str(big))
